//! Issue 12: apps whose packages come from a lock file (uv.lock,
//! Pipfile.lock, poetry.lock), with real uv, Pipenv's lock files and Poetry,
//! offline from fixtures/wheels.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::util::{Run, Server, copy_dir, fixtures};

fn tools() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools")
}

/// uv from target/tools (.ci/run installs it at the pinned version).
fn uv() -> Option<String> {
    let uv = tools().join("bin/uv");
    if uv.is_file() {
        Some(uv.display().to_string())
    } else {
        eprintln!("{} is missing: .ci/run installs it; skipping", uv.display());
        None
    }
}

/// A server whose deployments take uv from target/tools (a server setting).
fn uv_server() -> Option<Server> {
    let uv = uv()?;
    let s = Server::new();
    s.config(&["deploy.uvPath", &uv]);
    Some(s)
}

/// `uv lock` in the clone, offline from fixtures/wheels: a real uv.lock.
fn uv_lock(s: &Server) {
    uv_lock_from(s, &fixtures().join("wheels"));
}

/// `uv lock` in the clone, offline from a directory of wheels.
fn uv_lock_from(s: &Server, wheels: &std::path::Path) {
    let out = Command::new(uv().unwrap())
        .args(["lock", "--quiet", "--no-index", "--find-links"])
        .arg(wheels)
        .current_dir(&s.work)
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("UV_PYTHON", crate::util::pyenv("3.12.1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "uv lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `X.Y` of `python3` on PATH, as pushdeploy finds it (pyenv's shim
/// included, as the tools run it).
fn python3_on_path() -> String {
    let python3 = which::which("python3").expect("python3 on PATH");
    let out = Command::new(python3)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// fixtures/git-src/hellogit as a git repository at `dir`: one commit on
/// main, made as fixtures/build-locks makes it (fixed author, committer and
/// date), so its id is the one the committed pipenv-git lock pins. Returns
/// the commit id.
pub fn hellogit_repo(dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    copy_dir(&fixtures().join("git-src/hellogit"), dir);
    let vars = [
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z"),
        ("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
    ];
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["commit", "-q", "--no-gpg-sign", "-m", "hellogit 0.1.0"],
    ] {
        crate::util::git_in(dir)
            .args(["-c", "core.autocrlf=false"])
            .args(args)
            .envs(&vars)
            .run()
            .assert_ok();
    }
    let head = crate::util::git_in(dir).args(["rev-parse", "HEAD"]).run();
    head.assert_ok();
    head.stdout.trim().to_string()
}

fn set_dependencies(s: &Server, deps: &str) {
    let text = std::fs::read_to_string(s.work.join("pyproject.toml")).unwrap();
    let start = text.find("dependencies = [").unwrap();
    let end = start + text[start..].find(']').unwrap() + 1;
    s.write(
        "pyproject.toml",
        &format!("{}dependencies = [{deps}]{}", &text[..start], &text[end..]),
    );
}

/// The env's packages but what it was made with (pip, setuptools), as
/// `name version`, sorted; pip must still be there.
fn env_packages(s: &Server) -> Vec<String> {
    let run = s.env_python(
        "import importlib.metadata as m; print('\\n'.join(sorted('%s %s' % (d.metadata['Name'].lower(), d.version) for d in m.distributions())))",
    );
    run.assert_ok();
    assert!(run.stdout.contains("pip "), "pip stays in the env");
    run.stdout
        .lines()
        .filter(|l| !l.starts_with("pip ") && !l.starts_with("setuptools "))
        .map(str::to_string)
        .collect()
}

fn touch(s: &Server) {
    let app = std::fs::read_to_string(s.work.join("app.py")).unwrap();
    s.write("app.py", &format!("{app}# touched\n"));
    s.commit("touch");
}

#[test]
fn uv_lock_first_deployment_installs_the_main_packages_only() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    s.commit("uv app");
    let push = s.push(&[]);
    push.assert_ok()
        .assert_has(
            "sync --locked --no-config --no-default-groups --no-install-project (into the new env)",
        )
        .assert_has("with uv 0.13.9 (")
        .assert_has("successful");
    assert_eq!(
        env_packages(&s),
        ["greeting 1.0.0", "tinyweb 1.0.0"],
        "the dev group's staticpipe is left out"
    );
    // Kudu's marker, as for requirements.txt.
    assert!(
        std::fs::read_dir(s.site.join("env"))
            .unwrap()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("azure.env.python-"))
    );

    // A push that changes only app.py: uv does not run.
    touch(&s);
    let push = s.push(&[]);
    push.assert_ok().assert_has(
        "uv sync skipped: uv.lock, pyproject.toml, interpreter, env and settings unchanged since",
    );
    assert!(!push.has("--locked"), "uv ran");
}

/// A lock's path dependency outside the site is refused in the plan: uv
/// would build code from outside the site.
#[test]
fn a_uv_lock_path_dependency_outside_the_site_is_refused() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    let lock = std::fs::read_to_string(s.work.join("uv.lock")).unwrap();
    for (source, shown) in [
        ("{ path = \"/tmp/outside\" }", "\"/tmp/outside\""),
        ("{ directory = \"../outside\" }", "\"../outside\""),
    ] {
        s.write(
            "uv.lock",
            &format!(
                "{lock}\n[[package]]\nname = \"outside\"\nversion = \"1.0\"\nsource = {source}\n"
            ),
        );
        s.commit("a path dependency outside the site");
        s.push(&[])
            .assert_has(&format!(
                "uv.lock names the local path {shown}, outside the site; local requirements must be inside the site"
            ))
            .assert_has("failed in step plan");
    }
}

#[test]
fn uv_lock_change_adds_upgrades_and_removes() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    s.commit("v1");
    s.push(&[]).assert_ok();

    set_dependencies(&s, "\"greeting==2.0.0\", \"staticpipe==1.0.0\"");
    uv_lock(&s);
    s.commit("v2");
    s.update_without_deploy();
    let dry = s.run("deploy", &["--dry-run"]);
    dry.assert_ok()
        .assert_has("uv.lock: would install staticpipe 1.0.0")
        .assert_has("uv.lock: would change greeting 1.0.0 -> 2.0.0")
        .assert_has("uv.lock: would remove tinyweb 1.0.0");
    assert_eq!(
        env_packages(&s),
        ["greeting 1.0.0", "tinyweb 1.0.0"],
        "the dry run changes nothing"
    );

    s.run("deploy", &[])
        .assert_ok()
        .assert_has("changed since the last install: lock and project files");
    assert_eq!(
        env_packages(&s),
        ["greeting 2.0.0", "staticpipe 1.0.0"],
        "the env is the lock, exactly"
    );
}

#[test]
fn uv_lock_that_does_not_match_pyproject_fails_with_the_command() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    s.commit("v1");
    s.push(&[]).assert_ok();
    set_dependencies(&s, "\"greeting==2.0.0\"");
    s.commit("pyproject changed, lock not");
    let push = s.push(&[]);
    push.assert_has("uv.lock does not match pyproject.toml: run `uv lock` and commit uv.lock");
    assert!(!push.has("successful"));
    assert!(env_packages(&s).contains(&"greeting 1.0.0".to_string()));

    s.write("uv.lock", "version = 1\n[[package]\n");
    s.commit("broken");
    s.push(&[]).assert_has("uv.lock line 2: not valid TOML");
}

