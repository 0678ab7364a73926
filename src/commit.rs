//! Reading a commit: its summary and its tree, with git2 and no work tree.
//! Every entry name is checked here, so no later step sees a path that could
//! leave the site.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use git2::{ObjectType, Oid, Repository, Tree};
use serde::Serialize;

use crate::error::{shown, usage};
use crate::pack::Packs;

#[derive(Debug, Clone, Serialize)]
pub struct CommitInfo {
    /// The id as text, as it is printed and stored.
    pub id: String,
    /// The id for git and the records, never parsed from text again.
    #[serde(skip)]
    pub oid: Oid,
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
    /// Its content's id (20 bytes, not 40 of text: a plan holds one a file).
    #[serde(serialize_with = "blob_text")]
    pub blob: Oid,
}

/// A blob id as text in the plan's JSON; none (a custom command's output
/// file, which has no blob) as "".
pub fn blob_text<S: serde::Serializer>(id: &Oid, s: S) -> Result<S::Ok, S::Error> {
    match id.is_zero() {
        true => s.serialize_str(""),
        false => s.collect_str(id),
    }
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
    /// The project folder `tree` is, if not the whole tree.
    project: Option<String>,
    /// See [`Commit::packed_only`].
    packed_only: std::cell::OnceCell<bool>,
    /// The repository's packs, opened when first read (see [`crate::pack`]).
    packs: std::cell::RefCell<Option<Packs>>,
}

/// A commit id's first seven characters, as git shows it (the whole id if
/// it is shorter, as in a damaged record).
pub fn short_id(id: &str) -> &str {
    id.get(..7).unwrap_or(id)
}

/// Top-level names that are never deployed (Kudu's rules).
pub const NOT_DEPLOYED: &[&str] = &[".git", ".deployment", "deploy.sh"];

impl<'r> Commit<'r> {
    /// Resolves a revision (`main`, a commit id, a prefix) to a commit.
    pub fn open(repo: &'r Repository, rev: &str) -> Result<Self> {
        // A revision that is not there is the caller's mistake (exit status 2),
        // said without libgit2's own wording.
        let object =
            repo.revparse_single(rev)
                .map_err(|_| match rev.strip_prefix("refs/heads/") {
                    Some(branch) => usage(format!(
                        "branch {branch}: nothing has been pushed to it yet"
                    )),
                    None => usage(format!(
                        "revision {}: not found in the repository",
                        shown(rev.as_bytes())
                    )),
                })?;
        let commit = object
            .peel_to_commit()
            .with_context(|| format!("revision {}: not a commit", shown(rev.as_bytes())))?;
        let id = commit.id().to_string();
        let info = CommitInfo {
            short: short_id(&id).to_string(),
            id,
            oid: commit.id(),
            author: commit.author().name().unwrap_or("unknown").to_string(),

            message: commit.summary().ok().flatten().unwrap_or("").to_string(),
        };
        let tree = commit.tree().context("reading the commit's tree")?;
        Ok(Commit {
            repo,
            info,
            top: tree.clone(),
            tree,
            project: None,
            packed_only: std::cell::OnceCell::new(),
            packs: std::cell::RefCell::new(None),
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
                Ok(Commit {
                    tree,
                    project: Some(dir.to_string()),
                    ..self
                })
            }
            None => bail!(
                "setting project: {} is not a folder of commit {}",
                shown(project.as_bytes()),
                self.info.short
            ),
        }
    }

