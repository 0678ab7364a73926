//! Packages: whether the installer runs (from what `installed` gathers and
//! remembers), `pip install -r requirements.txt` into the env, and, for the
//! dry run, asking pip what it would install (`--dry-run --report`).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::env::Decision;
pub use crate::installed::REQUIREMENTS;
use crate::installed::{self, Fingerprint, Pins, PipDecision, RunReason};
use crate::process::Runner;
use crate::report::Report;
use crate::runtime::Version;
use crate::settings::{InstallerChoice, SKIP_UNCHANGED, Settings, Values};
use crate::tools::{self, Tool};

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
    /// `tool`: uv as the lock files' lookup found it (to install into the
    /// cache dir first when missing); `None` for a path the server gave.
    Uv {
        path: PathBuf,
        tool: Option<Tool>,
    },
}

impl fmt::Display for Installer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Installer::Pip => f.write_str("pip"),
            Installer::Uv { path, .. } => write!(f, "uv ({})", path.display()),
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
            Installer::Uv { path, .. } => Some(path),
            Installer::Pip => None,
        }
    }

    /// The pinned uv it runs, when pushdeploy provides it.
    pub fn tool(&self) -> Option<&Tool> {
        match self {
            Installer::Uv { tool, .. } => tool.as_ref(),
            Installer::Pip => None,
        }
    }
}

/// The installer the `installer` setting chooses. uv is found as for
/// uv.lock ([`tools::choose`]): `uvPath`, else uv on PATH at the pinned
/// version, else the pinned uv in the cache dir (installed when missing).
pub fn installer(settings: &Settings, values: &Values) -> Result<Installer> {
    match values.installer().0 {
        InstallerChoice::Pip => Ok(Installer::Pip),
        InstallerChoice::Uv => {
            let tool = tools::choose(settings, values, tools::Name::Uv)?;
            Ok(Installer::Uv {
                path: tool.path.clone(),
                tool: Some(tool),
            })
        }
        InstallerChoice::UvAt(path) => Ok(Installer::Uv {
            path: path.clone(),
            tool: None,
        }),
    }
}