/// Issue 15 item 17: as uv and Poetry choose, the first interpreter that
/// fits, `python3` on PATH first (here 3.11), not the newest (3.13); where
/// `python3` does not fit, the next in the search order that does.
#[test]
fn requires_python_chooses_the_first_interpreter_that_fits() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    s.commit("uv app");
    let python3 = python3_on_path();
    s.push(&[]).assert_ok().assert_has(&format!(
        "python-{python3} (pyproject.toml requires-python >=3.8: the first interpreter that fits, python3 on PATH first) -> "
    ));
    s.env_python(&format!(
        "import sys; assert '%d.%d' % sys.version_info[:2] == '{python3}'"
    ))
    .assert_ok();

    let text = std::fs::read_to_string(s.work.join("pyproject.toml")).unwrap();
    s.write(
        "pyproject.toml",
        &text.replace(
            "requires-python = \">=3.8\"",
            "requires-python = \">=3.12,<3.13\"",
        ),
    );
    uv_lock(&s);
    s.commit("3.12");
    let push = s.push(&[]);
    push.assert_ok()
        .assert_has("python-3.12 (pyproject.toml requires-python >=3.12,<3.13: the first interpreter that fits, python3 on PATH first)");
    s.env_python("import sys; assert sys.version_info[:2] == (3, 12)")
        .assert_ok();

    s.write("runtime.txt", "python-3.11\n");
    s.commit("runtime.txt outside");
    let push = s.push(&[]);
    let line = push.remote_or_stdout_line("failed");
    assert!(
        line.contains("runtime.txt: python-3.11 (")
            && line.contains("is outside pyproject.toml requires-python >=3.12,<3.13"),
        "{line}"
    );
}

/// Issue 15 item 12: a uv.lock git source on this machine (what
/// `[tool.uv.sources] x = { git = "file://..." }` locks) builds code from
/// outside the site: refused in the plan, as every local requirement is.
#[test]
fn a_uv_lock_git_source_on_this_machine_is_refused() {
    let Some(s) = uv_server() else { return };
    let repo = s.root.join("hellogit");
    hellogit_repo(&repo);
    s.app("uv-app");
    set_dependencies(&s, "\"greeting==1.0.0\", \"tinyweb==1.0.0\", \"hellogit\"");
    let text = std::fs::read_to_string(s.work.join("pyproject.toml")).unwrap();
    s.write(
        "pyproject.toml",
        &format!(
            "{text}\n[tool.uv.sources]\nhellogit = {{ git = \"file://{}\" }}\n",
            repo.display()
        ),
    );
    uv_lock(&s);
    let lock = std::fs::read_to_string(s.work.join("uv.lock")).unwrap();
    assert!(lock.contains("source = { git = \"file://"), "{lock}");
    s.commit("a git source on this machine");
    s.push(&[])
        .assert_has(&format!(
            "uv.lock names the local path \"{}\", outside the site; local requirements must be inside the site",
            repo.display()
        ))
        .assert_has("failed in step plan");
    assert!(!s.site.join("env").exists(), "nothing installed");
}

/// Item 12 for Poetry: a git dependency whose repository is on this
/// machine (locked as `[package.source] type = "git"`, its url the path).
#[test]
fn a_poetry_lock_git_source_on_this_machine_is_refused() {
    let Some(s) = poetry_server() else { return };
    let repo = s.root.join("hellogit");
    hellogit_repo(&repo);
    set_dependencies(&s, "\"greeting==1.0.0\", \"tinyweb==1.0.0\", \"hellogit\"");
    let text = std::fs::read_to_string(s.work.join("pyproject.toml")).unwrap();
    s.write(
        "pyproject.toml",
        &format!(
            "{text}\n[tool.poetry.dependencies]\nhellogit = {{ git = \"file://{}\", branch = \"main\" }}\n",
            repo.display()
        ),
    );
    poetry_lock(&s);
    let lock = std::fs::read_to_string(s.work.join("poetry.lock")).unwrap();
    assert!(lock.contains("type = \"git\""), "{lock}");
    s.commit("a git dependency on this machine");
    // Poetry 2.2 writes the URL `file://None/<path>`: shown as it reads.
    let line = s.push(&[]).remote_or_stdout_line("failed in step plan");
    assert!(
        line.contains("poetry.lock names the local path \"")
            && line.contains(&format!(
                "{}\", outside the site; local requirements must be inside the site",
                repo.display()
            )),
        "{line}"
    );
    assert!(!s.site.join("env").exists(), "nothing installed");
}

