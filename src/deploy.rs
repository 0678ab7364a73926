//! One deployment, from a revision to a finished record: lock, plan, sync,
//! env, packages, record. Used by the hook, `deploy` and `redeploy`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use git2::Repository;

use crate::commit::Commit;
use crate::commit::short_id;
use crate::env::{self, Decision};
use crate::error::Failure;
use crate::lock::Lock;
use crate::packages;
use std::path::Path;

use crate::exact;
use crate::framework;
use crate::installed::{self, PipDecision};
use crate::lockfile;
use crate::plan::{self, Framework, Plan, Python, runtime_line};
use crate::record::{Records, Status, Trigger, now};
use crate::report::{Report, seconds_text};
use crate::settings::Settings;
use crate::sync;
use crate::tools;

/// What to deploy, and how.
#[derive(Debug, Clone)]
pub struct Job {
    /// A revision; `None` means the deployment branch's head.
    pub rev: Option<String>,
    /// The ref to name in the output and the record; default: `rev`.
    pub ref_name: Option<String>,
    pub trigger: Trigger,
    pub dry_run: bool,
    pub json: bool,
}

fn branch_ref(settings: &Settings) -> String {
    format!("refs/heads/{}", settings.branch)
}

/// Checks the site before anything is written: it must be a directory.
fn check_site(settings: &Settings) -> Result<()> {
    let site = &settings.site;
    match std::fs::metadata(site) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => bail!("site {}: is not a directory", site.display()),
        Err(_) => bail!(
            "site {}: does not exist; create it, or run `pushdeploy init <repository> --site {}`",
            site.display(),
            site.display()
        ),
    }
}

/// Runs a deployment (or, with `dry_run`, prints its plan).
pub fn run(settings: &Settings, repo: &Repository, job: &Job, report: &mut Report) -> Result<()> {
    let rev = job.rev.clone().unwrap_or_else(|| branch_ref(settings));
    let ref_name = job.ref_name.clone().unwrap_or_else(|| rev.clone());
    if job.dry_run {
        return dry_run(settings, repo, &rev, &ref_name, job.json, report);
    }
    let first = Commit::open(repo, &rev)?;
    let _lock = Lock::acquire(
        &settings.state_dir,
        &format!(
            "deployment {} (pid {})",
            first.info.short,
            std::process::id()
        ),
        report,
    )?;
    // Temp files of writes that a killed deployment left behind.
    for dir in [
        settings.state_dir.clone(),
        settings.state_dir.join("deployments"),
    ] {
        crate::files::remove_state_temp_files(&dir, crate::files::ATOMIC_TEMP_PREFIX)?;
    }
    let records = Records::new(&settings.state_dir);
    if let Some(stale) = records.close_unfinished()? {
        report.header(format!(
            "Deployment {} (#{}) did not finish; its record is marked failed",
            short_id(&stale.id.to_string()),
            stale.seq
        ));
    }
    // A sync that a killed deployment left unfinished: its files are put back.
    if let Some(recovered) = sync::recover(repo, &settings.state_dir, &settings.site)? {
        report.header(recovered.to_string());
    }
    // Pushes that waited for the lock deploy the branch as it is now, so the
    // last one to run leaves the site at the branch's head.
    let mut commit = first;
    if job.trigger == Trigger::Push {
        let head = Commit::open(repo, &branch_ref(settings))?;
        if head.info.id != commit.info.id {
            report.header(format!(
                "{} moved on to {} while waiting; deploying that",
                ref_name, head.info.short
            ));
            commit = head;
        }
    }
    let mut record = records.start(&commit.info, &ref_name, job.trigger)?;
    let started = Instant::now();
    report.header(format!(
        "Deploying {} ({}) to {}",
        commit.info.short,
        ref_name,
        settings.site.display()
    ));
    let short = commit.info.short.clone();
    let result = execute(settings, commit, &ref_name, report);
    let elapsed = seconds_text(started.elapsed().as_secs_f64());
    match &result {
        Ok(()) => report.header(format!("Deployment {} successful in {elapsed}", short)),
        Err(e) => {
            let step = report.current.clone().unwrap_or_else(|| "plan".into());
            report.header(format!(
                "Deployment {} failed in step {step} after {elapsed}: {e:#}",
                short
            ));
        }
    }
    record.status = if result.is_ok() {
        Status::Success
    } else {
        Status::Failed
    };
    record.error = result.as_ref().err().map(|e| format!("{e:#}"));
    record.finished = Some(now());
    record.seconds = Some(started.elapsed().as_secs_f64());
    record.steps = report.steps.clone();
    record.log = report.log.clone();
    records.save(&record)?;
    result.map_err(|_| Failure.into())
}

