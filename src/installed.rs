//! What was last installed into the env, so an unchanged push skips pip.
//!
//! The installer runs again when anything it depends on changed since the
//! last successful install into this same env: the requirement files (by
//! the blob each resolves to in the commit, includes too), the interpreter
//! the env runs (its version and the file it runs), the env itself (its
//! directory and what its site-packages holds), the installer, the settings
//! that change resolution (`PIP_*`, `UV_*` and `PYTHON*` variables, every
//! config file pip reads, the content of local find-links
//! directories). A line outside the forms `requirements` understands makes
//! it run every time.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::commit::{Commit, Resolved, short_id};
use crate::error::{named, shown};
use crate::files::{remove_file_if_there, write_atomic};
use crate::git_remote::{GitLine, GitUrl};
use crate::requirements::{self, Line, Unfixed};
use crate::runtime::Version;
use crate::settings::Environment;

pub const REQUIREMENTS: &str = "requirements.txt";

/// One input of an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Input {
    Requirements,
    Interpreter,
    Env,
    Installer,
    PipSettings,
    ConfigFiles,
    FindLinks,
    Platform,
    /// The commit each git line names (asked of its remote unless pinned).
    GitCommits,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Input::Requirements => "requirements",
            Input::Interpreter => "interpreter",
            Input::Env => "env",
            Input::Installer => "installer",
            Input::PipSettings => "pip settings",
            Input::ConfigFiles => "config files",
            Input::FindLinks => "find-links directories",
            Input::Platform => "platform",
            Input::GitCommits => "git commits",
        })
    }
}

/// The inputs of one install, each as text; compared input by input to
/// say what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(BTreeMap<Input, String>);

impl Fingerprint {
    /// Inputs gathered elsewhere: an install from a lock file (`lockfile`)
    /// names its files, tool and settings with the same inputs.
    pub fn from_inputs(inputs: impl IntoIterator<Item = (Input, String)>) -> Self {
        Fingerprint(inputs.into_iter().collect())
    }

    /// The same inputs, with the env and its interpreter as `env` is now
    /// (after an install, or for a new env).
    pub fn with_env(&self, env: &Path, version: Version) -> Fingerprint {
        let mut fp = self.clone();
        fp.0.insert(Input::Env, env_identity(env));
        fp.0.insert(Input::Interpreter, interpreter_identity(env, version));
        fp
    }

    /// The same inputs with `input` given `value`.
    pub fn with(&self, input: Input, value: String) -> Fingerprint {
        let mut fp = self.clone();
        fp.0.insert(input, value);
        fp
    }

    /// The inputs whose values differ from `other`'s, in order.
    pub fn changed(&self, other: &Fingerprint) -> Vec<Input> {
        let mut inputs: Vec<Input> = self
            .0
            .keys()
            .chain(other.0.keys())
            .filter(|k| self.0.get(*k) != other.0.get(*k))
            .copied()
            .collect();
        inputs.sort();
        inputs.dedup();
        inputs
    }
}

/// The whole resolution that says what requirements.txt needs after an
/// install into a reused env (`exact`), when a line names a package only the
/// installer can name (a URL, a VCS URL, `-e`, a local path): plan data,
/// with what the resolution depends on but the env, known after the install.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvePlan {
    pub why: Always,
    #[serde(skip)]
    pub inputs: Fingerprint,
}

/// The last whole resolution of the requirements: its inputs (the env's
/// by what its distributions say of themselves) and the names it gave
/// (`<state dir>/requirements-resolution.json`). Its inputs all the same,
/// a resolution gives the same names: it is not run again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolution {
    pub inputs: Fingerprint,
    pub deployment: String,
    pub needed: std::collections::BTreeSet<String>,
}

impl Resolution {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("requirements-resolution.json")
    }

    pub fn load(state_dir: &Path) -> Option<Resolution> {
        serde_json::from_slice(&std::fs::read(Self::path(state_dir)).ok()?).ok()
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        write_atomic(&Self::path(state_dir), &serde_json::to_vec_pretty(self)?)
    }
}

/// What the env's installed distributions say of themselves, by content:
/// each one's metadata (its name, version and requirements) and where it
/// came from (`direct_url.json`: a VCS commit, a URL, a local folder). Two
/// envs with the same text hold the same distributions, whatever their
/// paths and file times (a copy aside, a reinstall of the same build).
pub fn installed_metadata(env: &Path) -> String {
    let mut lines = Vec::new();
    for site in site_packages(env) {
        for entry in std::fs::read_dir(&site).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".dist-info") && !name.ends_with(".egg-info") {
                continue;
            }
            for file in ["METADATA", "PKG-INFO", "requires.txt", "direct_url.json"] {
                if let Ok(content) = std::fs::read(entry.path().join(file)) {
                    let id = git2::Oid::hash_object(git2::ObjectType::Blob, &content)
                        .map_or_else(|_| String::new(), |id| id.to_string());
                    lines.push(format!("{name}/{file} {id}"));
                }
            }
        }
    }
    lines.sort();
    lines.join("\n")
}

/// Why a requirement file makes the installer run every time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Always {
    /// A line outside the forms pushdeploy understands.
    Line {
        file: String,
        line: usize,
        what: Unfixed,
    },
    /// A requirement file that is not a file of the commit (a symlink to
    /// no file of it is refused instead).
    NotInCommit {
        file: String,
        included_by: Option<(String, usize)>,
    },
}

impl fmt::Display for Always {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Always::Line { file, line, what } => {
                write!(f, "{} line {line} is {what}", named(file))
            }
            Always::NotInCommit { file, included_by } => {
                write!(f, "{}", named(file))?;
                if let Some((by, line)) = included_by {
                    write!(f, " ({} line {line})", named(by))?;
                }
                f.write_str(" is not a file of the commit")
            }
        }
    }
}

/// Why the installer runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RunReason {
    NewEnv,
    NoRecord,
    /// The last install failed (into a copy of the env aside: the live
    /// env is as after the last successful one, which `inputs` are
    /// compared with; empty when no successful install is recorded).
    LastFailed {
        deployment: String,
        inputs: Vec<Input>,
    },
    Changed {
        inputs: Vec<Input>,
    },
    Always {
        why: Always,
    },
    NotSkipping {
        origin: String,
    },
    /// A git line whose commit is not known, or that the env does not hold
    /// at the commit it names (as `git_remote` words it).
    Git {
        line: String,
    },
}

