//! Packages: `pip install -r requirements.txt` into the env, so that pip
//! skips what is already installed; and, for the dry run, asking pip what it
//! would install (`--dry-run --report`).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::error::usage;
use crate::report::{Report, dies_with_us};
use crate::settings::{Environment, InstallerChoice, Origin};

pub const REQUIREMENTS: &str = "requirements.txt";

/// A package pip would install or upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// What the plan says about packages.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Preview {
    /// Only a real run asks pip (the plan is not a dry run).
    NotAsked,
    /// The env would be created: everything in requirements.txt is installed.
    NewEnv,
    /// pip's own answer, from its `--dry-run --report`.
    WouldInstall { packages: Vec<Package> },
    /// pip could not say (too old for `--report`, or it failed).
    Unknown { why: String },
}

/// The program that installs the requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "name")]
pub enum Installer {
    Pip,
    Uv { path: PathBuf },
}

impl fmt::Display for Installer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Installer::Pip => f.write_str("pip"),
            Installer::Uv { path } => write!(f, "uv ({})", path.display()),
        }
    }
}

impl Installer {
    /// Its short name, for step names and the plan.
    pub fn name(&self) -> &'static str {
        match self {
            Installer::Pip => "pip",
            Installer::Uv { .. } => "uv",
        }
    }

    /// uv's path, when uv installs.
    pub fn uv(&self) -> Option<&Path> {
        match self {
            Installer::Uv { path } => Some(path),
            Installer::Pip => None,
        }
    }
}

/// The installer the `installer` setting chooses; uv is `uv_path` (the
/// server's `uvPath`) or else looked for in the environment's PATH.
pub fn installer(
    (choice, origin): (&InstallerChoice, &Origin),
    uv_path: Option<&Path>,
    env: &Environment,
) -> Result<Installer> {
    match (choice, uv_path) {
        (InstallerChoice::Pip, _) => Ok(Installer::Pip),
        (InstallerChoice::Uv, Some(uv)) => Ok(Installer::Uv {
            path: uv.to_path_buf(),
        }),
        (InstallerChoice::Uv, None) => match env.which("uv") {
            Some(path) => Ok(Installer::Uv { path }),
            None => Err(usage(format!(
                "setting installer ({origin}): uv is not installed (not found on PATH); install it, set uvPath, or set installer = pip"
            ))),
        },
        (InstallerChoice::UvAt(path), _) => Ok(Installer::Uv { path: path.clone() }),
    }
}

fn pip(env_dir: &Path) -> std::path::PathBuf {
    env_dir.join("bin").join("pip")
}

/// Runs the installer in the site for the env at `env_dir`, its output
/// streamed.
pub fn install(
    installer: &Installer,
    env_dir: &Path,
    site: &Path,
    report: &mut Report,
) -> Result<()> {
    match installer {
        Installer::Pip => {
            let expr = duct::cmd!(
                pip(env_dir),
                "install",
                "--progress-bar",
                "off",
                "-r",
                REQUIREMENTS
            )
            .dir(site)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
            report.run("pip install", expr)
        }
        Installer::Uv { path } => {
            let python = env_dir.join("bin").join("python");
            let expr = duct::cmd!(
                path,
                "pip",
                "install",
                // A committed uv.toml or pyproject.toml [tool.uv] in the
                // site must not steer the install (its target, its Python):
                // uv is configured by the server's UV_* variables only.
                "--no-config",
                "-r",
                REQUIREMENTS,
                "--python",
                python
            )
            .dir(site);
            report.run("uv pip install", expr)
        }
    }
}

/// Asks pip which packages `requirements` (a file, with whatever it includes
/// beside it) would install into the env at `env_dir`, changing nothing.
pub fn preview(env_dir: &Path, requirements_dir: &Path, vars: &[(String, String)]) -> Preview {
    match ask_pip(env_dir, requirements_dir, vars) {
        Ok(packages) => Preview::WouldInstall { packages },
        Err(e) => Preview::Unknown {
            why: format!("{e:#}"),
        },
    }
}

fn ask_pip(
    env_dir: &Path,
    requirements_dir: &Path,
    vars: &[(String, String)],
) -> Result<Vec<Package>> {
    let report_file = requirements_dir.join("pip-report.json");
    let expr = dies_with_us(duct::cmd!(
        pip(env_dir),
        "install",
        "--dry-run",
        "--quiet",
        "--report",
        &report_file,
        "-r",
        REQUIREMENTS
    ));
    // The variables the real run gives pip: `.deployment`'s app settings.
    let out = vars
        .iter()
        .fold(expr, |e, (k, v)| e.env(k, v))
        .dir(requirements_dir)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running pip")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        bail!("pip install --dry-run failed: {last}");
    }
    let bytes = fs_err::read(&report_file)?;
    parse_report(&bytes)
}

/// Reads pip's installation report (JSON): `install[].metadata.{name,version}`.
pub fn parse_report(bytes: &[u8]) -> Result<Vec<Package>> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).context("pip's report is not JSON")?;
    let items = json
        .get("install")
        .and_then(|i| i.as_array())
        .context("pip's report has no install list")?;
    let mut packages: Vec<Package> = items
        .iter()
        .filter_map(|item| {
            let meta = item.get("metadata")?;
            Some(Package {
                name: meta.get("name")?.as_str()?.to_string(),
                version: meta.get("version")?.as_str()?.to_string(),
            })
        })
        .collect();
    packages.sort_by(|a, b| {
        a.name
            .to_ascii_lowercase()
            .cmp(&b.name.to_ascii_lowercase())
    });
    Ok(packages)
}

/// The requirement files a requirements file pulls in with `-r` / `-c`
/// (relative to it), so that they can be read from the commit too.
pub fn included_files(content: &str) -> Vec<String> {
    content
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = ["-r", "--requirement", "-c", "--constraint"]
                .iter()
                .find_map(|opt| {
                    let after = line.strip_prefix(opt)?;
                    (after.starts_with([' ', '\t', '=']))
                        .then(|| after.trim_start_matches(['=', ' ', '\t']))
                })?;
            let path = rest.split_whitespace().next()?;
            (!path.contains("://")).then(|| path.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pips_report() {
        let report = br#"{"version": "1", "install": [
            {"metadata": {"name": "tinyweb", "version": "1.0.0"}, "requested": true},
            {"metadata": {"name": "Greeting", "version": "2.0.0"}, "requested": true}]}"#;
        let packages = parse_report(report).unwrap();
        assert_eq!(
            packages
                .iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect::<Vec<_>>(),
            ["Greeting 2.0.0", "tinyweb 1.0.0"]
        );
        assert!(parse_report(b"{}").is_err());
    }

    #[test]
    fn finds_included_requirement_files() {
        let text = "-r base.txt\n--requirement=dev.txt\n-c constraints.txt\nflask==3.1\n-rother.txt\n-r https://example.invalid/x.txt\n";
        assert_eq!(
            included_files(text),
            ["base.txt", "dev.txt", "constraints.txt"]
        );
    }
}
