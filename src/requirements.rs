//! requirements.txt as pip reads it, to the extent pushdeploy can vouch for
//! it. Skipping pip is safe only when every line names nothing that can
//! change outside the files that are fingerprinted, so the rule is a list of
//! line forms fully understood (a plain requirement, `-r`/`-c` with a file of
//! the commit, a few options whose value is part of the file); any other
//! line makes the installer run every time, and says which line it was.
//!
//! The logical lines follow pip's own reading (`pip/_internal/req/req_file.py`):
//! lines split as Python's `splitlines`, a line ending in `\` joined to the
//! next, comments (`#` at the start or after whitespace) removed.

use std::fmt;

use serde::Serialize;

/// Why a line makes the installer run every time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Unfixed {
    /// `-e ./lib`, `--editable ...`.
    Editable,
    /// `name @ https://...`, `https://.../x.whl`.
    Url,
    /// `git+https://...`, `name @ git+ssh://...`.
    Vcs,
    /// `./lib`, `libs/mylib`, `/srv/x.whl`, `x.tar.gz`, `file:...`.
    LocalPath,
    /// `${VAR}`: pip expands it from its environment.
    Variable,
    /// `-r https://...`: a requirement file fetched at install time.
    RemoteInclude,
    /// `-f wheels/`: pip resolves it against the site, which the plan cannot see yet.
    RelativeFindLinks,
    /// An option not on the list (or an abbreviation of one).
    Option { option: String },
    /// Text that is not a requirement pushdeploy can read.
    Unreadable,
}

impl fmt::Display for Unfixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfixed::Editable => f.write_str("an editable requirement (-e)"),
            Unfixed::Url => f.write_str("a URL"),
            Unfixed::Vcs => f.write_str("a VCS URL"),
            Unfixed::LocalPath => f.write_str("a local path"),
            Unfixed::Variable => f.write_str("an environment variable (${...})"),
            Unfixed::RemoteInclude => f.write_str("a requirement file by URL"),
            Unfixed::RelativeFindLinks => f.write_str("a relative --find-links directory"),
            Unfixed::Option { option } => write!(
                f,
                "an option pushdeploy does not follow ({})",
                crate::error::shown(option.as_bytes())
            ),
            Unfixed::Unreadable => f.write_str("not a requirement pushdeploy can read"),
        }
    }
}

/// `-r` or `-c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeKind {
    Requirements,
    Constraints,
}

impl IncludeKind {
    pub fn flag(self) -> &'static str {
        match self {
            IncludeKind::Requirements => "-r",
            IncludeKind::Constraints => "-c",
        }
    }
}

/// What a logical line is, when pushdeploy fully understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A requirement by name, with extras, versions, markers and hashes;
    /// `platform` when a marker reads the kernel's release or version.
    Requirement { platform: bool },
    /// Another requirement file, by its value as written.
    Include { kind: IncludeKind, path: String },
    /// A local `--find-links` directory (absolute): its listing counts.
    FindLinks { dir: String },
    /// Options whose whole effect is in the file's text (`--index-url`,
    /// `--no-index`, `--pre`, ...): they only choose where missing packages come from.
    Options,
}

/// A logical line: its first physical line's number (from 1) and its text
/// without the comment, trimmed. Empty lines are left out.
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut joined = String::new();
    let mut first = 0;
    for (index, line) in split_lines(text).into_iter().enumerate() {
        let number = index + 1;
        if line.ends_with('\\') && !is_comment(line) {
            if joined.is_empty() {
                first = number;
            }
            joined.push_str(line.trim_matches('\\'));
            continue;
        }
        let (number, whole) = if joined.is_empty() {
            (number, line.to_string())
        } else {
            // pip puts a space before a comment line that ends a continuation.
            let sep = if is_comment(line) { " " } else { "" };
            (first, std::mem::take(&mut joined) + sep + line)
        };
        push_logical(&mut out, number, &whole);
    }
    if !joined.is_empty() {
        push_logical(&mut out, first, &joined);
    }
    out
}

