//! Every setting, which layers may set it, and the one precedence rule:
//! flag (or push option) > environment variable > `.deployment` in the pushed
//! commit > git config (`deploy.<key>`) > default.
//!
//! Each layer is parsed once into typed values that keep their origin: the
//! server's layers (flags, environment, git config) when the command starts
//! (`Settings::resolve`), the commit's `.deployment` once per deployment
//! (`Settings::for_commit`, which gives the `Values` a deployment reads). A
//! bad value is refused in one place, `Kind::parse`, and reported when the
//! value would be used: a deployment fails with it in its record, `config`
//! refuses it.
//!
//! What a pushed commit may steer is part of the table: each key's `commit`
//! column says whether `.deployment` may set it, and which values. No other
//! module checks where a value came from.
//!
//! This is also the only module that reads the process environment, and it
//! reads it as `OsString`: a variable that is not UTF-8 never panics.
//!
//! Adding a key is one row in the `keys!` table below: its name, environment
//! variable, `.deployment` name, what a commit may set, its kind (how its text
//! is parsed), its default and a line of documentation. Read it where it is
//! used with the accessor of its kind (`values.bool(KEY)`, `values.text(KEY)`,
//! ...), pass the step only the value it needs, and add a row to docs/settings.md's
//! settings table.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::deployment_file::DeploymentFile;
use crate::error::{shown, usage};
use crate::python_version::Request;

/// One setting: a row of the table.
pub struct Key {
    /// Its name in git config (`deploy.<name>`), `-c` and `config`.
    pub name: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// Its name in `.deployment` (Kudu's spelling), matched regardless of
    /// case as Kudu's `IniFile` does (`OrdinalIgnoreCase`).
    pub file: &'static str,
    /// What a pushed commit's `.deployment` may set.
    pub commit: Commit,
    pub kind: Kind,
    pub default: Default,
    pub doc: &'static str,
}

/// What a pushed commit may do with a key: a commit must not redirect its
/// own deployment (where it goes, what the server runs after it).
pub enum Commit {
    /// Server-only: a `.deployment` line for it is left out, with a note.
    Never,
    /// Any value.
    May,
    /// Only values that pass `check`; another fails the plan, naming `allowed`.
    Only {
        allowed: &'static str,
        check: fn(&Typed) -> bool,
    },
}

/// How a key's text is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// `true`/`false` (also 1/0, yes/no, on/off).
    Bool,
    /// Set means on, whatever the value, but for an explicit false (Kudu's
    /// rule for `DISABLE_COLLECTSTATIC`).
    SetUnlessFalse,
    Path,
    /// Directories separated by `:`.
    Paths,
    /// A command line, split into words like a shell would (never run by one).
    CommandLine,
    /// A TCP port, from 1 to 65535 (kept as text).
    Port,
    /// An IP address to listen on (kept as text).
    Address,
    /// `pip`, `uv` or a path to uv.
    Installer,
    /// A whole number of seconds, from 1 to `MAX_SECONDS`.
    Seconds,
    /// A version (`3.12`, `python-3.12`), or a command or path.
    Python,
}

/// A key's default.
pub enum Default {
    /// A value, parsed like any other.
    Value(&'static str),
    /// Worked out from the repository or the user (`resolve` does), or none;
    /// the text is what `config` and the README show.
    Computed(&'static str),
}

/// A parsed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    Text(String),
    Bool(bool),
    Path(PathBuf),
    Paths(Vec<PathBuf>),
    Words(Vec<String>),
    Installer(InstallerChoice),
    Python(PythonChoice),
    Seconds(u64),
}

/// The `installer` setting, before uv is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallerChoice {
    Pip,
    /// uv: `uvPath`, else `uv` on PATH.
    Uv,
    /// A path to uv (a server layer only).
    UvAt(PathBuf),
}

/// The `python` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonChoice {
    /// `3.12` or `python-3.12`: searched for like runtime.txt's.
    Version(Request),
    /// A command or a path (a server layer only): whatever version it runs.
    Program(String),
}

/// The longest time a `Seconds` setting may give: a deadline is a clock
/// reading plus the value, and one past any real need (2^64-1 s) overflows
/// the clock; no step or health check needs more than a day.
pub const MAX_SECONDS: u64 = 24 * 60 * 60;

/// The interpreter when nothing names a runtime.
pub const DEFAULT_PYTHON: &str = "python3";

macro_rules! keys {
    ($($id:ident = { $($field:ident : $value:expr),* $(,)? }),* $(,)?) => {
        $(pub const $id: &Key = &Key { $($field: $value),* };)*
        /// All keys, in the order `pushdeploy config` shows them.
        pub const KEYS: &[&Key] = &[$($id),*];
    };
}

