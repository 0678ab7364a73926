//! The `.deployment` file (Kudu's INI format) at the top of the pushed commit:
//!
//! ```ini
//! [config]
//! project = src/webapp
//! SCM_DO_BUILD_DURING_DEPLOYMENT = true
//! ```
//!
//! Keys of `[config]` that name a setting, in any case as Kudu reads them,
//! feed the settings (below flags and the environment; `settings` matches
//! them); every other key is an app setting, passed to the build steps as an
//! environment variable, as Kudu does. Keys are kept as written.

use anyhow::{Result, bail};

use crate::error::shown;

pub const FILE: &str = ".deployment";

/// The `[config]` section: keys as written, with values and line numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFile {
    pub entries: Vec<(String, String, usize)>,
}

fn is_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses the file; a line that is neither a section, a comment nor
/// `key = value` is an error naming the file, the line number and the line.
pub fn parse(bytes: &[u8]) -> Result<DeploymentFile> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let Ok(text) = std::str::from_utf8(bytes) else {
        bail!("{FILE}: is not UTF-8 text");
    };
    let mut file = DeploymentFile::default();
    let mut section = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_ascii_lowercase());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!(
                "{FILE} line {n}: {} is not `key = value`",
                shown(raw.as_bytes())
            );
        };
        let key = key.trim();
        if !is_env_name(key) {
            bail!(
                "{FILE} line {n}: {} is not a key (letters, digits and _)",
                shown(raw.as_bytes())
            );
        }
        if raw.contains('\0') {
            bail!(
                "{FILE} line {n}: {} contains a NUL byte",
                shown(raw.as_bytes())
            );
        }
        match section.as_deref() {
            Some("config") => {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                file.entries.push((key.to_string(), value.to_string(), n));
            }
            Some(_) => {}
            None => bail!(
                "{FILE} line {n}: {} comes before any section; put it under [config]",
                shown(raw.as_bytes())
            ),
        }
    }
    Ok(file)
}

impl DeploymentFile {
    /// Prints back the `[config]` section in the file's format; values are
    /// quoted, so that spaces around them survive.
    pub fn render(&self) -> String {
        let mut out = String::from("[config]\n");
        for (k, v, _) in &self.entries {
            out.push_str(&format!("{k} = \"{v}\"\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kudu_files() {
        let file = parse(b"\xef\xbb\xbf# comment\n[config]\r\nproject = src/app\nSCM_DO_BUILD_DURING_DEPLOYMENT=false\n; note\nGREETING = \"hi there\"\n[other]\nx = 1\n").unwrap();
        assert_eq!(
            file.entries,
            vec![
                ("project".into(), "src/app".into(), 3),
                ("SCM_DO_BUILD_DURING_DEPLOYMENT".into(), "false".into(), 4),
                ("GREETING".into(), "hi there".into(), 6)
            ]
        );
        let again = parse(file.render().as_bytes()).unwrap();
        let pairs = |f: &DeploymentFile| {
            f.entries
                .iter()
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&again), pairs(&file));
    }

    #[test]
    fn malformed_lines_name_file_line_and_text() {
        for (input, needle) in [
            (
                &b"[config]\nproject\n"[..],
                ".deployment line 2: \"project\" is not `key = value`",
            ),
            (
                b"[config]\n= x\n",
                ".deployment line 2: \"= x\" is not a key",
            ),
            (b"[config]\nbad key = 1\n", "line 2: \"bad key = 1\""),
            (
                b"project = x\n",
                "line 1: \"project = x\" comes before any section",
            ),
            (b"[config]\n\xff\n", "not UTF-8"),
        ] {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
