//! The Python runtime: which version the app wants (runtime.txt,
//! `.python-version`, the `python` setting) and which interpreter on this
//! machine provides it.
//!
//! Interpreters are looked for, in this order, and the first whose real
//! version fits is taken: the `pythonPath` directories; `pythonX.Y` on PATH;
//! pyenv's `versions/*` (newest patch first); `python3` and `python` on PATH.
//! A version range of the project's own (`requires-python`) is searched as
//! the project's tool searches: `python3` on PATH first, pyenv's shim
//! included ([`first_fitting`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::error::shown;
use crate::python_version::parse_numbers;
// Defined below `settings` (whose `python` setting holds a `Request`);
// re-exported so that the rest of the crate asks this module.
pub use crate::python_version::{Request, Version};
use crate::settings::{Environment, Origin, PythonChoice, Setting, Settings};

const TOO_LONG: usize = 256;

/// The text of a version file: UTF-8, without a BOM; refused when it is
/// UTF-16, binary or far too long for what it should hold.
fn file_text<'a>(file: &str, bytes: &'a [u8], expected: &str) -> Result<&'a str> {
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        bail!(
            "{file}: {} is UTF-16; save it as UTF-8 containing {expected}",
            shown(bytes)
        );
    }
    if bytes.len() > TOO_LONG {
        bail!(
            "{file}: {} bytes, starting {}; expected one line such as {expected}",
            bytes.len(),
            shown(&bytes[..40])
        );
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Ok(text),
        _ => bail!("{file}: {} is not text; expected {expected}", shown(bytes)),
    }
}

/// runtime.txt: `python-3.12` or `python-3.12.4`, any case, surrounding
/// whitespace, CRLF, a BOM or no final newline.
pub fn parse_runtime_txt(bytes: &[u8]) -> Result<Request> {
    const EXPECTED: &str = "python-X.Y or python-X.Y.Z (such as python-3.12)";
    let text = file_text("runtime.txt", bytes, EXPECTED)?;
    let value = text.trim();
    if value.is_empty() {
        bail!("runtime.txt: is empty; expected {EXPECTED}");
    }
    let lower = value.to_ascii_lowercase();
    match lower.strip_prefix("python-").and_then(parse_numbers) {
        Some(request) => Ok(request),
        None => bail!(
            "runtime.txt: {} is not a Python runtime; expected {EXPECTED}",
            shown(value.as_bytes())
        ),
    }
}

/// `.python-version` (pyenv's format): the first line that is not empty or a
/// comment, `3.12` or `3.12.4`.
pub fn parse_python_version(bytes: &[u8]) -> Result<Request> {
    const EXPECTED: &str = "X.Y or X.Y.Z (such as 3.12)";
    let text = file_text(".python-version", bytes, EXPECTED)?;
    let Some(value) = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        bail!(".python-version: has no version; expected {EXPECTED}");
    };
    match parse_numbers(value) {
        Some(request) => Ok(request),
        None => bail!(
            ".python-version: {} is not a version pushdeploy can use; expected {EXPECTED}",
            shown(value.as_bytes())
        ),
    }
}

/// Where the wanted runtime came from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    RuntimeTxt,
    PythonVersion,
    Setting(Origin),
    /// The project's own requirement (`pyproject.toml requires-python >=3.11`).
    Project(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::RuntimeTxt => f.write_str("runtime.txt"),
            Source::PythonVersion => f.write_str(".python-version"),
            Source::Setting(Origin::Default) => write!(
                f,
                "no runtime.txt or .python-version; the default {}",
                crate::settings::DEFAULT_PYTHON
            ),
            Source::Setting(origin) => write!(f, "setting python, {origin}"),
            Source::Project(what) => write!(
                f,
                "{what}: the first interpreter that fits, python3 on PATH first"
            ),
        }
    }
}

/// An interpreter on this machine and its real version.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Interpreter {
    pub path: PathBuf,
    pub version: Version,
    /// `sys.prefix` and the prefix of the Python it runs on (`base_prefix`):
    /// the same for a Python that is not a virtual env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefixes: Option<Prefixes>,
}

/// Where an interpreter's packages live: a virtual env's python has a
/// `prefix` of its own, apart from its `base` Python's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Prefixes {
    pub prefix: PathBuf,
    pub base: PathBuf,
}

