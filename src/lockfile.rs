//! Installing exactly what a lock file names: the plan's part (which tool,
//! what the install depends on, what the dry run would change) and the
//! install itself.
//!
//! - uv.lock: `uv sync --locked --no-default-groups --no-install-project`
//!   with `UV_PROJECT_ENVIRONMENT` pointed at the env. uv removes what the
//!   lock does not name and keeps the env's own pip.
//! - poetry.lock: `poetry sync --only main --no-root` (Poetry 2) with the
//!   env as the active virtual environment.
//! - Pipfile.lock: converted to a hashed requirements file, installed by the
//!   installer (`pip` or `uv pip`) with `--no-deps --require-hashes`; then
//!   what the lock does not name is uninstalled.
//!
//! pip, setuptools and wheel (what the env was made with) always stay.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::commit::Commit;
use crate::commit::short_id;
use crate::env::Decision;
use crate::installed::{self, Fingerprint, Input, PipDecision, RunReason};
use crate::managers::{self, Kind};
use crate::packages::{Installer, Package};
use crate::pipfile;
use crate::process::Runner;
use crate::report::Report;
use crate::runtime::Choice;
use crate::settings::{EXTRAS, GROUPS, INSTALL_PROJECT, SKIP_UNCHANGED, Settings, Values};
use crate::tools::{self, Tool};

/// Packages that an env keeps whatever a lock says: what it was made with.
const KEPT: &[&str] = &["pip", "setuptools", "wheel"];

/// How the lock file is installed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockPlan {
    pub kind: Kind,
    /// uv or Poetry; `None` for Pipfile.lock, which the installer installs.
    pub tool: Option<Tool>,
    pub groups: Vec<String>,
    pub extras: Vec<String>,
    pub install_project: bool,
    /// Why it runs or is skipped.
    pub reason: String,
    /// The dry run's answer: what would be installed, upgraded, removed.
    pub changes: Option<Changes>,
    /// Pipfile.lock as a hashed requirements file, and its pins.
    #[serde(skip)]
    pub requirements: Option<pipfile::Converted>,
    /// The local paths the lock names (path dependencies, workspace members).
    #[serde(skip)]
    pub local: Vec<String>,
    /// uv.lock's packages built from a folder of the site (not editable):
    /// rebuilt at each install, since uv would keep its first build while
    /// their version holds.
    #[serde(skip)]
    pub rebuilt: Vec<String>,
}

/// What an install would change in the env.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    pub install: Vec<Package>,
    /// (name, from, to)
    pub upgrade: Vec<(String, String, String)>,
    pub remove: Vec<Package>,
    /// Why the tool could not say, when it could not.
    pub unknown: Option<String>,
}

