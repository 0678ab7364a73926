//! The manifest: which commit the last completed deployment wrote into the
//! site. Its files are the only ones ever deleted; everything else in the
//! site (uploads, logs, `env/`) belongs to the app.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::files::{remove_file_if_there, write_atomic};

/// The deployed commit (and project folder): the files it has are the files
/// pushdeploy wrote. The commit is pinned by a ref, so git keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub site: PathBuf,
    pub commit: String,
    pub project: Option<String>,
    /// Set when a custom command deployed a later commit into the site: it
    /// wrote the files itself, so the next sync compares every file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_command: Option<String>,
    /// The name (in the state dir) of the list of files that custom
    /// command's deployment left in the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_files: Option<String>,
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
        self.abort()
    }

    /// No sync is pending any more: the one that was is undone.
    pub fn abort(&self) -> Result<()> {
        remove_file_if_there(&self.pending())
    }

    /// Forgets what was deployed (the site moved): the next sync, into
    /// whichever site, is a first one and compares every file. A pending
    /// sync's manifest stays: it names its own site, which still needs it.
    pub fn forget(&self) -> Result<()> {
        remove_file_if_there(&self.complete())
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
