//! Which commit a git requirement (`name @ git+https://host/repo.git@main`)
//! names now, asked of its remote with `git ls-remote`, and which commit the
//! env holds of it (its `direct_url.json`): a line by branch or tag whose
//! commit the env already holds counts as pinned at that commit, as a line
//! at a full commit id does.
//!
//! The revision is resolved as pip resolves it (`pip/_internal/vcs/git.py`):
//! a branch before a tag of the same name, an annotated tag as the commit it
//! peels to, no revision as the remote's HEAD, `refs/...` as that ref; a
//! revision that names no branch or tag (a short commit id) cannot be listed,
//! and the installer runs as before. git is run as pip runs it (the git CLI,
//! so that the server's `url.<base>.insteadOf`, credential helpers and
//! proxies apply alike), with no shell, no prompt, under the deployment's
//! limits, every value of the line after `--`.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::error::named;
use crate::lockfile::normalize;
use crate::process::Runner;

/// A git URL of a requirement line, as pip reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitUrl {
    /// The URL git is given (after `git+`, without `@revision` and `#...`).
    #[serde(skip)]
    pub url: String,
    /// The same as pip records it in `direct_url.json` (a password taken out).
    #[serde(rename = "url")]
    pub shown_url: String,
    pub revision: Option<String>,
    pub subdirectory: Option<String>,
    /// The distribution's name, when the line gives it (`name @`, `#egg=`).
    pub name: Option<String>,
}

/// pip's git schemes (`Git.schemes`), after `git+`.
const SCHEMES: &[&str] = &["http", "https", "ssh", "git", "file"];

impl GitUrl {
    /// The git URL of a requirement line (`git+https://...`, `name @
    /// git+ssh://...`), `None` when the line has none that pushdeploy can
    /// ask about (another VCS, an scp-like address, an empty revision, a
    /// revision that is no ref name).
    pub fn parse(line: &str) -> Option<GitUrl> {
        // The requirement is the words before the first option.
        let words: Vec<&str> = line.split_whitespace().collect();
        let end = words
            .iter()
            .position(|w| w.starts_with('-'))
            .unwrap_or(words.len());
        let spec = words[..end].join(" ");
        let start = spec.to_ascii_lowercase().find("git+")?;
        let before = spec[..start].trim();
        let name = match before.strip_suffix('@') {
            Some(name) => Some(name.trim()),
            None if before.is_empty() => None,
            None => return None,
        };
        let token = spec[start + 4..].split([' ', '\t']).next()?;
        let token = token.trim_end_matches(';');
        // Text that is no URL (an escape sequence for the pusher's
        // terminal): not asked about, the installer runs.
        if token.chars().any(char::is_control) {
            return None;
        }
        let (token, fragment) = match token.split_once('#') {
            Some((url, fragment)) => (url, Some(fragment)),
            None => (token, None),
        };
        let (scheme, rest) = token.split_once("://")?;
        if !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
            return None;
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (netloc, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        // pip takes the revision from the path only (`user@` is the netloc's).
        let (path, revision) = match path.rsplit_once('@') {
            Some((path, revision)) if !revision.is_empty() => (path, Some(revision)),
            Some(_) => return None,
            None => (path, None),
        };
        if let Some(revision) = revision
            && !ref_name_ok(revision)
        {
            return None;
        }
        let mut url = format!("{scheme}://{netloc}{path}");
        if let Some(query) = query {
            url = format!("{url}?{query}");
        }
        let mut subdirectory = None;
        let mut egg = None;
        for part in fragment.unwrap_or("").split('&') {
            match part.split_once('=') {
                Some(("subdirectory", v)) if !v.is_empty() => subdirectory = Some(v.to_string()),
                Some(("egg", v)) if !v.is_empty() => egg = Some(v.to_string()),
                _ => {}
            }
        }
        let name = name
            .map(|n| n.split('[').next().unwrap_or(n).trim().to_string())
            .or(egg)
            .filter(|n| !n.is_empty());
        Some(GitUrl {
            shown_url: redacted(&url),
            url,
            revision: revision.map(str::to_string),
            subdirectory,
            name,
        })
    }

    /// The full commit id the line is at, if it is at one.
    pub fn pinned(&self) -> Option<&str> {
        self.revision.as_deref().filter(|r| is_full_id(r))
    }

    /// The revision as the output names it.
    fn what(&self) -> String {
        match &self.revision {
            Some(revision) => format!("{} of {}", named(revision), self.shown_url),
            None => format!("{} (no revision: the remote's HEAD)", self.shown_url),
        }
    }
}

/// A revision git could take for a ref name: nothing that a ref cannot hold
/// (control characters, spaces, `~^:?*[\`, `..`). Anything else is not
/// asked about: the installer runs.
fn ref_name_ok(revision: &str) -> bool {
    !revision.contains("..")
        && !revision.contains("@{")
        && revision.chars().all(|c| {
            !c.is_control() && !c.is_whitespace() && !"~^:?*[\\".contains(c) && c != '\u{7f}'
        })
}

pub fn is_full_id(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A URL with its password taken out, as pip records it (PEP 610): a
/// `user:password@` goes, `git@` and `${VAR}` stay.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (netloc, tail) = rest.split_at(end);
    let Some((auth, host)) = netloc.rsplit_once('@') else {
        return url.to_string();
    };
    let env_var = auth.starts_with("${") && auth.ends_with('}');
    if auth == "git" || env_var {
        return url.to_string();
    }
    format!("{scheme}://{host}{tail}")
}

/// Which ref gave the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum By {
    /// The line is at a full commit id: nothing to ask.
    Pinned,
    Branch,
    Tag,
    /// An annotated tag, peeled (`^{}`) to its commit.
    AnnotatedTag,
    /// No revision: the remote's HEAD.
    Head,
    /// A `refs/...` revision, as named.
    Ref,
}

