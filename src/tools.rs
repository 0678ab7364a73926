//! The tools that install lock files, uv and Poetry, at pinned versions.
//!
//! A tool is, in this order: the path a server setting names; the one on
//! PATH if it is the pinned version; the copy in the user's cache dir
//! (`<cache>/tools/<name>-<version>/`), installed there once per machine and
//! user with the interpreter's pip from the index pip uses with the server's
//! own settings, under a lock so that two deployments do not install at once.
//! Pinning matters: a tool that changed its options under a deployment (as
//! Poetry 2.0 did) must not break it. The pins are the defaults of the
//! `uvVersion` and `poetryVersion` settings, in the settings table.

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::process::{Limits, Runner};
use crate::report::Report;
use crate::settings::{
    Default, Key, POETRY_PATH, POETRY_VERSION as POETRY_VERSION_KEY, Settings, UV_PATH,
    UV_VERSION as UV_VERSION_KEY, Values,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Name {
    Uv,
    Poetry,
}

impl Name {
    /// The command's name, and the package on the index that provides it.
    pub fn command(self) -> &'static str {
        match self {
            Name::Uv => "uv",
            Name::Poetry => "poetry",
        }
    }

    /// Its settings: the path that wins, and the pinned version.
    fn keys(self) -> (&'static Key, &'static Key) {
        match self {
            Name::Uv => (UV_PATH, UV_VERSION_KEY),
            Name::Poetry => (POETRY_PATH, POETRY_VERSION_KEY),
        }
    }
}

/// Where the tool comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Found {
    /// The path a setting names.
    Setting { key: &'static str, origin: String },
    /// On PATH, at the pinned version.
    Path,
    /// Installed earlier into the cache dir.
    Cache,
    /// Not there yet: installed into the cache dir before it runs.
    ToInstall,
}

/// A tool, as the plan decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    pub name: Name,
    pub version: String,
    pub path: PathBuf,
    pub found: Found,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name.command();
        match &self.found {
            Found::Setting { key, origin } => write!(
                f,
                "{name} {} ({}, setting {key}, {origin})",
                self.version,
                self.path.display()
            ),
            Found::Path => write!(
                f,
                "{name} {} ({}, on PATH)",
                self.version,
                self.path.display()
            ),
            Found::Cache => write!(
                f,
                "{name} {} ({}, in the cache dir)",
                self.version,
                self.path.display()
            ),
            Found::ToInstall => write!(
                f,
                "{name} {} (not installed: installed into {} first)",
                self.version,
                self.path.display()
            ),
        }
    }
}

/// The version a tool reports with `--version` (`uv 0.13.9 (...)`,
/// `Poetry (version 2.2.1)`).
pub fn version_of(path: &Path, runner: &Runner) -> Option<String> {
    let expr = duct::cmd!(path, "--version").env("NO_COLOR", "1");
    let out = runner.answer("a tool's version", expr)?;
    parse_version(&String::from_utf8_lossy(&out))
}

