//! One deployment, from a revision to a finished record, as a transaction:
//! lock (and put back what a killed deployment left), plan, prepare aside
//! (the env and its packages, before any file of the site changes), switch
//! (files through the sync's journal, then `env` in one rename), the steps
//! after the switch (collectstatic, `POST_BUILD_COMMAND`, `postDeploy`, the
//! health check), and either finish or roll back. Used by the hook, `deploy`
//! and `redeploy`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use git2::Repository;
use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::commit::short_id;
use crate::env::{self, Decision, Reason};
use crate::error::Failure;
use crate::exact;
use crate::files::{remove_file_if_there, write_atomic};
use crate::framework;
use crate::health::{self, HealthCheck};
use crate::installed::{self, Fingerprint, PipDecision};
use crate::lock::Lock;
use crate::lockfile;
use crate::manifest;
use crate::packages::{self, Installer};
use crate::plan::{self, Deploy, Framework, Plan, Python, runtime_line};
use crate::process::{Limits, Runner};
use crate::processes::Launch;
use crate::record::{Records, Status, Trigger, now};
use crate::report::{Report, seconds_text};
use crate::runtime::Version;
use crate::settings::{POST_DEPLOY, Settings};
use crate::sync::{self, Journal, Recovered};
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
    let lock = Lock::acquire(
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
    recover(settings, repo, report)?;
    crate::command::sweep_lists(&settings.state_dir, &settings.site);
    crate::init::claim_site(&settings.site, repo, &settings.state_dir, report);
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
    let mut finished = false;
    let mut app = None;
    let ending = execute(
        settings,
        repo,
        commit,
        &ref_name,
        &mut finished,
        &mut app,
        report,
    );
    let elapsed = seconds_text(started.elapsed().as_secs_f64());
    let step = report.current.clone().unwrap_or_else(|| "plan".into());
    let (status, error) = match &ending {
        Ending::Success => {
            let warned = match report.warnings.len() {
                0 => String::new(),
                1 => ", with a warning (above)".to_string(),
                n => format!(", with {n} warnings (above)"),
            };
            report.header(format!(
                "Deployment {short} successful in {elapsed}{warned}"
            ));
            (Status::Success, None)
        }
        Ending::Failed(e) => {
            report.header(format!(
                "Deployment {short} failed in step {step} after {elapsed}: {e:#}; {}",
                still_runs(settings)
            ));
            (Status::Failed, Some(format!("{e:#}")))
        }
        Ending::RolledBack { error, to, back } => {
            let line = match back {
                Ok(()) => format!(
                    "Deployment {short} failed in step {step} after {elapsed}: {error:#}; rolled back to {to}"
                ),
                Err(why) => format!(
                    "Deployment {short} failed in step {step} after {elapsed}: {error:#}; rolled back to {to}, but the site may be down: {why:#}"
                ),
            };
            report.header(&line);
            (Status::RolledBack, Some(line))
        }
    };
    record.status = status;
    record.error = error;
    record.finished = Some(now());
    record.seconds = Some(started.elapsed().as_secs_f64());
    record.app = app;
    report.fill(&mut record);
    records.save(&record)?;
    match ending {
        Ending::Success => {
            // The record says success and nothing is left to finish: the
            // note that let a recovery finish the deployment (and mark its
            // record) has served.
            if finished {
                let _ = Switch::remove(&settings.state_dir);
                remove_old_envs(settings, job.trigger, lock, report);
            }
            Ok(())
        }
        _ => Err(Failure.into()),
    }
}

/// How a deployment ended.
enum Ending {
    Success,
    /// Failed before the site changed.
    Failed(anyhow::Error),
    /// Failed after the switch began, and put back to `to`; `back` says
    /// whether the old version was confirmed running again.
    RolledBack {
        error: anyhow::Error,
        to: String,
        back: Result<()>,
    },
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
    let killed = killed_outlook(settings);
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
        for line in &killed {
            report.header(line);
        }
        for line in plan.lines() {
            report.detail(line);
        }
        if crate::processes::enabled(settings, repo) {
            let launch = Launch::new(settings, &values, &plan.app, plan.step_app_settings(), repo);
            report.detail(launch.line(plan.health_check.is_none()));
        }
    }
    match &plan.deploy {
        Deploy::Sync(sync) => sync.check_refused(),
        Deploy::Command(_) => Ok(()),
    }
}

/// What the next deployment will put back or finish of a killed one before
/// it plans, as the dry run says it (the dry run changes nothing). Empty
/// while a deployment holds the lock: its journal is not a killed one's.
fn killed_outlook(settings: &Settings) -> Vec<String> {
    let state_dir = &settings.state_dir;
    if crate::lock::is_held(state_dir) {
        return Vec::new();
    }
    let mut lines = Vec::new();
    for what in crate::process::left_behind(state_dir) {
        lines.push(format!(
            "{what} was left running by a deployment that was killed: the deployment kills it first"
        ));
    }
    let switch = Switch::load(state_dir);
    let stood = switch.as_ref().is_some_and(|s| s.stood);
    let env_switched = switch
        .as_ref()
        .and_then(|s| s.built_id)
        .is_some_and(|id| env::is_live(&settings.site, id));
    match crate::journal::outlook(state_dir) {
        _ if stood => lines.push(
            "A deployment that succeeded was stopped while it cleaned up: the deployment finishes its cleanup first".into(),
        ),
        Some(crate::journal::Outlook::Finish) => lines.push(
            "A deployment that succeeded was stopped while it cleaned up: the deployment finishes its cleanup first".into(),
        ),
        Some(crate::journal::Outlook::Undo { changes, .. }) => lines.push(format!(
            "A deployment was killed after it began to change the site: the deployment first puts back the last good deployment ({changes} file change(s) undone{}), then runs its postDeploy and health check again; the file counts below are planned from the site as it will be then",
            if env_switched {
                ", env/ switched back"
            } else {
                ""
            }
        )),
        None if switch.as_ref().is_some_and(|s| s.switched) => lines.push(
            "A deployment was killed after it began to change the site: the deployment first puts back the last good deployment's env, then runs its postDeploy and health check again".into(),
        ),
        None => {}
    }
    lines
}