/// The decided runtime: what was wanted, from where, and what provides it.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub request: Request,
    pub runtime: String,
    pub source: Source,
    pub interpreter: Interpreter,
}

/// Interpreters already run, kept in the user's cache dir: each is run once,
/// and again only when the file it runs (or its env's pyvenv.cfg) changed.
pub struct Probes {
    path: PathBuf,
    /// Runs the probes under the deployment's limits.
    runner: crate::process::Runner,
    known: RefCell<BTreeMap<String, Interpreter>>,
    changed: Cell<bool>,
}

impl Probes {
    /// The cache in `dir` (empty when there is none yet).
    pub fn load(dir: &Path, runner: crate::process::Runner) -> Self {
        let path = dir.join("interpreters.json");
        let known = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Probes {
            path,
            runner,
            known: RefCell::new(known),
            changed: Cell::new(false),
        }
    }

    /// The runner of the probes, for the plan's other questions.
    pub fn runner(&self) -> &crate::process::Runner {
        &self.runner
    }

    /// Writes what was learned (not in a dry run, which changes nothing).
    pub fn save(&self) -> Result<()> {
        if !self.changed.get() {
            return Ok(());
        }
        crate::files::write_cache(&self.path, &serde_json::to_vec(&*self.known.borrow())?)
    }

    /// What identifies an interpreter's behaviour: its path, the file it
    /// runs, and for a venv's python what its pyvenv.cfg says (by content:
    /// each env prepared aside has a new copy of the same file, which must
    /// not make every deployment run the probe again).
    fn key(path: &Path) -> Option<String> {
        let mut key = format!("{} {}", path.display(), crate::files::stamp(path)?);
        let cfg = path
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("pyvenv.cfg"));
        if let Some(content) = cfg.and_then(|cfg| std::fs::read(cfg).ok()) {
            let id = git2::Oid::hash_object(git2::ObjectType::Blob, &content).ok()?;
            key.push_str(&format!(" cfg {id}"));
        }
        Some(key)
    }

    /// The interpreter's version and real path: from the cache, or by running it.
    pub fn probe(&self, path: &Path) -> Option<Interpreter> {
        // A pyenv shim answers with whatever version pyenv's settings name
        // now (`pyenv global`), which its file's stamp does not show.
        if is_pyenv_shim(path) {
            return probe(path, &self.runner);
        }
        let key = Self::key(path)?;
        // Entries of an older cache lack the prefixes: asked again once.
        if let Some(known) = self.known.borrow().get(&key)
            && known.prefixes.is_some()
        {
            return Some(known.clone());
        }
        let found = probe(path, &self.runner)?;
        self.known.borrow_mut().insert(key, found.clone());
        self.changed.set(true);
        Some(found)
    }
}

/// A program in pyenv's `shims` directory (beside its `versions`).
fn is_pyenv_shim(path: &Path) -> bool {
    path.parent()
        .filter(|dir| dir.file_name().is_some_and(|n| n == "shims"))
        .and_then(Path::parent)
        .is_some_and(|root| root.join("versions").is_dir())
}

/// Runs an interpreter once and asks for its version and real path.
pub fn probe(path: &Path, runner: &crate::process::Runner) -> Option<Interpreter> {
    // real_prefix: the env's base for virtualenv before 20 (and Python 2).
    const SCRIPT: &str = "import sys; print('%d.%d.%d' % tuple(sys.version_info[:3])); print(sys.executable); print(sys.prefix); print(getattr(sys, 'real_prefix', None) or getattr(sys, 'base_prefix', sys.prefix))";
    let out = runner.answer("an interpreter's probe", duct::cmd!(path, "-c", SCRIPT))?;
    let text = String::from_utf8(out).ok()?;
    let mut lines = text.lines();
    let v = parse_numbers(lines.next()?.trim())?;
    let executable = lines
        .next()
        .map(str::trim)
        .filter(|p| Path::new(p).is_absolute())
        .map(PathBuf::from);
    let mut prefix = || lines.next().map(|l| PathBuf::from(l.trim()));
    let prefixes = match (prefix(), prefix()) {
        (Some(prefix), Some(base)) => Some(Prefixes { prefix, base }),
        _ => None,
    };
    Some(Interpreter {
        prefixes,
        path: executable.unwrap_or_else(|| path.to_path_buf()),
        version: Version {
            major: v.major,
            minor: v.minor,
            patch: v.patch.unwrap_or(0),
        },
    })
}

