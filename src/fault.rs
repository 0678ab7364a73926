//! Fault injection for the transaction's tests: every write, rename and
//! delete a deployment makes to the site and the state dir (and its
//! recovery makes) calls [`point`] first, so that a test can kill the
//! process, or fail with an I/O error, exactly there and at no other place.
//!
//! Only debug builds read `PUSHDEPLOY_FAULT` (a release build compiles
//! `point` to nothing, so no user can hit it by accident):
//! - `kill:N`: SIGKILL this process at the Nth point;
//! - `fail:N`: the Nth point fails with an I/O error (EIO);
//! - `count:FILE`: append each point's number and name to FILE.

use std::io;

/// The variable the tests set.
#[cfg(debug_assertions)]
const VAR: &str = "PUSHDEPLOY_FAULT";

/// A point where a change is about to be made; `what` names it.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_what: &str) -> io::Result<()> {
    Ok(())
}

/// A point where a change is about to be made; `what` names it.
#[cfg(debug_assertions)]
pub fn point(what: &str) -> io::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let Some(value) = std::env::var_os(VAR) else {
        return Ok(());
    };
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let value = value.to_string_lossy();
    let (mode, arg) = value.split_once(':').unwrap_or((&value, ""));
    match mode {
        "kill" if arg.parse() == Ok(n) => {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            // The signal is delivered before kill(2) returns; never reached.
            std::process::abort()
        }
        "fail" if arg.parse() == Ok(n) => Err(io::Error::other(format!(
            "injected I/O error at point {n} ({what})"
        ))),
        "count" => {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(arg)?;
            writeln!(file, "{n} {what}")
        }
        _ => Ok(()),
    }
}