/// The commit a git line names now, or why that is not known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Answer {
    Commit { commit: String, by: By },
    Unknown { why: String },
}

/// A distribution of the env that a git line installed: its name and the
/// commit its `direct_url.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    pub name: String,
    /// `None` when it was not installed from git.
    pub commit: Option<String>,
    /// Whether it was installed from this same URL, revision and subdirectory.
    pub same_request: bool,
}

/// One git line of the requirements, what its revision names now, and what
/// the env holds of it: plan data, which the dry run shows and the real run
/// acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitLine {
    pub file: String,
    pub line: usize,
    #[serde(flatten)]
    pub url: GitUrl,
    pub answer: Option<Answer>,
    pub installed: Option<Installed>,
}

impl GitLine {
    pub fn new(file: String, line: usize, url: GitUrl) -> GitLine {
        let answer = url.pinned().map(|id| Answer::Commit {
            commit: id.to_ascii_lowercase(),
            by: By::Pinned,
        });
        GitLine {
            file,
            line,
            url,
            answer,
            installed: None,
        }
    }

    /// The commit the line names, when known.
    pub fn commit(&self) -> Option<&str> {
        match &self.answer {
            Some(Answer::Commit { commit, .. }) => Some(commit),
            _ => None,
        }
    }

    /// Whether the env holds what the line names now: the distribution
    /// installed from the same URL, revision and subdirectory, at the commit.
    pub fn satisfied(&self) -> bool {
        match (&self.installed, self.commit()) {
            (Some(installed), Some(commit)) => {
                installed.same_request && installed.commit.as_deref() == Some(commit)
            }
            _ => false,
        }
    }

    /// The distribution to install again: the env holds another commit of it
    /// (or the same from another request), which pip would keep while its
    /// version is the same.
    pub fn stale(&self) -> Option<&str> {
        self.commit()?;
        let installed = self.installed.as_ref()?;
        (!self.satisfied()).then_some(installed.name.as_str())
    }

    /// `requirements.txt line 2`, as messages name the line.
    pub fn place(&self) -> String {
        format!("{} line {}", named(&self.file), self.line)
    }
}

