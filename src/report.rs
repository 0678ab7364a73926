//! What the pusher sees: step headers (`-----> `), tool output indented under
//! them, each step's time. Every line is written at once (git relays it live
//! as `remote: ...`) and kept for the deployment's record.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, mpsc, mpsc::RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepTime {
    pub step: String,
    pub seconds: f64,
}

pub struct Report {
    out: Box<dyn Write>,
    pub log: Vec<String>,
    pub steps: Vec<StepTime>,
    /// The step running now, named in a failure.
    pub current: Option<String>,
    /// Variables for every program a step runs (`.deployment` app settings).
    pub extra_env: Vec<(String, String)>,
    /// Lines being folded into one count (see `folding`).
    fold: Option<Fold>,
}

/// A run of output lines that start with `prefix` (one per file), printed
/// as one line when it ends: how many, the first and the last.
struct Fold {
    prefix: &'static str,
    count: usize,
    first: String,
    last: String,
}

pub const INDENT: &str = "       ";

impl Report {
    pub fn new(out: Box<dyn Write>) -> Self {
        Report {
            out,
            log: Vec::new(),
            steps: Vec::new(),
            current: None,
            extra_env: Vec::new(),
            fold: None,
        }
    }

    pub fn stdout() -> Self {
        Report::new(Box::new(std::io::stdout()))
    }

    fn emit(&mut self, line: String) {
        // Names, messages and program output come from the commit: no control
        // character of theirs reaches the pusher's terminal or the record.
        let line = crate::error::printable(&line).into_owned();
        // A closed pipe (the pusher went away) must not stop the deployment.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
        self.log.push(line);
    }

    pub fn header(&mut self, text: impl AsRef<str>) {
        self.emit(format!("-----> {}", text.as_ref()));
    }

    pub fn detail(&mut self, text: impl AsRef<str>) {
        let text = text.as_ref();
        if let Some(fold) = &mut self.fold {
            if text.starts_with(fold.prefix) {
                if fold.count == 0 {
                    fold.first = text.to_string();
                }
                fold.last = text.to_string();
                fold.count += 1;
                return;
            }
            self.end_fold_run();
        }
        self.emit(format!("{INDENT}{text}"));
    }

    /// Runs `f` with each run of two or more lines that start with `prefix`
    /// printed as one: `Deleting 173 files ('a.css' ... 'z.js')` for
    /// Django's one `Deleting '<file>'` line per file.
    pub fn folding<T>(&mut self, prefix: &'static str, f: impl FnOnce(&mut Self) -> T) -> T {
        self.fold = Some(Fold {
            prefix,
            count: 0,
            first: String::new(),
            last: String::new(),
        });
        let result = f(self);
        self.end_fold_run();
        self.fold = None;
        result
    }

    fn end_fold_run(&mut self) {
        let Some(fold) = &mut self.fold else { return };
        let (count, first, last) = (
            std::mem::take(&mut fold.count),
            std::mem::take(&mut fold.first),
            std::mem::take(&mut fold.last),
        );
        let verb = fold.prefix.trim_end_matches(['\'', ' ']);
        // `Deleting 'css/site.css'` -> `css/site.css`.
        let name = |line: String| line[fold.prefix.len()..].trim_end_matches('\'').to_string();
        let line = match count {
            0 => return,
            1 => first,
            _ => format!(
                "{verb} {count} files ('{}' ... '{}')",
                name(first),
                name(last)
            ),
        };
        self.emit(format!("{INDENT}{line}"));
    }

    /// Runs one step under its header and reports its time.
    pub fn step<T>(
        &mut self,
        name: &str,
        header: impl AsRef<str>,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.header(header);
        self.current = Some(name.to_string());
        let start = Instant::now();
        let result = f(self);
        let seconds = start.elapsed().as_secs_f64();
        self.steps.push(StepTime {
            step: name.to_string(),
            seconds,
        });
        if result.is_ok() {
            self.detail(format!("{name}: done in {}", seconds_text(seconds)));
            self.current = None;
        }
        result
    }

    /// Runs a program, its output (stdout and stderr) indented line by line as
    /// it comes; fails with the exit status when the program does.
    pub fn run(&mut self, what: &str, expr: duct::Expression) -> Result<()> {
        let expr = self
            .extra_env
            .iter()
            .fold(dies_with_us(expr), |e, (k, v)| e.env(k, v));
        let reader = expr
            .env("PYTHONUNBUFFERED", "1")
            .stderr_to_stdout()
            .stdin_null()
            .unchecked()
            .reader()
            .with_context(|| format!("starting {what}"))?;
        let reader = Arc::new(reader);
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
        let output = loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.detail(line),
                // All output read: wait for the exit status.
                Err(RecvTimeoutError::Disconnected) => match reader.try_wait()? {
                    Some(output) => break output.clone(),
                    None => std::thread::sleep(Duration::from_millis(5)),
                },
                Err(RecvTimeoutError::Timeout) => {
                    let Some(output) = reader.try_wait()?.cloned() else {
                        continue;
                    };
                    // Exited: take what is still on its way, briefly.
                    let grace = Instant::now() + Duration::from_secs(1);
                    loop {
                        match lines.recv_timeout(grace.saturating_duration_since(Instant::now())) {
                            Ok(line) => self.detail(line),
                            Err(RecvTimeoutError::Disconnected) => break,
                            Err(RecvTimeoutError::Timeout) => {
                                self.detail(format!("({what} exited, leaving a process in the background that holds its output; not waiting for it)"));
                                break;
                            }
                        }
                    }
                    break output;
                }
            }
        };
        if !output.status.success() {
            match output.status.code() {
                Some(code) => bail!("{what} exited with status {code}"),
                None => bail!("{what} was killed by a signal"),
            }
        }
        Ok(())
    }
}

/// Makes the program end when pushdeploy does, however it ends: a killed
/// deployment must not leave pip running on an env while the kernel has
/// already handed the lock to the next deployment.
pub fn dies_with_us(expr: duct::Expression) -> duct::Expression {
    use std::os::unix::process::CommandExt;
    expr.before_spawn(|cmd| {
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes one async-signal-safe system call (prctl).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        Ok(())
    })
}

pub fn seconds_text(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else {
        format!("{seconds:.1} s")
    }
}