fn parse_version(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

fn is_version(text: &str) -> bool {
    !text.is_empty()
        && text.len() < 40
        && text.starts_with(|c: char| c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

/// Written last into a tool's directory in the cache dir.
const COMPLETE: &str = ".pushdeploy-complete";

/// The directory in the cache dir that holds one version of a tool.
fn cache_home(settings: &Settings, name: Name, version: &str) -> PathBuf {
    settings
        .cache_dir
        .join("tools")
        .join(format!("{}-{version}", name.command()))
}

/// A tool's version, remembered in the cache dir per file (path, inode,
/// size, time), so that a deployment that does not install runs no tool.
fn cached_version(settings: &Settings, path: &Path, runner: &Runner) -> Option<String> {
    let key = format!("{} {}", path.display(), crate::files::stamp(path)?);
    let file = settings.cache_dir.join("tools").join("versions.json");
    let mut known: std::collections::BTreeMap<String, String> = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(v) = known.get(&key) {
        return Some(v.clone());
    }
    let version = version_of(path, runner)?;
    known.retain(|k, _| !k.starts_with(&format!("{} ", path.display())));
    known.insert(key, version.clone());
    if let Ok(bytes) = serde_json::to_vec(&known) {
        let _ = fs_err::create_dir_all(file.parent().expect("a file in a dir"));
        let _ = crate::files::write_cache(&file, &bytes);
    }
    Some(version)
}

/// Decides which tool runs; changes nothing but the cache of versions.
pub fn choose(settings: &Settings, values: &Values, name: Name) -> Result<Tool> {
    // `--version` runs under the settings' limits.
    let runner = &Runner::new(Vec::new(), Limits::from_values(values), None);
    let (path_key, version_key) = name.keys();
    if let Some(setting) = values.get(path_key) {
        let path = match &setting.typed {
            crate::settings::Typed::Path(p) => p.clone(),
            other => unreachable!("{} is a path, not {other:?}", path_key.name),
        };
        let origin = &setting.origin;
        let Some(version) = cached_version(settings, &path, runner) else {
            bail!(
                "setting {} ({origin}): {} is not a {} that runs; give the path of one, or remove the setting to use {} {}",
                path_key.name,
                path.display(),
                name.command(),
                version_key.name,
                values.text(version_key).map_or("", |(v, _)| v)
            );
        };
        return Ok(Tool {
            name,
            version,
            path,
            found: Found::Setting {
                key: path_key.name,
                origin: origin.to_string(),
            },
        });
    }
    let (text, origin) = values.text(version_key).expect("the version has a default");
    let text = text.trim();
    if !is_version(text) {
        bail!(
            "setting {} ({origin}): {text:?} is not a version (such as {})",
            version_key.name,
            // The pinned version: the key's default, in the settings table.
            match version_key.default {
                Default::Value(pinned) | Default::Computed(pinned) => pinned,
            }
        );
    }
    if let Some(path) = settings.env.which(name.command())
        && cached_version(settings, &path, runner).as_deref() == Some(text)
    {
        return Ok(Tool {
            name,
            version: text.to_string(),
            path,
            found: Found::Path,
        });
    }
    let path = cache_home(settings, name, text)
        .join("bin")
        .join(name.command());
    let found = if path.is_file() && cache_home(settings, name, text).join(COMPLETE).is_file() {
        Found::Cache
    } else {
        Found::ToInstall
    };
    Ok(Tool {
        name,
        version: text.to_string(),
        path,
        found,
    })
}

/// Makes sure the tool is there: installs it into the cache dir when the
/// plan found it missing. `python` makes the tool's own venv.
pub fn ensure(
    tool: &Tool,
    settings: &Settings,
    python: &Path,
    runner: &crate::process::Runner,
    report: &mut Report,
) -> Result<()> {
    if tool.found != Found::ToInstall {
        return Ok(());
    }
    let name = tool.name;
    let home = cache_home(settings, name, &tool.version);
    let _lock = install_lock(&settings.cache_dir)?;
    // Another deployment may have installed it while this one waited.
    if home.join(COMPLETE).is_file() {
        return Ok(());
    }
    // Made where it stays (a venv's scripts name its directory); complete
    // once the marker is written, so a killed install is redone.
    if home.exists() {
        fs_err::remove_dir_all(&home)?;
    }
    report.detail(format!(
        "installing {} {} into {}",
        name.command(),
        tool.version,
        home.display()
    ));
    // The server's settings only: the pushed commit's app settings must not
    // choose where the tool comes from.
    let runner = runner.for_server();
    let installed = runner
        .run(
            report,
            "python -m venv",
            duct::cmd!(python, "-m", "venv", &home),
        )
        .and_then(|()| {
            runner.run(
                report,
                "pip install",
                duct::cmd!(
                    home.join("bin").join("pip"),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    format!("{}=={}", name.command(), tool.version)
                ),
            )
        });
    if let Err(e) = installed {
        let _ = fs_err::remove_dir_all(&home);
        bail!(
            "{} {} cannot be installed ({e:#}); put it on PATH, or set `git config deploy.{} <path to {}>`",
            name.command(),
            tool.version,
            name.keys().0.name,
            name.command()
        );
    }
    fs_err::write(home.join(COMPLETE), &tool.version)?;
    Ok(())
}

/// The gunicorn pushdeploy provides when a start command needs it and the
/// env lacks it (App Service's image has one; Azure's quickstarts do not
/// list it): pinned, as uv and Poetry are.
pub const GUNICORN_VERSION: &str = "27.0.1";

/// The folder (`<cache>/tools/gunicorn-<version>/lib`) holding the pinned
/// gunicorn and what it needs, installed there once with `python`'s pip
/// (`pip install --target`): beside the env, never in it. The app's python
/// The cache's tools folder, locked: one install at a time, across
/// deployments and repositories (held until the returned file is dropped).
fn install_lock(cache_dir: &Path) -> Result<std::fs::File> {
    let tools = cache_dir.join("tools");
    fs_err::create_dir_all(&tools)?;
    let lock_path = tools.join(".install.lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    Ok(lock)
}

/// appends it to its path, so the env's own packages win.
pub fn ensure_gunicorn(
    cache_dir: &Path,
    python: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<PathBuf> {
    let tools = cache_dir.join("tools");
    let home = tools.join(format!("gunicorn-{GUNICORN_VERSION}"));
    let lib = home.join("lib");
    if home.join(COMPLETE).is_file() {
        return Ok(lib);
    }
    let _lock = install_lock(cache_dir)?;
    if home.join(COMPLETE).is_file() {
        return Ok(lib);
    }
    if home.exists() {
        fs_err::remove_dir_all(&home)?;
    }
    report.detail(format!(
        "the env has no gunicorn: installing gunicorn {GUNICORN_VERSION} into {} (beside the env, not in it)",
        lib.display()
    ));
    let installed = runner.for_server().run(
        report,
        "pip install gunicorn",
        duct::cmd!(
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            &lib,
            format!("gunicorn=={GUNICORN_VERSION}")
        ),
    );
    if let Err(e) = installed {
        let _ = fs_err::remove_dir_all(&home);
        bail!(
            "gunicorn {GUNICORN_VERSION} cannot be installed ({e:#}); add gunicorn to the requirements"
        );
    }
    fs_err::write(home.join(COMPLETE), GUNICORN_VERSION)?;
    Ok(lib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions() {
        assert_eq!(
            parse_version("uv 0.13.9 (x86_64-unknown-linux-gnu)\n").as_deref(),
            Some("0.13.9")
        );
        assert_eq!(
            parse_version("Poetry (version 2.2.1)\n").as_deref(),
            Some("2.2.1")
        );
        assert!(is_version("2.2.1") && !is_version("latest") && !is_version(""));
    }
}
