//! The sync's journal: what a sync changed in the site, so that a deployment
//! that fails (or is killed) can put the site's files back exactly as they
//! were. Files the sync replaces or deletes are kept, not lost: moved (or,
//! for a replaced file, hard-linked) into `.pushdeploy-old-<id>/` at the top
//! of the site, under a slot number. Each change is appended to the journal
//! (`<state dir>/sync-journal.jsonl`, one JSON line each) before it is made,
//! so that a process killed at any point leaves a journal that covers every
//! change it made. The journal is fsync'd when it starts and when the sync
//! completes; in between, a killed process's lines are in the kernel's page
//! cache, which outlives it.
//!
//! Undoing is the journal read backwards, through the same site walk as the
//! sync ([`crate::site_dir`]): added files are deleted (the very files the
//! sync made, known by their inode, which is journaled before a new file
//! takes its name: never one that the app put there), kept files renamed
//! back (renames, not copies: the restore costs about what the sync did),
//! directories the sync made are removed (unless something else was put
//! in them meanwhile) and directories it removed are made again with their
//! modes. Files the sync never named are never touched.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use crate::manifest::{self, Manifest};
use crate::site_dir::{Dir, Kind, SiteDir, is_absent, split};

/// The journal file in the state dir.
pub const JOURNAL: &str = "sync-journal.jsonl";
/// The directory at the top of the site that keeps what a sync replaced or
/// deleted until the deployment succeeds. Refused in commits.
pub const ASIDE_PREFIX: &str = ".pushdeploy-old-";
/// Where a rollback that could not put everything back leaves the rest, for
/// a person to look at; pushdeploy never removes it.
pub const UNRESTORED_PREFIX: &str = ".pushdeploy-unrestored-";
/// The ref that keeps the commit of a sync in progress.
pub const PENDING_REF: &str = "refs/pushdeploy/pending";
/// The ref that keeps the deployed commit, whose files are in the site.
pub const DEPLOYED_REF: &str = "refs/pushdeploy/deployed";

/// The part of the names of kept copies and temp files in the site that
/// says which repository (which state dir) made them: two repositories that
/// deploy into one site never sweep each other's.
pub fn owner_tag(state_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let path = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    // FNV-1a: the same for a state dir in every run and every version.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_bytes() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", (hash ^ (hash >> 32)) as u32)
}

/// Whether `name` (a kept copy or temp file, starting with `prefix`) is
/// the repository of `tag`'s: its tag follows the prefix (`<prefix><tag>-`),
/// or it has none (made by a version before tags, and swept as then).
pub fn is_ours(name: &str, prefix: &str, tag: &str) -> bool {
    match name.strip_prefix(prefix) {
        Some(rest) => rest.split_once('-').is_none_or(|(theirs, _)| theirs == tag),
        None => false,
    }
}

/// The first line of a journal.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    site: PathBuf,
    /// The name of the aside directory at the top of the site.
    aside: String,
    /// The manifest that the sync's deployment makes current when it succeeds.
    manifest: Manifest,
}

/// One change to the site, written before it is made.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Action {
    /// A file or symlink to be made where nothing was (written before it is
    /// made, maybe with others of its directory).
    Add { path: String },
    /// The file or symlink that the sync is about to move to `path` (after
    /// an `Add`), made aside first, is the inode `ino`: an undo removes that
    /// file and no other, never one that the app put at the same name.
    Made { path: String, ino: u64 },
    /// The sync did not make `path` after all: something else was there
    /// first (after an `Add`). An undo leaves it.
    NotAdded { path: String },
    /// The file at `path` kept as `slot` in the aside directory, then
    /// replaced by the file whose inode is `ino`: an undo puts the kept one
    /// back over that file, never over one the app put there since.
    Replace {
        path: String,
        slot: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ino: Option<u64>,
    },
    /// The file at `path` moved to `slot` in the aside directory.
    Delete { path: String, slot: u64 },
    /// A directory made.
    Mkdir { path: String },
    /// An empty directory removed, with its mode.
    Rmdir { path: String, mode: u32 },
    /// The deployment succeeded: the kept files are to be deleted, nothing undone.
    Finished,
}

