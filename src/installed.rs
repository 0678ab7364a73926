//! What was last installed into the env, so an unchanged push skips pip.
//!
//! pip runs again when anything it depends on changed since the last
//! successful install into this same env: the requirement files (by blob id,
//! includes too), the interpreter's exact version, the env itself (its
//! directory and what its site-packages holds), the installer, and the
//! settings that change resolution (`PIP_*` / `UV_*` variables, pip's config
//! files, the content of local find-links directories). A requirement pip
//! cannot see as fixed (a local path, `-e`, a `file:` URL, a VCS URL without
//! a commit) makes pip run every time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::commit::short_id;
use crate::files::{remove_file_if_there, write_atomic};

/// The inputs of one install, each as text; compared key by key to say
/// what changed.
pub type Fingerprint = BTreeMap<String, String>;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    fingerprint: Fingerprint,
    deployment: String,
}

/// Whether pip must run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum PipDecision {
    Run { reason: String },
    Skip { reason: String },
}

/// Why a requirement line cannot be taken as fixed, if it cannot.
pub fn unfixed(line: &str) -> Option<&'static str> {
    let line = line.split(" #").next().unwrap_or("").trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    if line.starts_with("-e") || line.starts_with("--editable") {
        return Some("an editable requirement (-e)");
    }
    if line.contains("file:") {
        return Some("a file: URL");
    }
    if line.starts_with('.') || line.starts_with('/') {
        return Some("a local path");
    }
    for vcs in ["git+", "hg+", "svn+", "bzr+"] {
        if let Some(at) = line.find(vcs) {
            let url = &line[at..];
            let pinned = url.rsplit_once('@').is_some_and(|(_, rev)| {
                let rev = rev.split(['#', ' ']).next().unwrap_or("");
                rev.len() >= 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
            });
            if !pinned {
                return Some("a VCS URL without a commit");
            }
        }
    }
    None
}

/// A directory's listing (names, sizes, times): changes when a wheel is
/// added to or replaced in a local find-links directory.
pub fn listing(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return "(missing)".into();
    };
    let mut rows: Vec<String> = entries
        .flatten()
        .map(|e| {
            let meta = e.metadata().ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{} {size} {mtime}", e.file_name().to_string_lossy())
        })
        .collect();
    rows.sort();
    rows.join("\n")
}

/// The env's identity: its real directory, and what its site-packages holds.
pub fn env_identity(env: &Path) -> String {
    let real = std::fs::canonicalize(env).unwrap_or_else(|_| env.to_path_buf());
    let lib = real.join("lib");
    let site_packages: Vec<PathBuf> = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    let mut out = real.display().to_string();
    for dir in site_packages {
        out.push('\n');
        out.push_str(&listing(&dir));
    }
    out
}

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Store {
            path: state_dir.join("installed.json"),
        }
    }

    fn load(&self) -> Option<Stored> {
        serde_json::from_slice(&std::fs::read(&self.path).ok()?).ok()
    }

    /// Compares with the last install: skip only when every input is the same.
    pub fn decide(&self, now: &Fingerprint) -> PipDecision {
        let Some(last) = self.load() else {
            return PipDecision::Run {
                reason: "no earlier install into this env is recorded".into(),
            };
        };
        let changed: Vec<&str> = now
            .keys()
            .chain(last.fingerprint.keys())
            .filter(|k| now.get(*k) != last.fingerprint.get(*k))
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if changed.is_empty() {
            let short = short_id(&last.deployment);
            PipDecision::Skip {
                reason: format!(
                    "requirements, interpreter, env and pip settings unchanged since {short}"
                ),
            }
        } else {
            PipDecision::Run {
                reason: format!("changed since the last install: {}", changed.join(", ")),
            }
        }
    }

    /// Records a successful install.
    pub fn save(&self, fingerprint: &Fingerprint, deployment: &str) -> Result<()> {
        let stored = Stored {
            fingerprint: fingerprint.clone(),
            deployment: deployment.to_string(),
        };
        write_atomic(&self.path, &serde_json::to_vec_pretty(&stored)?)
    }

    pub fn forget(&self) -> Result<()> {
        remove_file_if_there(&self.path)
    }
}

