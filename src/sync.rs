//! Syncing files: making the site match the commit. Changed files are written
//! atomically (temp file, rename); files that the previous deployment wrote
//! and this commit lacks are deleted, with directories that this leaves empty.
//! No path is followed through a symlink, so nothing lands outside the site.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::commit::short_id;
use crate::commit::{Commit, Entry, Kind, MAX_PATH, Skipped};
use crate::error::shown;

/// Names in the site that belong to the env; the sync never touches them.
pub const ENV_NAMES: &[&str] = &["env"];
pub const ENV_DIR_PREFIX: &str = ".pushdeploy-env-";
/// A file that replaces one is written to a temp file of this name beside
/// it, then renamed over it. One left by a sync that was killed is removed by
/// the next sync.
pub const TEMP_PREFIX: &str = ".pushdeploy-tmp-";

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Why {
    Added,
    Changed,
    /// The file in the site differs from the commit (edited or deleted by
    /// hand, or an interrupted sync).
    Repair,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub path: String,
    pub kind: Kind,
    pub blob: String,
    pub why: Why,
}

impl Change {
    /// The commit's file, to be written for `why`.
    pub fn of(entry: Entry, why: Why) -> Self {
        Change {
            path: entry.path,
            kind: entry.kind,
            blob: entry.blob,
            why,
        }
    }
}

/// How the changes were found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Basis {
    /// The deployed commit's tree compared with this one's: work in
    /// proportion to the change.
    Diff { from: String },
    /// Every file of the commit written (a first deployment) or compared with
    /// the site, and why.
    Full { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncPlan {
    pub basis: Basis,
    pub write: Vec<Change>,
    pub delete: Vec<String>,
    /// Files compared and found equal (only known when every file was compared).
    pub unchanged: Option<usize>,
    pub skipped: Vec<Skipped>,
    /// After an interrupted sync: every directory of the commit, where its
    /// temp files may be left.
    #[serde(skip)]
    pub sweep: BTreeSet<String>,
}

impl SyncPlan {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} to write, {} to delete",
            self.write.len(),
            self.delete.len()
        );
        if let Some(n) = self.unchanged {
            s.push_str(&format!(", {n} unchanged"));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!(", {} skipped", self.skipped.len()));
        }
        match &self.basis {
            Basis::Diff { from } => s.push_str(&format!(" (changes since {})", short_id(from))),
            Basis::Full { reason } => s.push_str(&format!(" ({reason})")),
        }
        s
    }
}

/// What the site was synced to before.
pub struct Before<'a, 'r> {
    /// The deployed commit, if there is one and git still has it.
    pub deployed: Option<&'a Commit<'r>>,
    /// A commit whose sync was interrupted, if any.
    pub interrupted: Option<&'a Commit<'r>>,
    /// Set when a deployment is recorded but its commit is gone.
    pub lost: Option<String>,
    /// `--verify`: compare every file with the site.
    pub verify: bool,
    /// The project folder that deployed before, and the one now, if they differ.
    pub project_changed: Option<(String, String)>,
}

