//! Every setting, where it may come from, and the one precedence rule:
//! flag > environment variable > `.deployment` in the pushed commit >
//! git config (`deploy.<key>`) > default. Server-only keys are never read from
//! `.deployment`: a pushed commit must not redirect its own deployment.
//!
//! This is also the only module that reads the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::error::usage;

/// One setting: its name (in git config and `.deployment`), its environment
/// variable, whether only the server may set it, and its default.
pub struct Key {
    pub name: &'static str,
    pub env: &'static str,
    /// The key's name in `.deployment` (Kudu's spelling), any case.
    pub file: &'static str,
    pub server_only: bool,
    pub default: &'static str,
    pub doc: &'static str,
}

pub const BRANCH: &Key = &Key {
    name: "branch",
    env: "PUSHDEPLOY_BRANCH",
    file: "branch",
    server_only: true,
    default: "(the branch HEAD names)",
    doc: "the branch whose pushes deploy",
};
pub const SITE: &Key = &Key {
    name: "site",
    env: "PUSHDEPLOY_SITE",
    file: "site",
    server_only: true,
    default: "(none: required)",
    doc: "the directory that serves the app",
};
pub const STATE_DIR: &Key = &Key {
    name: "stateDir",
    env: "PUSHDEPLOY_STATE_DIR",
    file: "stateDir",
    server_only: true,
    default: "<repository>/pushdeploy",
    doc: "records, manifest and lock",
};
pub const PYTHON: &Key = &Key {
    name: "python",
    env: "PUSHDEPLOY_PYTHON",
    file: "python",
    server_only: false,
    default: "python3",
    doc: "the interpreter when the commit has no runtime.txt or .python-version: a command, a path, or a version such as 3.12",
};
pub const PYTHON_PATH: &Key = &Key {
    name: "pythonPath",
    env: "PUSHDEPLOY_PYTHON_PATH",
    file: "pythonPath",
    server_only: true,
    default: "(empty)",
    doc: "extra directories to search for interpreters, separated by ':'",
};
pub const RECREATE_ENV: &Key = &Key {
    name: "recreateEnv",
    env: "PUSHDEPLOY_RECREATE_ENV",
    file: "recreateEnv",
    server_only: false,
    default: "false",
    doc: "delete and recreate env on the next deployment",
};
pub const PYENV_ROOT: &Key = &Key {
    name: "pyenvRoot",
    env: "PYENV_ROOT",
    file: "pyenvRoot",
    server_only: true,
    default: "~/.pyenv",
    doc: "where pyenv keeps interpreters (versions/*/bin/python)",
};

pub const SKIP_UNCHANGED: &Key = &Key {
    name: "skipUnchangedPackages",
    env: "PUSHDEPLOY_SKIP_UNCHANGED_PACKAGES",
    file: "skipUnchangedPackages",
    server_only: false,
    default: "true",
    doc: "false: run the installer on every deployment, even when nothing it depends on changed",
};
pub const INSTALLER: &Key = &Key {
    name: "installer",
    env: "PUSHDEPLOY_INSTALLER",
    file: "installer",
    server_only: false,
    default: "pip",
    doc: "pip, uv (`uv pip install`, uv found on PATH), or a path to uv",
};
pub const VERIFY: &Key = &Key {
    name: "verify",
    env: "PUSHDEPLOY_VERIFY",
    file: "verify",
    server_only: false,
    default: "false",
    doc: "true: compare every file with the site and repair drift, instead of syncing only what changed",
};
pub const CACHE_DIR: &Key = &Key {
    name: "cacheDir",
    env: "PUSHDEPLOY_CACHE_DIR",
    file: "cacheDir",
    server_only: true,
    default: "~/.cache/pushdeploy ($XDG_CACHE_HOME/pushdeploy)",
    doc: "the user's cache: pip seeds per interpreter (fast env creation) and interpreters already run; repositories share it",
};
pub const PROJECT: &Key = &Key {
    name: "project",
    env: "PROJECT",
    file: "project",
    server_only: false,
    default: "(the top of the repository)",
    doc: "deploy this sub-folder of the repository; its runtime.txt and requirements.txt count",
};
pub const COMMAND: &Key = &Key {
    name: "command",
    env: "COMMAND",
    file: "command",
    server_only: false,
    default: "(none)",
    doc: "a script in the commit that runs instead of the sync, env, packages and framework steps",
};
pub const SCM_DO_BUILD: &Key = &Key {
    name: "scmDoBuildDuringDeployment",
    env: "SCM_DO_BUILD_DURING_DEPLOYMENT",
    file: "SCM_DO_BUILD_DURING_DEPLOYMENT",
    server_only: false,
    default: "true",
    doc: "false: sync the files only (no env, packages or framework steps)",
};
pub const DISABLE_COLLECTSTATIC: &Key = &Key {
    name: "disableCollectstatic",
    env: "DISABLE_COLLECTSTATIC",
    file: "DISABLE_COLLECTSTATIC",
    server_only: false,
    default: "(unset)",
    doc: "set (to anything but false): skip Django's collectstatic",
};
pub const POST_DEPLOY: &Key = &Key {
    name: "postDeploy",
    env: "PUSHDEPLOY_POST_DEPLOY",
    file: "postDeploy",
    server_only: true,
    default: "(none)",
    doc: "a command run after a successful deployment (split into words like a shell would, never run by one)",
};