/// What a deployment changed beside the files (which the sync's journal
/// keeps), recorded in the state dir until it finishes or is put back, so
/// that the next deployment can put back what a killed one changed.
///
/// Each field is written before what it announces is done, never after, so
/// that the note cannot lag behind the disk; what the disk itself says (the
/// journal, where `env` is) decides the rest. `stood` is the commit point.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Switch {
    /// The env directory this deployment built or copied aside: `env` and it
    /// exchange names at the switch.
    built: Option<PathBuf>,
    /// Its identity, which the renames keep: `env` is the new env exactly
    /// when it has this identity (see [`env::is_live`]).
    #[serde(default)]
    built_id: Option<env::DirId>,
    /// The file switch began: `postDeploy` must run again after putting back.
    switched: bool,
    /// collectstatic of the new version ran: the old version's runs again.
    collectstatic: bool,
    /// The commit point: every step succeeded with the new files and the
    /// new env in place. Written before anything is finished; from here the
    /// deployment stands, and a recovery finishes it instead of putting back.
    #[serde(default)]
    stood: bool,
    /// What the install depended on, for the installer's record, when it ran.
    #[serde(default)]
    packages: Option<(Option<Fingerprint>, Version, String)>,
}

fn switch_file(state_dir: &Path) -> PathBuf {
    state_dir.join("switch.json")
}

impl Switch {
    fn save(&self, state_dir: &Path) -> Result<()> {
        write_atomic(&switch_file(state_dir), &serde_json::to_vec(self)?)
    }