/// A sync's record of its changes, open while its deployment runs. Either
/// [`Journal::finish`] (the deployment succeeded) or [`Journal::rollback`]
/// (it failed) ends it; a journal left by a killed process is ended by
/// [`recover`].
pub struct Journal<'r> {
    repo: &'r Repository,
    state_dir: PathBuf,
    file: File,
    site: SiteDir,
    header: Header,
    /// See [`owner_tag`].
    tag: String,
    aside: Option<Dir>,
    next_slot: u64,
    /// Test-only (see `sync::TEST_HOOK`): a pause in `finish`.
    pub(crate) pause_in_finish: Option<PathBuf>,
}

/// What undoing a journal did.
#[derive(Debug, Default)]
pub struct Rollback {
    /// Files put back (kept ones restored, added ones removed).
    pub restored: usize,
    /// What could not be put back, one line each; then the aside directory
    /// is kept, and the next sync compares every file.
    pub problems: Vec<String>,
}

/// What [`recover`] found and did.
#[derive(Debug)]
pub enum Recovered {
    /// An unfinished sync was undone.
    RolledBack(Rollback),
    /// A deployment was killed while it cleaned up after succeeding: its
    /// cleanup was finished.
    Finished,
}

fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join(JOURNAL)
}

impl<'r> Journal<'r> {
    /// Starts a journal for a sync into `site` that deploys `manifest`.
    /// Fails if one is already there (`recover` must run first).
    pub fn create(
        repo: &'r Repository,
        state_dir: &Path,
        site: SiteDir,
        manifest: &Manifest,
    ) -> Result<Journal<'r>> {
        let path = journal_path(state_dir);
        crate::fault::point("journal create")?;
        let mut file = File::options()
            .append(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("{}: cannot create the sync journal", path.display()))?;
        let tag = owner_tag(state_dir);
        let header = Header {
            site: site.path().to_path_buf(),
            aside: format!("{ASIDE_PREFIX}{tag}-{}", crate::site_dir::unique()),
            manifest: manifest.clone(),
        };
        let mut line = serde_json::to_vec(&header)?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_all()?;
        // The journal's name itself must last, or a crash could lose it.
        File::open(state_dir)?.sync_all()?;
        Ok(Journal {
            repo,
            state_dir: state_dir.to_path_buf(),
            file,
            site,
            header,
            tag,
            aside: None,
            next_slot: 0,
            pause_in_finish: None,
        })
    }

    pub fn site(&self) -> &SiteDir {
        &self.site
    }

    /// See [`owner_tag`].
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Appends one change, before it is made: one write, so that a killed
    /// process leaves it whole or not at all.
    pub(crate) fn log(&mut self, action: &Action) -> Result<()> {
        crate::fault::point("journal line")?;
        let mut line = serde_json::to_vec(action)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .context("writing the sync journal")?;
        Ok(())
    }

    /// The aside directory, made the first time something is kept.
    fn aside(&mut self) -> Result<&Dir> {
        if self.aside.is_none() {
            let root = self.site.root();
            root.mkdir(&self.header.aside, 0o700).with_context(|| {
                format!(
                    "making {} in the site, to keep what the sync replaces",
                    self.header.aside
                )
            })?;
            let dir = root
                .open_dir(&self.header.aside)?
                .context("the aside directory vanished")?;
            self.aside = Some(dir);
        }
        Ok(self.aside.as_ref().expect("made above"))
    }

    fn slot(&mut self) -> u64 {
        self.next_slot += 1;
        self.next_slot
    }

    /// Notes that `name` in `dir` is a new file or symlink, before it is made.
    pub(crate) fn added(&mut self, dir: &Dir, name: &str) -> Result<()> {
        self.added_all(dir, &[name])
    }

    /// Notes that `names` in `dir` are new files, before any of them is made.
    pub(crate) fn added_all(&mut self, dir: &Dir, names: &[&str]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        crate::fault::point("journal lines")?;
        let mut lines = Vec::new();
        for name in names {
            serde_json::to_writer(
                &mut lines,
                &Action::Add {
                    path: dir.rel_of(name),
                },
            )?;
            lines.push(b'\n');
        }
        self.file
            .write_all(&lines)
            .context("writing the sync journal")
    }

    /// Notes that the file the sync moves to `name` in `dir` (noted as
    /// added before) is the inode `ino`, before it is moved there.
    pub(crate) fn made(&mut self, dir: &Dir, name: &str, ino: u64) -> Result<()> {
        self.log(&Action::Made {
            path: dir.rel_of(name),
            ino,
        })
    }

    /// [`Journal::made`] for several files of `dir`, in one write.
    pub(crate) fn made_all(&mut self, dir: &Dir, files: &[(&str, u64)]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        crate::fault::point("journal lines")?;
        let mut lines = Vec::new();
        for (name, ino) in files {
            serde_json::to_writer(
                &mut lines,
                &Action::Made {
                    path: dir.rel_of(name),
                    ino: *ino,
                },
            )?;
            lines.push(b'\n');
        }
        self.file
            .write_all(&lines)
            .context("writing the sync journal")
    }

    /// Notes that `name` in `dir`, noted as added, was not made: something
    /// else took the name first.
    pub(crate) fn not_added(&mut self, dir: &Dir, name: &str) -> Result<()> {
        self.log(&Action::NotAdded {
            path: dir.rel_of(name),
        })
    }

    /// Keeps the file `name` in `dir` aside (a second name for it), before
    /// the caller renames its replacement (the inode `ino`) over it. Where
    /// the file system refuses hard links, it is moved instead, and for a
    /// moment the name is missing.
    pub(crate) fn keep_replaced(&mut self, dir: &Dir, name: &str, ino: u64) -> Result<()> {
        let slot = self.slot();
        self.log(&Action::Replace {
            path: dir.rel_of(name),
            slot,
            ino: Some(ino),
        })?;
        let aside = self.aside()?;
        let slot = slot.to_string();
        if dir.link(name, aside, &slot).is_err() {
            move_into(dir, name, aside, &slot)?;
        }
        Ok(())
    }

    /// Moves the file or symlink `name` in `dir` aside: deleted, but kept
    /// until the deployment succeeds.
    pub(crate) fn delete(&mut self, dir: &Dir, name: &str) -> Result<()> {
        let slot = self.slot();
        self.log(&Action::Delete {
            path: dir.rel_of(name),
            slot,
        })?;
        let aside = self.aside()?;
        move_into(dir, name, aside, &slot.to_string())
    }

    /// Makes the directory `name` in `dir`.
    pub(crate) fn mkdir(&mut self, dir: &Dir, name: &str) -> Result<()> {
        self.log(&Action::Mkdir {
            path: dir.rel_of(name),
        })?;
        dir.mkdir(name, 0o777)
            .with_context(|| format!("making directory {}", dir.rel_of(name)))
    }

    /// Removes the directory `name` in `dir` if it is empty; says whether it was.
    pub(crate) fn rmdir(&mut self, dir: &Dir, name: &str, mode: u32) -> Result<bool> {
        self.log(&Action::Rmdir {
            path: dir.rel_of(name),
            mode,
        })?;
        Ok(dir.rmdir(name).is_ok())
    }

    /// The sync is complete: its journal is made durable, and stays until
    /// the deployment ends.
    pub(crate) fn synced(&mut self) -> Result<()> {
        self.file.sync_all().context("syncing the sync journal")
    }

    /// The deployment succeeded: its commit becomes the deployed one (the
    /// manifest and `refs/pushdeploy/deployed`), and the kept copies of
    /// replaced and deleted files are deleted.
    pub fn finish(mut self) -> Result<()> {
        self.log(&Action::Finished)?;
        self.file.sync_all()?;
        if let Some(file) = &self.pause_in_finish {
            crate::sync::pause_at(file)?;
        }
        complete(self.repo, &self.state_dir, &self.site, &self.header)
    }

    /// The deployment failed: the site's files are put back as they were
    /// before the sync, and the deployed commit stays the current one.
    pub fn rollback(self) -> Result<Rollback> {
        drop(self.file);
        undo(self.repo, &self.state_dir, &self.site, &self.header)
    }
}