pub const PACKAGE_MANAGER: &Key = &Key {
    name: "packageManager",
    env: "PUSHDEPLOY_PACKAGE_MANAGER",
    file: "packageManager",
    server_only: false,
    default: "auto",
    doc: "auto (requirements.txt, else the one lock file), pip (requirements.txt), uv (uv.lock), poetry (poetry.lock) or pipenv (Pipfile.lock)",
};
pub const GROUPS: &Key = &Key {
    name: "groups",
    env: "PUSHDEPLOY_GROUPS",
    file: "groups",
    server_only: false,
    default: "(none)",
    doc: "dependency groups to install from uv.lock or poetry.lock besides the main ones, separated by ','",
};
pub const EXTRAS: &Key = &Key {
    name: "extras",
    env: "PUSHDEPLOY_EXTRAS",
    file: "extras",
    server_only: false,
    default: "(none)",
    doc: "the project's extras to install from uv.lock or poetry.lock, separated by ','",
};
pub const INSTALL_PROJECT: &Key = &Key {
    name: "installProject",
    env: "PUSHDEPLOY_INSTALL_PROJECT",
    file: "installProject",
    server_only: false,
    default: "false",
    doc: "true: install the app itself as a package (not editable) after its locked dependencies",
};
pub const UV: &Key = &Key {
    name: "uv",
    env: "PUSHDEPLOY_UV",
    file: "uv",
    server_only: true,
    default: crate::tools::UV_VERSION,
    doc: "the uv that installs uv.lock: a version (taken from PATH if it is that version, else installed into the cache dir) or a path",
};
pub const POETRY: &Key = &Key {
    name: "poetry",
    env: "PUSHDEPLOY_POETRY",
    file: "poetry",
    server_only: true,
    default: crate::tools::POETRY_VERSION,
    doc: "the Poetry that installs poetry.lock: a version (taken from PATH if it is that version, else installed into the cache dir) or a path",
};
pub const REMOVE_UNNEEDED: &Key = &Key {
    name: "removeUnneeded",
    env: "PUSHDEPLOY_REMOVE_UNNEEDED",
    file: "removeUnneeded",
    server_only: false,
    default: "true",
    doc: "false: keep packages that an earlier deployment installed from requirements.txt and this commit's requirements no longer need",
};

/// All keys, in the order `pushdeploy config` shows them.
pub const KEYS: &[&Key] = &[
    BRANCH,
    SITE,
    STATE_DIR,
    PYTHON,
    PYTHON_PATH,
    PYENV_ROOT,
    RECREATE_ENV,
    CACHE_DIR,
    VERIFY,
    SKIP_UNCHANGED,
    INSTALLER,
    PROJECT,
    COMMAND,
    SCM_DO_BUILD,
    DISABLE_COLLECTSTATIC,
    POST_DEPLOY,
    PACKAGE_MANAGER,
    GROUPS,
    EXTRAS,
    INSTALL_PROJECT,
    UV,
    POETRY,
    REMOVE_UNNEEDED,
];

/// The key of a name, as given to `-c name=value` (any case).
pub fn key_named(name: &str) -> Option<&'static Key> {
    KEYS.iter()
        .copied()
        .find(|k| k.name.eq_ignore_ascii_case(name) || k.file.eq_ignore_ascii_case(name))
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Value {
    pub value: String,
    pub origin: Origin,
}

