//! The site as a directory handle: every path the sync uses is reached from
//! the site's own open directory, one name at a time, never through a
//! symlink, and every change (create, rename, unlink, mkdir, rmdir, symlink)
//! is made relative to the open handle of its parent. A directory swapped
//! for a symlink between a check and a use cannot lead outside the site:
//! no path is ever resolved again from its text.
//!
//! Paths below the site are the commit's (`a/b/c.py`): relative, `/` between
//! names, no `.` or `..` (the commit's names are checked before they get here).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// Set once `openat2` was found missing (kernels before 5.6): the walk then
/// opens one name at a time with `O_NOFOLLOW`.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The site, open.
pub struct SiteDir {
    root: Dir,
    path: PathBuf,
}

/// One open directory of the site, with its path below the site for messages.
pub struct Dir {
    fd: OwnedFd,
    pub rel: String,
}

/// What stands at a name, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// A name's kind, permission bits and inode number.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    /// Which file it is: the journal tells the files the sync made from
    /// ones put at the same name by someone else.
    pub ino: u64,
}

impl Meta {
    fn of(stat: &Stat) -> Meta {
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        };
        Meta {
            kind,
            mode: stat.st_mode & 0o7777,
            ino: stat.st_ino,
        }
    }
}

/// Whether an error means "nothing usable is there": missing, or not a
/// real directory on the way (a file, or a symlink that is never followed).
pub fn is_absent(e: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV)
    )
}

fn absent_as_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The error for a name that is not a regular file where one is read.
fn not_regular(rel: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{rel}: not a regular file (a FIFO, socket or device?)"),
    )
}

/// Opens a regular file outside the site (a custom command's output) for
/// reading the same way as [`Dir::open_file`]: no symlink followed, never
/// blocking, and refused unless what was opened is a regular file.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(not_regular(&path.display().to_string()));
    }
    Ok(File::from(fd))
}

/// Reads a text file that is the site's (a symlink followed, as a program
/// would) without ever blocking: a FIFO or device there is refused, not read.
pub fn read_text(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(not_regular(&path.display().to_string()));
    }
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text)?;
    Ok(text)
}