    /// The project folder this commit deploys, if not the whole tree.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// The content of a file at the top of the whole commit (`.deployment`).
    pub fn read_top_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.read_file_in(&self.top, name)
    }

    /// The content of a file at the root of the tree, if there is one.
    pub fn read_root_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.read_file_in(&self.tree, name)
    }

    fn read_file_in(&self, tree: &Tree, name: &str) -> Result<Option<Vec<u8>>> {
        match tree.get_name(name) {
            // A symlink is read as the file the site will have there (a
            // link's own text is no file's content).
            Some(entry) if entry.filemode() == 0o120000 => {
                match self.resolve_in(tree, name, &mut Vec::new())? {
                    Resolved::File { content, .. } => Ok(Some(content)),
                    _ => Ok(None),
                }
            }
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

    /// The object id of a path in the tree (a file's blob, a folder's tree),
    /// if there is one: what a local package source's content is.
    pub fn path_id(&self, path: &str) -> Option<String> {
        let path = path.trim_start_matches("./").trim_end_matches('/');
        if path.is_empty() || path == "." {
            return Some(self.tree.id().to_string());
        }
        let entry = self.tree.get_path(std::path::Path::new(path)).ok()?;
        // A symlink counts by the file it leads to, which can change alone.
        if entry.filemode() == 0o120000
            && let Ok(Resolved::File { id, .. }) = self.resolve(path)
        {
            return Some(id.to_string());
        }
        Some(entry.id().to_string())
    }

    /// The folders at the root of the tree, by name (git's order).
    pub fn root_folders(&self) -> Vec<String> {
        self.tree
            .iter()
            .filter(|e| e.kind() == Some(ObjectType::Tree))
            .filter_map(|e| e.name().ok().map(str::to_string))
            .collect()
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
        check_dir(tree, prefix)?;
        for entry in tree.iter() {
            let name = std::str::from_utf8(entry.name_bytes()).expect("check_dir checked the name");
            let path = format!("{prefix}{name}");
            if only_deployed && prefix.is_empty() && NOT_DEPLOYED.contains(&name) {
                continue;
            }
            if entry.kind() == Some(ObjectType::Tree) {
                let sub = self
                    .repo
                    .find_tree(entry.id())
                    .with_context(|| format!("commit entry {path}: reading the directory"))?;
                self.walk(&sub, &format!("{path}/"), only_deployed, entries, skipped)?;
                continue;
            }
            match self.file(path, entry.id(), entry.filemode())? {
                Ok(file) => entries.push(file),
                Err(skip) => skipped.push(skip),
            }
        }
        Ok(())
    }

    /// A file entry of the tree, checked so that the sync cannot fail
    /// half-way on it; or, for a submodule, why it is skipped.
    fn file(&self, path: String, id: Oid, mode: i32) -> Result<Result<Entry, Skipped>> {
        if mode == 0o160000 {
            let reason = "a submodule (gitlink): its files are not in this repository".into();
            return Ok(Err(Skipped { path, reason }));
        }
        match self.object_kind(id) {
            Ok(ObjectType::Blob) => {}
            Ok(other) => {
                bail!(
                    "commit entry {path}: git records a file, but object {id} is a {other}; refused"
                )
            }
            Err(e) => bail!(
                "commit entry {path}: object {id} cannot be read: {}",
                e.message()
            ),
        }
        let kind = match mode {
            0o120000 => Kind::Symlink,
            0o100755 => Kind::Executable,
            0o100644 | 0o100664 => Kind::File,
            other => bail!("commit entry {path}: unexpected mode {other:o}; refused"),
        };
        if kind == Kind::Symlink
            && let Some((kind, id)) = self.out_of_project(&path, id)?
        {
            return Ok(Ok(Entry {
                path,
                kind,
                blob: id,
            }));
        }
        Ok(Ok(Entry {
            path,
            kind,
            blob: id,
        }))
    }

    /// A symlink of the project folder whose target climbs above the
    /// folder (`build.sh -> ../ops/scripts/build.sh`): in the site it would
    /// lead out of the site, so it deploys as the file of the commit it
    /// names (its kind and blob). `None` for every other link (no project,
    /// a target inside the folder, or one that leaves the commit: the sync's
    /// rules refuse those). A link to a folder out of the project is refused.
    fn out_of_project(&self, path: &str, id: Oid) -> Result<Option<(Kind, Oid)>> {
        let Some(project) = &self.project else {
            return Ok(None);
        };
        let target = self.repo.find_blob(id)?.content().to_vec();
        let Ok(target) = String::from_utf8(target) else {
            return Ok(None);
        };
        // Where the kernel would take it: climbing above the link's depth
        // leaves the site, whatever the names on the way are.
        let mut depth = path.matches('/').count() as i64;
        let climbs = target.split('/').any(|part| {
            match part {
                "" | "." => {}
                ".." => depth -= 1,
                _ => depth += 1,
            }
            depth < 0
        });
        if !climbs || target.starts_with('/') {
            return Ok(None);
        }
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let full = format!("{project}/{dir}/{target}");
        let mut links = Vec::new();
        match self.resolve_in(&self.top, &full, &mut links)? {
            Resolved::File { path: real, id, .. } => {
                let mode = self.top.get_path(Path::new(&real))?.filemode();
                let kind = match mode {
                    0o100755 => Kind::Executable,
                    _ => Kind::File,
                };
                Ok(Some((kind, id)))
            }
            Resolved::Folder { path: real } => bail!(
                "commit entry {path}: symlink to {} leads to the folder {real} of the commit, out of the project folder {project}; a link out of the project deploys as the file it names, never a folder (move the folder into the project, or link its files); refused",
                shown(target.as_bytes())
            ),
            _ => Ok(None),
        }
    }

    /// What changed from the deployed commit `old` to this one, found by
    /// comparing the two trees (git2 tree-to-tree): work in proportion to the
    /// change, not to the repository. Each directory holding a change is
    /// checked as `entries` checks every directory. `None` when libgit2
    /// cannot compare them (a tree git would not write): `entries` then says
    /// which entry is wrong. With `project`, the project's tree is also
    /// walked once (its tree objects only) for links that lead out of it.
    pub fn diff_from(&self, old: &Commit) -> Result<Option<Changes>> {
        let mut opts = git2::DiffOptions::new();
        opts.include_typechange(true);
        let Ok(diff) =
            self.repo
                .diff_tree_to_tree(Some(&old.tree), Some(&self.tree), Some(&mut opts))
        else {
            return Ok(None);
        };
        let mut changes = Changes::default();
        let mut checked = HashSet::new();
        for delta in diff.deltas() {
            let (old_file, new_file) = (delta.old_file(), delta.new_file());
            let deployed = |path: &[u8]| {
                let top = path.split(|b| *b == b'/').next().unwrap_or(b"");
                !NOT_DEPLOYED.iter().any(|n| n.as_bytes() == top)
            };
            if !old_file.id().is_zero() {
                let path = old_file.path_bytes().unwrap_or(b"");
                // A file the old commit had and this one lacks, or of another kind now.
                let gone = new_file.id().is_zero()
                    || (new_file.mode() == git2::FileMode::Commit)
                        != (old_file.mode() == git2::FileMode::Commit);
                if gone && deployed(path) && old_file.mode() != git2::FileMode::Commit {
                    // Checked when it was deployed; checked again, as it names what to delete.
                    if let Ok(path) = check_path(path) {
                        changes.deleted.push(path);
                    }
                }
            }
            if new_file.id().is_zero() {
                continue;
            }
            let raw = new_file.path_bytes().unwrap_or(b"");
            if !deployed(raw) {
                continue;
            }
            // The directories on the way ("", "a/", "a/b/"), each checked once,
            // before the names in it are used (its check names a bad entry whole).
            let ends = std::iter::once(0).chain(
                raw.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'/')
                    .map(|(i, _)| i + 1),
            );
            for end in ends {
                let dir = std::str::from_utf8(&raw[..end])
                    .expect("its names were checked with the directory above");
                if checked.insert(dir.to_string()) {
                    self.check_dir_at(dir)?;
                }
            }
            let path = check_path(raw)?;
            let added = delta.status() == git2::Delta::Added;
            match self.file(path, new_file.id(), i32::from(new_file.mode()))? {
                Ok(entry) => changes.changed.push((entry, added)),
                Err(skip) => changes.skipped.push(skip),
            }
        }
        // A link out of the project deploys as the file it names, which
        // can change outside the project while the link stays the same.
        if self.project.is_some() {
            let seen: HashSet<String> = changes
                .changed
                .iter()
                .map(|(e, _)| e.path.clone())
                .collect();
            for entry in self.links_out_of_project(&self.tree, "")? {
                let before = old.tree.get_path(Path::new(&entry.path)).ok();
                let same = match &before {
                    Some(b) => {
                        old.file(entry.path.clone(), b.id(), b.filemode())?.ok()
                            == Some(entry.clone())
                    }
                    None => false,
                };
                if !same && !seen.contains(&entry.path) {
                    changes.changed.push((entry, before.is_none()));
                }
            }
        }
        changes.changed.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        changes.deleted.sort();
        Ok(Some(changes))
    }

    /// The project's symlinks that lead out of it, as the files they name.
    fn links_out_of_project(&self, tree: &Tree, prefix: &str) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in tree.iter() {
            let Ok(name) = std::str::from_utf8(entry.name_bytes()) else {
                continue;
            };
            if prefix.is_empty() && NOT_DEPLOYED.contains(&name) {
                continue;
            }
            let path = format!("{prefix}{name}");
            match (entry.kind(), entry.filemode()) {
                (Some(ObjectType::Tree), _) => {
                    let sub = self.repo.find_tree(entry.id())?;
                    out.extend(self.links_out_of_project(&sub, &format!("{path}/"))?);
                }
                (Some(ObjectType::Blob), 0o120000) => {
                    if let Some((kind, id)) = self.out_of_project(&path, entry.id())? {
                        out.push(Entry {
                            path,
                            kind,
                            blob: id,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Checks the directory `dir` (`""` or `a/b/`) of the tree.
    fn check_dir_at(&self, dir: &str) -> Result<()> {
        let tree = if dir.is_empty() {
            self.tree.clone()
        } else {
            let entry = self.tree.get_path(Path::new(dir.trim_end_matches('/')))?;
            self.repo
                .find_tree(entry.id())
                .with_context(|| format!("commit entry {dir}: reading the directory"))?
        };
        check_dir(&tree, dir)
    }

    /// The repository the commit is read from.
    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// Another commit of the same repository, narrowed to `project`.
    pub fn sibling(&self, id: &str, project: Option<&str>) -> Result<Commit<'r>> {
        let other = Commit::open(self.repo, id)?;
        match project {
            Some(project) => other.with_project(project),
            None => Ok(other),
        }
    }

    /// Points `name` (a ref under refs/pushdeploy/) at this commit, so that
    /// git never prunes a commit whose files are in the site.
    pub fn pin(&self, name: &str) -> Result<()> {
        self.repo
            .reference(name, self.info.oid, true, "pushdeploy: deployed")
            .with_context(|| format!("writing ref {name}"))?;
        Ok(())
    }

    /// Writes a blob's content to `out`: streamed from a loose object,
    /// read whole from a pack (libgit2 cannot stream packed objects), so
    /// memory holds one file at most, never the repository.
    pub fn write_blob(&self, id: Oid, out: &mut impl std::io::Write) -> Result<()> {
        if let Some(object) = self.packed(|packs| packs.read(&id)) {
            if object.kind != ObjectType::Blob {
                bail!("object {id} is a {}, not a file's content", object.kind);
            }
            out.write_all(&object.data)?;
            return Ok(());
        }
        let odb = self.repo.odb()?;
        // libgit2 looks for a stream among the loose objects only (a system
        // call each): not tried where there are none.
        if !self.packed_only()
            && let Ok((mut reader, _, ObjectType::Blob)) = odb.reader(id)
        {
            std::io::copy(&mut reader, out).with_context(|| format!("reading blob {id}"))?;
            return Ok(());
        }
        out.write_all(self.blob(id)?.content())?;
        Ok(())
    }

    /// What `ask` finds in the repository's packs; `None` where they do not
    /// have it, or cannot say (libgit2 then reads it, and names any damage).
    fn packed<T>(&self, ask: impl FnOnce(&mut Packs) -> Result<Option<T>>) -> Option<T> {
        let mut packs = self.packs.borrow_mut();
        let packs = packs.get_or_insert_with(|| Packs::open(&self.repo.path().join("objects")));
        ask(packs).ok().flatten()
    }

    /// The repository's packs, for reading in another thread (see
    /// [`crate::pack::ReadAhead`]); the commit opens them again if it needs them.
    pub fn take_packs(&self) -> Packs {
        self.packs
            .take()
            .unwrap_or_else(|| Packs::open(&self.repo.path().join("objects")))
    }

    /// The type of an object: from the packs' headers where they have it
    /// (libgit2 would inflate the start of each delta of its chain), else
    /// from libgit2.
    fn object_kind(&self, id: Oid) -> Result<ObjectType, git2::Error> {
        if let Some(kind) = self.packed(|packs| packs.kind(&id)) {
            return Ok(kind);
        }
        self.repo.odb()?.read_header(id).map(|(_, kind)| kind)
    }

    /// Whether every object of the repository is in a pack: no loose
    /// object directory, no alternates, no object directory named by the
    /// environment. Asked once; a loose object written since is one this
    /// commit does not need (its objects were there when it was read).
    fn packed_only(&self) -> bool {
        *self.packed_only.get_or_init(|| {
            let objects = self.repo.path().join("objects");
            let elsewhere = ["GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES"]
                .iter()
                .any(|v| std::env::var_os(v).is_some())
                || std::fs::symlink_metadata(objects.join("info/alternates")).is_ok();
            let loose = |name: &str| name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
            !elsewhere
                && std::fs::read_dir(&objects).is_ok_and(|entries| {
                    !entries
                        .flatten()
                        .any(|e| loose(&e.file_name().to_string_lossy()))
                })
        })
    }

    /// A path of the deployed tree as the site will resolve it: symlinks of
    /// the commit followed (their `..` taken after the link, as the kernel
    /// does), never leaving the tree.
    /// A symlink that leads to no file of the commit is `Resolved::Link`:
    /// in the site it leads wherever the site has something by that name.
    pub fn resolve(&self, path: &str) -> Result<Resolved> {
        let mut links = Vec::new();
        let resolved = match self.resolve_in(&self.tree, path, &mut links)? {
            Resolved::Folder { .. } => Resolved::Missing,
            resolved => resolved,
        };
        Ok(match (resolved, links.into_iter().next()) {
            (Resolved::Missing, Some((link, target))) => Resolved::Link { link, target },
            (resolved, _) => resolved,
        })
    }

    /// `path` resolved in `tree` (the project folder, or the whole commit).
    fn resolve_in(
        &self,
        tree: &Tree,
        path: &str,
        links: &mut Vec<(String, String)>,
    ) -> Result<Resolved> {
        // Links the kernel follows before giving up (ELOOP).
        const MAX_LINKS: usize = 40;
        let mut todo: std::collections::VecDeque<String> =
            path.split('/').map(str::to_string).collect();
        let mut dirs: Vec<String> = Vec::new();
        while let Some(part) = todo.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    if dirs.pop().is_none() {
                        return Ok(Resolved::Outside);
                    }
                    continue;
                }
                _ => {}
            }
            let here: String = dirs.iter().map(|d| format!("{d}/")).collect::<String>() + &part;
            let Ok(entry) = tree.get_path(Path::new(&here)) else {
                return Ok(Resolved::Missing);
            };
            match (entry.kind(), entry.filemode()) {
                (Some(ObjectType::Tree), _) if todo.is_empty() => {
                    return Ok(Resolved::Folder { path: here });
                }
                (Some(ObjectType::Tree), _) => dirs.push(part),
                // A link of the project that leads out of it is, in the
                // site, the file it names (see `out_of_project`).
                (Some(ObjectType::Blob), 0o120000)
                    if std::ptr::eq(tree, &self.tree)
                        && let Some((_, id)) = self.out_of_project(&here, entry.id())? =>
                {
                    if !todo.is_empty() {
                        return Ok(Resolved::Missing);
                    }
                    let content = self.repo.find_blob(id)?.content().to_vec();
                    return Ok(Resolved::File {
                        path: here,
                        id,
                        content,
                        links: links.clone(),
                    });
                }
                (Some(ObjectType::Blob), 0o120000) => {
                    if links.len() >= MAX_LINKS {
                        return Ok(Resolved::Missing);
                    }
                    let target = self.repo.find_blob(entry.id())?.content().to_vec();
                    let Ok(target) = String::from_utf8(target) else {
                        return Ok(Resolved::Missing);
                    };
                    if target.starts_with('/') {
                        return Ok(Resolved::Outside);
                    }
                    for part in target.rsplit('/') {
                        todo.push_front(part.to_string());
                    }
                    links.push((here, target));
                }
                (Some(ObjectType::Blob), _) if todo.is_empty() => {
                    let content = self.repo.find_blob(entry.id())?.content().to_vec();
                    return Ok(Resolved::File {
                        path: here,
                        id: entry.id(),
                        content,
                        links: links.clone(),
                    });
                }
                _ => return Ok(Resolved::Missing),
            }
        }
        Ok(Resolved::Missing)
    }

    /// The content of a blob.
    pub fn blob(&self, id: Oid) -> Result<git2::Blob<'r>> {
        self.repo
            .find_blob(id)
            .with_context(|| format!("reading blob {id}"))
    }
}

/// Where a path of the tree leads (see `Commit::resolve`).
#[derive(Debug)]
pub enum Resolved {
    /// A file of the tree: its real path, blob, content, and the symlinks
    /// followed on the way (path, target).
    File {
        path: String,
        id: Oid,
        content: Vec<u8>,
        links: Vec<(String, String)>,
    },
    /// Not a file of the tree (missing, a loop of links).
    Missing,
    /// A folder of the tree.
    Folder { path: String },
    /// A symlink of the tree (the first followed, and its target as
    /// written) through which the path leads to no file of the tree.
    Link { link: String, target: String },
    /// Above the top of the tree, or an absolute link.
    Outside,
}

/// Files that changed between two commits (see `Commit::diff_from`).
#[derive(Debug, Default)]
pub struct Changes {
    /// Each with whether the old commit lacked it.
    pub changed: Vec<(Entry, bool)>,
    pub deleted: Vec<String>,
    pub skipped: Vec<Skipped>,
}

/// Checks one directory's entries: each name safe, once, in git's order, and
/// the path not too long.
fn check_dir(tree: &Tree, prefix: &str) -> Result<()> {
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
    }
    Ok(())
}

/// A path from a diff, each of its names checked.
fn check_path(path: &[u8]) -> Result<String> {
    let mut prefix = String::new();
    for part in path.split(|b| *b == b'/') {
        let name = check_name(part, &prefix)?;
        prefix.push_str(name);
        prefix.push('/');
    }
    prefix.pop();
    if prefix.len() > MAX_PATH {
        bail!(
            "commit entry {}: the path is {} bytes long, more than a file system takes ({MAX_PATH}); refused",
            shown(prefix.as_bytes()),
            prefix.len()
        );
    }
    Ok(prefix)
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
