//! The app's output, without systemd: each process writes into a pipe read
//! by `pushdeploy log-writer`, which appends to `<stateDir>/logs/<type>.log`
//! and rotates it to `<type>.log.1` at a size cap (a process's own
//! descriptors never see the rotation, which gunicorn's USR2 would carry
//! over); `pushdeploy logs [-f]` shows them.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// A log is rotated (to `<type>.log.1`) when it reaches this size.
pub const LOG_CAP: u64 = 10 << 20;

pub fn log_file(state_dir: &Path, kind: &str) -> PathBuf {
    state_dir.join("logs").join(format!("{kind}.log"))
}

/// The line of a log that says why a process ended: the last Python
/// exception line, else its last line; `; its log ends: ...`.
pub fn log_end(log: &Path) -> String {
    let text = tail(log, 16 << 10);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let error = lines.iter().rev().find(|l| {
        let first = l.split(':').next().unwrap_or("");
        !l.starts_with(' ')
            && !l.starts_with('[')
            && (first.ends_with("Error") || first.ends_with("Exception"))
    });
    match error.or(lines.last()) {
        Some(line) => format!(
            "; {} says: {}",
            log.display(),
            crate::error::printable(line.trim())
        ),
        None => String::new(),
    }
}

/// The last `bytes` of a file, as text.
fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(std::io::SeekFrom::Start(len.saturating_sub(bytes)));
    let mut out = Vec::new();
    let _ = file.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `pushdeploy log-writer <file>` (started by `start_one`): copies its
/// stdin, the app's output, into `file`, which it rotates to `<file>.1`
/// when it reaches [`LOG_CAP`]. Ends when every writer of the pipe has.
pub fn log_writer(path: &Path) -> Result<()> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))
    };
    let mut file = open()?;
    let mut size = file.metadata()?.len();
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if size + n as u64 > LOG_CAP && size > 0 {
            let mut old = path.as_os_str().to_owned();
            old.push(".1");
            fs_err::rename(path, PathBuf::from(old))?;
            file = open()?;
            size = 0;
        }
        file.write_all(&buf[..n])?;
        size += n as u64;
    }
}

/// `pushdeploy logs`: what the processes wrote (the rotated part first);
/// with `follow`, then what they write, as it comes.
pub fn show_logs(state_dir: &Path, kinds: &[String], follow: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let prefix = kinds.len() > 1;
    let mut positions = Vec::new();
    for kind in kinds {
        let log = log_file(state_dir, kind);
        let mut old = log.clone().into_os_string();
        old.push(".1");
        let mut text = std::fs::read(PathBuf::from(old)).unwrap_or_default();
        let current = std::fs::read(&log).unwrap_or_default();
        positions.push((kind.clone(), log, current.len() as u64));
        text.extend(current);
        write_lines(&mut out, kind, prefix, &text)?;
    }
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        for (kind, log, at) in &mut positions {
            let len = std::fs::metadata(&*log).map(|m| m.len()).unwrap_or(0);
            if len < *at {
                // Rotated: the new file from its start.
                *at = 0;
            }
            if len > *at {
                let mut file = std::fs::File::open(&*log)?;
                file.seek(std::io::SeekFrom::Start(*at))?;
                let mut text = Vec::new();
                file.read_to_end(&mut text)?;
                *at += text.len() as u64;
                write_lines(&mut out, kind, prefix, &text)?;
            }
        }
        out.flush()?;
    }
}

fn write_lines(out: &mut impl Write, kind: &str, prefix: bool, text: &[u8]) -> Result<()> {
    for line in String::from_utf8_lossy(text).lines() {
        let line = crate::error::printable(line);
        if prefix {
            writeln!(out, "{kind}: {line}")?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_end_names_the_exception() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web.log");
        std::fs::write(
            &log,
            "Traceback (most recent call last):\n  File \"app.py\", line 1\nModuleNotFoundError: No module named 'nope'\n[2026] [INFO] Worker exiting\n[2026] [ERROR] Reason: Worker failed to boot.\n",
        )
        .unwrap();
        assert!(
            log_end(&log).ends_with("says: ModuleNotFoundError: No module named 'nope'"),
            "{}",
            log_end(&log)
        );
    }
}