#[test]
fn several_lock_files_and_requirements_beside_a_lock() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    copy_dir(&fixtures().join("apps/pipenv-app"), &s.work);
    s.remove("v2");
    s.commit("two locks");
    s.push(&[]).assert_has(
        "the commit has uv.lock and Pipfile.lock and no requirements.txt: choose one with packageManager = uv or pipenv in .deployment, or remove the others",
    );

    s.write(".deployment", "[config]\npackageManager = pipenv\n");
    s.commit("choose");
    s.push(&[]).assert_ok().assert_has("Pipfile.lock");
    assert!(env_packages(&s).contains(&"tinyweb 1.0.0".to_string()));

    s.remove(".deployment");
    s.write("requirements.txt", "greeting==2.0.0\n");
    s.commit("requirements.txt wins");
    s.push(&[])
        .assert_ok()
        .assert_has("uv.lock is in the commit too; requirements.txt is used (set packageManager = uv to install from uv.lock instead)")
        .assert_has("pip install -r requirements.txt");
}

#[test]
fn a_pyproject_with_dependencies_and_no_lock_says_which_lock_to_commit() {
    let s = Server::new();
    s.app("uv-app");
    s.commit("no lock");
    s.push(&[]).assert_has(
        "pyproject.toml lists dependencies and the commit has no lock file to install them from: run `uv lock` and commit uv.lock",
    );

    s.write(
        "pyproject.toml",
        "[tool.poetry]\npackage-mode = false\n[tool.poetry.dependencies]\npython = \"^3.9\"\ngreeting = \"1.0.0\"\n",
    );
    s.commit("poetry, no lock");
    s.push(&[])
        .assert_has("run `poetry lock` and commit poetry.lock");

    // A pyproject.toml that only configures tools changes nothing.
    s.write("pyproject.toml", "[tool.black]\nline-length = 100\n");
    s.commit("tools only");
    s.push(&[])
        .assert_ok()
        .assert_has("Python steps skipped: no requirements.txt or lock file in the commit");

    // .skipPythonDeployment still skips everything.
    let s = Server::new();
    s.app("uv-app").write(".skipPythonDeployment", "");
    s.commit("skip");
    s.push(&[])
        .assert_ok()
        .assert_has("Python steps skipped: .skipPythonDeployment is in the commit");
}

#[test]
fn a_uv_that_cannot_be_had_is_one_line_saying_how_to_provide_it() {
    let s = Server::new();
    s.config(&["deploy.uvVersion", "0.0.1"]);
    s.app("uv-app");
    s.write("uv.lock", "version = 1\n");
    s.commit("uv app");
    let push = s.push(&[]);
    let line = push.remote_or_stdout_line("failed");
    assert!(
        line.contains("uv 0.0.1 cannot be installed")
            && line.contains("put it on PATH, or set `git config deploy.uvPath <path to uv>`"),
        "{line}"
    );
}

#[test]
fn a_tool_version_that_is_not_one_is_refused_naming_the_pinned_one() {
    // The pinned versions are the settings' defaults; the message gives
    // the pinned one as the example.
    for (app, lock, key, pinned) in [
        ("uv-app", "uv.lock", "uvVersion", "0.13.9"),
        ("poetry-app", "poetry.lock", "poetryVersion", "2.2.1"),
    ] {
        let s = Server::new();
        s.config(&[&format!("deploy.{key}"), "latest"]);
        s.app(app);
        s.write(lock, "version = 1\n");
        s.commit("app");
        let push = s.push(&[]);
        let line = push.remote_or_stdout_line("failed");
        assert!(
            line.contains(&format!(
                "setting {key} (git config deploy.{key}): \"latest\" is not a version (such as {pinned})"
            )),
            "{line}"
        );
    }
}

fn pipenv_app(s: &Server) {
    s.app("pipenv-app");
    s.remove("v2");
}

fn pipenv_v2(s: &Server) {
    for name in ["Pipfile", "Pipfile.lock"] {
        std::fs::copy(
            fixtures().join("apps/pipenv-app/v2").join(name),
            s.work.join(name),
        )
        .unwrap();
    }
}

#[test]
fn pipfile_lock_deploys_skips_and_follows_changes_exactly() {
    let s = Server::new();
    pipenv_app(&s);
    s.commit("pipenv app");
    let push = s.push(&[]);
    push.assert_ok()
        .assert_has("pip install --no-deps --require-hashes -r (Pipfile.lock's packages) (into the new env)")
        .assert_has("python-3.11 (Pipfile [requires] python_version 3.11: the first interpreter that fits");
    assert_eq!(env_packages(&s), ["greeting 1.0.0", "tinyweb 1.0.0"]);

    touch(&s);
    s.push(&[]).assert_ok().assert_has(
        "Pipfile.lock skipped: Pipfile.lock, Pipfile, interpreter, env and settings unchanged since",
    );

    pipenv_v2(&s);
    s.commit("v2");
    s.update_without_deploy();
    s.run("deploy", &["--dry-run"])
        .assert_ok()
        .assert_has("Pipfile.lock: would install staticpipe 1.0.0")
        .assert_has("Pipfile.lock: would change greeting 1.0.0 -> 2.0.0")
        .assert_has("Pipfile.lock: would remove tinyweb 1.0.0");
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("removing what Pipfile.lock does not name: tinyweb 1.0.0");
    assert_eq!(env_packages(&s), ["greeting 2.0.0", "staticpipe 1.0.0"]);
}

