//! A Python version: the one an app asks for (`3.12`, `python-3.12.4`) and
//! the one an interpreter has. Plain data below both `settings` (the
//! `python` setting's value) and `runtime` (which finds the interpreter).

use std::fmt;

use serde::Serialize;

/// A wanted Python version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Request {
    pub major: u32,
    pub minor: u32,
    /// Set when an exact patch release is wanted (`python-3.12.4`).
    pub patch: Option<u32>,
}

impl Request {
    /// Kudu's runtime name, `python-X.Y`, which names the env's marker.
    pub fn runtime(&self) -> String {
        format!("python-{}.{}", self.major, self.minor)
    }

    pub fn fits(&self, v: Version) -> bool {
        v.major == self.major && v.minor == self.minor && self.patch.is_none_or(|p| p == v.patch)
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "python-{}.{}.{}", self.major, self.minor, p),
            None => write!(f, "python-{}.{}", self.major, self.minor),
        }
    }
}

/// An interpreter's real version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses `X.Y` or `X.Y.Z` (small numbers only).
pub(crate) fn parse_numbers(text: &str) -> Option<Request> {
    let parts: Vec<&str> = text.split('.').collect();
    let num = |s: &str| {
        (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match parts.as_slice() {
        [a, b] => Some(Request {
            major: num(a)?,
            minor: num(b)?,
            patch: None,
        }),
        [a, b, c] => Some(Request {
            major: num(a)?,
            minor: num(b)?,
            patch: Some(num(c)?),
        }),
        _ => None,
    }
}
