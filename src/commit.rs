//! Reading a commit: its summary and its tree, with git2 and no work tree.
//! Every entry name is checked here, so no later step sees a path that could
//! leave the site.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};
use git2::{ObjectType, Oid, Repository, Tree};
use serde::Serialize;

use crate::error::shown;

#[derive(Debug, Clone, Serialize)]
pub struct CommitInfo {
    pub id: String,
    pub short: String,
    pub author: String,
    pub message: String,
}

/// What git records for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Executable,
    Symlink,
}

impl Kind {
    pub fn mode(self) -> u32 {
        match self {
            Kind::Executable => 0o755,
            _ => 0o644,
        }
    }
}

/// One file of the commit, by its path relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub blob: String,
}

/// Entries the sync leaves out, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

pub struct Commit<'r> {
    repo: &'r Repository,
    pub info: CommitInfo,
    /// The folder that deploys: the whole tree, or `.deployment`'s project.
    tree: Tree<'r>,
    /// The whole tree, where `.deployment` is read.
    top: Tree<'r>,
}

/// Top-level names that are never deployed (Kudu's rules).
pub const NOT_DEPLOYED: &[&str] = &[".git", ".deployment", "deploy.sh"];

impl<'r> Commit<'r> {
    /// Resolves a revision (`main`, a commit id, a prefix) to a commit.
    pub fn open(repo: &'r Repository, rev: &str) -> Result<Self> {
        let object = repo.revparse_single(rev).with_context(|| {
            format!(
                "revision {}: not found in the repository",
                shown(rev.as_bytes())
            )
        })?;
        let commit = object
            .peel_to_commit()
            .with_context(|| format!("revision {}: not a commit", shown(rev.as_bytes())))?;
        let id = commit.id().to_string();
        let info = CommitInfo {
            short: id[..7].to_string(),
            id,
            author: commit.author().name().unwrap_or("unknown").to_string(),

            message: commit.summary().ok().flatten().unwrap_or("").to_string(),
        };
        let tree = commit.tree().context("reading the commit's tree")?;
        Ok(Commit {
            repo,
            info,
            top: tree.clone(),
            tree,
        })
    }

    /// The same commit, deploying only the sub-folder `project`.
    pub fn with_project(self, project: &str) -> Result<Self> {
        let dir = project.trim_matches('/');
        let bad = dir.is_empty()
            || dir
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..");
        let entry = if bad {
            None
        } else {
            self.top.get_path(std::path::Path::new(dir)).ok()
        };
        match entry.filter(|e| e.kind() == Some(ObjectType::Tree)) {
            Some(entry) => {
                let tree = self.repo.find_tree(entry.id())?;
                Ok(Commit { tree, ..self })
            }
            None => bail!(
                "setting project: {} is not a folder of commit {}",
                shown(project.as_bytes()),
                self.info.short
            ),
        }
    }