#[test]
fn pipfile_lock_of_another_pipfile_fails_with_the_command() {
    let s = Server::new();
    pipenv_app(&s);
    let pipfile = std::fs::read_to_string(s.work.join("Pipfile")).unwrap();
    s.write(
        "Pipfile",
        &pipfile.replace("greeting = \"==1.0.0\"", "greeting = \"==2.0.0\""),
    );
    s.commit("Pipfile changed, lock not");
    let push: Run = s.push(&[]);
    push.assert_has(
        "Pipfile.lock does not match Pipfile (it was locked from another Pipfile): run `pipenv lock` and commit Pipfile.lock",
    );
    assert!(!s.site.join("env").exists(), "nothing changed");

    s.write("Pipfile", &pipfile);
    s.write("Pipfile.lock", "{\n  \"_meta\": \n");
    s.commit("broken");
    s.push(&[]).assert_has("Pipfile.lock line 3: not JSON");

    let s = Server::new();
    pipenv_app(&s);
    s.remove("Pipfile.lock");
    s.commit("no lock");
    s.push(&[]).assert_has(
        "Pipfile has no Pipfile.lock beside it: run `pipenv lock` and commit Pipfile.lock",
    );
}

/// Issue 15 item 18: Pipenv 2026.4 and later hash the Pipfile with its
/// package names normalised (`Greeting` as `greeting`, `flit_core` as
/// `flit-core`); the lock it wrote (fixtures/apps/pipenv-names, by
/// Pipenv 2026.8) was refused as made from another Pipfile.
#[test]
fn pipfile_lock_of_current_pipenv_with_a_capital_and_an_underscore_deploys() {
    let s = Server::new();
    s.app("pipenv-names");
    s.commit("pipenv app, names as written");
    s.push(&[]).assert_ok().assert_has("successful");
    assert_eq!(
        env_packages(&s),
        ["flit_core 4.2.0", "greeting 1.0.0", "tinyweb 1.0.0"]
    );
    s.env_python("import greeting, tinyweb, flit_core")
        .assert_ok();
}

/// hellogit's repository at `repo` (the commit fixtures/apps/pipenv-git's
/// lock pins) and a git config file that fetches the lock's URL from it.
fn hellogit_remote(s: &Server, repo: &std::path::Path) -> (String, PathBuf) {
    let first = hellogit_repo(repo);
    let lock = std::fs::read_to_string(fixtures().join("apps/pipenv-git/Pipfile.lock")).unwrap();
    assert!(
        lock.contains(&format!("\"ref\": \"{first}\"")),
        "the repository is not the one fixtures/build-locks locked"
    );
    (first, fetched_from(s, repo))
}

/// A git config file (for the push's `GIT_CONFIG_GLOBAL`, which reaches the
/// hook) that fetches `https://git.example.invalid/hellogit.git` from
/// `repo`: nothing goes to the network.
pub fn fetched_from(s: &Server, repo: &std::path::Path) -> PathBuf {
    let config = s.root.join("gitconfig");
    std::fs::write(
        &config,
        format!(
            "[url \"{}\"]\n\tinsteadOf = https://git.example.invalid/hellogit.git\n",
            repo.display()
        ),
    )
    .unwrap();
    config
}

/// hellogit's `WHERE` in the env, and the commit it was installed from.
fn hellogit_installed(s: &Server) -> String {
    let run = s.env_python(
        "import hellogit, json, importlib.metadata as m; print(hellogit.WHERE); print(json.loads(m.distribution('hellogit').read_text('direct_url.json'))['vcs_info']['commit_id'])",
    );
    run.assert_ok();
    run.stdout.trim().to_string()
}

/// Item 19 with `installer = uv`: the same commit, by `uv pip install`.
#[test]
fn pipfile_lock_git_entries_with_the_uv_installer() {
    let Some(uv) = uv() else { return };
    let s = Server::new();
    s.config(&["deploy.installer", &uv]);
    let (first, config) = hellogit_remote(&s, &s.root.join("hellogit"));
    s.app("pipenv-git");
    s.commit("pipenv app with a git entry");
    s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("GIT_CONFIG_GLOBAL", config.to_str().unwrap())],
    )
    .assert_ok()
    .assert_has("successful in");
    assert_eq!(hellogit_installed(&s), format!("from git\n{first}"));
    assert_eq!(
        env_packages(&s),
        ["greeting 1.0.0", "hellogit 0.1.0", "tinyweb 1.0.0"]
    );
}

/// Issue 15 item 19: a git entry of Pipfile.lock (fixtures/apps/pipenv-git,
/// locked by Pipenv) is installed as `pipenv install --deploy` installs it:
/// pinned to the locked commit, the index packages with their hashes. The
/// lock names the repository by an https URL; git is told to fetch it from
/// a repository the test makes (`url.<dir>.insteadOf`, in a global config
/// file the push's environment names: git drops `GIT_CONFIG_COUNT` on its
/// way to a local repository's hook, not `GIT_CONFIG_GLOBAL`), so nothing
/// goes to the network, and hellogit's build backend (flit_core) comes
/// from fixtures/wheels.
#[test]
fn pipfile_lock_git_entries_install_at_the_locked_commit() {
    let s = Server::new();
    let repo = s.root.join("hellogit");
    let (first, config) = hellogit_remote(&s, &repo);
    let lock = std::fs::read_to_string(fixtures().join("apps/pipenv-git/Pipfile.lock")).unwrap();
    let vars = [("GIT_CONFIG_GLOBAL", config.to_str().unwrap())];
    let push = |s: &Server| s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars);
    s.app("pipenv-git");
    s.commit("pipenv app with a git entry");
    push(&s)
        .assert_ok()
        .assert_has("--no-deps --require-hashes")
        .assert_has(&format!(
            "installing Pipfile.lock's git entries at their locked commits: hellogit git {first}"
        ))
        .assert_has("successful in");
    assert_eq!(
        env_packages(&s),
        ["greeting 1.0.0", "hellogit 0.1.0", "tinyweb 1.0.0"]
    );
    assert_eq!(hellogit_installed(&s), format!("from git\n{first}"));

    // The package's next commit, same version: locked, it is what the env gets.
    std::fs::write(
        repo.join("hellogit/__init__.py"),
        "\"\"\"A package that Pipfile.lock names by a git commit.\"\"\"\n\nWHERE = \"from git, second commit\"\n",
    )
    .unwrap();
    crate::util::git_in(&repo)
        .args(["commit", "-q", "-am", "second"])
        .run()
        .assert_ok();
    let second = crate::util::git_in(&repo).args(["rev-parse", "HEAD"]).run();
    let second = second.stdout.trim();
    s.write("Pipfile.lock", &lock.replace(&first, second));
    s.commit("hellogit's second commit");
    s.update_without_deploy();
    s.run("deploy", &["--dry-run"])
        .assert_ok()
        .assert_has(&format!(
            "Pipfile.lock: would change hellogit git {first} -> git {second}"
        ));
    s.deploy_with(&[], &vars)
        .assert_ok()
        .assert_has("successful in");
    assert_eq!(
        hellogit_installed(&s),
        format!("from git, second commit\n{second}")
    );

    // Pushed back, the first commit again: pinned, not "already satisfied".
    s.write("Pipfile.lock", &lock);
    s.commit("back to the first commit");
    push(&s).assert_ok().assert_has("successful in");
    assert_eq!(hellogit_installed(&s), format!("from git\n{first}"));
}

