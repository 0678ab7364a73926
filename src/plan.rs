//! The plan: everything a deployment will do, decided before anything
//! changes, each decision with its reason. The dry run prints it; the real
//! run carries it out, so the two cannot disagree.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::commit::{Commit, CommitInfo, Entry};
use crate::env::{self, Decision};
use crate::manifest::{self, Manifest};
use crate::packages::{self, Preview, REQUIREMENTS};
use crate::runtime::{self, Choice};
use crate::settings::{RECREATE_ENV, Settings};
use crate::sync::{self, SyncPlan, Why};

pub const SKIP_PYTHON: &str = ".skipPythonDeployment";

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub commit: CommitInfo,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub site: PathBuf,
    pub sync: SyncPlan,
    pub python: Python,
    /// The commit's files, for the manifest written after the sync.
    #[serde(skip)]
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Python {
    Skip {
        reason: String,
    },
    Run {
        runtime: Choice,
        env: Decision,
        packages: Preview,
    },
}

/// What forces a new env, if anything: `--recreate-env`, the push option,
/// the environment, or a setting.
fn forced(settings: &Settings) -> Result<Option<String>> {
    Ok(settings
        .sources
        .bool(RECREATE_ENV)?
        .and_then(|(on, origin)| on.then(|| origin.to_string())))
}

impl Plan {
    /// Reads and checks everything; changes nothing. With `preview`, asks pip
    /// what it would install (the dry run).
    pub fn build(
        settings: &Settings,
        commit: &Commit,
        ref_name: &str,
        preview: bool,
    ) -> Result<Plan> {
        let store = manifest::Store::new(&settings.state_dir);
        let previous = store.load(&settings.site)?;
        let pending = store.load_pending(&settings.site)?;
        let (entries, skipped) = commit.entries()?;
        let sync = sync::plan(commit, &entries, skipped, &previous, pending.as_ref())?;
        let python = python_plan(settings, commit, preview)?;
        Ok(Plan {
            commit: commit.info.clone(),
            ref_name: ref_name.to_string(),
            site: settings.site.clone(),
            sync,
            python,
            entries,
        })
    }

    pub fn manifest(&self) -> Manifest {
        Manifest::from_entries(&self.site, &self.commit.id, &self.entries)
    }

    /// The plan as the dry run prints it.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("Files: {}", self.sync.summary())];
        for change in &self.sync.write {
            let why = match change.why {
                Why::Added => "new",
                Why::Changed => "changed",
                Why::Interrupted => "rewrite after an interrupted sync",
            };
            out.push(format!("  write  {} ({why})", change.path));
        }
        out.extend(self.sync.delete.iter().map(|p| format!("  delete {p}")));
        out.extend(
            self.sync
                .skipped
                .iter()
                .map(|s| format!("  skip   {} ({})", s.path, s.reason)),
        );
        match &self.python {
            Python::Skip { reason } => out.push(format!("Python: skipped ({reason})")),
            Python::Run {
                runtime,
                env,
                packages,
            } => {
                out.push(runtime_line(runtime));
                out.push(match env {
                    Decision::Reuse => format!("env: reuse env/ ({})", runtime.runtime),
                    Decision::Create { message, .. } => {
                        format!("env: create with {} ({message})", runtime.runtime)
                    }
                });
                out.push(match packages {
                    Preview::NotAsked => "pip: install -r requirements.txt".into(),
                    Preview::NewEnv => "pip: install everything in requirements.txt into the new env".into(),
                    Preview::WouldInstall { packages } if packages.is_empty() => "pip: nothing to install (all requirements are satisfied)".into(),
                    Preview::WouldInstall { packages } => format!(
                        "pip: would install {}",
                        packages.iter().map(|p| format!("{} {}", p.name, p.version)).collect::<Vec<_>>().join(", ")
                    ),
                    Preview::Unknown { why } => format!("pip: install -r requirements.txt (pip cannot say what it would install: {why})"),
                });
            }
        }
        out
    }
}

pub fn runtime_line(choice: &Choice) -> String {
    format!(
        "Python runtime: {} ({}) -> {} ({})",
        choice.request,
        choice.source,
        choice.interpreter.path.display(),
        choice.interpreter.version
    )
}

fn python_plan(settings: &Settings, commit: &Commit, preview: bool) -> Result<Python> {
    let Some(requirements) = commit.read_root_file(REQUIREMENTS)? else {
        return Ok(Python::Skip {
            reason: "no requirements.txt in the commit".into(),
        });
    };
    if commit.has_root_entry(SKIP_PYTHON) {
        return Ok(Python::Skip {
            reason: format!("{SKIP_PYTHON} is in the commit"),
        });
    }
    let runtime_txt = commit.read_root_file("runtime.txt")?;
    let python_version = commit.read_root_file(".python-version")?;
    let runtime = runtime::choose(runtime_txt.as_deref(), python_version.as_deref(), settings)?;
    let env = env::decide(&settings.site, runtime.request, forced(settings)?);
    if matches!(env, Decision::Create { .. }) {
        env::tool(&runtime)?;
    }
    let packages = match (&env, preview) {
        (_, false) => Preview::NotAsked,
        (Decision::Create { .. }, true) => Preview::NewEnv,
        (Decision::Reuse, true) => preview_packages(settings, commit, &requirements)?,
    };
    Ok(Python::Run {
        runtime,
        env,
        packages,
    })
}

/// Writes the commit's requirement files to a temp dir and asks the env's pip.
fn preview_packages(settings: &Settings, commit: &Commit, requirements: &[u8]) -> Result<Preview> {
    let dir = tempfile::tempdir().context("creating a temp dir for pip's dry run")?;
    write_requirements(commit, dir.path(), REQUIREMENTS, requirements, 0)?;
    Ok(packages::preview(&settings.site.join("env"), dir.path()))
}

fn write_requirements(
    commit: &Commit,
    dir: &Path,
    name: &str,
    content: &[u8],
    depth: usize,
) -> Result<()> {
    // Only plain names at the root: an include elsewhere is read by pip from the site.
    if depth > 8 || name.contains('/') || name.starts_with('.') {
        return Ok(());
    }
    fs_err::write(dir.join(name), content)?;
    for include in packages::included_files(&String::from_utf8_lossy(content)) {
        if let Some(bytes) = commit.read_root_file(&include)? {
            write_requirements(commit, dir, &include, &bytes, depth + 1)?;
        }
    }
    Ok(())
}