/// Moves `name` from `dir` to `to_name` in `to` (one file system: a rename).
fn move_into(dir: &Dir, name: &str, to: &Dir, to_name: &str) -> Result<()> {
    dir.rename(name, to, to_name).map_err(|e| {
        let rel = dir.rel_of(name);
        if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) {
            anyhow::anyhow!(
                "{rel}: is on another file system than the site's top; pushdeploy keeps replaced files with a rename, so a site must be one file system"
            )
        } else {
            anyhow::Error::new(e).context(format!("moving {rel} aside"))
        }
    })
}

/// The journal of a sync that did not end, undone or finished: called by a
/// deployment under the lock, before it changes anything. `None` when there
/// is none.
pub fn recover(repo: &Repository, state_dir: &Path, site: &Path) -> Result<Option<Recovered>> {
    recover_as(repo, state_dir, site, false)
}

/// [`recover`] for a deployment that had passed its commit point (see
/// `deploy`): its journal is completed, whether its last line says so or not.
pub fn recover_stood(
    repo: &Repository,
    state_dir: &Path,
    site: &Path,
) -> Result<Option<Recovered>> {
    recover_as(repo, state_dir, site, true)
}

fn recover_as(
    repo: &Repository,
    state_dir: &Path,
    site: &Path,
    stood: bool,
) -> Result<Option<Recovered>> {
    let path = journal_path(state_dir);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            sweep_aside(site, &owner_tag(state_dir))?;
            return Ok(None);
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("{}", path.display()))),
    };
    let mut lines = BufReader::new(file).lines();
    let header: Option<Header> = match lines.next() {
        Some(line) => serde_json::from_str(&line?).ok(),
        None => None,
    };
    let Some(header) = header else {
        // Killed while the header was written: nothing was changed yet.
        crate::files::remove_file_if_there(&path)?;
        sweep_aside(site, &owner_tag(state_dir))?;
        return Ok(None);
    };
    if header.site != site {
        bail!(
            "{}: a sync into {} did not end, and the site is now {}; put the setting back, or remove the journal",
            path.display(),
            header.site.display(),
            site.display()
        );
    }
    let finished = stood
        || lines
            .map_while(|l| l.ok())
            .any(|l| matches!(serde_json::from_str(&l), Ok(Action::Finished)));
    let site_dir = SiteDir::open(site)?;
    if finished {
        complete(repo, state_dir, &site_dir, &header)?;
        return Ok(Some(Recovered::Finished));
    }
    Ok(Some(Recovered::RolledBack(undo(
        repo, state_dir, &site_dir, &header,
    )?)))
}

