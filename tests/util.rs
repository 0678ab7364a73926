//! A server in a temp dir: a bare repository set up with `pushdeploy init`,
//! its site, and a clone to push from with the real git client. pip installs
//! only from `fixtures/wheels`, never from the network.
//!
//! Every program a test runs (pushdeploy, git, the env's python) goes through
//! `TestCommand`, which gives it the test environment (the tests' cache dir
//! among it) and, when a check fails, shows the command, its directory, its
//! status and its output. Whole outputs are compared with
//! `tests/transcripts/` by `assert_transcript`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_pushdeploy");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn pyenv(version: &str) -> PathBuf {
    home()
        .join(".pyenv/versions")
        .join(version)
        .join("bin/python")
}

/// uv, when it is installed: on PATH, or where .ci/run puts it.
pub fn uv() -> Option<PathBuf> {
    let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/uv");
    which::which("uv")
        .ok()
        .or_else(|| ci.is_file().then_some(ci))
}

pub fn home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").expect("HOME is set"))
}

/// The environment every program a test runs gets: pip offline from the
/// fixtures, the tests' own cache dir (never the user's
/// `~/.cache/pushdeploy`), a fixed git identity and no system git config.
fn test_environment(cmd: &mut Command) {
    cmd.env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", fixtures().join("wheels"))
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("UV_NO_INDEX", "1")
        .env("UV_FIND_LINKS", fixtures().join("wheels"))
        // One pip seed for all tests: each interpreter's is made once per run.
        .env("PUSHDEPLOY_CACHE_DIR", cache_dir())
        // `init` turns running the app on; only the tests that run it
        // (running.rs, each with a port of its own) turn it on again.
        .env("PUSHDEPLOY_RUN", "false")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Tester")
        .env("GIT_AUTHOR_EMAIL", "ada@example.invalid")
        .env("GIT_COMMITTER_NAME", "Ada Tester")
        .env("GIT_COMMITTER_EMAIL", "ada@example.invalid")
        .env_remove("GIT_DIR")
        .env_remove("PUSHDEPLOY_RECREATE_ENV")
        .stdin(Stdio::null());
}

/// The cache dir every test shares (pip seeds), under cargo's target dir.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cache")
}

/// A program run the way every test runs programs: in the test environment,
/// in a given directory. `Server::pushdeploy_command` and
/// `Server::git_command` make the usual ones.
pub struct TestCommand {
    cmd: Command,
    input: Option<Vec<u8>>,
}

/// `pushdeploy` (the binary under test) in `dir`, in the test environment.
pub fn pushdeploy_in(dir: &Path) -> TestCommand {
    TestCommand::new(BIN, dir)
}

/// `git` in `dir`, in the test environment.
pub fn git_in(dir: &Path) -> TestCommand {
    TestCommand::new("git", dir)
}

impl TestCommand {
    pub fn new(program: impl AsRef<OsStr>, dir: &Path) -> TestCommand {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir);
        test_environment(&mut cmd);
        TestCommand { cmd, input: None }
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn envs(&mut self, vars: &[(&str, &str)]) -> &mut Self {
        self.cmd.envs(vars.iter().copied());
        self
    }

    /// What the program reads on stdin (nothing unless this is called).
    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Self {
        self.input = Some(input.into());
        self
    }