/// What one install depends on, gathered by the plan.
pub struct Inputs<'a> {
    /// Requirement files as (name, content), requirements.txt first.
    pub files: &'a [(String, Vec<u8>)],
    /// `PIP_*` and `UV_*` variables the installer will see.
    pub vars: &'a [(String, String)],
    /// pip's configuration files that may apply.
    pub config_files: &'a [PathBuf],
    pub installer: String,
    pub interpreter: String,
    pub env: &'a Path,
}

/// The fingerprint of an install, or why pip must always run.
pub fn fingerprint(inputs: &Inputs) -> Result<Fingerprint, String> {
    let mut fp = Fingerprint::new();
    let mut find_links: Vec<String> = Vec::new();
    let mut requirements = Vec::new();
    for (name, content) in inputs.files {
        let text = String::from_utf8_lossy(content);
        for (n, line) in text.lines().enumerate() {
            if let Some(why) = unfixed(line) {
                return Err(format!("{name} line {} is {why}", n + 1));
            }
            let line = line.trim();
            for opt in ["--find-links", "-f"] {
                if let Some(rest) = line.strip_prefix(opt).filter(|r| r.starts_with([' ', '='])) {
                    find_links.push(rest.trim_start_matches(['=', ' ']).trim().to_string());
                }
            }
        }
        let id =
            git2::Oid::hash_object(git2::ObjectType::Blob, content).map_err(|e| e.to_string())?;
        requirements.push(format!("{name} {id}"));
    }
    fp.insert("requirements".into(), requirements.join("\n"));
    fp.insert("interpreter".into(), inputs.interpreter.clone());
    fp.insert("env".into(), env_identity(inputs.env));
    fp.insert("installer".into(), inputs.installer.clone());
    let mut vars: Vec<String> = inputs
        .vars
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    fp.insert("pip settings".into(), vars.join("\n"));
    for (k, v) in inputs.vars {
        if k == "PIP_FIND_LINKS" || k == "UV_FIND_LINKS" {
            find_links.extend(v.split_whitespace().map(str::to_string));
        }
    }
    let mut configs = Vec::new();
    for path in inputs.config_files {
        if let Ok(content) = std::fs::read(path) {
            configs.push(format!(
                "{} {}",
                path.display(),
                String::from_utf8_lossy(&content)
            ));
        }
    }
    fp.insert("pip config files".into(), configs.join("\n"));
    let mut dirs = Vec::new();
    for link in find_links {
        let path = link.strip_prefix("file://").unwrap_or(&link);
        if !link.contains("://") || link.starts_with("file://") {
            dirs.push(format!("{path}\n{}", listing(Path::new(path))));
        }
    }
    fp.insert("find-links directories".into(), dirs.join("\n"));
    Ok(fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_that_are_not_fixed() {
        assert_eq!(unfixed("flask==3.1.0"), None);
        assert_eq!(unfixed("# -e ."), None);
        assert_eq!(unfixed("-e ."), Some("an editable requirement (-e)"));
        assert_eq!(unfixed("./libs/mypkg"), Some("a local path"));
        assert_eq!(unfixed("pkg @ file:///srv/pkg.whl"), Some("a file: URL"));
        assert_eq!(
            unfixed("git+https://example.invalid/x.git@main#egg=x"),
            Some("a VCS URL without a commit")
        );
        assert_eq!(
            unfixed(
                "git+https://example.invalid/x.git@0123456789abcdef0123456789abcdef01234567#egg=x"
            ),
            None
        );
    }

    #[test]
    fn decides_by_every_input() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut fp = Fingerprint::new();
        fp.insert("requirements".into(), "requirements.txt abc".into());
        fp.insert("python".into(), "3.11.7".into());
        assert!(matches!(store.decide(&fp), PipDecision::Run { .. }));
        store.save(&fp, "0123456789").unwrap();
        assert!(
            matches!(store.decide(&fp), PipDecision::Skip { reason } if reason.contains("0123456"))
        );
        fp.insert("python".into(), "3.11.8".into());
        assert_eq!(
            store.decide(&fp),
            PipDecision::Run {
                reason: "changed since the last install: python".into()
            }
        );
    }
}
