//! PEP 508 requirements and environment markers, read and evaluated in
//! Rust (uv's `pep508_rs`) the way pip's vendored `packaging` does, with
//! the marker environment of an env's interpreter: asked once per
//! interpreter and kernel, cached beside the interpreters' probes.
//!
//! `packaging` and `pep508_rs` agree on the markers real metadata holds; where
//! they may not (an older `packaging` compares `extra` as a plain string and
//! `in` as a substring, and compares a string key with a version literal as
//! versions), [`Requirement::parse`] says so and the caller asks Python.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use pep508_rs::{
    ExtraName, MarkerEnvironment, MarkerEnvironmentBuilder, MarkerWarningKind, VersionOrUrl,
};
use serde::{Deserialize, Serialize};

/// The marker environment of an interpreter, and the `sys.path` it has
/// before `site` adds the env's site-packages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Interpreter {
    /// The eleven PEP 508 variables, as `packaging.markers.default_environment`.
    pub markers: BTreeMap<String, String>,
    /// `sys.path` under `-I -S`: the standard library's entries.
    pub stdlib: Vec<PathBuf>,
    /// Why the closure cannot be read for this interpreter (an old Python),
    /// remembered so that it is not asked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// The names of the marker variables, in the order of PEP 508.
const VARIABLES: [&str; 11] = [
    "implementation_name",
    "implementation_version",
    "os_name",
    "platform_machine",
    "platform_python_implementation",
    "platform_release",
    "platform_system",
    "platform_version",
    "python_full_version",
    "python_version",
    "sys_platform",
];

/// Prints the marker environment as `packaging.markers.default_environment`
/// computes it, and the standard library's `sys.path`. Needs Python 3.8
/// (importlib.metadata, which the Python closure needs too).
const PROBE: &str = r#"
import json, os, platform, sys
if sys.version_info < (3, 8):
    json.dump({"markers": {}, "stdlib": [], "unsupported":
               "Python %d.%d has no importlib.metadata" % sys.version_info[:2]}, sys.stdout)
    sys.exit()
def full(info):
    v = "%d.%d.%d" % (info.major, info.minor, info.micro)
    if info.releaselevel != "final":
        v += info.releaselevel[0] + str(info.serial)
    return v
json.dump({"markers": {
    "implementation_name": sys.implementation.name,
    "implementation_version": full(sys.implementation.version),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}, "stdlib": sys.path}, sys.stdout)
"#;

/// The cache's key for the interpreter `python` runs: the file it runs
/// (whatever links lead to it) with its stamp, and the kernel, whose
/// release and version are marker variables.
fn key(python: &Path) -> Option<String> {
    let real = std::fs::canonicalize(python).ok()?;
    let stamp = crate::files::stamp(&real)?;
    let uname = rustix::system::uname();
    Some(format!(
        "{} {stamp} {} {} {}",
        real.display(),
        uname.release().to_string_lossy(),
        uname.version().to_string_lossy(),
        uname.machine().to_string_lossy()
    ))
}

fn cache_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("marker-environments.json")
}

/// The marker environment of the interpreter `python` runs: from the cache
/// in `cache_dir`, else asked from it once (and cached).
pub fn interpreter(
    python: &Path,
    cache_dir: &Path,
    runner: &crate::process::Runner,
) -> Result<Interpreter> {
    let key = key(python).with_context(|| format!("{} does not run", python.display()))?;
    let path = cache_path(cache_dir);
    let mut known: BTreeMap<String, Interpreter> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(found) = known.get(&key) {
        return Ok(found.clone());
    }
    // -I -S: neither the app's variables nor any site-packages take part.
    let out = runner.capture(
        "the interpreter's marker environment",
        duct::cmd!(python, "-I", "-S", "-c", PROBE),
    )?;
    if !out.success {
        bail!("{}", crate::process::last_line(&out.stderr));
    }
    let found: Interpreter = serde_json::from_slice(&out.stdout)
        .context("the interpreter's marker environment is not JSON")?;
    known.insert(key, found.clone());
    // A cache that cannot be written costs a probe a push, not the answer.
    let _ = crate::files::write_cache(&path, &serde_json::to_vec_pretty(&known)?);
    Ok(found)
}

