//! The manifest: which commit the last completed deployment wrote into the
//! site. Its files are the only ones ever deleted; everything else in the
//! site (uploads, logs, `env/`) belongs to the app.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The deployed commit (and project folder): the files it has are the files
/// pushdeploy wrote. The commit is pinned by a ref, so git keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub site: PathBuf,
    pub commit: String,
    pub project: Option<String>,
}

/// The manifest files of one state dir.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Store {
            dir: state_dir.to_path_buf(),
        }
    }

    fn complete(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    /// Written before a sync starts, removed when it completed: the commit an
    /// interrupted sync was writing, so that the next one compares every
    /// file and deletes what that commit alone had.
    fn pending(&self) -> PathBuf {
        self.dir.join("manifest.pending.json")
    }

    /// The last completed deployment's manifest, if it was into this site.
    pub fn load(&self, site: &Path) -> Result<Option<Manifest>> {
        Ok(read(&self.complete())?.filter(|m| m.site == site))
    }

    /// The commit of an interrupted sync into this site, if one was interrupted.
    pub fn load_pending(&self, site: &Path) -> Result<Option<Manifest>> {
        Ok(read(&self.pending())?.filter(|m| m.site == site))
    }

    pub fn begin(&self, pending: &Manifest) -> Result<()> {
        write_atomic(&self.pending(), &serde_json::to_vec(pending)?)
    }

    pub fn commit(&self, manifest: &Manifest) -> Result<()> {
        write_atomic(&self.complete(), &serde_json::to_vec(manifest)?)?;
        match fs_err::remove_file(self.pending()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

fn read(path: &Path) -> Result<Option<Manifest>> {
    match fs_err::read(path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{}: not a valid manifest", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the temp files of `write_atomic` that a killed process left in
/// `dir`. Called under the deployment lock, when no write is under way.
pub fn remove_temp_files(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && entry.file_type()?.is_file()
        {
            fs_err::remove_file(entry.path())?;
        }
    }
    Ok(())
}

const TEMP_PREFIX: &str = ".tmp-";

/// Writes a file so that a reader sees the old or the new content, never half:
/// a temp file beside it, synced, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .context("a file to write has no parent directory")?;
    fs_err::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