    /// The command as a shell line, for messages.
    pub fn describe(&self) -> String {
        let program = Path::new(self.cmd.get_program());
        let program = if program == Path::new(BIN) {
            "pushdeploy".to_string()
        } else {
            program.display().to_string()
        };
        let args = self
            .cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned());
        shell_words::join(std::iter::once(program).chain(args))
    }

    fn dir(&self) -> PathBuf {
        self.cmd
            .get_current_dir()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Runs it to the end; what it printed and how it ended.
    pub fn run(&mut self) -> Run {
        let output = match self.input.take() {
            None => self.cmd.output(),
            Some(input) => self.feed(input),
        };
        let output = output.unwrap_or_else(|e| panic!("{} cannot start: {e}", self.describe()));
        Run::of(self.describe(), self.dir(), output)
    }

    fn feed(&mut self, input: Vec<u8>) -> std::io::Result<Output> {
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A program may exit before reading all of it; that is its answer.
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
        let output = child.wait_with_output();
        writer.join().expect("the stdin writer does not panic");
        output
    }

    /// Starts it with the given stdout and stderr, for a test that reads its
    /// output as it comes or acts while it runs.
    pub fn spawn(&mut self, stdout: Stdio, stderr: Stdio) -> Child {
        eprintln!("$ {} &\n[dir {}]", self.describe(), self.dir().display());
        self.cmd
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{} cannot start: {e}", self.describe()))
    }
}

/// What a command printed and how it ended; shown whole when a test fails.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// The command line and the directory it ran in.
    pub command: String,
    pub dir: PathBuf,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n[dir {}]\n[status {}]\n[stdout]\n{}[stderr]\n{}",
            self.command,
            self.dir.display(),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

impl Run {
    fn of(command: String, dir: PathBuf, output: Output) -> Run {
        let run = Run {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            command,
            dir,
        };
        // Every run of a test, in order, is shown when the test fails.
        eprintln!("{run}");
        run
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Lines the hook printed, as the pusher sees them (`remote: ` removed).
    pub fn remote(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("remote: "))
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// The rest of the first output line that contains `prefix`, after it.
    #[track_caller]
    pub fn remote_or_stdout_line(&self, prefix: &str) -> String {
        let all = self.all();
        let line = all
            .lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("no line with {prefix:?} in:\n{self}"));
        line.split_once(prefix).unwrap().1.trim().to_string()
    }

    pub fn has(&self, needle: &str) -> bool {
        self.all().contains(needle)
    }

    #[track_caller]
    pub fn assert_has(&self, needle: &str) -> &Self {
        assert!(self.has(needle), "output lacks {needle:?}:\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        self.assert_status(0)
    }

    #[track_caller]
    pub fn assert_status(&self, status: i32) -> &Self {
        assert_eq!(self.status, status, "exit status:\n{self}");
        self
    }
}

pub struct Server {
    _dir: TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub site: PathBuf,
    pub work: PathBuf,
}

impl Server {
    /// A bare repository and site made by `pushdeploy init`, and an empty
    /// clone on branch main.
    pub fn new() -> Server {
        let dir = tempfile::Builder::new()
            .prefix("pushdeploy-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        let server = Server {
            repo: root.join("app.git"),
            site: root.join("site"),
            work: root.join("work"),
            root,
            _dir: dir,
        };
        server
            .pushdeploy(&[
                "init",
                server.repo.to_str().unwrap(),
                "--site",
                server.site.to_str().unwrap(),
            ])
            .assert_ok();
        std::fs::create_dir(&server.work).unwrap();
        server.git(&["init", "-q", "-b", "main"]).assert_ok();
        server
    }

    /// `pushdeploy <args>` in the server's root, in the test environment:
    /// the one way tests reach the binary.
    pub fn pushdeploy_command(&self, args: &[&str]) -> TestCommand {
        let mut cmd = pushdeploy_in(&self.root);
        cmd.args(args);
        cmd
    }

    /// `git <args>` in the clone, in the test environment.
    pub fn git_command(&self, args: &[&str]) -> TestCommand {
        let mut cmd = git_in(&self.work);
        cmd.args(args);
        cmd
    }

    /// `git --git-dir <repo> <args>`: git in the bare repository.
    pub fn git_server(&self, args: &[&str]) -> Run {
        self.git_command(&["--git-dir", self.repo.to_str().unwrap()])
            .args(args)
            .run()
    }

    pub fn git(&self, args: &[&str]) -> Run {
        self.git_command(args).run()
    }

    pub fn git_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        self.git_command(args).envs(vars).run()
    }