/// What [`recover`] will do with a journal a killed deployment left, read
/// without changing anything (the dry run's view of it).
#[derive(Debug)]
pub enum Outlook {
    /// The sync is undone: `changes` changes to files are put back; the
    /// files it added (`added`) are removed.
    Undo {
        changes: usize,
        added: std::collections::HashSet<String>,
    },
    /// It had succeeded: only its cleanup is finished.
    Finish,
}

/// What [`recover`] will find in the state dir's journal, if there is one
/// that changed anything.
pub fn outlook(state_dir: &Path) -> Option<Outlook> {
    let file = File::open(journal_path(state_dir)).ok()?;
    let mut lines = BufReader::new(file).lines().map_while(|l| l.ok());
    serde_json::from_str::<Header>(&lines.next()?).ok()?;
    let mut changes: usize = 0;
    let mut added = std::collections::HashSet::new();
    for line in lines {
        match serde_json::from_str(&line) {
            Ok(Action::Finished) => return Some(Outlook::Finish),
            Ok(Action::Add { path }) => {
                changes += 1;
                added.insert(path);
            }
            Ok(Action::NotAdded { path }) => {
                changes = changes.saturating_sub(1);
                added.remove(&path);
            }
            Ok(Action::Replace { .. } | Action::Delete { .. }) => changes += 1,
            _ => {}
        }
    }
    Some(Outlook::Undo { changes, added })
}

