//! How a deployment runs a program; every spawn goes through here (and only
//! here: a test scans the other modules). A step's program, and a program
//! that only answers a question (an interpreter's probe, a tool's version,
//! the closure of the requirements), run the same way.
//!
//! Each program runs in a process group of its own (so it and everything it
//! starts can be killed at once) and dies with pushdeploy (PR_SET_PDEATHSIG).
//! Its output is read in pieces as it comes, into the report line by line
//! (a step's) or a capped buffer (an answer's): memory does not grow with
//! its size. A program that shows no sign of work (no byte of output, and
//! no CPU time used by its process group) for the idle timeout is killed
//! whole, as is one that outlives the deployment's time limit; a build step
//! that exits has what it left in its group killed. While a step runs, its group is recorded in the
//! state dir, so that after pushdeploy itself is killed the next holder of
//! the lock kills what it left (`kill_left_behind`).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, mpsc::RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::settings::{DEPLOYMENT_TIMEOUT, IDLE_TIMEOUT, Values};

/// The time limits of a deployment's programs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Kudu's `SCM_COMMAND_IDLE_TIMEOUT`: no output and no CPU time for this long.
    pub idle: Duration,
    /// The whole deployment.
    pub total: Duration,
}

impl Limits {
    /// The settings' defaults.
    pub const DEFAULT: Limits = Limits {
        idle: Duration::from_secs(60),
        total: Duration::from_secs(3600),
    };

    pub fn from_values(values: &Values) -> Limits {
        let seconds =
            |key, default: Duration| values.seconds(key).map_or(default, Duration::from_secs);
        Limits {
            idle: seconds(IDLE_TIMEOUT, Limits::DEFAULT.idle),
            total: seconds(DEPLOYMENT_TIMEOUT, Limits::DEFAULT.total),
        }
    }
}

/// Runs a deployment's programs.
#[derive(Clone)]
pub struct Runner {
    /// Variables for every program (`.deployment`'s app settings).
    env: Vec<(OsString, OsString)>,
    limits: Limits,
    deadline: Instant,
    /// The file that records the running steps' process groups.
    groups: Option<PathBuf>,
}