    fn load(state_dir: &Path) -> Option<Switch> {
        let bytes = std::fs::read(switch_file(state_dir)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn remove(state_dir: &Path) -> Result<()> {
        remove_file_if_there(&switch_file(state_dir))
    }
}

/// Puts back what a killed deployment changed, or finishes it when it had
/// passed its commit point, decided from the disk: the sync's journal, the
/// note's commit point, and whether `env` is the env it built. Then marks
/// its record (`running` while it ran) as what it now is: success when it
/// stands, rolled back when something was put back, else failed. Called
/// with the lock held (by a deployment and by `env delete`), before anything
/// changes.
pub fn recover(settings: &Settings, repo: &Repository, report: &mut Report) -> Result<()> {
    let state_dir = &settings.state_dir;
    let outcome = recover_site(settings, repo, report)?;
    let records = Records::new(state_dir);
    if let Some(mut stale) = records.unfinished()? {
        match outcome {
            Outcome::Stood => {
                stale.status = Status::Success;
                stale.error = Some(format!(
                    "the process (pid {}) ended while it cleaned up after succeeding; the next one finished the cleanup",
                    stale.pid
                ));
            }
            Outcome::PutBack => stale.status = Status::RolledBack,
            Outcome::Unchanged => {}
        }
        records.save(&stale)?;
        report.header(format!(
            "Deployment {} (#{}) did not finish; its record is marked {}",
            short_id(&stale.id.to_string()),
            stale.seq,
            stale.status
        ));
    }
    // The record tells it now: the note has served.
    Switch::remove(state_dir)
}

/// What a recovery found a killed deployment had done.
enum Outcome {
    /// Nothing of the site had changed.
    Unchanged,
    /// It had begun to change the site, and was put back.
    PutBack,
    /// It had passed its commit point: it was finished, and stands.
    Stood,
}

fn recover_site(settings: &Settings, repo: &Repository, report: &mut Report) -> Result<Outcome> {
    let site = &settings.site;
    let state_dir = &settings.state_dir;
    // What a killed command deployment or install left in pushdeploy's own place.
    let _ = fs_err::remove_dir_all(state_dir.join("tmp"));
    let switch = Switch::load(state_dir);
    if let Some(built) = switch.as_ref().and_then(|s| s.built.as_deref()) {
        env::complete_exchange(site, built)?;
    }
    let stood = switch.as_ref().is_some_and(|s| s.stood);
    let files = if stood {
        crate::journal::recover_stood(repo, state_dir, site)?
    } else {
        sync::recover(repo, state_dir, site)?
    };
    if stood || matches!(files, Some(Recovered::Finished)) {
        // It had succeeded: only its cleanup was left.
        report.header(Recovered::Finished.to_string());
        if let Some(switch) = &switch {
            finish_after_stood(settings, switch)?;
        }
        return Ok(Outcome::Stood);
    }
    let switch = switch.unwrap_or_default();
    let env_switched = switch.built_id.is_some_and(|id| env::is_live(site, id));
    if files.is_none() && !switch.switched && !env_switched {
        discard_built(site, &switch)?;
        return Ok(Outcome::Unchanged);
    }
    report.header("A deployment was killed after it began to change the site: putting back the last good deployment");
    if let Some(recovered) = &files {
        report.detail(recovered.to_string());
    }
    put_back_env(site, &switch, report)?;
    let runner = old_version_runner(settings, repo);
    if let Err(e) = run_old_version(settings, repo, &switch, &runner, report) {
        report.header(format!(
            "The last good deployment's files and env are back, but the site may be down: {e:#}"
        ));
    }
    Ok(Outcome::PutBack)
}

fn execute(
    settings: &Settings,
    repo: &Repository,
    commit: Commit,
    ref_name: &str,
    finished: &mut bool,
    app: &mut Option<crate::app::App>,
    report: &mut Report,
) -> Ending {
    // The deployment's time limit counts from here: the plan's programs too.
    let started = std::time::Instant::now();
    let planned = timed(report, "plan", |_| {
        check_site(settings)?;
        let (values, commit) = plan::prepare(settings, commit)?;
        let plan = Plan::build(settings, &values, &commit, ref_name, false)?;
        let runner = Runner::new(
            os_pairs(&plan.step_app_settings()),
            Limits::from_values(&values),
            Some(&settings.state_dir),
        )
        .started_at(started);
        runner.check_deadline()?;
        // `deploy.run`: pushdeploy runs the app, and reloads it after the switch.
        let launch = crate::processes::enabled(settings, repo).then(|| {
            crate::processes::Launch::new(
                settings,
                &values,
                &plan.app,
                plan.step_app_settings(),
                repo,
            )
        });
        anyhow::Ok((commit, plan, runner, launch))
    });
    let (commit, plan, runner, launch) = match planned {
        Ok(planned) => planned,
        Err(e) => return Ending::Failed(e),
    };
    for refused in &plan.refused_app_settings {
        report.header(refused.to_string());
    }
    // What runs, decided now; the record keeps it.
    report.header(plan.app.line());
    *app = Some(plan.app.clone());
    let site = &settings.site;
    let state_dir = &settings.state_dir;
    let sync_plan = match &plan.deploy {
        Deploy::Sync(sync) => sync,
        Deploy::Command(command) => {
            return run_command(
                &plan,
                command,
                &commit,
                settings,
                repo,
                &runner,
                launch.as_ref(),
                finished,
                report,
            );
        }
    };
    let mut switch = Switch::default();
    sweep_envs(settings, report);
    // 1. Prepare aside: nothing of the site changes.
    let prepared = match prepare(&plan, settings, &commit, &runner, report) {
        Ok(prepared) => prepared,
        Err(e) => return Ending::Failed(e),
    };
    switch.built = prepared.as_ref().map(|p| p.dir.clone());
    switch.built_id = switch.built.as_deref().and_then(env::id);
    // 2. Switch, and 3. the steps after it.
    let mut journal = None;
    let result = switch_and_after(
        &plan,
        sync_plan,
        &commit,
        settings,
        prepared.as_ref(),
        &runner,
        launch.as_ref(),
        &mut switch,
        &mut journal,
        report,
    );
    // The commit point: once it is written, the deployment stands.
    let result = result.and_then(|()| {
        if let Python::Run {
            pip: PipDecision::Run { .. },
            fingerprint,
            runtime,
            ..
        } = &plan.python
        {
            switch.packages = Some((
                fingerprint.clone(),
                runtime.interpreter.version,
                plan.commit.id.clone(),
            ));
        }
        switch.stood = true;
        switch.save(state_dir).map_err(|e| {
            switch.stood = false;
            e.context("recording that the deployment succeeded")
        })
    });
    let env_switched = switch.built_id.is_some_and(|id| env::is_live(site, id));
    match result {
        Ok(()) => {
            *finished = timed(report, "finish", |r| finish(settings, journal, &switch, r));
            Ending::Success
        }
        Err(error) if !switch.switched || (journal.is_none() && !env_switched) => {
            // Nothing of the site changed (a failed sync puts back its own part).
            let _ = discard_built(site, &switch);
            let _ = Switch::remove(state_dir);
            Ending::Failed(error)
        }
        Err(error) => {
            let to = rolled_back_to(settings);
            let step = report.current.clone();
            let back = roll_back(settings, repo, journal, &switch, report);
            report.current = step;
            Ending::RolledBack { error, to, back }
        }
    }
}

/// The env prepared aside, and how its packages go in.
struct Prepared {
    dir: PathBuf,
    installer: Installer,
    /// Installed after the file switch, from the site: the requirements
    /// name files of the site (a local path, an editable install), and why.
    from_site: Option<String>,
    /// The Python version changes: a graceful reload is not enough.
    new_python: Option<(String, String)>,
}

/// Builds a new env or copies the live one aside, and installs the commit's
/// requirements into it, from the commit's own files. Nothing of the site
/// changes; `None` when the live env stays as it is.
fn prepare(
    plan: &Plan,
    settings: &Settings,
    commit: &Commit,
    runner: &Runner,
    report: &mut Report,
) -> Result<Option<Prepared>> {
    let site = &settings.site;
    let (runtime, decision, installer, pip, lock, notes) = match &plan.python {
        Python::Run {
            runtime,
            env,
            installer,
            pip,
            lock,
            notes,
            ..
        } => (runtime, env, installer, pip, lock, notes),
        Python::Skip { reason } => {
            report.header(format!("Python steps skipped: {reason}"));
            return Ok(None);
        }
    };
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
    // The tool that installs the lock (or uv as the installer), installed
    // first when it is missing.
    let lock_tool = lock.as_ref().and_then(|l| l.tool.as_ref());
    if let Some(tool) = lock_tool.or(installer.tool())
        && tool.found == tools::Found::ToInstall
    {
        report.step(
            "tool",
            format!("Installing {} {}", tool.name.command(), tool.version),
            |r| tools::ensure(tool, settings, &runtime.interpreter.path, runner, r),
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
    let (dir, why, new_python) = match decision {
        Decision::Reuse => {
            report.header(format!(
                "Found compatible virtual environment env/ ({})",
                runtime.runtime
            ));
            if let Python::Run { git, .. } = &plan.python {
                for line in git {
                    report.detail(line.to_string());
                }
            }
            let reason = match (lock, pip) {
                (Some(lock), PipDecision::Skip { .. }) => {
                    report.header(format!("{step} skipped: {}", lock.reason));
                    return Ok(None);
                }
                (None, PipDecision::Skip { .. }) => {
                    report.header(format!("{step} skipped: {pip}"));
                    return Ok(None);
                }
                (Some(lock), PipDecision::Run { .. }) => lock.reason.clone(),
                (None, PipDecision::Run { reason }) => reason.to_string(),
            };
            let dir = report.step(
                "env",
                "Copying env/ aside for the install (unchanged package files linked: the live env is never written)",
                |_| env::copy_aside(site),
            )?;
            (dir, reason, None)
        }
        Decision::Create { message, reason } => {
            let header = format!(
                "Creating virtual environment env/ with {}: {message}",
                runtime.runtime
            );
            let dir = report.step("env", header, |r| {
                env::build(
                    site,
                    runtime,
                    &settings.cache_dir.join("seeds"),
                    uv,
                    runner,
                    r,
                )
            })?;
            let new_python = match reason {
                Reason::RuntimeChanged { from, to } => Some((from.clone(), to.clone())),
                _ => None,
            };
            (dir, "into the new env".to_string(), new_python)
        }
    };
    let mut prepared = Prepared {
        dir,
        installer: installer.clone(),
        from_site: None,
        new_python,
    };
    let app_settings = plan.step_app_settings();
    let context = installed::Context {
        env: &settings.env,
        app_settings: &app_settings,
        installer: installer.to_string(),
        site,
    };
    let requirements = installed::read_requirements(commit, &|name| context.var(name))?;
    // A line the requirements reader does not understand may name a file of
    // the site (a directory without ./): those install from the site too.
    let from_site = match (lock, &requirements.always, local_paths(&requirements)) {
        (Some(lock), _, _) => lock.needs_the_site(),
        (None, _, Some(line)) => Some(format!("requirements name a local path ({line})")),
        (None, Some(why), None) => Some(why.to_string()),
        (None, None, None) => None,
    };
    match from_site {
        None => {
            // The commit's own requirement files (or the lock and its
            // project file), in pushdeploy's own place.
            let work = settings.state_dir.join("tmp");
            let installed = (|| {
                fs_err::create_dir_all(&work)?;
                let dir = tempfile::Builder::new()
                    .prefix(if lock.is_some() {
                        "project-"
                    } else {
                        "requirements-"
                    })
                    .tempdir_in(&work)?;
                match lock {
                    Some(lock) => lockfile::write_project(lock.kind, commit, dir.path())?,
                    None => packages::write_requirements(&requirements, dir.path())?,
                }
                report.step(step, format!("{command} ({why})"), |r| {
                    install_into(plan, settings, &prepared.dir, dir.path(), runner, r)
                })
            })();
            if let Err(e) = installed {
                let _ = env::remove_dir(site, &prepared.dir);
                // The live env is untouched; the next deployment runs the
                // installer again, and its dry run says why.
                installed::Store::new(&settings.state_dir).failed(&plan.commit.id)?;
                return Err(e);
            }
        }
        Some(reason) => {
            report.header(format!(
                "{reason}: {step} installs from the site, after the file switch (the env is still prepared aside)"
            ));
            prepared.from_site = Some(why);
        }
    }
    Ok(Some(prepared))
}

/// Installs the commit's packages into the env at `env_dir`: a lock file
/// with its tool, or the requirements with pip or uv; `files` holds the
/// requirement files or the lock's project (a temp dir, or the site).
fn install_into(
    plan: &Plan,
    settings: &Settings,
    env_dir: &Path,
    files: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    if !matches!(plan.python, Python::Run { .. }) {
        return Ok(());
    }
    let before = env::dist_infos(env_dir);
    install_with(plan, settings, env_dir, files, runner, report)?;
    env::forget_replaced_bytecode(env_dir, &before)
}

/// `install_into`'s install: the lock's tool, or the requirements' installer.
fn install_with(
    plan: &Plan,
    settings: &Settings,
    env_dir: &Path,
    files: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    let Python::Run {
        installer,
        lock,
        runtime,
        fingerprint,
        git,
        ..
    } = &plan.python
    else {
        return Ok(());
    };
    match lock {
        Some(lock) => lockfile::install(
            lock, installer, settings, runtime, env_dir, files, runner, report,
        ),
        None => {
            // The versions these requirements got before, if they did.
            let versions = installed::Versions::new(&settings.state_dir);
            let pins = fingerprint
                .as_ref()
                .and_then(|fp| versions.recorded(fp, env_dir));
            // A git line's distribution at another commit than the line
            // names now: pip would keep it while its version is the same.
            let stale: Vec<&str> = git.iter().filter_map(|l| l.stale()).collect();
            packages::install(
                installer,
                env_dir,
                files,
                pins.as_ref(),
                &stale,
                runner,
                report,
            )?;
            match fingerprint {
                Some(fp) => {
                    versions.remember(fp, env_dir, &plan.commit.id, packages::versions(env_dir))
                }
                None => Ok(()),
            }
        }
    }
}

/// The first requirement line that names a file of the site, if any: such
/// requirements can only be installed from the site itself.
fn local_paths(requirements: &installed::Requirements) -> Option<String> {
    requirements.files.iter().find_map(|file| {
        String::from_utf8_lossy(&file.content)
            .lines()
            .find_map(|line| {
                let line = line.split(" #").next().unwrap_or("").trim();
                let local = line.starts_with("-e")
                    || line.starts_with("--editable")
                    || line.starts_with('.')
                    || line.starts_with('/')
                    || line.starts_with("file:")
                    || line.contains("@ file:");
                local.then(|| line.to_string())
            })
    })
}

#[expect(clippy::too_many_arguments, reason = "the parts of one transaction")]
fn switch_and_after<'r>(
    plan: &Plan,
    sync_plan: &sync::SyncPlan,
    commit: &Commit<'r>,
    settings: &Settings,
    prepared: Option<&Prepared>,
    runner: &Runner,
    launch: Option<&Launch>,
    switch: &mut Switch,
    journal: &mut Option<Journal<'r>>,
    report: &mut Report,
) -> Result<()> {
    let site = &settings.site;
    let state_dir = &settings.state_dir;
    runner.check_deadline()?;
    switch.switched = true;
    switch.save(state_dir)?;
    *journal = Some(report.step(
        "sync",
        format!("Syncing files: {}", sync_plan.summary()),
        |report| {
            for line in sync_plan.details() {
                report.detail(line);
            }
            sync::run(sync_plan, commit, &plan.manifest(), state_dir)
        },
    )?);
    if let Some(prepared) = prepared {
        if let Some(why) = &prepared.from_site {
            let (step, command) = match &plan.python {
                Python::Run {
                    lock: Some(lock), ..
                } => (lock.step(), lock.command(&prepared.installer)),
                _ => (
                    prepared.installer.name(),
                    format!("{} install -r requirements.txt", prepared.installer.name()),
                ),
            };
            report.step(step, format!("{command} ({why})"), |r| {
                install_into(plan, settings, &prepared.dir, site, runner, r)
            })?;
        }
        // What earlier requirements installed and these no longer need goes,
        // from the prepared env, reading the requirements in the site.
        if let Python::Run {
            lock: None,
            installer,
            keep_unneeded,
            env: decision,
            resolve,
            ..
        } = &plan.python
        {
            let fresh = matches!(decision, Decision::Create { .. });
            // It may run the env's Python: a step of the record, if no line.
            timed(report, "tidy", |report| {
                exact::tidy(
                    installer,
                    &prepared.dir,
                    settings,
                    keep_unneeded.as_deref(),
                    fresh,
                    resolve.as_ref(),
                    &plan.commit.id,
                    runner,
                    report,
                )
            })?;
        }
        // The note names the built env (and its identity) already: a kill
        // after this rename is read from the disk.
        report.step(
            "switch",
            "Switching env/ to the prepared virtual environment",
            |_| env::switch(site, &prepared.dir),
        )?;
        if let Some((from, to)) = &prepared.new_python {
            report.header(format!(
                "Python changes from {from} to {to}: the app server needs a full restart (a graceful reload keeps the old interpreter)"
            ));
        }
    }
    match &plan.framework {
        Framework::Collectstatic { strict } if framework::django_installed(site, runner)? => {
            switch.collectstatic = true;
            switch.save(state_dir)?;
            let ran = report.step(
                "collectstatic",
                "python manage.py collectstatic --noinput --clear",
                |r| framework::collectstatic(site, runner, r),
            );
            if let Err(error) = ran {
                framework::failed(error, *strict, runner, report)?;
            }
        }
        Framework::Collectstatic { .. } => {
            report.header("Django is not installed in env/: collectstatic skipped")
        }
        Framework::Skip { .. } => {}
    }
    after_the_build(plan, launch, site, runner, report)
}

/// `POST_BUILD_COMMAND`, then the app's `release:` and reload (when
/// pushdeploy runs it), `postDeploy` and the health check: what both kinds
/// of deployment run once their files are in the site.
fn after_the_build(
    plan: &Plan,
    launch: Option<&Launch>,
    site: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    if let Some(words) = &plan.post_build {
        report.step(
            "POST_BUILD_COMMAND",
            format!("POST_BUILD_COMMAND: {}", shell_words::join(words)),
            |r| post_build(words, site, runner, r),
        )?;
    }
    after_the_files(
        plan.post_deploy.as_deref(),
        plan.health_check.as_ref(),
        launch.map(|l| (l, true)),
        site,
        runner,
        report,
    )
}

/// The app's `release:` (when `release` is true: not again on a rollback)
/// and reload when pushdeploy runs it, then `postDeploy`, then the health
/// check (App Service's, on the app's port, when none is set and
/// pushdeploy runs a web process).
fn after_the_files(
    post_deploy: Option<&[String]>,
    health_check: Option<&HealthCheck>,
    launch: Option<(&Launch, bool)>,
    site: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    // postDeploy and the health check are the server's commands: no app
    // setting of the commit reaches them (a `PATH` could choose which
    // program a name runs). The app's processes get the app's environment
    // from their launch, whole.
    let runner = &runner.for_server();
    if let Some((launch, release)) = launch {
        if let Some(process) = launch.release().filter(|_| release) {
            report.step(
                "release",
                format!("release: {} (Procfile)", process.command),
                |r| launch.run_release(runner, r),
            )?;
        }
        report.step(
            "reload",
            "Reloading the app: the new version serves, the old one until it does",
            |r| launch.reload(runner, r),
        )?;
    }
    let app_check = launch
        .filter(|(l, _)| health_check.is_none() && l.web().is_some())
        .map(|(l, _)| health::for_app(l.url(), l.timeout));
    let health_check = health_check.or(app_check.as_ref());
    match post_deploy {
        Some(words) => report.step(
            "postDeploy",
            format!("postDeploy: {}", shell_words::join(words)),
            |r| {
                let expr = duct::cmd(&words[0], &words[1..]).dir(site);
                runner.run_leaving_server(r, "postDeploy", expr)
            },
        )?,
        None if health_check.is_some() && launch.is_none() => report.header(
            "No postDeploy: the app was not restarted, so the health check probes the version that was running",
        ),
        None => {}
    }
    if let Some(check) = health_check {
        report.step("healthCheck", format!("Health check: {check}"), |r| {
            health::run(check, site, runner, r)
        })?;
    }
    Ok(())
}

/// Oryx's `POST_BUILD_COMMAND`, in the site, with the env's `bin` first on PATH.
fn post_build(words: &[String], site: &Path, runner: &Runner, report: &mut Report) -> Result<()> {
    let mut path = OsString::from(site.join("env/bin"));
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    runner.run(
        report,
        "POST_BUILD_COMMAND",
        duct::cmd(&words[0], &words[1..])
            .dir(site)
            .env("PATH", path)
            .env("VIRTUAL_ENV", site.join("env")),
    )
}

/// After the commit point: the files' journal finished (the deployed commit
/// recorded, the kept old files gone), the installer's record, the replaced
/// env kept as the previous one (older ones go after the last line). The
/// deployment stands whatever happens here: what fails is said, and the
/// next deployment (or `env delete`) finishes it from the note.
/// Says whether all of it was done.
fn finish(
    settings: &Settings,
    journal: Option<Journal>,
    switch: &Switch,
    report: &mut Report,
) -> bool {
    let done = match journal {
        Some(journal) => journal.finish(),
        None => Ok(()),
    }
    .and_then(|()| finish_after_stood(settings, switch));
    if let Err(e) = &done {
        report.header(format!(
            "The deployment stands, but its cleanup did not finish ({e:#}): the next deployment finishes it"
        ));
    }
    done.is_ok()
}

/// The part of finishing that a recovery does again: each step can be done
/// twice.
fn finish_after_stood(settings: &Settings, switch: &Switch) -> Result<()> {
    if let Some((fingerprint, version, deployment)) = &switch.packages {
        installed::Store::new(&settings.state_dir).installed(
            fingerprint.as_ref(),
            &settings.site.join("env"),
            *version,
            deployment,
        )?;
    }
    finish_env(settings, switch)
}

/// The env that `env` replaced becomes the previous one (read from the
/// disk: what is at the built env's name now); older ones go after the
/// last line ([`remove_old_envs`]).
fn finish_env(settings: &Settings, switch: &Switch) -> Result<()> {
    let site = &settings.site;
    if let (Some(built), Some(id)) = (&switch.built, switch.built_id)
        && env::is_live(site, id)
    {
        let before: Vec<PathBuf> = env::replaced(site, built).into_iter().collect();
        env::set_previous(site, &settings.state_dir, &before)?;
    }
    Ok(())
}

/// After the last line: the env directories that are neither the live nor
/// the previous env go (a whole env takes a while to remove, and the
/// deployment does not need it gone), still under the lock, so that the
/// next deployment waits for it. After a push, a program of its own does
/// it, holding the lock handed over, with no output: the hook ends, and
/// `git push` returns without waiting for it. A manual deployment does it
/// itself. What is not removed now, the next deployment's sweep removes.
fn remove_old_envs(settings: &Settings, trigger: Trigger, lock: Lock, report: &mut Report) {
    if env::sweepable(&settings.site, &settings.state_dir).is_empty() {
        return;
    }
    if trigger == Trigger::Push {
        match hand_over_removal(settings, &lock) {
            Ok(()) => {
                // The lock is the remover's now: dropping it would unlock it.
                std::mem::forget(lock);
                return;
            }
            Err(e) => report.detail(format!(
                "could not start the removal of old envs in the background ({e:#}): removing them now"
            )),
        }
    }
    env::sweep(&settings.site, &settings.state_dir, report);
    drop(lock);
}

/// Starts `pushdeploy remove-old-envs` with the lock's descriptor, in the
/// background ([`crate::process::start_detached`]).
fn hand_over_removal(settings: &Settings, lock: &Lock) -> Result<()> {
    let fd = lock.inheritable()?;
    crate::process::start_detached(&[
        "remove-old-envs".into(),
        "--site".into(),
        settings.site.clone().into(),
        "--state-dir".into(),
        settings.state_dir.clone().into(),
        "--lock-fd".into(),
        fd.to_string().into(),
    ])
}

/// `pushdeploy remove-old-envs`: what [`hand_over_removal`] starts.
pub fn remove_old_envs_handed_over(site: &Path, state_dir: &Path, fd: i32) -> Result<()> {
    let lock = Lock::adopt(
        state_dir,
        fd,
        &format!("the removal of old envs (pid {})", std::process::id()),
    )?;
    let mut report = Report::new(Box::new(std::io::sink()));
    env::sweep(site, state_dir, &mut report);
    drop(lock);
    Ok(())
}

/// Runs `f` and keeps its time as the step `name` in the record, without a
/// line of its own: work between the steps that can take time (reading the
/// commit to plan, the cleanup after success), so that the record's steps
/// account for the deployment's whole time.
fn timed<T>(report: &mut Report, name: &str, f: impl FnOnce(&mut Report) -> T) -> T {
    let start = Instant::now();
    let first = report.steps.len();
    let result = f(report);
    // The steps within are counted once, as themselves.
    let within: f64 = report.steps[first..].iter().map(|s| s.seconds).sum();
    report.steps.push(crate::report::StepTime {
        step: name.to_string(),
        seconds: (start.elapsed().as_secs_f64() - within).max(0.0),
    });
    result
}

/// The old env directories in the site (the live and previous ones included).
fn env_dirs(site: &Path) -> usize {
    std::fs::read_dir(site).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(crate::sync::ENV_DIR_PREFIX)
            })
            .count()
    })
}