/// Removes this repository's aside directories that no journal names (a
/// process killed after removing its journal, before removing its kept
/// files); another repository's, which its own rollback may still need,
/// stay. Never fails: what cannot be removed now is tried again next time.
fn sweep_aside(site: &Path, tag: &str) -> Result<()> {
    let Ok(site) = SiteDir::open(site) else {
        return Ok(());
    };
    for (name, kind) in site.root().entries().unwrap_or_default() {
        if kind == Kind::Dir && is_ours(&name, ASIDE_PREFIX, tag) {
            let _ = site.root().remove_all(&name);
        }
    }
    Ok(())
}

/// Ends a journal whose deployment succeeded: the deployed commit is
/// recorded, then the journal and the kept copies are removed.
fn complete(repo: &Repository, state_dir: &Path, site: &SiteDir, header: &Header) -> Result<()> {
    let store = manifest::Store::new(state_dir);
    let id = Oid::from_str(&header.manifest.commit)?;
    crate::fault::point("deployed ref")?;
    repo.reference(DEPLOYED_REF, id, true, "pushdeploy: deployed")
        .with_context(|| format!("writing ref {DEPLOYED_REF}"))?;
    store.commit(&header.manifest)?;
    unpin(repo, PENDING_REF)?;
    crate::files::remove_file_if_there(&journal_path(state_dir))?;
    // The deployment stands whatever happens here: kept copies that cannot
    // be removed now are swept before the next deployment.
    if crate::fault::point("remove kept copies").is_ok() {
        let _ = site.root().remove_all(&header.aside);
    }
    Ok(())
}

fn unpin(repo: &Repository, name: &str) -> Result<()> {
    crate::fault::point("unpin ref")?;
    match repo.find_reference(name) {
        Ok(mut reference) => reference
            .delete()
            .with_context(|| format!("removing ref {name}")),
        Err(_) => Ok(()),
    }
}