/// Runs the installer in `dir` (where requirements.txt is) for the env at
/// `env_dir`, its output streamed. The env is named explicitly
/// (`<env>/bin/python -m pip`, uv's `--python`): its scripts lead through
/// `<site>/env`, which is still the live env while this one is prepared
/// aside. pip is told to refuse anything but a virtual env, so that nothing
/// is ever installed into the interpreter the env was built on. An env
/// directory beside `env` is named `env` in the output.
///
/// The env's packages are those a new env would get (pip's eager upgrade:
/// nothing kept only because an earlier commit left it), except where the
/// same requirements were installed before (`pins`): those versions again,
/// as constraints, so that a push back or a redeploy gets what it had. If
/// they cannot be installed any more, the install goes on as for new
/// requirements, and says so.
///
/// `stale` names the distributions of git lines that the env holds at
/// another commit than the line names now: pip keeps an installed
/// distribution whose version is the same, so they are uninstalled from
/// the env aside first (uv is told to reinstall them).
pub fn install(
    installer: &Installer,
    env_dir: &Path,
    dir: &Path,
    pins: Option<&Pins>,
    stale: &[&str],
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    if let (Installer::Pip, false) = (installer, stale.is_empty()) {
        let mut args: Vec<&str> = vec!["-m", "pip", "uninstall", "--yes", "--"];
        args.extend(stale);
        let expr = duct::cmd(env_dir.join("bin").join("python"), args)
            .env("PIP_REQUIRE_VIRTUALENV", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
        let names = env_dir
            .file_name()
            .map(|n| (n.to_string_lossy().into_owned(), "env".to_string()));
        runner.run_showing(report, "pip uninstall", expr, &Vec::from_iter(names))?;
    }
    let constraints = match pins {
        Some(pins) => {
            report.detail(format!(
                "these requirements were installed before, by deployment {}: the same versions again ({} packages, as constraints)",
                crate::commit::short_id(&pins.deployment),
                pins.packages.len()
            ));
            let mut file = tempfile::Builder::new()
                .prefix("pushdeploy-constraints-")
                .suffix(".txt")
                .tempfile()
                .context("writing the constraints of the earlier install")?;
            std::io::Write::write_all(&mut file, pins.constraints().as_bytes())?;
            Some(file.into_temp_path())
        }
        None => None,
    };
    let upgrade = !pinned_throughout(dir, env_dir);
    if !upgrade {
        report.detail(
            "every package in env/ is pinned with == by requirements.txt: installed without --upgrade, which would choose the same versions",
        );
    }
    let mut told = Told {
        constraints: constraints.as_deref(),
        upgrade,
        stale,
    };
    let first = run_installer(installer, env_dir, dir, &told, runner, report);
    match (first, &constraints) {
        (Err(e), Some(_)) if runner.check_deadline().is_ok() => {
            report.detail(format!(
                "the versions installed before cannot be installed again ({e:#}): installing as for new requirements"
            ));
            told.constraints = None;
            run_installer(installer, env_dir, dir, &told, runner, report)
        }
        (result, _) => result,
    }
}

/// The env's packages and their versions, by normalised name, pip's own
/// (what the env was made with) left out: what [`Pins`] keeps.
pub fn versions(env_dir: &Path) -> std::collections::BTreeMap<String, String> {
    crate::lockfile::installed_packages(env_dir)
        .into_iter()
        .map(|p| (crate::lockfile::normalize(&p.name), p.version))
        .filter(|(name, _)| !["pip", "setuptools", "wheel"].contains(&name.as_str()))
        .collect()
}

/// Whether a `name==version` line (no marker) of the requirements pins each
/// package in the env. Then the eager upgrade that makes an env what a new
/// one would get has nothing to choose: what is needed is pinned, what is
/// not needed is removed after, what is new gets the newest either way. So
/// `--upgrade` is left out, and the installer does not ask the index about
/// every package (files from `pip freeze` or `pip-compile` are like this).
fn pinned_throughout(dir: &Path, env_dir: &Path) -> bool {
    let Some(lines) = crate::exact::top_level(dir) else {
        return false;
    };
    let pinned: std::collections::BTreeSet<String> =
        lines.iter().filter_map(|l| pinned_name(l)).collect();
    // A new env has nothing to upgrade: it is left as it was.
    let installed = versions(env_dir);
    !installed.is_empty() && installed.keys().all(|name| pinned.contains(name))
}

/// The normalised name a requirement line pins to one version
/// (`Name[extra]==1.2.3`), if it does; `None` for a range, a wildcard,
/// `===`, a URL or a marker (which may not hold).
fn pinned_name(line: &str) -> Option<String> {
    if line.contains([';', '@']) {
        return None;
    }
    let (name, version) = line.split_once("==")?;
    let version = version.trim();
    let exact = !version.is_empty()
        && !version.contains(|c: char| c.is_whitespace() || ",*<>!~=".contains(c));
    let name = name.split('[').next()?.trim();
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (exact && plain).then(|| crate::lockfile::normalize(name))
}

/// What one installer run is told beyond the requirements: the earlier
/// versions as constraints, whether to upgrade eagerly, and the
/// distributions to install again.
struct Told<'a> {
    constraints: Option<&'a Path>,
    upgrade: bool,
    stale: &'a [&'a str],
}

fn run_installer(
    installer: &Installer,
    env_dir: &Path,
    dir: &Path,
    told: &Told,
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
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    if let Some(file) = told.constraints {
        extra.push("-c".into());
        extra.push(file.into());
    }
    match installer {
        Installer::Pip => {
            let mut args: Vec<std::ffi::OsString> = [
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                "--timeout",
                &timeout,
            ]
            .map(Into::into)
            .to_vec();
            if told.upgrade {
                args.extend(["--upgrade", "--upgrade-strategy", "eager"].map(Into::into));
            }
            args.push("-r".into());
            args.push(requirements.into());
            args.extend(extra);
            let expr = duct::cmd(python, args)
                .dir(site)
                .env("PIP_REQUIRE_VIRTUALENV", "1")
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
            runner.run_showing(report, "pip install", expr, &names)
        }
        Installer::Uv { path, .. } => {
            let mut args: Vec<std::ffi::OsString> = [
                "pip",
                "install",
                // A committed uv.toml or pyproject.toml [tool.uv] in the
                // site must not steer the install (its target, its Python):
                // uv is configured by the server's UV_* variables only.
                "--no-config",
            ]
            .map(Into::into)
            .to_vec();
            if told.upgrade {
                args.push("--upgrade".into());
            }
            args.push("-r".into());
            args.push(requirements.into());
            args.extend(extra);
            // uv keeps its first build of a local folder while its version
            // holds (pip rebuilds it): rebuilt, so the env has the commit's code.
            args.extend(local_builds(dir).into_iter().map(Into::into));
            args.extend(
                told.stale
                    .iter()
                    .map(|n| format!("--reinstall-package={n}").into()),
            );
            args.push("--python".into());
            args.push(python.into());
            let expr = duct::cmd(path, args)
                .dir(site)
                .env("UV_HTTP_TIMEOUT", &timeout);
            runner.run_showing(report, "uv pip install", expr, &names)
        }
    }
}

