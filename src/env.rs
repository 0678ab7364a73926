//! The virtual environment at `<site>/env`: whether it fits the runtime, and
//! recreating it without downtime.
//!
//! `env` is a symlink to a versioned directory beside it
//! (`.pushdeploy-env-<n>`). A new env is built in a new directory while the
//! old one stays in use, and `env` is switched to it by one rename once it is
//! complete; a build that fails or is killed leaves the old env as it was. An
//! `env` that is a plain directory (made by Kudu or by hand) is checked the
//! same way and replaced the same way.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::report::Report;
use crate::runtime::{Choice, Interpreter, Probes, Request, Version};
use crate::sync::ENV_DIR_PREFIX;

/// Why an env is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Reason {
    NoEnv,
    Forced {
        by: String,
    },
    NoMarker {
        wanted: String,
    },
    RuntimeChanged {
        from: String,
        to: String,
    },
    Broken {
        detail: String,
    },
    PatchDiffers {
        have: Version,
        want: String,
    },
    BaseGone {
        home: PathBuf,
    },
    /// `env/bin/python` runs the Python it was built on (`sys.prefix` is
    /// `sys.base_prefix`), as it does when `pyvenv.cfg` is gone.
    NotVirtual {
        runs: PathBuf,
    },
    /// `env/bin/python` is another virtual env's.
    OtherEnv {
        prefix: PathBuf,
    },
    /// `env` leads out of the site.
    OutsideSite {
        dir: PathBuf,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoEnv => f.write_str("no env yet"),
            Reason::Forced { by } => write!(f, "forced by {by}"),
            Reason::NoMarker { wanted } => write!(
                f,
                "env has no marker azure.env.{wanted}.txt (made by hand?)"
            ),
            Reason::RuntimeChanged { from, to } => write!(f, "runtime changed from {from} to {to}"),
            Reason::Broken { detail } => write!(f, "env broken: {detail}"),
            Reason::PatchDiffers { have, want } => {
                write!(f, "env has Python {have}, {want} is wanted")
            }
            Reason::NotVirtual { runs } => write!(
                f,
                "env broken: env/bin/python is not a virtual env: it runs {} itself (no pyvenv.cfg?)",
                runs.display()
            ),
            Reason::OtherEnv { prefix } => write!(
                f,
                "env broken: env/bin/python belongs to the virtual env {}, not to env/",
                prefix.display()
            ),
            Reason::OutsideSite { dir } => {
                write!(f, "env/ leads outside the site, to {}", dir.display())
            }
            Reason::BaseGone { home } => write!(
                f,
                "the interpreter the env was built on is gone ({})",
                home.display()
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Decision {
    Reuse,
    Create { reason: Reason, message: String },
}

pub fn marker_name(runtime: &str) -> String {
    format!("azure.env.{runtime}.txt")
}

/// The runtimes that markers in the env name.
fn markers(env: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(env) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| {
            n.strip_prefix("azure.env.")?
                .strip_suffix(".txt")
                .map(str::to_string)
        })
        .collect();
    found.sort();
    found
}

/// `home` from `pyvenv.cfg`: the directory of the interpreter the env was built on.
fn base_home(env: &Path) -> Option<PathBuf> {
    let cfg = std::fs::read_to_string(env.join("pyvenv.cfg")).ok()?;
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home").then(|| PathBuf::from(value.trim()))
    })
}

/// Decides whether the env at `<site>/env` can be reused for `choice`.
/// `forced` names what forces a new env, if anything does.
pub fn decide(site: &Path, request: Request, forced: Option<String>, probes: &Probes) -> Decision {
    let create = |reason: Reason| Decision::Create {
        message: reason.to_string(),
        reason,
    };
    let env = site.join("env");
    if std::fs::symlink_metadata(&env).is_err() {
        return create(Reason::NoEnv);
    }
    if let Some(by) = forced {
        return create(Reason::Forced { by });
    }
    let wanted = request.runtime();
    let found = markers(&env);
    if !found.contains(&wanted) {
        return match found.first() {
            Some(other) => create(Reason::RuntimeChanged {
                from: other.clone(),
                to: wanted,
            }),
            None => create(Reason::NoMarker { wanted }),
        };
    }
    if let Some(home) = base_home(&env)
        && !home.is_dir()
    {
        return create(Reason::BaseGone { home });
    }
    let Some(python) = probes.probe(&env.join("bin").join("python")) else {
        return create(Reason::Broken {
            detail: "env/bin/python does not run".into(),
        });
    };
    if let Err(reason) = inside_site(site, &env, &python) {
        return create(reason);
    }
    let v = python.version;
    if v.major != request.major || v.minor != request.minor {
        return create(Reason::Broken {
            detail: format!("env/bin/python reports {v}, not {wanted}"),
        });
    }
    if !request.fits(v) {
        return create(Reason::PatchDiffers {
            have: v,
            want: request.to_string(),
        });
    }
    Decision::Reuse
}

/// Checks that `env/bin/python` runs a virtual env of its own (not the
/// Python it was built on, as it does when `pyvenv.cfg` is gone) and that
/// this env is `env/` inside the site: an installer may only ever write there.
fn inside_site(site: &Path, env: &Path, python: &Interpreter) -> Result<(), Reason> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let Some(prefixes) = &python.prefixes else {
        return Err(Reason::Broken {
            detail: "env/bin/python did not say where it installs".into(),
        });
    };
    if real(&prefixes.prefix) == real(&prefixes.base) {
        return Err(Reason::NotVirtual {
            runs: prefixes.base.clone(),
        });
    }
    let env_dir = real(env);
    if real(&prefixes.prefix) != env_dir {
        return Err(Reason::OtherEnv {
            prefix: prefixes.prefix.clone(),
        });
    }
    if env_dir.parent() != Some(real(site).as_path()) {
        return Err(Reason::OutsideSite { dir: env_dir });
    }
    Ok(())
}