/// Decides what to write and delete. Normally from the tree-to-tree diff of
/// the deployed commit and this one; every file is compared with the site
/// instead on `--verify`, after an interrupted sync, or when the deployed
/// commit is gone.
pub fn plan(commit: &Commit, before: &Before, site: &Path) -> Result<SyncPlan> {
    let diffable = match (
        before.deployed,
        before.interrupted,
        before.verify,
        &before.project_changed,
    ) {
        (Some(deployed), None, false, None) => Some(deployed),
        _ => None,
    };
    if let Some((deployed, Some(changes))) = diffable
        .map(|d| commit.diff_from(d).map(|c| (d, c)))
        .transpose()?
    {
        let mut write = Vec::new();
        for (entry, added) in changes.changed {
            check_entry(commit, &entry)?;
            let why = if added { Why::Added } else { Why::Changed };
            write.push(Change::of(entry, why));
        }
        let plan = SyncPlan {
            basis: Basis::Diff {
                from: deployed.info.id.clone(),
            },
            write,
            delete: changes.deleted,
            unchanged: None,
            skipped: changes.skipped,
            sweep: BTreeSet::new(),
        };
        check_site(&plan, site)?;
        return Ok(plan);
    }
    let (entries, skipped) = commit.entries()?;
    let first = before.deployed.is_none() && before.interrupted.is_none() && before.lost.is_none();
    let reason = if before.interrupted.is_some() {
        "an earlier sync was interrupted: every file compared with the site".to_string()
    } else if let Some(lost) = &before.lost {
        format!(
            "the deployed commit {lost} is gone from the repository: every file compared with the site; files only it had are left in place"
        )
    } else if let Some((from, to)) = &before.project_changed {
        format!("project changed from {from} to {to}: every file compared with the site")
    } else if before.verify {
        "--verify: every file compared with the site".to_string()
    } else if before.deployed.is_some() {
        "the trees could not be compared: every file compared with the site".to_string()
    } else {
        "first deployment to this site".to_string()
    };
    let mut plan = SyncPlan {
        basis: Basis::Full { reason },
        write: Vec::new(),
        delete: Vec::new(),
        unchanged: Some(0),
        skipped,
        sweep: BTreeSet::new(),
    };
    // Only what deletions need is kept beside the plan: memory stays near
    // one record per file.
    let olds: Vec<&Commit> = [before.deployed, before.interrupted]
        .into_iter()
        .flatten()
        .collect();
    let mut wanted = HashSet::new();
    for entry in entries {
        check_entry(commit, &entry)?;
        if before.interrupted.is_some() {
            plan.sweep.insert(
                entry
                    .path
                    .rsplit_once('/')
                    .map_or("", |(dir, _)| dir)
                    .to_string(),
            );
        }
        if !olds.is_empty() {
            wanted.insert(entry.path.clone());
        }
        let why = if first {
            Some(Why::Added)
        } else if matches_site(commit, &entry, site)? {
            None
        } else {
            Some(Why::Repair)
        };
        match why {
            Some(why) => plan.write.push(Change::of(entry, why)),
            None => *plan.unchanged.get_or_insert(0) += 1,
        }
    }
    if first {
        plan.unchanged = None;
    }
    let mut gone = BTreeSet::new();
    for old in olds {
        for entry in old.entries().map(|(e, _)| e).unwrap_or_default() {
            if !wanted.contains(&entry.path) {
                gone.insert(entry.path);
            }
        }
    }
    plan.delete = gone.into_iter().collect();
    check_site(&plan, site)?;
    Ok(plan)
}

/// Whether the site already holds this entry exactly: same kind, same
/// executable bit, same content (by git's blob id) or symlink target.
fn matches_site(commit: &Commit, entry: &Entry, site: &Path) -> Result<bool> {
    if !parents_are_real_dirs(site, &entry.path) {
        return Ok(false);
    }
    let path = site.join(&entry.path);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Ok(false);
    };
    Ok(match entry.kind {
        Kind::Symlink => {
            meta.file_type().is_symlink()
                && std::fs::read_link(&path).is_ok_and(|t| {
                    t.as_os_str().as_encoded_bytes()
                        == commit
                            .blob(&entry.blob)
                            .map(|b| b.content().to_vec())
                            .unwrap_or_default()
                })
        }
        Kind::File | Kind::Executable => {
            let executable = meta.permissions().mode() & 0o111 != 0;
            meta.file_type().is_file()
                && executable == (entry.kind == Kind::Executable)
                && git2::Oid::hash_file(git2::ObjectType::Blob, &path)
                    .is_ok_and(|id| id.to_string() == entry.blob)
        }
    })
}

/// Refuses what the sync must never do: write into the env, or make a symlink
/// that points outside the site.
fn check_entry(commit: &Commit, entry: &Entry) -> Result<()> {
    let top = entry.path.split('/').next().unwrap_or("");
    if ENV_NAMES.contains(&top) || top.starts_with(ENV_DIR_PREFIX) {
        bail!(
            "commit entry {}: the commit contains a virtual environment ({top}/); remove it from the repository (git rm -r --cached {top}) and list it in .gitignore",
            entry.path
        );
    }
    let name = entry.path.rsplit('/').next().unwrap_or("");
    if name.starts_with(TEMP_PREFIX) {
        bail!(
            "commit entry {}: names starting with {TEMP_PREFIX} are pushdeploy's temp files, which a sync removes; rename it",
            entry.path
        );
    }
    if entry.kind == Kind::Symlink {
        let blob = commit.blob(&entry.blob)?;
        let target = blob.content();
        if let Err(why) = check_link_target(&entry.path, target) {
            bail!(
                "commit entry {}: symlink to {} {why}; refused",
                entry.path,
                shown(target)
            );
        }
    }
    Ok(())
}

/// Whether a symlink made from the commit stays inside the site, said
/// without following anything: the target must be relative, and its `..`
/// may only come first, climbing no higher than the site. A `..` after a
/// name could climb out through another link (`d/l -> ..` makes `d/l/..`
/// the site's parent), so it is refused even where it looks harmless.
fn check_link_target(link: &str, target: &[u8]) -> Result<(), &'static str> {
    let Ok(target) = std::str::from_utf8(target) else {
        return Err("is not UTF-8");
    };
    if target.is_empty() || target.contains('\0') {
        return Err("is not a path");
    }
    if target.len() > MAX_PATH {
        return Err("is longer than a file system takes");
    }
    let mut depth: i64 = link.matches('/').count() as i64;
    let mut named = false;
    for component in Path::new(target).components() {
        match component {
            Component::Normal(_) => {
                named = true;
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir if named => {
                return Err(
                    "has .. after a name, which can lead outside the site through another link (write the path without it)",
                );
            }
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err("points outside the site");
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("points outside the site"),
        }
    }
    Ok(())
}