/// Undoes every change the journal lists, newest first.
fn undo(repo: &Repository, state_dir: &Path, site: &SiteDir, header: &Header) -> Result<Rollback> {
    let path = journal_path(state_dir);
    let mut actions = Vec::new();
    for line in BufReader::new(File::open(&path)?).lines().skip(1) {
        // A line cut short by a kill: its change was never made.
        match serde_json::from_str::<Action>(&line?) {
            Ok(action) => actions.push(action),
            Err(_) => break,
        }
    }
    // Which file the sync made at each name it added, and the names it
    // found taken: an undo removes only the files it made.
    let mut made = std::collections::HashMap::new();
    let mut not_added = std::collections::HashSet::new();
    for action in &actions {
        match action {
            Action::Made { path, ino } => {
                made.insert(path.as_str(), *ino);
            }
            Action::NotAdded { path } => {
                not_added.insert(path.as_str());
            }
            _ => {}
        }
    }
    let aside = site.root().open_dir(&header.aside)?;
    let mut done = Rollback::default();
    let mut touched = std::collections::BTreeSet::new();
    for action in actions.iter().rev() {
        if let Err(e) = crate::fault::point("undo") {
            done.problems.push(format!("{e:#}"));
            continue;
        }
        let result = match action {
            Action::Add { path }
                if not_added.contains(path.as_str()) && !made.contains_key(path.as_str()) =>
            {
                Ok(())
            }
            Action::Add { path } => {
                touched.insert(split(path).0.to_string());
                undo_add(site, path, made.get(path.as_str()).copied()).map(|n| done.restored += n)
            }
            Action::Made { .. } | Action::NotAdded { .. } => Ok(()),
            Action::Replace { path, slot, ino } => {
                touched.insert(split(path).0.to_string());
                // Written by a version that did not journal the inode: as then.
                let there = ino.map_or(There::Any, There::File);
                match &aside {
                    Some(aside) => {
                        restore(site, aside, path, *slot, there).map(|n| done.restored += n)
                    }
                    None => Ok(()),
                }
            }
            Action::Delete { path, slot } => {
                touched.insert(split(path).0.to_string());
                match &aside {
                    Some(aside) => restore(site, aside, path, *slot, There::Nothing)
                        .map(|n| done.restored += n),
                    None => Ok(()),
                }
            }
            Action::Mkdir { path } => undo_mkdir(site, path),
            Action::Rmdir { path, mode } => undo_rmdir(site, path, *mode),
            Action::Finished => Ok(()),
        };
        if let Err(e) = result {
            done.problems.push(format!("{e:#}"));
        }
    }
    // Temp files of a write that was under way when the sync stopped.
    let tag = owner_tag(state_dir);
    for dir in touched {
        if let Ok(Some(dir)) = site.dir(&dir) {
            let _ = dir.remove_temp_files(|n| is_ours(n, crate::sync::SYNC_TEMP_PREFIX, &tag));
        }
    }
    let store = manifest::Store::new(state_dir);
    if done.problems.is_empty() {
        // Emptied by the restore; what is left is swept before the next deployment.
        let _ = site.root().remove_all(&header.aside);
        // The site is the deployed commit's again: no sync is pending.
        store.abort()?;
        unpin(repo, PENDING_REF)?;
    } else if aside.is_some() {
        // What was not put back stays, under a name no sweep removes. The
        // pending manifest stays too: the next sync compares every file.
        let kept = format!("{UNRESTORED_PREFIX}{}", crate::site_dir::unique());
        site.root()
            .rename(&header.aside, site.root(), &kept)
            .with_context(|| format!("renaming {} to {kept}", header.aside))?;
        done.problems.push(format!(
            "what was not put back is kept in the site's {kept}/"
        ));
    }
    crate::files::remove_file_if_there(&path)?;
    Ok(done)
}

/// Removes the file the sync added at `path`: the inode `made`, never
/// another file at that name (one the app put there).
fn undo_add(site: &SiteDir, path: &str, made: Option<u64>) -> Result<usize> {
    let Some((dir, name)) = site.parent(path)? else {
        return Ok(0);
    };
    match (dir.meta(name)?, made) {
        (Some(meta), Some(ino)) if meta.kind != Kind::Dir && meta.ino == ino => {
            dir.unlink(name)
                .with_context(|| format!("removing {path}, which the sync added"))?;
            Ok(1)
        }
        // Nothing there, a directory, or a file the sync did not make (no
        // file of its own takes a name before its inode is journaled).
        _ => Ok(0),
    }
}

/// What the sync left at a name whose file it kept aside: what a restore
/// may put the kept file back over.
#[derive(Clone, Copy)]
enum There {
    /// Nothing: the file was deleted.
    Nothing,
    /// The file that replaced it, the inode journaled.
    File(u64),
    /// A journal without the inode: whatever is there.
    Any,
}