    pub fn pushdeploy(&self, args: &[&str]) -> Run {
        self.pushdeploy_command(args).run()
    }

    /// `pushdeploy deploy --repo <repository> <args>`, with extra variables.
    pub fn deploy_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        self.pushdeploy_command(&["deploy", "--repo", self.repo.to_str().unwrap()])
            .args(args)
            .envs(vars)
            .run()
    }

    /// `pushdeploy init <repository> --site <site>` for another pair of paths.
    pub fn init_at(&self, repo: &Path, site: &Path) -> Run {
        self.pushdeploy(&[
            "init",
            repo.to_str().unwrap(),
            "--site",
            site.to_str().unwrap(),
        ])
    }

    pub fn pushdeploy_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        self.pushdeploy_command(args).envs(vars).run()
    }

    /// `pushdeploy <command> --repo <repo> <args>`.
    pub fn run(&self, command: &str, args: &[&str]) -> Run {
        let mut all = vec![command, "--repo", self.repo.to_str().unwrap()];
        all.extend_from_slice(args);
        self.pushdeploy(&all)
    }

    /// Copies a fixture app into the clone.
    pub fn app(&self, name: &str) -> &Self {
        copy_dir(&fixtures().join("apps").join(name), &self.work);
        self
    }

    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let path = self.work.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        let path = self.work.join(rel);
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
        self
    }

    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]).assert_ok();
        self.git(&["commit", "-q", "--allow-empty", "-m", message])
            .assert_ok();
        self.git(&["rev-parse", "HEAD"]).stdout.trim().to_string()
    }

    /// `git push <repo> <args>` (default: main).
    pub fn push(&self, args: &[&str]) -> Run {
        let mut all = vec!["push", self.repo.to_str().unwrap()];
        all.extend_from_slice(if args.is_empty() { &["main"] } else { args });
        self.git(&all)
    }

    /// Moves the bare repository's main to the clone's, without deploying:
    /// a fetch runs no receive hooks.
    pub fn update_without_deploy(&self) {
        self.git_server(&["fetch", "-q", self.work.to_str().unwrap(), "+main:main"])
            .assert_ok();
    }

    pub fn site_file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.site.join(rel))
            .unwrap_or_else(|e| panic!("site file {rel}: {e}"))
    }

    /// Runs Python code with the site's env/bin/python.
    pub fn env_python(&self, code: &str) -> Run {
        TestCommand::new(self.site.join("env/bin/python"), &self.site)
            .args(["-c", code])
            .run()
    }

    /// `git config <args>` in the bare repository (the server's settings).
    pub fn config(&self, args: &[&str]) {
        self.git_server(&[&["config"], args].concat()).assert_ok();
    }

    /// A file of the bare repository's main, as git has it ("" if none).
    pub fn file_at_head(&self, path: &str) -> String {
        self.git_server(&["show", &format!("main:{path}")]).stdout
    }

    /// How many env directories (`.pushdeploy-env-*`) the site holds.
    pub fn env_dirs(&self) -> usize {
        std::fs::read_dir(&self.site)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".pushdeploy-env-")
            })
            .count()
    }

    /// A clone of the bare repository at `<root>/<name>`, with an author set.
    pub fn clone_as(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        self.git(&[
            "clone",
            "-q",
            self.repo.to_str().unwrap(),
            dir.to_str().unwrap(),
        ])
        .assert_ok();
        for (key, value) in [("user.name", name), ("user.email", "clone@example.invalid")] {
            git_in(&dir).args(["config", key, value]).run().assert_ok();
        }
        dir
    }

    /// The commit the bare repository's branch points to.
    pub fn branch_head(&self, branch: &str) -> String {
        self.git_server(&["rev-parse", &format!("refs/heads/{branch}")])
            .stdout
            .trim()
            .to_string()
    }

    pub fn records(&self) -> Vec<serde_json::Value> {
        let run = self.run("list", &["--json"]);
        run.assert_ok();
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("list --json: {e}:\n{run}"))
    }
}