/// Removes env directories that are neither the live nor the previous env
/// (a whole env can take seconds): a step of its own, `cleanup`, with a
/// line that says how many went and how long it took, when any did.
fn sweep_envs(settings: &Settings, report: &mut Report) {
    let site = &settings.site;
    let before = env_dirs(site);
    let start = Instant::now();
    env::sweep(site, &settings.state_dir, report);
    let removed = before.saturating_sub(env_dirs(site));
    if removed > 0 {
        let seconds = start.elapsed().as_secs_f64();
        report.steps.push(crate::report::StepTime {
            step: "cleanup".into(),
            seconds,
        });
        report.header(format!(
            "Removed {removed} old env director{} in {}",
            if removed == 1 { "y" } else { "ies" },
            seconds_text(seconds)
        ));
    }
}

/// Removes the env this deployment prepared, if it is not `env` (decided by
/// its identity: after the switch, its name holds the env it replaced).
fn discard_built(site: &Path, switch: &Switch) -> Result<()> {
    if let (Some(dir), Some(id)) = (&switch.built, switch.built_id)
        && env::id(dir) == Some(id)
    {
        env::remove_dir(site, dir)?;
    }
    Ok(())
}

/// `env` back to the env it replaced, when it is the one this deployment
/// built (read from the disk, not from a note), and the built one removed.
fn put_back_env(site: &Path, switch: &Switch, report: &mut Report) -> Result<()> {
    if let (Some(built), Some(id)) = (&switch.built, switch.built_id)
        && env::unswitch(site, built, id)?
    {
        report.detail(if std::fs::symlink_metadata(site.join("env")).is_ok() {
            "env/ is the previous env again"
        } else {
            "env/ removed: there was none before"
        });
    }
    discard_built(site, switch)
}