/// A PEP 503 simple index of fixtures/wheels, served on 127.0.0.1 for as
/// long as the tests run (Poetry reads packages only from an index).
fn index_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve(stream));
            }
        });
        format!("http://127.0.0.1:{port}/simple/")
    })
}

fn serve(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let wheels = fixtures().join("wheels");
    let normal = |name: &str| {
        name.split('-')
            .next()
            .unwrap()
            .replace('_', "-")
            .to_lowercase()
    };
    let mut files: Vec<String> = std::fs::read_dir(&wheels)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".whl"))
        .collect();
    files.sort();
    let (status, kind, body) = if let Some(name) = path
        .strip_prefix("/simple/")
        .map(|n| n.trim_end_matches('/'))
        .filter(|n| !n.is_empty())
    {
        let links: String = files
            .iter()
            .filter(|f| normal(f) == name)
            .map(|f| {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(std::fs::read(wheels.join(f)).unwrap());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("<a href=\"/files/{f}#sha256={hex}\">{f}</a>\n")
            })
            .collect();
        if links.is_empty() {
            ("404 Not Found", "text/plain", b"not found".to_vec())
        } else {
            (
                "200 OK",
                "text/html",
                format!("<!DOCTYPE html><html><body>\n{links}</body></html>\n").into_bytes(),
            )
        }
    } else if let Some(file) = path
        .strip_prefix("/files/")
        .filter(|f| files.iter().any(|w| w == f))
    {
        (
            "200 OK",
            "application/octet-stream",
            std::fs::read(wheels.join(file)).unwrap(),
        )
    } else {
        ("404 Not Found", "text/plain", b"not found".to_vec())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn poetry() -> Option<String> {
    let poetry = tools().join("poetry/bin/poetry");
    if poetry.is_file() {
        Some(poetry.display().to_string())
    } else {
        eprintln!(
            "{} is missing: .ci/run installs it; skipping",
            poetry.display()
        );
        None
    }
}

/// A server whose deployments take Poetry from target/tools, and a clone
/// holding the Poetry app, its source the test's index.
fn poetry_server() -> Option<Server> {
    let poetry = poetry()?;
    let s = Server::new();
    s.config(&["deploy.poetryPath", &poetry]);
    s.app("poetry-app");
    let text = std::fs::read_to_string(s.work.join("pyproject.toml")).unwrap();
    s.write(
        "pyproject.toml",
        &text.replace("http://127.0.0.1:8765/simple/", index_url()),
    );
    Some(s)
}

/// `poetry lock` in the clone: a real poetry.lock.
fn poetry_lock(s: &Server) {
    let out = Command::new(poetry().unwrap())
        .args(["lock", "--no-interaction", "--no-ansi"])
        .current_dir(&s.work)
        .env("POETRY_CACHE_DIR", s.root.join("poetry-cache"))
        .env("POETRY_VIRTUALENVS_CREATE", "false")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "poetry lock: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn poetry_lock_deploys_skips_and_follows_changes_exactly() {
    let Some(s) = poetry_server() else { return };
    poetry_lock(&s);
    s.commit("poetry app");
    s.push(&[])
        .assert_ok()
        .assert_has("sync --only main --no-root --no-interaction --no-ansi (into the new env)")
        .assert_has("with poetry 2.2.1 (")
        .assert_has(&format!(
            "python-{} (pyproject.toml requires-python >=3.9,<4: the first interpreter that fits",
            python3_on_path()
        ));
    assert_eq!(env_packages(&s), ["greeting 1.0.0", "tinyweb 1.0.0"]);

    touch(&s);
    s.push(&[]).assert_ok().assert_has(
        "poetry sync skipped: poetry.lock, pyproject.toml, interpreter, env and settings unchanged since",
    );

    set_dependencies(&s, "\"greeting==2.0.0\", \"staticpipe==1.0.0\"");
    poetry_lock(&s);
    s.commit("v2");
    s.update_without_deploy();
    s.run("deploy", &["--dry-run"])
        .assert_ok()
        .assert_has("poetry.lock: would install staticpipe 1.0.0")
        .assert_has("poetry.lock: would change greeting 1.0.0 -> 2.0.0")
        .assert_has("poetry.lock: would remove tinyweb 1.0.0");
    s.run("deploy", &[]).assert_ok();
    assert_eq!(env_packages(&s), ["greeting 2.0.0", "staticpipe 1.0.0"]);

    set_dependencies(&s, "\"greeting==1.0.0\"");
    s.commit("pyproject changed, lock not");
    s.push(&[]).assert_has(
        "poetry.lock does not match pyproject.toml: run `poetry lock` and commit poetry.lock",
    );
    assert_eq!(env_packages(&s), ["greeting 2.0.0", "staticpipe 1.0.0"]);
}

#[test]
fn redeploying_an_older_commit_removes_what_only_the_newer_one_needed() {
    let s = Server::new();
    s.app("flask-app");
    let old = s.commit("greeting 1.0.0");
    s.push(&[]).assert_ok();
    // An app server or a debugger, installed by hand: not pushdeploy's.
    let by_hand = Command::new(s.site.join("env/bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--find-links",
        ])
        .arg(fixtures().join("wheels"))
        .arg("django")
        .output()
        .unwrap();
    assert!(by_hand.status.success());

    s.write(
        "requirements.txt",
        "greeting==2.0.0\ntinyweb==1.0.0\nstaticpipe==1.0.0\n",
    );
    s.commit("greeting 2.0.0, which needs staticpipe");
    s.push(&[])
        .assert_ok()
        .assert_has("not from requirements.txt, kept: django 0.1.0");
    assert_eq!(
        env_packages(&s),
        [
            "django 0.1.0",
            "greeting 2.0.0",
            "staticpipe 1.0.0",
            "tinyweb 1.0.0"
        ]
    );

    let back = s.run("redeploy", &[&old]);
    back.assert_ok()
        .assert_has("removing what requirements.txt no longer needs: staticpipe 1.0.0");
    assert!(!back.has("not from requirements.txt"), "said once");
    assert_eq!(
        env_packages(&s),
        ["django 0.1.0", "greeting 1.0.0", "tinyweb 1.0.0"]
    );

    // The setting keeps them.
    s.run("deploy", &[]).assert_ok();
    s.pushdeploy_with(
        &["redeploy", "--repo", s.repo.to_str().unwrap(), &old],
        &[("PUSHDEPLOY_REMOVE_UNNEEDED", "false")],
    )
    .assert_ok()
    .assert_has("no longer needed by requirements.txt, kept (removeUnneeded is false, environment PUSHDEPLOY_REMOVE_UNNEEDED): staticpipe 1.0.0");
    assert!(env_packages(&s).contains(&"staticpipe 1.0.0".to_string()));
}

#[test]
fn uv_groups_setting_adds_a_group_and_makes_uv_run_again() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    s.commit("v1");
    s.push(&[]).assert_ok();
    assert_eq!(env_packages(&s), ["greeting 1.0.0", "tinyweb 1.0.0"]);

    s.write(".deployment", "[config]\ngroups = dev\n");
    s.commit("with the dev group");
    s.push(&[])
        .assert_ok()
        .assert_has("--no-install-project --group dev (changed since the last install: settings)");
    assert_eq!(
        env_packages(&s),
        ["greeting 1.0.0", "staticpipe 1.0.0", "tinyweb 1.0.0"]
    );
}

