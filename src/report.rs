//! What the pusher sees (programs are run by `process`): step headers (`-----> `), tool output indented under
//! them, each step's time. Every line is written at once (git relays it live
//! as `remote: ...`) and kept for the deployment's record.

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
}

pub const INDENT: &str = "       ";

impl Report {
    pub fn new(out: Box<dyn Write>) -> Self {
        Report {
            out,
            log: Vec::new(),
            steps: Vec::new(),
            current: None,
        }
    }

    pub fn stdout() -> Self {
        Report::new(Box::new(std::io::stdout()))
    }

    fn emit(&mut self, line: String) {
        // A closed pipe (the pusher went away) must not stop the deployment.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
        self.log.push(line);
    }

    pub fn header(&mut self, text: impl AsRef<str>) {
        self.emit(format!("-----> {}", text.as_ref()));
    }

    pub fn detail(&mut self, text: impl AsRef<str>) {
        self.emit(format!("{INDENT}{}", text.as_ref()));
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

    /// Fills a record's steps and log from what was reported.
    pub fn fill(&self, record: &mut crate::record::Record) {
        record.steps = self.steps.clone();
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