// The table. The `commit` column is the trust rule; docs/settings.md and
// docs/security.md say the same in words.
keys! {
    BRANCH = {
        name: "branch", env: "PUSHDEPLOY_BRANCH", file: "branch",
        commit: Commit::Never, kind: Kind::Text,
        default: Default::Computed("(the branch HEAD names)"),
        doc: "the branch whose pushes deploy",
    },
    SITE = {
        name: "site", env: "PUSHDEPLOY_SITE", file: "site",
        commit: Commit::Never, kind: Kind::Path,
        default: Default::Computed("(none: required)"),
        doc: "the directory that serves the app",
    },
    STATE_DIR = {
        name: "stateDir", env: "PUSHDEPLOY_STATE_DIR", file: "stateDir",
        commit: Commit::Never, kind: Kind::Path,
        default: Default::Computed("<repository>/pushdeploy"),
        doc: "records, manifest and lock",
    },
    PYTHON = {
        name: "python", env: "PUSHDEPLOY_PYTHON", file: "python",
        // A command or path would be run (to ask its version) even by a dry
        // run: the commit names a version, the server searches for it.
        commit: Commit::Only {
            allowed: "a version such as 3.12 (a command or path is the server's setting)",
            check: |v| matches!(v, Typed::Python(PythonChoice::Version(_))),
        },
        kind: Kind::Python,
        default: Default::Value(DEFAULT_PYTHON),
        doc: "the interpreter when the commit has no runtime.txt or .python-version: a version such as 3.12; a server layer may also give a command or a path",
    },
    PYTHON_PATH = {
        name: "pythonPath", env: "PUSHDEPLOY_PYTHON_PATH", file: "pythonPath",
        commit: Commit::Never, kind: Kind::Paths,
        default: Default::Computed("(empty)"),
        doc: "extra directories to search for interpreters, separated by ':'",
    },
    PYENV_ROOT = {
        name: "pyenvRoot", env: "PYENV_ROOT", file: "pyenvRoot",
        commit: Commit::Never, kind: Kind::Path,
        default: Default::Computed("~/.pyenv"),
        doc: "where pyenv keeps interpreters (versions/*/bin/python)",
    },
    RECREATE_ENV = {
        name: "recreateEnv", env: "PUSHDEPLOY_RECREATE_ENV", file: "recreateEnv",
        commit: Commit::May, kind: Kind::Bool,
        default: Default::Value("false"),
        doc: "delete and recreate env on the next deployment",
    },
    CACHE_DIR = {
        name: "cacheDir", env: "PUSHDEPLOY_CACHE_DIR", file: "cacheDir",
        commit: Commit::Never, kind: Kind::Path,
        default: Default::Computed("~/.cache/pushdeploy ($XDG_CACHE_HOME/pushdeploy)"),
        doc: "the user's cache: pip seeds per interpreter (fast env creation) and interpreters already run; repositories share it",
    },
    VERIFY = {
        name: "verify", env: "PUSHDEPLOY_VERIFY", file: "verify",
        commit: Commit::May, kind: Kind::Bool,
        default: Default::Value("false"),
        doc: "true: compare every file with the site and repair drift, instead of syncing only what changed",
    },
    TAKE_OVER_FILES = {
        name: "takeOverFiles", env: "PUSHDEPLOY_TAKE_OVER_FILES", file: "takeOverFiles",
        // The app's files are the server's: a commit cannot have them replaced.
        commit: Commit::Never, kind: Kind::Bool,
        default: Default::Value("false"),
        doc: "true: where the commit adds a file that the site already has and pushdeploy did not write, replace it with the commit's instead of refusing",
    },
    SKIP_UNCHANGED = {
        name: "skipUnchangedPackages", env: "PUSHDEPLOY_SKIP_UNCHANGED_PACKAGES",
        file: "skipUnchangedPackages",
        commit: Commit::May, kind: Kind::Bool,
        default: Default::Value("true"),
        doc: "false: run the installer on every deployment, even when nothing it depends on changed",
    },
    INSTALLER = {
        name: "installer", env: "PUSHDEPLOY_INSTALLER", file: "installer",
        commit: Commit::Only {
            allowed: "pip or uv (uv's path is the server's setting uvPath)",
            check: |v| matches!(v, Typed::Installer(InstallerChoice::Pip | InstallerChoice::Uv)),
        },
        kind: Kind::Installer,
        default: Default::Value("pip"),
        doc: "pip or uv (`uv pip install`); a server layer may also give a path to uv",
    },
    UV_PATH = {
        name: "uvPath", env: "PUSHDEPLOY_UV_PATH", file: "uvPath",
        commit: Commit::Never, kind: Kind::Path,
        default: Default::Computed("(uv uvVersion, on PATH or installed into the cache dir)"),
        doc: "the uv that `installer = uv` runs, and that installs uv.lock (whatever its version)",
    },
    PROJECT = {
        name: "project", env: "PROJECT", file: "project",
        commit: Commit::May, kind: Kind::Text,
        default: Default::Computed("(the top of the repository)"),
        doc: "deploy this sub-folder of the repository; its runtime.txt and requirements.txt count",
    },
    COMMAND = {
        name: "command", env: "COMMAND", file: "command",
        commit: Commit::May, kind: Kind::Text,
        default: Default::Computed("(none)"),
        doc: "a script in the commit that runs instead of the sync, env, packages and framework steps",
    },
    SCM_DO_BUILD = {
        name: "scmDoBuildDuringDeployment", env: "SCM_DO_BUILD_DURING_DEPLOYMENT",
        file: "SCM_DO_BUILD_DURING_DEPLOYMENT",
        commit: Commit::May, kind: Kind::Bool,
        default: Default::Value("true"),
        doc: "false: sync the files only (no env, packages or framework steps)",
    },
    DISABLE_COLLECTSTATIC = {
        name: "disableCollectstatic", env: "DISABLE_COLLECTSTATIC", file: "DISABLE_COLLECTSTATIC",
        commit: Commit::May, kind: Kind::SetUnlessFalse,
        default: Default::Computed("(unset)"),
        doc: "set (to anything but false): skip Django's collectstatic",
    },
    STRICT_COLLECTSTATIC = {
        name: "strictCollectstatic", env: "PUSHDEPLOY_STRICT_COLLECTSTATIC",
        file: "strictCollectstatic",
        commit: Commit::May, kind: Kind::Bool,
        default: Default::Value("false"),
        doc: "true: a failing collectstatic fails the deployment, which rolls back (Heroku's way); by default it is a warning and the deployment goes on, as in Kudu and Oryx",
    },
    PACKAGE_MANAGER = {
        name: "packageManager", env: "PUSHDEPLOY_PACKAGE_MANAGER", file: "packageManager",
        commit: Commit::May, kind: Kind::Text,
        default: Default::Value("auto"),
        doc: "auto (requirements.txt, else the one lock file), pip (requirements.txt), uv (uv.lock), poetry (poetry.lock) or pipenv (Pipfile.lock)",
    },
    GROUPS = {
        name: "groups", env: "PUSHDEPLOY_GROUPS", file: "groups",
        commit: Commit::May, kind: Kind::Text,
        default: Default::Computed("(none)"),
        doc: "dependency groups to install from uv.lock or poetry.lock besides the main ones, separated by ','",
    },
    EXTRAS = {
        name: "extras", env: "PUSHDEPLOY_EXTRAS", file: "extras",
        commit: Commit::May, kind: Kind::Text,
        default: Default::Computed("(none)"),
        doc: "the project's extras to install from uv.lock or poetry.lock, separated by ','",
    },
    INSTALL_PROJECT = {
        name: "installProject", env: "PUSHDEPLOY_INSTALL_PROJECT", file: "installProject",
        commit: Commit::May, kind: Kind::Bool,
        default: Default::Value("false"),
        doc: "true: install the app itself as a package (not editable) after its locked dependencies",
    },
    UV_VERSION = {
        name: "uvVersion", env: "PUSHDEPLOY_UV_VERSION", file: "uvVersion",
        commit: Commit::Never, kind: Kind::Text,
        default: Default::Value("0.13.9"),
        doc: "the uv version that installs uv.lock and that `installer = uv` runs, when uvPath is not set: uv on PATH if it is that version, else installed into the cache dir",
    },
    POETRY_VERSION = {
        name: "poetryVersion", env: "PUSHDEPLOY_POETRY_VERSION", file: "poetryVersion",
        commit: Commit::Never, kind: Kind::Text,
        default: Default::Value("2.2.1"),
        doc: "the Poetry version that installs poetry.lock when poetryPath is not set: poetry on PATH if it is that version, else installed into the cache dir",
    },
    POETRY_PATH = {
        name: "poetryPath", env: "PUSHDEPLOY_POETRY_PATH", file: "poetryPath",
        commit: Commit::Never, kind: Kind::Path,
        default: Default::Computed("(Poetry poetryVersion, on PATH or installed into the cache dir)"),
        doc: "the Poetry that installs poetry.lock (whatever its version)",
    },
    REMOVE_UNNEEDED = {
        name: "removeUnneeded", env: "PUSHDEPLOY_REMOVE_UNNEEDED", file: "removeUnneeded",
        commit: Commit::May, kind: Kind::Bool,
        default: Default::Value("true"),
        doc: "false: keep packages that an earlier deployment installed from requirements.txt and this commit's requirements no longer need",
    },
    POST_DEPLOY = {
        name: "postDeploy", env: "PUSHDEPLOY_POST_DEPLOY", file: "postDeploy",
        commit: Commit::Never, kind: Kind::CommandLine,
        default: Default::Computed("(none)"),
        doc: "a command run after the switch, to restart or reload the app (split into words like a shell would, never run by one)",
    },
    POST_BUILD_COMMAND = {
        name: "postBuildCommand", env: "POST_BUILD_COMMAND", file: "POST_BUILD_COMMAND",
        commit: Commit::May, kind: Kind::CommandLine,
        default: Default::Computed("(none)"),
        doc: "Oryx's app setting: a command run in the site after the switch, with the env's bin first on PATH (migrations go here)",
    },
    HEALTH_CHECK = {
        name: "healthCheck", env: "PUSHDEPLOY_HEALTH_CHECK", file: "healthCheck",
        commit: Commit::Never, kind: Kind::Text,
        default: Default::Computed("(none)"),
        doc: "after postDeploy: a URL (http or https) that must answer 2xx or 3xx, or a command that must exit 0; a failure rolls back",
    },
    HEALTH_CHECK_TIMEOUT = {
        name: "healthCheckTimeout", env: "PUSHDEPLOY_HEALTH_CHECK_TIMEOUT",
        file: "healthCheckTimeout",
        commit: Commit::Never, kind: Kind::Seconds,
        default: Default::Value("30"),
        doc: "seconds the health check is retried before the deployment is rolled back",
    },
    STARTUP_COMMAND = {
        name: "startupCommand", env: "PUSHDEPLOY_STARTUP_COMMAND", file: "startupCommand",
        // Azure's Startup Command is the app's own: the commit may set it.
        commit: Commit::May, kind: Kind::CommandLine,
        default: Default::Computed("(none: the Procfile, else detected as App Service's Oryx does)"),
        doc: "Azure's Startup Command: the app's web process when the commit has no Procfile",
    },
    PORT = {
        name: "port", env: "PUSHDEPLOY_PORT", file: "WEBSITES_PORT",
        commit: Commit::May, kind: Kind::Port,
        default: Default::Value("8000"),
        doc: "the port the app listens on, given to it as PORT (Azure's WEBSITES_PORT is the same setting)",
    },
    BIND = {
        name: "bind", env: "PUSHDEPLOY_BIND", file: "bind",
        // Which interfaces the app is open on is the server's choice.
        commit: Commit::Never, kind: Kind::Address,
        default: Default::Value("127.0.0.1"),
        doc: "the address the app listens on: a reverse proxy in front is the server's own",
    },
    IDLE_TIMEOUT = {
        name: "commandIdleTimeout", env: "SCM_COMMAND_IDLE_TIMEOUT",
        file: "SCM_COMMAND_IDLE_TIMEOUT",
        commit: Commit::May, kind: Kind::Seconds,
        default: Default::Value("60"),
        doc: "Kudu's: seconds a step may show no sign of work (no output, no CPU time) before it is killed with every process it started",
    },
    DEPLOYMENT_TIMEOUT = {
        name: "deploymentTimeout", env: "PUSHDEPLOY_DEPLOYMENT_TIMEOUT",
        file: "deploymentTimeout",
        commit: Commit::Never, kind: Kind::Seconds,
        default: Default::Value("3600"),
        doc: "seconds a whole deployment may take; past that its step is killed and the deployment rolled back",
    },
}

