//! Package managers: which file of the commit says what the env holds
//! (requirements.txt, uv.lock, poetry.lock, Pipfile.lock), what the project
//! says about its Python, and what an install from a lock file depends on.
//!
//! requirements.txt wins whenever it is there (Kudu's rule); a lock file
//! beside it is named with the setting that switches to it. Without it, the
//! one lock file with its project file decides; several are refused.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use pep440_rs::{Version, VersionSpecifiers};
use serde::Serialize;

use crate::commit::Commit;
use crate::error::{shown, usage};
use crate::packages::REQUIREMENTS;
use crate::settings::{PACKAGE_MANAGER, Values};

pub const PYPROJECT: &str = "pyproject.toml";
pub const PIPFILE: &str = "Pipfile";

/// A kind of lock file, with the project file it locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    Uv,
    Poetry,
    Pipenv,
}

pub const KINDS: [Kind; 3] = [Kind::Uv, Kind::Poetry, Kind::Pipenv];

impl Kind {
    pub fn lock_file(self) -> &'static str {
        match self {
            Kind::Uv => "uv.lock",
            Kind::Poetry => "poetry.lock",
            Kind::Pipenv => "Pipfile.lock",
        }
    }

    pub fn project_file(self) -> &'static str {
        match self {
            Kind::Uv | Kind::Poetry => PYPROJECT,
            Kind::Pipenv => PIPFILE,
        }
    }

    /// The command that makes or updates the lock file.
    pub fn lock_command(self) -> &'static str {
        match self {
            Kind::Uv => "uv lock",
            Kind::Poetry => "poetry lock",
            Kind::Pipenv => "pipenv lock",
        }
    }

    /// The value of the `packageManager` setting that chooses it.
    pub fn setting(self) -> &'static str {
        match self {
            Kind::Uv => "uv",
            Kind::Poetry => "poetry",
            Kind::Pipenv => "pipenv",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.lock_file())
    }
}

/// What installs the env's packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// No package manager file: the Python steps are skipped.
    Nothing,
    /// requirements.txt, with notes on lock files that stand beside it.
    Requirements {
        notes: Vec<String>,
    },
    Lock(Kind),
}

/// Decides the package manager from the commit's files and the
/// `packageManager` setting.
pub fn detect(commit: &Commit, values: &Values) -> Result<Detected> {
    let has = |name: &str| commit.has_root_entry(name);
    let (value, origin) = values
        .text(PACKAGE_MANAGER)
        .expect("packageManager has a default");
    let chosen = value.trim().to_ascii_lowercase();
    let locks: Vec<Kind> = KINDS.into_iter().filter(|k| has(k.lock_file())).collect();
    let explicit = match chosen.as_str() {
        "auto" | "" => None,
        "pip" | "requirements" | "requirements.txt" => {
            return Ok(if has(REQUIREMENTS) {
                Detected::Requirements { notes: Vec::new() }
            } else {
                Detected::Nothing
            });
        }
        other => match KINDS.into_iter().find(|k| k.setting() == other) {
            Some(kind) => Some(kind),
            None => {
                return Err(usage(format!(
                    "setting packageManager ({}): {} is not auto, pip, uv, poetry or pipenv",
                    origin,
                    shown(value.as_bytes())
                )));
            }
        },
    };
    if let Some(kind) = explicit {
        check_pair(commit, kind, Some(&origin.to_string()))?;
        return Ok(Detected::Lock(kind));
    }
    if has(REQUIREMENTS) {
        let notes = locks
            .iter()
            .map(|k| {
                format!(
                    "{} is in the commit too; requirements.txt is used (set packageManager = {} to install from {} instead)",
                    k.lock_file(),
                    k.setting(),
                    k.lock_file()
                )
            })
            .collect();
        return Ok(Detected::Requirements { notes });
    }
    match locks.as_slice() {
        [] => {}
        [kind] => {
            check_pair(commit, *kind, None)?;
            return Ok(Detected::Lock(*kind));
        }
        several => {
            let names: Vec<&str> = several.iter().map(|k| k.lock_file()).collect();
            let values: Vec<&str> = several.iter().map(|k| k.setting()).collect();
            bail!(
                "the commit has {} and no requirements.txt: choose one with packageManager = {} in .deployment, or remove the others",
                names.join(" and "),
                values.join(" or ")
            );
        }
    }
    if has(PIPFILE) {
        bail!("Pipfile has no Pipfile.lock beside it: run `pipenv lock` and commit Pipfile.lock");
    }
    if let Some(bytes) = commit.read_root_file(PYPROJECT)? {
        let project = Project::parse(&bytes)?;
        if project.declares_dependencies() {
            let kind = if project.poetry {
                Kind::Poetry
            } else {
                Kind::Uv
            };
            bail!(
                "pyproject.toml lists dependencies and the commit has no lock file to install them from: run `{}` and commit {} (or add .skipPythonDeployment to deploy the files only)",
                kind.lock_command(),
                kind.lock_file()
            );
        }
    }
    Ok(Detected::Nothing)
}