impl fmt::Display for GitLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |id: &str| crate::commit::short_id(id).to_string();
        write!(f, "{}: ", self.place())?;
        match &self.answer {
            None => write!(f, "{} was not asked", self.url.what()),
            Some(Answer::Unknown { why }) => write!(
                f,
                "which commit {} names is not known ({why}): the installer runs",
                self.url.what()
            ),
            Some(Answer::Commit { commit, by }) => {
                let by = match by {
                    By::Pinned => "",
                    By::Branch => "branch ",
                    By::Tag => "tag ",
                    By::AnnotatedTag => "annotated tag ",
                    By::Head => "",
                    By::Ref => "ref ",
                };
                match self.url.pinned() {
                    Some(_) => write!(f, "{} at commit {}", self.url.shown_url, short(commit))?,
                    None => write!(f, "{by}{} is commit {}", self.url.what(), short(commit))?,
                }
                match &self.installed {
                    _ if self.satisfied() => f.write_str("; env/ has it"),
                    Some(i) => write!(
                        f,
                        "; env/ has {} {}: installed again",
                        named(&i.name),
                        i.commit.as_deref().map_or("(not from git)".into(), short)
                    ),
                    None => f.write_str("; not in env/"),
                }
            }
        }
    }
}

/// Asks each remote which commit the unpinned lines name (one `git
/// ls-remote` per URL), and reads what the env at `env` (a reused env)
/// holds of each line.
pub fn resolve(lines: &mut [GitLine], env: Option<&Path>, runner: &Runner) {
    let mut urls: Vec<String> = lines
        .iter()
        .filter(|l| l.answer.is_none())
        .map(|l| l.url.url.clone())
        .collect();
    urls.sort();
    urls.dedup();
    for url in urls {
        let asking: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].answer.is_none() && lines[i].url.url == url)
            .collect();
        let mut patterns: Vec<String> = Vec::new();
        for &i in &asking {
            patterns.extend(patterns_for(lines[i].url.revision.as_deref()));
        }
        patterns.sort();
        patterns.dedup();
        let listed = ls_remote(&url, &patterns, runner);
        for &i in &asking {
            let answer = match &listed {
                Ok(refs) => answer(refs, lines[i].url.revision.as_deref()),
                Err(why) => Answer::Unknown {
                    why: why.replace(&url, &lines[i].url.shown_url),
                },
            };
            lines[i].answer = Some(answer);
        }
    }
    let dists = env.map(dists).unwrap_or_default();
    for line in lines.iter_mut() {
        line.installed = installed(&dists, &line.url);
    }
}

/// The ref names `git ls-remote` is asked for (it matches them by their
/// last parts: the answer is read for exact names). An annotated tag's
/// commit is listed only when its `^{}` name is asked for too.
fn patterns_for(revision: Option<&str>) -> Vec<String> {
    let tag = |name: String| [format!("{name}^{{}}"), name];
    match revision {
        None => vec!["HEAD".into()],
        Some(r) if r.starts_with("refs/") => tag(r.to_string()).to_vec(),
        Some(r) => [
            vec![format!("refs/heads/{r}")],
            tag(format!("refs/tags/{r}")).to_vec(),
        ]
        .concat(),
    }
}

/// The command that lists `patterns` of the remote at `url`: every value
/// after `--`, so that none can be taken for an option of git.
fn ls_remote_args(url: &str, patterns: &[String]) -> Vec<String> {
    let mut args = vec!["ls-remote".to_string(), "--".to_string(), url.to_string()];
    args.extend(patterns.iter().cloned());
    args
}

/// `<ref> -> <id>` as `git ls-remote` lists them, or why it could not.
fn ls_remote(
    url: &str,
    patterns: &[String],
    runner: &Runner,
) -> Result<Vec<(String, String)>, String> {
    let expr = duct::cmd("git", ls_remote_args(url, patterns))
        // No prompt for a password: a remote that needs one is not asked.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never");
    let out = runner
        .capture("git ls-remote", expr)
        .map_err(|e| format!("git ls-remote: {e:#}"))?;
    if !out.success {
        // git's `fatal:` line says why; what follows it is advice.
        let text = String::from_utf8_lossy(&out.stderr);
        let fatal = text.lines().find_map(|l| l.trim().strip_prefix("fatal: "));
        let why = match fatal {
            Some(line) => line.to_string(),
            None => crate::process::last_line(&out.stderr),
        };
        return Err(format!("git ls-remote failed: {}", show_message(&why)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (id, name) = line.split_once('\t')?;
            is_full_id(id).then(|| (name.to_string(), id.to_ascii_lowercase()))
        })
        .collect())
}

/// A line of git's output for a message: its hidden characters shown.
fn show_message(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c.is_control() {
            true => c.escape_debug().collect::<Vec<_>>(),
            false => vec![c],
        })
        .collect()
}

