//! Server-side app settings (`pushdeploy appsettings`): secrets that never
//! belong in a commit, as App Service's portal app settings. Stored in the
//! state dir, readable by its owner only; they reach the build steps beside
//! `.deployment`'s app settings and override them, never `postDeploy` or
//! pushdeploy's own variables.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::{shown, usage};

const FILE: &str = "appsettings.json";

fn file(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The stored settings, by name; none when the file is not there.
pub fn load(state_dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = file(state_dir);
    match fs_err::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading app settings from {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

fn save(state_dir: &Path, all: &BTreeMap<String, String>) -> Result<()> {
    let path = file(state_dir);
    // The temp file is made 0600 and renamed: the values are never readable
    // by others, not even for a moment.
    crate::files::write_atomic(&path, &serde_json::to_vec_pretty(all)?)?;
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A name the steps may be given: the names a `.deployment` may set as an
/// app setting, and none of pushdeploy's own settings or variables.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        usage(format!(
            "app setting name {}: {why}",
            shown(name.as_bytes())
        ))
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.contains('=') || name.contains('\0') {
        return Err(bad("contains = or NUL"));
    }
    if name.starts_with("PUSHDEPLOY") || crate::settings::key_named(name).is_some() {
        return Err(bad("is one of pushdeploy's own settings or variables"));
    }
    if !crate::settings::app_setting_allowed(name) {
        return Err(bad(
            "is not an app setting name (upper-case words such as DATABASE_URL; not PATH, PYTHON* or another variable the build tools read)",
        ));
    }
    Ok(())
}

/// `NAME=VALUE`, stored; the value may hold `=`.
pub fn set(state_dir: &Path, assignment: &str) -> Result<String> {
    let Some((name, value)) = assignment.split_once('=') else {
        return Err(usage(format!(
            "app setting {}: not NAME=VALUE",
            shown(assignment.as_bytes())
        )));
    };
    check_name(name)?;
    if value.contains('\0') {
        return Err(usage(format!("app setting {name}: the value contains NUL")));
    }
    let mut all = load(state_dir)?;
    all.insert(name.to_string(), value.to_string());
    save(state_dir, &all)?;
    Ok(name.to_string())
}

/// Whether the setting was there.
pub fn unset(state_dir: &Path, name: &str) -> Result<bool> {
    check_name(name)?;
    let mut all = load(state_dir)?;
    let was = all.remove(name).is_some();
    if was {
        save(state_dir, &all)?;
    }
    Ok(was)
}

/// `list`'s lines: values masked unless asked for.
pub fn lines(state_dir: &Path, show_values: bool) -> Result<Vec<String>> {
    Ok(load(state_dir)?
        .into_iter()
        .map(|(name, value)| match show_values {
            true => format!("{name}={value}"),
            false => format!("{name}=********"),
        })
        .collect())
}

/// The steps' app settings: the commit's, then the server's, which win (as
/// App Service's portal settings override the app's own).
pub fn merged(commit: &[(String, String)], server: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = commit
        .iter()
        .filter(|(k, _)| !server.iter().any(|(s, _)| s == k))
        .cloned()
        .collect();
    out.extend(server.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            "A=B",
            "A\0B",
            "PUSHDEPLOY_SITE",
            "POST_BUILD_COMMAND",
            "PATH",
            "PYTHONPATH",
            "lower",
            "PYENV_ROOT",
            "WEBSITES_PORT",
            "SCM_COMMAND_IDLE_TIMEOUT",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("DATABASE_URL").unwrap();
    }

    #[test]
    fn the_server_wins() {
        let c = vec![("A".into(), "1".into()), ("B".into(), "2".into())];
        let s = vec![("B".into(), "3".into())];
        assert_eq!(
            merged(&c, &s),
            vec![("A".to_string(), "1".to_string()), ("B".into(), "3".into())]
        );
    }
}