impl Interpreter {
    /// The environment `pep508_rs` evaluates markers in; `None` when one of
    /// its values is not what both implementations read alike (a
    /// pre-release Python, which an older `packaging` never lets match a
    /// version marker).
    pub fn environment(&self) -> Option<MarkerEnvironment> {
        let get = |k: &str| self.markers.get(k).map(String::as_str);
        for k in VARIABLES {
            get(k)?;
        }
        for k in ["python_full_version", "implementation_version"] {
            let v = pep508_rs::pep440_rs::Version::from_str(get(k)?).ok()?;
            if v.any_prerelease() {
                return None;
            }
        }
        MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
            implementation_name: get("implementation_name")?,
            implementation_version: get("implementation_version")?,
            os_name: get("os_name")?,
            platform_machine: get("platform_machine")?,
            platform_python_implementation: get("platform_python_implementation")?,
            platform_release: get("platform_release")?,
            platform_system: get("platform_system")?,
            platform_version: get("platform_version")?,
            python_full_version: get("python_full_version")?,
            python_version: get("python_version")?,
            sys_platform: get("sys_platform")?,
        })
        .ok()
    }
}

/// A requirement as the closure needs it: a name, its extras (normalised)
/// and its marker.
#[derive(Debug)]
pub struct Requirement {
    pub name: String,
    pub extras: Vec<String>,
    marker: pep508_rs::MarkerTree,
}

/// Collects `pep508_rs`'s warnings: each is an expression it reads
/// otherwise than `packaging` may (it ignores it, or compares strings).
#[derive(Default)]
struct Warnings(Vec<String>);

impl pep508_rs::Reporter for Warnings {
    fn report(&mut self, _kind: MarkerWarningKind, message: String) {
        self.0
            .push(message.split_whitespace().collect::<Vec<_>>().join(" "));
    }
}

/// The marker variables whose values are strings (the others are versions).
const STRING_VARIABLES: [&str; 8] = [
    "implementation_name",
    "os_name",
    "platform_machine",
    "platform_python_implementation",
    "platform_release",
    "platform_system",
    "platform_version",
    "sys_platform",
];

impl Requirement {
    /// Reads one requirement; an error says why it may be read otherwise
    /// than pip's `packaging` reads it.
    pub fn parse(line: &str) -> Result<Requirement, String> {
        let mut warnings = Warnings::default();
        let parsed = pep508_rs::Requirement::<pep508_rs::VerbatimUrl>::parse_reporter(
            line,
            Path::new("/"),
            &mut warnings,
        )
        .map_err(|e| format!("{line:?} does not parse: {}", e.message))?;
        if let Some(w) = warnings.0.first() {
            return Err(format!("{line:?}: {w}"));
        }
        if let Some(VersionOrUrl::Url(_)) = parsed.version_or_url {
            return Err(format!("{line:?} names a URL"));
        }
        if let Some((_, marker)) = line.split_once(';') {
            check_marker(marker).map_err(|why| format!("{line:?}: {why}"))?;
        }
        Ok(Requirement {
            name: parsed.name.to_string(),
            extras: parsed.extras.iter().map(ToString::to_string).collect(),
            marker: parsed.marker,
        })
    }

    /// Whether the marker holds with no extra or with one of `extras`
    /// (normalised names), as the Python closure asks `packaging`.
    pub fn holds(&self, env: &MarkerEnvironment, extras: &[String]) -> Result<bool, String> {
        // What a string comparison may warn of here is refused on parsing.
        let mut holds = self.marker.evaluate_optional_environment(Some(env), &[]);
        for extra in extras {
            let extra = ExtraName::from_str(extra).map_err(|e| e.to_string())?;
            holds = holds
                || self
                    .marker
                    .evaluate_optional_environment(Some(env), &[extra]);
        }
        Ok(holds)
    }
}

/// A token of a marker: a variable, a quoted string, an operator or a parenthesis.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Op(&'a str),
}