fn push_logical(out: &mut Vec<(usize, String)>, number: usize, line: &str) {
    let text = strip_comment(line).trim_matches(is_python_space);
    if !text.is_empty() {
        out.push((number, text.to_string()));
    }
}

/// Python's `str.isspace`, for the characters that matter in text files.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// pip's `COMMENT_RE`: `(^|\s+)#.*$`.
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = is_python_space(c);
    }
    line
}

fn is_comment(line: &str) -> bool {
    strip_comment(line).len() != line.len()
}

/// Python's `str.splitlines`: `\n`, `\r\n`, `\r` and the other line breaks.
fn split_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let brk = matches!(
            c,
            '\n' | '\r'
                | '\u{b}'
                | '\u{c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if brk {
            out.push(&text[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' && matches!(chars.peek(), Some((_, '\n'))) {
                chars.next();
                end += 1;
            }
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Options that take a value, by every spelling pip's parser accepts in full.
const WITH_VALUE: &[(&str, Option<char>)] = &[
    ("--requirement", Some('r')),
    ("--constraint", Some('c')),
    ("--editable", Some('e')),
    ("--find-links", Some('f')),
    ("--index-url", Some('i')),
    ("--extra-index-url", None),
    ("--no-binary", None),
    ("--only-binary", None),
    ("--trusted-host", None),
    ("--use-feature", None),
    ("--hash", None),
    ("--global-option", None),
    ("--config-settings", None),
];

/// Options without a value.
const FLAGS: &[&str] = &["--no-index", "--pre", "--prefer-binary", "--require-hashes"];

/// Options allowed after a requirement on its line.
const PER_REQUIREMENT: &[&str] = &["--hash", "--global-option", "--config-settings"];

/// One option and its value, from the tokens of a line.
fn next_option<'a>(
    tokens: &mut std::slice::Iter<'a, &'a str>,
) -> Option<Result<(&'static str, Option<&'a str>), Unfixed>> {
    let token = *tokens.next()?;
    let unknown = || {
        Err(Unfixed::Option {
            option: token.to_string(),
        })
    };
    if let Some(long) = token.strip_prefix("--") {
        let (name, attached) = match long.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (long, None),
        };
        if let Some(flag) = FLAGS.iter().find(|f| f[2..] == *name) {
            return Some(match attached {
                None => Ok((flag, None)),
                Some(_) => unknown(),
            });
        }
        let Some((option, _)) = WITH_VALUE.iter().find(|(o, _)| o[2..] == *name) else {
            return Some(unknown());
        };
        let value = attached.or_else(|| tokens.next().copied());
        return Some(value.map(|v| (*option, Some(v))).ok_or(Unfixed::Unreadable));
    }
    // A word after the options, which pip's parser would drop.
    let Some(rest) = token.strip_prefix('-') else {
        return Some(Err(Unfixed::Unreadable));
    };
    let mut chars = rest.chars();
    let short = chars.next();
    let Some((option, _)) = WITH_VALUE.iter().find(|(_, s)| *s == short && s.is_some()) else {
        return Some(unknown());
    };
    let rest = chars.as_str();
    let value = if rest.is_empty() {
        tokens.next().copied()
    } else {
        Some(rest)
    };
    Some(value.map(|v| (*option, Some(v))).ok_or(Unfixed::Unreadable))
}