impl fmt::Display for RunReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunReason::NewEnv => f.write_str("a new env"),
            RunReason::NoRecord => f.write_str("no earlier install into this env is recorded"),
            RunReason::LastFailed { deployment, inputs } => {
                write!(
                    f,
                    "the last install, by deployment {}, failed",
                    short_id(deployment)
                )?;
                if !inputs.is_empty() {
                    let names: Vec<String> = inputs.iter().map(Input::to_string).collect();
                    write!(
                        f,
                        "; changed since the last successful one: {}",
                        names.join(", ")
                    )?;
                }
                Ok(())
            }
            RunReason::Changed { inputs } => {
                let names: Vec<String> = inputs.iter().map(Input::to_string).collect();
                write!(f, "changed since the last install: {}", names.join(", "))
            }
            RunReason::Always { why } => write!(f, "{why}: the installer always runs"),
            RunReason::NotSkipping { origin } => {
                write!(f, "skipUnchangedPackages is false ({origin})")
            }
            RunReason::Git { line } => f.write_str(line),
        }
    }
}

/// Whether the installer must run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum PipDecision {
    Run {
        reason: RunReason,
    },
    /// Every input is as it was after deployment `since`'s install.
    Skip {
        since: String,
    },
}

impl PipDecision {
    pub fn run(reason: RunReason) -> Self {
        PipDecision::Run { reason }
    }
}

impl fmt::Display for PipDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipDecision::Run { reason } => reason.fmt(f),
            PipDecision::Skip { since } => write!(
                f,
                "requirements, interpreter, env and pip settings unchanged since {}",
                short_id(since)
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    fingerprint: Fingerprint,
    deployment: String,
    #[serde(default)]
    outcome: Outcome,
    /// A failed install since the recorded successful one (by this deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed: Option<String>,
}

/// How the install by the recorded deployment ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Outcome {
    #[default]
    Installed,
    Failed,
}

/// The record of the last install into the env (`<state dir>/installed.json`).
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Store {
            path: state_dir.join("installed.json"),
        }
    }

    fn load(&self) -> Option<Stored> {
        serde_json::from_slice(&std::fs::read(&self.path).ok()?).ok()
    }

    /// Compares with the last install: skip only when every input is the same.
    pub fn decide(&self, now: &Fingerprint) -> PipDecision {
        let Some(last) = self.load() else {
            return PipDecision::run(RunReason::NoRecord);
        };
        if last.outcome == Outcome::Failed {
            return PipDecision::run(RunReason::LastFailed {
                deployment: last.deployment,
                inputs: Vec::new(),
            });
        }
        let mut inputs: Vec<Input> = now
            .0
            .keys()
            .chain(last.fingerprint.0.keys())
            .filter(|k| now.0.get(*k) != last.fingerprint.0.get(*k))
            .copied()
            .collect();
        inputs.sort();
        inputs.dedup();
        match (inputs.is_empty(), last.failed) {
            (true, _) => PipDecision::Skip {
                since: last.deployment,
            },
            (false, Some(deployment)) => {
                PipDecision::run(RunReason::LastFailed { deployment, inputs })
            }
            (false, None) => PipDecision::run(RunReason::Changed { inputs }),
        }
    }

    /// Records a successful install.
    pub fn save(&self, fingerprint: &Fingerprint, deployment: &str) -> Result<()> {
        self.write(fingerprint.clone(), deployment, Outcome::Installed)
    }

    /// Records a successful install into the env at `env` (run by a
    /// `version` interpreter), with the env as it is now; without a
    /// fingerprint (the installer always runs), forgets the last one.
    pub fn installed(
        &self,
        fingerprint: Option<&Fingerprint>,
        env: &Path,
        version: Version,
        deployment: &str,
    ) -> Result<()> {
        match fingerprint {
            Some(fp) => self.save(&fp.with_env(env, version), deployment),
            None => self.forget(),
        }
    }

    /// Records a failed install, which ran in a copy of the env aside: the
    /// live env is as the last successful install left it, so its record
    /// stays (a push that returns to its inputs skips); the failure is kept
    /// to say why the installer runs next.
    pub fn failed(&self, deployment: &str) -> Result<()> {
        match self.load() {
            Some(last) if last.outcome == Outcome::Installed => {
                let stored = Stored {
                    failed: Some(deployment.to_string()),
                    ..last
                };
                write_atomic(&self.path, &serde_json::to_vec_pretty(&stored)?)
            }
            _ => self.write(Fingerprint::default(), deployment, Outcome::Failed),
        }
    }

    fn write(&self, fingerprint: Fingerprint, deployment: &str, outcome: Outcome) -> Result<()> {
        let stored = Stored {
            fingerprint,
            deployment: deployment.to_string(),
            outcome,
            failed: None,
        };
        write_atomic(&self.path, &serde_json::to_vec_pretty(&stored)?)
    }

    pub fn forget(&self) -> Result<()> {
        remove_file_if_there(&self.path)
    }
}

/// The versions an install of the same requirements gave, for an install
/// of them again (a push back, a redeploy): the first install's result, not
/// pip's in-place choice from whatever a later commit left in the env.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    /// The deployment whose install gave them.
    pub deployment: String,
    /// Normalised name -> version.
    pub packages: BTreeMap<String, String>,
}

impl Pins {
    /// As a pip constraints file: `name==version`, one a line.
    pub fn constraints(&self) -> String {
        self.packages
            .iter()
            .map(|(name, version)| format!("{name}=={version}\n"))
            .collect()
    }
}

/// The versions installed from each set of requirements into an env of each
/// Python (`<state dir>/installed-versions.json`), newest last.
pub struct Versions {
    path: PathBuf,
}

/// How many sets of requirements [`Versions`] remembers; older ones go.
const MAX_VERSIONS: usize = 200;

impl Versions {
    pub fn new(state_dir: &Path) -> Self {
        Versions {
            path: state_dir.join("installed-versions.json"),
        }
    }