/// The commit a revision names among the remote's refs, as pip picks it.
fn answer(refs: &[(String, String)], revision: Option<&str>) -> Answer {
    let get = |name: &str| {
        refs.iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.clone())
    };
    // An annotated tag's own id is not a commit: its `^{}` line is.
    let peeled = |name: &str| match get(&format!("{name}^{{}}")) {
        Some(id) => Some((id, true)),
        None => get(name).map(|id| (id, false)),
    };
    let found = match revision {
        None => get("HEAD").map(|id| (id, By::Head)),
        Some(r) if r.starts_with("refs/") => peeled(r).map(|(id, _)| (id, By::Ref)),
        Some(r) => get(&format!("refs/heads/{r}"))
            .map(|id| (id, By::Branch))
            .or_else(|| {
                peeled(&format!("refs/tags/{r}")).map(|(id, annotated)| {
                    let by = if annotated { By::AnnotatedTag } else { By::Tag };
                    (id, by)
                })
            }),
    };
    match (found, revision) {
        (Some((commit, by)), _) => Answer::Commit { commit, by },
        (None, None) => Answer::Unknown {
            why: "the remote lists no HEAD".into(),
        },
        (None, Some(r)) => Answer::Unknown {
            why: format!(
                "the remote has no branch or tag {}: pip takes it for a commit",
                named(r)
            ),
        },
    }
}

/// A distribution of the env: its name (normalised) and, when it was
/// installed from git, what its `direct_url.json` records.
#[derive(Debug, Clone)]
struct Dist {
    name: String,
    git: Option<Recorded>,
}

#[derive(Debug, Clone)]
struct Recorded {
    url: String,
    revision: Option<String>,
    subdirectory: Option<String>,
    commit: String,
}

fn dists(env: &Path) -> Vec<Dist> {
    crate::env::dist_infos(env)
        .into_iter()
        .filter_map(|dir| {
            let file = dir.file_name()?.to_string_lossy().into_owned();
            let stem = file.strip_suffix(".dist-info")?;
            let name = stem.rsplit_once('-').map_or(stem, |(name, _)| name);
            Some(Dist {
                name: normalize(name),
                git: recorded(&dir.join("direct_url.json")),
            })
        })
        .collect()
}

/// What a `direct_url.json` records of a git install.
fn recorded(path: &Path) -> Option<Recorded> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(String::from);
    let vcs = json.get("vcs_info")?;
    if vcs.get("vcs")?.as_str()? != "git" {
        return None;
    }
    Some(Recorded {
        url: text(json.get("url"))?,
        revision: text(vcs.get("requested_revision")),
        subdirectory: text(json.get("subdirectory")),
        commit: text(vcs.get("commit_id"))?.to_ascii_lowercase(),
    })
}