/// What one logical line is, or why it makes the installer always run.
pub fn classify(line: &str) -> Result<Line, Unfixed> {
    if line.contains("${") {
        return Err(Unfixed::Variable);
    }
    // pip's `break_args_options`: the requirement is every space-separated
    // token before the first that starts with `-`.
    let words: Vec<&str> = line.split(' ').collect();
    let split = words
        .iter()
        .position(|w| w.starts_with('-'))
        .unwrap_or(words.len());
    let requirement = words[..split].join(" ");
    // pip splits the options with shlex: quotes and escapes are left to it.
    if words[split..].iter().any(|w| w.contains(['"', '\'', '\\'])) {
        return Err(Unfixed::Unreadable);
    }
    let tokens: Vec<&str> = words[split..]
        .iter()
        .flat_map(|w| w.split(is_python_space))
        .filter(|w| !w.is_empty())
        .collect();
    let mut options = Vec::new();
    let mut iter = tokens.iter();
    while let Some(option) = next_option(&mut iter) {
        options.push(option?);
    }
    if !requirement.trim().is_empty() {
        if let Some((option, _)) = options.iter().find(|(o, _)| !PER_REQUIREMENT.contains(o)) {
            return Err(Unfixed::Option {
                option: option.to_string(),
            });
        }
        return requirement_line(requirement.trim_matches(is_python_space));
    }
    let mut found = Line::Options;
    for (option, value) in options {
        let value = value.unwrap_or("");
        let line = match option {
            "--requirement" | "--constraint" => {
                let kind = if option == "--requirement" {
                    IncludeKind::Requirements
                } else {
                    IncludeKind::Constraints
                };
                if is_url(value) && !value.to_ascii_lowercase().starts_with("file:") {
                    return Err(Unfixed::RemoteInclude);
                }
                Line::Include {
                    kind,
                    path: value.to_string(),
                }
            }
            "--editable" => return Err(Unfixed::Editable),
            "--find-links" if is_url(value) => {
                if value.to_ascii_lowercase().starts_with("file:") {
                    return Err(Unfixed::LocalPath);
                }
                Line::Options
            }
            "--find-links" if value.starts_with('/') => Line::FindLinks {
                dir: value.to_string(),
            },
            "--find-links" => return Err(Unfixed::RelativeFindLinks),
            "--hash" | "--global-option" | "--config-settings" => {
                return Err(Unfixed::Option {
                    option: option.to_string(),
                });
            }
            _ => Line::Options,
        };
        if line != Line::Options {
            if found != Line::Options {
                // Two includes on one line: pip keeps the last; be plain about it.
                return Err(Unfixed::Unreadable);
            }
            found = line;
        }
    }
    Ok(found)
}

/// Whether pip takes the text for a URL (`scheme:...`).
fn is_url(value: &str) -> bool {
    let Some((scheme, _)) = value.split_once(':') else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && scheme.len() > 1
}

/// Endings pip takes for an archive file, which makes a name a path.
const ARCHIVES: &[&str] = &[
    ".zip",
    ".whl",
    ".tar.gz",
    ".tgz",
    ".tar",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tlz",
    ".tar.lz",
    ".tar.lzma",
];

/// `name[extras] specifiers ; markers`, as PEP 508 has it without a URL.
fn requirement_line(text: &str) -> Result<Line, Unfixed> {
    let (spec, marker) = match text.split_once(';') {
        Some((spec, marker)) => (spec.trim(), Some(marker.trim())),
        None => (text, None),
    };
    let lower = spec.to_ascii_lowercase();
    for vcs in ["git+", "hg+", "svn+", "bzr+"] {
        if lower.starts_with(vcs)
            || lower.contains(&format!("@ {vcs}"))
            || lower.contains(&format!("@{vcs}"))
        {
            return Err(Unfixed::Vcs);
        }
    }
    if lower.starts_with("file:") || lower.contains("@ file:") {
        return Err(Unfixed::LocalPath);
    }
    if is_url(spec) || spec.contains('@') {
        return Err(Unfixed::Url);
    }
    if spec.contains('/') || spec.starts_with('.') || ARCHIVES.iter().any(|a| lower.ends_with(a)) {
        return Err(Unfixed::LocalPath);
    }
    let name_end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(spec.len());
    let name = &spec[..name_end];
    let name_ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err(Unfixed::Unreadable);
    }
    let mut rest = spec[name_end..].trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        let (extras, tail) = after.split_once(']').ok_or(Unfixed::Unreadable)?;
        let ok = extras.split(',').map(str::trim).all(|e| {
            e.is_empty()
                || e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        });
        if !ok {
            return Err(Unfixed::Unreadable);
        }
        rest = tail.trim_start();
    }
    if let Some(inner) = rest.strip_prefix('(') {
        rest = inner.strip_suffix(')').ok_or(Unfixed::Unreadable)?;
    }
    if !rest.trim().is_empty() && !rest.split(',').all(specifier) {
        return Err(Unfixed::Unreadable);
    }
    let platform = match marker {
        None => false,
        Some(marker) => {
            let ok = !marker.is_empty()
                && marker
                    .chars()
                    .all(|c| c.is_ascii_graphic() || c == ' ' || c == '\t');
            if !ok {
                return Err(Unfixed::Unreadable);
            }
            marker.contains("platform_release") || marker.contains("platform_version")
        }
    };
    Ok(Line::Requirement { platform })
}