fn dry_run(
    settings: &Settings,
    repo: &Repository,
    rev: &str,
    ref_name: &str,
    json: bool,
    report: &mut Report,
) -> Result<()> {
    let commit = Commit::open(repo, rev)?;
    check_site(settings)?;
    let (values, commit) = plan::prepare(settings, commit)?;
    let plan = Plan::build(settings, &values, &commit, ref_name, true)?;
    if json {
        let mut out = std::io::stdout().lock();
        std::io::Write::write_all(
            &mut out,
            crate::error::json_printable(&format!("{}\n", serde_json::to_string_pretty(&plan)?))
                .as_bytes(),
        )?;
    } else {
        report.header(format!(
            "Plan for {} ({}) to {} (dry run: nothing changes)",
            commit.info.short,
            ref_name,
            settings.site.display()
        ));
        for line in plan.lines() {
            report.detail(line);
        }
    }
    match &plan.sync {
        Some(sync) => sync.check_refused(),
        None => Ok(()),
    }
}

fn execute(settings: &Settings, commit: Commit, ref_name: &str, report: &mut Report) -> Result<()> {
    check_site(settings)?;
    let (values, commit) = plan::prepare(settings, commit)?;
    let plan = Plan::build(settings, &values, &commit, ref_name, false)?;
    for refused in &plan.refused_app_settings {
        report.header(refused.to_string());
    }
    report.extra_env = plan.app_settings.clone();
    let mut journal = None;
    if let Some(sync) = &plan.sync {
        report.step(
            "sync",
            format!("Syncing files: {}", sync.summary()),
            |report| {
                for line in sync.details() {
                    report.detail(line);
                }
                journal = Some(sync::run(
                    sync,
                    &commit,
                    &plan.manifest(),
                    &settings.state_dir,
                )?);
                Ok(())
            },
        )?;
    }
    // The files stay the new commit's only if every later step succeeds.
    let result = after_sync(&plan, &commit, settings, report);
    match (journal, &result) {
        (Some(journal), Ok(())) => journal.finish()?,
        (Some(journal), Err(_)) => {
            let started = Instant::now();
            let rollback = journal.rollback()?;
            let took = seconds_text(started.elapsed().as_secs_f64());
            report.header(format!("{rollback}, in {took}"));
        }
        (None, _) => {}
    }
    result
}

fn after_sync(
    plan: &Plan,
    commit: &Commit,
    settings: &Settings,
    report: &mut Report,
) -> Result<()> {
    let site = &settings.site;
    if let Some(command) = &plan.command {
        sync::note_command(&settings.state_dir, site, &commit.info.id)?;
        report.step(
            "command",
            format!("Running {} (from .deployment)", command.path),
            |r| crate::command::run(command, commit, site, &settings.state_dir, r),
        )?;
    }
    python_steps(plan, settings, report)?;
    match &plan.framework {
        Framework::Collectstatic if framework::django_installed(site) => report.step(
            "collectstatic",
            "python manage.py collectstatic --noinput --clear",
            |r| framework::collectstatic(site, r),
        )?,
        Framework::Collectstatic => {
            report.header("Django is not installed in env/: collectstatic skipped")
        }
        Framework::Skip { .. } => {}
    }
    // postDeploy is the server's command: no app setting of the commit
    // reaches it (a `PATH` could choose which program its name runs).
    report.extra_env.clear();
    if let Some(words) = &plan.post_deploy {
        report.step(
            "postDeploy",
            format!("postDeploy: {}", shell_words::join(words)),
            |r| r.run("postDeploy", duct::cmd(&words[0], &words[1..]).dir(site)),
        )?;
    }
    Ok(())
}

