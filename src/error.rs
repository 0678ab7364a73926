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

/// Text that came from a commit, a record or a program, as it is printed:
/// control characters (C0 but tab, DEL, C1: ESC and CSI among them) escaped
/// as `\u{1b}`, so no such text can move the cursor, retitle or clear the
/// terminal, or start a line of its own; and format characters (bidi
/// overrides and isolates, zero-width ones, the BOM) and line separators
/// escaped as `\u{202e}`, so that no name reads other than it is
/// (`report\u{202e}txt.exe` shown raw reads `reportexe.txt`). Everything
/// else is kept.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    // Printable ASCII, as most names are, seen a byte at a time: the dry
    // run of 100,000 files spent a seventh of its time in the lookups below.
    if text
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return text.into();
    }
    if !text.chars().any(is_unprintable) {
        return text.into();
    }
    escaped(text.as_bytes(), is_unprintable)
        .collect::<String>()
        .into()
}

fn is_unprintable(c: char) -> bool {
    // ASCII has controls and no format characters or separators: no table
    // lookup for it.
    if c.is_ascii() {
        return c.is_ascii_control() && c != '\t';
    }
    hidden_by_category(c)
}

/// What the general category hides: controls, format characters and line
/// or paragraph separators. Tab is the one control that is plain text
/// (Django and pip indent with it).
fn hidden_by_category(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c != '\t'
        && matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// Each character of `bytes` as it is printed: the ones `escape` picks in
/// Rust's escaped form (`\n`, `\u{1b}`), invalid bytes as `\xNN`, the rest as
/// they are. The one escaping that `printable` and `shown` share.
fn escaped(bytes: &[u8], escape: impl Fn(char) -> bool) -> impl Iterator<Item = String> {
    bytes.utf8_chunks().flat_map(move |chunk| {
        let valid = chunk
            .valid()
            .chars()
            .map(|c| match escape(c) {
                true => c.escape_debug().to_string(),
                false => c.to_string(),
            })
            .collect::<Vec<_>>();
        let invalid = chunk.invalid().iter().map(|b| format!("\\x{b:02x}"));
        valid.into_iter().chain(invalid)
    })
}

/// JSON with DEL, C1 control characters and what `printable` escapes
/// written as `\u` escapes, as serde_json writes C0 ones, so that no string
/// from a commit reaches a terminal raw. They can only be inside strings,
/// where the escape means the same character (past U+FFFF as JSON's pair of
/// UTF-16 escapes).
pub fn json_printable(json: &str) -> String {
    json.chars()
        .map(|c| match is_unprintable(c) && c != '\n' {
            true => c
                .encode_utf16(&mut [0; 2])
                .iter()
                .map(|unit| format!("\\u{unit:04x}"))
                .collect(),
            false => c.to_string(),
        })
        .collect()
}

/// A word of the commit (a file name, a revision) as a message names it:
/// as it is, or quoted with its hidden characters shown when it has any or
/// a space, so that it never reaches the pusher's terminal raw.
pub fn named(text: &str) -> String {
    if text.chars().all(|c| !c.is_control() && !c.is_whitespace()) {
        text.to_string()
    } else {
        shown(text.as_bytes())
    }
}

/// Shows a value from a file so that hidden characters can be seen, cut to a
/// readable length: `"python-3.12\r"`, `"\u{feff}python"`, `"\xff\xfe"` for
/// bytes that are not UTF-8.
pub fn shown(value: &[u8]) -> String {
    const MAX: usize = 60;
    // Every character escaped as Rust would quote it: `escape_debug` leaves
    // ordinary ones as they are and shows the hidden ones.
    let mut parts = escaped(value, |_| true).take(MAX + 1).collect::<Vec<_>>();
    let cut = parts.len() > MAX;
    parts.truncate(MAX);
    let mut out = parts.concat();
    if cut {
        out.push_str(&format!("... ({} bytes)", value.len()));
    }
    format!("\"{out}\"")
}

/// libgit2 refuses a repository of another user (as git does without
/// `safe.directory`): say whose it is and give the command again as that
/// user. Run by someone else, a deployment would leave files in the site and
/// the state dir that the owner, whose pushes deploy, cannot replace.
pub fn not_owned(path: &std::path::Path, err: &git2::Error) -> Option<anyhow::Error> {
    use std::os::unix::fs::MetadataExt;
    if err.code() != git2::ErrorCode::Owner {
        return None;
    }
    let owner = fs_err::metadata(path).ok()?.uid();
    let me = rustix::process::geteuid().as_raw();
    let command: Vec<String> = std::env::args().skip(1).collect();
    Some(usage(not_owned_message(
        path,
        user_name(owner),
        user_name(me),
        &command,
    )))
}

/// A user by name (from /etc/passwd) and uid.
struct User {
    name: Option<String>,
    uid: u32,
}

fn user_name(uid: u32) -> User {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    });
    User { name, uid }
}