/// One version clause: `==1.2.*`, `>= 3`, `~=1.4`.
fn specifier(clause: &str) -> bool {
    let clause = clause.trim();
    let Some(op) = ["===", "==", "!=", "<=", ">=", "~=", "<", ">"]
        .iter()
        .find(|op| clause.starts_with(*op))
    else {
        return false;
    };
    let version = clause[op.len()..].trim();
    !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '*' | '+' | '!' | '_' | '-'))
}

/// pip's `${NAME}` expansion (`NAME` of `A-Z`, `0-9`, `_`); unset names stay.
pub fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find('}') {
            Some(end)
                if end > 0
                    && after[..end]
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') =>
            {
                match lookup(&after[..end]) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&rest[at..at + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value of a `-r`/`-c` line after pip's variable expansion, when the
/// line holds one (for the check that it stays in the site).
pub fn include_value(line: &str) -> Option<(IncludeKind, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut iter = words.iter();
    while let Some(option) = next_option(&mut iter) {
        match option {
            Ok(("--requirement", Some(v))) => {
                return Some((IncludeKind::Requirements, v.to_string()));
            }
            Ok(("--constraint", Some(v))) => {
                return Some((IncludeKind::Constraints, v.to_string()));
            }
            _ => {}
        }
    }
    None
}

/// The local path a line names, when pip takes its requirement (or its
/// `-e` value) for one: as written, or a `file:` URL's path (its host and
/// percent escapes taken away). `None` for any other line (a `-f` of a
/// local directory included: it only provides wheels).
pub fn local_path(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = if line.starts_with('-') {
        let mut iter = words.iter();
        loop {
            match next_option(&mut iter)? {
                Ok(("--editable", Some(v))) => break v.to_string(),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    } else {
        // `/srv/x@1` is a path to pip, though pushdeploy takes it for a URL.
        if !matches!(
            classify(line),
            Err(Unfixed::LocalPath | Unfixed::Url | Unfixed::Vcs)
        ) {
            return None;
        }
        let split = words
            .iter()
            .position(|w| w.starts_with('-'))
            .unwrap_or(words.len());
        let spec = words[..split].join(" ");
        let spec = spec.split(';').next().unwrap_or("").trim().to_string();
        let named = spec.split_once('@').filter(|(name, _)| {
            let name = name.trim();
            !name.is_empty()
                && name.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '[' | ']' | ',')
                })
        });
        match named {
            Some((_, url)) => url.trim().to_string(),
            None => spec,
        }
    };
    let mut value = value;
    let scheme = value.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    if let Some((vcs, inner)) = scheme.as_deref().and_then(|s| s.split_once('+')) {
        // A VCS URL (`git+file:`, `hg+file:`, any case): only a file URL
        // names a local path, which pip clones from and builds; its
        // `#egg=...` and `@revision` are not part of the path.
        if inner != "file" {
            return None;
        }
        let url = &value[vcs.len() + 1..];
        let url = url.split('#').next().unwrap_or(url);
        let url = match url.rsplit_once('@') {
            Some((path, rev)) if !rev.contains('/') => path,
            _ => url,
        };
        value = url.to_string();
    }
    let lower = value.to_ascii_lowercase();
    let value = match value.strip_suffix(']').and_then(|v| v.rsplit_once('[')) {
        Some((path, _)) => path.to_string(),
        None => value,
    };
    if !lower.starts_with("file:") {
        if is_url(&value) {
            return None;
        }
        return Some(value);
    }
    file_url_path(&value)
}

/// The path a `file:` URL names (any case; its host and percent escapes
/// taken away; another host's path kept as `//host/path`), `None` for any
/// other text.
pub fn file_url_path(url: &str) -> Option<String> {
    let path = url.get(..5).filter(|s| s.eq_ignore_ascii_case("file:"))?;
    let path = &url[path.len()..];
    let path = match path.strip_prefix("//") {
        // `file://host/path`: the host is not a folder of the site either.
        Some(rest) => match rest.find('/') {
            Some(at) if at == 0 || rest[..at].eq_ignore_ascii_case("localhost") => &rest[at..],
            _ => return Some(format!("//{rest}")),
        },
        None => path,
    };
    Some(percent_decoded(path))
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<(usize, String)> {
        logical_lines(text)
    }

    #[test]
    fn logical_lines_as_pip_reads_them() {
        assert_eq!(
            lines(
                "# top\n\nflask==3.1 # web\r\ngreet\\\ning==1\n  six  \n-r base.txt#not-a-comment\n"
            ),
            [
                (3, "flask==3.1".to_string()),
                (4, "greeting==1".to_string()),
                (6, "six".to_string()),
                (7, "-r base.txt#not-a-comment".to_string()),
            ]
        );
        // A lone \r ends a line for Python too; a comment ends a continuation.
        assert_eq!(
            lines("a==1\rb==2\\\n# c\n"),
            [(1, "a==1".to_string()), (2, "b==2".to_string())]
        );
        assert_eq!(lines("\u{feff}a\\"), [(1, "a".to_string())]);
    }

    fn include(kind: IncludeKind, path: &str) -> Result<Line, Unfixed> {
        Ok(Line::Include {
            kind,
            path: path.into(),
        })
    }

    const REQ: Result<Line, Unfixed> = Ok(Line::Requirement { platform: false });

    /// Every form on the list, and what it is taken for.
    #[test]
    fn the_forms_pushdeploy_understands() {
        use IncludeKind::*;
        let table: &[(&str, Result<Line, Unfixed>)] = &[
            ("flask", REQ),
            ("flask==3.1.0", REQ),
            ("Flask >= 3.0, < 4", REQ),
            ("flask[async,dotenv]==3.1", REQ),
            ("zope.interface~=6.0", REQ),
            ("flask (>=3.0)", REQ),
            ("pkg===1.0+local", REQ),
            ("django==4.2.*", REQ),
            ("pywin32==306 ; sys_platform == \"win32\"", REQ),
            ("six;python_version<'3'", REQ),
            (
                "x==1; platform_release >= '6'",
                Ok(Line::Requirement { platform: true }),
            ),
            ("flask==3.1 --hash=sha256:0123 --hash sha256:4567", REQ),
            ("-r base.txt", include(Requirements, "base.txt")),
            ("-rbase.txt", include(Requirements, "base.txt")),
            ("-r\tbase.txt", include(Requirements, "base.txt")),
            ("--requirement base.txt", include(Requirements, "base.txt")),
            (
                "--requirement=reqs/base.txt",
                include(Requirements, "reqs/base.txt"),
            ),
            (
                "-c constraints.txt",
                include(Constraints, "constraints.txt"),
            ),
            ("-cconstraints.txt", include(Constraints, "constraints.txt")),
            ("--constraint=c.txt", include(Constraints, "c.txt")),
            (
                "-r /proc/self/environ",
                include(Requirements, "/proc/self/environ"),
            ),
            (
                "-r file:///proc/self/environ",
                include(Requirements, "file:///proc/self/environ"),
            ),
            ("-i https://pypi.example/simple", Ok(Line::Options)),
            ("--index-url=https://pypi.example/simple", Ok(Line::Options)),
            (
                "--extra-index-url https://x.example/simple",
                Ok(Line::Options),
            ),
            ("--no-index", Ok(Line::Options)),
            ("--pre", Ok(Line::Options)),
            ("--prefer-binary", Ok(Line::Options)),
            ("--only-binary :all:", Ok(Line::Options)),
            ("--no-binary=:none:", Ok(Line::Options)),
            ("--trusted-host pypi.example", Ok(Line::Options)),
            ("--require-hashes", Ok(Line::Options)),
            ("-f https://x.example/wheels/", Ok(Line::Options)),
            (
                "--find-links /srv/wheels",
                Ok(Line::FindLinks {
                    dir: "/srv/wheels".into(),
                }),
            ),
            (
                "-f/srv/wheels",
                Ok(Line::FindLinks {
                    dir: "/srv/wheels".into(),
                }),
            ),
            (
                "--no-index --find-links https://x.example/",
                Ok(Line::Options),
            ),
        ];
        for (line, want) in table {
            assert_eq!(&classify(line), want, "{line}");
        }
    }

    /// A sample of what is not on the list: each makes the installer run.
    #[test]
    fn forms_outside_the_list() {
        let opt = |o: &str| Err(Unfixed::Option { option: o.into() });
        let table: &[(&str, Result<Line, Unfixed>)] = &[
            ("-e .", Err(Unfixed::Editable)),
            (
                "-e git+https://x.example/r.git#egg=r",
                Err(Unfixed::Editable),
            ),
            ("--editable=./lib", Err(Unfixed::Editable)),
            ("./libs/mylib", Err(Unfixed::LocalPath)),
            ("libs/mylib", Err(Unfixed::LocalPath)),
            ("libs/mylib[extra]", Err(Unfixed::LocalPath)),
            ("/srv/pkgs/x-1.0-py3-none-any.whl", Err(Unfixed::LocalPath)),
            ("x-1.0.tar.gz", Err(Unfixed::LocalPath)),
            (".", Err(Unfixed::LocalPath)),
            ("file:///srv/x.whl", Err(Unfixed::LocalPath)),
            ("x @ file:///srv/x.whl", Err(Unfixed::LocalPath)),
            ("x @ https://x.example/x-1.0.whl", Err(Unfixed::Url)),
            ("https://x.example/x-1.0.whl", Err(Unfixed::Url)),
            ("git+https://x.example/r.git@main#egg=r", Err(Unfixed::Vcs)),
            (
                "r @ git+https://x.example/r.git@0123456789abcdef0123456789abcdef01234567",
                Err(Unfixed::Vcs),
            ),
            ("flask==${FLASK_VERSION}", Err(Unfixed::Variable)),
            ("-r ${REQS}", Err(Unfixed::Variable)),
            ("-r https://x.example/base.txt", Err(Unfixed::RemoteInclude)),
            ("-rhttps://x.example/base.txt", Err(Unfixed::RemoteInclude)),
            ("-f ./wheels", Err(Unfixed::RelativeFindLinks)),
            ("--find-links=wheels", Err(Unfixed::RelativeFindLinks)),
            ("-f file:///srv/wheels", Err(Unfixed::LocalPath)),
            ("--req base.txt", opt("--req")),
            ("--requirements base.txt", opt("--requirements")),
            ("--upgrade", opt("--upgrade")),
            ("-U flask", opt("-U")),
            ("-Z", opt("-Z")),
            ("--no-index=1", opt("--no-index=1")),
            (
                "flask==3.1 --index-url https://x.example/",
                opt("--index-url"),
            ),
            ("--hash=sha256:00", opt("--hash")),
            ("-r \"base file.txt\"", Err(Unfixed::Unreadable)),
            ("-r", Err(Unfixed::Unreadable)),
            ("-r a.txt -r b.txt", Err(Unfixed::Unreadable)),
            ("flask=3.1", Err(Unfixed::Unreadable)),
            ("flask==3.1#x", Err(Unfixed::Unreadable)),
            ("flask[a", Err(Unfixed::Unreadable)),
            ("-flask", Err(Unfixed::RelativeFindLinks)),
            ("-Xflask", opt("-Xflask")),
            (
                "-i https://x.example/simple flask",
                Err(Unfixed::Unreadable),
            ),
            (
                "flask ==3.1 ; python_version < \"3.12\" \u{e9}",
                Err(Unfixed::Unreadable),
            ),
        ];
        for (line, want) in table {
            assert_eq!(&classify(line), want, "{line}");
        }
    }

    #[test]
    fn variables_expand_as_pip_expands_them() {
        let env = |name: &str| (name == "SECRET").then(|| "/proc/self/environ".to_string());
        assert_eq!(expand("${SECRET}", env), "/proc/self/environ");
        assert_eq!(expand("a${UNSET}b${lower}", env), "a${UNSET}b${lower}");
        assert_eq!(
            include_value("-r ${SECRET}").map(|(_, v)| expand(&v, env)),
            Some("/proc/self/environ".into())
        );
    }

    #[test]
    fn local_paths_as_pip_takes_them() {
        let table: &[(&str, Option<&str>)] = &[
            ("/tmp/outside", Some("/tmp/outside")),
            ("../x", Some("../x")),
            ("./libs/mylib[extra]", Some("./libs/mylib")),
            ("libs/x ; python_version > '3'", Some("libs/x")),
            ("-e /tmp/outside", Some("/tmp/outside")),
            ("--editable=../x", Some("../x")),
            ("-e.", Some(".")),
            ("file:///tmp/outside", Some("/tmp/outside")),
            ("FILE://localhost/tmp/x", Some("/tmp/x")),
            ("file://server/share", Some("//server/share")),
            ("-e file:/..", Some("/..")),
            ("file:..%2Fx", Some("../x")),
            ("x @ file:///srv/x.whl", Some("/srv/x.whl")),
            ("/srv/x@1", Some("/srv/x@1")),
            ("x[a]@ /srv/x", Some("/srv/x")),
            ("x @ https://x.example/x.whl", None),
            ("-e git+file:///tmp/r#egg=r", Some("/tmp/r")),
            ("git+file:///tmp/r@main#egg=r", Some("/tmp/r")),
            ("r @ GIT+FILE://localhost/tmp/r@0123abc", Some("/tmp/r")),
            ("git+file:/tmp/r", Some("/tmp/r")),
            ("--editable=hg+file:///tmp/r#egg=r", Some("/tmp/r")),
            ("svn+file:///tmp/r", Some("/tmp/r")),
            ("r @ bzr+file://server/r", Some("//server/r")),
            ("git+file:libs/r#egg=r", Some("libs/r")),
            ("git+file:..%2Fr", Some("../r")),
            ("r @ git+ssh://git@x.example/r.git@main", None),
            ("-e git+https://x.example/r.git#egg=r", None),
            ("-f file:///srv/wheels", None),
            ("-f /srv/wheels", None),
            ("flask==3.1", None),
            ("https://x.example/x-1.0.whl", None),
        ];
        for (line, want) in table {
            assert_eq!(local_path(line).as_deref(), *want, "{line}");
        }
    }
}
