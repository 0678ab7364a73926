//! What the pusher sees (programs are run by `process`): step headers (`-----> `), tool output indented under
//! them, each step's time. Every line is written at once (git relays it live
//! as `remote: ...`) and kept for the deployment's record; of a program's
//! output, the record keeps a bounded head and tail (see `bounded`).

use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;

use anyhow::Result;
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
    /// Lines being folded into one count (see `folding`).
    fold: Option<Fold>,
    /// What went wrong without failing the deployment, for its record.
    pub warnings: Vec<String>,
    /// The output of the program running now, kept in bounds (see `bounded`).
    bound: Option<Bound>,
}

/// The most of one program's output the record keeps at its start, and at
/// its end: a step printing hundreds of megabytes leaves a small record
/// (every `list` reads them all) and takes no more memory.
pub const HEAD_BYTES: usize = 64 << 10;
pub const TAIL_BYTES: usize = 64 << 10;

/// A program's output lines past the head: the last ones, and how many
/// were let go between the head and them.
#[derive(Default)]
struct Bound {
    head: usize,
    tail: VecDeque<String>,
    tail_bytes: usize,
    cut_lines: u64,
    cut_bytes: u64,
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
            fold: None,
            warnings: Vec::new(),
            bound: None,
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
        match &mut self.bound {
            Some(bound) if bound.head + line.len() > HEAD_BYTES => {
                bound.tail_bytes += line.len();
                bound.tail.push_back(line);
                while bound.tail_bytes > TAIL_BYTES {
                    let Some(gone) = bound.tail.pop_front() else {
                        break;
                    };
                    bound.tail_bytes -= gone.len();
                    bound.cut_lines += 1;
                    bound.cut_bytes += gone.len() as u64;
                }
            }
            Some(bound) => {
                bound.head += line.len();
                self.log.push(line);
            }
            None => self.log.push(line),
        }
    }

    /// Runs `f` (a program's run) with its output printed whole but kept
    /// for the record as its first and last `HEAD_BYTES`/`TAIL_BYTES`, with
    /// a line where it was cut saying how much was left out.
    pub fn bounded<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        if self.bound.is_some() {
            return f(self);
        }
        self.bound = Some(Bound::default());
        let result = f(self);
        let bound = self.bound.take().expect("set above");
        if bound.cut_lines > 0 {
            self.log.push(format!(
                "{INDENT}[output cut here: {} lines ({} bytes) not kept in the record; the pusher saw them]",
                bound.cut_lines, bound.cut_bytes
            ));
        }
        self.log.extend(bound.tail);
        result
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

    /// A header line `Warning: <text>`, kept for the record's warnings.
    pub fn warning(&mut self, text: String) {
        self.header(format!("Warning: {text}"));
        self.warnings.push(text);
    }

    /// Fills a record's steps, warnings and log from what was reported.
    pub fn fill(&self, record: &mut crate::record::Record) {
        record.steps = self.steps.clone();
        record.warnings = self.warnings.clone();
        record.log = self.log.clone();
    }
}

pub fn seconds_text(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else {
        format!("{seconds:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that counts what the pusher was sent.
    struct Counted(std::rc::Rc<std::cell::Cell<usize>>);

    impl Write for Counted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.set(self.0.get() + buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_programs_output_is_kept_to_its_head_and_tail() {
        let sent = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut report = Report::new(Box::new(Counted(sent.clone())));
        report.header("step");
        report.bounded(|r| {
            for n in 0..100_000 {
                r.detail(format!("line {n:06} {}", "x".repeat(50)));
            }
        });
        report.header("next");
        // The pusher saw every line; the record keeps about 128 KiB.
        assert!(sent.get() > 100_000 * 60, "{}", sent.get());
        let kept: usize = report.log.iter().map(String::len).sum();
        assert!(kept < HEAD_BYTES + TAIL_BYTES + 1000, "{kept}");
        assert_eq!(report.log[0], "-----> step");
        assert!(report.log[1].contains("line 000000"));
        assert!(report.log[report.log.len() - 2].contains("line 099999"));
        assert_eq!(report.log[report.log.len() - 1], "-----> next");
        let cut = report
            .log
            .iter()
            .find(|l| l.contains("[output cut here: "))
            .expect("a line says where it was cut");
        assert!(cut.contains(" lines ("), "{cut}");
    }
}