#[test]
fn app_settings_reach_uv_and_count_for_skipping() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    s.commit("v1");
    s.push(&[]).assert_ok();
    // A `.deployment` app setting is in uv's environment, as in pip's.
    s.write(".deployment", "[config]\nUV_INDEX_STRATEGY = bogus\n");
    s.commit("a bad uv setting");
    s.push(&[])
        .assert_has("changed since the last install: settings")
        .assert_has("invalid value 'bogus'");
    s.write(".deployment", "[config]\nUV_INDEX_STRATEGY = first-index\n");
    s.commit("a good one");
    s.push(&[]).assert_ok().assert_has("successful");
}

#[test]
fn pipfile_lock_with_the_uv_installer() {
    let Some(uv) = uv() else { return };
    let s = Server::new();
    s.config(&["deploy.installer", &uv]);
    pipenv_app(&s);
    s.commit("pipenv app");
    s.push(&[]).assert_ok().assert_has(
        "pip install --no-deps --require-hashes -r (Pipfile.lock's packages) (into the new env)",
    );
    assert_eq!(env_packages(&s), ["greeting 1.0.0", "tinyweb 1.0.0"]);
    pipenv_v2(&s);
    s.commit("v2");
    s.push(&[])
        .assert_ok()
        .assert_has("removing what Pipfile.lock does not name: tinyweb 1.0.0");
    assert_eq!(env_packages(&s), ["greeting 2.0.0", "staticpipe 1.0.0"]);
}

#[test]
fn a_commits_uv_toml_does_not_steer_uv() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    // A cache outside the site, the state dir and the cache dir.
    let outside = s.root.join("outside-cache");
    s.write(
        "uv.toml",
        &format!("cache-dir = {:?}\n", outside.display().to_string()),
    );
    s.commit("uv.toml");
    s.push(&[]).assert_ok().assert_has("successful");
    assert!(!outside.exists(), "uv.toml was read");
    assert_eq!(env_packages(&s), ["greeting 1.0.0", "tinyweb 1.0.0"]);
}

#[test]
fn the_package_manager_setting_names_what_is_missing() {
    let s = Server::new();
    s.app("flask-app")
        .write(".deployment", "[config]\npackageManager = uv\n");
    s.commit("uv chosen, no uv.lock");
    s.push(&[]).assert_has(
        "setting packageManager (.deployment line 2) is uv: the commit has no uv.lock: run `uv lock` and commit uv.lock",
    );
    s.write(".deployment", "[config]\npackageManager = conda\n");
    s.commit("not a package manager");
    s.push(&[]).assert_has(
        "setting packageManager (.deployment line 2): \"conda\" is not auto, pip, uv, poetry or pipenv",
    );
    // pip: requirements.txt, even beside a lock file.
    copy_dir(&fixtures().join("apps/pipenv-app"), &s.work);
    s.remove("v2");
    s.write(".deployment", "[config]\npackageManager = pip\n");
    s.commit("pip chosen");
    s.push(&[])
        .assert_ok()
        .assert_has("pip install -r requirements.txt");
}