/// Puts the kept file `slot` back at `path`, over what the sync left there
/// only: a file the app put there since stays, and the kept one is left
/// for a person (a problem of the rollback).
fn restore(site: &SiteDir, aside: &Dir, path: &str, slot: u64, there: There) -> Result<usize> {
    let slot = slot.to_string();
    let Some(kept) = aside.meta(&slot)? else {
        return Ok(0); // The change was never made.
    };
    let Some((dir, name)) = site.parent(path)? else {
        bail!("{path}: its directory is gone or is no longer a directory (kept as number {slot})");
    };
    let now = dir.meta(name)?;
    let put_back = match (now, there) {
        // Killed before its replacement was moved in: still the kept file.
        (Some(now), _) if now.ino == kept.ino => return Ok(1),
        (None, _) => aside.rename_new(&slot, &dir, name),
        (Some(now), There::File(ino)) if now.ino == ino => aside.rename(&slot, &dir, name),
        (Some(_), There::Any) => aside.rename(&slot, &dir, name),
        (Some(_), _) => bail!(
            "{path}: a file the sync did not write is there now (made since it ran), and stays; the one the deployment had is kept as number {slot}"
        ),
    };
    put_back.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{path}: a file the sync did not write appeared there, and stays; the one the deployment had is kept as number {slot}"
            )
        } else {
            anyhow::Error::new(e).context(format!("putting back {path}"))
        }
    })?;
    // The replacement's bytecode may pass for the kept file's.
    dir.forget_bytecode([name])
        .with_context(|| format!("putting back {path}"))?;
    Ok(1)
}

fn undo_mkdir(site: &SiteDir, path: &str) -> Result<()> {
    if let Some((dir, name)) = site.parent(path)? {
        // Not empty: something else was put there since; it stays.
        let _ = dir.rmdir(name);
    }
    Ok(())
}

fn undo_rmdir(site: &SiteDir, path: &str, mode: u32) -> Result<()> {
    let Some((dir, name)) = site.parent(path)? else {
        bail!("{path}: cannot make the directory again: its parent is gone");
    };
    match dir.mkdir(name, 0o700) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) if is_absent(&e) => bail!("{path}: cannot make the directory again: {e}"),
        other => other.with_context(|| format!("making {path} again"))?,
    }
    if let Some(made) = dir.open_dir(name)? {
        rustix::fs::fchmod(made.fd(), rustix::fs::Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Files put back as they were before the sync ({} restored)",
            self.restored
        )?;
        if !self.problems.is_empty() {
            write!(
                f,
                "; not put back: {}; the next sync compares every file",
                self.problems.join("; ")
            )?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovered::RolledBack(rollback) => {
                write!(f, "A sync that did not finish was undone: {rollback}")
            }
            Recovered::Finished => write!(
                f,
                "A deployment that succeeded was stopped while it cleaned up: its cleanup is done"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_which_repository_made_them() {
        let tag = owner_tag(Path::new("/srv/git/a.git/pushdeploy"));
        assert_eq!(tag, owner_tag(Path::new("/srv/git/a.git/pushdeploy")));
        assert_ne!(tag, owner_tag(Path::new("/srv/git/b.git/pushdeploy")));
        assert_eq!(tag.len(), 8);
        let prefix = crate::sync::SYNC_TEMP_PREFIX;
        assert!(is_ours(&format!("{prefix}{tag}-1a2b"), prefix, &tag));
        assert!(!is_ours(&format!("{prefix}0badcafe-1a2b"), prefix, &tag));
        // Made before names had tags: swept as then.
        assert!(is_ours(&format!("{prefix}1a2b3c"), prefix, &tag));
        assert!(!is_ours("app.py", prefix, &tag));
        assert!(is_ours(
            &format!("{ASIDE_PREFIX}{tag}-9"),
            ASIDE_PREFIX,
            &tag
        ));
        assert!(!is_ours(
            &format!("{UNRESTORED_PREFIX}{tag}-9"),
            ASIDE_PREFIX,
            &tag
        ));
    }
}