/// The flask fixture, committed and pushed: a site with files and an env.
pub fn deployed_flask() -> Server {
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    s.push(&[]).assert_ok().assert_has("successful");
    s
}

pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Everything in a directory tree, byte for byte: each path with its kind,
/// mode and content (or symlink target). Symlinks are not followed.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            out.insert(
                rel,
                format!("link -> {}", std::fs::read_link(&path).unwrap().display()),
            );
        } else if meta.is_dir() {
            out.insert(rel, format!("dir {mode:o}"));
            walk(root, &path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.insert(
                rel,
                format!("file {mode:o} {:?}", String::from_utf8_lossy(&bytes)),
            );
        }
    }
}

/// Output made comparable from run to run: this server's paths, the given
/// commits' ids and all that changes between runs (times, dates, pids,
/// random names, the interpreter found, pip's version) replaced by names in
/// brackets; trailing spaces (git pads `remote:` lines) removed.
impl Server {
    pub fn normalise(&self, text: &str, commits: &[(&str, &str)]) -> String {
        let mut paths: Vec<(String, &str)> = Vec::new();
        // The interpreter first: it may live under HOME (pyenv).
        if let Some((python, version)) = text.lines().find_map(runtime_line) {
            paths.push((python, "[PYTHON]"));
            paths.push((version, "[PYTHON_VERSION]"));
        }
        for (path, name) in [
            (cache_dir(), "[CACHE]"),
            (fixtures(), "[FIXTURES]"),
            (self.root.clone(), "[ROOT]"),
            (home(), "[HOME]"),
        ] {
            if let Ok(real) = std::fs::canonicalize(&path) {
                paths.push((real.display().to_string(), name));
            }
            paths.push((path.display().to_string(), name));
        }
        text.lines()
            // Made once per interpreter and test run: whichever test is first.
            .filter(|l| !l.contains("caching pip for "))
            .map(|line| {
                let mut line = line.trim_end().to_string();
                for (path, name) in &paths {
                    line = line.replace(path.as_str(), name);
                }
                normalise_line(&line, commits)
            })
            .map(|l| l + "\n")
            .collect()
    }
}

/// The interpreter path and version of a `Python runtime: ... -> <path> (<version>)` line.
fn runtime_line(line: &str) -> Option<(String, String)> {
    let (_, found) = line.split_once("Python runtime: ")?.1.split_once(" -> ")?;
    let (path, version) = found.trim_end().split_once(" (")?;
    Some((path.to_string(), version.strip_suffix(')')?.to_string()))
}

