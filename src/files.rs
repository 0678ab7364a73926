//! Small file operations the stores share: atomic writes, and cleaning up
//! after a process that was killed half-way.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Removes the temp files (any entry but a directory) whose names start with
/// `prefix` that a killed process left in `dir`. Called under the deployment
/// lock, when no write is under way.
pub fn remove_state_temp_files(dir: &Path, prefix: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) && !entry.file_type()?.is_dir() {
            fs_err::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The names of `write_atomic`'s temp files.
pub const ATOMIC_TEMP_PREFIX: &str = ".tmp-";

/// Writes a file so that a reader sees the old or the new content, never half:
/// a temp file beside it, synced, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .context("a file to write has no parent directory")?;
    fs_err::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(ATOMIC_TEMP_PREFIX)
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Removes a file; one that is not there is fine.
pub fn remove_file_if_there(path: &Path) -> Result<()> {
    match fs_err::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}
