//! Packages: whether the installer runs (from what `installed` gathers and
//! remembers), `pip install -r requirements.txt` into the env, and, for the
//! dry run, asking pip what it would install (`--dry-run --report`).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::env::Decision;
use crate::error::usage;
pub use crate::installed::REQUIREMENTS;
use crate::installed::{self, Fingerprint, PipDecision, RunReason};
use crate::process::Runner;
use crate::report::Report;
use crate::runtime::Version;
use crate::settings::{Environment, InstallerChoice, Origin, SKIP_UNCHANGED, Settings, Values};

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

/// Runs the installer in `dir` (where requirements.txt is) for the env at
/// `env_dir`, its output streamed. The env is named explicitly
/// (`<env>/bin/python -m pip`, uv's `--python`): its scripts lead through
/// `<site>/env`, which is still the live env while this one is prepared
/// aside. pip is told to refuse anything but a virtual env, so that nothing
/// is ever installed into the interpreter the env was built on. An env
/// directory beside `env` is named `env` in the output.
pub fn install(
    installer: &Installer,
    env_dir: &Path,
    dir: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    // pip runs in the site (it names paths relative to it, `./env/lib/...`),
    // reading the requirements from `dir`, which is named as the site.
    let site = env_dir.parent().unwrap_or(dir);
    let requirements = dir.join(REQUIREMENTS);
    let mut names: Vec<(String, String)> = env_dir
        .file_name()
        .map(|n| (n.to_string_lossy().into_owned(), "env".to_string()))
        .into_iter()
        .collect();
    if dir != site {
        names.push((format!("{}/", dir.display()), String::new()));
    }
    // The installer's own network timeout, well below the idle timeout: a
    // read that hangs is retried (with a line of output) before the step is
    // taken for hung.
    let timeout = (runner.limits().idle.as_secs() / 4).max(1).to_string();
    let python = env_dir.join("bin").join("python");
    match installer {
        Installer::Pip => {
            let expr = duct::cmd!(
                python,
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                "--timeout",
                &timeout,
                "-r",
                &requirements
            )
            .dir(site)
            .env("PIP_REQUIRE_VIRTUALENV", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
            runner.run_showing(report, "pip install", expr, &names)
        }
        Installer::Uv { path } => {
            let expr = duct::cmd!(
                path,
                "pip",
                "install",
                // A committed uv.toml or pyproject.toml [tool.uv] in the
                // site must not steer the install (its target, its Python):
                // uv is configured by the server's UV_* variables only.
                "--no-config",
                "-r",
                &requirements,
                "--python",
                python
            )
            .dir(site)
            .env("UV_HTTP_TIMEOUT", &timeout);
            runner.run_showing(report, "uv pip install", expr, &names)
        }
    }
}

/// What the plan says about packages: the installer, whether it runs, what
/// it would install, and what the install depends on.
pub struct PackagesPlan {
    pub installer: Installer,
    pub pip: PipDecision,
    pub packages: Preview,
    /// `None` when the installer runs every time.
    pub fingerprint: Option<Fingerprint>,
}

/// Decides the installer's step: reads the requirement files from the
/// commit (refusing includes outside the site), gathers what the install
/// depends on, and compares it with the last install into the env. With
/// `preview` (the dry run), asks pip what it would install.
///
/// `env_version` is the Python the env runs (the reused env's, or the new
/// env's interpreter).
pub fn plan(
    settings: &Settings,
    values: &Values,
    commit: &Commit,
    env: &Decision,
    env_version: Version,
    preview: bool,
    runner: &Runner,
) -> Result<PackagesPlan> {
    let app_settings = &values.app;
    let installer = installer(
        values.installer(),
        values.path(crate::settings::UV_PATH),
        &settings.env,
    )?;
    let context = installed::Context {
        env: &settings.env,
        app_settings,
        installer: installer.to_string(),
        site: &settings.site,
    };
    let requirements = installed::read_requirements(commit, &|name| context.var(name))?;
    let fingerprint = match &requirements.always {
        Some(_) => None,
        None => Some(installed::fingerprint(
            &requirements,
            &context,
            &settings.site.join("env"),
            env_version,
        )?),
    };
    let store = installed::Store::new(&settings.state_dir);
    let pip = match (env, &requirements.always, &fingerprint) {
        (Decision::Create { .. }, _, _) => PipDecision::run(RunReason::NewEnv),
        (_, Some(why), _) => PipDecision::run(RunReason::Always { why: why.clone() }),
        (Decision::Reuse, None, Some(fp)) => match values.bool(SKIP_UNCHANGED) {
            Some((false, origin)) => PipDecision::run(RunReason::NotSkipping {
                origin: origin.to_string(),
            }),
            _ => store.decide(fp),
        },
        (Decision::Reuse, None, None) => PipDecision::run(RunReason::NoRecord),
    };
    let packages = match (env, &pip, preview) {
        (_, _, false) => Preview::NotAsked,
        (Decision::Create { .. }, _, true) => Preview::NewEnv,
        (_, PipDecision::Skip { .. }, true) => Preview::WouldInstall {
            packages: Vec::new(),
        },
        (Decision::Reuse, _, true) => preview_packages(
            &settings.site.join("env"),
            &requirements,
            app_settings,
            runner,
        )?,
    };
    Ok(PackagesPlan {
        installer,
        pip,
        packages,
        fingerprint,
    })
}

/// Writes the commit's requirement files (and the links that lead to them)
/// to a temp dir as the site will have them, and asks the env's pip.
fn preview_packages(
    env_dir: &Path,
    requirements: &installed::Requirements,
    vars: &[(String, String)],
    runner: &Runner,
) -> Result<Preview> {
    let dir = tempfile::tempdir().context("creating a temp dir for pip's dry run")?;
    write_requirements(requirements, dir.path())?;
    Ok(preview(env_dir, dir.path(), vars, runner))
}

/// Writes the commit's requirement files (and the links that lead to them)
/// into `dir` as the site will have them: the dry run asks pip there, and a
/// deployment installs from there into the env it prepares aside.
pub fn write_requirements(requirements: &installed::Requirements, dir: &Path) -> Result<()> {
    for file in &requirements.files {
        for (link, target) in &file.links {
            let path = dir.join(link);
            if std::fs::symlink_metadata(&path).is_err() {
                fs_err::create_dir_all(path.parent().context("a link has a folder")?)?;
                std::os::unix::fs::symlink(target, &path)?;
            }
        }
        let path = dir.join(&file.path);
        fs_err::create_dir_all(path.parent().context("a file has a folder")?)?;
        fs_err::write(path, &file.content)?;
    }
    Ok(())
}

/// Asks pip which packages `requirements` (a file, with whatever it includes
/// beside it) would install into the env at `env_dir`, changing nothing.
pub fn preview(
    env_dir: &Path,
    requirements_dir: &Path,
    vars: &[(String, String)],
    runner: &Runner,
) -> Preview {
    match ask_pip(env_dir, requirements_dir, vars, runner) {
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
    runner: &Runner,
) -> Result<Vec<Package>> {
    let report_file = requirements_dir.join(".pushdeploy-pip-report.json");
    let expr = duct::cmd!(
        env_dir.join("bin").join("python"),
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--quiet",
        "--report",
        &report_file,
        "-r",
        REQUIREMENTS
    );
    // The variables the real run gives pip: `.deployment`'s app settings.
    let expr = vars
        .iter()
        .fold(expr, |e, (k, v)| e.env(k, v))
        .dir(requirements_dir)
        .env("PIP_REQUIRE_VIRTUALENV", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    let out = runner
        .capture("pip install --dry-run", expr)
        .context("running pip")?;
    if !out.success {
        let last = crate::process::last_line(&out.stderr);
        bail!("pip install --dry-run failed: {last}");
    }
    let bytes = fs_err::read(&report_file)?;
    parse_report(&bytes)
}

/// pip's installation report (`--report`), the parts read here.
#[derive(Deserialize)]
struct PipReport {
    install: Vec<ReportItem>,
}

#[derive(Deserialize)]
struct ReportItem {
    metadata: ReportMetadata,
}

#[derive(Deserialize)]
struct ReportMetadata {
    name: String,
    version: String,
}

/// Reads pip's installation report (JSON): `install[].metadata.{name,version}`.
pub fn parse_report(bytes: &[u8]) -> Result<Vec<Package>> {
    let report: PipReport =
        serde_json::from_slice(bytes).context("pip's report is not the JSON pip writes")?;
    let mut packages: Vec<Package> = report
        .install
        .into_iter()
        .map(|item| Package {
            name: item.metadata.name,
            version: item.metadata.version,
        })
        .collect();
    packages.sort_by(|a, b| {
        a.name
            .to_ascii_lowercase()
            .cmp(&b.name.to_ascii_lowercase())
    });
    Ok(packages)
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
}