/// Where interpreters are looked for: the server's `pythonPath`, pyenv's
/// root and PATH, nothing else of the settings.
#[derive(Debug, Clone, Copy)]
pub struct Search<'a> {
    pub python_path: &'a [PathBuf],
    pub pyenv_root: &'a Path,
    /// The environment pushdeploy runs in, for its PATH.
    pub env: &'a Environment,
}

impl Search<'_> {
    /// Where the settings say interpreters are looked for.
    pub fn of(settings: &Settings) -> Search<'_> {
        Search {
            python_path: &settings.python_path,
            pyenv_root: &settings.pyenv_root,
            env: &settings.env,
        }
    }

    /// Where the search looks and what it skipped, for the message that
    /// says a runtime is not installed.
    fn looked_in(&self) -> String {
        self.looked_in_reading(&|dir| std::fs::read_dir(dir).map(|_| ()))
    }

    /// [`Search::looked_in`], with `read` trying to read a directory.
    fn looked_in_reading(&self, read: &dyn Fn(&Path) -> std::io::Result<()>) -> String {
        let python_path = if self.python_path.is_empty() {
            "pythonPath (not set)".to_string()
        } else {
            let dirs: Vec<String> = self
                .python_path
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            format!("pythonPath {}", dirs.join(":"))
        };
        let mut out = format!(
            "looked in PATH, pyenv root {} and {python_path}",
            self.pyenv_root.display()
        );
        // A pyenv root that is there but cannot be read (another user's
        // home) is skipped, not missing: say so. No pyenv at all is usual.
        let pyenv = [
            self.pyenv_root.to_path_buf(),
            self.pyenv_root.join("versions"),
        ]
        .into_iter()
        .find_map(|dir| match read(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some((dir, e)),
            _ => None,
        });
        if let Some((dir, err)) = pyenv {
            let why = match err.kind() {
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                std::io::ErrorKind::NotADirectory => "not a directory".to_string(),
                _ => err.to_string(),
            };
            out.push_str(&format!("; {}: {why}, skipped", dir.display()));
        }
        let skipped: Vec<String> = self
            .python_path
            .iter()
            .filter_map(|dir| {
                let err = read(dir).err()?;
                let why = match err.kind() {
                    std::io::ErrorKind::NotFound => "missing".to_string(),
                    std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                    std::io::ErrorKind::NotADirectory => "not a directory".to_string(),
                    _ => err.to_string(),
                };
                Some(format!("{} ({why})", dir.display()))
            })
            .collect();
        if !skipped.is_empty() {
            out.push_str(&format!(
                "; skipped pythonPath directories it could not read: {}",
                skipped.join(", ")
            ));
        }
        out
    }
}

/// Candidate paths for a request, in the documented order (not yet run).
/// `name` on PATH, leaving out pyenv's shims: they are slow scripts whose
/// answer depends on pyenv's own settings, and pyenv's versions are searched
/// directly anyway.
fn on_path(name: &str, search: &Search) -> Vec<PathBuf> {
    let shims = search.pyenv_root.join("shims");
    search
        .env
        .which_all(name)
        .into_iter()
        .filter(|p| p.parent() != Some(shims.as_path()))
        .collect()
}

fn candidates(request: Option<Request>, search: &Search) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let specific = request.map(|r| format!("python{}.{}", r.major, r.minor));
    let names: Vec<String> = specific
        .iter()
        .cloned()
        .chain(["python3".to_string(), "python".to_string()])
        .collect();
    for dir in search.python_path {
        for d in [dir.clone(), dir.join("bin")] {
            out.extend(names.iter().map(|n| d.join(n)).filter(|p| p.is_file()));
        }
    }
    if let Some(name) = &specific {
        out.extend(on_path(name, search));
    }
    out.extend(pyenv_versions(search.pyenv_root, request));
    for name in ["python3", "python"] {
        out.extend(on_path(name, search));
    }
    out
}