impl Changes {
    pub fn lines(&self) -> Vec<String> {
        if let Some(why) = &self.unknown {
            return vec![format!("cannot say what would change: {why}")];
        }
        let mut out = Vec::new();
        let list = |p: &[Package]| {
            p.iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.install.is_empty() {
            out.push(format!("would install {}", list(&self.install)));
        }
        if !self.upgrade.is_empty() {
            out.push(format!(
                "would change {}",
                self.upgrade
                    .iter()
                    .map(|(n, a, b)| format!("{n} {a} -> {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.remove.is_empty() {
            out.push(format!("would remove {}", list(&self.remove)));
        }
        if out.is_empty() {
            out.push("nothing to change (the env matches the lock)".into());
        }
        out
    }
}

impl LockPlan {
    /// The command that installs, as the output names it.
    pub fn command(&self, installer: &Installer) -> String {
        match (self.kind, &self.tool) {
            (Kind::Uv, Some(tool)) => {
                format!("{} {}", tool.path.display(), uv_args(self).join(" "))
            }
            (Kind::Poetry, Some(tool)) => {
                format!(
                    "{} {}",
                    tool.path.display(),
                    poetry_args(self, tool).join(" ")
                )
            }
            _ => match installer {
                Installer::Pip => {
                    "pip install --no-deps --require-hashes -r (Pipfile.lock's packages)".into()
                }
                Installer::Uv { path, .. } => format!(
                    "{} pip install --no-deps --require-hashes -r (Pipfile.lock's packages)",
                    path.display()
                ),
            },
        }
    }

    /// Why the lock must be installed from the site's own files, after the
    /// file switch: the app itself is installed as a project, or the lock
    /// names a path (a path dependency, a workspace member) that lives in
    /// the site. `None`: it installs aside, from the commit's files.
    pub fn needs_the_site(&self) -> Option<String> {
        if self.kind == Kind::Pipenv {
            // Path entries are refused when the lock is converted.
            return None;
        }
        if self.install_project {
            return Some("installProject is set: the app is installed from its own files".into());
        }
        self.local
            .first()
            .map(|path| format!("{} names a local path ({path})", self.kind.lock_file()))
    }

    /// The step's name in records.
    pub fn step(&self) -> &'static str {
        match self.kind {
            Kind::Uv => "uv sync",
            Kind::Poetry => "poetry sync",
            Kind::Pipenv => "Pipfile.lock",
        }
    }
}

fn uv_args(lock: &LockPlan) -> Vec<String> {
    // No uv.toml or [tool.uv] settings (a commit's could move uv's cache
    // out of reach of the trust rules); the project's indexes and sources
    // still count. The project (installProject) and workspace members are
    // installed editable, as `uv sync` does by default: the env imports
    // them from the site, so their code is always the deployed commit's
    // (a built copy would stay at its first build while the version holds).
    let mut args: Vec<String> = ["sync", "--locked", "--no-config", "--no-default-groups"]
        .map(String::from)
        .to_vec();
    if !lock.install_project {
        args.push("--no-install-project".into());
    }
    for name in &lock.rebuilt {
        // One word: a name can never be read as another option.
        args.push(format!("--reinstall-package={name}"));
    }
    for g in &lock.groups {
        args.extend(["--group".into(), g.clone()]);
    }
    for e in &lock.extras {
        args.extend(["--extra".into(), e.clone()]);
    }
    args
}

/// The names of uv.lock's packages whose source is a folder, installed
/// built (`source = { directory = "libs/x" }`), not editable.
fn uv_directory_packages(lock: &[u8]) -> Result<Vec<String>> {
    let table = managers::parse_toml(Kind::Uv.lock_file(), lock)?;
    let packages = table.get("package").and_then(|p| p.as_array());
    let mut names: Vec<String> = packages
        .into_iter()
        .flatten()
        .filter(|p| {
            p.get("source")
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key("directory"))
        })
        .filter_map(|p| p.get("name").and_then(|n| n.as_str()))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn poetry_major(tool: &Tool) -> u32 {
    tool.version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2)
}

fn poetry_args(lock: &LockPlan, tool: &Tool) -> Vec<String> {
    let mut args: Vec<String> = if poetry_major(tool) >= 2 {
        vec!["sync".into()]
    } else {
        vec!["install".into(), "--sync".into()]
    };
    let mut only = vec!["main".to_string()];
    only.extend(lock.groups.iter().cloned());
    args.extend(["--only".into(), only.join(",")]);
    if !lock.install_project {
        args.push("--no-root".into());
    }
    if !lock.extras.is_empty() {
        args.extend(["--extras".into(), lock.extras.join(" ")]);
    }
    args.extend(["--no-interaction".into(), "--no-ansi".into()]);
    args
}

/// What the plan needs from its caller.
pub struct Inputs<'a> {
    pub settings: &'a Settings,
    pub values: &'a Values,
    pub commit: &'a Commit<'a>,
    pub runtime: &'a Choice,
    pub env: &'a Decision,
    pub installer: &'a Installer,
    pub preview: bool,
    /// Runs the dry run's questions under the deployment's limits.
    pub runner: &'a Runner,
}

/// Plans the install of a lock file: the tool, whether it runs, and (in a
/// dry run) what it would change.
pub fn plan(kind: Kind, cx: &Inputs) -> Result<(LockPlan, PipDecision, Option<Fingerprint>)> {
    let settings = cx.settings;
    let commit = cx.commit;
    let lock_bytes = commit
        .read_root_file(kind.lock_file())?
        .with_context(|| format!("{} is not a file of the commit", kind.lock_file()))?;
    let project_bytes = commit
        .read_root_file(kind.project_file())?
        .with_context(|| format!("{} is not a file of the commit", kind.project_file()))?;
    let values = cx.values;
    let list = |key| {
        values
            .text(key)
            .map(|(v, _)| managers::names(v))
            .unwrap_or_default()
    };
    let mut requirements = None;
    let tool = match kind {
        Kind::Uv => Some(tools::choose(settings, values, tools::Name::Uv)?),
        Kind::Poetry => Some(tools::choose(settings, values, tools::Name::Poetry)?),
        Kind::Pipenv => {
            pipfile::check(&project_bytes, &lock_bytes)?;
            requirements = Some(pipfile::convert(&lock_bytes)?);
            None
        }
    };
    // Read once: a lock that is not TOML (or JSON) fails here, in the plan.
    let local = managers::local_sources(kind, &lock_bytes)?;
    for path in &local {
        let rel = path.strip_prefix("file://").unwrap_or(path);
        if rel.starts_with('/') || installed::climbs_out(rel) {
            bail!(
                "{} names the local path {}, outside the site; local requirements must be inside the site",
                kind.lock_file(),
                crate::error::shown(path.as_bytes())
            );
        }
    }
    let mut lock = LockPlan {
        kind,
        tool,
        groups: list(GROUPS),
        extras: list(EXTRAS),
        install_project: values.bool(INSTALL_PROJECT).is_some_and(|(b, _)| b),
        reason: String::new(),
        changes: None,
        requirements,
        local: Vec::new(),
        rebuilt: Vec::new(),
    };
    if kind == Kind::Pipenv && (!lock.groups.is_empty() || !lock.extras.is_empty()) {
        bail!(
            "settings groups and extras do not apply to Pipfile.lock, which installs its default packages"
        );
    }
    let fingerprint = fingerprint(&lock, cx, &local);
    if kind == Kind::Uv && !local.is_empty() {
        lock.rebuilt = uv_directory_packages(&lock_bytes)?;
    }
    lock.local = local;
    let store = installed::Store::new(&settings.state_dir);
    // The store's decision, and the same said for a lock file.
    let (decision, reason) = match (cx.env, &fingerprint, values.bool(SKIP_UNCHANGED)) {
        (Decision::Create { .. }, _, _) => (PipDecision::run(RunReason::NewEnv), None),
        (_, Err(why), _) => (
            // Outside the commit: nothing says whether it changed.
            PipDecision::run(RunReason::Changed {
                inputs: vec![Input::Requirements],
            }),
            Some(format!("{why}: the install always runs")),
        ),
        (_, _, Some((false, origin))) => (
            PipDecision::run(RunReason::NotSkipping {
                origin: origin.to_string(),
            }),
            None,
        ),
        (Decision::Reuse, Ok(fp), _) => (store.decide(fp), None),
    };
    let reason = reason.unwrap_or_else(|| reason_text(kind, &decision));
    lock.reason = reason;
    if cx.preview {
        lock.changes = Some(match (cx.env, &decision) {
            (_, PipDecision::Skip { .. }) => Changes::default(),
            (Decision::Create { .. }, _) => Changes {
                unknown: Some("the env is new: everything the lock names is installed".into()),
                ..Changes::default()
            },
            (Decision::Reuse, PipDecision::Run { .. }) => preview(&lock, cx),
        });
    }
    Ok((lock, decision, fingerprint.ok()))
}

/// Why the install runs or is skipped, in the words of a lock file: the
/// store's inputs are named for what they hold here.
fn reason_text(kind: Kind, decision: &PipDecision) -> String {
    match decision {
        PipDecision::Skip { since } => format!(
            "{}, {}, interpreter, env and settings unchanged since {}",
            kind.lock_file(),
            kind.project_file(),
            short_id(since)
        ),
        PipDecision::Run {
            reason: RunReason::Changed { inputs },
        } => format!("changed since the last install: {}", lock_inputs(inputs)),
        PipDecision::Run {
            reason: RunReason::LastFailed { deployment, inputs },
        } if !inputs.is_empty() => format!(
            "the last install, by deployment {}, failed; changed since the last successful one: {}",
            short_id(deployment),
            lock_inputs(inputs)
        ),
        PipDecision::Run { reason } => reason.to_string(),
    }
}

/// The store's inputs, named for what they hold for a lock file.
fn lock_inputs(inputs: &[Input]) -> String {
    let names: Vec<&str> = inputs
        .iter()
        .map(|i| match i {
            Input::Requirements => "lock and project files",
            Input::Installer => "tool",
            Input::PipSettings => "settings",
            Input::ConfigFiles => "config files",
            Input::Interpreter => "interpreter",
            Input::Env => "env",
            Input::FindLinks => "find-links directories",
            Input::Platform => "platform",
            Input::GitCommits => "git commits",
        })
        .collect();
    names.join(", ")
}

/// What the install depends on (the env and interpreter as they are now),
/// or why it must always run.
fn fingerprint(lock: &LockPlan, cx: &Inputs, local: &[String]) -> Result<Fingerprint, String> {
    let commit = cx.commit;
    let settings = cx.settings;
    let kind = lock.kind;
    let manager = match &lock.tool {
        Some(tool) => format!(
            "{} {} {}",
            tool.name.command(),
            tool.version,
            tool.path.display()
        ),
        None => format!("Pipfile.lock with {}", cx.installer),
    };
    let mut files = Vec::new();
    for name in [
        kind.lock_file(),
        kind.project_file(),
        "poetry.toml",
        ".python-version",
    ] {
        if let Some(id) = commit.path_id(name) {
            files.push(format!("{name} {id}"));
        }
    }
    for path in local {
        let rel = path.strip_prefix("file://").unwrap_or(path);
        if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            return Err(format!(
                "{} names {path}, outside the project",
                kind.lock_file()
            ));
        }
        let id = commit.path_id(rel).unwrap_or_else(|| "(missing)".into());
        let rel = rel.to_string();
        files.push(format!("local source {rel} {id}"));
    }
    let prefixes = ["PIP_", "UV_", "POETRY_"];
    let mut vars: Vec<String> = prefixes
        .iter()
        .flat_map(|p| settings.env.with_prefix(p))
        .chain(
            cx.values
                .app
                .iter()
                .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
                .cloned(),
        )
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.push(format!(
        "groups={} extras={} installProject={}",
        lock.groups.join(","),
        lock.extras.join(","),
        lock.install_project
    ));
    vars.sort();
    let mut configs = Vec::new();
    for path in config_files(settings) {
        if let Ok(content) = std::fs::read(&path) {
            configs.push(format!(
                "{} {}",
                path.display(),
                String::from_utf8_lossy(&content)
            ));
        }
    }
    let fp = Fingerprint::from_inputs([
        (Input::Installer, manager),
        (Input::Requirements, files.join("\n")),
        (Input::PipSettings, vars.join("\n")),
        (Input::ConfigFiles, configs.join("\n")),
    ]);
    Ok(fp.with_env(&settings.site.join("env"), cx.runtime.interpreter.version))
}

/// The configuration files of pip and Poetry that may apply (uv runs with
/// `--no-config`).
fn config_files(settings: &Settings) -> Vec<PathBuf> {
    let env = &settings.env;
    let home = env.home();
    let config = env
        .get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config"));
    let mut files = vec![
        PathBuf::from("/etc/pip.conf"),
        home.join(".pip/pip.conf"),
        config.join("pip/pip.conf"),
        config.join("pypoetry/config.toml"),
        config.join("pypoetry/auth.toml"),
        settings.site.join("env/pip.conf"),
    ];
    for var in ["PIP_CONFIG_FILE", "POETRY_CONFIG_DIR"] {
        if let Some(file) = env.get(var) {
            files.push(PathBuf::from(file));
        }
    }
    files
}

/// Asks the tool (or, for Pipfile.lock, compares the pins with the env)
/// what an install would change.
fn preview(lock: &LockPlan, cx: &Inputs) -> Changes {
    let result = (|| -> Result<Changes> {
        let env = cx.settings.site.join("env");
        match (lock.kind, &lock.tool) {
            (Kind::Pipenv, _) => {
                let pins = &lock
                    .requirements
                    .as_ref()
                    .expect("converted in the plan")
                    .pins;
                Ok(compare(pins, &installed_with_commits(&env)))
            }
            (_, Some(tool)) if tool.found == tools::Found::ToInstall => {
                bail!("{} is not installed yet", tool.name.command())
            }
            (kind, Some(tool)) => {
                let dir = tempfile::tempdir().context("a temp dir for the dry run")?;
                write_project(kind, cx.commit, dir.path())?;
                let mut args = match kind {
                    Kind::Uv => uv_args(lock),
                    _ => poetry_args(lock, tool),
                };
                args.push("--dry-run".into());
                let expr = tool_command(cx.settings, lock, tool, &env, dir.path(), &args);
                let expr = cx.values.app.iter().fold(expr, |e, (k, v)| e.env(k, v));
                let out = cx
                    .runner
                    .capture("the tool's dry run", expr)
                    .context("running the tool's dry run")?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                if !out.success {
                    let last = crate::process::last_line(text.as_bytes());
                    bail!("{} failed: {}", lock.step(), last);
                }
                Ok(match kind {
                    Kind::Uv => parse_uv_dry_run(&text),
                    _ => parse_poetry_dry_run(&text),
                })
            }
            _ => bail!("no tool"),
        }
    })();
    result.unwrap_or_else(|e| Changes {
        unknown: Some(format!("{e:#}")),
        ..Changes::default()
    })
}

/// Writes what the tool reads of the project, from the commit, into `dir`:
/// the lock, its project file, and the files beside them that the tool may
/// read (`poetry.toml`, `.python-version`, a README the project names). The
/// project's source is not needed: it is not installed (`--no-install-project`,
/// `--no-root`).
pub fn write_project(kind: Kind, commit: &Commit, dir: &Path) -> Result<()> {
    for name in [
        kind.lock_file(),
        kind.project_file(),
        "poetry.toml",
        ".python-version",
        "README.md",
        "README.rst",
        "README.txt",
        "README",
    ] {
        if let Some(bytes) = commit.read_root_file(name)? {
            fs_err::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}

/// The tool's command with the env it installs into.
fn tool_command(
    settings: &Settings,
    lock: &LockPlan,
    tool: &Tool,
    env: &Path,
    dir: &Path,
    args: &[String],
) -> duct::Expression {
    let expr = duct::cmd(&tool.path, args).dir(dir);
    let server = &settings.env;
    let poetry_cache = match (server.os("POETRY_CACHE_DIR"), server.os("XDG_CACHE_HOME")) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(cache)) => Path::new(cache).join("pypoetry"),
        (None, None) => server.home().join(".cache/pypoetry"),
    };
    match lock.kind {
        Kind::Uv => expr
            .env("UV_PROJECT_ENVIRONMENT", env)
            .env("UV_PYTHON", env.join("bin").join("python"))
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("NO_COLOR", "1"),
        _ => {
            let path = std::env::join_paths(std::iter::once(env.join("bin")).chain(
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
            ))
            .unwrap_or_default();
            expr.env("VIRTUAL_ENV", env)
                .env("PATH", path)
                // Over the project's poetry.toml: no env of Poetry's own, and
                // its cache where the server keeps it.
                .env("POETRY_VIRTUALENVS_CREATE", "false")
                .env("POETRY_CACHE_DIR", poetry_cache)
                .env("NO_COLOR", "1")
        }
    }
}

/// uv's `--dry-run`: ` + name==version`, ` - name==version`.
fn parse_uv_dry_run(text: &str) -> Changes {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let (list, rest) = match line.split_at_checked(2) {
            Some(("+ ", rest)) => (&mut added, rest),
            Some(("- ", rest)) => (&mut removed, rest),
            _ => continue,
        };
        if let Some((name, version)) = rest.split_once("==") {
            list.push(Package {
                name: name.trim().to_string(),
                version: version.split_whitespace().next().unwrap_or("").to_string(),
            });
        }
    }
    pair_up(added, removed)
}

