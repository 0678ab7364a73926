//! Exact envs for requirements.txt. pip never removes anything: a package
//! that only an earlier commit's requirements needed (a redeploy of an older
//! commit, a requirement dropped, a marker that stopped matching) would stay.
//! After pip installed, what the requirements need is their closure over the
//! installed packages' metadata: each requirement whose marker holds, then
//! what its installed distribution requires (markers and extras evaluated),
//! read in Rust from the METADATA files with the interpreter's marker
//! environment (`markers`), or by one small Python process in the env where
//! Rust cannot be sure to read it as Python does; no second resolution.
//! Requirements pushdeploy cannot read by name (URLs, local paths, `${VAR}`,
//! an option it does not follow) are resolved again instead (pip's
//! `--dry-run --ignore-installed --report`, uv's `pip compile`). What an
//! earlier deployment installed from its requirements and they no longer
//! need is uninstalled. Packages no deployment installed (an app server or a
//! debugger installed by hand) are not ours: they are named once and kept.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use crate::installed::{Fingerprint, Input, Resolution, ResolvePlan, installed_metadata};
use crate::lockfile::{installed_packages, normalize, uninstall};
use crate::packages::{Installer, REQUIREMENTS, parse_report};
use crate::process::Runner;
use crate::report::Report;
use crate::requirements::{self, IncludeKind, Line};
use crate::settings::Settings;

/// Never removed: what the env was made with.
const KEPT: &[&str] = &["pip", "setuptools", "wheel"];

/// What the requirements of the deployments into one env installed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// The env's identity (device and inode, which the rename that makes a
    /// prepared env `env` keeps): a rolled-back env's record is not the live one's.
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
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(env).map_or_else(
        |_| env.display().to_string(),
        |m| format!("{}:{}", m.dev(), m.ino()),
    )
}

/// Where the names requirements.txt needs come from, decided before the
/// `closure` step starts (its header says which).
enum Source {
    /// Read by one small Python process from the installed metadata.
    Metadata(Vec<String>),
    /// The last whole resolution's names: none of its inputs changed.
    Remembered(Resolution),
    /// A whole resolution by the installer; `inputs`, when known, are
    /// remembered with its result.
    Resolve {
        why: String,
        inputs: Option<Fingerprint>,
    },
}