/// The patterns of one line: ids, times, dates, pids, random names.
fn normalise_line(line: &str, commits: &[(&str, &str)]) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let word_start = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        let rest: String = chars[i..].iter().collect();
        if word_start && let Some(len) = shape(&chars[i..], "dddd-dd-ddTdd:dd:ddZ") {
            out.push_str("[DATE]");
            i += len;
            continue;
        }
        if word_start && let Some(len) = seconds(&chars[i..]) {
            out.push_str("[T] s");
            i += len;
            continue;
        }
        if let Some(digits) = rest
            .strip_prefix("(pid ")
            .map(|r| run_of(r, char::is_ascii_digit))
            && digits > 0
        {
            out.push_str("(pid [PID]");
            i += "(pid ".len() + digits;
            continue;
        }
        // Random suffixes of temp names: `.pushdeploy-env-Ab3xYz`.
        if let Some(prefix) = [".pushdeploy-env-", ".pushdeploy-tmp-"]
            .into_iter()
            .find(|p| rest.starts_with(p))
        {
            let len = run_of(&rest[prefix.len()..], char::is_ascii_alphanumeric);
            out.push_str(prefix);
            out.push_str("[RANDOM]");
            i += prefix.chars().count() + len;
            continue;
        }
        if let Some(seed) = rest.strip_prefix("[CACHE]/seeds/") {
            out.push_str("[CACHE]/seeds/[SEED]");
            i += "[CACHE]/seeds/".len() + run_of(seed, |c| !c.is_whitespace());
            continue;
        }
        if word_start
            && (rest.starts_with("pip-") || rest.starts_with("pip "))
            && rest[4..].starts_with(|c: char| c.is_ascii_digit())
        {
            let len = run_of(&rest[4..], |c| c.is_ascii_digit() || *c == '.');
            out.push_str(&rest[..4]);
            out.push_str("[VERSION]");
            i += 4 + len;
            continue;
        }
        if word_start {
            let len = run_of(&rest, char::is_ascii_alphanumeric);
            let word = &rest[..len];
            let hex = word
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
            if len >= 7 && hex {
                let known = commits.iter().find(|(id, _)| id.starts_with(word));
                if let Some((_, name)) = known {
                    out.push_str(&format!("[{name}]"));
                    i += len;
                    continue;
                }
                if len == 40 {
                    out.push_str("[ID]");
                    i += len;
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// How many chars at the start of `text` satisfy `keep`.
fn run_of(text: &str, keep: impl Fn(&char) -> bool) -> usize {
    text.chars().take_while(keep).count()
}

/// The length of a match of `pattern` (`d` a digit, anything else itself) at
/// the start of `chars`.
fn shape(chars: &[char], pattern: &str) -> Option<usize> {
    let n = pattern.chars().count();
    let ok = chars.len() >= n
        && pattern.chars().zip(chars).all(|(p, c)| match p {
            'd' => c.is_ascii_digit(),
            p => p == *c,
        });
    ok.then_some(n)
}

/// The length of a time such as `0.12 s` or `10.5 s` at the start of `chars`.
fn seconds(chars: &[char]) -> Option<usize> {
    let whole = chars.iter().take_while(|c| c.is_ascii_digit()).count();
    if whole == 0 || chars.get(whole) != Some(&'.') {
        return None;
    }
    let frac = chars[whole + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let end = whole + 1 + frac;
    let unit = chars.get(end..end + 2) == Some(&[' ', 's'][..]);
    let bounded = chars
        .get(end + 2)
        .is_none_or(|c| !c.is_ascii_alphanumeric());
    (frac > 0 && unit && bounded).then_some(end + 2)
}

/// Compares `actual` with `tests/transcripts/<name>.txt`, showing a line
/// diff when they differ. `UPDATE_TRANSCRIPTS=1` writes `actual` there
/// instead, for output changed on purpose.
#[track_caller]
pub fn assert_transcript(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/transcripts")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_TRANSCRIPTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        panic!(
            "{} differs from this run (- expected, + actual); if the change is \
             meant, run `UPDATE_TRANSCRIPTS=1 cargo test transcript`:\n{}",
            path.display(),
            line_diff(&expected, actual)
        );
    }
}

/// A line diff (longest common subsequence): `-` expected only, `+` actual
/// only, two spaces for a line both have.
pub fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || common[i + 1][j] >= common[i][j + 1]) {
            out += &format!("- {}\n", a[i]);
            i += 1;
        } else {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        }
    }
    out
}

// ---- Requests to the running app (issue 16) ---------------------------------

/// What one request to the app got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A whole HTTP answer below 500: its status and body.
    Page(u16, String),
    /// The connection was refused: nothing listened on the port.
    Refused,
    /// Reset, closed before a whole answer, or a garbled one.
    Reset(String),
    /// An HTTP answer of 500 or more.
    ServerError(u16, String),
    /// No whole answer within the request's time limit.
    TimedOut,
}

impl Answer {
    pub fn failed(&self) -> bool {
        !matches!(self, Answer::Page(..))
    }

    /// The body of a page (any status below 500), else None.
    pub fn body(&self) -> Option<&str> {
        match self {
            Answer::Page(_, body) => Some(body),
            _ => None,
        }
    }
}