/// `<pyenv root>/versions/*/bin/python`, newest first; only those whose
/// directory name matches the request when there is one.
fn pyenv_versions(root: &Path, request: Option<Request>) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(root.join("versions")) else {
        return Vec::new();
    };
    let mut found: Vec<(Request, PathBuf)> = dirs
        .flatten()
        .filter_map(|d| {
            let name = d.file_name().into_string().ok()?;
            let v = parse_numbers(&name)?;
            let python = d.path().join("bin").join("python");
            python.is_file().then_some((v, python))
        })
        .filter(|(v, _)| request.is_none_or(|r| r.major == v.major && r.minor == v.minor))
        .collect();
    found.sort_by_key(|(v, _)| std::cmp::Reverse((v.major, v.minor, v.patch)));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Every interpreter that can be found, for messages that list them.
pub fn all_found(search: &Search, probes: &Probes) -> Vec<Interpreter> {
    let mut paths = candidates(None, search);
    for minor in 0..=20 {
        paths.extend(on_path(&format!("python3.{minor}"), search));
    }
    paths.extend(on_path("python2", search));
    let mut seen = BTreeSet::new();
    let mut found: Vec<Interpreter> = paths
        .iter()
        .filter_map(|p| probes.probe(p))
        // One line per interpreter, however many names lead to it.
        .filter(|i| seen.insert(std::fs::canonicalize(&i.path).unwrap_or_else(|_| i.path.clone())))
        .collect();
    found.sort_by_key(|i| i.version);
    found
}

