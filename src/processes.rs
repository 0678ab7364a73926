//! The app's processes without systemd: how each is launched (its words
//! from the Procfile line or the start command, split as a shell would but
//! run by none; the site as its folder; `PORT`, the app settings and the
//! env's `bin` first on PATH), started detached with pid files under
//! `<stateDir>/run/` and its output in `<stateDir>/logs/<type>.log`
//! (size-capped, rotated), reloaded after each deployment, stopped.
//!
//! gunicorn is run through a launcher (`gunicorn_launcher.py`) that reads its
//! words and environment from `<stateDir>/run/<type>.json`, so that a new
//! master started by USR2 runs the new deployment's command, settings and
//! interpreter. A reload is always gunicorn's USR2, never HUP: on HUP a
//! worker that cannot import the new code makes the master exit ("Worker
//! failed to boot"), and the app is down; after USR2 the old master and its
//! workers serve until a worker of the new master has imported the app, and
//! a new master that fails exits alone. (gunicorn ignores WINCH unless it
//! daemonised itself, so the old master is stopped with TERM, gracefully,
//! once the new one is ready.)

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use git2::Repository;

use crate::app::{App, Process};
use crate::app_logs::{log_end, log_file};
use crate::commit::Commit;
use crate::process::{AppCommand, Runner};
use crate::report::Report;
use crate::settings::{BIND, HEALTH_CHECK_TIMEOUT, PORT, Settings, Values};

/// The launcher, written into the run folder at each start.
const LAUNCHER: &str = include_str!("gunicorn_launcher.py");
const LAUNCHER_FILE: &str = "gunicorn_launcher.py";