/// Poetry's `--dry-run`: `- Installing name (1.0)`, `- Updating name (1.0 -> 2.0)`,
/// `- Removing name (1.0)`, `- Downgrading ...`.
fn parse_poetry_dry_run(text: &str) -> Changes {
    let mut changes = Changes::default();
    for line in text.lines() {
        let line = line.trim().trim_start_matches("- ").trim();
        let Some((verb, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((name, versions)) = rest.split_once(" (") else {
            continue;
        };
        let versions = versions.trim_end_matches(')').trim_end_matches(": Pending");
        let versions = versions.split(')').next().unwrap_or(versions);
        let name = name.trim().to_string();
        match verb {
            "Installing" => changes.install.push(Package {
                name,
                version: versions.to_string(),
            }),
            "Removing" => changes.remove.push(Package {
                name,
                version: versions.to_string(),
            }),
            "Updating" | "Downgrading" => {
                if let Some((a, b)) = versions.split_once(" -> ") {
                    changes.upgrade.push((name, a.to_string(), b.to_string()));
                }
            }
            _ => {}
        }
    }
    changes
}

/// A package both removed and added is changed from one version to another.
fn pair_up(added: Vec<Package>, removed: Vec<Package>) -> Changes {
    let mut changes = Changes::default();
    for p in &added {
        match removed
            .iter()
            .find(|r| normalize(&r.name) == normalize(&p.name))
        {
            Some(r) => changes
                .upgrade
                .push((p.name.clone(), r.version.clone(), p.version.clone())),
            None => changes.install.push(p.clone()),
        }
    }
    changes.remove = removed
        .into_iter()
        .filter(|r| {
            !added
                .iter()
                .any(|p| normalize(&p.name) == normalize(&r.name))
        })
        .collect();
    changes
}

/// PEP 503's normal form of a package name.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The distributions installed in an env's site-packages, from their
/// `.dist-info` directory names.
pub fn installed_packages(env: &Path) -> Vec<Package> {
    installed(env, false)
}

/// [`installed_packages`], with `git <commit>` as the version of those
/// installed from git, which is what Pipfile.lock's git pins compare with.
fn installed_with_commits(env: &Path) -> Vec<Package> {
    installed(env, true)
}

fn installed(env: &Path, commits: bool) -> Vec<Package> {
    let mut found = Vec::new();
    for site in crate::installed::site_packages(env) {
        for entry in std::fs::read_dir(&site).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".dist-info")
                && let Some((n, v)) = stem.rsplit_once('-')
            {
                // Installed from git: its commit is what a lock pins.
                let version = match commits.then(|| git_commit(&entry.path())).flatten() {
                    Some(commit) => format!("git {commit}"),
                    None => v.to_string(),
                };
                found.push(Package {
                    name: n.to_string(),
                    version,
                });
            }
        }
    }
    found.sort_by_key(|p| normalize(&p.name));
    found
}