/// The key of a name, as given to `-c name=value` (any case).
pub fn key_named(name: &str) -> Option<&'static Key> {
    KEYS.iter()
        .copied()
        .find(|k| k.name.eq_ignore_ascii_case(name) || k.file.eq_ignore_ascii_case(name))
}

impl Key {
    /// Whether a `.deployment` key names this setting: in any case, as Kudu
    /// reads the file, so that `PROJECT = src/app` deploys the folder rather
    /// than becoming an app setting. The trust column applies to every
    /// spelling: `POSTDEPLOY` is the server-only `postDeploy`.
    fn in_file(&self, file_key: &str) -> bool {
        self.file.eq_ignore_ascii_case(file_key)
    }
}

impl Kind {
    /// The one place a setting's text becomes a value; the error says which
    /// setting, where the text came from and what it is.
    fn parse(self, key: &Key, text: &str, origin: &Origin) -> Result<Typed, String> {
        let bad = |what: &str| {
            format!(
                "setting {} ({origin}): {} {what}",
                key.name,
                shown(text.as_bytes())
            )
        };
        Ok(match self {
            Kind::Text => Typed::Text(text.to_string()),
            Kind::Bool => Typed::Bool(parse_bool(text).ok_or_else(|| bad("is not true or false"))?),
            Kind::SetUnlessFalse => Typed::Bool(parse_bool(text) != Some(false)),
            Kind::Path => Typed::Path(PathBuf::from(text)),
            Kind::Paths => Typed::Paths(
                text.split(':')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect(),
            ),
            Kind::CommandLine => Typed::Words(
                shell_words::split(text)
                    .ok()
                    .filter(|w| !w.is_empty())
                    .ok_or_else(|| bad("is not a command line"))?,
            ),
            Kind::Port => Typed::Text(
                text.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("is not a port from 1 to 65535"))?
                    .to_string(),
            ),
            Kind::Address => Typed::Text(
                text.trim()
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| bad("is not an IP address such as 127.0.0.1"))?
                    .to_string(),
            ),
            Kind::Installer => Typed::Installer(match text.trim() {
                "pip" => InstallerChoice::Pip,
                "uv" => InstallerChoice::Uv,
                path if path.contains('/') && Path::new(path).is_file() => {
                    InstallerChoice::UvAt(PathBuf::from(path))
                }
                _ => return Err(bad("is not pip, uv or a path to uv")),
            }),
            Kind::Seconds => Typed::Seconds(
                text.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_SECONDS).contains(n))
                    .ok_or_else(|| {
                        bad(&format!(
                            "is not a number of seconds from 1 to {MAX_SECONDS} (one day)"
                        ))
                    })?,
            ),
            Kind::Python => {
                let version = text.strip_prefix("python-").unwrap_or(text);
                Typed::Python(match crate::python_version::parse_numbers(version) {
                    Some(request) => PythonChoice::Version(request),
                    None => PythonChoice::Program(text.to_string()),
                })
            }
        })
    }
}

pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    Flag(String),
    PushOption(String),
    Environment(String),
    Deployment(usize),
    GitConfig(String),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::PushOption(opt) => write!(f, "push option {opt}"),
            Origin::Environment(var) => write!(f, "environment {var}"),
            Origin::Deployment(line) => write!(f, ".deployment line {line}"),
            Origin::GitConfig(key) => write!(f, "git config {key}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A setting's value: as written, where from, and parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    #[serde(rename = "value")]
    pub text: String,
    pub origin: Origin,
    #[serde(skip)]
    pub typed: Typed,
}

/// A value of one layer, parsed; a bad one is kept with its error until a
/// deployment or `config` would use it.
#[derive(Debug, Clone)]
struct Parsed {
    text: String,
    origin: Origin,
    typed: Result<Typed, String>,
}

impl Parsed {
    fn new(key: &Key, text: String, origin: Origin) -> Self {
        let typed = key.kind.parse(key, &text, &origin);
        Parsed {
            text,
            origin,
            typed,
        }
    }

