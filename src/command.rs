//! `.deployment`'s `command`: a script of the commit that deploys instead of
//! the built-in steps (Kudu's "customize the deployment script"). It gets a
//! checkout of the whole commit and Kudu's variables, and is executed
//! directly, never through a shell.
//!
//! As Kudu's own generated scripts build and then let KuduSync copy into
//! the site, the command builds into a staging directory: its
//! `DEPLOYMENT_TARGET`, under the state dir, filled first with a copy of
//! the files the last deployment deployed. What it leaves there is then
//! synced into the site through the file journal, like a commit's files
//! ([`crate::sync::plan_output`]), so a failed, timed-out or killed
//! command leaves the site as it was, and a later step's failure puts the
//! files back.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tempfile::TempDir;

use crate::commit::Commit;
use crate::files::{remove_file_if_there, write_atomic};
use crate::manifest::{self, Manifest};
use crate::report::Report;
use crate::runtime::Choice;
use crate::sync;

/// The start of the names of the lists of files that command deployments
/// left in the site, in the state dir.
const LIST_PREFIX: &str = "command-files-";

/// `.deployment`'s `command`: a script of the commit, run instead of the
/// built-in steps, in a checkout of the whole commit.
#[derive(Debug, Clone, Serialize)]
pub struct CustomCommand {
    pub path: String,
    pub runtime: Choice,
}

/// A command that ran and succeeded: its output, waiting to be synced.
pub struct Staged {
    /// `DEPLOYMENT_TARGET`: what the site's deployed files are to become.
    pub output: TempDir,
    /// The files pushdeploy deployed before (copied into `output` first).
    pub owned: BTreeSet<String>,
    _source: TempDir,
    next: PathBuf,
    previous: PathBuf,
}

/// Runs the command; its output streams to the pusher, its exit status
/// decides. Nothing of the site changes.
pub fn run(
    command: &CustomCommand,
    commit: &Commit,
    site: &Path,
    state_dir: &Path,
    runner: &crate::process::Runner,
    report: &mut Report,
) -> Result<Staged> {
    // Kept in the state dir: pushdeploy's own place, never the site; a
    // killed deployment's is removed by the next one.
    let work = state_dir.join("tmp");
    fs_err::create_dir_all(&work)?;
    let source = tempfile::Builder::new()
        .prefix("source-")
        .tempdir_in(&work)?;
    let output = tempfile::Builder::new()
        .prefix("target-")
        .tempdir_in(&work)?;
    let temp = tempfile::Builder::new().prefix("temp-").tempdir_in(&work)?;
    sync::checkout(commit, source.path()).context("writing the checkout for the command")?;
    let owned = owned(state_dir, site, commit)?;
    sync::copy_owned(site, &owned, output.path())
        .context("copying the deployed files into the command's DEPLOYMENT_TARGET")?;
    let previous = state_dir.join("command-manifest.txt");
    let next = state_dir.join("command-manifest.next.txt");
    remove_file_if_there(&next)?;
    let program = source.path().join(&command.path);
    let expr = duct::cmd(&program, Vec::<String>::new())
        .dir(source.path())
        .env("DEPLOYMENT_SOURCE", source.path())
        .env("DEPLOYMENT_TARGET", output.path())
        .env("DEPLOYMENT_TEMP", temp.path())
        .env("NEXT_MANIFEST_PATH", &next)
        .env("PREVIOUS_MANIFEST_PATH", &previous)
        .env("SCM_COMMIT_ID", &commit.info.id)
        .env("PYTHON_RUNTIME", &command.runtime.runtime)
        .env("PYTHON_EXE", &command.runtime.interpreter.path);
    if let Err(e) = runner.run(report, &command.path, expr) {
        let _ = remove_file_if_there(&next);
        return Err(e);
    }
    Ok(Staged {
        output,
        owned,
        _source: source,
        next,
        previous,
    })
}

impl Staged {
    /// The sync plan from the output, and the manifest the deployment
    /// records when it succeeds (with the list of the output's files,
    /// written now under a fresh name).
    pub fn plan(
        &self,
        base: Manifest,
        state_dir: &Path,
        site: &Path,
    ) -> Result<(sync::SyncPlan, Manifest)> {
        let (plan, paths) = sync::plan_output(self.output.path(), &self.owned, site)?;
        let name = format!("{LIST_PREFIX}{}.json", crate::site_dir::unique());
        write_atomic(&state_dir.join(&name), &serde_json::to_vec(&paths)?)?;
        let manifest = Manifest {
            after_command: Some(base.commit.clone()),
            command_files: Some(name),
            ..base
        };
        Ok((plan, manifest))
    }

    /// After the deployment succeeded: the manifest the script wrote
    /// becomes the previous one.
    pub fn finish(self) -> Result<()> {
        if self.next.exists() {
            fs_err::rename(&self.next, &self.previous)?;
        }
        Ok(())
    }
}

/// Removes the next manifest a failed command deployment's script wrote.
pub fn discard(staged: Staged) {
    let _ = remove_file_if_there(&staged.next);
}

/// The list of files a command deployment left in the site, when `manifest`
/// is such a deployment's and its list is there.
pub fn owned_list(state_dir: &Path, manifest: &Manifest) -> Option<Vec<String>> {
    let name = manifest.command_files.as_ref()?;
    let bytes = std::fs::read(state_dir.join(name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The files pushdeploy deployed into the site: the last command
/// deployment's list, or the deployed commit's files.
fn owned(state_dir: &Path, site: &Path, commit: &Commit) -> Result<BTreeSet<String>> {
    let Some(manifest) = manifest::Store::new(state_dir).load(site)? else {
        return Ok(BTreeSet::new());
    };
    if let Some(list) = owned_list(state_dir, &manifest) {
        return Ok(list.into_iter().collect());
    }
    Ok(
        match commit.sibling(&manifest.commit, manifest.project.as_deref()) {
            Ok(deployed) => deployed.entries()?.0.into_iter().map(|e| e.path).collect(),
            Err(_) => BTreeSet::new(),
        },
    )
}

/// Removes the file lists that the deployed manifest does not name (left
/// by deployments that failed, were killed, or were followed by others).
/// Called under the lock.
pub fn sweep_lists(state_dir: &Path, site: &Path) {
    let keep = manifest::Store::new(state_dir)
        .load(site)
        .ok()
        .flatten()
        .and_then(|m| m.command_files);
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(LIST_PREFIX) && Some(&name) != keep.as_ref() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