/// Puts the files and the env back, then makes the old version run again.
fn roll_back(
    settings: &Settings,
    repo: &Repository,
    journal: Option<Journal>,
    switch: &Switch,
    report: &mut Report,
) -> Result<()> {
    let mut problems = Vec::new();
    // Timed as a step of its own ("restore"), which the benchmark reads.
    let _ = report.step(
        "restore",
        "Rolling back: putting back the last good deployment's files and env",
        |report| {
            if let Some(journal) = journal {
                match journal.rollback() {
                    Ok(back) => {
                        if !back.problems.is_empty() {
                            problems.push(format!("files: {}", back.problems.join("; ")));
                        }
                        report.detail(back.to_string());
                    }
                    Err(e) => problems.push(format!("files: {e:#}")),
                }
            }
            if let Err(e) = put_back_env(&settings.site, switch, report) {
                problems.push(format!("env: {e:#}"));
            }
            anyhow::Ok(())
        },
    );
    if problems.is_empty() {
        let _ = Switch::remove(&settings.state_dir);
    } else {
        bail!("{}", problems.join("; "));
    }
    let runner = old_version_runner(settings, repo);
    run_old_version(settings, repo, switch, &runner, report)
}

/// A runner with the app settings of the last successful deployment's
/// `.deployment`, and the whole deployment time again.
fn old_version_runner(settings: &Settings, repo: &Repository) -> Runner {
    let values = manifest::Store::new(&settings.state_dir)
        .load(&settings.site)
        .ok()
        .flatten()
        .and_then(|m| Commit::open(repo, &m.commit).ok())
        .and_then(|c| plan::prepare(settings, c).ok())
        .map(|(values, _)| values)
        .or_else(|| settings.for_commit(&Default::default()).ok());
    let (app, limits) = match &values {
        Some(values) => (values.app.clone(), Limits::from_values(values)),
        None => (Vec::new(), Limits::DEFAULT),
    };
    Runner::new(os_pairs(&app), limits, Some(&settings.state_dir))
}