    fn load(&self) -> Vec<(String, Pins)> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// What the same requirement files (by their blobs) installed into an
    /// env of the same Python X.Y as the env at `env`, if that was done.
    pub fn recorded(&self, fingerprint: &Fingerprint, env: &Path) -> Option<Pins> {
        let key = versions_key(fingerprint, env)?;
        self.load()
            .into_iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, pins)| pins)
    }

    /// Remembers what is installed in the env at `env` after deployment
    /// `deployment` installed these requirements.
    pub fn remember(
        &self,
        fingerprint: &Fingerprint,
        env: &Path,
        deployment: &str,
        packages: BTreeMap<String, String>,
    ) -> Result<()> {
        let Some(key) = versions_key(fingerprint, env) else {
            return Ok(());
        };
        let mut all = self.load();
        all.retain(|(k, _)| *k != key);
        all.push((
            key,
            Pins {
                deployment: deployment.to_string(),
                packages,
            },
        ));
        let drop = all.len().saturating_sub(MAX_VERSIONS);
        all.drain(..drop);
        write_atomic(&self.path, &serde_json::to_vec_pretty(&all)?)
    }
}

/// The requirement files (as the fingerprint names them) and the Python
/// X.Y of the env at `env` (from its `pyvenv.cfg`), hashed.
fn versions_key(fingerprint: &Fingerprint, env: &Path) -> Option<String> {
    let requirements = fingerprint.0.get(&Input::Requirements)?;
    let version = crate::env::pyvenv_cfg(env, "version")
        .or_else(|| crate::env::pyvenv_cfg(env, "version_info"))?;
    let minor: Vec<&str> = version.split('.').take(2).collect();
    let text = format!("python {}\n{requirements}", minor.join("."));
    git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
        .ok()
        .map(|id| id.to_string())
}

/// A requirement file as read from the commit.
#[derive(Debug, Clone)]
pub struct RequirementFile {
    /// As pip names it: relative to the site, through the including file's folder.
    pub name: String,
    /// The file it resolves to in the commit, and that file's blob.
    pub path: String,
    pub blob: git2::Oid,
    pub content: Vec<u8>,
    /// Symlinks followed to reach it: (path, target).
    pub links: Vec<(String, String)>,
}

/// requirements.txt and everything it includes, read from the commit.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    pub files: Vec<RequirementFile>,
    /// The first reason the installer must always run, if any.
    pub always: Option<Always>,
    /// The first line that names a package only the installer can name
    /// (fixed or not): what the requirements need then takes a resolution.
    pub unnamed: Option<Always>,
    /// The git lines at a commit, by branch, tag or none: each counts as
    /// pinned at the commit its remote names, once asked
    /// (`git_remote::resolve`).
    pub git: Vec<GitLine>,
    find_links: Vec<String>,
    platform: bool,
    /// Lines of options with `${VAR}`, as pip will read them (hashed).
    expanded: Vec<String>,
}

/// How many requirement files one install may read; more is refused.
const MAX_FILES: usize = 256;

/// Reads requirements.txt and the files it includes from the commit.
/// Refuses (an error naming the file, the line and the value) an include
/// that leaves the site: an absolute path, `..` above the top, a `file:`
/// URL. `lookup` gives the variables pip will see, for `-r ${VAR}`.
pub fn read_requirements(
    commit: &Commit,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Requirements> {
    let mut out = Requirements::default();
    let mut queue: std::collections::VecDeque<(String, Option<(String, usize)>)> =
        std::collections::VecDeque::from([(REQUIREMENTS.to_string(), None)]);
    let mut seen = std::collections::BTreeSet::new();
    let note = |out: &mut Requirements, why: Always| {
        out.always.get_or_insert(why);
    };
    while let Some((name, included_by)) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if seen.len() > MAX_FILES {
            bail!("{REQUIREMENTS}: includes more than {MAX_FILES} requirement files");
        }
        let (path, blob, content, links) = match commit.resolve(&name)? {
            Resolved::File {
                path,
                id,
                content,
                links,
            } => (path, id, content, links),
            Resolved::Missing | Resolved::Folder { .. } => {
                note(
                    &mut out,
                    Always::NotInCommit {
                        file: name,
                        included_by,
                    },
                );
                continue;
            }
            Resolved::Link { link, target } => {
                bail!(
                    "{} is a symlink to {}, which is not a file of the commit; requirement files must be files of the commit",
                    named(&link),
                    named(&target)
                )
            }
            Resolved::Outside => {
                bail!(
                    "{}: leads outside the site; requirement files must be files of the commit",
                    named(&name)
                )
            }
        };
        let text = utf8_text(&name, &content)?.to_string();
        let dir = name.rsplit_once('/').map_or("", |(dir, _)| dir).to_string();
        for (number, line) in requirements::logical_lines(&text) {
            let path = requirements::local_path(&requirements::expand(&line, lookup));
            if let Some(path) = path {
                // pip takes a local path from its working folder, the site.
                let why = if path.starts_with('/') {
                    Some("is an absolute path")
                } else if climbs_out(&path) {
                    Some("climbs out of the site")
                } else {
                    None
                };
                if let Some(why) = why {
                    bail!(
                        "{} line {number}: {} {why}; local requirements must be inside the site",
                        named(&name),
                        shown(path.as_bytes())
                    );
                }
            }
            let at = |what| Always::Line {
                file: name.clone(),
                line: number,
                what,
            };
            let include = match requirements::classify(&line) {
                Ok(Line::Include { kind, path }) => Some((kind, path)),
                Ok(Line::FindLinks { dir }) => {
                    out.find_links.push(dir);
                    None
                }
                Ok(Line::Requirement { platform }) => {
                    out.platform |= platform;
                    None
                }
                Ok(Line::Options) => None,
                Err(Unfixed::Variable) => {
                    let expanded = requirements::expand(&line, lookup);
                    match requirements::classify(&expanded) {
                        // An index option with a variable (a token in a
                        // private index's URL): its value counts, hashed.
                        Ok(Line::Options) => {
                            let id = git2::Oid::hash_object(
                                git2::ObjectType::Blob,
                                expanded.as_bytes(),
                            )?;
                            out.expanded.push(format!("{name} line {number} {id}"));
                        }
                        _ => note(&mut out, at(Unfixed::Variable)),
                    }
                    // The value pip will read, checked and followed all the same.
                    requirements::include_value(&line)
                        .map(|(kind, v)| (kind, requirements::expand(&v, lookup)))
                }
                // A VCS URL at a full commit id names one tree for good,
                // as `==` names one release: it does not make pip run. A
                // git URL by branch or tag counts as pinned at the commit
                // its remote names, once asked (`git_remote`).
                Err(Unfixed::Vcs)
                    if git_commit_pinned(&line).is_some() || GitUrl::parse(&line).is_some() =>
                {
                    out.unnamed.get_or_insert(at(Unfixed::Vcs));
                    if let Some(url) = GitUrl::parse(&line) {
                        out.git.push(GitLine::new(name.clone(), number, url));
                    }
                    None
                }
                Err(what) => {
                    out.unnamed.get_or_insert(at(what.clone()));
                    note(&mut out, at(what));
                    None
                }
            };
            let Some((kind, value)) = include else {
                continue;
            };
            let refuse = |why: &str| {
                anyhow::anyhow!(
                    "{} line {number}: {} {} {why}; requirement files must be inside the site",
                    named(&name),
                    kind.flag(),
                    shown(value.as_bytes())
                )
            };
            if value.to_ascii_lowercase().starts_with("file:") {
                return Err(refuse("names a file by URL"));
            }
            if value.starts_with('/') {
                return Err(refuse("is an absolute path"));
            }
            // pip joins the value to the including file's folder as named;
            // `.` and empty parts change nothing, `..` is left to the resolver.
            let joined = format!("{dir}/{value}")
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .collect::<Vec<_>>()
                .join("/");
            if climbs_out(&joined) {
                return Err(refuse("climbs out of the site"));
            }
            if value.contains("${") || value.contains("://") {
                continue;
            }
            queue.push_back((joined, Some((name.clone(), number))));
        }
        out.files.push(RequirementFile {
            name,
            path,
            blob,
            content,
            links,
        });
    }
    Ok(out)
}

