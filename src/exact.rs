//! Exact envs for requirements.txt. pip never removes anything: a package
//! that only an earlier commit's requirements needed (a redeploy of an older
//! commit, a requirement dropped, a marker that stopped matching) would stay.
//! After pip installed, the requirements' full resolution (pip's
//! `--dry-run --ignore-installed --report`) says what they need; what an
//! earlier deployment installed from its requirements and they no longer
//! need is uninstalled. Packages no deployment installed (an app server or a
//! debugger installed by hand) are not ours: they are named once and kept.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use crate::lockfile::{installed_packages, normalize, uninstall};
use crate::packages::{Installer, REQUIREMENTS, parse_report};
use crate::process::spawn_rules;
use crate::report::Report;
use crate::settings::Settings;

/// Never removed: what the env was made with.
const KEPT: &[&str] = &["pip", "setuptools", "wheel"];

/// What the requirements of the deployments into one env installed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// The env's real directory.
    env: String,
    /// Names (normalised) that requirements needed, as of the last install.
    from_requirements: BTreeSet<String>,
    /// Names already reported as not from requirements.
    reported: BTreeSet<String>,
}

fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join("requirements-packages.json")
}

fn real(env: &Path) -> String {
    std::fs::canonicalize(env)
        .unwrap_or_else(|_| env.to_path_buf())
        .display()
        .to_string()
}

/// After `pip install -r requirements.txt` into `env_dir`: removes what
/// earlier requirements installed and these no longer need, names what was
/// installed by hand, and records what these need. `fresh`: the env was
/// made by this deployment.
pub fn tidy(
    installer: &Installer,
    env_dir: &Path,
    settings: &Settings,
    keep_unneeded: Option<&str>,
    fresh: bool,
    runner: &crate::process::Runner,
    report: &mut Report,
) -> Result<()> {
    // In a new env, pip installed exactly what the requirements need.
    let asked = match fresh {
        true => Ok(installed_packages(env_dir)
            .iter()
            .map(|p| normalize(&p.name))
            .filter(|n| !KEPT.contains(&n.as_str()))
            .collect()),
        false => needed(installer, env_dir, &settings.site, &runner.app_settings()),
    };
    let needed = match asked {
        Ok(needed) => needed,
        Err(e) => {
            report.detail(format!(
                "cannot say what requirements.txt needs ({e:#}): nothing is removed"
            ));
            return Ok(());
        }
    };
    let path = store_path(&settings.state_dir);
    let env = real(env_dir);
    let stored: Stored = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        // A copy of the live env prepared aside continues the live env's record.
        .filter(|s: &Stored| s.env == env || s.env == real(&settings.site.join("env")))
        .unwrap_or_default();
    let installed = installed_packages(env_dir);
    let ours = |name: &str| KEPT.contains(&name) || needed.contains(name);
    let unneeded: Vec<_> = installed
        .iter()
        .filter(|p| {
            let n = normalize(&p.name);
            !ours(&n) && stored.from_requirements.contains(&n)
        })
        .collect();
    let by_hand: Vec<_> = installed
        .iter()
        .filter(|p| {
            let n = normalize(&p.name);
            !ours(&n) && !stored.from_requirements.contains(&n) && !stored.reported.contains(&n)
        })
        .collect();
    let mut reported = stored.reported.clone();
    if !by_hand.is_empty() {
        report.detail(format!(
            "not from requirements.txt, kept: {}",
            by_hand
                .iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        reported.extend(by_hand.iter().map(|p| normalize(&p.name)));
    }
    let mut from_requirements: BTreeSet<String> = needed;
    if !unneeded.is_empty() {
        let list = unneeded
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect::<Vec<_>>()
            .join(", ");
        match keep_unneeded {
            Some(origin) => {
                report.detail(format!(
                    "no longer needed by requirements.txt, kept (removeUnneeded is false, {origin}): {list}"
                ));
                // Still ours: removed once the setting allows it.
                from_requirements.extend(unneeded.iter().map(|p| normalize(&p.name)));
            }
            _ => {
                report.detail(format!(
                    "removing what requirements.txt no longer needs: {list}"
                ));
                let names: Vec<String> = unneeded.iter().map(|p| p.name.clone()).collect();
                uninstall(installer, env_dir, &names, runner, report)?;
            }
        }
    }
    let stored = Stored {
        env,
        from_requirements,
        reported,
    };
    write_atomic(&path, &serde_json::to_vec_pretty(&stored)?)
}

/// Every package requirements.txt needs (its whole resolution), by name.
fn needed(
    installer: &Installer,
    env_dir: &Path,
    site: &Path,
    vars: &[(String, String)],
) -> Result<BTreeSet<String>> {
    let dir = tempfile::tempdir().context("a temp dir for pip's report")?;
    let python = env_dir.join("bin").join("python");
    let expr = match installer {
        Installer::Pip => {
            let report_file = dir.path().join("report.json");
            duct::cmd!(
                &python,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                &report_file,
                "-r",
                REQUIREMENTS
            )
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        }
        Installer::Uv { path } => duct::cmd!(
            path,
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--no-annotate",
            REQUIREMENTS,
            "--python",
            &python
        ),
    };
    let out = vars
        .iter()
        .fold(spawn_rules(expr), |e, (k, v)| e.env(k, v))
        .dir(site)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("{}", last.trim());
    }
    let names = match installer {
        Installer::Pip => parse_report(&fs_err::read(dir.path().join("report.json"))?)?
            .into_iter()
            .map(|p| normalize(&p.name))
            .collect(),
        Installer::Uv { .. } => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split("==").next())
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.starts_with(['#', '-']))
            .map(normalize)
            .collect(),
    };
    Ok(names)
}
