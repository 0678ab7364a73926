//! Syncing files: making the site match the commit. Changed files are written
//! atomically (temp file, rename); files that the previous deployment wrote
//! and this commit lacks are deleted, with directories that this leaves empty.
//! Every path is reached from the site's directory handle without following
//! a symlink ([`crate::site_dir`]), so nothing lands outside the site, whatever
//! changes in the site meanwhile. What a sync replaces or deletes is kept
//! until its deployment ends ([`crate::journal`]).
//!
//! The deployment drives it with four calls:
//! - [`plan`]: what to write and delete, decided before anything changes
//!   (the dry run prints it);
//! - [`run`]: carries the plan out and returns the open [`Journal`]; a sync
//!   that fails half-way is undone before `run` returns its error;
//! - then [`Journal::finish`] when the whole deployment succeeded (the
//!   commit becomes the deployed one, the kept copies are deleted), or
//!   [`Journal::rollback`] when a later step failed (the site's files are
//!   put back exactly as they were: contents, modes, symlinks, directories);
//! - [`recover`], under the deployment lock before anything else, after a
//!   deployment that was killed: undoes its unfinished sync.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::io::{self, Read};
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::commit::short_id;
use crate::commit::{Commit, Entry, Kind, MAX_PATH, Skipped};
use crate::error::shown;
use crate::journal::PENDING_REF;
pub use crate::journal::{Journal, Recovered, recover};
use crate::manifest::{self, Manifest};
use crate::pack::ReadAhead;
use crate::site_dir::{self, Dir, SiteDir, split};

