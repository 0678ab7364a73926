//! `.deployment`'s `command`: a script of the commit that deploys instead of
//! the built-in steps (Kudu's "customize the deployment script"). It gets a
//! checkout of the whole commit and Kudu's variables, and is executed
//! directly, never through a shell.

use std::path::Path;

use anyhow::{Context, Result};

use crate::commit::Commit;
use crate::plan::CustomCommand;
use crate::report::Report;
use crate::sync;

/// Runs the command; its output streams to the pusher, its exit status decides.
pub fn run(
    command: &CustomCommand,
    commit: &Commit,
    site: &Path,
    state_dir: &Path,
    report: &mut Report,
) -> Result<()> {
    // Kept in the state dir: pushdeploy's own place, never the site.
    let work = state_dir.join("tmp");
    fs_err::create_dir_all(&work)?;
    let source = tempfile::Builder::new()
        .prefix("source-")
        .tempdir_in(&work)?;
    let temp = tempfile::Builder::new().prefix("temp-").tempdir_in(&work)?;
    sync::checkout(commit, source.path()).context("writing the checkout for the command")?;
    let previous = state_dir.join("command-manifest.txt");
    let next = state_dir.join("command-manifest.next.txt");
    let program = source.path().join(&command.path);
    let expr = duct::cmd(&program, Vec::<String>::new())
        .dir(source.path())
        .env("DEPLOYMENT_SOURCE", source.path())
        .env("DEPLOYMENT_TARGET", site)
        .env("DEPLOYMENT_TEMP", temp.path())
        .env("NEXT_MANIFEST_PATH", &next)
        .env("PREVIOUS_MANIFEST_PATH", &previous)
        .env("SCM_COMMIT_ID", &commit.info.id)
        .env("PYTHON_RUNTIME", &command.runtime.runtime)
        .env("PYTHON_EXE", &command.runtime.interpreter.path);
    report.run(&command.path, expr)?;
    // The manifest the command wrote becomes the previous one for the next run.
    if next.exists() {
        fs_err::rename(&next, &previous)?;
    }
    Ok(())
}
