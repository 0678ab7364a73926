//! The virtual environment at `<site>/env`: whether it fits the runtime, and
//! recreating it without downtime.
//!
//! `env` is a real directory. A new env, or a copy of the live one when only
//! packages change, is prepared in a new directory beside it
//! (`.pushdeploy-env-<n>`) while the live one stays in use and is never
//! written; the two then exchange names in one rename (RENAME_EXCHANGE). The
//! env's own paths (scripts, `pyvenv.cfg`, `activate`) name `<site>/env`, so a
//! server started from `env/bin/...` follows the switch when it reloads, and
//! a path it resolved (its real path) never names a directory that a later
//! deployment removes. The env it replaced is kept, under the prepared one's
//! name, until the next successful deployment; `sweep` removes older ones
//! and never fails. An `env` that is a symlink (made by earlier versions) is
//! exchanged the same way, and the directory it led to is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::files::{Files, copy_tree_entry};
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
    pyvenv_cfg(env, "home").map(PathBuf::from)
}

/// A value of the env's `pyvenv.cfg`, its key compared as Python's `site`
/// compares it (trimmed, in any case).
pub fn pyvenv_cfg(env: &Path, key: &str) -> Option<String> {
    let cfg = std::fs::read_to_string(env.join("pyvenv.cfg")).ok()?;
    cfg.lines().find_map(|line| {
        let (k, value) = line.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| value.trim().to_string())
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
pub fn tool(choice: &Choice, runner: &crate::process::Runner) -> Result<&'static str> {
    if choice.interpreter.version.major != 2 {
        return Ok("venv");
    }
    let python = &choice.interpreter.path;
    let expr = duct::cmd!(python, "-c", "import virtualenv");
    let has_it = runner.capture("the virtualenv check", expr)?.success;
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
/// The caller has swept what an earlier, killed build left (`sweep`).
///
/// `seeds` is where pip is kept per interpreter for fast creation (see `seed`).
pub fn build(
    site: &Path,
    choice: &Choice,
    seeds: &Path,
    uv: Option<&Path>,
    runner: &crate::process::Runner,
    report: &mut Report,
) -> Result<PathBuf> {
    let dir = new_dir(site)?;
    let python = &choice.interpreter.path;
    let v = choice.interpreter.version;
    let tool = tool(choice, &runner.for_server())?;
    if tool == "venv" {
        crate::seed::create(python, v, dir.path(), seeds, uv, runner, report)?;
    } else {
        report.detail(format!("{} -m {tool} env/", python.display()));
        runner.run(
            report,
            &format!("python -m {tool}"),
            duct::cmd!(python, "-m", tool, dir.path()),
        )?;
    }
    let marker = dir.path().join(marker_name(&choice.runtime));
    fs_err::write(&marker, format!("{}\n{}\n", python.display(), v))?;
    lead_through_env(dir.path(), site, &[])?;
    Ok(dir.keep())
}

/// A new, empty directory for an env, beside `env`: the first free of a
/// few fixed names, which alternate as envs are switched and removed. uv
/// keeps what it learnt of an interpreter by its path; under a new random
/// name each time, every install began by running the env's Python to ask
/// again (70 ms and more).
fn new_dir(site: &Path) -> Result<tempfile::TempDir> {
    crate::fault::point("make env directory")?;
    let named = |suffix: &str, rand: usize| {
        tempfile::Builder::new()
            .prefix(ENV_DIR_PREFIX)
            .suffix(suffix)
            .rand_bytes(rand)
            .tempdir_in(site)
    };
    for suffix in ["a", "b", "c"] {
        match named(suffix, 0) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            made => {
                return made.with_context(|| {
                    format!("creating a directory for the new env in {}", site.display())
                });
            }
        }
    }
    named("", 6)
        .with_context(|| format!("creating a directory for the new env in {}", site.display()))
}

/// Prepares a copy of the live env in a new directory beside it, for an
/// install that must not write into the env the app runs on, without
/// copying what the install does not change: see [`share_tree`].
pub fn copy_aside(site: &Path) -> Result<PathBuf> {
    let env = site.join("env");
    let from = fs_err::canonicalize(&env)?;
    let dir = new_dir(site)?;
    share_tree(&from, dir.path()).context("preparing a copy of env/ aside")?;
    lead_through_env(dir.path(), site, &[from])?;
    Ok(dir.keep())
}

/// Makes `to` a copy of the env at `from` in which the installer may do
/// anything without touching `from`. The files of installed packages are
/// hard links: pip and uv never write such a file where it is, they
/// remove a distribution's files (pip renames them aside first) and write
/// new ones, unlinking any file in the way, and Python writes bytecode to a
/// temp file that it renames (the directories are the copy's own, so a
/// rename or an unlink only ever changes the copy). What an installer or
/// pushdeploy does rewrite in place is copied: everything outside
/// site-packages (`bin/`'s scripts, `pyvenv.cfg`), site-packages' own files
/// (`.pth` files, which an uninstall of a `setup.py develop` install edits;
/// single-module packages) and every distribution's metadata directory
/// (`RECORD`, `INSTALLER`, `direct_url.json`).
pub fn share_tree(from: &Path, to: &Path) -> Result<()> {
    fs_err::create_dir_all(to)?;
    for entry in fs_err::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_name() == "lib" && entry.file_type()?.is_dir() {
            fs_err::create_dir(&target)?;
            for python in fs_err::read_dir(entry.path())? {
                let python = python?;
                let inner = target.join(python.file_name());
                if python.file_type()?.is_dir() {
                    share_python_dir(&python.path(), &inner)?;
                } else {
                    copy_tree_entry(&python, &inner, Files::Copy)?;
                }
            }
        } else {
            copy_tree_entry(&entry, &target, Files::Copy)?;
        }
    }
    Ok(())
}

