//! Pipfile.lock without Pipenv: the lock is JSON of exact pins with their
//! hashes, so its `default` section becomes a hashed requirements file that
//! pip (or uv) installs with `--no-deps --require-hashes`, which is what
//! `pipenv sync` does underneath. Its git entries, which have no hashes, go
//! into a second file installed the same way without hashes, each pinned to
//! the commit the lock names (Pipenv's `name @ git+<url>@<ref>`). The lock is
//! checked against the Pipfile by the hash Pipenv writes into it, computed
//! the way Pipenv computes it.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use crate::error::shown;

/// One pinned package of the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The name as the lock spells it.
    pub name: String,
    /// `==` version, or for a git entry `git <commit>`, as
    /// the env's record of an install from git reads (`direct_url.json`).
    pub version: String,
}

/// The lock's main packages as requirements files, and the pins.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The packages from an index, with their hashes.
    pub requirements: String,
    /// The git entries, one line each, pinned to their commit (without the
    /// index lines, which [`Converted::requirements`] starts with).
    pub git: Vec<(Pin, String)>,
    pub pins: Vec<Pin>,
}

impl Converted {
    /// The `--index-url` lines of the lock's sources.
    pub fn index_lines(&self) -> String {
        self.requirements
            .lines()
            .take_while(|l| l.starts_with("--"))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

/// Checks that the lock was made from this Pipfile, by either of the hashes
/// Pipenv writes (as `pipenv verify` accepts both).
pub fn check(pipfile: &[u8], lock: &[u8]) -> Result<()> {
    let json = lock_json(lock)?;
    let recorded = json
        .pointer("/_meta/hash/sha256")
        .and_then(|h| h.as_str())
        .unwrap_or("");
    let table = crate::managers::parse_toml("Pipfile", pipfile)?;
    let matches = [Names::AsWritten, Names::Normalised]
        .into_iter()
        .map(|names| pipfile_hash(&table, names))
        .collect::<Result<Vec<_>>>()?;
    if !matches.iter().any(|h| h == recorded) {
        bail!(
            "Pipfile.lock does not match Pipfile (it was locked from another Pipfile): run `pipenv lock` and commit Pipfile.lock"
        );
    }
    Ok(())
}

fn lock_json(lock: &[u8]) -> Result<serde_json::Value> {
    let json: serde_json::Value = serde_json::from_slice(lock).map_err(|e| {
        anyhow::anyhow!(
            "Pipfile.lock line {}: not JSON ({e}); run `pipenv lock` and commit Pipfile.lock",
            e.line()
        )
    })?;
    if !json.is_object() {
        bail!(
            "Pipfile.lock: not a Pipfile.lock (no JSON object); run `pipenv lock` and commit Pipfile.lock"
        );
    }
    Ok(json)
}

/// How a hash spells the package names of the Pipfile's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// As written: Pipenv before 2026.4 (plette's `Pipfile.get_hash`).
    AsWritten,
    /// PEP 503 normalised (`Faker` and `my_pkg.x` as `faker`, `my-pkg-x`):
    /// Pipenv 2026.4 and later (`Pipfile.calculate_hash`), so that a
    /// respelled name does not make the lock stale.
    Normalised,
}

/// Pipenv's hash of a Pipfile: the sources, requires and package sections
/// (every section but Pipenv's own ones) as JSON with sorted keys and no
/// spaces, the package names spelled as `names` says.
pub fn pipfile_hash(table: &toml::Table, names: Names) -> Result<String> {
    let mut table = table.clone();
    if !table.contains_key("source") {
        let default: toml::Table = toml::from_str(
            "[[source]]\nname = \"pypi\"\nurl = \"https://pypi.org/simple\"\nverify_ssl = true\n",
        )
        .expect("the default source is TOML");
        table.insert("source".into(), default["source"].clone());
    }
    let get = |key: &str| {
        table
            .get(key)
            .cloned()
            .unwrap_or_else(|| toml::Value::Table(toml::Table::new()))
    };
    // A package section's names; other values stay as they are.
    let packages = |value: toml::Value| match (names, value) {
        (Names::Normalised, toml::Value::Table(section)) => toml::Value::Table(
            section
                .into_iter()
                .map(|(name, v)| (normalised(&name), v))
                .collect(),
        ),
        (_, value) => value,
    };
    let mut data = BTreeMap::new();
    let mut meta = BTreeMap::new();
    meta.insert("sources", get("source"));
    meta.insert("requires", get("requires"));
    data.insert(
        "_meta".to_string(),
        toml::Value::Table(meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
    );
    data.insert("default".to_string(), packages(get("packages")));
    data.insert("develop".to_string(), packages(get("dev-packages")));
    const SECTIONS: &[&str] = &[
        "source",
        "packages",
        "dev-packages",
        "requires",
        "scripts",
        "pipfile",
        "pipenv",
        "default",
        "develop",
    ];
    for (key, value) in &table {
        if !SECTIONS.contains(&key.as_str()) {
            // Another category of packages.
            data.insert(key.clone(), packages(value.clone()));
        }
    }
    let value = serde_json::to_value(&data).context("Pipfile as JSON")?;
    let compact = serde_json::to_string(&value)?;
    Ok(sha256_hex(python_ascii(&compact).as_bytes()))
}

/// PEP 503's name (packaging's `canonicalize_name`): lower case, each run
/// of `-`, `_` and `.` one `-`.
fn normalised(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

/// Python's `json.dumps` escapes every non-ASCII character (`ensure_ascii`).
fn python_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The lock's `default` section as a hashed requirements file.
pub fn convert(lock: &[u8]) -> Result<Converted> {
    let json = lock_json(lock)?;
    let mut lines = Vec::new();
    let sources = json
        .pointer("/_meta/sources")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    for (i, source) in sources.iter().enumerate() {
        if let Some(url) = source.get("url").and_then(|u| u.as_str()) {
            let option = if i == 0 {
                "--index-url"
            } else {
                "--extra-index-url"
            };
            lines.push(format!("{option} {url}"));
        }
    }
    let default = json
        .get("default")
        .and_then(|d| d.as_object())
        .cloned()
        .unwrap_or_default();
    let mut pins = Vec::new();
    let mut git = Vec::new();
    for (name, entry) in &default {
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bail!(
                "Pipfile.lock: package name {} is not a package name",
                shown(name.as_bytes())
            );
        }
        if entry.get("git").is_some() {
            let (pin, line) = git_line(name, entry)?;
            git.push((pin.clone(), line));
            pins.push(pin);
            continue;
        }
        for other in ["path", "file", "editable", "hg", "svn", "bzr"] {
            if entry.get(other).is_some() {
                bail!(
                    "Pipfile.lock: {name} is a {other} requirement; only pinned packages from an index and git entries can be installed from Pipfile.lock (or deploy with requirements.txt)"
                );
            }
        }
        let Some(version) = entry
            .get("version")
            .and_then(|v| v.as_str())
            .and_then(|v| v.strip_prefix("=="))
        else {
            bail!(
                "Pipfile.lock: {name} has no pinned version (\"==X\"); run `pipenv lock` and commit Pipfile.lock"
            );
        };
        let clean = |s: &str| !s.contains(['\n', '\r', '\\']);
        let hashes: Vec<&str> = entry
            .get("hashes")
            .and_then(|h| h.as_array())
            .map(|h| h.iter().filter_map(|h| h.as_str()).collect())
            .unwrap_or_default();
        if hashes.is_empty() {
            bail!("Pipfile.lock: {name} has no hashes; run `pipenv lock` and commit Pipfile.lock");
        }
        let extras: Vec<&str> = entry
            .get("extras")
            .and_then(|e| e.as_array())
            .map(|e| e.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let markers = entry.get("markers").and_then(|m| m.as_str());
        if !clean(version)
            || !hashes.iter().all(|h| clean(h) && !h.contains(' '))
            || !extras.iter().all(|e| clean(e) && !e.contains([',', ']']))
            || !markers.is_none_or(clean)
        {
            bail!(
                "Pipfile.lock: the entry of {name} has a value with a line break or backslash; run `pipenv lock` and commit Pipfile.lock"
            );
        }
        let mut line = name.clone();
        if !extras.is_empty() {
            line.push_str(&format!("[{}]", extras.join(",")));
        }
        line.push_str(&format!("=={version}"));
        if let Some(markers) = markers {
            line.push_str(&format!(" ; {markers}"));
        }
        for hash in &hashes {
            line.push_str(&format!(" --hash={hash}"));
        }
        lines.push(line);
        pins.push(Pin {
            name: name.clone(),
            version: version.to_string(),
        });
    }
    let mut requirements = lines.join("\n");
    requirements.push('\n');
    Ok(Converted {
        requirements,
        git,
        pins,
    })
}

/// A git entry as Pipenv installs it (`requirement_from_lockfile`):
/// `name[extras] @ git+<url>@<ref>[#subdirectory=...]`, with its markers,
/// never editable (an editable install would lead into the env directory
/// prepared aside, which is renamed). Its repository must be remote: one on
/// this machine is a local requirement, which Pipfile.lock cannot name.
fn git_line(name: &str, entry: &serde_json::Value) -> Result<(Pin, String)> {
    let text = |key: &str| entry.get(key).and_then(|v| v.as_str());
    let url = text("git").unwrap_or("");
    let url = url
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("git+"))
        .map_or(url, |_| &url[4..]);
    if let Some(path) = crate::managers::local_git(url) {
        let why = if path.starts_with('/') {
            "is an absolute path"
        } else if crate::installed::climbs_out(&path) {
            "climbs out of the site"
        } else {
            "is a repository of the site, which Pipfile.lock (installed aside) cannot name"
        };
        bail!(
            "Pipfile.lock: {name} is a git repository on this machine: {} {why}; local requirements must be inside the site",
            shown(path.as_bytes())
        );
    }
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '#' | '\\' | '"' | '\'' | ';'))
    };
    if !plain(url) || url.starts_with('-') {
        bail!(
            "Pipfile.lock: the git URL of {name} ({}) is not one pushdeploy passes to pip; run `pipenv lock` and commit Pipfile.lock",
            shown(url.as_bytes())
        );
    }
    // A commit id, as `pipenv lock` writes it: a branch or tag could move.
    let commit = text("ref").unwrap_or("");
    let is_commit = matches!(commit.len(), 40 | 64)
        && commit
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if !is_commit {
        bail!(
            "Pipfile.lock: the git entry of {name} has no commit id as its ref ({}); run `pipenv lock` (which records the commit) and commit Pipfile.lock",
            shown(commit.as_bytes())
        );
    }
    let extras: Vec<&str> = entry
        .get("extras")
        .and_then(|e| e.as_array())
        .map(|e| e.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let subdirectory = text("subdirectory");
    let markers = text("markers");
    let word = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    };
    if !extras.iter().all(|e| word(e) && !e.contains('/'))
        || !subdirectory.is_none_or(|d| word(d) && !d.split('/').any(|c| c == ".."))
        || markers.is_some_and(|m| m.contains(['\n', '\r', '\\']))
    {
        bail!(
            "Pipfile.lock: the git entry of {name} has extras, a subdirectory or markers pushdeploy cannot pass to pip; run `pipenv lock` and commit Pipfile.lock"
        );
    }
    let mut line = name.to_string();
    if !extras.is_empty() {
        line.push_str(&format!("[{}]", extras.join(",")));
    }
    line.push_str(&format!(" @ git+{url}@{commit}"));
    if let Some(dir) = subdirectory {
        line.push_str(&format!("#subdirectory={dir}"));
    }
    if let Some(markers) = markers {
        line.push_str(&format!(" ; {markers}"));
    }
    let pin = Pin {
        name: name.to_string(),
        version: format!("git {commit}"),
    };
    Ok((pin, line))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_lock() {
        let lock = br#"{"_meta": {"sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": true}]},
            "default": {"greeting": {"hashes": ["sha256:ab"], "version": "==1.0.0", "markers": "python_version >= '3.6'"}},
            "develop": {"staticpipe": {"hashes": ["sha256:cd"], "version": "==1.0.0"}}}"#;
        let c = convert(lock).unwrap();
        assert_eq!(
            c.requirements,
            "--index-url https://pypi.org/simple\ngreeting==1.0.0 ; python_version >= '3.6' --hash=sha256:ab\n"
        );
        assert_eq!(c.pins.len(), 1);
        let err = convert(b"{").unwrap_err().to_string();
        assert!(err.starts_with("Pipfile.lock line 1: not JSON"), "{err}");
    }

    #[test]
    fn hashes_a_pipfile_as_pipenv_does() {
        // Both made by Pipenv (fixtures/build-locks).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/apps/pipenv-app");
        for dir in [dir.clone(), dir.join("v2")] {
            let pipfile = std::fs::read(dir.join("Pipfile")).unwrap();
            let lock = std::fs::read(dir.join("Pipfile.lock")).unwrap();
            check(&pipfile, &lock).unwrap();
            let other = String::from_utf8(pipfile).unwrap().replace("==", ">=");
            assert!(check(other.as_bytes(), &lock).is_err());
        }
    }

    /// Issue 15 items 19 and 12: a git entry becomes Pipenv's pinned line;
    /// one on this machine, or without a commit, is refused.
    #[test]
    fn git_entries_are_pinned_to_their_commit() {
        let commit = "850dff12bbc4aed4fb9d775a40ffc5008fc39aae";
        let lock = |entry: &str| {
            format!(
                r#"{{"_meta": {{"sources": [{{"url": "https://pypi.org/simple"}}]}}, "default": {{"x": {entry}}}}}"#
            )
        };
        let c = convert(
            lock(&format!(
                r#"{{"git": "https://g.example/x.git", "ref": "{commit}", "extras": ["a"], "subdirectory": "pkg", "markers": "python_version >= '3.8'"}}"#
            ))
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            c.git[0].1,
            format!(
                "x[a] @ git+https://g.example/x.git@{commit}#subdirectory=pkg ; python_version >= '3.8'"
            )
        );
        assert_eq!(c.pins[0].version, format!("git {commit}"));
        assert_eq!(c.index_lines(), "--index-url https://pypi.org/simple\n");
        let refused = [
            (
                format!(r#"{{"git": "file:///srv/x", "ref": "{commit}"}}"#),
                "\"/srv/x\" is an absolute path; local requirements must be inside the site",
            ),
            (
                format!(r#"{{"git": "git+FILE://localhost/srv/x", "ref": "{commit}"}}"#),
                "\"/srv/x\" is an absolute path",
            ),
            (
                format!(r#"{{"git": "../x", "ref": "{commit}"}}"#),
                "\"../x\" climbs out of the site",
            ),
            (
                r#"{"git": "https://g.example/x.git", "ref": "main"}"#.to_string(),
                "has no commit id as its ref (\"main\")",
            ),
            (
                format!(r#"{{"git": "https://g.example/x.git --pre", "ref": "{commit}"}}"#),
                "is not one pushdeploy passes to pip",
            ),
        ];
        for (entry, want) in refused {
            let err = convert(lock(&entry).as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{entry}: {err}");
        }
    }

    /// Issue 15 item 18: Pipenv 2026.4 and later hash the Pipfile with
    /// normalised names; its lock of `Greeting` and `flit_core` (made by
    /// fixtures/build-locks with Pipenv 2026.8) matches by that hash only.
    #[test]
    fn accepts_the_hash_of_current_pipenv_with_normalised_names() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/apps/pipenv-names");
        let pipfile = std::fs::read(dir.join("Pipfile")).unwrap();
        let lock = std::fs::read(dir.join("Pipfile.lock")).unwrap();
        check(&pipfile, &lock).unwrap();
        let table = crate::managers::parse_toml("Pipfile", &pipfile).unwrap();
        let recorded = lock_json(&lock).unwrap()["_meta"]["hash"]["sha256"].clone();
        assert_eq!(recorded, pipfile_hash(&table, Names::Normalised).unwrap());
        assert_ne!(recorded, pipfile_hash(&table, Names::AsWritten).unwrap());
        // Another Pipfile still does not match.
        let other = String::from_utf8(pipfile)
            .unwrap()
            .replace("Greeting", "Greetings");
        assert!(check(other.as_bytes(), &lock).is_err());
        assert_eq!(normalised("Zope.Interface__x-Y"), "zope-interface-x-y");
    }
}