/// Splits `a/b/c` into `("a/b", "c")`, and `c` into `("", "c")`.
pub fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl SiteDir {
    /// Opens the site. Its own path is the server's setting and is trusted;
    /// everything below it is reached from this handle.
    pub fn open(path: &Path) -> Result<SiteDir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("site {}: cannot open the directory", path.display()))?;
        Ok(SiteDir {
            root: Dir {
                fd,
                rel: String::new(),
            },
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The site's own directory.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    /// The directory `rel` below the site (`""`: the site itself), reached
    /// without following any symlink; `None` when some name on the way is
    /// missing or is not a real directory.
    pub fn dir(&self, rel: &str) -> io::Result<Option<Dir>> {
        if rel.is_empty() {
            return self.root.try_clone().map(Some);
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // EAGAIN: a rename anywhere on the system during the lookup (the
            // kernel's check is global). Retried a few times, then the walk
            // below, which a stream of renames cannot hold up.
            for _ in 0..4 {
                match rustix::fs::openat2(&self.root.fd, rel, DIR_FLAGS, Mode::empty(), how) {
                    Ok(fd) => {
                        return Ok(Some(Dir {
                            fd,
                            rel: rel.to_string(),
                        }));
                    }
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS | Errno::PERM) => {
                        // No openat2 (or a seccomp filter refusing it): the walk below.
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return absent_as_none(Err(e.into())),
                }
            }
        }
        let mut dir = self.root.try_clone()?;
        for name in rel.split('/') {
            match dir.open_dir(name)? {
                Some(next) => dir = next,
                None => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// The parent directory of `rel` and its last name; `None` when the
    /// parent is missing or is not a real directory.
    pub fn parent<'a>(&self, rel: &'a str) -> io::Result<Option<(Dir, &'a str)>> {
        let (dir, name) = split(rel);
        Ok(self.dir(dir)?.map(|d| (d, name)))
    }

    /// What stands at `rel`, if its parents are real directories.
    pub fn meta(&self, rel: &str) -> io::Result<Option<Meta>> {
        match self.parent(rel)? {
            Some((dir, name)) => dir.meta(name),
            None => Ok(None),
        }
    }
}

impl Dir {
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            rel: self.rel.clone(),
        })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path below the site of `name` in this directory.
    pub fn rel_of(&self, name: &str) -> String {
        join(&self.rel, name)
    }

    pub fn meta(&self, name: &str) -> io::Result<Option<Meta>> {
        absent_as_none(
            rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|s| Meta::of(&s))
                .map_err(io::Error::from),
        )
    }

    /// The directory `name` in this one, never through a symlink.
    pub fn open_dir(&self, name: &str) -> io::Result<Option<Dir>> {
        absent_as_none(
            rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
                .map(|fd| Dir {
                    fd,
                    rel: self.rel_of(name),
                })
                .map_err(io::Error::from),
        )
    }

    pub fn mkdir(&self, name: &str, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(
            &self.fd,
            name,
            Mode::from_raw_mode(mode),
        )?)
    }

    pub fn rmdir(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?)
    }

    /// Removes a file or symlink (a symlink itself, never what it points to).
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// Renames `name` here to `to_name` in `to`: the names themselves,
    /// never what a symlink points to.
    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, name, &to.fd, to_name)?)
    }

    /// Renames `name` here to `to_name` in `to` unless `to_name` exists
    /// (then `AlreadyExists`): a file that appeared there is never replaced.
    pub fn rename_new(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        use rustix::fs::RenameFlags;
        match rustix::fs::renameat_with(&self.fd, name, &to.fd, to_name, RenameFlags::NOREPLACE) {
            // A file system without RENAME_NOREPLACE: a hard link fails the
            // same way when the name is taken.
            Err(Errno::INVAL | Errno::NOSYS) => {
                self.link(name, to, to_name)?;
                self.unlink(name)
            }
            other => Ok(other?),
        }
    }

    /// A second name `to_name` in `to` for the file `name` (not followed).
    pub fn link(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.fd,
            name,
            &to.fd,
            to_name,
            AtFlags::empty(),
        )?)
    }

    pub fn symlink(&self, target: &OsStr, name: &str) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(target, &self.fd, name)?)
    }

    pub fn read_link(&self, name: &str) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.fd, name, Vec::new())?.into_bytes())
    }

    /// Opens the regular file `name` for reading, with its meta. Opened
    /// first, then checked: a symlink there is not followed, and a FIFO,
    /// socket or device (which a stat before the open cannot rule out: it
    /// can be swapped in meanwhile) is opened without blocking and refused
    /// as not a regular file, so that reading it can never hold a deployment.
    pub fn open_file(&self, name: &str) -> io::Result<(File, Meta)> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let meta = Meta::of(&rustix::fs::fstat(&fd)?);
        if meta.kind != Kind::File {
            return Err(not_regular(&self.rel_of(name)));
        }
        Ok((File::from(fd), meta))
    }

    /// Creates the file `name`, which must not exist (a symlink there
    /// counts as existing and is never followed).
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        let file = File::from(fd);
        // The umask may have taken bits away: the mode is the commit's.
        if mode & umask() != 0 {
            rustix::fs::fchmod(file.as_fd(), Mode::from_raw_mode(mode))?;
        }
        Ok(file)
    }

    /// A new name starting with `prefix` that nothing in this directory has,
    /// made by `make` (which fails with `AlreadyExists` when it is taken).
    pub fn make_temp<T>(
        &self,
        prefix: &str,
        mut make: impl FnMut(&str) -> io::Result<T>,
    ) -> io::Result<(String, T)> {
        loop {
            let name = format!("{prefix}{}", unique());
            match make(&name) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
                Ok(v) => return Ok((name, v)),
            }
        }
    }

    /// Python's cached bytecode of the sources `names` here
    /// (`__pycache__/<stem>.<tag>[.opt-N].pyc`), removed once the source
    /// changed under that name: Python trusts a .pyc while its source has
    /// the recorded size and whole-second mtime, which a file replaced
    /// within the second of the one before can have. It is a cache, made
    /// again on the next import.
    /// Takes several sources of this directory at once: `__pycache__` is
    /// read once for all of them.
    pub fn forget_bytecode<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> io::Result<()> {
        let stems: Vec<&str> = names
            .into_iter()
            .filter_map(|n| n.strip_suffix(".py"))
            .collect();
        if stems.is_empty() {
            return Ok(());
        }
        let Some(cache) = self.open_dir("__pycache__")? else {
            return Ok(());
        };
        for (entry, kind) in cache.entries()? {
            if kind == Kind::File && stems.iter().any(|stem| is_bytecode_of(&entry, stem)) {
                match cache.unlink(&entry) {
                    Err(e) if !is_absent(&e) => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The names in this directory with their kinds, `.` and `..` left out.
    pub fn entries(&self) -> io::Result<Vec<(String, Kind)>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::RegularFile => Kind::File,
                FileType::Directory => Kind::Dir,
                FileType::Symlink => Kind::Symlink,
                FileType::Unknown => match self.meta(&name.to_string_lossy())? {
                    Some(meta) => meta.kind,
                    None => continue,
                },
                _ => Kind::Other,
            };
            out.push((name.to_string_lossy().into_owned(), kind));
        }
        Ok(out)
    }

    /// Removes `name` and everything below it, never following a symlink.
    pub fn remove_all(&self, name: &str) -> io::Result<()> {
        match self.meta(name)? {
            None => Ok(()),
            Some(Meta {
                kind: Kind::Dir, ..
            }) => {
                if let Some(dir) = self.open_dir(name)? {
                    for (entry, _) in dir.entries()? {
                        dir.remove_all(&entry)?;
                    }
                }
                self.rmdir(name)
            }
            Some(_) => self.unlink(name),
        }
    }

    /// Removes the files (any entry but a directory) whose names `ours`
    /// accepts: the temp files of a process that was killed half-way.
    pub fn remove_temp_files(&self, ours: impl Fn(&str) -> bool) -> io::Result<()> {
        for (name, kind) in self.entries()? {
            if ours(&name) && kind != Kind::Dir {
                match self.unlink(&name) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// A name part no other process or call uses at the same time: the pid, a
/// counter and the clock.
/// Whether `entry` of a `__pycache__` is the bytecode of the module `stem`:
/// `stem.cpython-312.pyc` or `stem.cpython-312.opt-1.pyc`, never that of
/// `stem.other.py`.
fn is_bytecode_of(entry: &str, stem: &str) -> bool {
    let Some(rest) = entry
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(".pyc"))
    else {
        return false;
    };
    match rest.split_once('.') {
        None => !rest.is_empty(),
        Some((tag, opt)) => !tag.is_empty() && opt.starts_with("opt-") && !opt.contains('.'),
    }
}

pub fn unique() -> String {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Asked once: a system call per temp name otherwise (this process
    // forks only to exec).
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}{nanos:x}", PID.get_or_init(std::process::id), n)
}

/// The process's umask, read once from /proc (reading it with umask(2)
/// would change it for a moment); all bits when it cannot be read, so
/// that every mode is set explicitly.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
            })
            .unwrap_or(0o7777)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_path_leads_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(site.join("real/sub")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, site.join("link")).unwrap();
        std::os::unix::fs::symlink("real", site.join("rel")).unwrap();
        let dir = SiteDir::open(&site).unwrap();
        assert!(dir.dir("real/sub").unwrap().is_some());
        assert!(dir.dir("link").unwrap().is_none());
        assert!(dir.dir("rel/sub").unwrap().is_none());
        assert!(dir.dir("missing/x").unwrap().is_none());
        // The per-name walk says the same.
        NO_OPENAT2.store(true, Ordering::Relaxed);
        assert!(dir.dir("real/sub").unwrap().is_some());
        assert!(dir.dir("link").unwrap().is_none());
        assert!(dir.dir("rel/sub").unwrap().is_none());
        NO_OPENAT2.store(false, Ordering::Relaxed);
        // A handle keeps its directory when the name is swapped for a symlink.
        let real = dir.dir("real").unwrap().unwrap();
        std::fs::rename(site.join("real"), site.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, site.join("real")).unwrap();
        real.create_new("f", 0o644).unwrap();
        assert!(site.join("moved/f").exists());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn reading_a_fifo_never_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("data.txt");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o644)).unwrap();
        let site = SiteDir::open(tmp.path()).unwrap();
        // A writer waits for a reader: an open that blocks returns once it
        // came, and then hands back the FIFO as if it were a file.
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo))
        };
        let opened = site.root().open_file("data.txt");
        let outside = open_regular(&fifo);
        let text = read_text(&fifo);
        // Lets the writer go, whichever way the opens went.
        let _reader = rustix::fs::open(&fifo, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty());
        writer.join().unwrap().unwrap();
        let err = opened.map(|_| ()).unwrap_err();
        assert!(
            err.to_string().contains("data.txt: not a regular file"),
            "{err}"
        );
        assert!(outside.is_err() && text.is_err());
        // A regular file opens, with its meta.
        std::fs::write(tmp.path().join("file.txt"), "x").unwrap();
        let (_, meta) = site.root().open_file("file.txt").unwrap();
        assert_eq!(meta.kind, Kind::File);
    }

    #[test]
    fn bytecode_of_a_module_and_no_other() {
        assert!(is_bytecode_of("app.cpython-311.pyc", "app"));
        assert!(is_bytecode_of("app.cpython-311.opt-2.pyc", "app"));
        assert!(is_bytecode_of("app.pypy39.pyc", "app"));
        assert!(!is_bytecode_of("app.other.cpython-311.pyc", "app"));
        assert!(!is_bytecode_of("apps.cpython-311.pyc", "app"));
        assert!(!is_bytecode_of("app.pyc", "app"));
        assert!(!is_bytecode_of("app.cpython-311.py", "app"));
        assert!(is_bytecode_of("app.other.cpython-311.pyc", "app.other"));
    }
}