/// The variables the app gets from whoever runs pushdeploy.
const INHERITED: &[&str] = &[
    "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// The process type Heroku runs once per release, never kept running.
pub const RELEASE: &str = "release";

/// Whether pushdeploy runs the app: `git config deploy.run true`, which
/// `init` sets for a new repository; `PUSHDEPLOY_RUN` above it, as the
/// environment is above git config for every setting.
pub fn enabled(settings: &Settings, repo: &Repository) -> bool {
    if let Some(on) = settings
        .env
        .get("PUSHDEPLOY_RUN")
        .and_then(crate::settings::parse_bool)
    {
        return on;
    }
    repo.config()
        .and_then(|c| c.get_bool("deploy.run"))
        .unwrap_or(false)
}

/// How the deployed app's processes are launched: plain data, the same for
/// a deployment's reload, `start`, `serve` and a rollback.
#[derive(Debug, Clone)]
pub struct Launch {
    pub app: App,
    pub site: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub port: u16,
    pub bind: String,
    /// The server's app settings over the commit's.
    pub app_settings: Vec<(String, String)>,
    /// How long a process may take to start (`healthCheckTimeout`).
    pub timeout: u64,
    /// `deploy.runAsRoot`: a site owned by root may run its app as root.
    pub as_root: bool,
    /// The bare repository (the systemd units name it).
    pub repo: PathBuf,
}

impl Launch {
    pub fn new(
        settings: &Settings,
        values: &Values,
        app: &App,
        app_settings: Vec<(String, String)>,
        repo: &Repository,
    ) -> Launch {
        Launch {
            app: app.clone(),
            site: settings.site.clone(),
            state_dir: settings.state_dir.clone(),
            cache_dir: settings.cache_dir.clone(),
            port: values
                .text(PORT)
                .and_then(|(t, _)| t.trim().parse().ok())
                .unwrap_or(8000),
            bind: values
                .text(BIND)
                .map_or("127.0.0.1".to_string(), |(t, _)| t.trim().to_string()),
            app_settings,
            timeout: values.seconds(HEALTH_CHECK_TIMEOUT).unwrap_or(30),
            repo: repo.path().to_path_buf(),
            as_root: repo
                .config()
                .and_then(|c| c.get_bool("deploy.runAsRoot"))
                .unwrap_or(false),
        }
    }

    /// The launch of the deployed commit (the site's manifest names it);
    /// `None` before the first deployment.
    pub fn for_deployed(settings: &Settings, repo: &Repository) -> Result<Option<Launch>> {
        let Some(manifest) =
            crate::manifest::Store::new(&settings.state_dir).load(&settings.site)?
        else {
            return Ok(None);
        };
        let commit = Commit::open(repo, &manifest.commit)?;
        let (values, commit) = crate::plan::prepare(settings, commit)?;
        let app = crate::app::decide(&values, &commit)?;
        let server: Vec<(String, String)> = crate::appsettings::load(&settings.state_dir)?
            .into_iter()
            .collect();
        let app_settings = crate::appsettings::merged(&values.app, &server);
        Ok(Some(Launch::new(
            settings,
            &values,
            &app,
            app_settings,
            repo,
        )))
    }

    /// What happens to the app after the switch, for the dry run.
    pub fn line(&self, app_check: bool) -> String {
        let check = match (app_check, self.web()) {
            (true, Some(_)) => format!(
                "; health check: GET {}, any answer below 500, within {} s",
                self.url(),
                self.timeout
            ),
            _ => String::new(),
        };
        let release = match self.release() {
            Some(p) => format!("release: {} runs first; ", p.command),
            None => String::new(),
        };
        format!(
            "After the switch (deploy.run): {release}the app is reloaded on {}:{} (gunicorn: a new master, the old one until it is ready){check}",
            self.bind, self.port
        )
    }

    /// The processes kept running, in the Procfile's order.
    pub fn kept(&self) -> impl Iterator<Item = &Process> {
        self.app.processes.iter().filter(|p| p.kind != RELEASE)
    }

    pub fn release(&self) -> Option<&Process> {
        self.app.processes.iter().find(|p| p.kind == RELEASE)
    }

    pub fn web(&self) -> Option<&Process> {
        self.app.processes.iter().find(|p| p.kind == "web")
    }

    pub fn run_dir(&self) -> PathBuf {
        run_dir(&self.state_dir)
    }

    pub fn log_file(&self, kind: &str) -> PathBuf {
        log_file(&self.state_dir, kind)
    }

    /// The URL the default health check asks: the app's own port, on the
    /// loopback address when it listens on all of them.
    pub fn url(&self) -> String {
        let host = match self.bind.as_str() {
            "0.0.0.0" | "" => "127.0.0.1".to_string(),
            "::" => "[::1]".to_string(),
            b if b.contains(':') => format!("[{b}]"),
            b => b.to_string(),
        };
        format!("http://{host}:{}/", self.port)
    }

    /// The app's environment: a few of pushdeploy's own variables (never
    /// git's, nor pushdeploy's settings), the env's `bin` first on PATH,
    /// `PORT`, then the app settings.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for name in INHERITED {
            if let Ok(value) = std::env::var(name) {
                env.push((name.to_string(), value));
            }
        }
        let bin = self.site.join("env/bin");
        let path = match std::env::var("PATH") {
            Ok(rest) if !rest.is_empty() => format!("{}:{rest}", bin.display()),
            _ => format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
        };
        env.push(("PATH".into(), path));
        env.push((
            "VIRTUAL_ENV".into(),
            self.site.join("env").display().to_string(),
        ));
        env.push(("PYTHONUNBUFFERED".into(), "1".into()));
        env.push(("PORT".into(), self.port.to_string()));
        for (k, v) in &self.app_settings {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    /// The user the app runs as: this one, or as root the site's owner;
    /// never root unless `deploy.runAsRoot` says so.
    fn user(&self, report: &mut Report) -> Result<Option<(u32, u32)>> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        use std::os::unix::fs::MetadataExt;
        let meta = fs_err::metadata(&self.site)?;
        if meta.uid() != 0 {
            return Ok(Some((meta.uid(), meta.gid())));
        }
        if self.as_root {
            report.detail(
                "warning: the app runs as root (the site is root's, and deploy.runAsRoot is true)",
            );
            return Ok(None);
        }
        bail!(
            "site {} is owned by root: pushdeploy runs the app as the site's owner, never as root; `chown -R <user> {}` (or `git config deploy.runAsRoot true` to allow root)",
            self.site.display(),
            self.site.display()
        )
    }

    /// The words and environment of one process, as it will be started;
    /// for gunicorn the launcher's spec is written (and a pinned gunicorn
    /// installed when the env lacks one).
    fn command(
        &self,
        process: &Process,
        user: Option<(u32, u32)>,
        runner: &Runner,
        report: &mut Report,
    ) -> Result<Command> {
        let kind = &process.kind;
        let words = shell_words::split(&process.command)
            .ok()
            .filter(|w| !w.is_empty())
            .with_context(|| {
                format!(
                    "process {kind}: {:?} is not a command line ({})",
                    process.command, self.app.reason
                )
            })?;
        // Heroku's Procfiles say `$PORT`; no shell runs the line, so it is
        // replaced here (and only it).
        let port = self.port.to_string();
        let words: Vec<String> = words
            .into_iter()
            .map(|w| w.replace("${PORT}", &port).replace("$PORT", &port))
            .collect();
        let mut env = self.env();
        if let Some((uid, _)) = user {
            // The owner's own HOME and names, not root's.
            for (name, value) in passwd_entry(uid) {
                env.retain(|(n, _)| *n != name);
                env.push((name, value));
            }
        }
        let run = self.run_dir();
        if words[0] != "gunicorn" {
            return Ok(Command {
                kind: kind.clone(),
                argv: words.iter().map(OsString::from).collect(),
                env,
                gunicorn: false,
            });
        }
        let mut args = words[1..].to_vec();
        args.push("--pid".into());
        args.push(pid_file(&self.state_dir, kind).display().to_string());
        let binds_itself = args
            .iter()
            .any(|a| a == "-b" || a.starts_with("--bind") || (a.starts_with("-b") && a.len() > 2));
        if !binds_itself {
            args.push("--bind".into());
            let host = if self.bind.contains(':') {
                format!("[{}]", self.bind)
            } else {
                self.bind.clone()
            };
            args.push(format!("{host}:{}", self.port));
        }
        let python = self.site.join("env/bin/python");
        let pinned = if env_has_gunicorn(&self.site) {
            None
        } else {
            let base = if python.exists() {
                python.clone()
            } else {
                PathBuf::from("python3")
            };
            let lib = crate::tools::ensure_gunicorn(&self.cache_dir, &base, runner, report)?;
            Some(self.readable_by_the_app(lib, user)?)
        };
        let spec = serde_json::json!({
            "args": args,
            "env": env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "path": pinned,
            "markers": run.join(kind),
        });
        let spec_file = run.join(format!("{kind}.json"));
        crate::files::write_atomic(&spec_file, &serde_json::to_vec_pretty(&spec)?)?;
        use std::os::unix::fs::PermissionsExt;
        // It holds the app settings: the secrets too.
        fs_err::set_permissions(&spec_file, std::fs::Permissions::from_mode(0o600))?;
        let launcher = run.join(LAUNCHER_FILE);
        if fs_err::read_to_string(&launcher).ok().as_deref() != Some(LAUNCHER) {
            crate::files::write_atomic(&launcher, LAUNCHER.as_bytes())?;
        }
        for file in [&spec_file, &launcher] {
            give(file, user)?;
        }
        let python = if python.exists() {
            python.into_os_string()
        } else {
            "python3".into()
        };
        Ok(Command {
            kind: kind.clone(),
            argv: vec![python, launcher.into(), spec_file.into()],
            env,
            gunicorn: true,
        })
    }

    /// The pinned gunicorn where the app's user can read it: the cache is in
    /// the home of the user pushdeploy runs as (root's is closed to others),
    /// so for another user it is copied once into the run folder, which is
    /// the app's already.
    fn readable_by_the_app(&self, lib: PathBuf, user: Option<(u32, u32)>) -> Result<PathBuf> {
        if user.is_none() {
            return Ok(lib);
        }
        let name = lib
            .parent()
            .and_then(Path::file_name)
            .context("the pinned gunicorn's folder has no name")?;
        let to = self.run_dir().join(name);
        if to.is_dir() {
            return Ok(to);
        }
        // Copied under a temp name and renamed: a half copy is never taken.
        let temp = self.run_dir().join(format!(
            ".{}-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if temp.exists() {
            fs_err::remove_dir_all(&temp)?;
        }
        crate::files::copy_tree(&lib, &temp, crate::files::Files::Copy)?;
        fs_err::rename(&temp, &to)?;
        Ok(to)
    }

    /// The run and log folders, made, and given to the app's user with the
    /// logs in them (the app writes its pid files, its log writer the logs).
    fn folders(&self, user: Option<(u32, u32)>) -> Result<()> {
        for dir in [self.run_dir(), self.state_dir.join("logs")] {
            fs_err::create_dir_all(&dir)?;
            give(&dir, user)?;
        }
        if user.is_some() {
            for entry in fs_err::read_dir(self.state_dir.join("logs"))?.flatten() {
                give(&entry.path(), user)?;
            }
        }
        Ok(())
    }

    /// Starts every process that is not running; says which ran already.
    pub fn start(&self, runner: &Runner, report: &mut Report) -> Result<()> {
        let user = self.user(report)?;
        self.folders(user)?;
        for process in self.kept() {
            if let Some(pid) = running_pid(&self.state_dir, &process.kind) {
                report.detail(format!("{}: already running (pid {pid})", process.kind));
                continue;
            }
            let command = self.command(process, user, runner, report)?;
            let pid = self.start_one(&command, user)?;
            report.detail(format!(
                "{}: started (pid {pid}): {}",
                process.kind, process.command
            ));
        }
        Ok(())
    }

    /// After a switch: the new version serves, with no failed request where
    /// gunicorn runs it. A running gunicorn web gets a new master (USR2),
    /// which replaces the old one once it is ready; any other process is
    /// stopped and started anew; one not running is started; one the app no
    /// longer has is stopped.
    pub fn reload(&self, runner: &Runner, report: &mut Report) -> Result<()> {
        let user = self.user(report)?;
        self.folders(user)?;
        if let Some(units) = crate::systemd::installed(&self.state_dir) {
            return self.reload_units(&units, user, runner, report);
        }
        for kind in running_kinds(&self.state_dir) {
            if !self.kept().any(|p| p.kind == kind) {
                stop(&self.state_dir, &kind);
                report.detail(format!("{kind}: stopped (the app no longer has it)"));
            }
        }
        for process in self.kept() {
            let kind = &process.kind;
            let before = spec_binds(&self.state_dir, kind);
            let spec_before = spec_identity(&self.state_dir, kind);
            let command = self.command(process, user, runner, report)?;
            // A new master takes over the old one's sockets as they are:
            // another address or port needs a new start.
            let same_address = before == spec_binds(&self.state_dir, kind);
            match running_pid(&self.state_dir, kind) {
                Some(old) if supervised(&self.state_dir, kind, old) => {
                    let same_spec = spec_before == spec_identity(&self.state_dir, kind);
                    self.reload_supervised(&command, old, same_spec, user, runner, report)?;
                }
                Some(old) if command.gunicorn && is_launcher(old) && same_address => {
                    let new = self.replace_master(&command, old)?;
                    report.detail(format!(
                        "{kind}: new gunicorn master (pid {new}) ready; the old one (pid {old}) stopped gracefully"
                    ));
                }
                Some(old) => {
                    stop(&self.state_dir, kind);
                    let pid = self.start_one(&command, user)?;
                    let why = if kind != "web" {
                        "anew"
                    } else if !command.gunicorn || !same_address {
                        "anew: a gap, as the address changed or the command is not gunicorn (a new gunicorn master would take over the old sockets)"
                    } else {
                        "anew: a gap, as the running one was not started by pushdeploy's launcher"
                    };
                    report.detail(format!(
                        "{kind}: stopped (pid {old}) and started (pid {pid}) {why}"
                    ));
                }
                None => {
                    let pid = self.start_one(&command, user)?;
                    report.detail(format!("{kind}: started (pid {pid}): {}", process.command));
                }
            }
        }
        if self.app.processes.is_empty() {
            report.detail(format!("nothing runs ({})", self.app.reason));
        }
        Ok(())
    }

    /// A process `serve` runs, for a supervisor of the user's (runit, s6,
    /// supervisord, a container): its master must stay the supervisor's.
    /// gunicorn with the same interpreter and the same words and settings
    /// reloads in place (HUP: new workers import the new code; the master
    /// stays), once `--check-config` has loaded the new version, since a
    /// HUP whose workers cannot import takes the master down. Anything else
    /// is stopped, and its supervisor starts it anew (a gap).
    fn reload_supervised(
        &self,
        command: &Command,
        old: i32,
        same_spec: bool,
        user: Option<(u32, u32)>,
        runner: &Runner,
        report: &mut Report,
    ) -> Result<()> {
        let kind = &command.kind;
        let interpreter = std::fs::canonicalize(self.site.join("env/bin/python")).ok();
        let same_python = std::fs::read_link(format!("/proc/{old}/exe")).ok() == interpreter;
        if command.gunicorn && same_python && same_spec {
            self.check_loads(command, user, runner, report)?;
            let ready = marker(&self.state_dir, kind, "ready", old);
            crate::files::remove_file_if_there(&ready)?;
            signal(old, rustix::process::Signal::HUP)?;
            let deadline = self.ready_by();
            while !ready.exists() {
                if !alive(old) || Instant::now() >= deadline {
                    bail!(
                        "process {kind}: the reloaded workers were not ready within {} s (setting healthCheckTimeout){}",
                        self.timeout,
                        log_end(&self.log_file(kind))
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            report.detail(format!(
                "{kind}: reloaded in place (HUP): new workers serve the new version; the master (pid {old}) stays its supervisor's"
            ));
            return Ok(());
        }
        if command.gunicorn {
            self.check_loads(command, user, runner, report)?;
        }
        let _ = signal(old, rustix::process::Signal::TERM);
        wait_gone(old, Duration::from_secs(60));
        let deadline = self.ready_by();
        let new = loop {
            match running_pid(&self.state_dir, kind) {
                Some(pid) if pid != old => break pid,
                _ if Instant::now() >= deadline => bail!(
                    "process {kind}: stopped (pid {old}) for the new version, and its supervisor did not start `pushdeploy serve` again within {} s",
                    self.timeout
                ),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        report.detail(format!(
            "{kind}: stopped (pid {old}) and started again by its supervisor (pid {new}): a gap, as the interpreter, the command or the settings changed"
        ));
        Ok(())
    }

    /// Under the units `init --systemd` wrote: systemd holds the web socket
    /// and starts what stops, so each process is restarted behind it
    /// (gunicorn's USR2 cannot hand on a socket systemd passed), once the
    /// new version's gunicorn has loaded the app: a version that cannot
    /// import is refused while the old one still serves.
    fn reload_units(
        &self,
        units: &crate::systemd::Units,
        user: Option<(u32, u32)>,
        runner: &Runner,
        report: &mut Report,
    ) -> Result<()> {
        // Units are written by `init --systemd` (root's, for system units):
        // when the app outgrew them, the user is told to write them again.
        if let Ok(address) = self.bind.parse()
            && let Some(line) = crate::systemd::mismatch(
                units,
                &self.app,
                std::net::SocketAddr::new(address, self.port),
                &self.repo,
            )
        {
            report.detail(format!("warning: {line}"));
        }
        let mut commands = Vec::new();
        for process in self.kept() {
            // Writes the spec the unit's launcher reads.
            let command = self.command(process, user, runner, report)?;
            if command.gunicorn {
                self.check_loads(&command, user, runner, report)?;
            }
            commands.push(command);
        }
        for command in &commands {
            units.replace(&command.kind)?;
            report.detail(format!("{}: restarted by systemd", command.kind));
        }
        Ok(())
    }

    /// gunicorn's `--check-config` with the deployment's words: it loads
    /// the app and exits, 1 when it cannot.
    fn check_loads(
        &self,
        command: &Command,
        user: Option<(u32, u32)>,
        runner: &Runner,
        report: &mut Report,
    ) -> Result<()> {
        let kind = &command.kind;
        let mut argv = command.argv.clone();
        argv.push("--check-config".into());
        let expr = duct::cmd(&argv[0], &argv[1..])
            .dir(&self.site)
            .full_env(command.env.iter().cloned())
            .stdout_to_stderr();
        let out = runner.capture(
            &format!("{kind}: gunicorn --check-config"),
            crate::process::as_user(expr, user),
        )?;
        if !out.success {
            bail!(
                "process {kind}: the new version does not load: {}; the old one still serves",
                crate::process::last_line(&out.stderr)
            );
        }
        report.detail(format!(
            "{kind}: the new version loads (gunicorn --check-config)"
        ));
        Ok(())
    }

    /// When a process started now must be ready (`healthCheckTimeout`).
    fn ready_by(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.timeout.max(1))
    }

    /// Starts one process detached, its output through the log writer, and
    /// waits until it is ready: a gunicorn worker imported the app, another
    /// web process answers on its port; a process that exits first fails.
    fn start_one(&self, command: &Command, user: Option<(u32, u32)>) -> Result<i32> {
        let kind = &command.kind;
        fresh(&self.state_dir, kind)?;
        if kind == "web" {
            check_port(&self.bind, self.port)?;
        }
        let log = self.log_file(kind);
        let (reader, writer) = std::io::pipe().context("a pipe for the app's output")?;
        let exe = std::env::current_exe().context("finding the pushdeploy executable")?;
        let log_argv = [
            exe.into_os_string(),
            "log-writer".into(),
            log.clone().into_os_string(),
        ];
        AppCommand {
            argv: &log_argv,
            dir: &self.state_dir,
            env: &[],
            user,
        }
        .detached_reading(reader)?;
        let env = command.os_env();
        let mut child = AppCommand {
            argv: &command.argv,
            dir: &self.site,
            env: &env,
            user,
        }
        .detached(writer)
        .map_err(
            |e| match user.and_then(|u| closed_to(&command.argv[0], u)) {
                Some(closed) => e.context(closed),
                None => e,
            },
        )
        .with_context(|| format!("process {kind}"))?;
        let pid = child.id() as i32;
        if !command.gunicorn {
            crate::files::write_atomic(
                &pid_file(&self.state_dir, kind),
                format!("{pid}\n").as_bytes(),
            )?;
        }
        let deadline = self.ready_by();
        let grace = Instant::now() + Duration::from_millis(500);
        loop {
            if let Some(status) = child.try_wait()? {
                let _ = crate::files::remove_file_if_there(&pid_file(&self.state_dir, kind));
                bail!(
                    "process {kind} exited at once ({}){}",
                    exit_text(status),
                    log_end(&log)
                );
            }
            let ready = if command.gunicorn {
                marker(&self.state_dir, kind, "ready", pid).exists()
            } else if kind == "web" {
                answers(&self.bind, self.port)
            } else {
                Instant::now() >= grace
            };
            if ready {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                stop(&self.state_dir, kind);
                kill_now(pid);
                bail!(
                    "process {kind} was not ready within {} s (setting healthCheckTimeout){}",
                    self.timeout,
                    log_end(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// gunicorn's USR2: a new master (through the launcher: the new spec)
    /// beside the old one, on its sockets. Once one of its workers has
    /// imported the app, the old master is stopped gracefully (its workers
    /// finish their requests); a new master that fails exits alone, and the
    /// old one serves on.
    fn replace_master(&self, command: &Command, old: i32) -> Result<i32> {
        let kind = &command.kind;
        let log = self.log_file(kind);
        // A master started by USR2 renames its `<type>.pid.2` to
        // `<type>.pid` within a second of its parent's exit (gunicorn's
        // loop); until then it ignores USR2. Waited for here, not after the
        // last reload, so that a push does not wait for it.
        wait_while(Duration::from_secs(10), || {
            read_pid(&pid_file(&self.state_dir, kind)) != Some(old)
        });
        clear_markers(&self.state_dir, kind, Some(old));
        signal(old, rustix::process::Signal::USR2)?;
        let deadline = self.ready_by();
        let mut new = None;
        let failed = loop {
            if new.is_none() {
                new = started_masters(&self.state_dir, kind)
                    .into_iter()
                    .find(|&p| p != old);
            }
            if let Some(pid) = new {
                if marker(&self.state_dir, kind, "ready", pid).exists() {
                    break None;
                }
                let exit = marker(&self.state_dir, kind, "exit", pid);
                if exit.exists() || !alive(pid) {
                    let code = fs_err::read_to_string(&exit).unwrap_or_default();
                    break Some(format!(
                        "the new gunicorn master exited{}",
                        match code.trim() {
                            "" => String::new(),
                            code => format!(" with status {code}"),
                        }
                    ));
                }
            }
            if !alive(old) {
                break Some(format!("the running gunicorn master (pid {old}) exited"));
            }
            if Instant::now() >= deadline {
                if let Some(pid) = new {
                    kill_now(pid);
                }
                break Some(format!(
                    "the new version was not ready within {} s (setting healthCheckTimeout)",
                    self.timeout
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(why) = failed {
            // The old master ignores the next USR2 until it has reaped the
            // failed one ("Child exists"): a rollback sends one at once.
            if let Some(pid) = new {
                wait_while(Duration::from_secs(10), || {
                    Path::new(&format!("/proc/{pid}")).exists()
                });
            }
            bail!(
                "process {kind}: the new version did not start: {why}; the old one still serves{}",
                log_end(&log)
            );
        }
        let new = new.expect("a ready master");
        // The old master closes its sockets (the new one holds them) and
        // lets its workers finish their requests.
        let _ = signal(old, rustix::process::Signal::TERM);
        wait_gone(old, Duration::from_secs(60));
        clear_markers(&self.state_dir, kind, Some(new));
        Ok(new)
    }

    /// Runs the `release:` process once, as a step.
    pub fn run_release(&self, runner: &Runner, report: &mut Report) -> Result<()> {
        let Some(process) = self.release() else {
            return Ok(());
        };
        // A step of the deployment (its output shown, its time limited),
        // but the app's own code: as the app's user.
        let user = self.user(report)?;
        let command = self.command(process, user, runner, report)?;
        let argv = &command.argv;
        let expr = duct::cmd(&argv[0], &argv[1..])
            .dir(&self.site)
            .full_env(command.env.iter().cloned());
        runner.run(report, "release", crate::process::as_user(expr, user))
    }

    /// `serve --process TYPE`: replaces pushdeploy with the process.
    pub fn exec(&self, kind: &str, runner: &Runner, report: &mut Report) -> Result<()> {
        let process = self
            .kept()
            .find(|p| p.kind == kind)
            .with_context(|| self.unknown(kind))?;
        let user = self.user(report)?;
        self.folders(user)?;
        let command = self.command(process, user, runner, report)?;
        self.not_running(kind)?;
        fresh(&self.state_dir, kind)?;
        let mut env = command.os_env();
        // systemd's socket activation: the listening socket it passes (the
        // pid stays the same through exec).
        env.extend(std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("LISTEN_")));
        // exec keeps the pid: it is the process's, and its supervisor's.
        self.mark_supervised(&command, std::process::id() as i32)?;
        Err(AppCommand {
            argv: &command.argv,
            dir: &self.site,
            env: &env,
            user,
        }
        .exec())
    }

    /// `serve` without `--process`: every process as a child, in the
    /// foreground; TERM and INT are passed on; ends when any of them does.
    pub fn serve_all(&self, runner: &Runner, report: &mut Report) -> Result<i32> {
        let user = self.user(report)?;
        self.folders(user)?;
        let mut children = Vec::new();
        for process in self.kept() {
            let command = self.command(process, user, runner, report)?;
            self.not_running(&process.kind)?;
            fresh(&self.state_dir, &process.kind)?;
            let env = command.os_env();
            let child = AppCommand {
                argv: &command.argv,
                dir: &self.site,
                env: &env,
                user,
            }
            .child()?;
            self.mark_supervised(&command, child.id() as i32)?;
            children.push((process.kind.clone(), child));
        }
        if children.is_empty() {
            bail!("nothing runs ({})", self.app.reason);
        }
        let pids: Vec<i32> = children.iter().map(|(_, c)| c.id() as i32).collect();
        forward_signals(pids)?;
        loop {
            for (kind, child) in &mut children {
                if let Some(status) = child.try_wait()? {
                    report.header(format!("{kind} exited ({})", exit_text(status)));
                    for (_, other) in &mut children {
                        if let Ok(None) = other.try_wait() {
                            let _ = signal(other.id() as i32, rustix::process::Signal::TERM);
                        }
                    }
                    for (_, other) in &mut children {
                        let _ = other.wait();
                    }
                    return Ok(status.code().unwrap_or(1));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Says that `serve` runs this process as `pid` (a deployment then
    /// reloads it so that its supervisor keeps it); gunicorn writes its own
    /// pid file, another program's is written here.
    fn mark_supervised(&self, command: &Command, pid: i32) -> Result<()> {
        let kind = &command.kind;
        crate::files::write_atomic(&marker(&self.state_dir, kind, "serve", pid), b"")?;
        if !command.gunicorn {
            crate::files::write_atomic(
                &pid_file(&self.state_dir, kind),
                format!("{pid}\n").as_bytes(),
            )?;
        }
        Ok(())
    }

    /// `serve` refuses a process that runs already (started detached).
    fn not_running(&self, kind: &str) -> Result<()> {
        match running_pid(&self.state_dir, kind) {
            Some(pid) => bail!(
                "process {kind} is running already (pid {pid}): stop it first with `pushdeploy stop`"
            ),
            None => Ok(()),
        }
    }

    pub fn unknown(&self, kind: &str) -> String {
        let kinds: Vec<&str> = self.kept().map(|p| p.kind.as_str()).collect();
        format!(
            "process {}: the app has no such process (it has: {})",
            crate::error::shown(kind.as_bytes()),
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            }
        )
    }
}

/// Passes TERM and INT on to `pids` (the supervisor's stop reaches the app).
fn forward_signals(pids: Vec<i32>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let sig = if sig == SIGINT {
                rustix::process::Signal::INT
            } else {
                rustix::process::Signal::TERM
            };
            for &pid in &pids {
                let _ = signal(pid, sig);
            }
        }
    });
    Ok(())
}

/// HOME, USER and LOGNAME of a uid, from /etc/passwd.
fn passwd_entry(uid: u32) -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 6 && fields[2].parse() == Ok(uid) {
            return vec![
                ("HOME".into(), fields[5].into()),
                ("USER".into(), fields[0].into()),
                ("LOGNAME".into(), fields[0].into()),
            ];
        }
    }
    Vec::new()
}

/// The addresses a type's gunicorn spec binds (`--bind`, `-b`).
fn spec_file(state_dir: &Path, kind: &str) -> PathBuf {
    run_dir(state_dir).join(format!("{kind}.json"))
}

/// What of a gunicorn's spec a reload in place cannot change (its words,
/// the pinned gunicorn, the app's settings): not what the environment of
/// whoever ran pushdeploy gave it (HOME, LANG, PATH's tail, ...).
fn spec_identity(state_dir: &Path, kind: &str) -> Option<serde_json::Value> {
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spec_file(state_dir, kind)).ok()?).ok()?;
    if let Some(env) = spec["env"].as_object_mut() {
        for name in INHERITED.iter().chain(&["PATH"]) {
            env.remove(*name);
        }
    }
    Some(spec)
}

/// Whether `serve` runs the process `pid` of this type.
fn supervised(state_dir: &Path, kind: &str, pid: i32) -> bool {
    marker(state_dir, kind, "serve", pid).exists()
}

fn spec_binds(state_dir: &Path, kind: &str) -> Vec<String> {
    let spec: Option<serde_json::Value> = std::fs::read(spec_file(state_dir, kind))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let args: Vec<String> = spec
        .and_then(|s| serde_json::from_value(s["args"].clone()).ok())
        .unwrap_or_default();
    let mut binds = Vec::new();
    let mut next = false;
    for arg in args {
        if next {
            binds.push(arg);
            next = false;
        } else if arg == "-b" || arg == "--bind" {
            next = true;
        } else if let Some(value) = arg.strip_prefix("--bind=") {
            binds.push(value.to_string());
        } else if let Some(value) = arg.strip_prefix("-b") {
            binds.push(value.to_string());
        }
    }
    binds
}

/// Gives a file of pushdeploy's to the app's user (when root runs it as
/// the site's owner).
fn give(path: &Path, user: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = user {
        rustix::fs::chown(
            path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .with_context(|| format!("giving {} to the site's owner", path.display()))?;
    }
    Ok(())
}

/// Why `program` cannot be run by `user`, when a folder on the way to what
/// it leads to is closed to that user (an interpreter under root's home):
/// said with the error of a start that was refused.
fn closed_to(program: &OsString, (uid, gid): (u32, u32)) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(program).ok()?;
    let closed = real.ancestors().skip(1).find(|dir| {
        std::fs::metadata(dir).is_ok_and(|m| {
            let bits = if m.uid() == uid {
                m.mode() >> 6
            } else if m.gid() == gid {
                m.mode() >> 3
            } else {
                m.mode()
            };
            bits & 0o1 == 0
        })
    })?;
    Some(format!(
        "{} leads to {}, and {} is closed to the site's owner (uid {uid}), who runs the app: use an interpreter it can reach",
        Path::new(program).display(),
        real.display(),
        closed.display()
    ))
}

/// One process as it is started.
struct Command {
    kind: String,
    argv: Vec<OsString>,
    env: Vec<(String, String)>,
    gunicorn: bool,
}

impl Command {
    /// Its environment as a program is given it.
    fn os_env(&self) -> Vec<(OsString, OsString)> {
        self.env.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }
}

pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

pub fn pid_file(state_dir: &Path, kind: &str) -> PathBuf {
    run_dir(state_dir).join(format!("{kind}.pid"))
}

fn marker(state_dir: &Path, kind: &str, what: &str, pid: i32) -> PathBuf {
    run_dir(state_dir).join(format!("{kind}.{what}.{pid}"))
}

/// The masters the launcher says started since the markers were cleared.
fn started_masters(state_dir: &Path, kind: &str) -> Vec<i32> {
    let prefix = format!("{kind}.start.");
    std::fs::read_dir(run_dir(state_dir))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the launcher's markers of `kind`, but those of `keep`.
fn clear_markers(state_dir: &Path, kind: &str, keep: Option<i32>) {
    let Ok(entries) = std::fs::read_dir(run_dir(state_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        for what in ["start", "ready", "exit", "serve"] {
            if let Some(pid) = name
                .strip_prefix(&format!("{kind}.{what}."))
                .and_then(|p| p.parse::<i32>().ok())
                && Some(pid) != keep
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Whether the env has its own gunicorn (then it is the one that runs).
fn env_has_gunicorn(site: &Path) -> bool {
    crate::installed::site_packages(&site.join("env"))
        .iter()
        .any(|sp| sp.join("gunicorn/__init__.py").is_file())
}

fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Whether the process lives (a zombie does not).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether a pid is a master started through the launcher.
fn is_launcher(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .any(|w| w.ends_with(LAUNCHER_FILE.as_bytes()))
        })
        .unwrap_or(false)
}

/// The running process of a type: its pid file's (gunicorn's `.pid`, or
/// `.pid.2` while a new master waits for the old one to go).
pub fn running_pid(state_dir: &Path, kind: &str) -> Option<i32> {
    running_pids(state_dir, kind).into_iter().next()
}

/// gunicorn's pid file, and the one a new master writes until the old
/// master has gone.
fn pid_files(state_dir: &Path, kind: &str) -> [PathBuf; 2] {
    let file = pid_file(state_dir, kind);
    let mut second = file.clone().into_os_string();
    second.push(".2");
    [file, PathBuf::from(second)]
}

/// Every running master of a type: two while a new one waits for the old
/// one to go.
fn running_pids(state_dir: &Path, kind: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = pid_files(state_dir, kind)
        .iter()
        .filter_map(|f| read_pid(f))
        .filter(|&pid| alive(pid))
        .collect();
    pids.dedup();
    pids
}

/// The types that have a pid file (`.pid`, or only `.pid.2` just after a
/// reload, before the new master took the name).
pub fn running_kinds(state_dir: &Path) -> Vec<String> {
    let mut kinds: Vec<String> = std::fs::read_dir(run_dir(state_dir))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let kind = name.strip_suffix(".pid").or(name.strip_suffix(".pid.2"))?;
                    Some(kind.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    kinds.sort();
    kinds.dedup();
    kinds
}

fn signal(pid: i32, sig: rustix::process::Signal) -> Result<()> {
    let p = rustix::process::Pid::from_raw(pid).context("pid 0")?;
    rustix::process::kill_process(p, sig).with_context(|| format!("signalling pid {pid}"))
}

fn kill_now(pid: i32) {
    let _ = signal(pid, rustix::process::Signal::KILL);
}

/// Waits until `pid` is gone; KILL after `limit`.
fn wait_gone(pid: i32, limit: Duration) {
    if !wait_while(limit, || alive(pid)) {
        kill_now(pid);
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
        }
    }
}

/// Polls `busy` until it is false or `limit` has passed; says whether it
/// ended in time.
fn wait_while(limit: Duration, mut busy: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while busy() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Stops a type's process: TERM (gunicorn: its master, which stops its
/// workers gracefully; another: its whole process group), KILL if it has
/// not gone within a minute; its pid file removed. Says whether one ran.
pub fn stop(state_dir: &Path, kind: &str) -> Option<i32> {
    let pids = running_pids(state_dir, kind);
    for &pid in &pids {
        let group = !is_launcher(pid);
        let sent = rustix::process::Pid::from_raw(pid).map(|p| {
            if group {
                rustix::process::kill_process_group(p, rustix::process::Signal::TERM)
            } else {
                rustix::process::kill_process(p, rustix::process::Signal::TERM)
            }
        });
        if matches!(sent, Some(Ok(()))) {
            wait_gone(pid, Duration::from_secs(60));
        }
    }
    kill_leftovers(state_dir, kind);
    for file in pid_files(state_dir, kind) {
        let _ = crate::files::remove_file_if_there(&file);
    }
    clear_markers(state_dir, kind, None);
    pids.first().copied()
}

/// Kills what is left of a type's gunicorn whose master is gone (`kill -9`
/// leaves its workers holding the port until they notice): every process
/// whose command line names the type's spec file, which only the launcher's
/// masters and their workers do.
fn kill_leftovers(state_dir: &Path, kind: &str) {
    let spec = run_dir(state_dir).join(format!("{kind}.json"));
    let spec = spec.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let names_spec = std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|w| w == spec));
        if names_spec {
            kill_now(pid);
            killed.push(pid);
        }
    }
    for pid in killed {
        wait_gone(pid, Duration::from_secs(5));
    }
}

/// Stops every process that has a pid file, each said.
pub fn stop_all(state_dir: &Path, report: &mut Report) -> bool {
    let mut any = false;
    for kind in running_kinds(state_dir) {
        if let Some(pid) = stop(state_dir, &kind) {
            report.detail(format!("{kind}: stopped (pid {pid})"));
            any = true;
        }
    }
    any
}

/// Before a type starts afresh (not running): what a master killed with
/// `kill -9` left (its workers, its pid file, which gunicorn would take for
/// a running master: a zombie nobody reaps answers kill 0), and the
/// launcher's markers.
fn fresh(state_dir: &Path, kind: &str) -> Result<()> {
    kill_leftovers(state_dir, kind);
    for stale in pid_files(state_dir, kind) {
        crate::files::remove_file_if_there(&stale)?;
    }
    clear_markers(state_dir, kind, None);
    Ok(())
}

/// Fails when another program listens on the address already.
fn check_port(bind: &str, port: u16) -> Result<()> {
    match std::net::TcpListener::bind((bind, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "port {port} on {bind} is in use by another program: stop it, or give the app another port (`git config deploy.port <port>`, or WEBSITES_PORT in .deployment)"
        ),
        Err(e) => bail!("port {port} on {bind}: {e} (setting bind or port)"),
    }
}

fn answers(bind: &str, port: u16) -> bool {
    let host = match bind {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        b => b,
    };
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
}

fn exit_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".into(),
    }
}