#[test]
fn poetry_groups_setting_adds_a_group() {
    let Some(s) = poetry_server() else { return };
    poetry_lock(&s);
    s.write(".deployment", "[config]\ngroups = dev\n");
    s.commit("with the dev group");
    s.push(&[])
        .assert_ok()
        .assert_has("sync --only main,dev --no-root");
    assert_eq!(
        env_packages(&s),
        ["greeting 1.0.0", "staticpipe 1.0.0", "tinyweb 1.0.0"]
    );
}

/// A lock-file deployment whose install fails: the install ran aside,
/// before the file switch, so the site (its files, `env/` and the env's
/// packages) is byte for byte what the last good deployment left, and the
/// next good push deploys.
fn failing_install_leaves_the_site(s: &Server, step: &str, good: &[&str]) {
    let before = crate::util::snapshot(&s.site);
    let push = s.push(&[]);
    push.assert_has(step).assert_has("failed in step");
    assert!(
        !push.has("Syncing files"),
        "the files were never switched: {}",
        push.all()
    );
    assert!(!push.has("rolled back"), "nothing to roll back");
    assert_eq!(
        crate::util::snapshot(&s.site),
        before,
        "the site's files and env are the last good deployment's"
    );
    assert_eq!(env_packages(s), good);
    assert_eq!(s.env_dirs(), 0, "the env prepared aside is gone");
}

/// The install's line comes before the file sync's.
fn installs_before_the_sync(push: &Run, command: &str) {
    let text = push.all();
    let install = text.find(command).unwrap_or_else(|| panic!("{text}"));
    let sync = text
        .find("Syncing files")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(install < sync, "install after the sync: {text}");
}

#[test]
fn uv_lock_installs_aside_and_a_failed_install_leaves_the_site() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    uv_lock(&s);
    s.commit("v1");
    let push = s.push(&[]);
    push.assert_ok();
    installs_before_the_sync(&push, "--no-install-project (into the new env)");

    // A lock naming a wheel its index no longer has (an index of this
    // test's own, so that no cache holds the wheel): uv fails.
    let wheels = s.root.join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    copy_dir(&fixtures().join("wheels"), &wheels);
    set_dependencies(&s, "\"greeting==2.0.0\", \"staticpipe==1.0.0\"");
    uv_lock_from(&s, &wheels);
    std::fs::remove_file(wheels.join("staticpipe-1.0.0-py2.py3-none-any.whl")).unwrap();
    s.commit("v2, broken");
    failing_install_leaves_the_site(
        &s,
        "--no-install-project (changed since the last install",
        &["greeting 1.0.0", "tinyweb 1.0.0"],
    );

    uv_lock(&s);
    s.commit("v2");
    let push = s.push(&[]);
    push.assert_ok();
    installs_before_the_sync(
        &push,
        "--no-install-project (the last install, by deployment",
    );
    assert_eq!(env_packages(&s), ["greeting 2.0.0", "staticpipe 1.0.0"]);
}

#[test]
fn a_uv_path_dependency_installs_from_the_site_after_the_switch() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
    s.write(
        "lib/local_pkg/pyproject.toml",
        "[project]\nname = \"local-pkg\"\nversion = \"0.1.0\"\n\n[build-system]\nrequires = []\nbuild-backend = \"local_backend\"\nbackend-path = [\".\"]\n",
    );
    s.write("lib/local_pkg/local_backend.py", LOCAL_BACKEND);
    let text = std::fs::read_to_string(s.work.join("pyproject.toml")).unwrap();
    s.write(
        "pyproject.toml",
        &format!("{text}\n[tool.uv.sources]\nlocal-pkg = {{ path = \"lib/local_pkg\" }}\n"),
    );
    set_dependencies(&s, "\"greeting==1.0.0\", \"local-pkg\"");
    uv_lock(&s);
    s.commit("path dependency");
    let push = s.push(&[]);
    push.assert_has(
        "uv.lock names a local path (lib/local_pkg): uv sync installs from the site, after the file switch",
    );
    push.assert_ok();
    let text = push.all();
    let sync = text.find("Syncing files").unwrap();
    // Rebuilt at each install: uv would keep its first build.
    let install = text
        .find("--no-install-project --reinstall-package=local-pkg (")
        .unwrap();
    assert!(sync < install, "{text}");
    assert!(env_packages(&s).contains(&"local-pkg 0.1.0".to_string()));
}