/// Carries out the plan in the site: temp files a killed sync left first,
/// then deletions (a file may become a directory), then writes.
pub fn apply(plan: &SyncPlan, commit: &Commit, site: &Path) -> Result<()> {
    remove_temp_files(plan, site)?;
    for path in &plan.delete {
        delete(site, path)?;
    }
    let mut made = HashSet::new();
    for change in &plan.write {
        write(site, commit, change, &mut made)
            .with_context(|| format!("writing {}", change.path))?;
    }
    Ok(())
}

/// What the site itself must allow, checked in the plan (so the dry run says
/// it too, and nothing is written when it fails): paths that fit, and no
/// file or directory of the app's own where the commit needs the name.
fn check_site(plan: &SyncPlan, site: &Path) -> Result<()> {
    check_lengths(plan, site)?;
    check_files_in_the_way(plan, site)?;
    check_directories_in_the_way(plan, site)
}

/// Fails where the commit has a directory and the site a file or symlink that
/// pushdeploy did not write (one it wrote is deleted first): it is the app's.
fn check_files_in_the_way(plan: &SyncPlan, site: &Path) -> Result<()> {
    let deleted: BTreeSet<&str> = plan.delete.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    for change in &plan.write {
        let parts: Vec<&str> = change.path.split('/').collect();
        let mut dir = String::new();
        for part in &parts[..parts.len() - 1] {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(part);
            if !seen.insert(dir.clone()) {
                continue;
            }
            match std::fs::symlink_metadata(site.join(&dir)) {
                Ok(meta) if meta.file_type().is_dir() => continue,
                Ok(_) if deleted.contains(dir.as_str()) => break,
                Ok(meta) => {
                    let what = if meta.file_type().is_symlink() {
                        "a symlink"
                    } else {
                        "a file"
                    };
                    bail!(
                        "commit entry {}: the site has {what} {dir} that pushdeploy did not write, where the commit has a directory; move it away, or rename the directory; nothing was written",
                        change.path
                    );
                }
                Err(_) => break,
            }
        }
    }
    Ok(())
}

/// Fails, before anything is written, when a path in the site would be too
/// long for the file system: the commit's paths were checked on their own,
/// the site's path adds to them. A temp file beside each file must fit too.
fn check_lengths(plan: &SyncPlan, site: &Path) -> Result<()> {
    const TEMP_NAME: usize = 32;
    for change in &plan.write {
        let path = site.join(&change.path);
        let dir = path.parent().unwrap_or(site);
        let longest = path
            .as_os_str()
            .len()
            .max(dir.as_os_str().len() + 1 + TEMP_NAME);
        if longest > MAX_PATH {
            bail!(
                "commit entry {}: in the site its path would be {} bytes long, more than a file system takes ({MAX_PATH}); nothing was written",
                shown(change.path.as_bytes()),
                path.as_os_str().len()
            );
        }
    }
    Ok(())
}

/// Fails, before anything is written, where the commit has a file and the
/// site a directory that the deletions will not empty: it holds something
/// pushdeploy did not write, which is never deleted.
fn check_directories_in_the_way(plan: &SyncPlan, site: &Path) -> Result<()> {
    let deleted: BTreeSet<&str> = plan.delete.iter().map(String::as_str).collect();
    for change in &plan.write {
        if !parents_are_real_dirs(site, &change.path) {
            continue; // Its parent is replaced by a directory: nothing is there yet.
        }
        let target = site.join(&change.path);
        if !fs_err::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_dir()) {
            continue;
        }
        let mut dirs = vec![change.path.clone()];
        while let Some(dir) = dirs.pop() {
            let mut empty = true;
            for entry in fs_err::read_dir(site.join(&dir))? {
                let entry = entry?;
                empty = false;
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel = format!("{dir}/{name}");
                if entry.file_type()?.is_dir() {
                    dirs.push(rel);
                } else if !deleted.contains(rel.as_str()) && !name.starts_with(TEMP_PREFIX) {
                    bail!(
                        "commit entry {}: the site has a directory there, holding {rel} that pushdeploy did not write; move it away, or rename the entry; nothing was written",
                        change.path
                    );
                }
            }
            if empty {
                bail!(
                    "commit entry {}: the site has a directory there, holding the empty directory {dir} that pushdeploy did not make; remove it, or rename the entry; nothing was written",
                    change.path
                );
            }
        }
    }
    Ok(())
}

