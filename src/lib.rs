//! pushdeploy: `git push` deploys a Python web app into a site directory.
//!
//! A map, by role, from the top down: a module uses the modules of its own
//! group and of the groups below it, never those of a group above (the
//! `layers` test checks this for the modules that once imported each other;
//! a few others still reach up). Each group is in alphabetical order.
//! `deploy` runs one deployment through the steps;
//! docs/how-a-deployment-works.md names the module of each step. Modules are public only
//! where the integration tests or the fuzz targets need them.

// The command line.
pub mod cli; // parses the command line once and calls the rest
mod init; // `pushdeploy init`: the bare repository, the hook, the settings
mod systemd; // `init --systemd`: units for the app's processes, and systemctl/journalctl calls

// One deployment: its plan, then its steps.
mod deploy; // one deployment as a transaction: prepare aside, switch, after, record
mod plan; // everything a deployment will do, decided before anything changes
mod processes; // the app's processes: launched, reloaded after a switch, stopped

// The steps.
mod command; // `.deployment` `command`: the commit's own deploy script
mod env; // the virtual env: reuse or recreate, built aside, switched in one rename
mod exact; // removing what the requirements no longer need
mod framework; // Django's collectstatic
mod health; // the health check after postDeploy
mod lockfile; // installing exactly what uv.lock, poetry.lock or Pipfile.lock names
mod markers; // PEP 508 requirements and markers, with the env interpreter's marker environment
mod packages; // whether the installer runs, and running pip or uv
mod seed; // fast env creation from a per-interpreter pip seed
mod sync; // making the site's files match the commit, through the site walk
mod tools; // uv and Poetry at pinned versions (the pins: the settings' defaults)

// The inputs: what a push says and what the commit holds.
mod app; // what runs: the Procfile, startupCommand, or detection as Oryx does it
mod commit; // reading the commit's tree with git2, no work tree
mod git_remote; // which commit a git requirement's branch or tag names now (`git ls-remote`)
mod managers; // which package manager file decides the env (requirements, locks)
mod pack; // objects read straight from the packs, each inflated once
mod pipfile; // Pipfile.lock read as a hashed requirements file
pub mod receive; // the hook's `<old> <new> <ref>` lines and push options
mod requirements; // requirements.txt as pip reads it, as far as it is vouched for
pub mod runtime; // which interpreter gives the Python the app wants

// Running programs and showing what happens.
mod process; // every program a deployment runs: process groups, timeouts
mod report; // what the pusher sees: step headers, indented output, times

// The settings, which the modules above read.
pub mod deployment_file; // `.deployment`, Kudu's INI file in the commit
mod python_version; // a Python version asked for (3.12) or found (3.12.4): plain data
pub mod settings; // every setting, which layers may set it, parsed once

// The site and the stores under the state dir.
mod app_logs; // the app's output: the capped, rotated log files and `pushdeploy logs`
mod appsettings; // `pushdeploy appsettings`: the server's secret app settings
mod files; // atomic writes and temp-file cleanup the stores share
mod installed; // what was last installed, so an unchanged push skips pip
mod journal; // what a sync changed, so that it can be rolled back
mod lock; // one deployment per repository at a time
mod manifest; // which commit the site holds
mod record; // one JSON record per deployment: list, show, redeploy
mod site_dir; // the site as a directory handle: no path can leave it

// What every module may give.
pub mod error; // errors and the exit status they give
mod fault; // test-only fault injection at every change a deployment makes

#[cfg(test)]
mod layers; // the order of this map, checked on the source

pub use error::{Failure, UsageError};