/// The start of every name pushdeploy makes in the site.
pub const PUSHDEPLOY_PREFIX: &str = ".pushdeploy-";
/// Names in the site that belong to the env; the sync never touches them.
pub const ENV_NAMES: &[&str] = &["env"];
pub const ENV_DIR_PREFIX: &str = ".pushdeploy-env-";
/// A file that replaces one is written to a temp file of this name beside
/// it, then renamed over it. One left by a sync that was killed is removed by
/// the next sync.
pub const SYNC_TEMP_PREFIX: &str = ".pushdeploy-tmp-";
/// Test-only: makes the sync stop (`fail:<n>`) or wait while a file exists
/// (`pause:<n>:<file>`, which it creates) before its n-th change (n = 0:
/// in [`Journal::finish`], once the journal says finished), so that tests
/// can break, race or kill a sync at a known point. Never set it otherwise.
const TEST_HOOK: &str = "PUSHDEPLOY_TEST_SYNC";

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Why {
    Added,
    Changed,
    /// The file in the site differs from the commit (edited or deleted by
    /// hand, or an interrupted sync).
    Repair,
    /// A file pushdeploy did not write, which differs from the commit's,
    /// replaced because `takeOverFiles` is set.
    TakeOver,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub path: String,
    pub kind: Kind,
    #[serde(serialize_with = "crate::commit::blob_text")]
    pub blob: git2::Oid,
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

/// How the changes were found: from the diff with the deployed commit, or
/// by comparing every file with the site, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Basis {
    /// The deployed commit's tree compared with this one's: work in
    /// proportion to the change.
    Diff { from: String },
    /// No deployment into this site yet: every file written (or, onto a
    /// site that already holds files, compared).
    First,
    /// A sync of `commit` was interrupted and could not be undone.
    Interrupted { commit: String },
    /// The deployed commit is recorded but git no longer has it.
    Lost { commit: String },
    /// `.deployment`'s project folder changed.
    ProjectChanged { from: String, to: String },
    /// `--verify` or `verify = true`.
    Verify,
    /// The last deployment ran a custom command, which wrote the site itself.
    AfterCommand { commit: String },
    /// The trees could not be compared.
    NotComparable,
    /// A custom command's output compared with the site.
    Command,
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ALL: &str = "every file compared with the site";
        match self {
            Basis::Diff { from } => write!(f, "changes since {}", short_id(from)),
            Basis::First => write!(f, "first deployment to this site"),
            Basis::Interrupted { .. } => write!(f, "an earlier sync was interrupted: {ALL}"),
            Basis::Lost { commit } => write!(
                f,
                "the deployed commit {} is gone from the repository: {ALL}; files only it had are left in place",
                short_id(commit)
            ),
            Basis::ProjectChanged { from, to } => {
                write!(f, "project changed from {from} to {to}: {ALL}")
            }
            Basis::Verify => write!(f, "--verify: {ALL}"),
            Basis::AfterCommand { commit } => write!(
                f,
                "the last deployment ({}) ran a custom command: {ALL}",
                short_id(commit)
            ),
            Basis::NotComparable => write!(f, "the trees could not be compared: {ALL}"),
            Basis::Command => write!(f, "the command's output compared with the site"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPlan {
    pub basis: Basis,
    pub write: Vec<Change>,
    pub delete: Vec<String>,
    /// Files compared and found equal (only known when every file was compared).
    pub unchanged: Option<usize>,
    /// Files pushdeploy did not write that are byte for byte the commit's:
    /// from now on they are the deployment's (deleted when a commit drops them).
    pub taken_over: Vec<String>,
    /// Files pushdeploy did not write that differ from the commit's: the
    /// deployment fails (see `check_refused`) unless `takeOverFiles`.
    pub refused: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// After an interrupted sync: every directory of the commit, where its
    /// temp files may be left.
    #[serde(skip)]
    pub sweep: BTreeSet<String>,
    /// Whether a file that appears where the plan saw none, before the sync
    /// writes there, is replaced (`takeOverFiles`, or a custom command's
    /// output) or refused.
    #[serde(skip)]
    pub take_over: bool,
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
        if !self.taken_over.is_empty() {
            s.push_str(&format!(", {} taken over", self.taken_over.len()));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!(", {} skipped", self.skipped.len()));
        }
        s.push_str(&format!(" ({})", self.basis));
        s
    }

    /// Lines under the sync's header: what was skipped and taken over.
    pub fn details(&self) -> Vec<String> {
        const SHOWN: usize = 10;
        let mut out: Vec<String> = self
            .skipped
            .iter()
            .map(|s| format!("skipped {}: {}", s.path, s.reason))
            .collect();
        out.extend(
            self.taken_over
                .iter()
                .take(SHOWN)
                .map(|p| format!("taken over {p}: the site's own file equals the commit's")),
        );
        if self.taken_over.len() > SHOWN {
            out.push(format!(
                "taken over {} more (pushdeploy deploy --dry-run lists them)",
                self.taken_over.len() - SHOWN
            ));
        }
        out
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
    /// The commit of a custom-command deployment since the last sync, if any.
    pub after_command: Option<String>,
    /// The files that custom-command deployment left in the site (recorded
    /// since commands deploy through the journal): with it, they are the
    /// files pushdeploy wrote, instead of the deployed commit's.
    pub command_files: Option<Vec<String>>,
    /// `takeOverFiles`: replace files pushdeploy did not write that differ.
    pub take_over: bool,
    /// Files a killed sync added, which putting it back removes first: the
    /// dry run plans them as absent (a deployment has put them back already).
    pub put_back: Option<&'a HashSet<String>>,
}

impl Before<'_, '_> {
    /// Why every file must be compared, or `None` when the diff will do.
    fn full_basis(&self) -> Option<Basis> {
        let id = |c: &Commit| c.info.id.clone();
        Some(if let Some(c) = self.interrupted {
            Basis::Interrupted { commit: id(c) }
        } else if let Some(lost) = &self.lost {
            Basis::Lost {
                commit: lost.clone(),
            }
        } else if let Some((from, to)) = &self.project_changed {
            Basis::ProjectChanged {
                from: from.clone(),
                to: to.clone(),
            }
        } else if self.verify {
            Basis::Verify
        } else if let Some(commit) = &self.after_command {
            Basis::AfterCommand {
                commit: commit.clone(),
            }
        } else if self.deployed.is_none() {
            Basis::First
        } else {
            return None;
        })
    }
}

/// Decides what to write and delete. Normally from the tree-to-tree diff of
/// the deployed commit and this one; every file is compared with the site
/// instead on `--verify`, after an interrupted sync or a custom command,
/// and when the deployed commit is gone. A file pushdeploy did not write
/// where the commit has one is taken over when it is equal, and refused
/// when it differs (unless `take_over`).
pub fn plan(commit: &Commit, before: &Before, site: &Path) -> Result<SyncPlan> {
    let site_dir = SiteDir::open(site)?;
    let plan = match before.full_basis() {
        None => {
            let deployed = before.deployed.expect("full_basis checks it");
            match commit.diff_from(deployed)? {
                Some(changes) => diff_plan(commit, deployed, changes, before, &site_dir)?,
                None => full_plan(commit, Basis::NotComparable, before, &site_dir)?,
            }
        }
        Some(basis) => full_plan(commit, basis, before, &site_dir)?,
    };
    check_site(&plan, site, &site_dir)?;
    Ok(plan)
}

impl SyncPlan {
    /// Fails when the site has files that pushdeploy did not write and that
    /// differ from the commit's, naming them and how to accept the commit's.
    /// The dry run prints the plan first; a deployment fails in its plan.
    pub fn check_refused(&self) -> Result<()> {
        const SHOWN: usize = 5;
        let refused = &self.refused;
        let Some(first) = refused.first() else {
            return Ok(());
        };
        let accept = "move them away, or deploy with -c takeOverFiles=true (or git config deploy.takeOverFiles true) to replace them with the commit's; nothing was written";
        if refused.len() == 1 {
            bail!(
                "commit entry {}: the site has this file, which pushdeploy did not write, and it differs from the commit's; {}",
                first,
                accept.replace("them", "it")
            );
        }
        // The commit's names have no control characters: checked when read.
        let mut names: Vec<String> = refused.iter().take(SHOWN).cloned().collect();
        if refused.len() > SHOWN {
            names.push(format!("and {} more", refused.len() - SHOWN));
        }
        bail!(
            "commit entries {}: the site has these files, which pushdeploy did not write, and they differ from the commit's; {accept}",
            names.join(", ")
        )
    }
}

/// What to do with a commit entry that pushdeploy did not write, where the
/// site may already have a file of its own.
fn unowned(
    commit: &Commit,
    entry: Entry,
    why: Why,
    before: &Before,
    site: &SiteDir,
    plan: &mut SyncPlan,
) -> Result<()> {
    let removed_first = before.put_back.is_some_and(|p| p.contains(&entry.path));
    match site.meta(&entry.path)? {
        Some(meta) if meta.kind != site_dir::Kind::Dir && !removed_first => {
            if matches_site(commit, &entry, site)? {
                plan.taken_over.push(entry.path);
            } else if before.take_over {
                plan.write.push(Change::of(entry, Why::TakeOver));
            } else {
                plan.refused.push(entry.path);
            }
        }
        // Nothing there, or a directory (which check_site looks into).
        _ => plan.write.push(Change::of(entry, why)),
    }
    Ok(())
}

/// From the tree-to-tree diff: the files this commit adds, changes and drops.
fn diff_plan(
    commit: &Commit,
    deployed: &Commit,
    changes: crate::commit::Changes,
    before: &Before,
    site: &SiteDir,
) -> Result<SyncPlan> {
    let mut plan = SyncPlan {
        basis: Basis::Diff {
            from: deployed.info.id.clone(),
        },
        write: Vec::new(),
        delete: changes.deleted,
        unchanged: None,
        taken_over: Vec::new(),
        refused: Vec::new(),
        skipped: changes.skipped,
        sweep: BTreeSet::new(),
        take_over: before.take_over,
    };
    for (entry, added) in changes.changed {
        check_entry(commit, &entry)?;
        if added {
            unowned(commit, entry, Why::Added, before, site, &mut plan)?;
        } else {
            plan.write.push(Change::of(entry, Why::Changed));
        }
    }
    Ok(plan)
}

/// Every file of the commit compared with the site (or, onto an empty site,
/// written).
fn full_plan(commit: &Commit, basis: Basis, before: &Before, site: &SiteDir) -> Result<SyncPlan> {
    let (entries, skipped) = commit.entries()?;
    // The files pushdeploy wrote: the earlier commits' (only their paths
    // are kept: memory stays near one record per file).
    let deployed = before.deployed.filter(|_| before.command_files.is_none());
    let olds: Vec<&Commit> = [deployed, before.interrupted]
        .into_iter()
        .flatten()
        .collect();
    let mut written: HashSet<String> = before.command_files.iter().flatten().cloned().collect();
    for old in &olds {
        for entry in old.entries().map(|(e, _)| e).unwrap_or_default() {
            written.insert(entry.path);
        }
    }
    // Nothing to compare with on an empty site: every file is new.
    let empty = basis == Basis::First && site_is_empty(site)?;
    let mut plan = SyncPlan {
        basis,
        write: Vec::new(),
        delete: Vec::new(),
        unchanged: (!empty).then_some(0),
        taken_over: Vec::new(),
        refused: Vec::new(),
        skipped,
        sweep: BTreeSet::new(),
        take_over: before.take_over,
    };
    if empty && written.is_empty() {
        // A first deployment onto an empty site: every file is written, and
        // the plan takes the entries' own vector (collected in place).
        for entry in &entries {
            check_entry(commit, entry)?;
        }
        plan.write = entries
            .into_iter()
            .map(|e| Change::of(e, Why::Added))
            .collect();
        return Ok(plan);
    }
    for entry in entries {
        check_entry(commit, &entry)?;
        if before.interrupted.is_some() {
            plan.sweep.insert(split(&entry.path).0.to_string());
        }
        // Each path of the commit is taken out of `written` (it occurs
        // once): what is left is what the commit no longer has, without a
        // second set of every path.
        let was_written = written.remove(&entry.path);
        if empty {
            plan.write.push(Change::of(entry, Why::Added));
        } else if !was_written {
            unowned(commit, entry, Why::Added, before, site, &mut plan)?;
        } else if matches_site(commit, &entry, site)? {
            *plan.unchanged.get_or_insert(0) += 1;
        } else {
            plan.write.push(Change::of(entry, Why::Repair));
        }
    }
    let gone: BTreeSet<String> = written.into_iter().collect();
    plan.delete = gone.into_iter().collect();
    Ok(plan)
}

/// The files a custom command's output holds, in an order that keeps each
/// directory's files together (as [`apply`] wants them). Refuses what a
/// commit may not hold either: the env, pushdeploy's own names, symlinks
/// out of the site, and anything that is not a file, symlink or directory.
fn output_entries(output: &Path) -> Result<Vec<Entry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = Vec::new();
    let mut dirs = vec![String::new()];
    while let Some(rel) = dirs.pop() {
        let mut names: Vec<(String, std::fs::FileType, u32)> = Vec::new();
        for item in fs_err::read_dir(output.join(&rel))? {
            let item = item?;
            let Ok(name) = item.file_name().into_string() else {
                bail!(
                    "DEPLOYMENT_TARGET: the command wrote {}, whose name is not UTF-8; nothing was written to the site",
                    shown(item.path().as_os_str().as_encoded_bytes())
                );
            };
            let meta = fs_err::symlink_metadata(item.path())?;
            names.push((name, meta.file_type(), meta.permissions().mode()));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, kind, mode) in names {
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let kind = if kind.is_dir() {
                if rel.is_empty() {
                    check_output_top(&name, &path)?;
                }
                subdirs.push(path);
                continue;
            } else if kind.is_symlink() {
                Kind::Symlink
            } else if kind.is_file() && mode & 0o111 != 0 {
                Kind::Executable
            } else if kind.is_file() {
                Kind::File
            } else {
                bail!(
                    "DEPLOYMENT_TARGET: the command made {path}, which is not a file, symlink or directory; nothing was written to the site"
                );
            };
            let entry = Entry {
                path,
                kind,
                blob: git2::Oid::ZERO_SHA1,
            };
            check_output_entry(output, &entry)?;
            entries.push(entry);
        }
        dirs.extend(subdirs.into_iter().rev());
    }
    Ok(entries)
}

fn check_output_top(top: &str, path: &str) -> Result<()> {
    if ENV_NAMES.contains(&top) || top.starts_with(PUSHDEPLOY_PREFIX) {
        bail!(
            "DEPLOYMENT_TARGET: the command wrote {path}; {top} at the top of the site is pushdeploy's (the env, kept files), not the command's; nothing was written to the site"
        );
    }
    Ok(())
}

fn check_output_entry(output: &Path, entry: &Entry) -> Result<()> {
    let top = entry.path.split('/').next().unwrap_or("");
    let name = split(&entry.path).1;
    check_output_top(top, &entry.path)?;
    if name.starts_with(SYNC_TEMP_PREFIX) {
        bail!(
            "DEPLOYMENT_TARGET: the command wrote {}; names starting with {SYNC_TEMP_PREFIX} are pushdeploy's temp files; nothing was written to the site",
            entry.path
        );
    }
    if entry.kind == Kind::Symlink {
        use std::os::unix::ffi::OsStrExt;
        let target = fs_err::read_link(output.join(&entry.path))?;
        if let Err(why) = check_link_target(&entry.path, target.as_os_str().as_bytes()) {
            bail!(
                "DEPLOYMENT_TARGET: the command made the symlink {} to {} which {why}; nothing was written to the site",
                entry.path,
                target.display()
            );
        }
    }
    Ok(())
}

/// Whether the site already holds the output's entry exactly.
fn output_matches_site(output: &Path, entry: &Entry, site: &SiteDir) -> Result<bool> {
    let Some((dir, name)) = site.parent(&entry.path)? else {
        return Ok(false);
    };
    let Some(meta) = dir.meta(name)? else {
        return Ok(false);
    };
    let ours = output.join(&entry.path);
    Ok(match entry.kind {
        Kind::Symlink => {
            use std::os::unix::ffi::OsStrExt;
            meta.kind == site_dir::Kind::Symlink
                && dir.read_link(name).is_ok_and(|t| {
                    fs_err::read_link(&ours).is_ok_and(|o| o.as_os_str().as_bytes() == t)
                })
        }
        // Opened first, then checked (see `Dir::open_file`): the type seen
        // by the stat above may have changed since.
        Kind::File | Kind::Executable => dir.open_file(name).is_ok_and(|(file, meta)| {
            let executable = meta.mode & 0o111 != 0;
            executable == (entry.kind == Kind::Executable)
                && same_file_bytes(&ours, file).unwrap_or(false)
        }),
    })
}

fn same_file_bytes(ours: &Path, theirs: std::fs::File) -> Result<bool> {
    let ours = site_dir::open_regular(ours)?;
    if ours.metadata()?.len() != theirs.metadata()?.len() {
        return Ok(false);
    }
    let (mut a, mut b) = (io::BufReader::new(ours), io::BufReader::new(theirs));
    let (mut x, mut y) = (vec![0; 64 * 1024], vec![0; 64 * 1024]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut [0])? == 0);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// What a custom command's output changes in the site: every file of
/// `output` (the command's `DEPLOYMENT_TARGET`) that differs from the
/// site's is written; the files of `owned` (what pushdeploy deployed
/// before) that the output no longer has are deleted. Nothing else in the
/// site is touched: files the app made stay, unless the output has a file
/// at their path, which then replaces theirs (kept until the deployment
/// succeeds). Also returns the output's paths: what the site then holds of
/// this deployment.
pub fn plan_output(
    output: &Path,
    owned: &BTreeSet<String>,
    site: &Path,
) -> Result<(SyncPlan, Vec<String>)> {
    let site_dir = SiteDir::open(site)?;
    let mut plan = SyncPlan {
        basis: Basis::Command,
        write: Vec::new(),
        delete: Vec::new(),
        unchanged: Some(0),
        taken_over: Vec::new(),
        refused: Vec::new(),
        skipped: Vec::new(),
        sweep: BTreeSet::new(),
        // The output replaces the app's files at its names (see above).
        take_over: true,
    };
    let mut paths = Vec::new();
    for entry in output_entries(output)? {
        paths.push(entry.path.clone());
        if output_matches_site(output, &entry, &site_dir)? {
            *plan.unchanged.get_or_insert(0) += 1;
            continue;
        }
        let theirs = site_dir
            .meta(&entry.path)?
            .is_some_and(|m| m.kind != site_dir::Kind::Dir);
        let why = match (owned.contains(&entry.path), theirs) {
            (true, _) => Why::Changed,
            (false, true) => Why::TakeOver,
            (false, false) => Why::Added,
        };
        plan.write.push(Change::of(entry, why));
    }
    let wanted: HashSet<&String> = paths.iter().collect();
    plan.delete = owned
        .iter()
        .filter(|p| !wanted.contains(p))
        .cloned()
        .collect();
    check_site(&plan, site, &site_dir)?;
    Ok((plan, paths))
}

/// Copies the files of `owned` that the site holds (files and symlinks,
/// read through the site walk) into the empty directory `to`: the custom
/// command's `DEPLOYMENT_TARGET` starts as what the last deployment
/// deployed. A real copy (copy_file_range: a reflink where the file system
/// shares blocks), never a hard link, so a script that writes a file in
/// place cannot change the site's.
pub fn copy_owned(site: &Path, owned: &BTreeSet<String>, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let site = SiteDir::open(site)?;
    for path in owned {
        let Some((dir, name)) = site.parent(path)? else {
            continue;
        };
        let Some(meta) = dir.meta(name)? else {
            continue;
        };
        let dest = to.join(path);
        match meta.kind {
            site_dir::Kind::File => {
                if let Some(parent) = dest.parent() {
                    fs_err::create_dir_all(parent)?;
                }
                let (mut from, _) = dir.open_file(name)?;
                // std's File on both sides: io::copy then uses copy_file_range.
                let mut file = std::fs::File::create(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                io::copy(&mut from, &mut file)?;
                let mode = if meta.mode & 0o111 != 0 { 0o755 } else { 0o644 };
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            site_dir::Kind::Symlink => {
                use std::os::unix::ffi::OsStrExt;
                if let Some(parent) = dest.parent() {
                    fs_err::create_dir_all(parent)?;
                }
                let target = dir.read_link(name)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &dest)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the site holds nothing but the env and pushdeploy's own names.
fn site_is_empty(site: &SiteDir) -> Result<bool> {
    Ok(site
        .root()
        .entries()?
        .iter()
        .all(|(name, _)| ENV_NAMES.contains(&name.as_str()) || name.starts_with(PUSHDEPLOY_PREFIX)))
}

/// Whether the site already holds this entry exactly: same kind, same
/// executable bit, same bytes (or symlink target). Read through the site
/// walk, never through a symlink.
fn matches_site(commit: &Commit, entry: &Entry, site: &SiteDir) -> Result<bool> {
    let Some((dir, name)) = site.parent(&entry.path)? else {
        return Ok(false);
    };
    let Some(meta) = dir.meta(name)? else {
        return Ok(false);
    };
    Ok(match entry.kind {
        Kind::Symlink => {
            meta.kind == site_dir::Kind::Symlink
                && dir.read_link(name).is_ok_and(|t| {
                    commit
                        .blob(entry.blob)
                        .is_ok_and(|b| b.content() == t.as_slice())
                })
        }
        // Opened first, then checked (see `Dir::open_file`).
        Kind::File | Kind::Executable => dir.open_file(name).is_ok_and(|(file, meta)| {
            let executable = meta.mode & 0o111 != 0;
            executable == (entry.kind == Kind::Executable) && same_bytes(commit, entry.blob, file)
        }),
    })
}

/// Whether a file holds exactly a blob's bytes, compared as the blob streams.
fn same_bytes(commit: &Commit, blob: git2::Oid, file: std::fs::File) -> bool {
    struct Compare {
        file: io::BufReader<std::fs::File>,
        buf: Vec<u8>,
    }
    impl io::Write for Compare {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.buf.resize(data.len(), 0);
            self.file.read_exact(&mut self.buf)?;
            if self.buf != data {
                return Err(io::Error::other("differs"));
            }
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut compare = Compare {
        file: io::BufReader::new(file),
        buf: Vec::new(),
    };
    commit.write_blob(blob, &mut compare).is_ok()
        && compare.file.read(&mut [0]).is_ok_and(|n| n == 0)
}

/// Refuses what the sync must never do: write into the env or pushdeploy's
/// own names, or make a symlink that points outside the site.
fn check_entry(commit: &Commit, entry: &Entry) -> Result<()> {
    let top = entry.path.split('/').next().unwrap_or("");
    if ENV_NAMES.contains(&top) || top.starts_with(ENV_DIR_PREFIX) {
        bail!(
            "commit entry {}: the commit contains a virtual environment ({top}/); remove it from the repository (git rm -r --cached {top}) and list it in .gitignore",
            entry.path
        );
    }
    if top.starts_with(PUSHDEPLOY_PREFIX) && !top.starts_with(SYNC_TEMP_PREFIX) {
        bail!(
            "commit entry {}: names starting with {PUSHDEPLOY_PREFIX} at the top are pushdeploy's own (kept files, envs); rename it",
            entry.path
        );
    }
    let name = split(&entry.path).1;
    if name.starts_with(SYNC_TEMP_PREFIX) {
        bail!(
            "commit entry {}: names starting with {SYNC_TEMP_PREFIX} are pushdeploy's temp files, which a sync removes; rename it",
            entry.path
        );
    }
    if entry.kind == Kind::Symlink {
        let blob = commit.blob(entry.blob)?;
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

/// What the site itself must allow, checked in the plan (so the dry run says
/// it too, and nothing is written when it fails): paths that fit, and no
/// file or directory of the app's own where the commit needs the name.
fn check_site(plan: &SyncPlan, site: &Path, site_dir: &SiteDir) -> Result<()> {
    check_lengths(plan, site)?;
    if plan.basis == Basis::First && plan.unchanged.is_none() {
        return Ok(()); // An empty site: nothing can be in the way.
    }
    check_files_in_the_way(plan, site_dir)?;
    check_directories_in_the_way(plan, site_dir)
}

/// Fails where the commit has a directory and the site a file or symlink that
/// pushdeploy did not write (one it wrote is deleted first): it is the app's.
fn check_files_in_the_way(plan: &SyncPlan, site: &SiteDir) -> Result<()> {
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
            match site.meta(&dir)?.map(|m| m.kind) {
                Some(site_dir::Kind::Dir) => continue,
                Some(_) if deleted.contains(dir.as_str()) => break,
                Some(kind) => {
                    let what = if kind == site_dir::Kind::Symlink {
                        "a symlink"
                    } else {
                        "a file"
                    };
                    bail!(
                        "commit entry {}: the site has {what} {dir} that pushdeploy did not write, where the commit has a directory; move it away, or rename the directory; nothing was written",
                        change.path
                    );
                }
                None => break,
            }
        }
    }
    Ok(())
}

/// Fails, before anything is written, when a path in the site would be too
/// long for the file system: the commit's paths were checked on their own,
/// the site's path adds to them. A temp file beside each file must fit too.
fn check_lengths(plan: &SyncPlan, site: &Path) -> Result<()> {
    // `.pushdeploy-tmp-<tag>-<unique>`: 16 + 9 + up to 23.
    const TEMP_NAME: usize = 48;
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
fn check_directories_in_the_way(plan: &SyncPlan, site: &SiteDir) -> Result<()> {
    let deleted: BTreeSet<&str> = plan.delete.iter().map(String::as_str).collect();
    for change in &plan.write {
        // Its parent missing or replaced by a directory: nothing is there yet.
        let Some(dir) = site.dir(&change.path)? else {
            continue;
        };
        let mut dirs = vec![dir];
        while let Some(dir) = dirs.pop() {
            let mut empty = true;
            for (name, kind) in dir.entries()? {
                empty = false;
                let rel = dir.rel_of(&name);
                if kind == site_dir::Kind::Dir {
                    if let Some(sub) = dir.open_dir(&name)? {
                        dirs.push(sub);
                    }
                } else if !deleted.contains(rel.as_str()) && !name.starts_with(SYNC_TEMP_PREFIX) {
                    bail!(
                        "commit entry {}: the site has a directory there, holding {rel} that pushdeploy did not write; move it away, or rename the entry; nothing was written",
                        change.path
                    );
                }
            }
            if empty {
                bail!(
                    "commit entry {}: the site has a directory there, holding the empty directory {} that pushdeploy did not make; remove it, or rename the entry; nothing was written",
                    change.path,
                    dir.rel
                );
            }
        }
    }
    Ok(())
}

/// Syncs the site to the plan as one deployment's step: the commit is
/// pinned and recorded as pending (an interrupted sync is recognised), the
/// changes are made through a journal, and the journal is returned for the
/// deployment to finish or roll back. A sync that fails half-way is undone
/// here, and its error returned.
pub fn run<'r>(
    plan: &SyncPlan,
    commit: &Commit<'r>,
    manifest: &Manifest,
    state_dir: &Path,
) -> Result<Journal<'r>> {
    run_from(plan, commit, Source::Commit(commit), manifest, state_dir)
}

/// [`run`] for a plan made by [`plan_output`]: the files are copied from
/// the custom command's output directory; `commit` is the one it deployed.
pub fn run_output<'r>(
    plan: &SyncPlan,
    commit: &Commit<'r>,
    output: &Path,
    manifest: &Manifest,
    state_dir: &Path,
) -> Result<Journal<'r>> {
    run_from(plan, commit, Source::Dir(output), manifest, state_dir)
}

fn run_from<'r>(
    plan: &SyncPlan,
    commit: &Commit<'r>,
    source: Source,
    manifest: &Manifest,
    state_dir: &Path,
) -> Result<Journal<'r>> {
    let store = manifest::Store::new(state_dir);
    // Pinned by refs, so git keeps the commits whose files are in the site.
    commit.pin(PENDING_REF)?;
    let mut journal = Journal::create(
        commit.repo(),
        state_dir,
        SiteDir::open(&manifest.site)?,
        manifest,
    )?;
    store.begin(manifest)?;
    let hook = TestHook::from_env();
    if let TestHook::Pause(0, file) = &hook {
        journal.pause_in_finish = Some(file.clone());
    }
    match apply(plan, source, Target::Journal(&mut journal), hook) {
        Ok(()) => {
            journal.synced()?;
            Ok(journal)
        }
        Err(e) => {
            let undone = journal.rollback()?;
            if undone.problems.is_empty() {
                Err(e.context("the sync failed; the site's files are as they were before it"))
            } else {
                Err(e.context(format!(
                    "the sync failed, and putting the files back failed too: {}",
                    undone.problems.join("; ")
                )))
            }
        }
    }
}

/// Writes every file of the commit into an empty directory (the custom
/// command's checkout).
pub fn checkout(commit: &Commit, dir: &Path) -> Result<()> {
    let plan = SyncPlan {
        write: commit
            .all_entries()?
            .into_iter()
            .map(|e| Change::of(e, Why::Added))
            .collect(),
        delete: Vec::new(),
        unchanged: None,
        taken_over: Vec::new(),
        refused: Vec::new(),
        skipped: Vec::new(),
        sweep: BTreeSet::new(),
        take_over: false,
        basis: Basis::First,
    };
    let site = SiteDir::open(dir)?;
    apply(
        &plan,
        Source::Commit(commit),
        Target::Plain(&site),
        TestHook::None,
    )
}

/// Where the changes go: through a journal (a deployment), or straight
/// into a directory nothing else uses (a checkout).
enum Target<'a, 'j> {
    Journal(&'a mut Journal<'j>),
    Plain(&'a SiteDir),
}

/// See [`TEST_HOOK`].
enum TestHook {
    None,
    Fail(usize),
    Pause(usize, std::path::PathBuf),
}

impl TestHook {
    fn from_env() -> TestHook {
        // Read here rather than through the settings: it is no setting, and
        // only the tests set it.
        let Some(value) = std::env::var_os(TEST_HOOK) else {
            return TestHook::None;
        };
        let value = value.to_string_lossy().into_owned();
        let mut parts = value.splitn(3, ':');
        let (what, n, rest) = (parts.next(), parts.next(), parts.next());
        match (what, n.and_then(|n| n.parse().ok()), rest) {
            (Some("fail"), Some(n), None) => TestHook::Fail(n),
            (Some("pause"), Some(n), Some(file)) => TestHook::Pause(n, file.into()),
            _ => TestHook::None,
        }
    }

    /// Called before change `n` (counted from 1).
    fn before(&self, n: usize) -> Result<()> {
        match self {
            TestHook::Fail(at) if *at == n => bail!("test fault before change {n}"),
            TestHook::Pause(at, file) if *at == n => pause_at(file),
            _ => Ok(()),
        }
    }
}

/// Test-only (see [`TEST_HOOK`]): creates `file` and waits until it is gone.
pub(crate) fn pause_at(file: &Path) -> Result<()> {
    fs_err::write(file, "")?;
    while file.exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// Carries out the plan: temp files a killed sync left first, then
/// deletions (a file may become a directory), then writes.
fn apply(plan: &SyncPlan, source: Source, target: Target, hook: TestHook) -> Result<()> {
    // Temp names carry the repository's tag (see `journal::owner_tag`).
    let temp_prefix = match &target {
        Target::Journal(journal) => format!("{SYNC_TEMP_PREFIX}{}-", journal.tag()),
        Target::Plain(_) => SYNC_TEMP_PREFIX.to_string(),
    };
    std::thread::scope(|scope| {
        let writer = Writer {
            source,
            target,
            temp_prefix,
            cached: None,
            hook,
            changes: 0,
            take_over: plan.take_over,
            ahead: read_ahead(scope, source, plan),
        };
        // The writer (and with it the read-ahead's end of the channel) is
        // dropped before the scope waits for the reading thread.
        apply_with(plan, writer)
    })
}

/// Files read ahead in another thread (see [`ReadAhead`]), where there are
/// enough of them to be worth one.
fn read_ahead<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    source: Source<'s, '_>,
    plan: &'s SyncPlan,
) -> Option<ReadAhead> {
    const WORTH_A_THREAD: usize = 64;
    let Source::Commit(commit) = source else {
        return None;
    };
    let files = plan.write.iter().filter(|c| c.kind != Kind::Symlink);
    files.clone().nth(WORTH_A_THREAD)?;
    let ids = files.map(|c| c.blob);
    ReadAhead::start(scope, commit.take_packs(), ids)
}

fn apply_with(plan: &SyncPlan, mut writer: Writer) -> Result<()> {
    writer.sweep_temp_files(plan)?;
    for path in &plan.delete {
        writer
            .delete(path)
            .with_context(|| format!("deleting {path}"))?;
    }
    writer.remove_emptied_dirs(&plan.delete)?;
    for group in plan
        .write
        .chunk_by(|a, b| split(&a.path).0 == split(&b.path).0)
    {
        writer.write_group(group)?;
    }
    Ok(())
}

/// Where the files' contents come from: the commit's blobs, or the custom
/// command's output directory (a change's `path` below it).
#[derive(Clone, Copy)]
enum Source<'a, 'c> {
    Commit(&'a Commit<'c>),
    Dir(&'a Path),
}

impl Source<'_, '_> {
    fn link_target(&self, change: &Change) -> Result<Vec<u8>> {
        match self {
            Source::Commit(commit) => Ok(commit.blob(change.blob)?.content().to_vec()),
            Source::Dir(dir) => {
                use std::os::unix::ffi::OsStrExt;
                let target = fs_err::read_link(dir.join(&change.path))?;
                Ok(target.as_os_str().as_bytes().to_vec())
            }
        }
    }

    fn write(&self, change: &Change, file: &mut std::fs::File) -> Result<()> {
        match self {
            Source::Commit(commit) => commit.write_blob(change.blob, file),
            Source::Dir(dir) => {
                // A file to file copy: copy_file_range, which shares the
                // blocks (a reflink) where the file system can.
                let path = dir.join(&change.path);
                let mut from = site_dir::open_regular(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                io::copy(&mut from, file)?;
                Ok(())
            }
        }
    }
}

/// Makes the changes, each relative to its parent directory's handle.
struct Writer<'a, 'c, 'j> {
    source: Source<'a, 'c>,
    target: Target<'a, 'j>,
    /// The directory of the last write: writes come sorted by path, so
    /// the next one is often in the same directory.
    cached: Option<Dir>,
    hook: TestHook,
    changes: usize,
    /// See [`SyncPlan::take_over`].
    take_over: bool,
    temp_prefix: String,
    /// The files' contents, read in another thread (see [`ReadAhead`]).
    ahead: Option<ReadAhead>,
}

impl Writer<'_, '_, '_> {
    fn site(&self) -> &SiteDir {
        match &self.target {
            Target::Journal(j) => j.site(),
            Target::Plain(s) => s,
        }
    }

    /// Writes a file's content: read ahead, or read now.
    fn write_content(&mut self, change: &Change, file: &mut std::fs::File) -> Result<()> {
        let ahead = self.ahead.as_mut().and_then(|a| a.take(&change.blob));
        match ahead {
            Some(data) => Ok(io::Write::write_all(file, &data)?),
            None => self.source.write(change, file),
        }
    }

    fn next_change(&mut self) -> Result<()> {
        self.changes += 1;
        self.hook.before(self.changes)
    }

    /// Removes the temp files that a killed sync left: in the directories
    /// this one writes to or deletes from, and after an interrupted sync in
    /// every directory of the commit.
    fn sweep_temp_files(&self, plan: &SyncPlan) -> Result<()> {
        // Only this repository's: another one that deploys into the same
        // site may be writing its own meanwhile.
        let Target::Journal(journal) = &self.target else {
            return Ok(()); // A new directory: nothing to sweep.
        };
        let tag = journal.tag();
        let dirs: BTreeSet<&str> = plan
            .write
            .iter()
            .map(|c| c.path.as_str())
            .chain(plan.delete.iter().map(String::as_str))
            .map(|p| split(p).0)
            .chain(plan.sweep.iter().map(String::as_str))
            .collect();
        for dir in dirs {
            if let Some(dir) = self.site().dir(dir)? {
                dir.remove_temp_files(|n| crate::journal::is_ours(n, SYNC_TEMP_PREFIX, tag))?;
            }
        }
        Ok(())
    }

    fn delete(&mut self, rel: &str) -> Result<()> {
        // A parent that is not a real directory: the file is not ours to delete.
        let Some((dir, name)) = self.site().parent(rel)? else {
            return Ok(());
        };
        match dir.meta(name)? {
            Some(meta) if meta.kind != site_dir::Kind::Dir => {}
            _ => return Ok(()),
        }
        self.next_change()?;
        match &mut self.target {
            Target::Journal(journal) => journal.delete(&dir, name)?,
            Target::Plain(_) => dir.unlink(name)?,
        }
        // A source added again later must not meet this one's bytecode.
        Ok(dir.forget_bytecode([name])?)
    }

    /// Removes the directories that the deletions left empty, deepest first.
    fn remove_emptied_dirs(&mut self, deleted: &[String]) -> Result<()> {
        let mut dirs = BTreeSet::new();
        for path in deleted {
            let mut rel = path.as_str();
            while let Some((dir, _)) = rel.rsplit_once('/') {
                dirs.insert(dir);
                rel = dir;
            }
        }
        // Reverse order visits a directory's subdirectories before it.
        for rel in dirs.into_iter().rev() {
            let Some((parent, name)) = self.site().parent(rel)? else {
                continue;
            };
            let Some(dir) = parent.open_dir(name)? else {
                continue;
            };
            if !dir.entries()?.is_empty() {
                continue;
            }
            let mode = parent.meta(name)?.map_or(0o755, |m| m.mode);
            match &mut self.target {
                Target::Journal(journal) => {
                    journal.rmdir(&parent, name, mode)?;
                }
                Target::Plain(_) => {
                    let _ = parent.rmdir(name);
                }
            }
        }
        Ok(())
    }

    /// The directory `rel`, made (with its parents) where it is missing.
    /// A name on the way that is not a real directory stops the sync: the
    /// plan saw a directory or nothing there, so the site changed meanwhile.
    /// Also says whether the sync made the directory itself just now: then
    /// nothing the plan saw is in it.
    fn parents(&mut self, rel: &str) -> Result<(Dir, bool)> {
        if let Some(dir) = self.cached.take_if(|d| d.rel == rel) {
            return Ok((dir, false));
        }
        let mut dir = self.site().root().try_clone()?;
        if rel.is_empty() {
            return Ok((dir, false));
        }
        let mut made = false;
        for name in rel.split('/') {
            made = false;
            if let Some(next) = dir.open_dir(name)? {
                dir = next;
                continue;
            }
            if dir.meta(name)?.is_some() {
                bail!(
                    "{} is no longer a directory: the site changed during the sync",
                    dir.rel_of(name)
                );
            }
            match &mut self.target {
                Target::Journal(journal) => journal.mkdir(&dir, name)?,
                Target::Plain(_) => dir.mkdir(name, 0o777)?,
            }
            dir = dir
                .open_dir(name)?
                .with_context(|| format!("{} vanished as it was made", dir.rel_of(name)))?;
            made = true;
        }
        Ok((dir, made))
    }

    /// Writes changes that share a directory.
    fn write_group(&mut self, group: &[Change]) -> Result<()> {
        let (rel, _) = split(&group[0].path);
        let (dir, made) = self
            .parents(rel)
            .with_context(|| format!("writing {}", group[0].path))?;
        // A checkout (no journal) writes in place anyway.
        let result = match made && matches!(self.target, Target::Journal(_)) {
            true => self.write_group_in_new(&dir, group),
            false => self.write_group_in(&dir, group),
        };
        self.cached = Some(dir);
        result
    }

    /// Writes changes into a directory the sync has just made (most of a
    /// first deployment): no name is looked up first (the plan saw nothing
    /// there, and RENAME_NOREPLACE still finds what appeared meanwhile),
    /// each file's inode comes from its open handle, and the files' journal
    /// lines go in one write before any of them takes its name.
    fn write_group_in_new(&mut self, dir: &Dir, group: &[Change]) -> Result<()> {
        let (files, links): (Vec<&Change>, Vec<&Change>) =
            group.iter().partition(|c| c.kind != Kind::Symlink);
        if let Target::Journal(journal) = &mut self.target {
            let names: Vec<&str> = files.iter().map(|c| split(&c.path).1).collect();
            journal.added_all(dir, &names)?;
        }
        let mut temps = Vec::with_capacity(files.len());
        for change in &files {
            self.next_change()?;
            let (temp, mut file) = dir
                .make_temp(&self.temp_prefix, |n| dir.create_new(n, change.kind.mode()))
                .with_context(|| format!("writing {}", change.path))?;
            self.write_content(change, &mut file)
                .with_context(|| format!("writing {}", change.path))?;
            let ino = std::os::unix::fs::MetadataExt::ino(&file.metadata()?);
            temps.push((temp, ino));
        }
        if let Target::Journal(journal) = &mut self.target {
            let made: Vec<(&str, u64)> = files
                .iter()
                .zip(&temps)
                .map(|(c, (_, ino))| (split(&c.path).1, *ino))
                .collect();
            journal.made_all(dir, &made)?;
        }
        for (change, (temp, _)) in files.iter().zip(&temps) {
            self.move_in_new(dir, temp, split(&change.path).1, change)
                .with_context(|| format!("writing {}", change.path))?;
        }
        for change in links {
            self.next_change()?;
            self.write_in(dir, split(&change.path).1, change, None)
                .with_context(|| format!("writing {}", change.path))?;
        }
        Ok(())
    }

    fn write_group_in(&mut self, dir: &Dir, group: &[Change]) -> Result<()> {
        let mut existing = Vec::with_capacity(group.len());
        for change in group {
            existing.push(dir.meta(split(&change.path).1)?);
        }
        // The new files' journal lines in one write, before any is made
        // (one write per file would cost a first deployment a system call
        // each). Each name occurs once, so undoing in any order is the same.
        if let Target::Journal(journal) = &mut self.target {
            let new: Vec<&str> = group
                .iter()
                .zip(&existing)
                .filter(|(c, meta)| meta.is_none() && c.kind != Kind::Symlink)
                .map(|(c, _)| split(&c.path).1)
                .collect();
            journal.added_all(dir, &new)?;
        }
        for (change, meta) in group.iter().zip(existing) {
            self.next_change()?;
            self.write_in(dir, split(&change.path).1, change, meta)
                .with_context(|| format!("writing {}", change.path))?;
        }
        Ok(())
    }

    fn write_in(
        &mut self,
        dir: &Dir,
        name: &str,
        change: &Change,
        mut existing: Option<site_dir::Meta>,
    ) -> Result<()> {
        // Decided again now, not only in the plan: a file that appeared
        // where the plan saw none (the app wrote it meanwhile) is the app's.
        if change.why == Why::Added && existing.is_some_and(|m| m.kind != site_dir::Kind::Dir) {
            self.appeared(change)?;
        }
        let mut removed_dir = false;
        // A directory where the commit now has a file: it must be empty by now.
        if let Some(meta) = existing.filter(|m| m.kind == site_dir::Kind::Dir) {
            let removed = match &mut self.target {
                Target::Journal(journal) => journal.rmdir(dir, name, meta.mode)?,
                Target::Plain(_) => dir.rmdir(name).is_ok(),
            };
            if !removed {
                bail!(
                    "{} is a directory with files that pushdeploy did not write, and the commit has a file there",
                    change.path
                );
            }
            existing = None;
            removed_dir = true;
        }
        let temp = match change.kind {
            Kind::Symlink => {
                let target = self.source.link_target(change)?;
                let link = std::ffi::OsStr::new(
                    std::str::from_utf8(&target).context("symlink target is not UTF-8")?,
                );
                let (temp, ()) = dir.make_temp(&self.temp_prefix, |n| dir.symlink(link, n))?;
                temp
            }
            Kind::File | Kind::Executable
                if existing.is_none() && matches!(self.target, Target::Plain(_)) =>
            {
                // A checkout into an empty directory: written in place.
                let mut file = dir.create_new(name, change.kind.mode())?;
                return self.write_content(change, &mut file);
            }
            Kind::File | Kind::Executable => {
                let (temp, mut file) =
                    dir.make_temp(&self.temp_prefix, |n| dir.create_new(n, change.kind.mode()))?;
                self.write_content(change, &mut file)?;
                temp
            }
        };
        let Some(_) = existing else {
            // A new name: written aside too, so that the journal knows the
            // file by its inode before it takes the name (an undo removes
            // that file, never one the app put there), and moved in only
            // where nothing appeared meanwhile. Its name was journaled with
            // its group, unless it is a symlink or a directory stood there.
            if let Target::Journal(journal) = &mut self.target {
                let ino = dir.meta(&temp)?.context("the temp file vanished")?.ino;
                if change.kind == Kind::Symlink || removed_dir {
                    journal.added(dir, name)?;
                }
                journal.made(dir, name, ino)?;
            }
            return self.move_in_new(dir, &temp, name, change);
        };
        if let Target::Journal(journal) = &mut self.target {
            let ino = dir.meta(&temp)?.context("the temp file vanished")?.ino;
            journal.keep_replaced(dir, name, ino)?;
        }
        // rename(2) replaces the name itself, never what a symlink there points to.
        dir.rename(&temp, dir, name)?;
        dir.forget_bytecode([name])?;
        Ok(())
    }

    /// Moves the file written aside as `temp` to the new name `name`, only
    /// where nothing appeared meanwhile (its name and inode journaled).
    fn move_in_new(&mut self, dir: &Dir, temp: &str, name: &str, change: &Change) -> Result<()> {
        match dir.rename_new(temp, dir, name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = dir.unlink(temp);
                if let Target::Journal(journal) = &mut self.target {
                    journal.not_added(dir, name)?;
                }
                self.appeared(change)?;
                let meta = dir.meta(name)?;
                self.write_in(dir, name, change, meta)
            }
            other => Ok(other?),
        }
    }

    /// A file appeared at `name`, which the plan saw free and the commit
    /// adds: refused, unless files are taken over (then the caller replaces
    /// it, kept until the deployment succeeds, as any file it replaces).
    fn appeared(&self, change: &Change) -> Result<()> {
        if self.take_over {
            return Ok(());
        }
        bail!(
            "commit entry {}: the site has this file, which pushdeploy did not write: it appeared after the plan (the app made it while the deployment ran); move it away, or deploy with -c takeOverFiles=true (or git config deploy.takeOverFiles true) to replace it with the commit's",
            change.path
        )
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basis_has_stable_tags_in_json() {
        let json = |b: Basis| serde_json::to_value(b).unwrap();
        assert_eq!(
            json(Basis::Diff { from: "abc".into() }),
            serde_json::json!({"kind": "diff", "from": "abc"})
        );
        assert_eq!(json(Basis::First), serde_json::json!({"kind": "first"}));
        assert_eq!(
            json(Basis::AfterCommand {
                commit: "abc".into()
            }),
            serde_json::json!({"kind": "afterCommand", "commit": "abc"})
        );
        assert_eq!(
            json(Basis::ProjectChanged {
                from: "a".into(),
                to: "b".into()
            }),
            serde_json::json!({"kind": "projectChanged", "from": "a", "to": "b"})
        );
        assert_eq!(json(Basis::Verify), serde_json::json!({"kind": "verify"}));
    }

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