/// A snapshot of the process environment, taken once.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    pub fn from_process() -> Self {
        Environment {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The variables whose names start with `prefix`, sorted.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `GIT_PUSH_OPTION_COUNT` / `GIT_PUSH_OPTION_<i>`, as git passes `git push -o`.
    pub fn push_options(&self) -> Vec<String> {
        let count: usize = self
            .get("GIT_PUSH_OPTION_COUNT")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // git sets every variable up to the count; stopping at the first gap
        // keeps a forged huge count from looping.
        (0..count)
            .map_while(|i| self.vars.get(&format!("GIT_PUSH_OPTION_{i}")).cloned())
            .collect()
    }

    pub fn home(&self) -> PathBuf {
        PathBuf::from(self.get("HOME").unwrap_or("/"))
    }

    /// The repository when `--repo` is not given: `$GIT_DIR` (as in a hook),
    /// else the current directory.
    pub fn default_repo(&self) -> PathBuf {
        PathBuf::from(self.get("GIT_DIR").unwrap_or("."))
    }
}

/// The layers a value may come from, highest first.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub flags: BTreeMap<&'static str, Value>,
    pub env: Environment,
    /// Keys of `.deployment` `[config]`, lower-cased, with their line numbers.
    pub deployment: BTreeMap<String, (String, usize)>,
    pub git: BTreeMap<String, String>,
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
            deployment: BTreeMap::new(),
            git,
        })
    }

    /// The `.deployment` keys that name no setting: app settings, passed to
    /// the build steps as environment variables.
    pub fn app_settings(
        &self,
        file: &crate::deployment_file::DeploymentFile,
    ) -> Vec<(String, String)> {
        file.entries
            .iter()
            .filter(|(k, _, _)| !KEYS.iter().any(|key| key.file.eq_ignore_ascii_case(k)))
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn flag(&mut self, key: &Key, flag: &str, value: impl Into<String>) {
        self.set_above_all(key, value, Origin::Flag(flag.to_string()));
    }

    /// Sets `key` in the highest layer: a flag, or a push option.
    pub fn set_above_all(&mut self, key: &Key, value: impl Into<String>, origin: Origin) {
        self.flags.insert(
            key.name,
            Value {
                value: value.into(),
                origin,
            },
        );
    }

    /// The value of `key` from the highest layer that has it.
    pub fn get(&self, key: &Key) -> Option<Value> {
        if let Some(v) = self.flags.get(key.name) {
            return Some(v.clone());
        }
        if let Some(v) = self.env.get(key.env) {
            return Some(Value {
                value: v.to_string(),
                origin: Origin::Environment(key.env.to_string()),
            });
        }
        if !key.server_only
            && let Some((v, line)) = self.deployment.get(&key.file.to_ascii_lowercase())
        {
            return Some(Value {
                value: v.clone(),
                origin: Origin::Deployment(*line),
            });
        }
        let git_name = format!("deploy.{}", key.name.to_ascii_lowercase());
        if let Some(v) = self.git.get(&git_name) {
            return Some(Value {
                value: v.clone(),
                origin: Origin::GitConfig(format!("deploy.{}", key.name)),
            });
        }
        None
    }

    /// Like `get`, falling back to the key's default.
    pub fn effective(&self, key: &Key) -> Value {
        self.get(key).unwrap_or(Value {
            value: key.default.to_string(),
            origin: Origin::Default,
        })
    }

    pub fn bool(&self, key: &Key) -> Result<Option<(bool, Origin)>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let b = parse_bool(&v.value).ok_or_else(|| {
            usage(format!(
                "setting {} ({}): {:?} is not true or false",
                key.name, v.origin, v.value
            ))
        })?;
        Ok(Some((b, v.origin)))
    }
}

pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The settings that a deployment of one repository runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub site: PathBuf,
    pub state_dir: PathBuf,
    pub branch: String,
    pub python_path: Vec<PathBuf>,
    pub pyenv_root: PathBuf,
    pub cache_dir: PathBuf,
    pub sources: Sources,
}