/// The commit a package was installed from, when it came from git: PEP
/// 610's `direct_url.json` in its dist-info (pip and uv write it).
fn git_commit(dist_info: &Path) -> Option<String> {
    let bytes = std::fs::read(dist_info.join("direct_url.json")).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let vcs = json.get("vcs_info")?;
    (vcs.get("vcs")?.as_str()? == "git")
        .then(|| vcs.get("commit_id")?.as_str().map(str::to_string))
        .flatten()
}

/// What installing `pins` into an env holding `installed` changes, pip's
/// own packages aside.
fn compare(pins: &[pipfile::Pin], installed: &[Package]) -> Changes {
    let mut changes = Changes::default();
    for pin in pins {
        match installed
            .iter()
            .find(|p| normalize(&p.name) == normalize(&pin.name))
        {
            Some(p) if p.version == pin.version => {}
            Some(p) => {
                changes
                    .upgrade
                    .push((pin.name.clone(), p.version.clone(), pin.version.clone()))
            }
            None => changes.install.push(Package {
                name: pin.name.clone(),
                version: pin.version.clone(),
            }),
        }
    }
    changes.remove = installed
        .iter()
        .filter(|p| {
            let n = normalize(&p.name);
            !KEPT.contains(&n.as_str()) && !pins.iter().any(|pin| normalize(&pin.name) == n)
        })
        .cloned()
        .collect();
    changes
}

