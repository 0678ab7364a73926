//! A server in a temp dir: a bare repository set up with `pushdeploy init`,
//! its site, and a clone to push from with the real git client. pip installs
//! only from `fixtures/wheels`, never from the network.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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

/// What a command printed and how it ended; shown whole when a test fails.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(what: String, output: Output) -> Run {
        let run = Run {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        eprintln!(
            "$ {what}\n[status {}]\n[stdout]\n{}[stderr]\n{}",
            run.status, run.stdout, run.stderr
        );
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
    pub fn remote_or_stdout_line(&self, prefix: &str) -> String {
        let all = self.all();
        let line = all
            .lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("no line with {prefix:?}"));
        line.split_once(prefix).unwrap().1.trim().to_string()
    }

    pub fn has(&self, needle: &str) -> bool {
        self.all().contains(needle)
    }

    #[track_caller]
    pub fn assert_has(&self, needle: &str) -> &Self {
        assert!(self.has(needle), "output lacks {needle:?}");
        self
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.status, 0, "command failed");
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

    /// The environment every command of a test runs with.
    fn environ(&self, cmd: &mut Command) {
        cmd.env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", fixtures().join("wheels"))
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("UV_NO_INDEX", "1")
            .env("UV_FIND_LINKS", fixtures().join("wheels"))
            // One pip seed for all tests: each interpreter's is made once per run.
            .env(
                "PUSHDEPLOY_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("cache"),
            )
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Ada Tester")
            .env("GIT_AUTHOR_EMAIL", "ada@example.invalid")
            .env("GIT_COMMITTER_NAME", "Ada Tester")
            .env("GIT_COMMITTER_EMAIL", "ada@example.invalid")
            .env_remove("GIT_DIR")
            .env_remove("PUSHDEPLOY_RECREATE_ENV")
            .stdin(Stdio::null());
    }

    pub fn git(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(&self.work);
        self.environ(&mut cmd);
        Run::from(
            format!("git {}", args.join(" ")),
            cmd.output().expect("git runs"),
        )
    }

    pub fn git_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(&self.work);
        self.environ(&mut cmd);
        cmd.envs(vars.iter().copied());
        Run::from(
            format!("git {}", args.join(" ")),
            cmd.output().expect("git runs"),
        )
    }

    pub fn pushdeploy(&self, args: &[&str]) -> Run {
        self.pushdeploy_with(args, &[])
    }

    pub fn pushdeploy_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(&self.root);
        self.environ(&mut cmd);
        cmd.envs(vars.iter().copied());
        Run::from(
            format!("pushdeploy {}", args.join(" ")),
            cmd.output().expect("pushdeploy runs"),
        )
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
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.repo)
            .args(["fetch", "-q", self.work.to_str().unwrap(), "+main:main"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn site_file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.site.join(rel))
            .unwrap_or_else(|e| panic!("site file {rel}: {e}"))
    }

    /// Runs Python code with the site's env/bin/python.
    pub fn env_python(&self, code: &str) -> Run {
        let output = Command::new(self.site.join("env/bin/python"))
            .arg("-c")
            .arg(code)
            .current_dir(&self.site)
            .output()
            .expect("env python runs");
        Run::from(format!("env/bin/python -c {code:?}"), output)
    }

    /// `git config <args>` in the bare repository (the server's settings).
    pub fn config(&self, args: &[&str]) {
        let mut all = vec!["--git-dir", self.repo.to_str().unwrap(), "config"];
        all.extend_from_slice(args);
        self.git(&all).assert_ok();
    }

    /// A file of the bare repository's main, as git has it ("" if none).
    pub fn file_at_head(&self, path: &str) -> String {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.repo)
            .args(["show", &format!("main:{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
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
            let ok = Command::new("git")
                .args(["config", key, value])
                .current_dir(&dir)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        dir
    }

    /// The commit the bare repository's branch points to.
    pub fn branch_head(&self, branch: &str) -> String {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.repo)
            .args(["rev-parse", &format!("refs/heads/{branch}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn records(&self) -> Vec<serde_json::Value> {
        let run = self.run("list", &["--json"]);
        serde_json::from_str(&run.stdout).expect("list --json prints JSON")
    }
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