/// A lock file needs its project file.
fn check_pair(commit: &Commit, kind: Kind, setting: Option<&str>) -> Result<()> {
    let (lock, project) = (kind.lock_file(), kind.project_file());
    let by = setting
        .map(|o| format!("setting packageManager ({o}) is {}: ", kind.setting()))
        .unwrap_or_default();
    match (commit.has_root_entry(lock), commit.has_root_entry(project)) {
        (true, true) => Ok(()),
        (false, _) => bail!(
            "{by}the commit has no {lock}: run `{}` and commit {lock}",
            kind.lock_command()
        ),
        (true, false) => bail!("{by}{lock} is in the commit but {project} is not: commit both"),
    }
}

/// What pyproject.toml or Pipfile says that matters here.
#[derive(Debug, Default, Clone)]
pub struct Project {
    /// `[project] dependencies` is there and not empty.
    pub dependencies: bool,
    /// `[tool.poetry]` is there.
    pub poetry: bool,
    /// `[tool.poetry.dependencies]` beyond `python`.
    pub poetry_dependencies: bool,
    /// The Python the project needs, as PEP 440 specifiers, with where it
    /// was read (`requires-python >=3.11`).
    pub python: Option<(VersionSpecifiers, String)>,
}

impl Project {
    pub fn declares_dependencies(&self) -> bool {
        self.dependencies || self.poetry_dependencies
    }

    /// Reads pyproject.toml.
    pub fn parse(bytes: &[u8]) -> Result<Project> {
        let table = parse_toml(PYPROJECT, bytes)?;
        let project = table.get("project").and_then(|p| p.as_table());
        let poetry = table
            .get("tool")
            .and_then(|t| t.get("poetry"))
            .and_then(|p| p.as_table());
        let poetry_deps = poetry
            .and_then(|p| p.get("dependencies"))
            .and_then(|d| d.as_table());
        let mut out = Project {
            dependencies: project
                .and_then(|p| p.get("dependencies"))
                .and_then(|d| d.as_array())
                .is_some_and(|d| !d.is_empty()),
            poetry: poetry.is_some(),
            poetry_dependencies: poetry_deps.is_some_and(|d| d.keys().any(|k| k != "python")),
            python: None,
        };
        if let Some(spec) = project
            .and_then(|p| p.get("requires-python"))
            .and_then(|v| v.as_str())
        {
            out.python = Some((
                specifiers(PYPROJECT, "requires-python", spec)?,
                format!("pyproject.toml requires-python {spec}"),
            ));
        } else if let Some(spec) = poetry_deps
            .and_then(|d| d.get("python"))
            .and_then(|v| v.as_str())
        {
            let pep440 = poetry_constraint(spec);
            out.python = Some((
                specifiers(PYPROJECT, "[tool.poetry.dependencies] python", &pep440)?,
                format!("pyproject.toml [tool.poetry.dependencies] python {spec}"),
            ));
        }
        Ok(out)
    }

    /// Reads a Pipfile: `[requires] python_version` or `python_full_version`.
    pub fn parse_pipfile(bytes: &[u8]) -> Result<Project> {
        let table = parse_toml(PIPFILE, bytes)?;
        let requires = table.get("requires").and_then(|r| r.as_table());
        let mut out = Project {
            dependencies: true,
            ..Project::default()
        };
        for (key, pattern) in [
            ("python_full_version", "=={}"),
            ("python_version", "=={}.*"),
        ] {
            if let Some(v) = requires.and_then(|r| r.get(key)).and_then(|v| v.as_str()) {
                let spec = pattern.replace("{}", v.trim());
                out.python = Some((
                    specifiers(PIPFILE, key, &spec)?,
                    format!("Pipfile [requires] {key} {v}"),
                ));
                break;
            }
        }
        Ok(out)
    }
}