/// The full commit id a git URL in a requirement line pins
/// (`name @ git+https://host/repo.git@<id>`, maybe `#subdirectory=...` or a
/// marker after it), if it pins one: a branch, a tag or a short id can move.
fn git_commit_pinned(line: &str) -> Option<&str> {
    let start = line.to_ascii_lowercase().find("git+")?;
    let url = line[start..].split([' ', '\t']).next()?;
    let url = url.split('#').next()?;
    let (_, rest) = url.split_once("://")?;
    let (_, id) = rest.rsplit_once('@')?;
    crate::git_remote::is_full_id(id).then_some(id)
}

/// A requirement file's text, which must be UTF-8 as pushdeploy reads it.
/// pip also decodes UTF-16 and UTF-32 (by their BOM) and whatever encoding a
/// `coding:` comment in the first two lines names (UTF-7 among them), where
/// an include out of the site could hide from this reading: refused.
fn utf8_text<'a>(name: &str, content: &'a [u8]) -> Result<&'a str> {
    let refuse =
        |what: &str| anyhow::anyhow!("{}: {what}; requirement files must be UTF-8", named(name));
    let boms: [&[u8]; 2] = [b"\xff\xfe", b"\xfe\xff"];
    if boms.iter().any(|bom| content.starts_with(bom)) || content.starts_with(b"\x00\x00\xfe\xff") {
        return Err(refuse("starts with a UTF-16 or UTF-32 byte order mark"));
    }
    let text = std::str::from_utf8(content).map_err(|_| refuse("is not UTF-8 text"))?;
    // pip's PEP 263 check: `coding[:=]\s*([-\w.]+)` in a first or second
    // line that starts with `#`.
    for line in text.split('\n').take(2).filter(|l| l.starts_with('#')) {
        let Some(at) = line.find("coding") else {
            continue;
        };
        let Some(rest) = line[at + "coding".len()..].strip_prefix([':', '=']) else {
            continue;
        };
        let encoding: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect::<String>()
            .to_ascii_lowercase()
            .replace('_', "-");
        if !["utf-8", "utf8", "utf-8-sig", "ascii", "us-ascii"].contains(&encoding.as_str()) {
            return Err(refuse(&format!(
                "declares the encoding {}",
                shown(encoding.as_bytes())
            )));
        }
    }
    Ok(text)
}

/// Whether a relative path goes above its top with `..`, taken as written.
pub fn climbs_out(path: &str) -> bool {
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// Everything besides the requirement files that an install depends on.
pub struct Context<'a> {
    pub env: &'a Environment,
    /// `.deployment`'s app settings, which the installer sees too.
    pub app_settings: &'a [(String, String)],
    /// `pip`, or `uv <path>`.
    pub installer: String,
    pub site: &'a Path,
}

impl Context<'_> {
    /// A variable as the installer sees it: app settings over the hook's environment.
    pub fn var(&self, name: &str) -> Option<String> {
        self.app_settings
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| self.env.get(name).map(str::to_string))
    }

    /// `PIP_*`, `UV_*` and `PYTHON*` variables the installer sees.
    fn vars(&self) -> Vec<(String, String)> {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for prefix in ["PIP_", "UV_", "PYTHON"] {
            vars.extend(self.env.with_prefix(prefix));
        }
        vars.extend(
            self.app_settings
                .iter()
                .filter(|(k, _)| ["PIP_", "UV_", "PYTHON"].iter().any(|p| k.starts_with(p)))
                .cloned(),
        );
        vars.into_iter().collect()
    }

    /// Every configuration file pip reads, in the order pip reads them (uv
    /// runs with `--no-config`: it reads none).
    pub fn config_files(&self) -> Vec<PathBuf> {
        let home = self.env.home();
        let config_home = self
            .env
            .get("XDG_CONFIG_HOME")
            .map_or_else(|| home.join(".config"), PathBuf::from);
        let config_dirs: Vec<PathBuf> = self
            .env
            .get("XDG_CONFIG_DIRS")
            .unwrap_or("/etc/xdg")
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        let mut files: Vec<PathBuf> = config_dirs.iter().map(|d| d.join("pip/pip.conf")).collect();
        files.push("/etc/pip.conf".into());
        files.push(home.join(".pip/pip.conf"));
        files.push(home.join(".config/pip/pip.conf"));
        files.push(config_home.join("pip/pip.conf"));
        files.push(self.site.join("env/pip.conf"));
        if let Some(file) = self.var("PIP_CONFIG_FILE") {
            files.push(file.into());
        }
        files.dedup();
        files
    }
}