/// After `pip install -r requirements.txt` into `env_dir`: removes what
/// earlier requirements installed and these no longer need, names what was
/// installed by hand, and records what these need. `fresh`: the env was
/// made by this deployment. `resolve`: the plan's word when the names take
/// a whole resolution, which is run only when what it depends on changed.
#[expect(clippy::too_many_arguments, reason = "one step's inputs")]
pub fn tidy(
    installer: &Installer,
    env_dir: &Path,
    settings: &Settings,
    keep_unneeded: Option<&str>,
    fresh: bool,
    resolve: Option<&ResolvePlan>,
    deployment: &str,
    runner: &crate::process::Runner,
    report: &mut Report,
) -> Result<()> {
    // In a new env, pip installed exactly what the requirements need.
    if fresh {
        let needed = installed_packages(env_dir)
            .iter()
            .map(|p| normalize(&p.name))
            .filter(|n| !KEPT.contains(&n.as_str()))
            .collect();
        return remove_unneeded(
            installer,
            env_dir,
            settings,
            keep_unneeded,
            needed,
            runner,
            report,
        );
    }
    let command = match installer {
        Installer::Pip => "pip install --dry-run --report",
        Installer::Uv { .. } => "uv pip compile",
    };
    // The env's part of the inputs, as the install left it.
    let inputs = resolve.map(|r| r.inputs.with(Input::Env, installed_metadata(env_dir)));
    let source = match (top_level(&settings.site), &inputs) {
        (Some(lines), _) => Source::Metadata(lines),
        (None, Some(now)) => match Resolution::load(&settings.state_dir) {
            Some(last) if last.inputs == *now => Source::Remembered(last),
            Some(last) => {
                let changed: Vec<String> = now
                    .changed(&last.inputs)
                    .iter()
                    .map(Input::to_string)
                    .collect();
                Source::Resolve {
                    why: format!(
                        "{}; changed since the last resolution: {}",
                        resolve.map(|r| r.why.to_string()).unwrap_or_default(),
                        changed.join(", ")
                    ),
                    inputs: inputs.clone(),
                }
            }
            None => Source::Resolve {
                why: format!(
                    "{}; no earlier resolution is recorded",
                    resolve.map(|r| r.why.to_string()).unwrap_or_default()
                ),
                inputs: inputs.clone(),
            },
        },
        (None, None) => Source::Resolve {
            why: "requirements.txt names a package only the installer can name".into(),
            inputs: None,
        },
    };
    let header = match &source {
        Source::Metadata(_) => {
            "What requirements.txt needs: read from the installed packages' metadata".to_string()
        }
        Source::Remembered(last) => format!(
            "What requirements.txt needs: as resolved after deployment {}'s install (requirements, installed packages, interpreter, installer and settings unchanged)",
            crate::commit::short_id(&last.deployment)
        ),
        Source::Resolve { why, .. } => {
            format!("What requirements.txt needs: {command} resolves it again ({why})")
        }
    };
    report.step("closure", header, |report| {
        let asked = match &source {
            Source::Metadata(lines) => {
                from_metadata(env_dir, lines, &settings.cache_dir, runner, report).or_else(|e| {
                    match crate::process::is_timeout(&e) {
                        true => Err(e),
                        false => {
                            report.detail(format!("{e:#}: {command} resolves it again"));
                            needed(installer, env_dir, &settings.site, runner)
                        }
                    }
                })
            }
            Source::Remembered(last) => Ok(last.needed.clone()),
            Source::Resolve { .. } => needed(installer, env_dir, &settings.site, runner),
        };
        let needed = match asked {
            Ok(needed) => needed,
            // A time limit ends the deployment, as in any step.
            Err(e) if crate::process::is_timeout(&e) => return Err(e),
            Err(e) => {
                report.detail(format!(
                    "cannot say what requirements.txt needs ({e:#}): nothing is removed"
                ));
                return Ok(());
            }
        };
        remove_unneeded(
            installer,
            env_dir,
            settings,
            keep_unneeded,
            needed.clone(),
            runner,
            report,
        )?;
        if let Source::Resolve {
            inputs: Some(inputs),
            ..
        } = &source
        {
            // Remembered with the env as it is now, what was unneeded gone.
            let resolution = Resolution {
                inputs: inputs.with(Input::Env, installed_metadata(env_dir)),
                deployment: deployment.to_string(),
                needed,
            };
            resolution.save(&settings.state_dir)?;
        }
        Ok(())
    })
}

