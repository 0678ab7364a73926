//! One deployment per repository at a time: an exclusive kernel lock on a
//! file in the state dir. The kernel drops it when the process ends, however
//! it ends, so a killed deployment never leaves the lock held.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::report::Report;

pub struct Lock {
    file: File,
}

impl Lock {
    /// Waits for the lock, saying whose deployment it waits for, then writes
    /// `holder` into the lock file for the next one that waits.
    pub fn acquire(state_dir: &Path, holder: &str, report: &mut Report) -> Result<Lock> {
        fs_err::create_dir_all(state_dir)?;
        let path = state_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the deployment lock {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut other = String::new();
                let _ = file.read_to_string(&mut other);
                let other = other.trim();
                let other = if other.is_empty() {
                    "another deployment"
                } else {
                    other
                };
                report.header(format!("Waiting for {other} to finish"));
                file.lock().with_context(|| {
                    format!("waiting for the deployment lock {}", path.display())
                })?;
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{holder}")?;
        // Before anything changes: what a killed deployment left running
        // must not write to the site any more.
        for what in crate::process::kill_left_behind(state_dir)? {
            report.header(format!(
                "Killed {what}, left running by a deployment that was killed"
            ));
        }
        Ok(Lock { file })
    }
}

impl Lock {
    /// The lock's descriptor, made to stay open across `exec`: a program
    /// started with it holds the lock too, and the kernel lets it go when
    /// the last holder ends. The caller then forgets its `Lock` (dropping
    /// it would unlock for both).
    pub fn inheritable(&self) -> Result<i32> {
        use std::os::fd::AsRawFd;
        rustix::io::fcntl_setfd(&self.file, rustix::io::FdFlags::empty())?;
        Ok(self.file.as_raw_fd())
    }

    /// The lock a deployment handed over ([`Lock::inheritable`]): `fd` must
    /// be an open descriptor of `state_dir`'s lock file, else an error.
    pub fn adopt(state_dir: &Path, fd: i32, holder: &str) -> Result<Lock> {
        use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
        use std::os::unix::fs::MetadataExt;
        // SAFETY: the descriptor is only borrowed to check that it is open
        // (fstat fails on a closed one) and is the lock file; only then is
        // it owned: nothing else in this process knows it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let held = rustix::fs::fstat(borrowed)
            .with_context(|| format!("the deployment lock's descriptor {fd}"))?;
        let ours = fs_err::metadata(state_dir.join("lock"))?;
        if (held.st_dev, held.st_ino) != (ours.dev(), ours.ino()) {
            anyhow::bail!(
                "descriptor {fd} is not the deployment lock of {}",
                state_dir.display()
            );
        }
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // Held already through this descriptor, this changes nothing; a
        // descriptor that does not hold it must not act as if it did.
        file.try_lock().map_err(|e| {
            anyhow::anyhow!("descriptor {fd} does not hold the deployment lock: {e}")
        })?;
        let mut lock = Lock { file };
        lock.file.set_len(0)?;
        lock.file.rewind()?;
        write!(lock.file, "{holder}")?;
        Ok(lock)
    }
}

/// Whether a deployment holds the lock now. Tries a shared lock without
/// waiting and lets it go at once: a holder is not disturbed, and nothing
/// is created when there is no lock file (no deployment ever ran).
pub fn is_held(state_dir: &Path) -> bool {
    let Ok(file) = File::open(state_dir.join("lock")) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        // Cannot tell: say held, so that nothing is called killed wrongly.
        Err(TryLockError::Error(_)) => true,
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn a_handed_over_lock_is_adopted_and_nothing_else_is() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = Report::new(Box::new(std::io::sink()));
        let lock = Lock::acquire(dir.path(), "a deployment", &mut report).unwrap();
        // Another descriptor of the lock file, which does not hold it.
        let other = File::open(dir.path().join("lock")).unwrap().into_raw_fd();
        let refused = Lock::adopt(dir.path(), other, "x").err().unwrap();
        assert!(
            format!("{refused:#}").contains("does not hold"),
            "{refused:#}"
        );
        // A file that is not the lock file.
        std::fs::write(dir.path().join("other"), "").unwrap();
        let stray = File::open(dir.path().join("other")).unwrap().into_raw_fd();
        let refused = Lock::adopt(dir.path(), stray, "x").err().unwrap();
        assert!(format!("{refused:#}").contains("is not the deployment lock"));
        // The same open file (as a started program inherits it) is adopted.
        let fd = lock.inheritable().unwrap();
        assert_eq!(fd, lock.file.as_raw_fd());
        let shared = rustix::io::dup(&lock.file).unwrap().into_raw_fd();
        std::mem::forget(lock);
        let adopted = Lock::adopt(dir.path(), shared, "the removal").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("lock")).unwrap(),
            "the removal"
        );
        assert!(is_held(dir.path()));
        drop(adopted);
        assert!(!is_held(dir.path()));
    }
}