/// How many requirement files [`local_builds`] follows.
const MAX_FILES: usize = 256;

/// uv's options that rebuild the local folders (not `-e`) the requirement
/// files in `dir` name: `--reinstall-package=<name>` by the name in each
/// folder's pyproject.toml, or `--reinstall` when a name cannot be read.
fn local_builds(dir: &Path) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut unnamed = false;
    let mut queue = vec![REQUIREMENTS.to_string()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) || seen.len() > MAX_FILES {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(dir.join(&name)) else {
            continue;
        };
        let folder = name.rsplit_once('/').map_or("", |(d, _)| d);
        for (_, line) in crate::requirements::logical_lines(&text) {
            if let Ok(crate::requirements::Line::Include { kind, path }) =
                crate::requirements::classify(&line)
            {
                let joined = match folder {
                    "" => path,
                    f => format!("{f}/{path}"),
                };
                if kind == crate::requirements::IncludeKind::Requirements
                    && !joined.starts_with('/')
                    && !installed::climbs_out(&joined)
                {
                    queue.push(joined);
                }
                continue;
            }
            if line.starts_with('-') {
                continue; // `-e`: editable, the folder itself is imported.
            }
            let Some(path) = crate::requirements::local_path(&line) else {
                continue;
            };
            // pip takes a local path from its working folder, the site.
            let folder = dir.join(&path);
            if !folder.is_dir() {
                continue;
            }
            match project_name(&folder) {
                Some(name) => {
                    names.insert(name);
                }
                None => unnamed = true,
            }
        }
    }
    if unnamed {
        return vec!["--reinstall".into()];
    }
    names
        .into_iter()
        .map(|n| format!("--reinstall-package={n}"))
        .collect()
}

/// A local folder's `[project] name`, if it is a plain package name.
pub(crate) fn project_name(folder: &Path) -> Option<String> {
    let text = std::fs::read_to_string(folder.join("pyproject.toml")).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let name = table.get("project")?.get("name")?.as_str()?;
    let plain = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('-');
    plain.then(|| name.to_string())
}

/// What the plan says about packages: the installer, whether it runs, what
/// it would install, and what the install depends on.
pub struct PackagesPlan {
    pub installer: Installer,
    pub pip: PipDecision,
    pub packages: Preview,
    /// `None` when the installer runs every time.
    pub fingerprint: Option<Fingerprint>,
    /// When what the requirements need takes a whole resolution.
    pub resolve: Option<installed::ResolvePlan>,
    /// The git lines, the commit each names now and what the env holds.
    pub git: Vec<crate::git_remote::GitLine>,
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
    let installer = installer(settings, values)?;
    let context = installed::Context {
        env: &settings.env,
        app_settings,
        installer: installer.to_string(),
        site: &settings.site,
    };
    let mut requirements = installed::read_requirements(commit, &|name| context.var(name))?;
    // Which commit each git line names now, and (in a reused env) which
    // the env holds: a line whose commit the env holds counts as pinned.
    let live = settings.site.join("env");
    let reused = matches!(env, Decision::Reuse).then_some(live.as_path());
    crate::git_remote::resolve(&mut requirements.git, reused, runner);
    let unknown = requirements.git.iter().find(|l| l.commit().is_none());
    let unsatisfied = requirements.git.iter().find(|l| !l.satisfied());
    let fingerprint = match (&requirements.always, unknown) {
        (Some(_), _) | (_, Some(_)) => None,
        (None, None) => Some(installed::fingerprint(
            &requirements,
            &context,
            &settings.site.join("env"),
            env_version,
        )?),
    };
    // A line only the installer can name: what the requirements need is
    // resolved again after the install, when what that depends on changed.
    let resolve = match (&requirements.unnamed, env) {
        (Some(why), Decision::Reuse) => Some(installed::ResolvePlan {
            why: why.clone(),
            inputs: installed::fingerprint(
                &requirements,
                &context,
                &settings.site.join("env"),
                env_version,
            )?,
        }),
        _ => None,
    };
    let store = installed::Store::new(&settings.state_dir);
    let pip = match (env, &requirements.always, &fingerprint) {
        (Decision::Create { .. }, _, _) => PipDecision::run(RunReason::NewEnv),
        (_, Some(why), _) => PipDecision::run(RunReason::Always { why: why.clone() }),
        (Decision::Reuse, None, _) if unknown.is_some() => PipDecision::run(RunReason::Git {
            line: unknown.map(|l| l.to_string()).unwrap_or_default(),
        }),
        (Decision::Reuse, None, Some(fp)) => match (values.bool(SKIP_UNCHANGED), unsatisfied) {
            (Some((false, origin)), _) => PipDecision::run(RunReason::NotSkipping {
                origin: origin.to_string(),
            }),
            // Nothing else changed, but the env does not hold what a git
            // line names now.
            (_, Some(line)) => match store.decide(fp) {
                PipDecision::Skip { .. } => PipDecision::run(RunReason::Git {
                    line: line.to_string(),
                }),
                run => run,
            },
            (_, None) => store.decide(fp),
        },
        (Decision::Reuse, None, None) => PipDecision::run(RunReason::NoRecord),
    };
    let packages = match (env, &pip, preview) {
        (_, _, false) => Preview::NotAsked,
        (Decision::Create { .. }, _, true) => Preview::NewEnv,
        (_, PipDecision::Skip { .. }, true) => Preview::WouldInstall {
            packages: Vec::new(),
        },
        (Decision::Reuse, _, true) => {
            let env = settings.site.join("env");
            // The versions the real run would pin, if any.
            let pins = fingerprint
                .as_ref()
                .and_then(|fp| installed::Versions::new(&settings.state_dir).recorded(fp, &env));
            preview_packages(&env, &requirements, pins.as_ref(), app_settings, runner)?
        }
    };
    Ok(PackagesPlan {
        installer,
        pip,
        packages,
        fingerprint,
        resolve,
        git: requirements.git,
    })
}