/// Removes what earlier requirements installed and `needed` does not name,
/// names what was installed by hand, and records what these need.
fn remove_unneeded(
    installer: &Installer,
    env_dir: &Path,
    settings: &Settings,
    keep_unneeded: Option<&str>,
    needed: BTreeSet<String>,
    runner: &crate::process::Runner,
    report: &mut Report,
) -> Result<()> {
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
    runner: &Runner,
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
        Installer::Uv { path, .. } => duct::cmd!(
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
    // The variables the install had: `.deployment`'s app settings.
    let out = runner.capture("the requirements' resolution", expr.dir(site))?;
    if !out.success {
        bail!("{}", crate::process::last_line(&out.stderr));
    }
    let names = match installer {
        Installer::Pip => parse_report(&fs_err::read(dir.path().join("report.json"))?)?
            .into_iter()
            .map(|p| normalize(&p.name))
            .collect(),
        Installer::Uv { .. } => {
            let mut names = BTreeSet::new();
            for line in String::from_utf8_lossy(&out.stdout).lines().map(str::trim) {
                if line.is_empty() || line.starts_with(['#', '-']) {
                    continue;
                }
                // uv names a local folder as the requirement wrote it
                // (`./mylib`): its name is in its pyproject.toml.
                let local = line.starts_with(['.', '/']) || line.starts_with("file:");
                let name = match local {
                    true => crate::packages::project_name(&site.join(line)).with_context(|| {
                        format!("the local requirement {line} has no [project] name")
                    })?,
                    false => line
                        .split(['=', '@', ';', ' '])
                        .next()
                        .unwrap_or("")
                        .to_string(),
                };
                names.insert(normalize(&name));
            }
            names
        }
    };
    Ok(names)
}

/// How many requirement files [`top_level`] follows; more is left to pip.
const MAX_FILES: usize = 256;

/// The requirement lines (`name[extras] specifiers ; marker`) of the site's
/// requirements.txt and the `-r` files it includes, constraints left out;
/// `None` when a line names a package only pip can name (a URL, a local
/// path, a variable, an option pushdeploy does not follow) or an include
/// leaves the site.
pub fn top_level(site: &Path) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut queue = vec![REQUIREMENTS.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if seen.len() > MAX_FILES {
            return None;
        }
        let text = crate::site_dir::read_text(&site.join(&name)).ok()?;
        let dir = name.rsplit_once('/').map_or("", |(dir, _)| dir);
        for (_, line) in requirements::logical_lines(&text) {
            match requirements::classify(&line).ok()? {
                Line::Requirement { .. } => {
                    // pip's `break_args_options`: the requirement is every
                    // word before the first option (`--hash=...`).
                    let words: Vec<&str> = line
                        .split(' ')
                        .take_while(|w| !w.starts_with('-'))
                        .collect();
                    out.push(words.join(" ").trim().to_string());
                }
                Line::Include {
                    kind: IncludeKind::Requirements,
                    path,
                } => {
                    let inside = !path.starts_with('/')
                        && !path.contains(':')
                        && !Path::new(&path)
                            .components()
                            .any(|c| matches!(c, std::path::Component::ParentDir));
                    if !inside {
                        return None;
                    }
                    queue.push(match dir {
                        "" => path,
                        dir => format!("{dir}/{path}"),
                    });
                }
                Line::Include {
                    kind: IncludeKind::Constraints,
                    ..
                }
                | Line::FindLinks { .. }
                | Line::Options => {}
            }
        }
    }
    Some(out)
}

/// The closure: reads requirement lines (JSON) on stdin, writes the
/// normalised names they need (JSON) on stdout; exits 1 naming a package
/// that is needed and not installed. pip's own `packaging` reads the
/// requirements and evaluates the markers.
const CLOSURE: &str = r#"
import json, re, sys
from importlib import metadata
from pip._vendor.packaging.requirements import Requirement
def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()
dists = {}
for d in metadata.distributions():
    if d.metadata["Name"]:
        dists.setdefault(norm(d.metadata["Name"]), d)
def holds(req, extras):
    return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras)
todo = [(norm(r.name), frozenset(r.extras))
        for r in map(Requirement, json.load(sys.stdin)) if holds(r, [""])]
seen, needed, missing = set(), set(), set()
while todo:
    name, extras = todo.pop()
    if (name, extras) in seen:
        continue
    seen.add((name, extras))
    dist = dists.get(name)
    if dist is None:
        missing.add(name)
        continue
    needed.add(name)
    asked = {""} | set(extras) | {norm(e) for e in extras}
    for line in dist.requires or []:
        r = Requirement(line)
        if holds(r, asked):
            todo.append((norm(r.name), frozenset(r.extras)))
if missing:
    sys.exit("needed and not installed: " + ", ".join(sorted(missing)))
json.dump(sorted(needed), sys.stdout)
"#;

/// What `lines` need in the env at `env_dir`, from its installed metadata.
fn closure(env_dir: &Path, lines: &[String], runner: &Runner) -> Result<BTreeSet<String>> {
    let python = env_dir.join("bin").join("python");
    // -I: the app's PYTHONPATH and the user's site do not take part.
    let expr = duct::cmd!(&python, "-I", "-c", CLOSURE).stdin_bytes(serde_json::to_vec(lines)?);
    let out = runner
        .for_server()
        .capture("the requirements' closure", expr)
        .with_context(|| format!("running {}", python.display()))?;
    if !out.success {
        bail!("{}", crate::process::last_line(&out.stderr));
    }
    let names: Vec<String> =
        serde_json::from_slice(&out.stdout).context("the closure's output is not JSON")?;
    Ok(names.into_iter().collect())
}