    fn setting(&self) -> Result<Setting> {
        match &self.typed {
            Ok(typed) => Ok(Setting {
                text: self.text.clone(),
                origin: self.origin.clone(),
                typed: typed.clone(),
            }),
            Err(message) => Err(usage(message.clone())),
        }
    }
}

/// One layer: the values it sets, by key name.
type Layer = BTreeMap<&'static str, Parsed>;

/// A snapshot of the process environment, taken once, as the OS gives it:
/// its variables and its working directory.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<OsString, OsString>,
    cwd: PathBuf,
}

impl Environment {
    pub fn from_process() -> Self {
        Environment {
            vars: std::env::vars_os().collect(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::from_os_pairs(
            pairs
                .into_iter()
                .map(|(k, v)| (OsStr::new(k), OsStr::new(v))),
        )
    }

    pub fn from_os_pairs<'a>(pairs: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>) -> Self {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_os_string(), v.to_os_string()))
                .collect(),
            cwd: PathBuf::from("/"),
        }
    }

    /// A variable as the OS gives it; unset and empty are the same.
    pub fn os(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .get(OsStr::new(name))
            .map(OsString::as_os_str)
            .filter(|v| !v.is_empty())
    }

    /// A variable that is UTF-8 text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.os(name).and_then(OsStr::to_str)
    }

    /// The variables whose names start with `prefix`, sorted; bytes that are
    /// not UTF-8 shown as U+FFFD.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter(|(k, _)| k.as_bytes().starts_with(prefix.as_bytes()))
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    /// `GIT_PUSH_OPTION_COUNT` / `GIT_PUSH_OPTION_<i>`, as git passes
    /// `git push -o`, as the OS gives them.
    pub fn push_options_os(&self) -> Vec<OsString> {
        let count: usize = self
            .get("GIT_PUSH_OPTION_COUNT")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // git sets every variable up to the count; stopping at the first gap
        // keeps a forged huge count from looping.
        (0..count)
            .map_while(|i| {
                self.vars
                    .get(OsStr::new(&format!("GIT_PUSH_OPTION_{i}")))
                    .cloned()
            })
            .collect()
    }

    /// The push options as text; bytes that are not UTF-8 shown as U+FFFD.
    pub fn push_options(&self) -> Vec<String> {
        self.push_options_os()
            .iter()
            .map(|o| o.to_string_lossy().into_owned())
            .collect()
    }

    pub fn home(&self) -> PathBuf {
        PathBuf::from(self.os("HOME").unwrap_or(OsStr::new("/")))
    }

    /// The repository when `--repo` is not given: `$GIT_DIR` (as in a hook),
    /// else the current directory.
    pub fn default_repo(&self) -> PathBuf {
        PathBuf::from(self.os("GIT_DIR").unwrap_or(OsStr::new(".")))
    }

    /// A program's path: `name` looked for in this environment's PATH as a
    /// shell would (a name with a `/` relative to the working directory).
    pub fn which(&self, name: &str) -> Option<PathBuf> {
        which::which_in(name, self.os("PATH"), &self.cwd).ok()
    }

    /// Every `name` on PATH, in PATH's order.
    pub fn which_all(&self, name: &str) -> Vec<PathBuf> {
        which::which_in_all(name, self.os("PATH"), &self.cwd)
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The server's layers as given, before they are parsed: flags (and push
/// options), the environment, and the repository's git config.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    flags: BTreeMap<&'static str, (String, Origin)>,
    pub env: Environment,
    git: BTreeMap<String, String>,
}

impl Sources {
    /// Reads `deploy.*` from the repository's git config.
    pub fn new(env: Environment, repo: &git2::Repository) -> Result<Self> {
        let mut git = BTreeMap::new();
        let config = repo
            .config()
            .context("reading the repository's git config")?;
        let mut entries = config
            .entries(Some("deploy\\..*"))
            .context("reading git config deploy.*")?;
        while let Some(entry) = entries.next() {
            let entry = entry?;
            if let (Ok(name), Ok(value)) = (entry.name(), entry.value()) {
                // git config names are case-insensitive: keep them lower-cased.
                git.insert(name.to_ascii_lowercase(), value.to_string());
            }
        }
        Ok(Sources {
            flags: BTreeMap::new(),
            env,
            git,
        })
    }

    pub fn flag(&mut self, key: &Key, flag: &str, value: impl Into<String>) {
        self.set_above_all(key, value, Origin::Flag(flag.to_string()));
    }

    /// Sets `key` in the highest layer: a flag, or a push option.
    pub fn set_above_all(&mut self, key: &Key, value: impl Into<String>, origin: Origin) {
        self.flags.insert(key.name, (value.into(), origin));
    }

    /// Parses each layer once: flags over the environment (the layers above
    /// `.deployment`), and git config (below it).
    fn layers(&self) -> (Layer, Layer) {
        let mut above = Layer::new();
        let mut below = Layer::new();
        for key in KEYS {
            if let Some((text, origin)) = self.flags.get(key.name) {
                above.insert(key.name, Parsed::new(key, text.clone(), origin.clone()));
            } else if let Some(value) = self.env.os(key.env) {
                let origin = Origin::Environment(key.env.to_string());
                let parsed = match value.to_str() {
                    Some(text) => Parsed::new(key, text.to_string(), origin),
                    None => Parsed {
                        text: value.to_string_lossy().into_owned(),
                        typed: Err(format!(
                            "setting {} ({origin}): {} is not UTF-8",
                            key.name,
                            shown(value.as_bytes())
                        )),
                        origin,
                    },
                };
                above.insert(key.name, parsed);
            }
            let git_name = format!("deploy.{}", key.name.to_ascii_lowercase());
            if let Some(text) = self.git.get(&git_name) {
                let origin = Origin::GitConfig(format!("deploy.{}", key.name));
                below.insert(key.name, Parsed::new(key, text.clone(), origin));
            }
        }
        (above, below)
    }
}

/// The settings a command runs with: the server's own, resolved when it
/// starts, and its parsed layers, for `for_commit`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub site: PathBuf,
    pub state_dir: PathBuf,
    pub branch: String,
    pub python_path: Vec<PathBuf>,
    pub pyenv_root: PathBuf,
    pub cache_dir: PathBuf,
    pub env: Environment,
    above: Layer,
    below: Layer,
}