impl Settings {
    /// Resolves the server's settings; `repo` must be the repository's path.
    pub fn resolve(
        repo_path: &Path,
        repository: &git2::Repository,
        sources: Sources,
    ) -> Result<Self> {
        let site = sources.get(SITE).ok_or_else(|| {
            usage(format!(
                "setting site is not set for {}: run `pushdeploy init {} --site <dir>` or `git config deploy.site <dir>`",
                repo_path.display(),
                repo_path.display()
            ))
        })?;
        let site = absolute(Path::new(&site.value), repo_path);
        let state_dir = match sources.get(STATE_DIR) {
            Some(v) => absolute(Path::new(&v.value), repo_path),
            None => repo_path.join("pushdeploy"),
        };
        let branch = match sources.get(BRANCH) {
            Some(v) => v.value,
            None => head_branch(repository)?,
        };
        let python_path = sources
            .get(PYTHON_PATH)
            .map(|v| {
                v.value
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        let pyenv_root = match sources.get(PYENV_ROOT) {
            Some(v) => PathBuf::from(v.value),
            None => sources.env.home().join(".pyenv"),
        };
        let cache_dir = match sources.get(CACHE_DIR) {
            Some(v) => absolute(Path::new(&v.value), repo_path),
            // Per user, like pip's own cache: every repository of the user
            // then creates envs fast from its first deployment on.
            None => match sources.env.get("XDG_CACHE_HOME") {
                Some(cache) => Path::new(cache).join("pushdeploy"),
                None => sources.env.home().join(".cache/pushdeploy"),
            },
        };
        Ok(Settings {
            site,
            state_dir,
            branch,
            python_path,
            pyenv_root,
            cache_dir,
            sources,
        })
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

    fn sources(env: &[(&'static str, &'static str)]) -> Sources {
        Sources {
            env: Environment::from_pairs(env.iter().copied()),
            ..Sources::default()
        }
    }

    #[test]
    fn precedence_flag_env_deployment_git_default() {
        let mut s = sources(&[("PUSHDEPLOY_PYTHON", "python3.12")]);
        s.git.insert("deploy.python".into(), "python3.10".into());
        s.deployment
            .insert("python".into(), ("python3.11".into(), 3));
        s.flag(PYTHON, "--python", "python3.13");
        assert_eq!(s.effective(PYTHON).value, "python3.13");
        s.flags.clear();
        assert_eq!(
            s.effective(PYTHON).origin,
            Origin::Environment("PUSHDEPLOY_PYTHON".into())
        );
        s.env = Environment::default();
        assert_eq!(s.effective(PYTHON).value, "python3.11");
        assert_eq!(s.effective(PYTHON).origin, Origin::Deployment(3));
        s.deployment.clear();
        assert_eq!(s.effective(PYTHON).value, "python3.10");
        s.git.clear();
        assert_eq!(
            s.effective(PYTHON),
            Value {
                value: "python3".into(),
                origin: Origin::Default
            }
        );
    }

    /// Every key, layer by layer: flag > environment > `.deployment` (not for
    /// server keys) > git config > default.
    #[test]
    fn precedence_key_by_key() {
        for key in KEYS {
            let mut s = Sources::default();
            s.git.insert(
                format!("deploy.{}", key.name.to_ascii_lowercase()),
                "from-git".into(),
            );
            s.deployment
                .insert(key.file.to_ascii_lowercase(), ("from-file".into(), 2));
            s.env = Environment::from_pairs([(key.env, "from-env")]);
            s.flag(key, "-c", "from-flag");
            assert_eq!(s.effective(key).value, "from-flag", "{}", key.name);
            s.flags.clear();
            assert_eq!(s.effective(key).value, "from-env", "{}", key.name);
            s.env = Environment::default();
            let expected = if key.server_only {
                "from-git"
            } else {
                "from-file"
            };
            assert_eq!(s.effective(key).value, expected, "{}", key.name);
            s.deployment.clear();
            assert_eq!(s.effective(key).value, "from-git", "{}", key.name);
            s.git.clear();
            assert_eq!(s.effective(key).origin, Origin::Default, "{}", key.name);
            assert_eq!(key_named(key.name).map(|k| k.name), Some(key.name));
        }
    }

    #[test]
    fn server_only_keys_ignore_deployment_file() {
        let mut s = sources(&[]);
        s.deployment.insert("branch".into(), ("evil".into(), 1));
        s.git.insert("deploy.branch".into(), "main".into());
        assert_eq!(s.effective(BRANCH).value, "main");
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
        let s = sources(&[("PUSHDEPLOY_RECREATE_ENV", "perhaps")]);
        let err = s.bool(RECREATE_ENV).unwrap_err().to_string();
        assert!(
            err.contains("recreateEnv") && err.contains("perhaps"),
            "{err}"
        );
    }
}