fn python_steps(plan: &Plan, settings: &Settings, report: &mut Report) -> Result<()> {
    let site = &settings.site;
    let (runtime, decision, installer, pip, fingerprint, lock, notes, keep_unneeded) =
        match &plan.python {
            Python::Run {
                runtime,
                env,
                installer,
                pip,
                fingerprint,
                lock,
                notes,
                keep_unneeded,
                ..
            } => (
                runtime,
                env,
                installer,
                pip,
                fingerprint,
                lock,
                notes,
                keep_unneeded,
            ),
            Python::Skip { reason } => {
                report.header(format!("Python steps skipped: {reason}"));
                return Ok(());
            }
        };
    // An env directory that a killed build left, whatever this deployment does.
    report.current = Some("env".into());
    env::remove_stale(site)?;
    report.current = None;
    let store = installed::Store::new(&settings.state_dir);
    for note in notes {
        report.header(note);
    }
    let step = match lock {
        Some(lock) => lock.step(),
        None => installer.name(),
    };
    let command = match (lock, installer.uv()) {
        (Some(lock), _) => lock.command(installer),
        (None, Some(uv)) => format!("{} pip install -r requirements.txt", uv.display()),
        (None, None) => "pip install -r requirements.txt".to_string(),
    };
    let install = |env: &Path, r: &mut Report| match lock {
        Some(lock) => lockfile::install(lock, installer, settings, runtime, env, r),
        None => {
            packages::install(installer, env, site, r)?;
            let fresh = matches!(decision, Decision::Create { .. });
            exact::tidy(installer, env, settings, keep_unneeded.as_deref(), fresh, r)
        }
    };
    // Records what the install depended on, with the env as it is now.
    let remember = |env: &Path| {
        store.installed(
            fingerprint.as_ref(),
            env,
            runtime.interpreter.version,
            &plan.commit.id,
        )
    };
    // The tool that installs the lock, installed first when it is missing.
    let lock_tool = lock.as_ref().and_then(|l| l.tool.as_ref());
    if let Some(tool) = lock_tool
        && tool.found == tools::Found::ToInstall
    {
        report.step(
            "tool",
            format!("Installing {} {}", tool.name.command(), tool.version),
            |r| tools::ensure(tool, settings, &runtime.interpreter.path, r),
        )?;
    }
    // An env for uv.lock or poetry.lock is made by Python's venv: `uv sync`
    // would take the pip of an env made by `uv venv` for an extra package
    // and remove it.
    let uv = match lock_tool {
        Some(_) => None,
        None => installer.uv(),
    };
    report.header(runtime_line(runtime));
    match decision {
        Decision::Reuse => {
            report.header(format!(
                "Found compatible virtual environment env/ ({})",
                runtime.runtime
            ));
            let reason = match (lock, pip) {
                (Some(lock), PipDecision::Skip { .. }) => {
                    report.header(format!("{step} skipped: {}", lock.reason));
                    return Ok(());
                }
                (None, PipDecision::Skip { .. }) => {
                    report.header(format!("{step} skipped: {pip}"));
                    return Ok(());
                }
                (Some(lock), PipDecision::Run { .. }) => lock.reason.clone(),
                (None, PipDecision::Run { reason }) => reason.to_string(),
            };
            let env = site.join("env");
            let result = report.step(step, format!("{command} ({reason})"), |r| {
                store.started(&plan.commit.id)?;
                install(&env, r)?;
                remember(&env)
            });
            if result.is_err() {
                store.failed(&plan.commit.id)?;
            }
            result
        }
        Decision::Create { message, .. } => {
            let header = format!(
                "Creating virtual environment env/ with {}: {message}",
                runtime.runtime
            );
            let new_env = report.step("env", header, |r| {
                env::build(site, runtime, &settings.cache_dir.join("seeds"), uv, r)
            })?;
            let installed = report.step(step, format!("{command} (into the new env)"), |r| {
                install(&new_env, r)
            });
            if let Err(e) = installed {
                // The old env stays in place, untouched.
                let _ = fs_err::remove_dir_all(&new_env);
                return Err(e);
            }
            report
                .step(
                    "switch",
                    "Switching env/ to the new virtual environment",
                    |_| {
                        env::switch(site, &new_env)?;
                        remember(&site.join("env"))
                    },
                )
                .context("switching env")
        }
    }
}