impl Settings {
    /// Parses the server's layers and resolves its own settings;
    /// `repo_path` must be the repository's path.
    pub fn resolve(
        repo_path: &Path,
        repository: &git2::Repository,
        sources: Sources,
    ) -> Result<Self> {
        let (above, below) = sources.layers();
        let server = |key: &Key| -> Result<Option<Setting>> {
            above
                .get(key.name)
                .or_else(|| below.get(key.name))
                .map(Parsed::setting)
                .transpose()
        };
        let path = |key: &Key| -> Result<Option<PathBuf>> {
            Ok(server(key)?.map(|s| match s.typed {
                Typed::Path(p) => absolute(&p, repo_path),
                other => unreachable!("{} is a path, not {other:?}", key.name),
            }))
        };
        let Some(site) = path(SITE)? else {
            return Err(usage(format!(
                "setting site is not set for {}: run `pushdeploy init {} --site <dir>` or `git config deploy.site <dir>`",
                repo_path.display(),
                repo_path.display()
            )));
        };
        let state_dir = path(STATE_DIR)?.unwrap_or_else(|| repo_path.join("pushdeploy"));
        let branch = match server(BRANCH)? {
            Some(s) => s.text,
            None => head_branch(repository)?,
        };
        let python_path = match server(PYTHON_PATH)?.map(|s| s.typed) {
            Some(Typed::Paths(dirs)) => dirs,
            _ => Vec::new(),
        };
        let env = sources.env;
        let pyenv_root = match server(PYENV_ROOT)?.map(|s| s.typed) {
            Some(Typed::Path(p)) => p,
            _ => env.home().join(".pyenv"),
        };
        let cache_dir = match path(CACHE_DIR)? {
            Some(dir) => dir,
            // Per user, like pip's own cache: every repository of the user
            // then creates envs fast from its first deployment on.
            None => match env.os("XDG_CACHE_HOME") {
                Some(cache) => Path::new(cache).join("pushdeploy"),
                None => env.home().join(".cache/pushdeploy"),
            },
        };
        Ok(Settings {
            site,
            state_dir,
            branch,
            python_path,
            pyenv_root,
            cache_dir,
            env,
            above,
            below,
        })
    }

    /// Every key's value for a deployment of a commit with `file` as its
    /// `.deployment`, parsed once; refuses a bad value (of any layer) that
    /// would be used, and what the commit may not set.
    pub fn for_commit(&self, file: &DeploymentFile) -> Result<Values> {
        let mut commit = Layer::new();
        let mut refused = Vec::new();
        // Later lines win, as they did when the file was read into a map.
        for (name, text, line) in &file.entries {
            let Some(key) = KEYS.iter().find(|k| k.in_file(name)) else {
                continue;
            };
            let parsed = Parsed::new(key, text.clone(), Origin::Deployment(*line));
            match &key.commit {
                Commit::Never => {
                    refused.push(Refused {
                        name: name.clone(),
                        line: *line,
                        why: RefusedWhy::ServerSetting(key.name),
                    });
                    continue;
                }
                Commit::May => {}
                Commit::Only { allowed, check } => {
                    if let Ok(typed) = &parsed.typed
                        && !check(typed)
                    {
                        return Err(usage(format!(
                            ".deployment line {line}: {name} = {}: a commit may only set {allowed}",
                            shown(text.as_bytes())
                        )));
                    }
                }
            }
            commit.insert(key.name, parsed);
        }
        let mut values = BTreeMap::new();
        for key in KEYS {
            let layered = self
                .above
                .get(key.name)
                .or_else(|| commit.get(key.name))
                .or_else(|| self.below.get(key.name));
            let setting = match (layered, &key.default) {
                (Some(parsed), _) => parsed.setting()?,
                (None, Default::Value(text)) => Parsed::new(key, text.to_string(), Origin::Default)
                    .setting()
                    .expect("every default parses"),
                (None, Default::Computed(_)) => continue,
            };
            values.insert(key.name, setting);
        }
        let mut app = Vec::new();
        for (name, value, line) in &file.entries {
            if KEYS.iter().any(|key| key.in_file(name)) {
                continue;
            }
            if app_setting_allowed(name) {
                app.push((name.clone(), value.clone()));
            } else {
                refused.push(Refused {
                    name: name.clone(),
                    line: *line,
                    why: RefusedWhy::NotAnAppSetting,
                });
            }
        }
        Ok(Values {
            values,
            app,
            refused,
        })
    }
}

/// Every key's value for one deployment, parsed and checked: what the plan
/// reads. Keys whose default is computed and that no layer sets are absent.
#[derive(Debug, Clone)]
pub struct Values {
    values: BTreeMap<&'static str, Setting>,
    /// `.deployment` keys that name no setting and that a commit may set
    /// (`app_setting_allowed`): app settings, passed to the build steps as
    /// environment variables.
    pub app: Vec<(String, String)>,
    /// `.deployment` keys left out: server settings, and names that are
    /// not app settings a commit may set.
    pub refused: Vec<Refused>,
}

/// A `.deployment` key that a commit may not set: it is left out (of the
/// settings, and of every step's environment), and the deployment goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    pub name: String,
    pub line: usize,
    pub why: RefusedWhy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RefusedWhy {
    /// It names a server-only setting (`branch`, `postDeploy`, ...).
    ServerSetting(&'static str),
    /// It is not on the allow-list of app settings (`app_setting_allowed`).
    NotAnAppSetting,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refused { name, line, why } = self;
        match why {
            RefusedWhy::ServerSetting(key) => {
                // `PYTHONPATH` meant as Python's variable is still the setting
                // `pythonPath`: say why, where the spelling differs.
                let spelling = match key_named(key).is_some_and(|k| k.file == name) {
                    true => "",
                    false => " (keys are read regardless of case, as Kudu does)",
                };
                write!(
                    f,
                    ".deployment line {line}: {name} names the server's setting {key}{spelling}, which a commit may not set; left out"
                )
            }
            RefusedWhy::NotAnAppSetting => write!(
                f,
                ".deployment line {line}: {name} is not an app setting a commit may set; left out (see docs/deployment-file.md, App settings)"
            ),
        }
    }
}

/// pip and uv variables that only choose where packages come from: the
/// ones of their namespaces that a commit may set.
pub const PACKAGE_SOURCE_VARIABLES: &[&str] = &[
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_TRUSTED_HOST",
    "PIP_NO_INDEX",
    "PIP_PRE",
    "PIP_ONLY_BINARY",
    "PIP_NO_BINARY",
    "PIP_PREFER_BINARY",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_PRERELEASE",
    "UV_INDEX_STRATEGY",
    "UV_NO_BINARY",
    "UV_NO_BUILD",
];

/// First words of variable names that belong to the programs a deployment
/// runs or that pushdeploy sets itself: the shell and the system (`PATH`,
/// `HOME`, `IFS`, ...), the dynamic linker and libc (`LD_*`, `GCONV_PATH`,
/// `MALLOC_*`), Python (`PYTHON*`), pip, uv, venvs, git, ssh, TLS and proxy
/// settings, compilers, and Kudu's and pushdeploy's own variables. A name whose
/// first word starts with `PYTHON` is also one of them.
const RESERVED_WORDS: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "IFS",
    "ENV",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TMPDIR",
    "TMP",
    "TEMP",
    "TZ",
    "TZDIR",
    "PWD",
    "OLDPWD",
    "CDPATH",
    "MAIL",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "LD",
    "DYLD",
    "GLIBC",
    "GCONV",
    "MALLOC",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RES",
    "LOCALDOMAIN",
    "PIP",
    "POETRY",
    "PIPENV",
    "UV",
    "VIRTUAL",
    "VIRTUALENV",
    "CONDA",
    "PYENV",
    "GIT",
    "SSH",
    "GPG",
    "GNUPG",
    "XDG",
    "LC",
    "BASH",
    "ZDOTDIR",
    "SSL",
    "OPENSSL",
    "REQUESTS",
    "CURL",
    "HTTP",
    "HTTPS",
    "FTP",
    "ALL",
    "NO",
    "SETUPTOOLS",
    "DISTUTILS",
    "WHEEL",
    "PUSHDEPLOY",
    "DEPLOYMENT",
    "SCM",
    "NEXT",
    "PREVIOUS",
    "SUDO",
    "DBUS",
    "SYSTEMD",
    "KRB5CCNAME",
    "CC",
    "CXX",
    "CPP",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "MAKEFLAGS",
    "MAKE",
    "PKG",
    "ARCHFLAGS",
    "CARGO",
    "RUSTFLAGS",
    "RUSTUP",
    "NODE",
    "NPM",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "LESS",
    "DISPLAY",
];