/// The distributions installed in an env: their `.dist-info` folders.
pub fn dist_infos(env_dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for dir in crate::installed::site_packages(env_dir) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".dist-info") {
                out.insert(entry.path());
            }
        }
    }
    out
}

/// After an install: the bytecode of every module of a distribution it
/// added (one not in `before`) goes. Python trusts a `.pyc` while its source
/// has the recorded size and whole-second mtime, and an installer may write
/// another version's module with both the same (uv keeps its cache's mtimes;
/// a downgrade within the second of an upgrade); pip removes the bytecode
/// when it uninstalls, uv does not. It is made again on the next import.
pub fn forget_replaced_bytecode(env_dir: &Path, before: &BTreeSet<PathBuf>) -> Result<()> {
    for dist in dist_infos(env_dir).difference(before) {
        let Some(site) = dist.parent() else { continue };
        let Ok(record) = std::fs::read_to_string(dist.join("RECORD")) else {
            continue;
        };
        // The distribution's modules by folder: each `__pycache__` read once.
        let mut folders: BTreeMap<&Path, Vec<&str>> = BTreeMap::new();
        for line in record.lines() {
            // `path,hash,size`; a path with a comma is quoted, and none of
            // those is a module pushdeploy looks for.
            let path = line.split(',').next().unwrap_or_default();
            if !path.ends_with(".py") || path.starts_with('"') || path.split('/').any(|p| p == "..")
            {
                continue;
            }
            let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
            folders.entry(Path::new(folder)).or_default().push(name);
        }
        for (folder, names) in folders {
            if let Ok(dir) = crate::site_dir::SiteDir::open(&site.join(folder)) {
                dir.root().forget_bytecode(names)?;
            }
        }
    }
    Ok(())
}

/// `lib/pythonX.Y`: its `site-packages` shared as [`share_tree`] says, the
/// rest copied.
fn share_python_dir(from: &Path, to: &Path) -> Result<()> {
    fs_err::create_dir(to)?;
    for entry in fs_err::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_name() != "site-packages" || !entry.file_type()?.is_dir() {
            copy_tree_entry(&entry, &target, Files::Copy)?;
            continue;
        }
        fs_err::create_dir(&target)?;
        let items = fs_err::read_dir(entry.path())?.collect::<std::io::Result<Vec<_>>>()?;
        // Two threads take the entries in turn: the links are system calls
        // that each wait for the kernel, and a push has two cores.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || -> Result<()> {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    return Ok(());
                };
                let name = item.file_name();
                let name = name.to_string_lossy();
                let metadata = name.ends_with(".dist-info") || name.ends_with(".egg-info");
                let files = if item.file_type()?.is_dir() && !metadata && name != "__pycache__" {
                    Files::Link
                } else {
                    Files::Copy
                };
                copy_tree_entry(item, &target.join(item.file_name()), files)?;
            }
        };
        std::thread::scope(|scope| {
            // A thread (`Scope::spawn`, not a program: process.rs checks
            // that no other module calls a `.spawn(`).
            let other = std::thread::Scope::spawn(scope, work);
            let mine = work();
            let other = other
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread linking the env panicked")));
            mine.and(other)
        })?;
    }
    Ok(())
}