/// Installs the lock into the env at `env_dir`, the project's files being in
/// `project` (a temp dir with the commit's files, or the site). The
/// runtime's interpreter installs a missing tool.
#[expect(clippy::too_many_arguments, reason = "what one install needs")]
pub fn install(
    lock: &LockPlan,
    installer: &Installer,
    settings: &Settings,
    runtime: &Choice,
    env_dir: &Path,
    project: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    if let Some(tool) = &lock.tool {
        tools::ensure(tool, settings, &runtime.interpreter.path, runner, report)?;
        let now = match tool.found {
            tools::Found::ToInstall => tools::Tool {
                found: tools::Found::Cache,
                ..tool.clone()
            },
            _ => tool.clone(),
        };
        report.detail(format!("with {now}"));
    }
    match (lock.kind, &lock.tool) {
        (Kind::Uv, Some(tool)) | (Kind::Poetry, Some(tool)) => {
            let args = match lock.kind {
                Kind::Uv => uv_args(lock),
                _ => poetry_args(lock, tool),
            };
            let from = report.log.len();
            let result = runner.run(
                report,
                lock.step(),
                tool_command(settings, lock, tool, env_dir, project, &args),
            );
            if result.is_err() {
                let said = report.log[from..].join("\n");
                let stale = match lock.kind {
                    Kind::Uv => said.contains("needs to be updated"),
                    _ => said.contains("poetry lock") && said.contains("changed"),
                };
                if stale {
                    bail!(
                        "{} does not match {}: run `{}` and commit {}",
                        lock.kind.lock_file(),
                        lock.kind.project_file(),
                        lock.kind.lock_command(),
                        lock.kind.lock_file()
                    );
                }
            }
            result
        }
        _ => install_pipfile_lock(lock, installer, settings, env_dir, runner, report),
    }
}