fn tokens(marker: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = marker;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(out);
        };
        let len = if c == '"' || c == '\'' {
            let end = rest[1..]
                .find(c)
                .ok_or_else(|| format!("an unterminated string in {marker:?}"))?;
            out.push(Token::Quoted(&rest[1..1 + end]));
            end + 2
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(rest.len());
            out.push(Token::Word(&rest[..end]));
            end
        } else {
            let end = rest
                .find(|c: char| {
                    c.is_ascii_alphanumeric() || c.is_whitespace() || "\"'_.()".contains(c)
                })
                .unwrap_or(rest.len())
                .max(1);
            out.push(Token::Op(&rest[..end]));
            end
        };
        rest = &rest[len..];
    }
}

/// Refuses what `pep508_rs` and an older `packaging` (pip's until 24.1)
/// may read differently: `in` and `not in` (a substring there, a list of
/// versions here), `extra` compared otherwise than `==` with a normalised
/// name (plain string equality there), a string variable compared with a
/// version literal (as versions there).
fn check_marker(marker: &str) -> Result<(), String> {
    let tokens = tokens(marker)?;
    if tokens.contains(&Token::Word("in")) {
        return Err("`in` is compared otherwise by older pips".into());
    }
    for t in &tokens {
        if let Token::Word(w) = t
            && !VARIABLES.contains(w)
            && !["extra", "and", "or", "not"].contains(w)
        {
            return Err(format!("{w} is not a marker variable of PEP 508"));
        }
    }
    for pair in tokens.windows(3) {
        let (var, op, value) = match pair {
            [Token::Word(var), Token::Op(op), Token::Quoted(value)]
            | [Token::Quoted(value), Token::Op(op), Token::Word(var)] => (*var, *op, *value),
            _ => continue,
        };
        if var == "extra" && (op != "==" || crate::lockfile::normalize(value) != value) {
            return Err(format!(
                "extra {op} {value:?} is compared otherwise by older pips"
            ));
        }
        if STRING_VARIABLES.contains(&var)
            && pep508_rs::pep440_rs::Version::from_str(value.trim()).is_ok()
        {
            return Err(format!(
                "{var} {op} {value:?} is compared as versions by pip"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_311() -> MarkerEnvironment {
        let markers = [
            ("implementation_name", "cpython"),
            ("implementation_version", "3.11.7"),
            ("os_name", "posix"),
            ("platform_machine", "x86_64"),
            ("platform_python_implementation", "CPython"),
            ("platform_release", "6.1.0-18-amd64"),
            ("platform_system", "Linux"),
            (
                "platform_version",
                "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
            ),
            ("python_full_version", "3.11.7"),
            ("python_version", "3.11"),
            ("sys_platform", "linux"),
        ];
        Interpreter {
            markers: markers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stdlib: Vec::new(),
            unsupported: None,
        }
        .environment()
        .unwrap()
    }

    fn holds(line: &str, extras: &[&str]) -> bool {
        let extras: Vec<String> = extras.iter().map(|e| e.to_string()).collect();
        Requirement::parse(line)
            .unwrap()
            .holds(&linux_311(), &extras)
            .unwrap()
    }

    #[test]
    fn markers_on_the_interpreter_hold_as_packaging_says() {
        assert!(holds("a ; python_version >= '3.8'", &[]));
        assert!(!holds("a ; python_version < '3.8'", &[]));
        assert!(holds("a ; python_full_version == '3.11.*'", &[]));
        assert!(!holds("a ; sys_platform == 'win32'", &[]));
        assert!(holds(
            "a ; sys_platform == 'linux' and os_name == 'posix'",
            &[]
        ));
        assert!(holds(
            "a ; (sys_platform == 'win32' or platform_system == 'Linux') and python_version > '3.10'",
            &[]
        ));
        assert!(holds("a (>=1.0) ; implementation_name == 'cpython'", &[]));
    }

    #[test]
    fn an_extra_marker_holds_with_an_extra_asked_whatever_its_spelling() {
        assert!(!holds("a ; extra == 'socks'", &[]));
        assert!(holds("a ; extra == 'socks'", &["socks"]));
        assert!(holds("a ; extra == 'dev-tools'", &["dev-tools"]));
        // Asked as `pkg[Dev_Tools]`: the name is normalised, as pip does.
        let r = Requirement::parse("pkg[Dev_Tools.x]").unwrap();
        assert_eq!(r.name, "pkg");
        assert_eq!(r.extras, ["dev-tools-x"]);
        assert!(holds("a ; extra == 'dev-tools-x'", &["dev-tools-x"]));
        assert!(holds(
            "a ; python_version >= '3' and extra == 'b'",
            &["a", "b"]
        ));
        assert!(!holds("a ; python_version < '3' and extra == 'b'", &["b"]));
        assert!(holds("a ; extra == 'b' or sys_platform == 'linux'", &[]));
    }

    #[test]
    fn names_are_normalised() {
        let r = Requirement::parse("Zope.Interface_X[Foo] >= 1").unwrap();
        assert_eq!(r.name, "zope-interface-x");
        assert_eq!(r.extras, ["foo"]);
    }

    #[test]
    fn what_an_older_packaging_reads_otherwise_is_refused() {
        for line in [
            "a ; extra == 'Socks'",
            "a ; extra == 'dev_tools'",
            "a ; extra != 'b'",
            "a ; 'linux' in sys_platform",
            "a ; python_version in '3.10 3.11'",
            "a ; platform_release >= '5.0'",
            "a ; platform_release == '6.1'",
            "a ; os.name == 'posix'",
            "a ; python_version > 'x'",
            "a @ https://example.com/a.whl",
            "a[",
        ] {
            let refused = match Requirement::parse(line) {
                Err(_) => true,
                Ok(r) => r.holds(&linux_311(), &[]).is_err(),
            };
            assert!(refused, "{line}");
        }
    }

    /// Asked once per interpreter: a changed interpreter file is asked again.
    #[test]
    fn the_marker_environment_is_cached_per_interpreter_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (python, answer) = (dir.path().join("python3"), dir.path().join("answer"));
        let write_python = |comment: &str| {
            let script = format!("#!/bin/sh\n# {comment}\ncat {}\n", answer.display());
            std::fs::write(&python, script).unwrap();
            std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let answer_with = |version: &str| {
            let markers: BTreeMap<&str, &str> = VARIABLES
                .iter()
                .map(|k| (*k, "x"))
                .chain([("python_version", version)])
                .collect();
            let json = serde_json::json!({"markers": markers, "stdlib": ["/usr/lib/python3.11"]});
            std::fs::write(&answer, json.to_string()).unwrap();
        };
        write_python("one");
        answer_with("3.11");
        let runner = crate::process::Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None);
        let cache = dir.path().join("cache");
        let asked = |python: &Path| {
            interpreter(python, &cache, &runner).unwrap().markers["python_version"].clone()
        };
        assert_eq!(asked(&python), "3.11");
        answer_with("3.12");
        assert_eq!(asked(&python), "3.11", "cached");
        write_python("another build");
        assert_eq!(asked(&python), "3.12", "asked again");
        // A cache that cannot be written: still the answer.
        let not_a_dir = answer.join("cache");
        let found = interpreter(&python, &not_a_dir, &runner).unwrap();
        assert_eq!(found.markers["python_version"], "3.12");
    }

    #[test]
    fn a_pre_release_python_is_left_to_python() {
        let mut i = Interpreter {
            markers: VARIABLES
                .iter()
                .map(|k| (k.to_string(), "x".to_string()))
                .collect(),
            stdlib: Vec::new(),
            unsupported: None,
        };
        for (k, v) in [
            ("python_version", "3.13"),
            ("python_full_version", "3.13.0rc1"),
            ("implementation_version", "3.13.0rc1"),
        ] {
            i.markers.insert(k.into(), v.into());
        }
        assert!(i.environment().is_none());
        i.markers
            .insert("python_full_version".into(), "3.13.0".into());
        i.markers
            .insert("implementation_version".into(), "3.13.0".into());
        assert!(i.environment().is_some());
    }
}