impl Runner {
    /// A runner whose programs get `env`, recording their process groups in
    /// `state_dir` (none: not recorded).
    pub fn new(env: Vec<(OsString, OsString)>, limits: Limits, state_dir: Option<&Path>) -> Runner {
        Runner {
            env,
            limits,
            deadline: Instant::now() + limits.total,
            groups: state_dir.map(groups_file),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The app settings every program gets, as text.
    pub fn app_settings(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    /// The same runner without the app settings: for the server's own
    /// commands (`postDeploy`, the health check).
    pub fn for_server(&self) -> Runner {
        Runner {
            env: Vec::new(),
            limits: self.limits,
            deadline: self.deadline,
            groups: self.groups.clone(),
        }
    }

    /// Fails once the deployment's time limit has passed.
    pub fn check_deadline(&self) -> Result<()> {
        if Instant::now() >= self.deadline {
            return Err(TimedOut(format!(
                "the deployment took longer than its limit ({} s, setting {})",
                self.limits.total.as_secs(),
                DEPLOYMENT_TIMEOUT.name
            ))
            .into());
        }
        Ok(())
    }

    /// The same runner, its deadline counted from `start` (when the
    /// deployment began, before its plan ran programs of its own).
    pub fn started_at(mut self, start: Instant) -> Runner {
        self.deadline = start + self.limits.total;
        self
    }

    /// Runs a build step's program, its output (stdout and stderr) streamed
    /// to the pusher line by line as it comes (a bounded head and tail of it
    /// kept for the record); fails with the exit status when the program
    /// does, or when it times out. When it exits, whatever it left running in
    /// its process group is killed before anything reads what it made: a
    /// background process must not go on changing the staging dir or the site.
    pub fn run(&self, report: &mut Report, what: &str, expr: duct::Expression) -> Result<()> {
        self.run_showing(report, what, expr, &[])
    }

    /// `run` for a program that may leave a server behind when it succeeds
    /// (`postDeploy`): its group is killed only when it fails or times out.
    pub fn run_leaving_server(
        &self,
        report: &mut Report,
        what: &str,
        expr: duct::Expression,
    ) -> Result<()> {
        self.run_lines(report, what, expr, &[], Leftovers::KeepOnSuccess)
    }

    /// `run`, with each `(from, to)` of `names` replaced in the output: an
    /// env built aside is named as `env`, where it will be.
    pub fn run_showing(
        &self,
        report: &mut Report,
        what: &str,
        expr: duct::Expression,
        names: &[(String, String)],
    ) -> Result<()> {
        self.run_lines(report, what, expr, names, Leftovers::Kill)
    }

    fn run_lines(
        &self,
        report: &mut Report,
        what: &str,
        expr: duct::Expression,
        names: &[(String, String)],
        leftovers: Leftovers,
    ) -> Result<()> {
        let show = |line: String| {
            names
                .iter()
                .fold(line, |line, (from, to)| line.replace(from.as_str(), to))
        };
        let expr = expr.env("PYTHONUNBUFFERED", "1").stderr_to_stdout();
        report.bounded(|report| {
            let mut lines = Lines::default();
            let status = self.supervise(what, expr, leftovers, |_, bytes| {
                lines.push(bytes, |line| {
                    report.detail(show(String::from_utf8_lossy(line).into_owned()))
                })
            });
            lines.finish(|line| report.detail(show(String::from_utf8_lossy(line).into_owned())));
            let status = status?;
            if status.left_output_open {
                report.detail(format!("({what} exited, leaving a process in the background that holds its output; not waiting for it)"));
            }
            if !status.status.success() {
                match status.status.code() {
                    Some(code) => bail!("{what} exited with status {code}"),
                    None => bail!("{what} was killed by a signal"),
                }
            }
            Ok(())
        })
    }

    /// Runs a program that answers a question (a version, a probe, what a
    /// requirement needs), under the same limits and rules as a step; its
    /// output is not shown. Fails when it cannot start or times out; a
    /// program that exits with an error is an answer too (`success` false).
    pub fn capture(&self, what: &str, expr: duct::Expression) -> Result<Captured> {
        let mut captured = Captured::default();
        let mut too_much = false;
        let status = self.supervise(what, expr, Leftovers::Kill, |stream, bytes| {
            let kept = match stream {
                Stream::Out => &mut captured.stdout,
                Stream::Err => &mut captured.stderr,
            };
            let room = MAX_ANSWER.saturating_sub(kept.len());
            too_much |= bytes.len() > room;
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        })?;
        if too_much {
            bail!("{what} printed more than {} MiB", MAX_ANSWER >> 20);
        }
        captured.success = status.status.success();
        Ok(captured)
    }

    /// The standard output of a program that answers a question, when it
    /// runs and succeeds (see `capture`).
    pub fn answer(&self, what: &str, expr: duct::Expression) -> Option<Vec<u8>> {
        let out = self.capture(what, expr).ok()?;
        out.success.then_some(out.stdout)
    }

    /// Starts a program in its own process group under the spawn rules and
    /// the app settings, hands each piece of its output to `take` as it
    /// comes, and watches it: no sign of work (no byte of output, no CPU
    /// time) for the idle limit, or the deployment's deadline passed, and
    /// its group is killed.
    fn supervise(
        &self,
        what: &str,
        expr: duct::Expression,
        leftovers: Leftovers,
        mut take: impl FnMut(Stream, &[u8]),
    ) -> Result<Status> {
        self.check_deadline()?;
        let (out_read, out_write) = std::io::pipe().context("a pipe for a program's output")?;
        let (err_read, err_write) = std::io::pipe().context("a pipe for a program's output")?;
        let handle = {
            let expr = self
                .env
                .iter()
                .fold(spawn_rules(expr), |e, (k, v)| e.env(k, v))
                .stdout_file(out_write)
                .stderr_file(err_write)
                .stdin_null()
                .unchecked();
            expr.start().with_context(|| format!("starting {what}"))?
            // The expression, and with it our copies of the pipes' write
            // ends, is dropped here: the pipes close when the program's do.
        };
        let pgid = handle.pids().first().copied().unwrap_or(0) as i32;
        let group = Group {
            pgid,
            start: start_time(pgid).unwrap_or(0),
            what: what.to_string(),
        };
        self.record(|groups| groups.push(group.clone()));
        // Output is read on threads of their own, a piece at a time (never a
        // line: one without a newline may be any size), through a short
        // queue: memory does not grow with the output. A process the program
        // left in the background can keep a pipe open after the program
        // exited, and the deployment must not wait for it.
        let (send, pieces) = mpsc::sync_channel::<(Stream, Vec<u8>)>(4);
        for (stream, mut pipe) in [(Stream::Out, out_read), (Stream::Err, err_read)] {
            let send = send.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0; 64 * 1024];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if send.send((stream, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            });
        }
        drop(send);
        let mut open = true;
        let mut closed: Option<Instant> = None;
        let mut last_sign = Instant::now();
        let mut cpu = group_cpu_ticks(pgid);
        let mut sampled = Instant::now();
        let mut timed_out = None;
        let output = loop {
            if open {
                match pieces.recv_timeout(Duration::from_millis(100)) {
                    // Any byte is a sign of work, a line ended or not.
                    Ok((stream, bytes)) => {
                        last_sign = Instant::now();
                        take(stream, &bytes);
                    }
                    Err(RecvTimeoutError::Disconnected) => open = false,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            } else {
                // The output closed as the program exits: look again soon
                // (a 20 ms pause cost a short program most of its time).
                let waited = closed.get_or_insert_with(Instant::now).elapsed();
                let pause = if waited < Duration::from_millis(100) {
                    1
                } else {
                    20
                };
                std::thread::sleep(Duration::from_millis(pause));
            }
            if let Some(output) = handle.try_wait()?.cloned() {
                break output;
            }
            if timed_out.is_some() {
                continue;
            }
            // CPU time used by the group is a sign of work too: a long,
            // silent build compiles; a hung network read does not.
            if sampled.elapsed() >= Duration::from_millis(500) {
                sampled = Instant::now();
                let now = group_cpu_ticks(pgid);
                if now > cpu {
                    last_sign = Instant::now();
                }
                cpu = now;
            }
            if last_sign.elapsed() >= self.limits.idle {
                timed_out = Some(format!(
                    "{what} showed no sign of work (no output, no CPU time) for {} s (setting {}): killed with every process it started",
                    self.limits.idle.as_secs(),
                    IDLE_TIMEOUT.name
                ));
            } else if Instant::now() >= self.deadline {
                timed_out = Some(format!(
                    "the deployment took longer than its limit ({} s, setting {}): {what} killed with every process it started",
                    self.limits.total.as_secs(),
                    DEPLOYMENT_TIMEOUT.name
                ));
            }
            if timed_out.is_some() {
                kill_group(pgid);
            }
        };
        // Exited: nothing it left in its group may go on writing while its
        // output is read and used (a server `postDeploy` started may stay).
        if leftovers == Leftovers::Kill || !output.status.success() {
            kill_group(pgid);
        }
        // Take what is still on its way, briefly.
        let grace = Instant::now() + Duration::from_secs(1);
        while open {
            match pieces.recv_timeout(grace.saturating_duration_since(Instant::now())) {
                Ok((stream, bytes)) => take(stream, &bytes),
                Err(RecvTimeoutError::Disconnected) => open = false,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        self.record(|groups| groups.retain(|g| g.pgid != pgid));
        if let Some(why) = timed_out {
            return Err(TimedOut(why).into());
        }
        Ok(Status {
            status: output.status,
            left_output_open: open,
        })
    }

    /// Changes the record of running groups. Failing to write it must not
    /// fail a step: it only helps the next deployment clean up.
    fn record(&self, change: impl FnOnce(&mut Vec<Group>)) {
        let Some(path) = &self.groups else { return };
        let mut groups = read_groups(path);
        change(&mut groups);
        let _ = if groups.is_empty() {
            crate::files::remove_file_if_there(path)
        } else {
            serde_json::to_vec(&groups)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| crate::files::write_atomic(path, &bytes))
        };
    }
}

/// A program outlived a limit, or the deployment its deadline: an error
/// that no caller may take for a mere "no" (see `is_timeout`).
#[derive(Debug)]
pub struct TimedOut(String);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimedOut {}

/// Whether `error` is (or was caused by) a time limit.
pub fn is_timeout(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<TimedOut>())
}

/// The longest answer a program may give on each output (`capture`).
const MAX_ANSWER: usize = 16 << 20;
/// The longest line of a step's output: a longer one is shown in pieces of
/// this size, so that output without newlines takes no more memory.
const MAX_LINE: usize = 4096;

/// Which of a program's outputs a piece comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// What becomes of the processes a program leaves in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leftovers {
    /// Killed once it exits: a build step, a probe.
    Kill,
    /// Kept when it succeeds: the server a `postDeploy` starts.
    KeepOnSuccess,
}

/// How a supervised program ended.
struct Status {
    status: std::process::ExitStatus,
    /// A process it left (out of its group) still holds its output.
    left_output_open: bool,
}

/// What an answering program printed (see `Runner::capture`).
#[derive(Debug, Default)]
pub struct Captured {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A step's output cut into lines as it comes. Progress output rewrites
/// its line with `\r`: the last state is shown. A line longer than
/// `MAX_LINE` is passed on in pieces.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
    after_cr: bool,
}

impl Lines {
    fn push(&mut self, bytes: &[u8], mut line: impl FnMut(&[u8])) {
        for &b in bytes {
            match b {
                b'\n' => {
                    line(&self.pending);
                    self.pending.clear();
                    self.after_cr = false;
                }
                b'\r' => self.after_cr = true,
                _ => {
                    if std::mem::take(&mut self.after_cr) {
                        self.pending.clear();
                    }
                    self.pending.push(b);
                    if self.pending.len() >= MAX_LINE {
                        line(&self.pending);
                        self.pending.clear();
                    }
                }
            }
        }
    }

    fn finish(&mut self, mut line: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            line(&self.pending);
            self.pending.clear();
        }
    }
}

/// The last line that says something in a failed program's error output.
pub fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Runs a program the user asked to see (journalctl for `logs`) on the
/// terminal: its input and output are pushdeploy's, no time limit (`logs -f`
/// runs until interrupted), and it dies with pushdeploy.
pub fn run_attached(
    argv: &[OsString],
    env: &[(OsString, OsString)],
) -> Result<std::process::ExitStatus> {
    let (program, args) = argv.split_first().context("an empty command line")?;
    let expr = env
        .iter()
        .fold(duct::cmd(program, args), |e, (k, v)| e.env(k, v));
    let shown = program.to_string_lossy();
    let output = spawn_rules(expr)
        .unchecked()
        .run()
        .with_context(|| format!("running {shown}"))?;
    Ok(output.status)
}

/// Starts pushdeploy itself with `args`, to outlive this process on purpose
/// (the removal of old envs after a push's last line): not under the spawn
/// rules, in a process group of its own, with no input and its output
/// nowhere (git waits until every copy of the hook's output is closed);
/// not waited for. Descriptors it must inherit are made inheritable first.
pub fn start_detached(args: &[std::ffi::OsString]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    Ok(())
}

/// The spawn rules for any program pushdeploy runs: a process group of
/// its own, and death with pushdeploy, however pushdeploy ends. A killed
/// deployment must not leave pip running on an env while the kernel has
/// already handed the lock to the next deployment.
fn spawn_rules(expr: duct::Expression) -> duct::Expression {
    use std::os::unix::process::CommandExt;
    expr.before_spawn(|cmd| {
        cmd.process_group(0);
        let parent = rustix::process::getpid();
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes async-signal-safe system calls (prctl, getppid).
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                // pushdeploy died before the line above: no signal will come.
                if rustix::process::getppid() != Some(parent) {
                    return Err(std::io::Error::other("pushdeploy ended"));
                }
                Ok(())
            });
        }
        Ok(())
    })
}