fn list(interpreters: &[Interpreter]) -> String {
    if interpreters.is_empty() {
        return "none".into();
    }
    interpreters
        .iter()
        .map(|i| format!("{} ({})", i.version, i.path.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first interpreter that fits, in the documented order.
pub fn find(request: Request, search: &Search, probes: &Probes) -> Option<Interpreter> {
    let mut tried = BTreeSet::new();
    candidates(Some(request), search)
        .into_iter()
        .filter(|p| tried.insert(p.clone()))
        .filter_map(|p| probes.probe(&p))
        .find(|i| request.fits(i.version))
}

/// The interpreter a project's own tool would take for a version range
/// (`requires-python`): uv and Poetry start from `python3` on PATH, so the
/// search starts there, then `python` on PATH, the `pythonPath`
/// directories (`python3`, `python`, `python3.Y`), `python3.Y` on PATH and
/// pyenv's versions (newest first),
/// and the first that fits is taken, not the newest: a lock made with the
/// project's tool was made on that Python.
pub fn first_fitting(
    search: &Search,
    probes: &Probes,
    fits: &dyn Fn(Version) -> bool,
) -> Option<Interpreter> {
    let mut paths = Vec::new();
    // pyenv's shims included here: `python3` is what the tools run (Poetry,
    // Pipenv, uv, and the default `python` setting), pyenv's choice of it too.
    for name in ["python3", "python"] {
        paths.extend(search.env.which_all(name));
    }
    let versioned: Vec<String> = (0..=20).rev().map(|m| format!("python3.{m}")).collect();
    for dir in search.python_path {
        for d in [dir.clone(), dir.join("bin")] {
            for name in ["python3", "python"]
                .into_iter()
                .chain(versioned.iter().map(String::as_str))
            {
                paths.push(d.join(name));
            }
        }
    }
    for minor in (0..=20).rev() {
        paths.extend(on_path(&format!("python3.{minor}"), search));
    }
    paths.extend(pyenv_versions(search.pyenv_root, None));
    let mut tried = BTreeSet::new();
    paths
        .into_iter()
        .filter(|p| p.is_file() && tried.insert(p.clone()))
        .filter_map(|p| probes.probe(&p))
        .find(|i| fits(i.version))
}

/// Decides the runtime from the commit's files and the `python` setting.
/// `runtime_txt` and `python_version` are those files' contents, if present.
pub fn choose(
    runtime_txt: Option<&[u8]>,
    python_version: Option<&[u8]>,
    python: (&PythonChoice, &Setting),
    search: &Search,
    probes: &Probes,
) -> Result<Choice> {
    let (request, source) = if let Some(bytes) = runtime_txt {
        (parse_runtime_txt(bytes)?, Source::RuntimeTxt)
    } else if let Some(bytes) = python_version {
        (parse_python_version(bytes)?, Source::PythonVersion)
    } else {
        let (choice, setting) = python;
        match choice {
            PythonChoice::Version(request) => (*request, Source::Setting(setting.origin.clone())),
            PythonChoice::Program(program) => {
                // A command or a path: whatever version it is, is the runtime.
                let Some(interpreter) = search.env.which(program).and_then(|p| probes.probe(&p))
                else {
                    bail!(
                        "setting python ({}): {} is not a Python interpreter that runs; found: {}; {}",
                        setting.origin,
                        shown(program.as_bytes()),
                        list(&all_found(search, probes)),
                        search.looked_in()
                    );
                };
                let v = interpreter.version;
                let request = Request {
                    major: v.major,
                    minor: v.minor,
                    patch: None,
                };
                let source = Source::Setting(setting.origin.clone());
                return Ok(Choice {
                    request,
                    runtime: request.runtime(),
                    source,
                    interpreter,
                });
            }
        }
    };
    match find(request, search, probes) {
        Some(interpreter) => Ok(Choice {
            request,
            runtime: request.runtime(),
            source,
            interpreter,
        }),
        None => {
            let found = all_found(search, probes);
            let same_minor: Vec<Interpreter> = found
                .iter()
                .filter(|i| i.version.major == request.major && i.version.minor == request.minor)
                .cloned()
                .collect();
            if request.patch.is_some() && !same_minor.is_empty() {
                bail!(
                    "{source}: {request} is not installed; the {}.{} builds found are {}; {}",
                    request.major,
                    request.minor,
                    list(&same_minor),
                    search.looked_in()
                );
            }
            bail!(
                "{source}: {request} is not installed; found: {}; {}",
                list(&found),
                search.looked_in()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(major: u32, minor: u32, patch: Option<u32>) -> Request {
        Request {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn runtime_txt_formats() {
        for good in [
            &b"python-3.12"[..],
            b"Python-3.12\n",
            b"  PYTHON-3.12 \r\n",
            b"\xef\xbb\xbfpython-3.12",
            b"python-3.12\r\n\r\n",
        ] {
            assert_eq!(
                parse_runtime_txt(good).unwrap(),
                req(3, 12, None),
                "{good:?}"
            );
        }
        assert_eq!(
            parse_runtime_txt(b"python-3.12.4").unwrap(),
            req(3, 12, Some(4))
        );
        assert_eq!(
            parse_runtime_txt(b"python-3.12.4").unwrap().to_string(),
            "python-3.12.4"
        );
    }

    #[test]
    fn runtime_txt_errors_name_the_file_and_value() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "is empty"),
            (b"  \n", "is empty"),
            (b"python-3", "\"python-3\""),
            (b"3.12", "\"3.12\""),
            (b"python-3.12; rm -rf /", "rm -rf /"),
            (b"python-3.x", "python-3.x"),
            (b"\xff\xfep\x00y\x00", "UTF-16"),
            (b"python-\x003.12", "not text"),
        ];
        for (input, needle) in cases {
            let err = parse_runtime_txt(input).unwrap_err().to_string();
            assert!(
                err.starts_with("runtime.txt: ") && err.contains(needle),
                "{err}"
            );
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let big = vec![b'a'; 10 * 1024 * 1024];
        let err = parse_runtime_txt(&big).unwrap_err().to_string();
        assert!(err.contains("10485760 bytes") && err.len() < 300, "{err}");
    }

    #[test]
    fn python_version_file() {
        assert_eq!(
            parse_python_version(b"# pyenv\n\n3.11\n").unwrap(),
            req(3, 11, None)
        );
        assert_eq!(
            parse_python_version(b"3.12.1").unwrap(),
            req(3, 12, Some(1))
        );
        let err = parse_python_version(b"system\n").unwrap_err().to_string();
        assert!(err.starts_with(".python-version: \"system\""), "{err}");
        assert!(parse_python_version(b"# only a comment\n").is_err());
    }

    #[test]
    fn request_fits_versions() {
        let v = Version {
            major: 3,
            minor: 12,
            patch: 1,
        };
        assert!(req(3, 12, None).fits(v));
        assert!(req(3, 12, Some(1)).fits(v));
        assert!(!req(3, 12, Some(4)).fits(v));
        assert!(!req(3, 11, None).fits(v));
    }
}

#[cfg(test)]
mod looked_in_tests {
    use super::*;

    /// The message names a pyenv root it could not read, rather than
    /// saying it looked there; a missing one is not mentioned.
    #[test]
    fn an_unreadable_pyenv_root_is_named_as_skipped() {
        let env = Environment::from_pairs([("PATH", "/usr/bin")]);
        let dirs = [PathBuf::from("/opt/pythons")];
        let search = Search {
            python_path: &dirs,
            pyenv_root: Path::new("/root/.pyenv"),
            env: &env,
        };
        let denied = |dir: &Path| {
            if dir == Path::new("/root/.pyenv") {
                Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            } else {
                Ok(())
            }
        };
        let text = search.looked_in_reading(&denied);
        assert!(
            text.contains("; /root/.pyenv: permission denied, skipped"),
            "{text}"
        );
        let missing = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let text = search.looked_in_reading(&missing);
        assert!(!text.contains("/root/.pyenv:"), "{text}");
        assert!(text.contains("/opt/pythons (missing)"), "{text}");
    }
}

#[cfg(test)]
mod shim_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake interpreter: a script that answers the probe with the
    /// version in `answer_file` (so that it can change without the script).
    fn fake_python(path: &Path, answer_file: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let script = format!(
            "#!/bin/sh\nv=$(cat {})\nprintf '%s\\n{}\\n/p\\n/p\\n' \"$v\"\n",
            answer_file.display(),
            path.display()
        );
        std::fs::write(path, script).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// With pyenv on PATH, `python3` is pyenv's shim, and that is the
    /// `python3` Poetry, Pipenv and uv run: the first fitting interpreter
    /// is the one it answers with, not a `python3` further along PATH.
    #[test]
    fn first_fitting_takes_pyenvs_python3_shim_as_the_tools_do() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pyenv");
        std::fs::create_dir_all(root.join("versions")).unwrap();
        let (shim_v, later_v) = (tmp.path().join("shim.v"), tmp.path().join("later.v"));
        std::fs::write(&shim_v, "3.12.7").unwrap();
        std::fs::write(&later_v, "3.11.2").unwrap();
        fake_python(&root.join("shims/python3"), &shim_v);
        fake_python(&tmp.path().join("usr/bin/python3"), &later_v);
        let path = format!(
            "{}:{}",
            root.join("shims").display(),
            tmp.path().join("usr/bin").display()
        );
        let env = Environment::from_pairs([("PATH", path.as_str())]);
        let search = Search {
            python_path: &[],
            pyenv_root: &root,
            env: &env,
        };
        let probes = Probes::load(
            tmp.path(),
            crate::process::Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None),
        );
        let found = first_fitting(&search, &probes, &|v| v.major == 3 && v.minor >= 11).unwrap();
        assert_eq!(found.path, root.join("shims/python3"));
        assert_eq!((found.version.minor, found.version.patch), (12, 7));

        // `pyenv global 3.13` changes the shim's answer, not the shim: the
        // next deployment sees the new version, not a cached one.
        std::fs::write(&shim_v, "3.13.1").unwrap();
        let found = first_fitting(&search, &probes, &|v| v.major == 3 && v.minor >= 11).unwrap();
        assert_eq!((found.version.minor, found.version.patch), (13, 1));
    }

    /// A copy of an env prepared aside has a new pyvenv.cfg with the same
    /// content: its python is not run again. Another content is.
    #[test]
    fn an_env_python_is_probed_again_when_its_pyvenv_cfg_says_something_else() {
        let tmp = tempfile::tempdir().unwrap();
        let answer = tmp.path().join("answer");
        std::fs::write(&answer, "3.11.7").unwrap();
        let python = tmp.path().join("env/bin/python");
        fake_python(&python, &answer);
        let cfg = tmp.path().join("env/pyvenv.cfg");
        std::fs::write(&cfg, "home = /usr/bin\n").unwrap();
        let probes = Probes::load(
            tmp.path(),
            crate::process::Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None),
        );
        assert_eq!(probes.probe(&python).unwrap().version.minor, 11);
        // The interpreter now answers otherwise: a probe that runs shows it.
        std::fs::write(&answer, "3.12.1").unwrap();
        std::fs::remove_file(&cfg).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&cfg, "home = /usr/bin\n").unwrap();
        assert_eq!(probes.probe(&python).unwrap().version.minor, 11);
        std::fs::write(&cfg, "home = /usr/local/bin\n").unwrap();
        assert_eq!(probes.probe(&python).unwrap().version.minor, 12);
    }
}