pub fn parse_toml(file: &str, bytes: &[u8]) -> Result<toml::Table> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{file}: is not UTF-8 text; {}",
            shown(&bytes[..bytes.len().min(40)])
        )
    })?;
    toml::from_str::<toml::Table>(text).map_err(|e| {
        let message = e.message().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                anyhow::anyhow!("{file} line {line}: not valid TOML: {message}")
            }
            None => anyhow::anyhow!("{file}: not valid TOML: {message}"),
        }
    })
}

fn specifiers(file: &str, key: &str, spec: &str) -> Result<VersionSpecifiers> {
    VersionSpecifiers::from_str(spec).map_err(|_| {
        anyhow::anyhow!(
            "{file}: {key} {} is not a version requirement (such as >=3.11)",
            shown(spec.as_bytes())
        )
    })
}

/// Poetry's own constraint syntax (`^3.11`, `~3.11`, `3.11.*`, `>=3.10,<3.13`,
/// `>=3.10 || ^2.7`: its first part) as PEP 440 specifiers.
fn poetry_constraint(spec: &str) -> String {
    let first = spec.split("||").next().unwrap_or("").trim();
    let parts: Vec<String> = first
        .split([',', ' '])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let bump = |v: &str, at: usize| -> String {
                let mut nums: Vec<u64> = v.split('.').filter_map(|n| n.parse().ok()).collect();
                nums.truncate(at + 1);
                while nums.len() <= at {
                    nums.push(0);
                }
                nums[at] += 1;
                nums.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            };
            if let Some(v) = p.strip_prefix('^') {
                let nums: Vec<&str> = v.split('.').collect();
                let first_nonzero = nums.iter().position(|n| *n != "0").unwrap_or(0);
                format!(">={v},<{}", bump(v, first_nonzero.min(nums.len() - 1)))
            } else if let Some(v) = p.strip_prefix('~').filter(|v| !v.starts_with('=')) {
                let at = if v.split('.').count() >= 2 { 1 } else { 0 };
                format!(">={v},<{}", bump(v, at))
            } else if p == "*" {
                ">=0".to_string()
            } else if p.starts_with(|c: char| c.is_ascii_digit()) {
                format!("=={p}")
            } else {
                p.to_string()
            }
        })
        .collect();
    parts.join(",")
}

/// The Python the project asks for, read from its project file.
pub fn project_python(commit: &Commit, kind: Kind) -> Result<Option<(VersionSpecifiers, String)>> {
    let Some(bytes) = commit.read_root_file(kind.project_file())? else {
        return Ok(None);
    };
    let project = match kind {
        Kind::Pipenv => Project::parse_pipfile(&bytes)?,
        Kind::Uv | Kind::Poetry => Project::parse(&bytes)?,
    };
    Ok(project.python)
}

/// Whether an interpreter's version satisfies the specifiers.
pub fn satisfies(specs: &VersionSpecifiers, version: crate::runtime::Version) -> bool {
    let v = Version::from_str(&version.to_string()).expect("three numbers are a version");
    specs.contains(&v)
}