/// The fingerprint of an install into the env at `env` (run by a
/// `version` interpreter), from the requirement files and the context.
pub fn fingerprint(
    requirements: &Requirements,
    context: &Context,
    env: &Path,
    version: Version,
) -> Result<Fingerprint> {
    let mut fp = BTreeMap::new();
    let files: Vec<String> = requirements
        .files
        .iter()
        .map(|f| format!("{} -> {} {}", f.name, f.path, f.blob))
        .chain(requirements.expanded.iter().cloned())
        .collect();
    fp.insert(Input::Requirements, files.join("\n"));
    fp.insert(Input::Installer, context.installer.clone());
    let vars = context.vars();
    let text: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    fp.insert(Input::PipSettings, text.join("\n"));
    let configs: Vec<String> = context
        .config_files()
        .iter()
        .filter_map(|path| {
            let content = std::fs::read(path).ok()?;
            Some(format!(
                "{} {}",
                path.display(),
                String::from_utf8_lossy(&content)
            ))
        })
        .collect();
    fp.insert(Input::ConfigFiles, configs.join("\n"));
    let mut find_links = requirements.find_links.clone();
    for (k, v) in &vars {
        if k == "PIP_FIND_LINKS" || k == "UV_FIND_LINKS" {
            find_links.extend(v.split_whitespace().map(str::to_string));
        }
    }
    let dirs: Vec<String> = find_links
        .iter()
        .filter(|link| !link.contains("://") || link.starts_with("file://"))
        .map(|link| {
            let path = link.strip_prefix("file://").unwrap_or(link);
            format!("{path}\n{}", listing(Path::new(path)))
        })
        .collect();
    fp.insert(Input::FindLinks, dirs.join("\n"));
    if !requirements.git.is_empty() {
        // By what each line asks for, wherever it is in the files (which
        // the requirements input counts).
        let mut lines: Vec<String> = requirements
            .git
            .iter()
            .map(|l| {
                let url = &l.url;
                format!(
                    "{} {:?} {:?} -> {}",
                    url.shown_url,
                    url.revision,
                    url.subdirectory,
                    l.commit().unwrap_or("(unknown)")
                )
            })
            .collect();
        lines.sort();
        lines.dedup();
        fp.insert(Input::GitCommits, lines.join("\n"));
    }
    if requirements.platform {
        // Markers on platform_release or platform_version read the kernel's.
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        fp.insert(
            Input::Platform,
            read("/proc/sys/kernel/osrelease") + &read("/proc/sys/kernel/version"),
        );
    }
    Ok(Fingerprint(fp).with_env(env, version))
}

/// A directory's listing (names, sizes, times): changes when a wheel is
/// added to or replaced in a local find-links directory.
pub fn listing(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return "(missing)".into();
    };
    let mut rows: Vec<String> = entries
        .flatten()
        .map(|e| {
            let meta = e.metadata().ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{} {size} {mtime}", e.file_name().to_string_lossy())
        })
        .collect();
    rows.sort();
    rows.join("\n")
}