/// The old version's collectstatic (when the new one's ran), `postDeploy`
/// and the health check again, so that the old version is what runs.
fn run_old_version(
    settings: &Settings,
    repo: &Repository,
    switch: &Switch,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    let site = &settings.site;
    if switch.collectstatic
        && site.join("manage.py").is_file()
        && framework::django_installed(site, runner)?
    {
        let ran = report.step(
            "collectstatic",
            "python manage.py collectstatic --noinput --clear (the previous version's, again)",
            |r| framework::collectstatic(site, runner, r),
        );
        // The old version may have deployed with its collectstatic failing
        // (a warning); a rollback has nothing to roll back to, so even with
        // strictCollectstatic its postDeploy and health check still run.
        if let Err(error) = ran {
            framework::failed(error, false, runner, report)?;
        }
    }
    // Server settings: the same whatever the commit.
    let values = settings.for_commit(&Default::default())?;
    let post_deploy = values.words(POST_DEPLOY).map(|(w, _)| w.to_vec());
    let health_check = health::from_values(&values)?;
    // The old version's processes, brought back the way the new ones came;
    // before the first deployment there is none: what the new one started stops.
    let launch = match crate::processes::enabled(settings, repo) && switch.switched {
        true => match crate::processes::Launch::for_deployed(settings, repo)? {
            Some(launch) => Some(launch),
            None => {
                crate::processes::stop_all(&settings.state_dir, report);
                None
            }
        },
        false => None,
    };
    if switch.switched {
        after_the_files(
            post_deploy.as_deref(),
            health_check.as_ref(),
            launch.as_ref().map(|l| (l, false)),
            site,
            runner,
            report,
        )?;
    }
    Ok(())
}