/// What `lines` need in the env at `env_dir`, from its installed metadata:
/// read in Rust, or by the Python closure where Rust cannot be sure (said
/// in a detail line).
fn from_metadata(
    env_dir: &Path,
    lines: &[String],
    cache_dir: &Path,
    runner: &Runner,
    report: &mut Report,
) -> Result<BTreeSet<String>> {
    match read_closure(env_dir, lines, cache_dir, runner) {
        Read::Needed(names) => Ok(names),
        Read::Missing(message) => Err(anyhow::anyhow!(message)),
        Read::Uncertain(why) => {
            report.detail(format!("{why}: Python reads the metadata instead"));
            closure(env_dir, lines, runner)
        }
    }
}

/// What [`read_closure`] found.
#[derive(Debug, PartialEq)]
enum Read {
    /// The normalised names the requirement lines need.
    Needed(BTreeSet<String>),
    /// A needed package is not installed: the Python closure's message.
    Missing(String),
    /// Something only Python reads with certainty, and why.
    Uncertain(String),
}

/// [`closure`], read in Rust: the env's `METADATA` files and the marker
/// environment of its interpreter (cached per interpreter). Gives what the
/// Python closure gives, or says why it cannot be sure to.
fn read_closure(env_dir: &Path, lines: &[String], cache_dir: &Path, runner: &Runner) -> Read {
    let python = env_dir.join("bin").join("python");
    let interpreter = match crate::markers::interpreter(&python, cache_dir, &runner.for_server()) {
        Ok(found) => found,
        Err(e) => {
            return Read::Uncertain(format!(
                "the env's interpreter gave no marker environment ({e:#})"
            ));
        }
    };
    match walk(env_dir, lines, &interpreter) {
        Ok(read) => read,
        Err(why) => Read::Uncertain(why),
    }
}

/// The closure's walk over the distributions `env_dir` holds, as the
/// Python closure walks it.
fn walk(
    env_dir: &Path,
    lines: &[String],
    interpreter: &crate::markers::Interpreter,
) -> Result<Read, String> {
    use crate::markers::Requirement;
    if let Some(why) = &interpreter.unsupported {
        return Err(why.clone());
    }
    let env = interpreter.environment().ok_or_else(|| {
        format!(
            "the marker environment of Python {} is not one both readers agree on",
            interpreter
                .markers
                .get("python_full_version")
                .map_or("?", String::as_str)
        )
    })?;
    let dists = distributions(env_dir, interpreter)?;
    let mut todo = Vec::new();
    for line in lines {
        let r = Requirement::parse(line)?;
        if r.holds(&env, &[])? {
            todo.push((r.name, r.extras));
        }
    }
    let mut seen = BTreeSet::new();
    let (mut needed, mut missing) = (BTreeSet::new(), BTreeSet::new());
    while let Some((name, mut extras)) = todo.pop() {
        extras.sort();
        extras.dedup();
        if !seen.insert((name.clone(), extras.clone())) {
            continue;
        }
        let Some(requires) = dists.get(&name) else {
            missing.insert(name);
            continue;
        };
        needed.insert(name);
        for line in requires {
            let r = Requirement::parse(line)?;
            if r.holds(&env, &extras)? {
                todo.push((r.name, r.extras));
            }
        }
    }
    if !missing.is_empty() {
        let names: Vec<String> = missing.into_iter().collect();
        return Ok(Read::Missing(format!(
            "needed and not installed: {}",
            names.join(", ")
        )));
    }
    Ok(Read::Needed(needed))
}

/// `.pth` lines that run code and are known not to change what
/// importlib.metadata finds: setuptools' distutils shim, virtualenv's, and
/// the namespace packages of old setuptools (`*-nspkg.pth`, which only add
/// a module to `sys.modules`).
fn harmless_import(file: &str, line: &str) -> bool {
    (file == "distutils-precedence.pth"
        && line.contains("__import__('_distutils_hack').add_shim()"))
        || (file == "_virtualenv.pth" && line.trim_end() == "import _virtualenv")
        || (file.ends_with("-nspkg.pth")
            && line.starts_with("import sys, types, os;")
            && !line.contains("sys.path")
            && !line.contains("meta_path"))
}