    /// The content of a file at the top of the whole commit (`.deployment`).
    pub fn read_top_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.top.get_name(name) {
            Some(entry) if entry.kind() == Some(ObjectType::Blob) => {
                let blob = self
                    .repo
                    .find_blob(entry.id())
                    .with_context(|| format!("reading {name} from the commit"))?;
                Ok(Some(blob.content().to_vec()))
            }
            _ => Ok(None),
        }
    }

    /// The content of a file at the root of the tree, if there is one.
    pub fn read_root_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.tree.get_name(name) {
            Some(entry) if entry.kind() == Some(ObjectType::Blob) => {
                let blob = self
                    .repo
                    .find_blob(entry.id())
                    .with_context(|| format!("reading {name} from the commit"))?;
                Ok(Some(blob.content().to_vec()))
            }
            _ => Ok(None),
        }
    }

    pub fn has_root_entry(&self, name: &str) -> bool {
        self.tree.get_name(name).is_some()
    }

    /// Every file of the tree, checked, sorted by path; plus what is skipped.
    pub fn entries(&self) -> Result<(Vec<Entry>, Vec<Skipped>)> {
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        self.walk(&self.tree, "", true, &mut entries, &mut skipped)?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((entries, skipped))
    }

    /// Every file of the whole commit, `.deployment` and `deploy.sh` included:
    /// what a custom command gets as its checkout.
    pub fn all_entries(&self) -> Result<Vec<Entry>> {
        let (mut entries, mut skipped) = (Vec::new(), Vec::new());
        self.walk(&self.top, "", false, &mut entries, &mut skipped)?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    fn walk(
        &self,
        tree: &Tree,
        prefix: &str,
        only_deployed: bool,
        entries: &mut Vec<Entry>,
        skipped: &mut Vec<Skipped>,
    ) -> Result<()> {
        let mut names = HashSet::new();
        let mut last_key: Option<Vec<u8>> = None;
        for entry in tree.iter() {
            let name = check_name(entry.name_bytes(), prefix)?;
            let path = format!("{prefix}{name}");
            if path.len() > MAX_PATH {
                bail!(
                    "commit entry {}: the path is {} bytes long, more than a file system takes ({MAX_PATH}); refused",
                    shown(path.as_bytes()),
                    path.len()
                );
            }
            // Git writes each name once, in its order; a tree that breaks
            // this was made by hand, and its files could be read two ways.
            if !names.insert(name.to_string()) {
                bail!("commit entry {path}: appears twice in its directory; refused");
            }
            let key = order_key(name, entry.kind() == Some(ObjectType::Tree));
            if last_key.as_ref().is_some_and(|last| *last > key) {
                bail!(
                    "commit entry {path}: its directory's entries are not in git's order (a tree git does not write); refused"
                );
            }
            last_key = Some(key);
            if only_deployed && prefix.is_empty() && NOT_DEPLOYED.contains(&name) {
                continue;
            }
            match (entry.kind(), entry.filemode()) {
                (Some(ObjectType::Tree), _) => {
                    let sub = self
                        .repo
                        .find_tree(entry.id())
                        .with_context(|| format!("commit entry {path}: reading the directory"))?;
                    self.walk(&sub, &format!("{path}/"), only_deployed, entries, skipped)?;
                }
                (Some(ObjectType::Blob), mode) => {
                    // Checked here, so that the sync cannot fail half-way on it.
                    match self.repo.odb()?.read_header(entry.id()) {
                        Ok((_, ObjectType::Blob)) => {}
                        Ok((_, other)) => bail!(
                            "commit entry {path}: git records a file, but object {} is a {other}; refused",
                            entry.id()
                        ),
                        Err(e) => bail!(
                            "commit entry {path}: object {} cannot be read: {}",
                            entry.id(),
                            e.message()
                        ),
                    }
                    let kind = match mode {
                        0o120000 => Kind::Symlink,
                        0o100755 => Kind::Executable,
                        _ => Kind::File,
                    };
                    entries.push(Entry {
                        path,
                        kind,
                        blob: entry.id().to_string(),
                    });
                }
                (Some(ObjectType::Commit), _) => skipped.push(Skipped {
                    path,
                    reason: "a submodule (gitlink): its files are not in this repository".into(),
                }),
                (other, mode) => {
                    bail!("commit entry {path}: unexpected object {other:?} with mode {mode:o}")
                }
            }
        }
        Ok(())
    }

    /// The content of a blob.
    pub fn blob(&self, id: &str) -> Result<git2::Blob<'r>> {
        let oid = Oid::from_str(id)?;
        self.repo
            .find_blob(oid)
            .with_context(|| format!("reading blob {id}"))
    }
}

/// The longest file name Linux file systems take (NAME_MAX), in bytes.
pub const MAX_NAME: usize = 255;

/// The longest path relative to the site that can be written (PATH_MAX less
/// its NUL); the site's own path makes the real limit smaller.
pub const MAX_PATH: usize = 4095;

/// Git's order of tree entries: by name, a directory as if its name ended in `/`.
fn order_key(name: &str, is_tree: bool) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    if is_tree {
        key.push(b'/');
    }
    key
}

/// A tree entry's name must be one path component that cannot climb out of
/// the site or into git's own data, that a file system takes, and that
/// prints as one line in messages.
fn check_name<'a>(name: &'a [u8], prefix: &str) -> Result<&'a str> {
    let path = || {
        let mut p = prefix.as_bytes().to_vec();
        p.extend_from_slice(name);
        shown(&p)
    };
    let Ok(text) = std::str::from_utf8(name) else {
        bail!("commit entry {}: the name is not UTF-8; refused", path());
    };
    let bad = text.is_empty()
        || text == "."
        || text == ".."
        || text.contains('/')
        || text.contains('\0')
        || text.eq_ignore_ascii_case(".git");
    if bad {
        bail!("commit entry {}: not a safe file name; refused", path());
    }
    if text.chars().any(char::is_control) {
        bail!(
            "commit entry {}: the name holds a control character (a newline, a tab...); refused",
            path()
        );
    }
    if name.len() > MAX_NAME {
        bail!(
            "commit entry {}: the name is {} bytes long, more than a file system takes ({MAX_NAME}); refused",
            path(),
            name.len()
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused_and_named() {
        for name in [
            &b".."[..],
            b".",
            b".git",
            b".GIT",
            b"a/b",
            b"",
            b"a\0b",
            b"\xff\xfe",
        ] {
            let err = check_name(name, "dir/").unwrap_err().to_string();
            assert!(err.starts_with("commit entry \"dir/"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        for name in [&b"a\nb"[..], b"tab\there", b"\x1b[31mred", &[b'x'; 256]] {
            let err = check_name(name, "").unwrap_err().to_string();
            assert!(err.starts_with("commit entry \""), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(check_name(&[b'x'; 255], "").is_ok());
        assert_eq!(check_name(b"app.py", "").unwrap(), "app.py");
        assert_eq!(check_name(b"..hidden", "").unwrap(), "..hidden");
    }
}