/// Removes the temp files that a killed sync left: in the directories this
/// one writes to or deletes from, and after an interrupted sync in every
/// directory of the commit.
fn remove_temp_files(plan: &SyncPlan, site: &Path) -> Result<()> {
    let dirs: BTreeSet<&str> = plan
        .write
        .iter()
        .map(|c| c.path.as_str())
        .chain(plan.delete.iter().map(String::as_str))
        .map(|p| p.rsplit_once('/').map_or("", |(dir, _)| dir))
        .chain(plan.sweep.iter().map(String::as_str))
        .collect();
    for dir in dirs {
        // Never through a symlink: only directories of the site itself.
        if dir.is_empty() || parents_are_real_dirs(site, &format!("{dir}/x")) {
            crate::files::remove_temp_files(&site.join(dir), TEMP_PREFIX)?;
        }
    }
    Ok(())
}

/// Whether every directory between the site and `rel` is a real directory
/// (not a symlink), so that acting on `rel` stays inside the site.
fn parents_are_real_dirs(site: &Path, rel: &str) -> bool {
    let mut dir = site.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match fs_err::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            _ => return false,
        }
    }
    true
}

fn delete(site: &Path, rel: &str) -> Result<()> {
    // A parent that is no longer a real directory means the file is not ours to delete.
    if !parents_are_real_dirs(site, rel) {
        return Ok(());
    }
    let path = site.join(rel);
    match fs_err::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_dir() => fs_err::remove_file(&path)?,
        _ => return Ok(()),
    }
    // Remove the directories this left empty, up to the site.
    let mut dir = path.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d == site || fs_err::remove_dir(&d).is_err() {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    Ok(())
}

/// Makes every parent of `rel` a real directory, replacing a file or symlink
/// that stands where the commit wants a directory.
fn make_parents(site: &Path, rel: &str, made: &mut HashSet<PathBuf>) -> Result<PathBuf> {
    let mut dir = site.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        // Known to be a real directory already during this sync.
        if made.contains(&dir) {
            continue;
        }
        match fs_err::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                fs_err::remove_file(&dir)?;
                fs_err::create_dir(&dir)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs_err::create_dir(&dir)?,
            Err(e) => return Err(e.into()),
        }
        made.insert(dir.clone());
    }
    Ok(dir)
}

fn write(site: &Path, commit: &Commit, change: &Change, made: &mut HashSet<PathBuf>) -> Result<()> {
    let dir = make_parents(site, &change.path, made)?;
    let target = site.join(&change.path);
    let mut existing = fs_err::symlink_metadata(&target).ok();
    // A directory where the commit now has a file: it must be empty by now.
    if existing
        .as_ref()
        .is_some_and(|meta| meta.file_type().is_dir())
    {
        fs_err::remove_dir(&target).with_context(|| {
            format!("{} is a directory with files that pushdeploy did not write, and the commit has a file there", change.path)
        })?;
        existing = None;
    }
    match change.kind {
        Kind::Symlink => {
            let blob = commit.blob(&change.blob)?;
            let link = std::ffi::OsStr::new(
                std::str::from_utf8(blob.content()).context("symlink target is not UTF-8")?,
            );
            let tmp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .make_in(&dir, |p| std::os::unix::fs::symlink(link, p))?;
            // rename(2) replaces the name itself, never what a symlink there points to.
            tmp.persist(&target)?;
        }
        Kind::File | Kind::Executable if existing.is_none() => {
            // Nothing to replace: written in place. create_new never follows
            // a symlink. A sync killed half-way may leave a short file; the
            // next sync compares every file after an interruption and
            // rewrites it.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)?;
            commit.write_blob(&change.blob, &mut file)?;
            file.set_permissions(std::fs::Permissions::from_mode(change.kind.mode()))?;
        }
        Kind::File | Kind::Executable => {
            let mut tmp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempfile_in(&dir)?;
            commit.write_blob(&change.blob, tmp.as_file_mut())?;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(change.kind.mode()))?;
            tmp.persist(&target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_inside_and_outside() {
        let ok = |link, target: &[u8]| check_link_target(link, target).is_ok();
        assert!(ok("a", b"b"));
        assert!(ok("a", b"./b/c"));
        assert!(ok("static/x", b"../app.py"));
        assert!(ok("a/b/c", b"../../d"));
        assert!(ok("d/l", b".."));
        assert!(!ok("a", b"/etc/passwd"));
        assert!(!ok("a", b"../outside"));
        assert!(!ok("a/b", b"../../x"));
        assert!(!ok("a", b""));
        assert!(!ok("a", b"x\0y"));
        assert!(!ok("a", b"\xff"));
        assert!(!ok("a", "x/".repeat(2048).as_bytes()));
        // Through another link `d/l -> ..`, `d/l/..` is the site's parent.
        assert!(!ok("e", b"d/l/../outside"));
        assert!(!ok("e", b"static/../app.py"));
    }
}