fn install_pipfile_lock(
    lock: &LockPlan,
    installer: &Installer,
    settings: &Settings,
    env_dir: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    let converted = lock.requirements.as_ref().expect("converted in the plan");
    // In pushdeploy's own place, which a killed deployment's successor clears.
    let work = settings.state_dir.join("tmp");
    fs_err::create_dir_all(&work)?;
    let dir = tempfile::Builder::new()
        .prefix("pipfile-lock-")
        .tempdir_in(&work)
        .context("a temp dir for Pipfile.lock's requirements")?;
    let file = dir.path().join("Pipfile.lock.txt");
    fs_err::write(&file, &converted.requirements)?;
    let hashed = converted.pins.len() > converted.git.len();
    if hashed {
        install_no_deps(
            installer,
            env_dir,
            &file,
            "--require-hashes",
            "--require-hashes",
            runner,
            report,
        )?;
    }
    install_git_entries(converted, installer, env_dir, dir.path(), runner, report)?;
    let extra = compare(&converted.pins, &installed_with_commits(env_dir)).remove;
    if extra.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = extra.iter().map(|p| p.name.clone()).collect();
    report.detail(format!(
        "removing what Pipfile.lock does not name: {}",
        extra
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    uninstall(installer, env_dir, &names, runner, report)
}

/// Installs the lock's git entries whose locked commit the env does not
/// have yet, as Pipenv does (its unhashed requirements file, `--no-deps`:
/// the lock names their dependencies), reinstalled even where the version
/// is the same, so the env holds the locked commit. Their build backends
/// come from the lock's index, as with Pipenv.
fn install_git_entries(
    converted: &pipfile::Converted,
    installer: &Installer,
    env_dir: &Path,
    dir: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    let installed = installed_with_commits(env_dir);
    let missing: Vec<&(pipfile::Pin, String)> = converted
        .git
        .iter()
        .filter(|(pin, _)| {
            !installed
                .iter()
                .any(|p| normalize(&p.name) == normalize(&pin.name) && p.version == pin.version)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    report.detail(format!(
        "installing Pipfile.lock's git entries at their locked commits: {}",
        missing
            .iter()
            .map(|(pin, _)| format!("{} {}", pin.name, pin.version))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let lines: Vec<&str> = missing.iter().map(|(_, line)| line.as_str()).collect();
    let file = dir.join("Pipfile.lock-git.txt");
    fs_err::write(
        &file,
        format!("{}{}\n", converted.index_lines(), lines.join("\n")),
    )?;
    install_no_deps(
        installer,
        env_dir,
        &file,
        "--force-reinstall",
        "--reinstall",
        runner,
        report,
    )
}

/// Installs a requirements file into the env without dependencies (the lock
/// names them all), with one more option for pip and its twin for uv.
fn install_no_deps(
    installer: &Installer,
    env_dir: &Path,
    file: &Path,
    pip_option: &str,
    uv_option: &str,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    let python = env_dir.join("bin").join("python");
    match installer {
        Installer::Pip => runner.run(
            report,
            "pip install",
            duct::cmd!(
                // Run by the env's python: its scripts lead through
                // `<site>/env`, which is the live env while this one is
                // prepared aside.
                &python,
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                "--no-deps",
                pip_option,
                "-r",
                file
            )
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        ),
        Installer::Uv { path, .. } => runner.run(
            report,
            "uv pip install",
            duct::cmd!(
                path,
                "pip",
                "install",
                "--no-deps",
                uv_option,
                "-r",
                file,
                "--python",
                &python
            ),
        ),
    }
}

/// Uninstalls packages from the env.
pub fn uninstall(
    installer: &Installer,
    env_dir: &Path,
    names: &[String],
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    let python = env_dir.join("bin").join("python");
    match installer {
        Installer::Pip => {
            let mut args = vec![
                "-m".to_string(),
                "pip".into(),
                "uninstall".into(),
                "--yes".into(),
            ];
            args.extend(names.iter().cloned());
            runner.run(
                report,
                "pip uninstall",
                duct::cmd(&python, &args).env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
            )
        }
        Installer::Uv { path, .. } => {
            let mut args = vec!["pip".to_string(), "uninstall".into()];
            args.extend(names.iter().cloned());
            args.extend(["--python".into(), python.display().to_string()]);
            runner.run(report, "uv pip uninstall", duct::cmd(path, &args))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dry_runs() {
        let uv = "Would use project environment at: /x/env\nResolved 4 packages in 1ms\nWould uninstall 2 packages\nWould install 2 packages\n - greeting==1.0.0\n + greeting==2.0.0\n - staticpipe==1.0.0\n + tinyweb==1.0.0\n";
        let c = parse_uv_dry_run(uv);
        assert_eq!(
            c.lines(),
            [
                "would install tinyweb 1.0.0",
                "would change greeting 1.0.0 -> 2.0.0",
                "would remove staticpipe 1.0.0"
            ]
        );
        let poetry = "Package operations: 1 install, 1 update, 1 removal\n\n  - Removing staticpipe (1.0.0)\n  - Updating greeting (1.0.0 -> 2.0.0)\n  - Installing tinyweb (1.0.0)\n";
        assert_eq!(parse_poetry_dry_run(poetry).lines(), c.lines());
        assert_eq!(normalize("Foo.Bar__baz"), "foo-bar-baz");
    }
}