/// Makes the env's own paths (its scripts' `#!` lines, `pyvenv.cfg`,
/// `activate`'s `VIRTUAL_ENV`) name `<site>/env` instead of the directory
/// it is built in (or `others`, where it was copied from). A server started
/// from `env/bin/gunicorn` then follows `env` when it reloads, and nothing
/// names a directory that a later deployment removes.
pub fn lead_through_env(dir: &Path, site: &Path, others: &[PathBuf]) -> Result<()> {
    let env = site.join("env");
    let env = env.as_os_str().as_encoded_bytes();
    let mut names = vec![dir.to_path_buf()];
    names.extend(others.iter().cloned());
    let mut files = vec![dir.join("pyvenv.cfg")];
    if let Ok(entries) = std::fs::read_dir(dir.join("bin")) {
        files.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path()),
        );
    }
    for file in files {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        // Scripts are small; a big file here is a program, not a script.
        if meta.len() > 1 << 20 {
            continue;
        }
        let bytes = fs_err::read(&file)?;
        let mut text = bytes.clone();
        for name in &names {
            text = replace(&text, name.as_os_str().as_encoded_bytes(), env);
        }
        if text != bytes {
            fs_err::write(&file, text)?;
        }
    }
    Ok(())
}

/// `haystack` with every `from` followed by `/`, `"`, `'`, a newline or
/// the end replaced by `to`.
pub fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from)
            && matches!(
                haystack.get(i + from.len()),
                None | Some(b'/' | b'"' | b'\'' | b'\n' | b' ' | b'\r')
            )
        {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// The directory `env` leads to now, if `env` is there: `env` itself, or
/// where a symlink `env` (the layout of earlier versions) leads.
pub fn current(site: &Path) -> Option<PathBuf> {
    let env = site.join("env");
    let meta = std::fs::symlink_metadata(&env).ok()?;
    if meta.file_type().is_symlink() {
        std::fs::read_link(&env).ok().map(|t| site.join(t))
    } else {
        Some(env)
    }
}

/// A directory's identity, which a rename keeps: how the transaction tells,
/// from the disk alone, which env is at `env` now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirId {
    dev: u64,
    ino: u64,
}

/// The identity of what is at `path` (not followed, if a symlink).
pub fn id(path: &Path) -> Option<DirId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(DirId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Whether `env` is the directory `built` is.
pub fn is_live(site: &Path, built: DirId) -> bool {
    id(&site.join("env")) == Some(built)
}

/// Exchanges `env` and `dir` (both there) in one rename. A file system
/// without RENAME_EXCHANGE gets three renames, with a moment without `env`.
fn exchange(site: &Path, dir: &Path) -> Result<()> {
    let env = site.join("env");
    crate::fault::point("exchange env")?;
    let exchanged = rustix::fs::renameat_with(
        rustix::fs::CWD,
        dir,
        rustix::fs::CWD,
        &env,
        rustix::fs::RenameFlags::EXCHANGE,
    );
    if exchanged.is_err() {
        let aside = swap_name(dir);
        fs_err::rename(&env, &aside)?;
        fs_err::rename(dir, &env)?;
        fs_err::rename(&aside, dir)?;
    }
    Ok(())
}

/// Where the three renames of an exchange without RENAME_EXCHANGE keep `env`.
fn swap_name(dir: &Path) -> PathBuf {
    dir.with_extension("swap")
}

/// Completes an exchange of `env` and `dir` that was killed between its
/// three renames (see [`exchange`]), so that `env` is there and `dir` holds
/// the other env: called by a recovery before it reads where `env` is.
pub fn complete_exchange(site: &Path, dir: &Path) -> Result<()> {
    let aside = swap_name(dir);
    if std::fs::symlink_metadata(&aside).is_err() {
        return Ok(());
    }
    let env = site.join("env");
    if std::fs::symlink_metadata(&env).is_err() {
        fs_err::rename(&aside, &env)?;
    } else if std::fs::symlink_metadata(dir).is_err() {
        fs_err::rename(&aside, dir)?;
    }
    Ok(())
}

/// Makes the prepared env at `new_dir` the live one: `env` and `new_dir`
/// exchange places in one rename (or `new_dir` becomes `env` when there is
/// none), so `env` is a real directory at every instant and a path a running
/// program resolved (uWSGI re-executes the real path of `env/bin/uwsgi` on
/// every reload) stays valid: it is `<site>/env/...`, never the name of a
/// directory a later deployment removes. The old env then lives on at
/// `new_dir`'s name; returns the env directory it replaced (kept: an app may
/// still run on it), if any. The switch is its own undo: [`unswitch`].
pub fn switch(site: &Path, new_dir: &Path) -> Result<Option<PathBuf>> {
    // Scripts the installer wrote name the directory they were installed in.
    lead_through_env(new_dir, site, &[])?;
    let env = site.join("env");
    if std::fs::symlink_metadata(&env).is_err() {
        crate::fault::point("rename env")?;
        fs_err::rename(new_dir, &env)
            .with_context(|| format!("switching {} to the new env", env.display()))?;
        return Ok(None);
    }
    exchange(site, new_dir)
        .with_context(|| format!("switching {} to the new env", env.display()))?;
    Ok(replaced(site, new_dir))
}

/// The env directory that a switch to `built` replaced, read from the disk:
/// what is at `built`'s name now, or where it leads when it is the symlink
/// `env` of earlier versions (then removed by the sweep).
pub fn replaced(site: &Path, built: &Path) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(built).ok()?;
    if meta.file_type().is_symlink() {
        std::fs::read_link(built).ok().map(|t| site.join(t))
    } else {
        Some(built.to_path_buf())
    }
}