/// Where uv and Poetry take a named index's address and credentials from
/// (`POETRY_REPOSITORIES_<NAME>_URL`, `POETRY_HTTP_BASIC_<NAME>_USERNAME` /
/// `_PASSWORD`, `UV_INDEX_<NAME>_USERNAME` / `_PASSWORD`): like pip's index
/// URLs, they only choose where packages come from.
fn index_credential_variable(name: &str) -> bool {
    let named = |prefix: &str, suffixes: &[&str]| {
        name.strip_prefix(prefix).is_some_and(|rest| {
            suffixes.iter().any(|suffix| {
                rest.strip_suffix(suffix).is_some_and(|n| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                })
            })
        })
    };
    named("POETRY_REPOSITORIES_", &["_URL"])
        || named("POETRY_HTTP_BASIC_", &["_USERNAME", "_PASSWORD"])
        || named("UV_INDEX_", &["_USERNAME", "_PASSWORD"])
}

/// The allow-list of names a pushed commit's `.deployment` may set for the
/// build steps: an app's own variables, written as upper-case words of
/// letters and digits joined by single `_` (`DJANGO_SETTINGS_MODULE`,
/// `DATABASE_URL`, `GREETING`) whose first word is not one of
/// `RESERVED_WORDS`; and, of pip's and uv's variables, only
/// `PACKAGE_SOURCE_VARIABLES`. Everything else (lower-case names, leading or
/// doubled `_`, `PATH`, `LD_PRELOAD`, `PYTHONPATH`, `PIP_TARGET`, ...) is
/// left out.
pub fn app_setting_allowed(name: &str) -> bool {
    if PACKAGE_SOURCE_VARIABLES.contains(&name) || index_credential_variable(name) {
        return true;
    }
    let mut words = name.split('_');
    let first = words.next().unwrap_or("");
    let word_ok = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    word_ok(first)
        && first.as_bytes()[0].is_ascii_uppercase()
        && words.all(word_ok)
        && !first.starts_with("PYTHON")
        && !RESERVED_WORDS.contains(&first)
}

impl Values {
    pub fn get(&self, key: &Key) -> Option<&Setting> {
        self.values.get(key.name)
    }

    /// What `config` shows: the value, or the default's text.
    pub fn shown(&self, key: &Key) -> Setting {
        match (self.get(key), &key.default) {
            (Some(s), _) => s.clone(),
            (None, Default::Value(text) | Default::Computed(text)) => Setting {
                text: text.to_string(),
                origin: Origin::Default,
                typed: Typed::Text(text.to_string()),
            },
        }
    }

    pub fn text(&self, key: &Key) -> Option<(&str, &Origin)> {
        self.get(key).map(|s| (s.text.as_str(), &s.origin))
    }

    pub fn bool(&self, key: &Key) -> Option<(bool, &Origin)> {
        self.get(key).map(|s| match &s.typed {
            Typed::Bool(b) => (*b, &s.origin),
            other => unreachable!("{} is a bool, not {other:?}", key.name),
        })
    }

    pub fn path(&self, key: &Key) -> Option<&Path> {
        self.get(key).map(|s| match &s.typed {
            Typed::Path(p) => p.as_path(),
            other => unreachable!("{} is a path, not {other:?}", key.name),
        })
    }

    pub fn words(&self, key: &Key) -> Option<(&[String], &Origin)> {
        self.get(key).map(|s| match &s.typed {
            Typed::Words(w) => (w.as_slice(), &s.origin),
            other => unreachable!("{} is a command line, not {other:?}", key.name),
        })
    }

    pub fn seconds(&self, key: &Key) -> Option<u64> {
        self.get(key).map(|s| match &s.typed {
            Typed::Seconds(n) => *n,
            other => unreachable!("{} is seconds, not {other:?}", key.name),
        })
    }

    pub fn installer(&self) -> (&InstallerChoice, &Origin) {
        let s = self.get(INSTALLER).expect("installer has a default");
        match &s.typed {
            Typed::Installer(i) => (i, &s.origin),
            other => unreachable!("installer is an installer, not {other:?}"),
        }
    }

    pub fn python(&self) -> (&PythonChoice, &Setting) {
        let s = self.get(PYTHON).expect("python has a default");
        match &s.typed {
            Typed::Python(p) => (p, s),
            other => unreachable!("python is a python, not {other:?}"),
        }
    }
}

/// The branch that the repository's HEAD names, even before it has a commit.
pub fn head_branch(repo: &git2::Repository) -> Result<String> {
    let head = repo.find_reference("HEAD").context("reading HEAD")?;
    let target = head
        .symbolic_target()
        .ok()
        .flatten()
        .unwrap_or("refs/heads/main");
    Ok(target
        .strip_prefix("refs/heads/")
        .unwrap_or(target)
        .to_string())
}

