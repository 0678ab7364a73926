//! Errors that decide the exit status: 1 when a deployment failed, 2 for bad
//! usage or settings. Everything else is an `anyhow::Error` with context.

use std::fmt;

/// Bad usage or settings (exit status 2): nothing was attempted.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A deployment that ran and failed (exit status 1); its output already said why.
#[derive(Debug)]
pub struct Failure;

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deployment failed")
    }
}

impl std::error::Error for Failure {}

/// The one place that maps an error to an exit status.
pub fn exit_status(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<UsageError>()) {
        2
    } else {
        1
    }
}

/// Whether the error is a write to a closed pipe (`pushdeploy list | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Shorthand for returning a usage error.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// Shows a value from a file so that hidden characters can be seen, cut to a
/// readable length: `"python-3.12\r"`, `"\u{feff}python"`, `"\xff\xfe"` for
/// bytes that are not UTF-8.
pub fn shown(value: &[u8]) -> String {
    const MAX: usize = 60;
    let mut out = String::new();
    // Each character or invalid byte, as it is shown.
    let shown = value.utf8_chunks().flat_map(|chunk| {
        let valid = chunk.valid().chars().map(|c| c.escape_debug().to_string());
        valid.chain(chunk.invalid().iter().map(|b| format!("\\x{b:02x}")))
    });
    let mut parts = shown.take(MAX + 1).collect::<Vec<_>>();
    let cut = parts.len() > MAX;
    parts.truncate(MAX);
    out.push_str(&parts.concat());
    if cut {
        out.push_str(&format!("... ({} bytes)", value.len()));
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn shows_hidden_and_invalid_bytes() {
        assert_eq!(shown(b"python-3.12\r"), r#""python-3.12\r""#);
        assert_eq!(shown(b"\xff\xfeab"), r#""\xff\xfeab""#);
        assert!(shown(&[b'a'; 100]).ends_with("... (100 bytes)\""));
    }
}