/// A build backend of its own for the path dependency: a wheel of one module.
const LOCAL_BACKEND: &str = r#"import base64, hashlib, os, zipfile

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "local_pkg-0.1.0-py3-none-any.whl"
    dist = "local_pkg-0.1.0.dist-info"
    files = {
        "local_pkg.py": b"VALUE = 1\n",
        dist + "/METADATA": b"Metadata-Version: 2.1\nName: local-pkg\nVersion: 0.1.0\n",
        dist + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: local\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
        record.append(dist + "/RECORD,,")
        z.writestr(dist + "/RECORD", "\n".join(record) + "\n")
    return name
"#;

#[test]
fn pipfile_lock_installs_aside_and_a_failed_install_leaves_the_site() {
    let s = Server::new();
    pipenv_app(&s);
    s.commit("v1");
    let push = s.push(&[]);
    push.assert_ok();
    installs_before_the_sync(&push, "(Pipfile.lock's packages) (into the new env)");

    // A hash no wheel has: pip refuses the download.
    pipenv_v2(&s);
    let lock = std::fs::read_to_string(s.work.join("Pipfile.lock")).unwrap();
    let broken = lock.replace(
        "sha256:56542777737c58ea8ec531ba566262c94fd5959f44576d086a40604ef1d3ce6d",
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    );
    assert_ne!(lock, broken);
    s.write("Pipfile.lock", &broken);
    s.commit("v2, broken");
    failing_install_leaves_the_site(
        &s,
        "(Pipfile.lock's packages) (changed since the last install",
        &["greeting 1.0.0", "tinyweb 1.0.0"],
    );

    s.write("Pipfile.lock", &lock);
    s.commit("v2");
    let push = s.push(&[]);
    push.assert_ok();
    installs_before_the_sync(
        &push,
        "(Pipfile.lock's packages) (the last install, by deployment",
    );
    assert_eq!(env_packages(&s), ["greeting 2.0.0", "staticpipe 1.0.0"]);
}

#[test]
fn poetry_lock_installs_aside_and_a_failed_install_leaves_the_site() {
    let Some(s) = poetry_server() else { return };
    poetry_lock(&s);
    s.commit("v1");
    let push = s.push(&[]);
    push.assert_ok();
    installs_before_the_sync(
        &push,
        "--no-root --no-interaction --no-ansi (into the new env)",
    );

    // A hash no wheel has: Poetry refuses the download.
    set_dependencies(&s, "\"greeting==2.0.0\", \"staticpipe==1.0.0\"");
    poetry_lock(&s);
    let lock = std::fs::read_to_string(s.work.join("poetry.lock")).unwrap();
    let broken = lock.replace(
        "56542777737c58ea8ec531ba566262c94fd5959f44576d086a40604ef1d3ce6d",
        "0000000000000000000000000000000000000000000000000000000000000000",
    );
    assert_ne!(lock, broken);
    s.write("poetry.lock", &broken);
    s.commit("v2, broken");
    failing_install_leaves_the_site(
        &s,
        "--no-root --no-interaction --no-ansi (changed since the last install",
        &["greeting 1.0.0", "tinyweb 1.0.0"],
    );

    s.write("poetry.lock", &lock);
    s.commit("v2");
    let push = s.push(&[]);
    push.assert_ok();
    installs_before_the_sync(
        &push,
        "--no-root --no-interaction --no-ansi (the last install, by deployment",
    );
    assert_eq!(env_packages(&s), ["greeting 2.0.0", "staticpipe 1.0.0"]);
}

/// The uv project of issue 15 item 20: the app itself (`uvapp`, built by
/// flit_core from fixtures/wheels) and a workspace member (`helper`), each
/// with a message its code holds.
fn uv_project_with_a_member(s: &Server, app: &str, helper: &str) {
    s.write(
        "pyproject.toml",
        r#"[project]
name = "uvapp"
version = "0.1.0"
description = "the app"
requires-python = ">=3.8"
dependencies = ["greeting==1.0.0", "helper", "other"]

[build-system]
requires = ["flit_core==4.2.0"]
build-backend = "flit_core.buildapi"

[tool.uv.workspace]
members = ["libs/helper"]

[tool.uv.sources]
helper = { workspace = true }
other = { path = "libs/other" }
"#,
    )
    .write(
        "libs/other/pyproject.toml",
        r#"[project]
name = "other"
version = "0.1.0"
description = "a path dependency"

[build-system]
requires = ["flit_core==4.2.0"]
build-backend = "flit_core.buildapi"
"#,
    )
    .write(
        "libs/helper/pyproject.toml",
        r#"[project]
name = "helper"
version = "0.1.0"
description = "a workspace member"

[build-system]
requires = ["flit_core==4.2.0"]
build-backend = "flit_core.buildapi"
"#,
    )
    .write("uvapp/__init__.py", &format!("MESSAGE = {app:?}\n"))
    .write("libs/helper/helper.py", &format!("MESSAGE = {helper:?}\n"))
    .write("libs/other/other.py", &format!("MESSAGE = {helper:?}\n"));
}

/// Issue 15 item 20: with installProject, and for a workspace member, the
/// env's copy of the app is the deployed commit's code: a push that changes
/// only the code is what `import uvapp` (as prestart.sh, alembic or celery
/// would, from env/bin/python) gets, not the first build.
#[test]
fn the_apps_own_code_in_the_env_is_the_deployed_commits() {
    let Some(s) = uv_server() else { return };
    // uv 0.13 reads no UV_NO_INDEX: offline, so that flit_core comes from
    // fixtures/wheels as the build backend.
    let vars = [("UV_OFFLINE", "1")];
    let push = |s: &Server| s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars);
    // From outside the site, as a script of env/bin runs: the site's own
    // folder is not on sys.path, only what the env installed.
    let messages = |s: &Server| {
        let run = crate::util::TestCommand::new(s.site.join("env/bin/python"), &s.root)
            .args([
                "-c",
                "import uvapp, helper, other; print(uvapp.MESSAGE, helper.MESSAGE, other.MESSAGE)",
            ])
            .run();
        run.assert_ok();
        run.stdout.trim().to_string()
    };
    s.write(".deployment", "[config]\ninstallProject = true\n");
    uv_project_with_a_member(&s, "one", "one");
    uv_lock(&s);
    s.commit("uv project, installed");
    push(&s).assert_ok().assert_has("successful");
    assert_eq!(messages(&s), "one one one");

    // Only the code changes, the app's and then the member's and the path
    // dependency's.
    uv_project_with_a_member(&s, "two", "one");
    s.commit("the app's code");
    push(&s).assert_ok().assert_has("successful");
    assert_eq!(messages(&s), "two one one");
    uv_project_with_a_member(&s, "two", "three");
    s.commit("the member's code");
    push(&s).assert_ok().assert_has("successful");
    assert_eq!(messages(&s), "two three three");

    // A redeploy of the first commit: its code again.
    let first = &s.records().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.pushdeploy_with(
        &["redeploy", "--repo", s.repo.to_str().unwrap(), first],
        &vars,
    )
    .assert_ok();
    assert_eq!(messages(&s), "one one one");
}
