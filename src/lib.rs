//! pushdeploy: `git push` deploys a Python web app into a site directory.
//!
//! A map, by role (each group in alphabetical order). `deploy` runs one
//! deployment through the steps; the README's "What a deployment does" names
//! the module of each step. Modules are public only where the integration
//! tests or the fuzz targets need them.

// The command line.
pub mod cli; // parses the command line once and calls the rest
mod init; // `pushdeploy init`: the bare repository, the hook, the settings

// The inputs: what a push says and what the commit holds.
mod app; // what runs: the Procfile, startupCommand, or detection as Oryx does it
mod commit; // reading the commit's tree with git2, no work tree
pub mod deployment_file; // `.deployment`, Kudu's INI file in the commit
mod managers; // which package manager file decides the env (requirements, locks)
mod pipfile; // Pipfile.lock read as a hashed requirements file
pub mod receive; // the hook's `<old> <new> <ref>` lines and push options
mod requirements; // requirements.txt as pip reads it, as far as it is vouched for
pub mod runtime; // which Python the app wants, and which interpreter gives it
pub mod settings; // every setting, which layers may set it, parsed once

// The deployment: a plan, then its steps.
mod command; // `.deployment` `command`: the commit's own deploy script
mod deploy; // one deployment as a transaction: prepare aside, switch, after, record
mod env; // the virtual env: reuse or recreate, built aside, switched in one rename
mod exact; // removing what the requirements no longer need
mod framework; // Django's collectstatic
mod health; // the health check after postDeploy
mod lockfile; // installing exactly what uv.lock, poetry.lock or Pipfile.lock names
mod packages; // whether the installer runs, and running pip or uv
mod plan; // everything a deployment will do, decided before anything changes
mod seed; // fast env creation from a per-interpreter pip seed
mod site_dir; // the site as a directory handle: no path can leave it
mod sync; // making the site's files match the commit, through the site walk
mod tools; // uv and Poetry at pinned versions

// Running programs and showing what happens.
pub mod error; // errors and the exit status they give
mod process; // every program a deployment runs: process groups, timeouts
mod report; // what the pusher sees: step headers, indented output, times

// The stores under the state dir.
mod appsettings; // `pushdeploy appsettings`: the server's secret app settings
mod files; // atomic writes and temp-file cleanup the stores share
mod installed; // what was last installed, so an unchanged push skips pip
mod journal; // what a sync changed, so that it can be rolled back
mod lock; // one deployment per repository at a time
mod manifest; // which commit the site holds
mod record; // one JSON record per deployment: list, show, redeploy

pub use error::{Failure, UsageError};