/// A running step's process group, as recorded in the state dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    pgid: i32,
    /// The leader's start time (clock ticks since boot): tells our group
    /// from a later one that got the same number.
    start: u64,
    what: String,
}

fn groups_file(state_dir: &Path) -> PathBuf {
    state_dir.join("processes.json")
}

fn read_groups(path: &Path) -> Vec<Group> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Kills the process groups of steps that a killed deployment left running,
/// and forgets them; returns what they were running. Called with the lock
/// held, before anything changes.
pub fn kill_left_behind(state_dir: &Path) -> Result<Vec<String>> {
    let path = groups_file(state_dir);
    let mut killed = Vec::new();
    for (pgid, what) in still_running(&path) {
        kill_group(pgid);
        killed.push(what);
    }
    crate::files::remove_file_if_there(&path)?;
    Ok(killed)
}

/// What [`kill_left_behind`] would kill, without killing it (the dry run).
pub fn left_behind(state_dir: &Path) -> Vec<String> {
    still_running(&groups_file(state_dir))
        .into_iter()
        .map(|(_, what)| what)
        .collect()
}

/// The recorded process groups that still have processes, each with what
/// it ran.
fn still_running(path: &Path) -> Vec<(i32, String)> {
    let mut running = Vec::new();
    for group in read_groups(path) {
        if group.pgid <= 1 {
            continue;
        }
        // The number is ours while any process is in the group (Linux does
        // not hand out a pid that is still a group's id). Once the group is
        // empty it may be reused: then its leader's start time differs.
        let members = group_members(group.pgid);
        let reused = members.contains(&group.pgid)
            && start_time(group.pgid).is_some_and(|t| t != group.start);
        if !members.is_empty() && !reused {
            running.push((
                group.pgid,
                format!("{} (process group {})", group.what, group.pgid),
            ));
        }
    }
    running
}

fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// The fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    // The state is a letter: skip it, keep the numbers (field 4 on).
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse::<i64>().map_or(0, |n| n.max(0) as u64))
            .collect(),
    )
}

// Indexes into `stat_fields`: field n of proc(5) is at n - 4.
const PGRP: usize = 1;
const UTIME: usize = 10;
const CSTIME: usize = 13;
const STARTTIME: usize = 18;

fn start_time(pid: i32) -> Option<u64> {
    stat_fields(&pid.to_string())?.get(STARTTIME).copied()
}

/// The processes whose group is `pgid`, and their stat fields.
fn group_stats(pgid: i32) -> Vec<(i32, Vec<u64>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid: i32 = name.parse().ok()?;
            let fields = stat_fields(&name)?;
            (fields.get(PGRP).copied() == Some(pgid as u64)).then_some((pid, fields))
        })
        .collect()
}

fn group_members(pgid: i32) -> Vec<i32> {
    group_stats(pgid).into_iter().map(|(pid, _)| pid).collect()
}

/// CPU time used by a group's processes and the children they waited for.
fn group_cpu_ticks(pgid: i32) -> u64 {
    group_stats(pgid)
        .iter()
        .map(|(_, f)| f.get(UTIME..=CSTIME).map_or(0, |t| t.iter().sum::<u64>()))
        .sum()
}

