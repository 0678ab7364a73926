//! How a deployment runs a program; every spawn goes through here.
//!
//! Each program runs in a process group of its own (so it and everything it
//! starts can be killed at once) and dies with pushdeploy (PR_SET_PDEATHSIG).
//! Its output streams into the report line by line. A step that shows no
//! sign of work (no output, and no CPU time used by its process group) for
//! the idle timeout is killed whole, as is one that outlives the
//! deployment's time limit. While a step runs, its group is recorded in the
//! state dir, so that after pushdeploy itself is killed the next holder of
//! the lock kills what it left (`kill_left_behind`).

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc, mpsc::RecvTimeoutError};
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
            bail!(
                "the deployment took longer than its limit ({} s, setting {})",
                self.limits.total.as_secs(),
                DEPLOYMENT_TIMEOUT.name
            );
        }
        Ok(())
    }

    /// Runs a program, its output (stdout and stderr) indented line by line
    /// as it comes; fails with the exit status when the program does, or
    /// when it times out (then it is killed with every process of its group).
    /// A program that failed has the rest of its group killed too; one that
    /// succeeded may leave processes behind (a server `postDeploy` starts).
    pub fn run(&self, report: &mut Report, what: &str, expr: duct::Expression) -> Result<()> {
        self.run_showing(report, what, expr, &[])
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
        let show = |line: String| {
            names
                .iter()
                .fold(line, |line, (from, to)| line.replace(from.as_str(), to))
        };
        self.check_deadline()?;
        let expr = self
            .env
            .iter()
            .fold(spawn_rules(expr), |e, (k, v)| e.env(k, v));
        let reader = expr
            .env("PYTHONUNBUFFERED", "1")
            .stderr_to_stdout()
            .stdin_null()
            .unchecked()
            .reader()
            .with_context(|| format!("starting {what}"))?;
        let reader = Arc::new(reader);
        let pgid = reader.pids().first().copied().unwrap_or(0) as i32;
        let group = Group {
            pgid,
            start: start_time(pgid).unwrap_or(0),
            what: what.to_string(),
        };
        self.record(|groups| groups.push(group.clone()));
        // Lines are read on a thread of their own: a process the program left
        // in the background can keep the pipe open after the program exited,
        // and the deployment must not wait for it.
        let (send, lines) = mpsc::channel();
        let source = Arc::clone(&reader);
        std::thread::spawn(move || {
            let mut input = BufReader::new(&*source);
            let mut buf = Vec::new();
            while matches!(input.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                // Progress output rewrites its line with \r: show the last state.
                let text = String::from_utf8_lossy(&buf);
                let line = text
                    .trim_end_matches(['\n', '\r'])
                    .rsplit('\r')
                    .next()
                    .unwrap_or("")
                    .to_string();
                if send.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let mut last_sign = Instant::now();
        let mut cpu = group_cpu_ticks(pgid);
        let mut sampled = Instant::now();
        let mut timed_out = None;
        let output = loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    last_sign = Instant::now();
                    report.detail(show(line));
                }
                // All output read: wait for the exit status.
                Err(RecvTimeoutError::Disconnected) => match reader.try_wait()? {
                    Some(output) => break output.clone(),
                    None => std::thread::sleep(Duration::from_millis(5)),
                },
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(output) = reader.try_wait()?.cloned() {
                        // Exited: take what is still on its way, briefly.
                        let grace = Instant::now() + Duration::from_secs(1);
                        loop {
                            match lines
                                .recv_timeout(grace.saturating_duration_since(Instant::now()))
                            {
                                Ok(line) => report.detail(show(line)),
                                Err(RecvTimeoutError::Disconnected) => break,
                                Err(RecvTimeoutError::Timeout) => {
                                    report.detail(format!("({what} exited, leaving a process in the background that holds its output; not waiting for it)"));
                                    break;
                                }
                            }
                        }
                        break output;
                    }
                }
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
        if !output.status.success() {
            // Nothing of a failed step may go on writing.
            kill_group(pgid);
        }
        self.record(|groups| groups.retain(|g| g.pgid != pgid));
        if let Some(why) = timed_out {
            bail!(why);
        }
        if !output.status.success() {
            match output.status.code() {
                Some(code) => bail!("{what} exited with status {code}"),
                None => bail!("{what} was killed by a signal"),
            }
        }
        Ok(())
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

/// The standard output of a program that only answers a question (a version,
/// a probe), run under the spawn rules; `None` when it cannot run or fails.
pub fn answer(expr: duct::Expression) -> Option<Vec<u8>> {
    let out = spawn_rules(expr)
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .ok()?;
    out.status.success().then_some(out.stdout)
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

/// The spawn rules for any program pushdeploy runs, also outside a
/// deployment (an interpreter asked for its version): a process group of
/// its own, and death with pushdeploy, however pushdeploy ends. A killed
/// deployment must not leave pip running on an env while the kernel has
/// already handed the lock to the next deployment.
pub fn spawn_rules(expr: duct::Expression) -> duct::Expression {
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

#[cfg(test)]
mod tests {
    use super::*;

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