/// How long one request may take before it counts as failed: far beyond
/// any answer of a loaded machine, so that only a hung request reaches it.
const REQUEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `GET /` on 127.0.0.1:`port` over a new connection (HTTP/1.0, closed
/// after the answer), as a client that knows nothing of deployments.
pub fn http_get(port: u16, path: &str) -> Answer {
    use std::io::{ErrorKind, Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, REQUEST_LIMIT) {
        Ok(stream) => stream,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Answer::Refused,
        Err(e) if e.kind() == ErrorKind::TimedOut => return Answer::TimedOut,
        Err(e) => return Answer::Reset(format!("connect: {e}")),
    };
    stream.set_read_timeout(Some(REQUEST_LIMIT)).unwrap();
    stream.set_write_timeout(Some(REQUEST_LIMIT)).unwrap();
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Answer::Reset(format!("write: {e}"));
    }
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        return match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Answer::TimedOut,
            _ => Answer::Reset(format!("read: {e}")),
        };
    }
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Answer::Reset(format!("no whole answer: {text:?}"));
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(status) if status >= 500 => Answer::ServerError(status, body.to_string()),
        Some(status) => Answer::Page(status, body.to_string()),
        None => Answer::Reset(format!("no status line: {head:?}")),
    }
}

/// One request of a `Load`: when it was sent and answered, and the answer.
#[derive(Debug, Clone)]
pub struct Request {
    pub sent: std::time::Instant,
    pub answered: std::time::Instant,
    pub answer: Answer,
}

/// Clients that request the app continuously, each over a fresh
/// connection, until stopped; every request is kept, in order of sending.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `clients` threads, each sending its next request 10 ms after the
    /// last is answered: a few hundred requests a second, so that requests
    /// meet every moment of a reload without taking the machine's cores
    /// from the deployments under test.
    pub fn start(port: u16, clients: usize) -> Load {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|_| {
                let (stop, requests) = (stop.clone(), requests.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = std::time::Instant::now();
                        let answer = http_get(port, "/");
                        let answered = std::time::Instant::now();
                        requests.lock().unwrap().push(Request {
                            sent,
                            answered,
                            answer,
                        });
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Load {
            stop,
            requests,
            clients,
        }
    }

    /// The requests so far, in order of sending.
    pub fn requests(&self) -> Vec<Request> {
        let mut all = self.requests.lock().unwrap().clone();
        all.sort_by_key(|r| r.sent);
        all
    }

    /// Stops the clients (each finishes its request) and returns every request.
    pub fn stop(mut self) -> Vec<Request> {
        self.halt();
        self.requests()
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for client in self.clients.drain(..) {
            let _ = client.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A port nothing listens on now (the kernel's choice, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops the app of a server when dropped, even when the test failed:
/// `pushdeploy stop`, then SIGKILL to any process still working in this
/// server's temp dir (its site or its repository's state dir): only the
/// processes pushdeploy started for this test, whatever its pid files say.
pub struct StopsApp<'a>(pub &'a Server);

impl Drop for StopsApp<'_> {
    fn drop(&mut self) {
        let s = self.0;
        let _ = s
            .pushdeploy_command(&["stop", "--repo", s.repo.to_str().unwrap()])
            .run();
        let root = std::fs::canonicalize(&s.root).unwrap_or_else(|_| s.root.clone());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cwd = std::fs::read_link(entry.path().join("cwd"));
            if pid > 1 && cwd.is_ok_and(|cwd| cwd.starts_with(&root)) {
                eprintln!("killing pid {pid}, left running in {}", root.display());
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Builds `<name>.so` in `dir` from C `source`: a library for LD_PRELOAD
/// that holds or stops pushdeploy at a chosen call.
pub fn preload_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let library = dir.join(format!("{name}.so"));
    let source_file = dir.join(format!("{name}.c"));
    std::fs::write(&source_file, source).unwrap();
    let out = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source_file)
        .arg("-ldl")
        .output()
        .expect("a C compiler (cc), as Rust's linker needs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    library
}