/// Undoes [`switch`] when `env` is the env `built` (whose identity is
/// `built_id`), decided from the disk alone: the env at `built`'s name (the
/// one replaced) becomes `env` again, in one rename; with none there (there
/// was no env before), `env` goes back to `built`'s name. Says whether
/// anything changed.
pub fn unswitch(site: &Path, built: &Path, built_id: DirId) -> Result<bool> {
    if !is_live(site, built_id) {
        return Ok(false);
    }
    let env = site.join("env");
    if std::fs::symlink_metadata(built).is_ok() {
        exchange(site, built).with_context(|| format!("putting back {}", env.display()))?;
    } else {
        crate::fault::point("rename env back")?;
        fs_err::rename(&env, built).with_context(|| format!("putting back {}", env.display()))?;
    }
    Ok(true)
}

/// Whether `dir` is one of our env directories in the site.
fn ours(site: &Path, dir: &Path) -> bool {
    dir.parent() == Some(site)
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(ENV_DIR_PREFIX))
}

/// Removes an env directory of ours; one already gone is fine.
pub fn remove_dir(site: &Path, dir: &Path) -> Result<()> {
    if ours(site, dir) {
        crate::fault::point("remove env directory")?;
        match fs_err::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// The file that names the previous envs, one a line: the one the last
/// successful deployment replaced, and any `env delete` removed since; kept
/// until the next success.
fn previous_file(state_dir: &Path) -> PathBuf {
    state_dir.join("env-previous")
}

pub fn previous(site: &Path, state_dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(previous_file(state_dir)).unwrap_or_default();
    text.lines()
        .map(|name| site.join(name.trim()))
        .filter(|dir| ours(site, dir))
        .collect()
}

/// Makes `dirs` the previous envs.
pub fn set_previous(site: &Path, state_dir: &Path, dirs: &[PathBuf]) -> Result<()> {
    crate::fault::point("previous envs")?;
    let names: Vec<String> = dirs
        .iter()
        .filter(|d| ours(site, d))
        .filter_map(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        crate::files::remove_file_if_there(&previous_file(state_dir))
    } else {
        crate::files::write_atomic(&previous_file(state_dir), names.join("\n").as_bytes())
    }
}

/// Removes env directories that neither `env` nor the previous env is: left
/// by a build that failed or was killed, or replaced two successes ago. It
/// never fails: what cannot be removed now (a file held open on a network
/// file system) is said and tried again by the next deployment. Called under
/// the deployment lock only, so never while a deployment builds an env.
pub fn sweep(site: &Path, state_dir: &Path, report: &mut Report) {
    for path in sweepable(site, state_dir) {
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => remove_dir(site, &path),
            _ => crate::files::remove_file_if_there(&path),
        };
        if let Err(e) = removed {
            report.detail(format!(
                "could not remove the old env {}: {e:#}; the next deployment tries again",
                path.display()
            ));
        }
    }
}

/// What [`sweep`] removes: our env directories (and stray entries of that
/// name) that are neither `env` nor a previous env.
pub fn sweepable(site: &Path, state_dir: &Path) -> Vec<PathBuf> {
    let mut keep = previous(site, state_dir);
    keep.extend(current(site));
    let Ok(entries) = std::fs::read_dir(site) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(ENV_DIR_PREFIX))
        .map(|e| e.path())
        .filter(|path| !keep.contains(path))
        .collect()
}