fn not_owned_message(path: &std::path::Path, owner: User, me: User, command: &[String]) -> String {
    let named = |u: &User| u.name.clone().unwrap_or_else(|| format!("uid {}", u.uid));
    // sudo takes a uid without a name as `#N`.
    let sudo_user = owner
        .name
        .clone()
        .unwrap_or_else(|| format!("#{}", owner.uid));
    let again = shell_words::join(
        ["sudo", "-u", &sudo_user, "pushdeploy"]
            .into_iter()
            .chain(command.iter().map(String::as_str)),
    );
    format!(
        "{} belongs to {}, not to {}; run pushdeploy as the repository's owner, as its pushes do: `{again}`",
        path.display(),
        named(&owner),
        named(&me)
    )
}

#[cfg(test)]
mod tests {
    use super::{User, json_printable, not_owned_message, printable, shown};
    use std::path::Path;

    #[test]
    fn a_repository_of_another_user_is_named_with_the_command_as_its_owner() {
        let user = |name: Option<&str>, uid| User {
            name: name.map(str::to_string),
            uid,
        };
        let command = ["show", "--repo", "/srv/git/my shop.git", "#4"].map(String::from);
        let path = Path::new("/srv/git/my shop.git");
        assert_eq!(
            not_owned_message(
                path,
                user(Some("deploy"), 998),
                user(Some("root"), 0),
                &command
            ),
            "/srv/git/my shop.git belongs to deploy, not to root; run pushdeploy as the \
             repository's owner, as its pushes do: \
             `sudo -u deploy pushdeploy show --repo '/srv/git/my shop.git' '#4'`"
        );
        let message = not_owned_message(path, user(None, 4242), user(Some("root"), 0), &[]);
        assert!(
            message.contains("belongs to uid 4242, not to root"),
            "{message}"
        );
        assert!(
            message.contains("`sudo -u '#4242' pushdeploy`"),
            "{message}"
        );
    }

    /// The ASCII shortcuts decide as the general category does.
    #[test]
    fn ascii_is_decided_as_its_general_category_says() {
        for c in (0u8..=127).map(char::from) {
            let hidden = super::hidden_by_category(c);
            assert_eq!(super::is_unprintable(c), hidden, "{c:?}");
            let text = format!("a{c}b");
            assert_eq!(printable(&text) != text, hidden, "{c:?}");
        }
    }

    #[test]
    fn shows_hidden_and_invalid_bytes() {
        assert_eq!(shown(b"python-3.12\r"), r#""python-3.12\r""#);
        assert_eq!(shown(b"\xff\xfeab"), r#""\xff\xfeab""#);
        assert_eq!(shown("\u{feff}a\"b".as_bytes()), r#""\u{feff}a\"b""#);
        assert!(shown(&[b'a'; 100]).ends_with("... (100 bytes)\""));
    }

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(
            printable("fix: caf\u{e9}\tok \\ \"q\""),
            "fix: caf\u{e9}\tok \\ \"q\""
        );
        assert_eq!(
            printable("a\x1b]0;owned\x07b\x1b[2Jc\rd\ne\x7f\u{9b}31m"),
            r"a\u{1b}]0;owned\u{7}b\u{1b}[2Jc\rd\ne\u{7f}\u{9b}31m"
        );
        let json = serde_json::to_string_pretty(&["a\x1b\x7f\u{9b}"]).unwrap();
        assert_eq!(json_printable(&json), "[\n  \"a\\u001b\\u007f\\u009b\"\n]");
    }

    /// Issue 15 item 13: format characters (Unicode category Cf) made
    /// `report\u{202e}txt.exe` read `reportexe.txt`; each is escaped, as are
    /// line separators, wherever `printable`, `json_printable` or `shown`
    /// print a name.
    #[test]
    fn format_characters_are_escaped_like_controls() {
        let hidden = [
            '\u{ad}',
            '\u{61c}',
            '\u{180e}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{200e}',
            '\u{200f}',
            '\u{2028}',
            '\u{2029}',
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2060}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{feff}',
            '\u{fff9}',
            '\u{e0001}',
            '\u{e0041}',
        ];
        for c in hidden {
            let text = format!("a{c}b");
            let escaped = format!("a\\u{{{:x}}}b", c as u32);
            assert_eq!(printable(&text), escaped, "{:x}", c as u32);
            assert_eq!(shown(text.as_bytes()), format!("\"{escaped}\""));
            let json = json_printable(&serde_json::to_string(&text).unwrap());
            assert!(json.is_ascii(), "{json}");
            assert_eq!(serde_json::from_str::<String>(&json).unwrap(), text);
        }
        assert_eq!(printable("report\u{202e}txt.exe"), r"report\u{202e}txt.exe");
        assert_eq!(json_printable("\"\u{e0001}\""), r#""\udb40\udc01""#);
        // Letters, marks, symbols and spaces of any script stay as they are.
        let kept = "caf\u{e9} \u{5e9}\u{5dc}\u{5d5}\u{5dd} \u{645}\u{631}\u{62d}\u{628}\u{627} e\u{301} \u{1f600} \u{3000}\u{a0}x";
        assert_eq!(printable(kept), kept);
    }
}