/// Writes the commit's requirement files (and the links that lead to them)
/// to a temp dir as the site will have them, and asks the env's pip.
fn preview_packages(
    env_dir: &Path,
    requirements: &installed::Requirements,
    pins: Option<&Pins>,
    vars: &[(String, String)],
    runner: &Runner,
) -> Result<Preview> {
    let dir = tempfile::tempdir().context("creating a temp dir for pip's dry run")?;
    write_requirements(requirements, dir.path())?;
    Ok(preview(env_dir, dir.path(), pins, vars, runner))
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
    pins: Option<&Pins>,
    vars: &[(String, String)],
    runner: &Runner,
) -> Preview {
    match ask_pip(env_dir, requirements_dir, pins, vars, runner) {
        Ok(packages) => Preview::WouldInstall { packages },
        Err(e) => Preview::Unknown {
            why: format!("{e:#}"),
        },
    }
}

fn ask_pip(
    env_dir: &Path,
    requirements_dir: &Path,
    pins: Option<&Pins>,
    vars: &[(String, String)],
    runner: &Runner,
) -> Result<Vec<Package>> {
    let report_file = requirements_dir.join(".pushdeploy-pip-report.json");
    // As the real run installs: eager upgrades, the earlier versions as constraints.
    let mut args: Vec<std::ffi::OsString> = [
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--quiet",
        "--upgrade",
        "--upgrade-strategy",
        "eager",
        "--report",
    ]
    .map(Into::into)
    .to_vec();
    args.extend([report_file.clone().into(), "-r".into(), REQUIREMENTS.into()]);
    if let Some(pins) = pins {
        let file = requirements_dir.join(".pushdeploy-constraints.txt");
        fs_err::write(&file, pins.constraints())?;
        args.extend(["-c".into(), file.into()]);
    }
    let expr = duct::cmd(env_dir.join("bin").join("python"), args);
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

    #[test]
    fn a_pin_is_one_version_by_name_with_no_marker() {
        for (line, name) in [
            ("Django==4.2.1", Some("django")),
            ("zope.interface == 6.0", Some("zope-interface")),
            ("Flask[async]==3.0.0", Some("flask")),
            ("greeting>=1", None),
            ("greeting==1.*", None),
            ("greeting===1.0", None),
            ("greeting==1.0,!=1.0.1", None),
            ("greeting==1.0 ; python_version >= '3'", None),
            ("greeting @ https://example.com/greeting-1.0.whl", None),
            ("greeting", None),
            ("==1.0", None),
        ] {
            assert_eq!(pinned_name(line).as_deref(), name, "{line}");
        }
    }
}