/// The lock file's local sources (path dependencies, workspace members):
/// their paths relative to the project, so their content can count.
pub fn local_sources(kind: Kind, lock: &[u8]) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    match kind {
        Kind::Uv | Kind::Poetry => {
            let table = parse_toml(kind.lock_file(), lock)?;
            let packages = table
                .get("package")
                .and_then(|p| p.as_array())
                .cloned()
                .unwrap_or_default();
            for package in packages {
                let Some(source) = package.get("source").and_then(|s| s.as_table()) else {
                    continue;
                };
                let path = match kind {
                    Kind::Uv => ["editable", "directory", "path", "virtual"]
                        .iter()
                        .find_map(|k| source.get(*k).and_then(|v| v.as_str()))
                        .map(str::to_string)
                        .or_else(|| {
                            source
                                .get("git")
                                .and_then(|v| v.as_str())
                                .and_then(local_git)
                        }),
                    _ => {
                        let url = source.get("url").and_then(|v| v.as_str());
                        match source.get("type").and_then(|t| t.as_str()) {
                            Some("directory" | "file") => url.map(str::to_string),
                            Some("git") => url.and_then(local_git),
                            _ => None,
                        }
                    }
                };
                if let Some(path) = path
                    && path != "."
                {
                    paths.push(path);
                }
            }
        }
        Kind::Pipenv => {
            let json: serde_json::Value =
                serde_json::from_slice(lock).context("Pipfile.lock: not JSON")?;
            for section in ["default"] {
                if let Some(map) = json.get(section).and_then(|s| s.as_object()) {
                    for entry in map.values() {
                        if let Some(path) = entry.get("path").and_then(|p| p.as_str()) {
                            paths.push(path.to_string());
                        }
                    }
                }
            }
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// Where a git source's repository is, when it is on this machine: a
/// `file:` URL (`git+file:` too, any case) or a path, as uv, Poetry and
/// Pipenv let a lock name one. Such a repository is a local requirement
/// (outside the site, refused); `None` for a remote URL.
pub fn local_git(url: &str) -> Option<String> {
    // uv's `?rev=...#<commit>`, pip's `#egg=...`: not part of the path.
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let url = match url.get(..4) {
        Some(vcs) if vcs.eq_ignore_ascii_case("git+") => &url[4..],
        _ => url,
    };
    if let Some(path) = crate::requirements::file_url_path(url) {
        return Some(path);
    }
    // A URL has a scheme (`https:`) or is scp-like (`git@host:path`).
    let remote = url.contains("://")
        || url
            .split_once(':')
            .is_some_and(|(before, _)| !before.contains('/'));
    (!remote).then(|| url.to_string())
}

/// A list setting (`groups`, `extras`): names separated by ',' or spaces.
pub fn names(value: &str) -> Vec<String> {
    value
        .split([',', ' ', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poetry_constraints_become_pep440() {
        assert_eq!(poetry_constraint("^3.11"), ">=3.11,<4");
        assert_eq!(poetry_constraint("~3.11"), ">=3.11,<3.12");
        assert_eq!(poetry_constraint(">=3.10,<3.13"), ">=3.10,<3.13");
        assert_eq!(poetry_constraint("3.12.*"), "==3.12.*");
        assert_eq!(poetry_constraint("^0.5"), ">=0.5,<0.6");
    }

    #[test]
    fn git_sources_of_this_machine_are_local() {
        let table: &[(&str, Option<&str>)] = &[
            ("file:///srv/repo?rev=main#0123", Some("/srv/repo")),
            ("FILE://localhost/srv/repo", Some("/srv/repo")),
            ("git+file:///srv/repo", Some("/srv/repo")),
            ("file:..%2Frepo", Some("../repo")),
            ("/srv/repo", Some("/srv/repo")),
            ("../repo", Some("../repo")),
            ("vendor/repo", Some("vendor/repo")),
            ("https://x.example/r.git?rev=main#0123", None),
            ("git+https://x.example/r.git", None),
            ("ssh://git@x.example/r.git", None),
            ("git@x.example:org/r.git", None),
        ];
        for (url, want) in table {
            assert_eq!(local_git(url).as_deref(), *want, "{url}");
        }
    }

    #[test]
    fn reads_project_files() {
        let p = Project::parse(
            b"[project]\nname='a'\nversion='1'\nrequires-python='>=3.12'\ndependencies=['x']\n",
        )
        .unwrap();
        assert!(p.declares_dependencies());
        assert!(satisfies(
            &p.python.as_ref().unwrap().0,
            crate::runtime::Version {
                major: 3,
                minor: 12,
                patch: 1
            }
        ));
        let tools_only = Project::parse(b"[tool.black]\nline-length = 100\n").unwrap();
        assert!(!tools_only.declares_dependencies() && tools_only.python.is_none());
        let pipfile = Project::parse_pipfile(b"[requires]\npython_version = \"3.11\"\n").unwrap();
        assert_eq!(pipfile.python.unwrap().0.to_string(), "==3.11.*");
        let err = Project::parse(b"[project\n").unwrap_err().to_string();
        assert!(
            err.starts_with("pyproject.toml line 1: not valid TOML"),
            "{err}"
        );
    }
}
