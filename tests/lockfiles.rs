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
        .assert_has("sync --locked --no-config --no-default-groups --no-editable --no-install-project (into the new env)")
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

#[test]
fn requires_python_chooses_the_newest_interpreter_that_fits() {
    let Some(s) = uv_server() else { return };
    s.app("uv-app");
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
        .assert_has("python-3.12 (pyproject.toml requires-python >=3.12,<3.13)");
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
        .assert_has("python-3.11 (Pipfile [requires] python_version 3.11)");
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
        .assert_has("python-3.13 (pyproject.toml requires-python >=3.9,<4)");
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
    let install = text.find("--no-install-project (").unwrap();
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
