//! Receiving a push: the `<old> <new> <ref>` lines that git gives
//! `post-receive` on stdin, and which of them deploys.

use std::fmt;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::error::shown;

/// One updated ref, as git reports it to `post-receive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

/// What to do with one ref update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action", content = "reason")]
pub enum Decision {
    Deploy,
    /// Ignored, with the reason to show the pusher.
    Ignore(Ignored),
}

/// Why an update does not deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Ignored {
    /// A tag, or a branch or other ref that is not the deployment branch.
    NotTheBranch {
        name: String,
        tag: bool,
        branch: String,
    },
    /// The deployment branch was deleted: the site stays as it is.
    Deleted { name: String },
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::NotTheBranch { name, tag, branch } => {
                let what = if *tag { "tag" } else { "ref" };
                write!(f, "{what} {name} is not the deployment branch {branch}")
            }
            Ignored::Deleted { name } => {
                write!(f, "{name} was deleted; the site is left as it is")
            }
        }
    }
}

fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

/// Parses the hook's stdin. A line that is not three fields of the expected
/// shape is an error that shows the line.
pub fn parse(input: &str) -> Result<Vec<RefUpdate>> {
    let mut updates = Vec::new();
    for (n, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            [old, new, name]
                if is_object_id(old)
                    && is_object_id(new)
                    && git2::Reference::is_valid_name(name) =>
            {
                updates.push(RefUpdate {
                    old: old.to_string(),
                    new: new.to_string(),
                    name: name.to_string(),
                })
            }
            _ => bail!(
                "post-receive input line {}: {} is not `<old> <new> <ref>`",
                n + 1,
                shown(line.as_bytes())
            ),
        }
    }
    Ok(updates)
}

/// Decides for one update, given the deployment branch.
pub fn decide(update: &RefUpdate, branch: &str) -> Decision {
    let wanted = format!("refs/heads/{branch}");
    if update.name != wanted {
        return Decision::Ignore(Ignored::NotTheBranch {
            name: update.name.clone(),
            tag: update.name.starts_with("refs/tags/"),
            branch: branch.to_string(),
        });
    }
    if is_zero(&update.new) {
        return Decision::Ignore(Ignored::Deleted {
            name: update.name.clone(),
        });
    }
    Decision::Deploy
}

/// Push options that pushdeploy knows; any other is reported and ignored.
pub const PUSH_OPTIONS: &[&str] = &["recreate-env"];

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn parses_and_decides() {
        let input = format!(
            "{A} {B} refs/heads/main\n{A} {B} refs/tags/v1\n{A} {Z} refs/heads/main\n{Z} {B} refs/heads/dev\n"
        );
        let updates = parse(&input).unwrap();
        let decisions: Vec<_> = updates.iter().map(|u| decide(u, "main")).collect();
        assert_eq!(decisions[0], Decision::Deploy);
        let Decision::Ignore(tag) = &decisions[1] else {
            panic!("{:?}", decisions[1])
        };
        assert_eq!(
            tag.to_string(),
            "tag refs/tags/v1 is not the deployment branch main"
        );
        assert_eq!(
            decisions[2],
            Decision::Ignore(Ignored::Deleted {
                name: "refs/heads/main".into()
            })
        );
        assert!(matches!(
            &decisions[3],
            Decision::Ignore(Ignored::NotTheBranch { name, tag: false, .. }) if name == "refs/heads/dev"
        ));
        assert_eq!(
            serde_json::to_value(&decisions[2]).unwrap(),
            serde_json::json!({"action": "ignore", "reason": {"kind": "deleted", "name": "refs/heads/main"}})
        );
    }

    #[test]
    fn strange_lines_are_refused_with_the_line() {
        for bad in [
            format!("{A} {B}"),
            format!("{A} {B} refs/heads/a b"),
            format!("{A} xyz refs/heads/main"),
            format!("{A} {B} refs/heads/..x"),
        ] {
            let err = parse(&bad).unwrap_err().to_string();
            assert!(err.contains("line 1"), "{err}");
        }
    }
}