fn os_pairs(pairs: &[(String, String)]) -> Vec<(OsString, OsString)> {
    pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
}

/// A custom command builds into a staging copy (see [`crate::command`]);
/// its output is then synced into the site through the file journal, and
/// `POST_BUILD_COMMAND`, `postDeploy` and the health check follow. A
/// failure before the sync leaves the site untouched; after it, the files
/// are put back and the old version runs again, as for a built-in one.
#[expect(clippy::too_many_arguments, reason = "the parts of one transaction")]
fn run_command(
    plan: &Plan,
    command: &crate::command::CustomCommand,
    commit: &Commit,
    settings: &Settings,
    repo: &Repository,
    runner: &Runner,
    launch: Option<&Launch>,
    finished: &mut bool,
    report: &mut Report,
) -> Ending {
    let site = &settings.site;
    let state_dir = &settings.state_dir;
    let staged = match report.step(
        "command",
        format!("Running {} (from .deployment)", command.path),
        |r| crate::command::run(command, commit, site, state_dir, runner, r),
    ) {
        Ok(staged) => staged,
        Err(e) => {
            return Ending::Failed(
                e.context("the command built into a staging copy: the site was not changed"),
            );
        }
    };
    let switch = Switch {
        switched: true,
        ..Switch::default()
    };
    let mut journal = None;
    let result = (|| {
        runner.check_deadline()?;
        let (sync_plan, manifest) = staged.plan(plan.manifest(), state_dir, site)?;
        switch.save(state_dir)?;
        journal = Some(report.step(
            "sync",
            format!("Syncing the command's files: {}", sync_plan.summary()),
            |_| {
                sync::run_output(
                    &sync_plan,
                    commit,
                    staged.output.path(),
                    &manifest,
                    state_dir,
                )
            },
        )?);
        after_the_build(plan, launch, site, runner, report)?;
        // The commit point, as for a built-in deployment.
        Switch {
            stood: true,
            ..Switch::default()
        }
        .save(state_dir)
        .context("recording that the deployment succeeded")
    })();
    let ending = match result {
        Ok(()) => {
            let done = (|| {
                if let Some(journal) = journal {
                    journal.finish()?;
                }
                staged.finish()
            })();
            match done {
                Ok(()) => *finished = true,
                Err(e) => report.header(format!(
                    "The deployment stands, but its cleanup did not finish ({e:#}): the next deployment finishes it"
                )),
            }
            Ending::Success
        }
        Err(error) if journal.is_none() => {
            // A sync that failed half-way put back its own part.
            let _ = Switch::remove(state_dir);
            crate::command::discard(staged);
            Ending::Failed(error)
        }
        Err(error) => {
            crate::command::discard(staged);
            let to = rolled_back_to(settings);
            let step = report.current.clone();
            let back = roll_back(settings, repo, journal, &switch, report);
            report.current = step;
            Ending::RolledBack { error, to, back }
        }
    };
    crate::command::sweep_lists(state_dir, site);
    ending
}

/// What the site still runs after a deployment that failed before the
/// switch, for the last line: a user reading it over SSH can tell that the
/// site is not broken, as from a rollback's line.
fn still_runs(settings: &Settings) -> String {
    match manifest::Store::new(&settings.state_dir).load(&settings.site) {
        Ok(Some(m)) => format!(
            "the site is unchanged: it still runs {} (the last good deployment)",
            short_id(&m.commit)
        ),
        Ok(None) => "the site is unchanged: nothing was deployed to it yet".to_string(),
        Err(_) => "the site is unchanged".to_string(),
    }
}

/// What a rollback returns to, for the last line.
fn rolled_back_to(settings: &Settings) -> String {
    manifest::Store::new(&settings.state_dir)
        .load(&settings.site)
        .ok()
        .flatten()
        .map_or_else(
            || "the site as it was before the first deployment (no file of it, no env)".to_string(),
            |m| format!("{} (the last good deployment)", short_id(&m.commit)),
        )
}