/// The interpreter the env at `<site>/env` runs, named by the file it runs
/// (from the probe the reuse check made, so nothing runs again).
pub fn interpreter(site: &Path, probes: &Probes) -> Option<Interpreter> {
    let python = site.join("env").join("bin").join("python");
    let found = probes.probe(&python)?;
    Some(Interpreter {
        path: std::fs::canonicalize(&python).unwrap_or(found.path),
        ..found
    })
}

/// The module that makes an env with this interpreter: `venv`, or for
/// Python 2 (Kudu's old default, which has no venv) `virtualenv`, as Kudu did.
/// Checked in the plan, so a missing module fails before anything changes.
pub fn tool(choice: &Choice) -> Result<&'static str> {
    if choice.interpreter.version.major != 2 {
        return Ok("venv");
    }
    let python = &choice.interpreter.path;
    let has_it = duct::cmd!(python, "-c", "import virtualenv")
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()?
        .status
        .success();
    if !has_it {
        bail!(
            "{}: {} at {} has no virtualenv module, which a Python 2 env needs; install it ({} -m pip install virtualenv) or choose Python 3",
            choice.source,
            choice.request,
            python.display(),
            python.display()
        );
    }
    Ok("virtualenv")
}

/// Builds a new env in a new directory beside `env` and returns its path.
/// `env` itself is not touched: `switch` does that once the env is complete.
/// The caller has removed what an earlier, killed build left (`remove_stale`).
///
/// `seeds` is where pip is kept per interpreter for fast creation (see `seed`).
pub fn build(
    site: &Path,
    choice: &Choice,
    seeds: &Path,
    uv: Option<&Path>,
    report: &mut Report,
) -> Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(ENV_DIR_PREFIX)
        .tempdir_in(site)
        .with_context(|| format!("creating a directory for the new env in {}", site.display()))?;
    let python = &choice.interpreter.path;
    let v = choice.interpreter.version;
    let tool = tool(choice)?;
    if tool == "venv" {
        crate::seed::create(python, v, dir.path(), seeds, uv, report)?;
    } else {
        report.detail(format!(
            "{} -m {tool} {}",
            python.display(),
            dir.path().display()
        ));
        report.run(
            &format!("python -m {tool}"),
            duct::cmd!(python, "-m", tool, dir.path()),
        )?;
    }
    let marker = dir.path().join(marker_name(&choice.runtime));
    fs_err::write(&marker, format!("{}\n{}\n", python.display(), v))?;
    Ok(dir.keep())
}

/// Points `env` at the new env with one rename, then removes the old one.
pub fn switch(site: &Path, new_dir: &Path) -> Result<()> {
    let env = site.join("env");
    let name = new_dir
        .file_name()
        .context("new env directory has no name")?;
    let link = tempfile::Builder::new()
        .prefix(ENV_DIR_PREFIX)
        .make_in(site, |p| std::os::unix::fs::symlink(name, p))?;
    let old = match std::fs::symlink_metadata(&env) {
        Ok(meta) if meta.file_type().is_symlink() => {
            std::fs::read_link(&env).ok().map(|t| site.join(t))
        }
        Ok(meta) if meta.file_type().is_dir() => {
            // A plain directory cannot be replaced by a rename: move it aside first.
            let aside = tempfile::Builder::new()
                .prefix(ENV_DIR_PREFIX)
                .tempdir_in(site)?
                .keep();
            fs_err::remove_dir(&aside)?;
            fs_err::rename(&env, &aside)?;
            Some(aside)
        }
        Ok(_) => {
            fs_err::remove_file(&env)?;
            None
        }
        Err(_) => None,
    };
    link.persist(&env)
        .with_context(|| format!("switching {} to the new env", env.display()))?;
    if let Some(old) = old
        && old != new_dir
    {
        remove_env_dir(site, &old)?;
    }
    Ok(())
}

/// Removes an env directory, but only one of ours inside the site.
fn remove_env_dir(site: &Path, dir: &Path) -> Result<()> {
    let ours = dir.parent() == Some(site)
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(ENV_DIR_PREFIX));
    if ours {
        match fs_err::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Removes env directories that no `env` points to: left by a build that
/// failed or was killed.
pub fn remove_stale(site: &Path) -> Result<()> {
    let current = std::fs::read_link(site.join("env"))
        .ok()
        .map(|t| site.join(t));
    let Ok(entries) = std::fs::read_dir(site) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if Some(&path) != current.as_ref()
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(ENV_DIR_PREFIX)
        {
            if entry.file_type()?.is_symlink() {
                fs_err::remove_file(&path)?;
            } else {
                remove_env_dir(site, &path)?;
            }
        }
    }
    Ok(())
}

/// Deletes the env (`pushdeploy env delete`): the next deployment creates it.
/// Returns whether there was one.
pub fn delete(site: &Path) -> Result<bool> {
    let env = site.join("env");
    let existed = match std::fs::symlink_metadata(&env) {
        Ok(meta) if meta.file_type().is_dir() => {
            fs_err::remove_dir_all(&env)?;
            true
        }
        Ok(_) => {
            fs_err::remove_file(&env)?;
            true
        }
        Err(_) => false,
    };
    remove_stale(site)?;
    Ok(existed)
}