fn absolute(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sources: &Sources) -> Settings {
        let (above, below) = sources.layers();
        Settings {
            site: PathBuf::from("/site"),
            state_dir: PathBuf::from("/state"),
            branch: "main".into(),
            python_path: Vec::new(),
            pyenv_root: PathBuf::new(),
            cache_dir: PathBuf::new(),
            env: sources.env.clone(),
            above,
            below,
        }
    }

    fn file(entries: &[(&str, &str, usize)]) -> DeploymentFile {
        DeploymentFile {
            entries: entries
                .iter()
                .map(|(k, v, n)| (k.to_string(), v.to_string(), *n))
                .collect(),
        }
    }

    fn shown(sources: &Sources, f: &DeploymentFile, key: &Key) -> Setting {
        settings(sources).for_commit(f).unwrap().shown(key)
    }

    #[test]
    fn precedence_flag_env_deployment_git_default() {
        let mut s = Sources {
            env: Environment::from_pairs([("PUSHDEPLOY_PYTHON", "3.12")]),
            ..Sources::default()
        };
        s.git.insert("deploy.python".into(), "3.10".into());
        let f = file(&[("python", "3.11", 3)]);
        s.flag(PYTHON, "--python", "3.13");
        assert_eq!(shown(&s, &f, PYTHON).text, "3.13");
        s.flags.clear();
        assert_eq!(
            shown(&s, &f, PYTHON).origin,
            Origin::Environment("PUSHDEPLOY_PYTHON".into())
        );
        s.env = Environment::default();
        assert_eq!(shown(&s, &f, PYTHON).text, "3.11");
        assert_eq!(shown(&s, &f, PYTHON).origin, Origin::Deployment(3));
        let none = DeploymentFile::default();
        assert_eq!(shown(&s, &none, PYTHON).text, "3.10");
        s.git.clear();
        let default = shown(&s, &none, PYTHON);
        assert_eq!(
            (default.text.as_str(), default.origin),
            ("python3", Origin::Default)
        );
    }

    /// A value every kind accepts, to walk every key through the layers.
    fn sample(key: &Key) -> (&'static str, &'static str, &'static str, &'static str) {
        match key.kind {
            Kind::Bool | Kind::SetUnlessFalse => ("true", "false", "yes", "no"),
            Kind::Installer => ("pip", "uv", "pip", "uv"),
            Kind::Seconds => ("13", "12", "11", "10"),
            Kind::Port => ("8013", "8012", "8011", "8010"),
            Kind::Address => ("127.0.0.13", "127.0.0.12", "127.0.0.11", "127.0.0.10"),
            _ => ("3.13", "3.12", "3.11", "3.10"),
        }
    }

    /// Every key, layer by layer: flag > environment > `.deployment` (where
    /// the table lets a commit set it) > git config > default.
    #[test]
    fn precedence_key_by_key() {
        for key in KEYS {
            let (flag, env, from_file, git) = sample(key);
            let mut s = Sources::default();
            s.git.insert(
                format!("deploy.{}", key.name.to_ascii_lowercase()),
                git.into(),
            );
            let f = file(&[(key.file, from_file, 2)]);
            s.env = Environment::from_pairs([(key.env, env)]);
            s.flag(key, "-c", flag);
            assert_eq!(shown(&s, &f, key).text, flag, "{}", key.name);
            s.flags.clear();
            assert_eq!(shown(&s, &f, key).text, env, "{}", key.name);
            s.env = Environment::default();
            let expected = match key.commit {
                Commit::Never => git,
                _ => from_file,
            };
            assert_eq!(shown(&s, &f, key).text, expected, "{}", key.name);
            let none = DeploymentFile::default();
            assert_eq!(shown(&s, &none, key).text, git, "{}", key.name);
            s.git.clear();
            assert_eq!(
                shown(&s, &none, key).origin,
                Origin::Default,
                "{}",
                key.name
            );
            assert_eq!(key_named(key.name).map(|k| k.name), Some(key.name));
        }
    }

    /// Each default parses to its key's kind, so the accessors never meet a
    /// value of another kind.
    #[test]
    fn defaults_parse() {
        for key in KEYS {
            if let Default::Value(text) = key.default {
                assert!(
                    key.kind.parse(key, text, &Origin::Default).is_ok(),
                    "{}",
                    key.name
                );
            }
        }
    }

    /// Every duration, from every layer, with values no deadline can hold
    /// (2^64-1 overflowed the clock and panicked), is refused naming the
    /// setting, the value and the range; the largest allowed one is taken.
    #[test]
    fn absurd_durations_are_refused_from_every_layer() {
        let durations: Vec<&Key> = KEYS
            .iter()
            .copied()
            .filter(|k| k.kind == Kind::Seconds)
            .collect();
        assert_eq!(durations.len(), 3);
        let max = MAX_SECONDS.to_string();
        for key in durations {
            for absurd in [
                "18446744073709551615",
                "18446744073709551616",
                "9223372036854775808",
                "86401",
                "0",
                "-1",
                "1e9",
                "inf",
            ] {
                let layers: [(&str, Sources, DeploymentFile); 4] = [
                    ("flag -c", flagged(key, absurd), DeploymentFile::default()),
                    (
                        key.env,
                        Sources {
                            env: Environment::from_pairs([(key.env, absurd)]),
                            ..Sources::default()
                        },
                        DeploymentFile::default(),
                    ),
                    ("git config", in_git(key, absurd), DeploymentFile::default()),
                    (
                        ".deployment line 3",
                        Sources::default(),
                        file(&[(key.file, absurd, 3)]),
                    ),
                ];
                for (layer, sources, f) in layers {
                    let result = settings(&sources).for_commit(&f);
                    if layer.starts_with(".deployment") && matches!(key.commit, Commit::Never) {
                        // A server-only key is left out of a commit, whatever its value.
                        assert!(result.unwrap().refused[0].to_string().contains(key.name));
                        continue;
                    }
                    let err = result.unwrap_err().to_string();
                    assert_eq!(
                        err,
                        format!(
                            "setting {} ({}): \"{absurd}\" is not a number of seconds from 1 to {max} (one day)",
                            key.name,
                            match layer {
                                "flag -c" => "flag -c".to_string(),
                                ".deployment line 3" => layer.to_string(),
                                "git config" => format!("git config deploy.{}", key.name),
                                var => format!("environment {var}"),
                            }
                        ),
                    );
                }
            }
            let values = settings(&in_git(key, &max))
                .for_commit(&DeploymentFile::default())
                .unwrap();
            assert_eq!(values.seconds(key), Some(MAX_SECONDS), "{}", key.name);
        }
    }

    fn flagged(key: &Key, value: &str) -> Sources {
        let mut s = Sources::default();
        s.flag(key, "-c", value);
        s
    }

    fn in_git(key: &Key, value: &str) -> Sources {
        let mut s = Sources::default();
        s.git.insert(
            format!("deploy.{}", key.name.to_ascii_lowercase()),
            value.into(),
        );
        s
    }

    #[test]
    fn server_only_keys_ignore_deployment_file() {
        let mut s = Sources::default();
        s.git.insert("deploy.branch".into(), "main".into());
        let f = file(&[("branch", "evil", 1), ("postDeploy", "rm -rf /", 2)]);
        let values = settings(&s).for_commit(&f).unwrap();
        assert_eq!(values.text(BRANCH).map(|(t, _)| t), Some("main"));
        assert!(values.get(POST_DEPLOY).is_none());
        assert!(values.app.is_empty(), "{:?}", values.app);
        assert_eq!(
            values.refused[1].to_string(),
            ".deployment line 2: postDeploy names the server's setting postDeploy, which a commit may not set; left out"
        );
    }

    /// Kudu reads `.deployment` keys regardless of case; the trust column
    /// holds for every spelling, and app settings keep their names.
    #[test]
    fn deployment_keys_match_setting_names_in_any_case() {
        let f = file(&[
            ("PROJECT", "src/app", 1),
            ("Command", "build.sh", 2),
            ("scm_do_build_during_deployment", "false", 3),
            ("Scm_Command_Idle_Timeout", "7", 4),
            ("Disable_CollectStatic", "1", 5),
            ("INSTALLER", "uv", 6),
            ("GREETING", "hi", 7),
        ]);
        let values = settings(&Sources::default()).for_commit(&f).unwrap();
        assert_eq!(values.text(PROJECT).unwrap().0, "src/app");
        assert_eq!(values.text(COMMAND).unwrap().0, "build.sh");
        assert!(!values.bool(SCM_DO_BUILD).unwrap().0);
        assert_eq!(values.seconds(IDLE_TIMEOUT), Some(7));
        assert!(values.bool(DISABLE_COLLECTSTATIC).unwrap().0);
        assert_eq!(values.installer().0, &InstallerChoice::Uv);
        assert_eq!(values.app, [("GREETING".to_string(), "hi".to_string())]);
        assert!(values.refused.is_empty(), "{:?}", values.refused);
        // Server-only keys in any case stay out, each with its note.
        let mut s = Sources::default();
        s.git.insert("deploy.branch".into(), "main".into());
        let f = file(&[
            ("PYTHONPATH", "/evil", 1),
            ("POSTDEPLOY", "rm -rf /", 2),
            ("Branch", "evil", 3),
            ("HEALTHCHECK", "true", 4),
            ("deploymenttimeout", "1", 5),
            ("TakeOverFiles", "true", 6),
        ]);
        let values = settings(&s).for_commit(&f).unwrap();
        assert_eq!(values.text(BRANCH).unwrap().0, "main");
        for key in [
            PYTHON_PATH,
            POST_DEPLOY,
            HEALTH_CHECK,
            TAKE_OVER_FILES,
            DEPLOYMENT_TIMEOUT,
        ] {
            assert!(
                values.get(key).is_none_or(|s| s.origin == Origin::Default),
                "{}",
                key.name
            );
        }
        assert!(values.app.is_empty(), "{:?}", values.app);
        assert_eq!(values.refused.len(), 6);
        assert_eq!(
            values.refused[1].to_string(),
            ".deployment line 2: POSTDEPLOY names the server's setting postDeploy (keys are read regardless of case, as Kudu does), which a commit may not set; left out"
        );
        assert_eq!(
            values.refused[0].to_string(),
            ".deployment line 1: PYTHONPATH names the server's setting pythonPath (keys are read regardless of case, as Kudu does), which a commit may not set; left out"
        );
        // A commit's value outside what it may set fails in any case too.
        let err = settings(&Sources::default())
            .for_commit(&file(&[("PYTHON", "/srv/tool", 2)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a commit may only set a version"), "{err}");
    }

    #[test]
    fn app_settings_by_allow_list() {
        for allowed in [
            "DJANGO_SETTINGS_MODULE",
            "DATABASE_URL",
            "GREETING",
            "GREETING_STYLE",
            "S3_BUCKET",
            "PIP_INDEX_URL",
            "UV_INDEX",
            "UV_INDEX_PRIVATE_PASSWORD",
            "POETRY_HTTP_BASIC_PRIVATE_USERNAME",
            "POETRY_REPOSITORIES_PRIVATE_URL",
        ] {
            assert!(app_setting_allowed(allowed), "{allowed}");
        }
        for refused in [
            "PATH",
            "HOME",
            "SHELL",
            "IFS",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTHON_GIL",
            "PIP_TARGET",
            "PIP_PREFIX",
            "PIP_ROOT",
            "PIP_USER",
            "PIP_CONFIG_FILE",
            "PIP_CONSTRAINT",
            "UV_PROJECT_ENVIRONMENT",
            "UV_CONFIG_FILE",
            "UV_INDEX__PASSWORD",
            "POETRY_CACHE_DIR",
            "POETRY_VIRTUALENVS_CREATE",
            "PIPENV_PYPI_MIRROR",
            "VIRTUAL_ENV",
            "GIT_DIR",
            "SSH_AUTH_SOCK",
            "XDG_CONFIG_HOME",
            "BASH_ENV",
            "GCONV_PATH",
            "http_proxy",
            "greeting",
            "_PYTHON_SYSCONFIGDATA_NAME",
            "MALLOC_CHECK_",
            "A__B",
            "1X",
        ] {
            assert!(!app_setting_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn refused_app_settings_are_named_with_their_line() {
        let f = file(&[("GREETING", "hi", 2), ("LD_PRELOAD", "/x.so", 3)]);
        let values = settings(&Sources::default()).for_commit(&f).unwrap();
        assert_eq!(values.app, [("GREETING".to_string(), "hi".to_string())]);
        assert_eq!(
            values.refused[0].to_string(),
            ".deployment line 3: LD_PRELOAD is not an app setting a commit may set; left out (see docs/deployment-file.md, App settings)"
        );
    }

    #[test]
    fn a_commit_names_a_python_version_never_a_program() {
        let values = settings(&Sources::default())
            .for_commit(&file(&[("python", "python-3.12", 1)]))
            .unwrap();
        assert!(matches!(values.python().0, PythonChoice::Version(_)));
        let err = settings(&Sources::default())
            .for_commit(&file(&[("python", "/srv/site/tool", 4)]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            ".deployment line 4: python = \"/srv/site/tool\": a commit may only set a version such as 3.12 (a command or path is the server's setting)"
        );
    }

    #[test]
    fn push_options_come_from_git_variables() {
        let env = Environment::from_pairs([
            ("GIT_PUSH_OPTION_COUNT", "2"),
            ("GIT_PUSH_OPTION_0", "recreate-env"),
            ("GIT_PUSH_OPTION_1", "x=$(rm -rf /)"),
        ]);
        assert_eq!(env.push_options(), vec!["recreate-env", "x=$(rm -rf /)"]);
    }

    #[test]
    fn bad_bool_names_key_and_value() {
        let s = Sources {
            env: Environment::from_pairs([("PUSHDEPLOY_RECREATE_ENV", "perhaps")]),
            ..Sources::default()
        };
        let err = settings(&s)
            .for_commit(&DeploymentFile::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("recreateEnv") && err.contains("perhaps"),
            "{err}"
        );
    }

    /// `port` (or Azure's `WEBSITES_PORT`) out of range, and a `bind`
    /// that is no address, are one-line errors naming setting and value.
    #[test]
    fn port_and_bind_out_of_range_are_refused() {
        for (name, value, key) in [
            ("PUSHDEPLOY_PORT", "0", "port"),
            ("PUSHDEPLOY_PORT", "65536", "port"),
            ("PUSHDEPLOY_PORT", "http", "port"),
            ("PUSHDEPLOY_BIND", "localhost; rm", "bind"),
        ] {
            let s = Sources {
                env: Environment::from_pairs([(name, value)]),
                ..Sources::default()
            };
            let err = settings(&s)
                .for_commit(&DeploymentFile::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains(value) && !err.contains('\n'),
                "{err}"
            );
        }
        let ok = Sources {
            env: Environment::from_pairs([("PUSHDEPLOY_PORT", "65535")]),
            ..Sources::default()
        };
        let values = settings(&ok)
            .for_commit(&DeploymentFile::default())
            .unwrap();
        assert_eq!(values.text(PORT).map(|(t, _)| t), Some("65535"));
        assert_eq!(values.text(BIND).map(|(t, _)| t), Some("127.0.0.1"));
        // Azure's name is the same setting, in `.deployment` and `-c`.
        assert_eq!(key_named("WEBSITES_PORT").map(|k| k.name), Some("port"));
    }

    #[test]
    fn a_variable_that_is_not_utf8_is_refused_not_a_panic() {
        let s = Sources {
            env: Environment::from_os_pairs([(
                OsStr::new("PUSHDEPLOY_VERIFY"),
                OsStr::from_bytes(b"tr\xffue"),
            )]),
            ..Sources::default()
        };
        let err = settings(&s)
            .for_commit(&DeploymentFile::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("\\xff") && err.contains("not UTF-8"), "{err}");
    }
}