/// Whether a directory on `sys.path` holds anything importlib.metadata
/// would read as a distribution.
fn holds_distributions(dir: &Path) -> Result<bool, String> {
    if dir.is_file() {
        return Err(format!("{} is on sys.path and is a file", dir.display()));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(false);
    };
    Ok(entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().to_lowercase();
        name.ends_with(".dist-info") || name.ends_with(".egg-info") || name.ends_with(".egg")
    }))
}

/// Every distribution importlib.metadata finds for the env's python run
/// with `-I`: normalised name -> its `Requires-Dist` lines. An error names
/// what Rust cannot read as Python would.
fn distributions(
    env_dir: &Path,
    interpreter: &crate::markers::Interpreter,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, String> {
    std::fs::metadata(env_dir.join("pyvenv.cfg")).map_err(|e| format!("env/pyvenv.cfg: {e}"))?;
    let system = crate::env::pyvenv_cfg(env_dir, "include-system-site-packages");
    if system.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err("env/pyvenv.cfg has include-system-site-packages = true".into());
    }
    for dir in &interpreter.stdlib {
        if !dir.is_absolute() || holds_distributions(dir)? {
            return Err(format!(
                "{} (on the interpreter's sys.path) holds distributions",
                dir.display()
            ));
        }
    }
    let version = interpreter
        .markers
        .get("python_version")
        .ok_or("no python_version")?;
    let site = env_dir.join(format!("lib/python{version}/site-packages"));
    let all = crate::installed::site_packages(env_dir);
    if all != [site.clone()] {
        return Err(format!(
            "the env's site-packages are {all:?}, not {}",
            site.display()
        ));
    }
    let mut entries: Vec<_> = std::fs::read_dir(&site)
        .map_err(|e| format!("{}: {e}", site.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let mut dists = std::collections::BTreeMap::new();
    for name in &entries {
        let lower = name.to_lowercase();
        let path = site.join(name);
        if lower.ends_with(".pth") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{name}: {e}"))?;
            for line in text.lines() {
                if line.starts_with('#') || line.trim().is_empty() {
                    continue;
                }
                if line.starts_with("import ") || line.starts_with("import\t") {
                    if !harmless_import(name, line) {
                        return Err(format!("{name} runs code at startup"));
                    }
                } else if holds_distributions(&site.join(line.trim_end()))? {
                    return Err(format!("{name} adds a directory that holds distributions"));
                }
            }
        } else if lower.ends_with(".egg-info") || lower.ends_with(".egg") {
            return Err(format!("{name} is not a .dist-info"));
        } else if lower.ends_with(".dist-info") {
            let Some((dist, requires)) = read_metadata(&path)? else {
                continue;
            };
            if dists.insert(normalize(&dist), requires).is_some() {
                return Err(format!("two distributions are named {dist}"));
            }
        }
    }
    Ok(dists)
}

/// A `.dist-info`'s name and `Requires-Dist` lines, read from its METADATA
/// headers as Python's email parser reads them; `None` when it names no
/// distribution (importlib.metadata's closure skips it).
fn read_metadata(dist_info: &Path) -> Result<Option<(String, Vec<String>)>, String> {
    let dir = dist_info.file_name().unwrap_or_default().to_string_lossy();
    let text = std::fs::read_to_string(dist_info.join("METADATA"))
        .map_err(|e| format!("{dir}/METADATA: {e}"))?
        // Read in text mode: universal newlines.
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let (mut name, mut requires) = (None, Vec::new());
    let mut last = String::new();
    for line in text.split('\n') {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // A folded header: only those the closure does not read.
            if last == "name" || last == "requires-dist" || last.is_empty() {
                return Err(format!("{dir}/METADATA folds a header line"));
            }
            continue;
        }
        let Some((key, value)) = line
            .split_once(':')
            .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| (0x21..=0x7e).contains(&b)))
        else {
            return Err(format!("{dir}/METADATA: {line:?} is not a header"));
        };
        last = key.to_ascii_lowercase();
        let value = value.trim_start_matches([' ', '\t']).to_string();
        match last.as_str() {
            "name" if name.is_some() => return Err(format!("{dir}/METADATA has two names")),
            "name" => name = Some(value),
            "requires-dist" => requires.push(value),
            _ => {}
        }
    }
    if requires.is_empty() && dist_info.join("requires.txt").exists() {
        return Err(format!("{dir} has a requires.txt"));
    }
    match name {
        None => Ok(None),
        Some(name) if name.is_empty() => Ok(None),
        Some(name) => match pep508_rs::PackageName::new(name.clone()) {
            Ok(_) => Ok(Some((name, requires))),
            Err(_) => Err(format!("{dir}/METADATA names {name:?}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(files: &[(&str, &str)]) -> Option<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        top_level(dir.path())
    }

    #[test]
    fn top_level_reads_requirements_and_their_includes_not_constraints() {
        let lines = top(&[
            (
                "requirements.txt",
                "# app\nFlask[async]>=2 ; python_version >= '3.8'  # web\n-r lib/base.txt\n-c c.txt\n--no-index\n",
            ),
            (
                "lib/base.txt",
                "-r more.txt\ntinyweb==1.0 --hash=sha256:00\n",
            ),
            ("lib/more.txt", "greeting\n"),
            ("c.txt", "staticpipe==1.0\n"),
        ]);
        let mut lines = lines.unwrap();
        lines.sort();
        assert_eq!(
            lines,
            [
                "Flask[async]>=2 ; python_version >= '3.8'",
                "greeting",
                "tinyweb==1.0"
            ]
        );
    }

    #[test]
    fn top_level_leaves_to_pip_what_only_pip_can_name() {
        for text in [
            "https://example.com/x.whl\n",
            "x @ git+https://example.com/x\n",
            "./lib\n",
            "-e .\n",
            "-r ../outside.txt\n",
            "-r /etc/requirements.txt\n",
            "${NAME}\n",
        ] {
            assert_eq!(top(&[("requirements.txt", text)]), None, "{text}");
        }
        assert_eq!(top(&[]), None, "no requirements.txt");
    }

    /// Runs a program that makes a test's env, which must succeed.
    fn setup(expr: duct::Expression) {
        let runner = Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None);
        let out = runner.capture("making a test env", expr).unwrap();
        assert!(out.success, "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// A real env: `python3 -m venv`, then pip from fixtures/wheels.
    fn real_env(dir: &Path, packages: &[&str]) -> PathBuf {
        real_env_of(Path::new("python3"), dir, packages)
    }

    /// [`real_env`] made by `python`.
    fn real_env_of(python: &Path, dir: &Path, packages: &[&str]) -> PathBuf {
        let env = dir.join("env");
        // As an OsStr: duct runs a Path as a relative path, not from PATH.
        setup(duct::cmd!(python.as_os_str(), "-m", "venv", &env));
        let wheels = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/wheels");
        let mut args: Vec<std::ffi::OsString> = [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            // gunicorn's metadata, on Pythons it does not run on.
            "--ignore-requires-python",
        ]
        .iter()
        .map(Into::into)
        .collect();
        args.extend(["--find-links".into(), wheels.into_os_string()]);
        args.extend(packages.iter().map(Into::into));
        setup(duct::cmd(env.join("bin/python"), args).env("PIP_DISABLE_PIP_VERSION_CHECK", "1"));
        env
    }

    /// A generated distribution: its `.dist-info` with METADATA only.
    fn dist(env: &Path, dir_name: &str, name: &str, requires: &[&str]) {
        let site = crate::installed::site_packages(env).remove(0);
        let info = site.join(format!("{dir_name}.dist-info"));
        std::fs::create_dir_all(&info).unwrap();
        let mut text = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n");
        for r in requires {
            text.push_str(&format!("Requires-Dist: {r}\n"));
        }
        text.push_str("\nA description: with a colon.\n");
        std::fs::write(info.join("METADATA"), text).unwrap();
    }

    fn lines(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    /// The Python closure's answer, in [`Read`]'s terms.
    fn by_python(env: &Path, lines: &[String]) -> Read {
        let runner = Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None);
        match closure(env, lines, &runner) {
            Ok(names) => Read::Needed(names),
            Err(e) => Read::Missing(format!("{e:#}")),
        }
    }

    /// What setuptools before 67 wrote for `zope` as a namespace package.
    const NSPKG: &str = "import sys, types, os;has_mfs = sys.version_info > (3, 5);p = os.path.join(sys._getframe(1).f_locals['sitedir'], *('zope',));importlib = has_mfs and __import__('importlib.util');has_mfs and __import__('importlib.machinery');m = has_mfs and sys.modules.setdefault('zope', importlib.util.module_from_spec(importlib.machinery.PathFinder.find_spec('zope', [os.path.dirname(p)])));m = m or sys.modules.setdefault('zope', types.ModuleType('zope'));mp = (m or []) and m.__dict__.setdefault('__path__',[]);(p not in mp) and mp.append(p)\n";

    /// The interpreters of pyenv named `3.N.*`, where there are.
    fn pyenv_python(minor: u32) -> Option<PathBuf> {
        let root = Path::new(&std::env::var_os("HOME")?).join(".pyenv/versions");
        let mut found: Vec<PathBuf> = std::fs::read_dir(root)
            .ok()?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("3.{minor}."))
            })
            .map(|e| e.path().join("bin/python3"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    }

    /// With the machine's python3 (pip 23, whose `packaging` 21 compares
    /// extras as plain strings), and where pyenv has them with Python 3.8
    /// and 3.13 (pip 24, `packaging` 24).
    #[test]
    fn the_closure_read_in_rust_is_the_python_closure() {
        let mut pythons = vec![PathBuf::from("python3")];
        pythons.extend([8, 13].into_iter().filter_map(pyenv_python));
        for python in pythons {
            same_closure(&python);
        }
    }

    fn same_closure(python: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let env = real_env_of(
            python,
            dir.path(),
            &["gunicorn", "greeting", "tinyweb", "django"],
        );
        // Extras that pull extras, markers on the interpreter and on extras,
        // names spelt with `_`, `.` and capitals.
        dist(
            &env,
            "Alpha_Pkg-1.0",
            "Alpha_Pkg",
            &[
                "Beta.Core[Fast] ; extra == \"speed\"",
                "gamma ; python_version < \"3\"",
                "delta ; sys_platform == \"linux\" and python_full_version >= \"3.8.0\"",
                "epsilon-lib ; extra == \"all\" or os_name == \"nt\"",
                "tinyweb (>=1.0)",
            ],
        );
        dist(
            &env,
            "beta_core-1.0",
            "beta-core",
            &[
                "zeta_x[deep]; extra == 'fast'",
                "eta ; extra == 'slow'",
                "gunicorn ; platform_system == 'Windows'",
            ],
        );
        dist(
            &env,
            "Zeta_X-1.0",
            "ZETA_X",
            &["greeting ; extra == 'deep'"],
        );
        dist(&env, "delta-1.0", "delta", &[]);
        dist(&env, "epsilon_lib-1.0", "Epsilon.Lib", &["iota"]);
        dist(
            &env,
            "eta-1.0",
            "eta",
            &["missing-one ; python_version >= '3'"],
        );
        // A namespace package of old setuptools: its .pth runs code at startup.
        let site = crate::installed::site_packages(&env).remove(0);
        std::fs::write(site.join("zope.interface-5.0-nspkg.pth"), NSPKG).unwrap();
        let runner = Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None);
        for case in [
            lines(&["gunicorn", "greeting==1.0.0", "django"]),
            lines(&["Alpha.PKG"]),
            lines(&["alpha_pkg[speed]"]),
            lines(&["alpha-pkg[SPEED,All] ; python_version >= '3.8'", "tinyweb"]),
            lines(&["alpha-pkg[speed] ; sys_platform == 'win32'", "greeting"]),
            // Needed and not installed: the same message.
            lines(&["gunicorn[gevent]"]),
            lines(&["alpha-pkg[all]"]),
            lines(&["beta-core[slow]", "nothing-here"]),
        ] {
            let rust = read_closure(&env, &case, &cache, &runner);
            assert_eq!(rust, by_python(&env, &case), "{case:?}");
        }
        // The marker environment was asked once, and cached: no program
        // runs any more (a runner past its deadline runs none).
        let cached = std::fs::read_to_string(cache.join("marker-environments.json")).unwrap();
        assert!(cached.contains("python_full_version"), "{cached}");
        let expired = Runner::new(
            Vec::new(),
            crate::process::Limits {
                total: std::time::Duration::ZERO,
                ..crate::process::Limits::DEFAULT
            },
            None,
        );
        let mut report = Report::new(Box::new(std::io::sink()));
        let case = lines(&["alpha-pkg[speed]", "gunicorn"]);
        let names = from_metadata(&env, &case, &cache, &expired, &mut report).unwrap();
        assert_eq!(Read::Needed(names), by_python(&env, &case));
    }

    /// Python 3.7 has no importlib.metadata: the Python closure fails, and
    /// the interpreter is asked once only.
    #[test]
    fn an_interpreter_without_importlib_metadata_is_asked_once() {
        let Some(python) = pyenv_python(7) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let env = dir.path().join("env");
        setup(duct::cmd!(&python, "-m", "venv", "--without-pip", &env));
        let runner = Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None);
        let case = lines(&["greeting"]);
        let unsupported = Read::Uncertain("Python 3.7 has no importlib.metadata".into());
        assert_eq!(read_closure(&env, &case, &cache, &runner), unsupported);
        let expired = Runner::new(
            Vec::new(),
            crate::process::Limits {
                total: std::time::Duration::ZERO,
                ..crate::process::Limits::DEFAULT
            },
            None,
        );
        assert_eq!(read_closure(&env, &case, &cache, &expired), unsupported);
        assert!(closure(&env, &case, &runner).is_err());
    }

    #[test]
    fn what_rust_cannot_read_as_python_does_is_left_to_python() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let env = real_env(dir.path(), &["greeting"]);
        let runner = Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None);
        let uncertain =
            |lines: &[String], what: &str| match read_closure(&env, lines, &cache, &runner) {
                Read::Uncertain(why) => assert!(why.contains(what), "{why}"),
                other => panic!("{lines:?}: {other:?}"),
            };
        // An extra spelt otherwise than normalised: pip's packaging 21 compares
        // it as a plain string.
        dist(&env, "odd-1.0", "odd", &["greeting ; extra == 'Fast_Lane'"]);
        uncertain(&lines(&["odd[fast-lane]"]), "Fast_Lane");
        assert_eq!(
            by_python(&env, &lines(&["odd[fast-lane]"])),
            Read::Needed(["odd".to_string()].into())
        );
        let site = crate::installed::site_packages(&env).remove(0);
        std::fs::remove_dir_all(site.join("odd-1.0.dist-info")).unwrap();
        // A folded Requires-Dist.
        dist(
            &env,
            "folded-1.0",
            "folded",
            &["greeting ;\n  extra == 'x'"],
        );
        uncertain(&lines(&["greeting"]), "folds");
        std::fs::remove_dir_all(site.join("folded-1.0.dist-info")).unwrap();
        // An egg-info.
        std::fs::create_dir(site.join("old-1.0.egg-info")).unwrap();
        uncertain(&lines(&["greeting"]), "old-1.0.egg-info");
        std::fs::remove_dir_all(site.join("old-1.0.egg-info")).unwrap();
        // A .pth that runs code.
        std::fs::write(site.join("hook.pth"), "import sys; sys.path.append('/x')\n").unwrap();
        uncertain(&lines(&["greeting"]), "hook.pth");
        std::fs::remove_file(site.join("hook.pth")).unwrap();
        // The system's site-packages.
        let cfg = env.join("pyvenv.cfg");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(
            &cfg,
            text.replace(
                "include-system-site-packages = false",
                "include-system-site-packages = true",
            ),
        )
        .unwrap();
        uncertain(&lines(&["greeting"]), "include-system-site-packages");
        std::fs::write(&cfg, text).unwrap();
        assert_eq!(
            read_closure(&env, &lines(&["greeting"]), &cache, &runner),
            Read::Needed(["greeting".to_string()].into())
        );
    }
}