/// An env's `site-packages` folders (`lib/pythonX.Y/site-packages`), by name.
pub fn site_packages(env: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(env.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// The env's identity: its real directory, and what its site-packages holds.
pub fn env_identity(env: &Path) -> String {
    let real = std::fs::canonicalize(env).unwrap_or_else(|_| env.to_path_buf());
    let mut out = real.display().to_string();
    for dir in site_packages(&real) {
        out.push('\n');
        out.push_str(&listing(&dir));
    }
    out
}

/// The interpreter an env runs, by the file it runs (whatever name led to
/// it: `/usr/bin/python3` and `/usr/bin/python3.11` are one interpreter).
pub fn interpreter_identity(env: &Path, version: Version) -> String {
    let python = env.join("bin/python");
    let real = std::fs::canonicalize(&python).unwrap_or(python);
    format!("{version} {}", real.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(pairs: &[(Input, &str)]) -> Fingerprint {
        Fingerprint(pairs.iter().map(|(k, v)| (*k, v.to_string())).collect())
    }

    #[test]
    fn a_git_url_at_a_full_commit_id_is_pinned() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        for line in [
            format!("x @ git+https://example.com/x.git@{id}"),
            format!(
                "x @ git+ssh://git@example.com/x.git@{id}#subdirectory=lib ; python_version > '3'"
            ),
            format!("git+https://example.com/x.git@{id}#egg=x"),
        ] {
            assert_eq!(git_commit_pinned(&line), Some(id), "{line}");
        }
        for line in [
            "x @ git+https://example.com/x.git".to_string(),
            "x @ git+https://example.com/x.git@main".to_string(),
            "x @ git+ssh://git@example.com/x.git".to_string(),
            format!("x @ git+https://example.com/x.git@{}", &id[..12]),
            format!("x @ hg+https://example.com/x@{id}"),
        ] {
            assert_eq!(git_commit_pinned(&line), None, "{line}");
        }
    }

    #[test]
    fn decides_by_every_input() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut now = fp(&[
            (Input::Requirements, "requirements.txt abc"),
            (Input::Interpreter, "3.11.7"),
        ]);
        assert_eq!(store.decide(&now), PipDecision::run(RunReason::NoRecord));
        store.save(&now, "0123456789").unwrap();
        assert_eq!(
            store.decide(&now),
            PipDecision::Skip {
                since: "0123456789".into()
            }
        );
        now.0.insert(Input::Interpreter, "3.11.8".into());
        let run = store.decide(&now);
        assert_eq!(
            run,
            PipDecision::run(RunReason::Changed {
                inputs: vec![Input::Interpreter]
            })
        );
        assert_eq!(
            run.to_string(),
            "changed since the last install: interpreter"
        );
        // A failed install leaves the env and its record as they were.
        store.failed("abcdef0123").unwrap();
        assert_eq!(
            store.decide(&now).to_string(),
            "the last install, by deployment abcdef0, failed; changed since the last successful one: interpreter"
        );
        now.0.insert(Input::Interpreter, "3.11.7".into());
        assert_eq!(
            store.decide(&now),
            PipDecision::Skip {
                since: "0123456789".into()
            }
        );
        store.forget().unwrap();
        store.failed("abcdef0123").unwrap();
        assert_eq!(
            store.decide(&now).to_string(),
            "the last install, by deployment abcdef0, failed"
        );
    }

    #[test]
    fn the_decision_has_stable_tags() {
        let run = PipDecision::run(RunReason::Changed {
            inputs: vec![Input::Requirements, Input::PipSettings],
        });
        assert_eq!(
            serde_json::to_value(&run).unwrap(),
            serde_json::json!({"action": "run", "reason": {"kind": "changed", "inputs": ["requirements", "pipSettings"]}})
        );
        let always = PipDecision::run(RunReason::Always {
            why: Always::Line {
                file: "requirements.txt".into(),
                line: 2,
                what: Unfixed::LocalPath,
            },
        });
        assert_eq!(
            serde_json::to_value(&always).unwrap(),
            serde_json::json!({"action": "run", "reason": {"kind": "always", "why": {"kind": "line", "file": "requirements.txt", "line": 2, "what": {"kind": "localPath"}}}})
        );
        assert_eq!(
            always.to_string(),
            "requirements.txt line 2 is a local path: the installer always runs"
        );
    }

    /// A commit of `files` (a content, or `@target` for a symlink).
    fn repo_with(files: &[(&str, &str)]) -> (tempfile::TempDir, git2::Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let mut index = repo.index().unwrap();
        for (path, content) in files {
            let (mode, bytes) = match content.strip_prefix('@') {
                Some(target) => (0o120000, target.as_bytes()),
                None => (0o100644, content.as_bytes()),
            };
            let id = repo.blob(bytes).unwrap();
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode,
                uid: 0,
                gid: 0,
                file_size: 0,
                id,
                flags: path.len() as u16,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).unwrap();
        }
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        drop(tree);
        (dir, repo)
    }

    fn read(files: &[(&str, &str)], vars: &[(&str, &str)]) -> Result<(Requirements, Fingerprint)> {
        let (_dir, repo) = repo_with(files);
        let commit = Commit::open(&repo, "HEAD")?;
        let env = Environment::from_pairs(vars.iter().copied());
        let site = tempfile::tempdir().unwrap();
        let context = Context {
            env: &env,
            app_settings: &[],
            installer: "pip".into(),
            site: site.path(),
        };
        let requirements = read_requirements(&commit, &|name| context.var(name))?;
        let v = Version {
            major: 3,
            minor: 11,
            patch: 7,
        };
        let fp = fingerprint(&requirements, &context, &site.path().join("env"), v)?;
        Ok((requirements, fp))
    }

    /// Each form on the list, before and after a change of a file it names:
    /// the fingerprint changes, so the installer runs.
    #[test]
    fn a_change_of_what_a_known_form_names_makes_the_installer_run() {
        type Files<'a> = &'a [(&'a str, &'a str)];
        let table: &[(&str, Files, Files)] = &[
            (
                "a requirement",
                &[("requirements.txt", "flask==3.1\n")],
                &[("requirements.txt", "flask==3.2\n")],
            ),
            (
                "a continued line",
                &[("requirements.txt", "flask==\\\n3.1\n")],
                &[("requirements.txt", "flask==\\\n3.2\n")],
            ),
            (
                "-r base.txt",
                &[
                    ("requirements.txt", "-r base.txt\n"),
                    ("base.txt", "six==1.16.0\n"),
                ],
                &[
                    ("requirements.txt", "-r base.txt\n"),
                    ("base.txt", "six==1.17.0\n"),
                ],
            ),
            (
                "-rbase.txt",
                &[
                    ("requirements.txt", "-rbase.txt\n"),
                    ("base.txt", "six==1.16.0\n"),
                ],
                &[
                    ("requirements.txt", "-rbase.txt\n"),
                    ("base.txt", "six==1.17.0\n"),
                ],
            ),
            (
                "--requirement=reqs/base.txt",
                &[
                    ("requirements.txt", "--requirement=reqs/base.txt\n"),
                    ("reqs/base.txt", "six\n"),
                ],
                &[
                    ("requirements.txt", "--requirement=reqs/base.txt\n"),
                    ("reqs/base.txt", "six<2\n"),
                ],
            ),
            (
                "-cconstraints.txt",
                &[
                    ("requirements.txt", "six\n-cconstraints.txt\n"),
                    ("constraints.txt", "six==1.16.0\n"),
                ],
                &[
                    ("requirements.txt", "six\n-cconstraints.txt\n"),
                    ("constraints.txt", "six==1.17.0\n"),
                ],
            ),
            (
                "--constraint c.txt, from an include, relative to it",
                &[
                    ("requirements.txt", "-r reqs/base.txt\n"),
                    ("reqs/base.txt", "six\n--constraint c.txt\n"),
                    ("reqs/c.txt", "six==1.16.0\n"),
                ],
                &[
                    ("requirements.txt", "-r reqs/base.txt\n"),
                    ("reqs/base.txt", "six\n--constraint c.txt\n"),
                    ("reqs/c.txt", "six==1.17.0\n"),
                ],
            ),
            (
                "requirements.txt as a symlink",
                &[
                    ("requirements.txt", "@reqs/prod.txt"),
                    ("reqs/prod.txt", "six\n"),
                ],
                &[
                    ("requirements.txt", "@reqs/prod.txt"),
                    ("reqs/prod.txt", "six\ngreeting\n"),
                ],
            ),
            (
                "a symlink pointed elsewhere",
                &[
                    ("requirements.txt", "@a.txt"),
                    ("a.txt", "six\n"),
                    ("b.txt", "six\n"),
                ],
                &[
                    ("requirements.txt", "@b.txt"),
                    ("a.txt", "six\n"),
                    ("b.txt", "six\n"),
                ],
            ),
            (
                "an include through a symlinked folder",
                &[
                    ("requirements.txt", "-r reqs/base.txt\n"),
                    ("reqs", "@conf"),
                    ("conf/base.txt", "six\n"),
                ],
                &[
                    ("requirements.txt", "-r reqs/base.txt\n"),
                    ("reqs", "@conf"),
                    ("conf/base.txt", "six<2\n"),
                ],
            ),
            (
                "an index option",
                &[(
                    "requirements.txt",
                    "--index-url https://a.example/simple\nsix\n",
                )],
                &[(
                    "requirements.txt",
                    "--index-url https://b.example/simple\nsix\n",
                )],
            ),
        ];
        for (what, before, after) in table {
            let (reqs, one) = read(before, &[]).unwrap();
            assert_eq!(reqs.always, None, "{what}");
            let (reqs, two) = read(after, &[]).unwrap();
            assert_eq!(reqs.always, None, "{what}");
            assert_ne!(
                one.0.get(&Input::Requirements),
                two.0.get(&Input::Requirements),
                "{what}"
            );
        }
    }

    #[test]
    fn a_variable_in_an_index_option_counts_by_its_value() {
        let files = [(
            "requirements.txt",
            "--extra-index-url https://${TOKEN}@pypi.example/simple\nsix\n",
        )];
        let (reqs, one) = read(&files, &[("TOKEN", "a")]).unwrap();
        assert_eq!(reqs.always, None);
        let (_, two) = read(&files, &[("TOKEN", "b")]).unwrap();
        assert_ne!(
            one.0.get(&Input::Requirements),
            two.0.get(&Input::Requirements)
        );
        assert!(!one.0.values().any(|v| v.contains("https://a@")));
        // In a requirement, or expanding to one, it always runs.
        let (reqs, _) = read(&[("requirements.txt", "six==${SIX}\n")], &[("SIX", "1")]).unwrap();
        assert!(reqs.always.is_some());
    }

    #[test]
    fn a_local_find_links_directory_and_platform_markers_count() {
        let links = tempfile::tempdir().unwrap();
        let text = format!("--find-links {}\nsix\n", links.path().display());
        let files = [("requirements.txt", text.as_str())];
        let (_, one) = read(&files, &[]).unwrap();
        fs_err::write(links.path().join("six-1.17.0-py3-none-any.whl"), "").unwrap();
        let (_, two) = read(&files, &[]).unwrap();
        assert_ne!(one.0.get(&Input::FindLinks), two.0.get(&Input::FindLinks));
        let (_, fp) = read(&[("requirements.txt", "x; platform_release > '5'\n")], &[]).unwrap();
        assert!(fp.0.contains_key(&Input::Platform));
        let (_, fp) = read(&[("requirements.txt", "x\n")], &[]).unwrap();
        assert!(!fp.0.contains_key(&Input::Platform));
    }

    #[test]
    fn the_config_files_pip_reads_count() {
        let etc = tempfile::tempdir().unwrap();
        let dirs = format!("{}:/nonexistent", etc.path().display());
        let vars = [("XDG_CONFIG_DIRS", dirs.as_str()), ("HOME", "/nonexistent")];
        let files = [("requirements.txt", "six\n")];
        let (_, one) = read(&files, &vars).unwrap();
        fs_err::create_dir(etc.path().join("pip")).unwrap();
        fs_err::write(
            etc.path().join("pip/pip.conf"),
            "[install]\nupgrade = true\n",
        )
        .unwrap();
        let (_, two) = read(&files, &vars).unwrap();
        assert_ne!(
            one.0.get(&Input::ConfigFiles),
            two.0.get(&Input::ConfigFiles)
        );
        let env = Environment::from_pairs([("HOME", "/home/d")]);
        let context = Context {
            env: &env,
            app_settings: &[],
            installer: "pip".into(),
            site: Path::new("/srv/site"),
        };
        let names: Vec<String> = context
            .config_files()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "/etc/xdg/pip/pip.conf",
                "/etc/pip.conf",
                "/home/d/.pip/pip.conf",
                "/home/d/.config/pip/pip.conf",
                "/srv/site/env/pip.conf",
            ]
        );
    }

    /// A sample of forms outside the list: each makes the installer run
    /// every time, naming the file and the line.
    #[test]
    fn forms_outside_the_list_always_run_and_name_the_line() {
        let table: &[(&[(&str, &str)], &str)] = &[
            (
                &[("requirements.txt", "six\nlibs/mylib\n")],
                "requirements.txt line 2 is a local path",
            ),
            (
                &[("requirements.txt", "./mylib\n")],
                "requirements.txt line 1 is a local path",
            ),
            (
                &[("requirements.txt", "x @ file:wheels/x.whl\n")],
                "requirements.txt line 1 is a local path",
            ),
            (
                &[("requirements.txt", "-e .\n")],
                "requirements.txt line 1 is an editable requirement (-e)",
            ),
            (
                &[("requirements.txt", "hg+https://x.example/r#egg=r\n")],
                "requirements.txt line 1 is a VCS URL",
            ),
            (
                &[("requirements.txt", "six==${SIX}\n")],
                "requirements.txt line 1 is an environment variable (${...})",
            ),
            (
                &[("requirements.txt", "-r https://x.example/base.txt\n")],
                "requirements.txt line 1 is a requirement file by URL",
            ),
            (
                &[
                    ("requirements.txt", "--req base.txt\n"),
                    ("base.txt", "six\n"),
                ],
                "requirements.txt line 1 is an option pushdeploy does not follow (\"--req\")",
            ),
            (
                &[
                    ("requirements.txt", "-r base.txt\n"),
                    ("base.txt", "\n\n-e .\n"),
                ],
                "base.txt line 3 is an editable requirement (-e)",
            ),
            (
                &[("requirements.txt", "-r missing.txt\n")],
                "missing.txt (requirements.txt line 1) is not a file of the commit",
            ),
            (
                &[("requirements.txt", "-r reqs\n"), ("reqs/a.txt", "six\n")],
                "reqs (requirements.txt line 1) is not a file of the commit",
            ),
            (
                &[("requirements.txt", "-r \u{1b}]0;x\u{7}.txt\n")],
                "\"\\u{1b}]0;x\\u{7}.txt\" (requirements.txt line 1) is not a file of the commit",
            ),
        ];
        for (files, want) in table {
            let (reqs, _) = read(files, &[]).unwrap();
            let why = reqs.always.unwrap_or_else(|| panic!("{want}: not seen"));
            assert_eq!(why.to_string(), *want);
        }
    }

    #[test]
    fn requirement_files_outside_the_site_are_refused() {
        let secret = [("SECRET_FILE", "/proc/self/environ")];
        let table: &[(&[(&str, &str)], &str)] = &[
            (
                &[("requirements.txt", "-r /proc/self/environ\n")],
                "requirements.txt line 1: -r \"/proc/self/environ\" is an absolute path",
            ),
            (
                &[("requirements.txt", "six\n-c/dev/stdin\n")],
                "requirements.txt line 2: -c \"/dev/stdin\" is an absolute path",
            ),
            (
                &[("requirements.txt", "-r ../secrets.txt\n")],
                "requirements.txt line 1: -r \"../secrets.txt\" climbs out of the site",
            ),
            (
                &[
                    ("requirements.txt", "-r reqs/base.txt\n"),
                    ("reqs/base.txt", "-r ../../x.txt\n"),
                ],
                "reqs/base.txt line 1: -r \"../../x.txt\" climbs out of the site",
            ),
            (
                &[(
                    "requirements.txt",
                    "--requirement=FILE:///proc/self/environ\n",
                )],
                "requirements.txt line 1: -r \"FILE:///proc/self/environ\" names a file by URL",
            ),
            (
                &[("requirements.txt", "-r ${SECRET_FILE}\n")],
                "requirements.txt line 1: -r \"/proc/self/environ\" is an absolute path",
            ),
            (
                &[("requirements.txt", "-r up/x.txt\n"), ("up", "@..")],
                "up/x.txt: leads outside the site",
            ),
            (
                &[("requirements.txt", "x @ file:///srv/x.whl\n")],
                "requirements.txt line 1: \"/srv/x.whl\" is an absolute path",
            ),
            (
                &[
                    ("requirements.txt", "-r reqs/base.txt\n"),
                    ("reqs/base.txt", "six\n-e ../..\n"),
                ],
                "reqs/base.txt line 2: \"../..\" climbs out of the site",
            ),
            (
                &[("requirements.txt", "@env/pyvenv.cfg")],
                "requirements.txt is a symlink to env/pyvenv.cfg, which is not a file of the commit",
            ),
            (
                &[("requirements.txt", "-r base.txt\n"), ("base.txt", "@.env")],
                "base.txt is a symlink to .env, which is not a file of the commit",
            ),
            (
                &[(
                    "requirements.txt",
                    "# -*- coding: utf-7 -*-\n-r +AC8-proc/self/environ\n",
                )],
                "requirements.txt: declares the encoding \"utf-7\"; requirement files must be UTF-8",
            ),
            (
                &[
                    ("requirements.txt", "-r base.txt\n"),
                    ("base.txt", "#coding=latin-1\n"),
                ],
                "base.txt: declares the encoding \"latin-1\"",
            ),
        ];
        let (reqs, _) = read(&[("requirements.txt", "# coding: utf-8\nsix\n")], &[]).unwrap();
        assert_eq!(reqs.always, None);
        for (files, want) in table {
            let err = read(files, &secret)
                .err()
                .unwrap_or_else(|| panic!("{want}: not refused"));
            let text = format!("{err:#}");
            assert!(text.starts_with(want), "{text}");
        }
    }

    /// With `project`, a requirement file that is a link to a file elsewhere
    /// in the commit is, in the site, that file (issue 15 item 23): read as
    /// such, with what it includes beside it in the site.
    #[test]
    fn with_a_project_a_link_out_of_it_is_read_as_the_file_it_names() {
        let (_dir, repo) = repo_with(&[
            ("app/requirements.txt", "@../shared/requirements.txt"),
            ("app/base.txt", "six\n"),
            ("shared/requirements.txt", "-r base.txt\ngreeting\n"),
        ]);
        let commit = Commit::open(&repo, "HEAD")
            .unwrap()
            .with_project("app")
            .unwrap();
        let reqs = read_requirements(&commit, &|_| None).unwrap();
        let files: Vec<(&str, &str)> = reqs
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.path.as_str()))
            .collect();
        assert_eq!(
            files,
            [
                ("requirements.txt", "requirements.txt"),
                ("base.txt", "base.txt")
            ]
        );
        assert_eq!(reqs.files[0].content, b"-r base.txt\ngreeting\n");
        assert_eq!(reqs.always, None);
        // Out of the commit: refused as before.
        let (_dir, repo) = repo_with(&[
            ("app/requirements.txt", "@../../requirements.txt"),
            ("app/app.py", ""),
        ]);
        let commit = Commit::open(&repo, "HEAD")
            .unwrap()
            .with_project("app")
            .unwrap();
        let err = read_requirements(&commit, &|_| None).unwrap_err();
        assert!(
            format!("{err:#}").contains("leads outside the site"),
            "{err:#}"
        );
    }

    /// The files a lock install reads from the project's root (the lock,
    /// pyproject.toml, runtime.txt) are read as the site has them: a link
    /// as the file it leads to, counted by that file's blob.
    #[test]
    fn root_files_that_are_links_read_as_the_files_they_lead_to() {
        let (_dir, repo) = repo_with(&[
            ("app/pyproject.toml", "@../shared/pyproject.toml"),
            ("app/runtime.txt", "@conf/runtime.txt"),
            ("app/conf/runtime.txt", "python-3.12\n"),
            ("app/uv.lock", "@../nowhere/uv.lock"),
            ("shared/pyproject.toml", "[project]\nname = \"x\"\n"),
        ]);
        let commit = Commit::open(&repo, "HEAD")
            .unwrap()
            .with_project("app")
            .unwrap();
        let read = |name| commit.read_root_file(name).unwrap();
        assert_eq!(
            read("pyproject.toml").unwrap(),
            b"[project]\nname = \"x\"\n"
        );
        assert_eq!(read("runtime.txt").unwrap(), b"python-3.12\n");
        assert_eq!(read("uv.lock"), None, "a link to no file is no file");
        let blob = |text: &str| {
            git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
                .unwrap()
                .to_string()
        };
        assert_eq!(
            commit.path_id("pyproject.toml").unwrap(),
            blob("[project]\nname = \"x\"\n")
        );
        assert_eq!(
            commit.path_id("runtime.txt").unwrap(),
            blob("python-3.12\n")
        );
    }

    #[test]
    fn paths_that_climb_out() {
        assert!(!climbs_out("reqs/../base.txt"));
        assert!(climbs_out("../base.txt"));
        assert!(climbs_out("reqs/../../base.txt"));
        assert!(!climbs_out("./a/./b.txt"));
    }
}