/// What the env holds of a line: by its name when it gives one (from git
/// or not), else the distribution installed from the same URL (and
/// subdirectory).
fn installed(dists: &[Dist], url: &GitUrl) -> Option<Installed> {
    let same_place = |g: &Recorded| g.url == url.shown_url && g.subdirectory == url.subdirectory;
    let same_request = |d: &Dist| {
        d.git
            .as_ref()
            .is_some_and(|g| same_place(g) && g.revision == url.revision)
    };
    let dist = match &url.name {
        Some(name) => {
            let name = normalize(name);
            dists.iter().find(|d| d.name == name)
        }
        None => dists.iter().find(|d| same_request(d)).or_else(|| {
            dists
                .iter()
                .find(|d| d.git.as_ref().is_some_and(same_place))
        }),
    }?;
    Some(Installed {
        name: dist.name.clone(),
        commit: dist.git.as_ref().map(|g| g.commit.clone()),
        same_request: same_request(dist),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_as_pip_reads_them() {
        let url = GitUrl::parse("hellogit @ git+https://h.example/r.git@main").unwrap();
        assert_eq!(url.url, "https://h.example/r.git");
        assert_eq!(url.revision.as_deref(), Some("main"));
        assert_eq!(url.name.as_deref(), Some("hellogit"));
        let url =
            GitUrl::parse("git+ssh://git@h.example/r.git@v1.0#egg=x_y&subdirectory=lib").unwrap();
        assert_eq!(url.url, "ssh://git@h.example/r.git");
        assert_eq!(url.shown_url, "ssh://git@h.example/r.git");
        assert_eq!(url.revision.as_deref(), Some("v1.0"));
        assert_eq!(url.name.as_deref(), Some("x_y"));
        assert_eq!(url.subdirectory.as_deref(), Some("lib"));
        let url = GitUrl::parse("x[a] @ git+https://u:secret@h.example/r.git ; python_version>'3'")
            .unwrap();
        assert_eq!(url.url, "https://u:secret@h.example/r.git");
        assert_eq!(url.shown_url, "https://h.example/r.git");
        assert_eq!(url.revision, None);
        assert_eq!(url.name.as_deref(), Some("x"));
        let id = "0123456789abcdef0123456789abcdef01234567";
        let url = GitUrl::parse(&format!("x @ git+https://h.example/r.git@{id}")).unwrap();
        assert_eq!(url.pinned(), Some(id));
        // Not asked: another VCS, an scp-like address, an empty revision,
        // a revision no ref can have.
        for line in [
            "x @ hg+https://h.example/r",
            "git+git@h.example:r.git",
            "x @ git+https://h.example/r.git@",
            "x @ git+https://h.example/r.git@a..b",
            "x @ git+ext::sh -c touch% /tmp/x",
            "x @ git+https://h.example/r.git@a\u{1b}[31m",
            "x @ git+https://h.\u{1b}]0;x\u{7}example/r.git@main",
        ] {
            assert_eq!(GitUrl::parse(line), None, "{line}");
        }
    }

    /// A revision from the commit never becomes an option of git: every
    /// value comes after `--`.
    #[test]
    fn hostile_revisions_come_after_the_double_dash() {
        for rev in [
            "--upload-pack=touch /tmp/pwned",
            "-x",
            "@--upload-pack=x",
            "a\n--upload-pack=x",
        ] {
            let line = format!("x @ git+https://h.example/r.git@{rev}");
            let url = GitUrl::parse(&line).unwrap();
            let revision = url.revision.clone().unwrap();
            assert!(!revision.contains(char::is_whitespace), "{revision:?}");
            let patterns = patterns_for(Some(&revision));
            let args = ls_remote_args(&url.url, &patterns);
            assert_eq!(args[..2], ["ls-remote", "--"]);
            assert!(args[2].starts_with("https://h.example/r.git"), "{args:?}");
            assert!(args[3..].iter().all(|a| a.starts_with("refs/")), "{args:?}");
        }
    }

    /// The same, with git itself: a revision that would run a program as
    /// `--upload-pack` runs nothing, and names no commit (pip runs).
    #[test]
    fn git_runs_nothing_a_revision_names() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let marker = dir.path().join("ran");
        let evil = dir.path().join("evil.sh");
        std::fs::write(&evil, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        std::fs::set_permissions(&evil, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let runner = Runner::new(Vec::new(), crate::process::Limits::DEFAULT, None);
        let git = |args: &[&str]| {
            let expr = duct::cmd("git", args)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_NAME", "a")
                .env("GIT_AUTHOR_EMAIL", "a@example.invalid")
                .env("GIT_COMMITTER_NAME", "a")
                .env("GIT_COMMITTER_EMAIL", "a@example.invalid");
            assert!(runner.capture("git", expr).unwrap().success, "git {args:?}");
        };
        let path = repo.to_str().unwrap();
        git(&["init", "-q", "-b", "main", path]);
        git(&["-C", path, "commit", "-q", "--allow-empty", "-m", "one"]);
        let mut lines: Vec<GitLine> = [
            format!("--upload-pack={}", evil.display()),
            format!("@--upload-pack={}", evil.display()),
            "-x".to_string(),
            "main".to_string(),
        ]
        .iter()
        .map(|rev| {
            let url = GitUrl::parse(&format!("x @ git+file://{path}@{rev}")).unwrap();
            GitLine::new("requirements.txt".into(), 1, url)
        })
        .collect();
        resolve(&mut lines, None, &runner);
        assert!(!marker.exists(), "git ran a program the line named");
        let known: Vec<bool> = lines.iter().map(|l| l.commit().is_some()).collect();
        assert_eq!(known, [false, false, false, true], "{lines:?}");
    }

    #[test]
    fn revisions_resolve_as_pip_resolves_them() {
        let refs: Vec<(String, String)> = [
            ("HEAD", "a"),
            ("refs/heads/main", "a"),
            ("refs/heads/v1", "b"),
            ("refs/tags/v1", "c"),
            ("refs/tags/v2", "d"),
            ("refs/tags/v2^{}", "e"),
            ("refs/tags/v3", "f"),
            ("refs/remotes/x/refs/heads/other", "g"),
        ]
        .iter()
        .map(|(n, id)| (n.to_string(), id.repeat(40)))
        .collect();
        let commit = |rev: Option<&str>| match answer(&refs, rev) {
            Answer::Commit { commit, by } => Some((commit[..1].to_string(), by)),
            Answer::Unknown { .. } => None,
        };
        assert_eq!(commit(None), Some(("a".into(), By::Head)));
        assert_eq!(commit(Some("main")), Some(("a".into(), By::Branch)));
        // A branch before a tag of the same name.
        assert_eq!(commit(Some("v1")), Some(("b".into(), By::Branch)));
        assert_eq!(commit(Some("v2")), Some(("e".into(), By::AnnotatedTag)));
        assert_eq!(commit(Some("v3")), Some(("f".into(), By::Tag)));
        assert_eq!(
            commit(Some("refs/tags/v2")),
            Some(("e".into(), By::Ref)),
            "a ref by its full name, peeled"
        );
        assert_eq!(commit(Some("other")), None, "only exact names count");
        assert_eq!(commit(Some("abc1234")), None, "a short id cannot be listed");
        // What git is asked for: a tag's peeled line is listed only when asked.
        assert_eq!(
            patterns_for(Some("v2")),
            ["refs/heads/v2", "refs/tags/v2^{}", "refs/tags/v2"]
        );
        assert_eq!(patterns_for(None), ["HEAD"]);
    }

    #[test]
    fn passwords_are_taken_out_as_pip_does() {
        assert_eq!(redacted("https://u:p@h/r.git"), "https://h/r.git");
        assert_eq!(redacted("https://tok@h/r.git"), "https://h/r.git");
        assert_eq!(redacted("ssh://git@h/r.git"), "ssh://git@h/r.git");
        assert_eq!(redacted("https://${T}@h/r.git"), "https://${T}@h/r.git");
        assert_eq!(redacted("https://h/r.git"), "https://h/r.git");
    }

    fn dist(name: &str, rev: Option<&str>, commit: &str) -> Dist {
        Dist {
            name: name.into(),
            git: Some(Recorded {
                url: "https://h/r.git".into(),
                revision: rev.map(String::from),
                subdirectory: None,
                commit: commit.into(),
            }),
        }
    }

    #[test]
    fn what_the_env_holds_of_a_line() {
        let line = |text: &str, commit: &str, dists: &[Dist]| {
            let url = GitUrl::parse(text).unwrap();
            let mut line = GitLine::new("requirements.txt".into(), 1, url);
            line.answer = Some(Answer::Commit {
                commit: commit.into(),
                by: By::Branch,
            });
            line.installed = installed(dists, &line.url);
            line
        };
        let dists = [dist("hello-git", Some("main"), "a")];
        let same = line("Hello_Git @ git+https://h/r.git@main", "a", &dists);
        assert!(same.satisfied());
        assert_eq!(same.stale(), None);
        let moved = line("hello-git @ git+https://h/r.git@main", "b", &dists);
        assert!(!moved.satisfied());
        assert_eq!(moved.stale(), Some("hello-git"));
        // Another revision naming the same commit: installed again, so that
        // the env records the revision asked for.
        let other = line("git+https://h/r.git@v1", "a", &dists);
        assert!(!other.satisfied());
        assert_eq!(other.stale(), Some("hello-git"));
        let new = line("x @ git+https://h/r.git@main", "a", &dists);
        assert_eq!(new.installed, None);
        assert_eq!(new.stale(), None);
        // Installed by that name, but not from git: installed again from it.
        let wheel = [Dist {
            name: "x".into(),
            git: None,
        }];
        let from_index = line("x @ git+https://h/r.git@main", "a", &wheel);
        assert_eq!(from_index.stale(), Some("x"));
        assert!(
            from_index
                .to_string()
                .ends_with("env/ has x (not from git): installed again")
        );
    }
}