/// `expr` run as `user` (uid, gid) when root runs the app as the site's
/// owner: a step that is the app's own code (`release:`).
pub fn as_user(expr: duct::Expression, user: Option<(u32, u32)>) -> duct::Expression {
    use std::os::unix::process::CommandExt;
    match user {
        Some((uid, gid)) => expr.before_spawn(move |cmd| {
            cmd.uid(uid).gid(gid);
            Ok(())
        }),
        None => expr,
    }
}

/// How an app process is started (see `crate::processes`): its words, its
/// folder, its whole environment, and the user it runs as (`None`: this one).
pub struct AppCommand<'a> {
    pub argv: &'a [OsString],
    pub dir: &'a Path,
    pub env: &'a [(OsString, OsString)],
    pub user: Option<(u32, u32)>,
}

impl AppCommand<'_> {
    fn command(&self) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .current_dir(self.dir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some((uid, gid)) = self.user {
            // std drops the supplementary groups too when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Starts it detached from pushdeploy: a session of its own (it outlives
    /// the push, and no terminal's signal reaches it), stdin /dev/null, its
    /// output into `output`. Not killed with pushdeploy, unlike a step.
    pub fn detached(&self, output: impl Into<std::os::fd::OwnedFd>) -> Result<std::process::Child> {
        let output = std::fs::File::from(output.into());
        let mut cmd = self.command();
        cmd.stdin(std::process::Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        self.spawn_in_own_session(cmd)
    }

    /// Starts it with its output into a pipe's write end and its stdin from
    /// `input` (the log writer: `output` is its input).
    pub fn detached_reading(&self, input: std::io::PipeReader) -> Result<std::process::Child> {
        let mut cmd = self.command();
        cmd.stdin(input)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        self.spawn_in_own_session(cmd)
    }

    /// A session of its own: it outlives the push, and no terminal's
    /// signal reaches it.
    fn spawn_in_own_session(&self, mut cmd: std::process::Command) -> Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                Ok(())
            });
        }
        cmd.spawn()
            .with_context(|| format!("starting {}", self.argv[0].to_string_lossy()))
    }

    /// Starts it as a child in the foreground (`pushdeploy serve`).
    pub fn child(&self) -> Result<std::process::Child> {
        self.command()
            .stdin(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.argv[0].to_string_lossy()))
    }

    /// Replaces pushdeploy with it (`serve --process`): a supervisor's main
    /// pid is then the app's own. Returns only on failure.
    pub fn exec(&self) -> anyhow::Error {
        use std::os::unix::process::CommandExt;
        let e = self.command().exec();
        anyhow::anyhow!("starting {}: {e}", self.argv[0].to_string_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only this module starts programs: anything else that did would run
    /// without the process group, the limits or the kill on death.
    #[test]
    fn no_other_module_starts_a_program() {
        // The ways a program is started (duct's and the standard library's).
        const STARTS: &[&str] = &[
            "Command::new",
            "process::Command",
            "CommandExt",
            ".spawn(",
            ".start()",
            ".reader()",
            ".run()",
            ".unchecked()",
            "_capture()",
            "_null()",
            "spawn_rules",
        ];
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&src).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "process.rs" || !name.ends_with(".rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for start in STARTS.iter().filter(|s| code.contains(*s)) {
                    found.push(format!("src/{name}:{}: {start}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "programs started outside process.rs:\n{}",
            found.join("\n")
        );
    }

    /// Output cut into lines: any size, `\r` progress as its last state.
    #[test]
    fn lines_are_cut_and_bounded() {
        let mut lines = Lines::default();
        let mut seen = Vec::new();
        let mut take = |l: &[u8]| seen.push(String::from_utf8_lossy(l).into_owned());
        lines.push(b"one\ntw", &mut take);
        lines.push(b"o\r\n10%\r50%\r100%\nlast", &mut take);
        lines.finish(&mut take);
        assert_eq!(seen, ["one", "two", "100%", "last"]);
        let mut longest = 0;
        let mut count = 0;
        let mut lines = Lines::default();
        for _ in 0..100 {
            lines.push(&[0; 1000], |l| {
                longest = longest.max(l.len());
                count += 1;
            });
        }
        assert_eq!(longest, MAX_LINE);
        assert_eq!(count, 100_000 / MAX_LINE);
    }

    #[test]
    fn reads_own_stat() {
        let me = std::process::id().to_string();
        let fields = stat_fields(&me).unwrap();
        assert!(fields.len() > STARTTIME);
        assert_eq!(
            start_time(std::process::id() as i32),
            Some(fields[STARTTIME])
        );
    }
}
