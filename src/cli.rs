//! The command line: parses it once, turns it into settings and calls the
//! module that does the work.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use git2::Repository;

use crate::deploy::{self, Job};
use crate::deployment_file::DeploymentFile;
use crate::error::{printable, usage};
use crate::lock::Lock;
use crate::receive::{self, Decision, PUSH_OPTIONS};
use crate::record::{Records, Trigger};
use crate::report::Report;
use crate::settings::{self, Environment, KEYS, Origin, RECREATE_ENV, Setting, Settings, Sources};

#[derive(Parser)]
#[command(
    name = "pushdeploy",
    version,
    about = "git push deploys a Python web app into a site directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RepoArg {
    /// The bare repository (default: $GIT_DIR, else the current directory)
    #[arg(long, value_name = "PATH")]
    repo: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SetArgs {
    /// Set a setting for this run, above every other source (repeatable)
    #[arg(short = 'c', value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl SetArgs {
    /// Puts `-c key=value` into the flag layer; an unknown key is a usage error.
    fn apply(&self, sources: &mut Sources) -> Result<()> {
        for pair in &self.set {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| usage(format!("-c {pair:?}: expected KEY=VALUE")))?;
            let key = settings::key_named(name.trim()).ok_or_else(|| {
                usage(format!(
                    "-c {pair:?}: {:?} is not a setting; `pushdeploy config` lists them",
                    name.trim()
                ))
            })?;
            sources.flag(key, &format!("-c {}", key.name), value);
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Make or adopt a bare repository that deploys pushes into a site directory
    Init {
        /// The bare repository to make, or an existing one to adopt
        repository: PathBuf,
        /// The directory that serves the app (made when missing)
        #[arg(long, value_name = "DIR")]
        site: PathBuf,
        /// The deployment branch (default: the branch HEAD names; `main` for a new repository)
        #[arg(long)]
        branch: Option<String>,
        /// Change the site of a repository already set up for another one (the next
        /// deployment then compares every file; the old site is left as it is)
        #[arg(long)]
        move_site: bool,
        /// Write systemd units that run the app: system units as root, else your user units
        #[arg(long)]
        systemd: bool,
        /// With --systemd: the folder for the unit files
        #[arg(long, value_name = "DIR", requires = "systemd")]
        unit_dir: Option<PathBuf>,
    },
    /// What the post-receive hook runs: reads the pushed refs on stdin
    PostReceive {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Deploy a commit by hand (default: the deployment branch)
    Deploy {
        #[command(flatten)]
        repo: RepoArg,
        rev: Option<String>,
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the plan as JSON
        #[arg(long, requires = "dry_run")]
        json: bool,
        /// Delete the env and create it anew
        #[arg(long)]
        recreate_env: bool,
        /// Compare every file with the site and repair drift
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        set: SetArgs,
    },
    /// Deploy an earlier deployment's commit again (roll back)
    Redeploy {
        #[command(flatten)]
        repo: RepoArg,
        /// A deployment's commit id (a unique prefix is enough) or #N
        id: String,
        /// Delete the env and create it anew
        #[arg(long)]
        recreate_env: bool,
        /// Compare every file with the site and repair drift
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        set: SetArgs,
    },
    /// The deployments, newest first
    List {
        #[command(flatten)]
        repo: RepoArg,
        #[arg(long)]
        json: bool,
    },
    /// One deployment: its summary and its log
    Show {
        #[command(flatten)]
        repo: RepoArg,
        /// A deployment's commit id (a unique prefix is enough) or #N
        id: String,
    },
    /// Every setting's effective value and where it came from
    Config {
        #[command(flatten)]
        repo: RepoArg,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        set: SetArgs,
    },
    /// Manage the site's virtual environment
    Env {
        #[command(subcommand)]
        action: EnvAction,
    },
    /// Server-side app settings (secrets): the build steps see them
    Appsettings {
        #[command(subcommand)]
        action: AppSettingsAction,
    },
    /// Start the deployed app's processes, detached (pid files and logs in the state dir)
    Start {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Stop the app's processes
    Stop {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Reload the app as a deployment does (gunicorn: a new master, no gap); start what is not running
    Restart {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Each process with its pid; exits 0 only while every one runs
    Status {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Run the app in the foreground, for a supervisor (systemd, runit, a container)
    Serve {
        #[command(flatten)]
        repo: RepoArg,
        /// Only this process type, which replaces pushdeploy (exec)
        #[arg(long, value_name = "NAME")]
        process: Option<String>,
    },
    /// What the app's processes wrote
    Logs {
        #[command(flatten)]
        repo: RepoArg,
        /// Keep printing what they write
        #[arg(short, long)]
        follow: bool,
        /// Only this process type
        #[arg(long, value_name = "NAME")]
        process: Option<String>,
    },
    /// Copies the app's output (stdin) into a size-capped, rotated log file
    #[command(hide = true)]
    LogWriter { file: PathBuf },
    /// What a deployment after a push starts to remove old envs once the
    /// pusher has the last line, with the lock it hands over
    #[command(hide = true)]
    RemoveOldEnvs {
        #[arg(long)]
        site: PathBuf,
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        lock_fd: i32,
    },
}

#[derive(Subcommand)]
enum AppSettingsAction {
    /// Store NAME=VALUE (it overrides a .deployment app setting of that name)
    Set {
        #[command(flatten)]
        repo: RepoArg,
        assignment: String,
    },
    /// Remove a setting
    Unset {
        #[command(flatten)]
        repo: RepoArg,
        name: String,
    },
    /// The settings, values masked
    List {
        #[command(flatten)]
        repo: RepoArg,
        /// Show the values
        #[arg(long)]
        show_values: bool,
    },
}

#[derive(Subcommand)]
enum EnvAction {
    /// Delete the env; the next deployment creates it anew
    Delete {
        #[command(flatten)]
        repo: RepoArg,
    },
}

fn appsettings(action: AppSettingsAction, env: Environment) -> Result<()> {
    use crate::appsettings as store;
    match action {
        AppSettingsAction::Set { repo, assignment } => {
            let (_, settings) = open(&repo, env, |_| Ok(()))?;
            let name = store::set(&settings.state_dir, &assignment)?;
            println!("{name} set (the next deployment's build steps see it)");
        }
        AppSettingsAction::Unset { repo, name } => {
            let (_, settings) = open(&repo, env, |_| Ok(()))?;
            match store::unset(&settings.state_dir, &name)? {
                true => println!("{name} unset"),
                false => println!("{name} was not set"),
            }
        }
        AppSettingsAction::List { repo, show_values } => {
            let (_, settings) = open(&repo, env, |_| Ok(()))?;
            for line in store::lines(&settings.state_dir, show_values)? {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// Opens the repository and resolves its settings.
fn open(
    repo: &RepoArg,
    env: Environment,
    flags: impl FnOnce(&mut Sources) -> Result<()>,
) -> Result<(Repository, Settings)> {
    let given = repo.repo.is_some();
    let path = repo.repo.clone().unwrap_or_else(|| env.default_repo());
    let path = std::fs::canonicalize(&path).map_err(|e| {
        let hint = if given { "" } else { REPO_HINT };
        usage(format!("repository {}: {e}{hint}", path.display()))
    })?;
    let repository = Repository::open(&path).map_err(|e| cannot_open(&path, given, &e))?;
    let mut sources = Sources::new(env, &repository)?;
    flags(&mut sources)?;
    let settings = Settings::resolve(repository.path(), &repository, sources)?;
    Ok((repository, settings))
}

/// Said when no --repo was given and the directory is no repository.
const REPO_HINT: &str = "; run pushdeploy in the bare repository (or with $GIT_DIR set, as the hook does), or name it with --repo <path>";

/// Why a repository cannot be opened, as a user on the server needs to hear it.
fn cannot_open(path: &Path, given: bool, err: &git2::Error) -> anyhow::Error {
    if let Some(not_owned) = crate::error::not_owned(path, err) {
        return not_owned;
    }
    let hint = if given { "" } else { REPO_HINT };
    usage(format!(
        "{}: not a git repository ({}){hint}",
        path.display(),
        err.message()
    ))
}

fn flags(
    recreate_env: bool,
    verify: bool,
    set: &SetArgs,
) -> impl FnOnce(&mut Sources) -> Result<()> {
    move |s: &mut Sources| {
        if recreate_env {
            s.flag(RECREATE_ENV, "--recreate-env", "true");
        }
        if verify {
            s.flag(settings::VERIFY, "--verify", "true");
        }
        set.apply(s)
    }
}

/// A deployment reads each object once: libgit2's object cache (256 MiB by
/// default) and pack mappings (8 GiB) would only make memory grow with the
/// repository.
fn limit_libgit2_memory() -> Result<()> {
    // SAFETY: global libgit2 options, set once before any repository is opened
    // and before any other thread exists.
    unsafe {
        git2::opts::set_cache_max_size(4 << 20)?;
        git2::opts::set_mwindow_mapped_limit(8 << 20)?;
        git2::opts::set_mwindow_size(1 << 20)?;
        // A tree is read once for the plan's walk: caching every one kept
        // 7 MiB (raw and parsed) of a 100,000-file commit.
        git2::opts::set_cache_object_limit(git2::ObjectType::Tree, 0)?;
    }
    // Every object was hashed as it was received (index-pack); hashing it
    // again at each read, as libgit2 does by default and git does not, is
    // a tenth of a first deployment's time.
    git2::opts::strict_hash_verification(false);
    Ok(())
}

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    limit_libgit2_memory()?;
    let env = Environment::from_process();
    match cli.command {
        Command::Init {
            repository,
            site,
            branch,
            move_site,
            systemd,
            unit_dir,
        } => {
            let mut report = Report::stdout();
            if systemd {
                crate::systemd::check_paths(&repository, &site)?;
            }
            // Root writing system units for a user's repository leaves the
            // repository as its owner set it up (see `systemd::another_users`).
            if !(systemd && crate::systemd::another_users(&repository)) {
                crate::init::init(
                    &repository,
                    &site,
                    branch.as_deref(),
                    move_site,
                    &mut report,
                )?;
            }
            if systemd {
                crate::init::systemd(&repository, &site, unit_dir.as_deref(), &mut report)?;
            }
        }
        Command::PostReceive { repo } => post_receive(&repo, env)?,
        Command::RemoveOldEnvs {
            site,
            state_dir,
            lock_fd,
        } => deploy::remove_old_envs_handed_over(&site, &state_dir, lock_fd)?,
        Command::Deploy {
            repo,
            rev,
            dry_run,
            json,
            recreate_env,
            verify,
            set,
        } => {
            let (repository, settings) = open(&repo, env, flags(recreate_env, verify, &set))?;
            let job = Job {
                rev,
                ref_name: None,
                trigger: Trigger::Manual,
                dry_run,
                json,
            };
            deploy::run(&settings, &repository, &job, &mut Report::stdout())?;
        }
        Command::Redeploy {
            repo,
            id,
            recreate_env,
            verify,
            set,
        } => {
            let (repository, settings) = open(&repo, env, flags(recreate_env, verify, &set))?;
            let record = Records::new(&settings.state_dir)
                .find(&id)
                .map_err(|e| usage(format!("{e:#}")))?;
            let job = Job {
                rev: Some(record.id.to_string()),
                ref_name: None,
                trigger: Trigger::Redeploy,
                dry_run: false,
                json: false,
            };
            deploy::run(&settings, &repository, &job, &mut Report::stdout())?;
        }
        Command::List { repo, json } => list(&repo, env, json)?,
        Command::Show { repo, id } => show(&repo, env, &id)?,
        Command::Config { repo, json, set } => config(&repo, env, json, &set)?,
        Command::Appsettings { action } => appsettings(action, env)?,
        Command::Start { repo } => running(&repo, env, Running::Start)?,
        Command::Stop { repo } => running(&repo, env, Running::Stop)?,
        Command::Restart { repo } => running(&repo, env, Running::Restart)?,
        Command::Status { repo } => return status(&repo, env),
        Command::Serve { repo, process } => return serve(&repo, env, process.as_deref()),
        Command::Logs {
            repo,
            follow,
            process,
        } => logs(&repo, env, follow, process.as_deref())?,
        Command::LogWriter { file } => crate::app_logs::log_writer(&file)?,
        Command::Env {
            action: EnvAction::Delete { repo },
        } => {
            let (repository, settings) = open(&repo, env, |_| Ok(()))?;
            let mut report = Report::stdout();
            let _lock = Lock::acquire(
                &settings.state_dir,
                &format!("pushdeploy env delete (pid {})", std::process::id()),
                &mut report,
            )?;
            // What a killed deployment changed is put back first.
            deploy::recover(&settings, &repository, &mut report)?;
            if crate::env::delete(&settings.site, &settings.state_dir)? {
                report.header(format!(
                    "Deleted {}; the next deployment creates it anew (an app running on it keeps its files until then)",
                    settings.site.join("env").display()
                ));
            } else {
                report.header(format!(
                    "{} has no env; nothing to delete",
                    settings.site.display()
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

enum Running {
    Start,
    Stop,
    Restart,
}

/// The deployed app's launch; an error when nothing was deployed yet.
fn deployed(settings: &Settings, repository: &Repository) -> Result<crate::processes::Launch> {
    crate::processes::Launch::for_deployed(settings, repository)?.ok_or_else(|| {
        usage(format!(
            "nothing is deployed to {} yet: push first",
            settings.site.display()
        ))
    })
}

/// A runner for what `start` and `serve` may run (installing the pinned gunicorn).
fn app_runner() -> crate::process::Runner {
    crate::process::Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None)
}

/// `start`, `stop`, `restart`: under the deployment lock, so that none of
/// them runs while a deployment reloads the app.
fn running(repo: &RepoArg, env: Environment, what: Running) -> Result<()> {
    let (repository, settings) = open(repo, env, |_| Ok(()))?;
    let mut report = Report::stdout();
    let _lock = Lock::acquire(
        &settings.state_dir,
        &format!("pushdeploy start/stop (pid {})", std::process::id()),
        &mut report,
    )?;
    let state_dir = &settings.state_dir;
    // Under the units `init --systemd` wrote, systemd runs the processes.
    if let Some(units) = crate::systemd::installed(state_dir) {
        return match what {
            Running::Start => units.start_all(),
            Running::Stop => units.stop_all(),
            Running::Restart => units.restart_all(),
        };
    }
    match what {
        Running::Stop => {
            if !crate::processes::stop_all(state_dir, &mut report) {
                report.header("Nothing was running");
            }
        }
        Running::Start | Running::Restart => {
            let launch = deployed(&settings, &repository)?;
            report.header(launch.app.line());
            let runner = app_runner();
            match what {
                Running::Start => launch.start(&runner, &mut report)?,
                _ => launch.reload(&runner, &mut report)?,
            }
        }
    }
    Ok(())
}

/// Each process of the deployed app, running or not; 0 only while every
/// one runs (3, as `systemctl status`, when one does not).
fn status(repo: &RepoArg, env: Environment) -> Result<ExitCode> {
    let (repository, settings) = open(repo, env, |_| Ok(()))?;
    let mut out = std::io::stdout().lock();
    let Some(launch) = crate::processes::Launch::for_deployed(&settings, &repository)? else {
        writeln!(
            out,
            "nothing is deployed to {} yet: nothing runs",
            settings.site.display()
        )?;
        return Ok(ExitCode::from(3));
    };
    if let Some(units) = crate::systemd::installed(&settings.state_dir) {
        let shown = units.status()?;
        for process in &shown {
            writeln!(out, "{}", process.line())?;
        }
        let up = !shown.is_empty() && shown.iter().all(|p| p.up);
        return Ok(if up {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        });
    }
    let mut all = true;
    let mut any = false;
    for process in launch.kept() {
        any = true;
        let kind = &process.kind;
        let command = printable(&process.command);
        match crate::processes::running_pid(&settings.state_dir, kind) {
            Some(pid) => writeln!(out, "{kind}: running (pid {pid}): {command}")?,
            None => {
                all = false;
                let pid_file = crate::processes::pid_file(&settings.state_dir, kind);
                let why = match std::fs::read_to_string(&pid_file) {
                    Ok(pid) => format!(
                        "gone: pid {} of {} is not running",
                        pid.trim(),
                        pid_file.display()
                    ),
                    Err(_) => "stopped, or never started".to_string(),
                };
                writeln!(out, "{kind}: not running ({why}): {command}")?;
            }
        }
    }
    if !any {
        writeln!(out, "{}", printable(&launch.app.line()))?;
    }
    Ok(if all && any {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn serve(repo: &RepoArg, env: Environment, process: Option<&str>) -> Result<ExitCode> {
    let (repository, settings) = open(repo, env, |_| Ok(()))?;
    let launch = deployed(&settings, &repository)?;
    let mut report = Report::stdout();
    let runner = app_runner();
    match process {
        Some(kind) => {
            launch.exec(kind, &runner, &mut report)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let code = launch.serve_all(&runner, &mut report)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}

fn logs(repo: &RepoArg, env: Environment, follow: bool, process: Option<&str>) -> Result<()> {
    let (repository, settings) = open(repo, env, |_| Ok(()))?;
    if let Some(units) = crate::systemd::installed(&settings.state_dir) {
        units.logs(process, follow)?;
        return Ok(());
    }
    let kinds: Vec<String> = match process {
        Some(kind) => {
            if let Some(launch) = crate::processes::Launch::for_deployed(&settings, &repository)?
                && !launch.app.processes.iter().any(|p| p.kind == kind)
                && !crate::app_logs::log_file(&settings.state_dir, kind).exists()
            {
                return Err(usage(launch.unknown(kind)));
            }
            vec![kind.to_string()]
        }
        None => match crate::processes::Launch::for_deployed(&settings, &repository)? {
            Some(launch) => launch.kept().map(|p| p.kind.clone()).collect(),
            None => Vec::new(),
        },
    };
    crate::app_logs::show_logs(&settings.state_dir, &kinds, follow)
}

/// The hook: deploys the deployment branch's update, reports the others as
/// ignored. Its exit status cannot undo the push: git has updated the refs.
fn post_receive(repo: &RepoArg, env: Environment) -> Result<()> {
    let mut report = Report::stdout();
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the pushed refs from stdin")?;
    let updates = receive::parse(&input)?;
    // An option that is not UTF-8 is ignored like an unknown one, with its
    // own line: the push has happened, so the deployment goes on.
    let options = env.push_options_os();
    let (repository, settings) = open(repo, env, |sources| {
        for option in options.iter().filter_map(|o| o.to_str()) {
            if PUSH_OPTIONS.contains(&option) {
                sources.set_above_all(RECREATE_ENV, "true", Origin::PushOption(option.into()));
            }
        }
        Ok(())
    })?;
    for option in &options {
        use std::os::unix::ffi::OsStrExt;
        let shown = crate::error::shown(option.as_bytes());
        match option.to_str() {
            Some(known) if PUSH_OPTIONS.contains(&known) => {}
            Some(_) => report.header(format!(
                "Ignoring unknown push option {shown}; known: {}",
                PUSH_OPTIONS.join(", ")
            )),
            None => report.header(format!(
                "Ignoring push option {shown}: it is not UTF-8; known: {}",
                PUSH_OPTIONS.join(", ")
            )),
        }
    }
    let mut deploy = None;
    for update in &updates {
        match receive::decide(update, &settings.branch) {
            Decision::Deploy => deploy = Some(update.clone()),
            Decision::Ignore(why) => report.header(format!("Ignored: {why}")),
        }
    }
    let Some(update) = deploy else {
        report.header(format!(
            "Nothing to deploy: pushes to refs/heads/{} deploy to {}",
            settings.branch,
            settings.site.display()
        ));
        return Ok(());
    };
    let job = Job {
        rev: Some(update.new),
        ref_name: Some(update.name),
        trigger: Trigger::Push,
        dry_run: false,
        json: false,
    };
    deploy::run(&settings, &repository, &job, &mut report)
}

fn list(repo: &RepoArg, env: Environment, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let (_, settings) = open(repo, env, |_| Ok(()))?;
    let records = Records::new(&settings.state_dir).list()?;
    let held = crate::lock::is_held(&settings.state_dir);
    let newest = records.first().map_or(0, |r| r.seq);
    if json {
        let summaries: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("a record is JSON");
                let object = v.as_object_mut().expect("a record is an object");
                object.remove("log");
                if r.status == crate::record::Status::Running {
                    object.insert(
                        "did_not_finish".into(),
                        r.did_not_finish(newest, held).into(),
                    );
                }
                v
            })
            .collect();
        writeln!(
            out,
            "{}",
            crate::error::json_printable(&serde_json::to_string_pretty(&summaries)?)
        )?;
        return Ok(());
    }
    let active = records
        .iter()
        .find(|r| r.status == crate::record::Status::Success)
        .map(|r| r.seq);
    let header = ["#", "ID", "STATUS", "TRIGGER", "STARTED", "TIME", "MESSAGE"].map(String::from);
    let mut rows = vec![header];
    for r in &records {
        let time = match r.seconds {
            Some(seconds) => crate::report::seconds_text(seconds),
            // Finished before records kept the whole time: its steps' sum.
            None if r.finished.is_some() && !r.steps.is_empty() => {
                crate::report::seconds_text(r.steps.iter().map(|s| s.seconds).sum())
            }
            // Running, or killed before it could say how long it took.
            None => "-".to_string(),
        };
        let status = match r.warnings.len() {
            0 => r.status_text(newest, held),
            1 => format!("{}, 1 warning", r.status_text(newest, held)),
            n => format!("{}, {n} warnings", r.status_text(newest, held)),
        };
        let mark = if Some(r.seq) == active { "*" } else { " " };
        rows.push([
            format!("{}{mark}", r.seq),
            r.short(),
            status,
            r.trigger.to_string(),
            printable(&r.started).to_string(),
            time,
            printable(&r.message).to_string(),
        ]);
    }
    // Each column as wide as its widest cell (the message, last, is not padded).
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (width, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<width$} "));
        }
        line.push_str(&row[6]);
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn show(repo: &RepoArg, env: Environment, id: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let (_, settings) = open(repo, env, |_| Ok(()))?;
    let r = Records::new(&settings.state_dir)
        .find(id)
        .map_err(|e| usage(format!("{e:#}")))?;
    let newest = Records::new(&settings.state_dir)
        .list()?
        .first()
        .map_or(0, |r| r.seq);
    let held = crate::lock::is_held(&settings.state_dir);
    // Every text of a record came from a commit or a program: escaped.
    writeln!(out, "deployment #{} {}", r.seq, r.id)?;
    writeln!(out, "ref:      {}", printable(&r.ref_name))?;
    writeln!(out, "author:   {}", printable(&r.author))?;
    writeln!(out, "message:  {}", printable(&r.message))?;
    writeln!(out, "trigger:  {}", r.trigger)?;
    writeln!(out, "status:   {}", r.status_text(newest, held))?;
    for warning in &r.warnings {
        writeln!(out, "warning:  {}", printable(warning))?;
    }
    if let Some(seconds) = r.seconds {
        writeln!(out, "time:     {}", crate::report::seconds_text(seconds))?;
    }
    writeln!(out, "started:  {}", printable(&r.started))?;
    writeln!(
        out,
        "finished: {}",
        printable(r.finished.as_deref().unwrap_or("-"))
    )?;
    if let Some(error) = &r.error {
        writeln!(out, "error:    {}", printable(error))?;
    }
    for s in &r.steps {
        writeln!(
            out,
            "step:     {} {}",
            printable(&s.step),
            crate::report::seconds_text(s.seconds)
        )?;
    }
    writeln!(out)?;
    for line in &r.log {
        writeln!(out, "{}", printable(line))?;
    }
    Ok(())
}

/// Every setting with its effective value and origin, `.deployment` read
/// from the deployment branch's head, like `git config --show-origin`.
fn config(repo: &RepoArg, env: Environment, json: bool, set: &SetArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let (repository, settings) = open(repo, env, |s| set.apply(s))?;
    let branch = format!("refs/heads/{}", settings.branch);
    // The values a deployment would read, refused where a deployment would
    // refuse them.
    let (values, runs) = match crate::commit::Commit::open(&repository, &branch) {
        Ok(head) => {
            let (values, commit) = crate::plan::prepare(&settings, head)?;
            // What the branch's head would run.
            let runs = crate::app::decide(&values, &commit)?;
            (values, Some(runs))
        }
        // No commit on the branch yet: no .deployment to read.
        Err(_) => (settings.for_commit(&DeploymentFile::default())?, None),
    };
    crate::packages::installer(&settings, &values)?;
    // Defaults that depend on the repository or the user, as resolved.
    let resolved = |key: &settings::Key| -> Option<String> {
        let path = |p: &std::path::Path| p.display().to_string();
        Some(match key.name {
            "branch" => settings.branch.clone(),
            "stateDir" => path(&settings.state_dir),
            "cacheDir" => path(&settings.cache_dir),
            "pyenvRoot" => path(&settings.pyenv_root),
            _ => return None,
        })
    };
    let rows: Vec<(&settings::Key, Setting)> = KEYS
        .iter()
        .map(|k| {
            let mut value = values.shown(k);
            if value.origin == Origin::Default {
                value.text = resolved(k).unwrap_or(value.text);
            }
            (*k, value)
        })
        .collect();
    if json {
        let mut map: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(k, v)| {
                let mut value = serde_json::to_value(v).expect("a value is JSON");
                value["doc"] = k.doc.into();
                (k.name.to_string(), value)
            })
            .collect();
        let app: serde_json::Map<String, serde_json::Value> = values
            .app
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        map.insert("appSettings".into(), app.into());
        map.insert(
            "app".into(),
            serde_json::to_value(&runs).expect("a plan is JSON"),
        );
        map.insert(
            "leftOut".into(),
            serde_json::to_value(&values.refused).expect("a list is JSON"),
        );
        // App settings' values come from the commit.
        let json = serde_json::to_string_pretty(&map)?;
        writeln!(out, "{}", crate::error::json_printable(&json))?;
    } else {
        for (key, value) in rows {
            let key = key.name;
            let shown = printable(&value.text);
            writeln!(out, "{:<28} {:<40} {}", key, shown, value.origin)?;
        }
        for (key, value) in &values.app {
            let value = printable(value);
            writeln!(
                out,
                "{key:<28} {value:<40} .deployment (app setting, passed to the build steps)"
            )?;
        }
        for refused in &values.refused {
            writeln!(out, "{refused}")?;
        }
        if let Some(runs) = &runs {
            writeln!(out, "{}", printable(&runs.line()))?;
        }
    }
    Ok(())
}
