//! The health check: after `postDeploy`, the new version must answer before
//! the deployment counts as successful; a failure rolls it back. Either a URL
//! (http or https) that must answer 2xx or 3xx, or a command that must exit
//! 0, tried until it passes or `healthCheckTimeout` has passed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::process::Runner;
use crate::report::Report;
use crate::settings::{HEALTH_CHECK, HEALTH_CHECK_TIMEOUT, Values};

/// What the health check asks.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Probe {
    /// e.g. `http://127.0.0.1:8000/health`
    Url { url: String },
    /// A command run in the site, e.g. `curl -fsS http://127.0.0.1:8000/`.
    Command { words: Vec<String> },
    /// App Service's own check, when pushdeploy runs the app and no
    /// `healthCheck` is set: the app's port answers, any status below 500.
    App { url: String },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub probe: Probe,
    /// How long it is retried, in seconds.
    pub timeout: u64,
}

impl std::fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.probe {
            Probe::Url { url } => write!(f, "GET {url}")?,
            Probe::Command { words } => f.write_str(&shell_words::join(words))?,
            Probe::App { url } => write!(f, "GET {url}, any answer below 500")?,
        }
        write!(f, " (retried for up to {} s)", self.timeout)
    }
}

/// The `healthCheck` setting, checked in the plan.
pub fn from_values(values: &Values) -> Result<Option<HealthCheck>> {
    let Some((text, origin)) = values.text(HEALTH_CHECK) else {
        return Ok(None);
    };
    let text = text.trim();
    let probe = if text.starts_with("http://") || text.starts_with("https://") {
        ureq::http::Uri::try_from(text)
            .with_context(|| format!("setting healthCheck ({origin}): {text:?} is not a URL"))?;
        Probe::Url {
            url: text.to_string(),
        }
    } else if text.contains("://") {
        bail!(
            "setting healthCheck ({origin}): {text:?}: only http and https URLs are checked; or give a command"
        );
    } else {
        let words = shell_words::split(text)
            .ok()
            .filter(|w| !w.is_empty())
            .with_context(|| {
                format!(
                    "setting healthCheck ({origin}): {text:?} is neither a URL nor a command line"
                )
            })?;
        Probe::Command { words }
    };
    let timeout = values.seconds(HEALTH_CHECK_TIMEOUT).unwrap_or(30);
    Ok(Some(HealthCheck { probe, timeout }))
}

/// App Service's check of an app pushdeploy runs, on its own URL.
pub fn for_app(url: String, timeout: u64) -> HealthCheck {
    HealthCheck {
        probe: Probe::App { url },
        timeout,
    }
}

/// How long one attempt may take, and the pause between attempts.
const ATTEMPT: Duration = Duration::from_secs(5);
const PAUSE: Duration = Duration::from_secs(1);

/// Tries until the check passes or its time is up; one line per attempt.
pub fn run(check: &HealthCheck, site: &Path, runner: &Runner, report: &mut Report) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(check.timeout);
    let mut attempt = 0;
    loop {
        attempt += 1;
        runner.check_deadline()?;
        let result = match &check.probe {
            Probe::Url { url } => get(url, false),
            Probe::App { url } => get(url, true),
            Probe::Command { words } => runner
                .run(
                    report,
                    "the health check",
                    duct::cmd(&words[0], &words[1..]).dir(site),
                )
                .map(|()| "exit status 0".to_string())
                .map_err(|e| Failed {
                    line: format!("{e:#}"),
                    body: None,
                }),
        };
        match result {
            Ok(line) => {
                report.detail(format!("attempt {attempt}: {line}"));
                return Ok(());
            }
            Err(failed) => {
                report.detail(format!("attempt {attempt}: {}", failed.line));
                if Instant::now() + PAUSE >= deadline {
                    let mut why = format!(
                        "the health check failed after {attempt} attempts in {} s: {}",
                        check.timeout, failed.line
                    );
                    if let Some(body) = failed.body.filter(|b| !b.trim().is_empty()) {
                        why.push_str(&format!("; the body starts: {:?}", body.trim()));
                    }
                    bail!(why);
                }
                std::thread::sleep(PAUSE);
            }
        }
    }
}

struct Failed {
    line: String,
    body: Option<String>,
}

/// The start of a body that is shown on failure.
const BODY_SHOWN: u64 = 300;

/// GET `url`: 2xx and 3xx pass, or with `below_500` any status below 500
/// (a 404 is an app that runs).
fn get(url: &str, below_500: bool) -> Result<String, Failed> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A redirect is an answer: the app runs.
        .max_redirects(0)
        // The app is checked directly, never through a proxy of the environment.
        .proxy(None)
        .timeout_global(Some(ATTEMPT))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut response) => {
            let status = response.status();
            let line = format!("HTTP {status}");
            if status.is_success()
                || status.is_redirection()
                || (below_500 && status.as_u16() < 500)
            {
                Ok(line)
            } else {
                let mut start = Vec::new();
                let _ = std::io::Read::read_to_end(
                    &mut std::io::Read::take(response.body_mut().as_reader(), BODY_SHOWN),
                    &mut start,
                );
                Err(Failed {
                    line,
                    body: Some(String::from_utf8_lossy(&start).into_owned()),
                })
            }
        }
        Err(e) => Err(Failed {
            line: e.to_string(),
            body: None,
        }),
    }
}