/// Deletes the env (`pushdeploy env delete`): the next deployment creates
/// it. `env` goes at once; the directory it led to is kept as the previous
/// env until the next successful deployment, so an app running on it keeps
/// running. Returns whether there was one.
pub fn delete(site: &Path, state_dir: &Path) -> Result<bool> {
    let env = site.join("env");
    let Ok(meta) = std::fs::symlink_metadata(&env) else {
        return Ok(false);
    };
    // The directory is named a previous env before it goes aside, never
    // after: killed in between, no sweep removes it under a running app.
    let mut kept = previous(site, state_dir);
    if meta.file_type().is_dir() {
        let aside = new_dir(site)?.keep();
        fs_err::remove_dir(&aside)?;
        kept.push(aside.clone());
        set_previous(site, state_dir, &kept)?;
        crate::fault::point("delete env")?;
        fs_err::rename(&env, &aside)?;
    } else {
        if meta.file_type().is_symlink() {
            kept.extend(std::fs::read_link(&env).ok().map(|t| site.join(t)));
            set_previous(site, state_dir, &kept)?;
        }
        crate::fault::point("delete env")?;
        fs_err::remove_file(&env)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site with `env` (holding `old`) and a prepared env (holding `new`).
    fn site_with_two_envs() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().to_path_buf();
        std::fs::create_dir(site.join("env")).unwrap();
        std::fs::write(site.join("env/which"), "old").unwrap();
        let built = site.join(format!("{ENV_DIR_PREFIX}new"));
        std::fs::create_dir(&built).unwrap();
        std::fs::write(built.join("which"), "new").unwrap();
        (dir, site, built)
    }

    fn which(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("which")).unwrap()
    }

    #[test]
    fn a_new_env_directory_takes_the_first_free_fixed_name_then_a_random_one() {
        let site = tempfile::tempdir().unwrap();
        let name = |d: tempfile::TempDir| {
            let path = d.keep();
            path.file_name().unwrap().to_string_lossy().into_owned()
        };
        // Something not ours in the way (a file the app made) is skipped, never used.
        std::fs::write(site.path().join(format!("{ENV_DIR_PREFIX}a")), "app's").unwrap();
        assert_eq!(
            name(new_dir(site.path()).unwrap()),
            format!("{ENV_DIR_PREFIX}b")
        );
        assert_eq!(
            name(new_dir(site.path()).unwrap()),
            format!("{ENV_DIR_PREFIX}c")
        );
        let random = name(new_dir(site.path()).unwrap());
        assert!(random.starts_with(ENV_DIR_PREFIX) && random.len() == ENV_DIR_PREFIX.len() + 6);
        assert_eq!(
            std::fs::read_to_string(site.path().join(format!("{ENV_DIR_PREFIX}a"))).unwrap(),
            "app's"
        );
    }

    #[test]
    fn the_switch_exchanges_directories_and_is_undone_by_identity() {
        let (_dir, site, built) = site_with_two_envs();
        let id = id(&built).unwrap();
        assert!(!is_live(&site, id));
        assert!(!unswitch(&site, &built, id).unwrap(), "nothing to undo");
        assert_eq!(switch(&site, &built).unwrap(), Some(built.clone()));
        assert!(is_live(&site, id));
        assert!(
            std::fs::symlink_metadata(site.join("env"))
                .unwrap()
                .is_dir()
        );
        assert_eq!(
            (which(&site.join("env")), which(&built)),
            ("new".into(), "old".into())
        );
        assert!(unswitch(&site, &built, id).unwrap());
        assert_eq!(
            (which(&site.join("env")), which(&built)),
            ("old".into(), "new".into())
        );
    }

    #[test]
    fn an_exchange_killed_between_its_three_renames_is_completed() {
        // Killed after `env` went aside: `env` comes back.
        let (_dir, site, built) = site_with_two_envs();
        std::fs::rename(site.join("env"), swap_name(&built)).unwrap();
        complete_exchange(&site, &built).unwrap();
        assert_eq!(
            (which(&site.join("env")), which(&built)),
            ("old".into(), "new".into())
        );
        // Killed after the new env became `env`: the old one takes its name.
        let (_dir, site, built) = site_with_two_envs();
        std::fs::rename(site.join("env"), swap_name(&built)).unwrap();
        std::fs::rename(&built, site.join("env")).unwrap();
        complete_exchange(&site, &built).unwrap();
        assert_eq!(
            (which(&site.join("env")), which(&built)),
            ("new".into(), "old".into())
        );
    }

    #[test]
    fn a_shared_env_links_package_files_and_copies_what_is_rewritten_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("env"), dir.path().join("copy"));
        let sp = "lib/python3.11/site-packages";
        let files = [
            ("pyvenv.cfg", false),
            ("bin/gunicorn", false),
            ("azure.env.python-3.11.txt", false),
            ("lib/python3.11/other.txt", false),
            ("lib/python3.11/site-packages/easy-install.pth", false),
            ("lib/python3.11/site-packages/six.py", false),
            (
                "lib/python3.11/site-packages/__pycache__/six.cpython-311.pyc",
                false,
            ),
            (
                "lib/python3.11/site-packages/flask-3.1.dist-info/RECORD",
                false,
            ),
            ("lib/python3.11/site-packages/old.egg-info/PKG-INFO", false),
            ("lib/python3.11/site-packages/flask/__init__.py", true),
            (
                "lib/python3.11/site-packages/flask/__pycache__/app.cpython-311.pyc",
                true,
            ),
            ("lib/python3.11/site-packages/flask/json/tag.py", true),
        ];
        for (path, _) in files {
            let path = from.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, path.to_string_lossy().as_bytes()).unwrap();
        }
        std::os::unix::fs::symlink("lib", from.join("lib64")).unwrap();
        share_tree(&from, &to).unwrap();
        for (path, linked) in files {
            let (a, b) = (from.join(path), to.join(path));
            assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            let same = std::fs::metadata(&a).unwrap().ino() == std::fs::metadata(&b).unwrap().ino();
            assert_eq!(same, linked, "{path}");
        }
        assert_eq!(
            std::fs::read_link(to.join("lib64")).unwrap(),
            Path::new("lib")
        );
        assert!(to.join(sp).is_dir());
    }

    /// Many packages (taken by two threads) and a folder whose names take
    /// more than one read of the directory: every file is there, linked.
    #[test]
    fn a_shared_env_of_many_packages_and_big_folders_is_whole() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("env"), dir.path().join("copy"));
        let sp = Path::new("lib/python3.11/site-packages");
        let mut paths = Vec::new();
        for p in 0..40 {
            paths.push(sp.join(format!("pkg{p}/sub/m{p}.py")));
        }
        for f in 0..2000 {
            paths.push(sp.join(format!(
                "big/{f:04}_a_module_with_a_long_name_as_generated_code_has.py"
            )));
        }
        for path in &paths {
            let path = from.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, path.to_string_lossy().as_bytes()).unwrap();
        }
        share_tree(&from, &to).unwrap();
        for path in &paths {
            let (a, b) = (from.join(path), to.join(path));
            assert_eq!(
                std::fs::metadata(&a).unwrap().ino(),
                std::fs::metadata(&b).unwrap().ino()
            );
        }
        assert_eq!(
            std::fs::read_dir(to.join(sp).join("big")).unwrap().count(),
            2000
        );
        assert_eq!(std::fs::read_dir(to.join(sp)).unwrap().count(), 41);
    }

    #[test]
    fn replaces_whole_paths_only() {
        let text = b"#!/s/.pushdeploy-env-ab/bin/python\nVIRTUAL_ENV='/s/.pushdeploy-env-ab'\nx=/s/.pushdeploy-env-abc\n";
        assert_eq!(
            replace(text, b"/s/.pushdeploy-env-ab", b"/s/env"),
            b"#!/s/env/bin/python\nVIRTUAL_ENV='/s/env'\nx=/s/.pushdeploy-env-abc\n"
        );
    }
}
