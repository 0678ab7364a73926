//! Issue 17: a requirement from git by branch, tag or no revision counts as
//! pinned at the commit its remote names now (`git ls-remote`, through the
//! server's git config): an unchanged push skips the installer, a moved
//! branch installs the new commit's code. The remotes are repositories the
//! tests make, reached through `url.<dir>.insteadOf` in a global git config
//! (nothing goes to the network); hellogit's build backend (flit_core) is in
//! fixtures/wheels.

use std::path::{Path, PathBuf};

use crate::util::{Run, Server, git_in};

const URL: &str = "https://git.example.invalid/hellogit.git";

/// fixtures/git-src/hellogit as a git repository at `<root>/hellogit` (one
/// commit on main), and the git config that fetches [`URL`] from it.
pub fn hellogit(s: &Server) -> (PathBuf, PathBuf) {
    let repo = s.root.join("hellogit");
    crate::lockfiles::hellogit_repo(&repo);
    let config = crate::lockfiles::fetched_from(s, &repo);
    (repo, config)
}

/// A new commit on hellogit's checked-out branch, whose `WHERE` is `text`;
/// its id.
fn move_branch(repo: &Path, text: &str) -> String {
    std::fs::write(
        repo.join("hellogit/__init__.py"),
        format!("WHERE = {text:?}\n"),
    )
    .unwrap();
    git_in(repo)
        .args(["commit", "-q", "--no-gpg-sign", "-am", text])
        .run()
        .assert_ok();
    head(repo)
}

fn head(repo: &Path) -> String {
    let run = git_in(repo).args(["rev-parse", "HEAD"]).run();
    run.stdout.trim().to_string()
}

fn short(id: &str) -> &str {
    &id[..7]
}

/// hellogit's `WHERE` in the env, and the commit its direct_url.json records.
fn installed(s: &Server) -> String {
    let run = s.env_python(
        "import hellogit, json, importlib.metadata as m; print(hellogit.WHERE); print(json.loads(m.distribution('hellogit').read_text('direct_url.json'))['vcs_info']['commit_id'])",
    );
    run.assert_ok();
    run.stdout.trim().to_string()
}

fn push_requirements(s: &Server, requirements: &str, vars: &[(&str, &str)]) -> Run {
    s.write("requirements.txt", requirements);
    s.commit("requirements");
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], vars)
}

/// The flask app pushed with hellogit by branch `main`; returns the commit
/// the env then holds (the branch's).
fn push_branch_line(s: &Server, repo: &Path, vars: &[(&str, &str)]) -> String {
    let first = head(repo);
    s.app("flask-app");
    push_requirements(
        s,
        &format!("tinyweb==1.0.0\nhellogit @ git+{URL}@main\n"),
        vars,
    )
    .assert_ok()
    .assert_has("successful in");
    assert_eq!(installed(s), format!("from git\n{first}"));
    first
}

/// Pushes a change of app.py only.
fn touch(s: &Server, vars: &[(&str, &str)]) -> Run {
    let app = std::fs::read_to_string(s.work.join("app.py")).unwrap();
    s.write("app.py", &format!("{app}# {}\n", app.len()));
    s.commit("app.py only");
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], vars)
}

/// A no-op push with a line by branch skips pip, saying which commit the
/// branch names; once the branch moved, pip runs, the env gets the new
/// commit's code (pip alone keeps the installed build while its version is
/// the same), and the next push skips again. The dry run shows the commit.
#[test]
fn a_branch_line_skips_pip_until_the_branch_moves() {
    let s = Server::new();
    let (repo, config) = hellogit(&s);
    let vars = [("GIT_CONFIG_GLOBAL", config.to_str().unwrap())];
    let first = push_branch_line(&s, &repo, &vars);

    let said = format!(
        "requirements.txt line 2: branch main of {URL} is commit {}; env/ has it",
        short(&first)
    );
    let push = touch(&s, &vars);
    push.assert_ok().assert_has(&said).assert_has("pip skipped");
    assert!(!push.has("pip install"), "{}", push.stderr);

    let second = move_branch(&repo, "second commit");
    s.write("app.py", "# not pushed\n");
    s.commit("dry run");
    s.update_without_deploy();
    s.deploy_with(&["--dry-run"], &vars)
        .assert_ok()
        .assert_has(&format!(
            "git: requirements.txt line 2: branch main of {URL} is commit {}; env/ has hellogit {}: installed again",
            short(&second),
            short(&first)
        ))
        .assert_has("pip: runs (changed since the last install: git commits)");

    let push = touch(&s, &vars);
    assert_eq!(installed(&s), format!("second commit\n{second}"));
    push.assert_ok()
        .assert_has(&format!(
            "env/ has hellogit {}: installed again",
            short(&first)
        ))
        .assert_has("Successfully uninstalled hellogit-0.1.0")
        .assert_has("successful in");
    touch(&s, &vars)
        .assert_ok()
        .assert_has(&format!(
            "branch main of {URL} is commit {}; env/ has it",
            short(&second)
        ))
        .assert_has("pip skipped");
}

/// A lightweight tag, an annotated tag (by the commit it peels to) and no
/// revision (the remote's HEAD) count as pinned at their commit too; a
/// line changed to another revision of the same commit installs it again
/// (so that the env records the revision asked for), and a tag moved
/// installs the new code.
#[test]
fn tags_and_the_remote_head_count_as_pinned_at_their_commit() {
    let s = Server::new();
    let (repo, config) = hellogit(&s);
    let vars = [("GIT_CONFIG_GLOBAL", config.to_str().unwrap())];
    let first = head(&repo);
    git_in(&repo).args(["tag", "v1"]).run().assert_ok();
    git_in(&repo)
        .args(["tag", "-a", "v1a", "-m", "annotated", "--no-sign"])
        .run()
        .assert_ok();
    s.app("flask-app");
    let table = [
        ("@v1", "tag v1"),
        ("@v1a", "annotated tag v1a"),
        ("", "(no revision: the remote's HEAD)"),
    ];
    for (rev, what) in table {
        push_requirements(
            &s,
            &format!("tinyweb==1.0.0\nhellogit @ git+{URL}{rev}\n"),
            &vars,
        )
        .assert_ok()
        .assert_has("successful in");
        assert_eq!(installed(&s), format!("from git\n{first}"), "{what}");
        touch(&s, &vars)
            .assert_ok()
            .assert_has(&format!("{what} "))
            .assert_has(&format!("is commit {}; env/ has it", short(&first)))
            .assert_has("pip skipped");
    }
    // The remote's HEAD moved.
    let second = move_branch(&repo, "second commit");
    touch(&s, &vars)
        .assert_ok()
        .assert_has(&format!(
            "requirements.txt line 2: {URL} (no revision: the remote's HEAD) is commit {}",
            short(&second)
        ))
        .assert_has("successful in");
    assert_eq!(installed(&s), format!("second commit\n{second}"));
    // An annotated tag moved to the new commit.
    push_requirements(
        &s,
        &format!("tinyweb==1.0.0\nhellogit @ git+{URL}@v1a\n"),
        &vars,
    )
    .assert_ok();
    assert_eq!(installed(&s), format!("from git\n{first}"));
    git_in(&repo)
        .args(["tag", "-f", "-a", "v1a", "-m", "moved", "--no-sign"])
        .run()
        .assert_ok();
    touch(&s, &vars)
        .assert_ok()
        .assert_has(&format!(
            "annotated tag v1a of {URL} is commit {}",
            short(&second)
        ))
        .assert_has("successful in");
    assert_eq!(installed(&s), format!("second commit\n{second}"));
}

/// A remote that cannot be asked: the installer runs as it did before, and
/// a line says why (here pip cannot fetch it either: the push fails as it
/// did, the live env untouched).
#[test]
fn a_remote_that_cannot_be_asked_runs_the_installer_and_says_why() {
    let s = Server::new();
    let (repo, config) = hellogit(&s);
    let vars = [("GIT_CONFIG_GLOBAL", config.to_str().unwrap())];
    let first = head(&repo);
    s.app("flask-app");
    push_requirements(
        &s,
        &format!("tinyweb==1.0.0\nhellogit @ git+{URL}@main\n"),
        &vars,
    )
    .assert_ok();
    std::fs::rename(&repo, s.root.join("hellogit-gone")).unwrap();
    let push = touch(&s, &vars);
    push.assert_has(&format!(
        "requirements.txt line 2: which commit main of {URL} names is not known (git ls-remote failed: "
    ))
    .assert_has("does not appear to be a git repository): the installer runs")
    .assert_has("pip install -r requirements.txt (requirements.txt line 2: which commit");
    push.assert_has("failed in step pip");
    assert_eq!(installed(&s), format!("from git\n{first}"));
    // Back: asked again, and skipped.
    std::fs::rename(s.root.join("hellogit-gone"), &repo).unwrap();
    touch(&s, &vars).assert_ok();
    touch(&s, &vars).assert_ok().assert_has("pip skipped");
}

/// uv resolves a moved branch to its new commit and installs it as well;
/// an unchanged push skips it as for pip.
#[test]
fn with_uv_a_branch_line_skips_and_follows_the_branch() {
    let Some(uv) = crate::util::uv() else {
        eprintln!("uv is not installed: .ci/run installs it; skipping this test here");
        return;
    };
    let s = Server::new();
    s.config(&["deploy.installer", uv.to_str().unwrap()]);
    let (repo, config) = hellogit(&s);
    let vars = [("GIT_CONFIG_GLOBAL", config.to_str().unwrap())];
    let first = push_branch_line(&s, &repo, &vars);
    touch(&s, &vars)
        .assert_ok()
        .assert_has(&format!("is commit {}; env/ has it", short(&first)))
        .assert_has("uv skipped");
    let second = move_branch(&repo, "second commit");
    touch(&s, &vars)
        .assert_ok()
        .assert_has("installed again")
        .assert_has("successful in");
    assert_eq!(installed(&s), format!("second commit\n{second}"));
    touch(&s, &vars).assert_ok().assert_has("uv skipped");
}

/// A revision that git would take for an option (`--upload-pack=<program>`
/// runs the program when it reaches git as one) is asked about after `--`:
/// nothing runs, the remote has no such branch or tag, and the installer
/// runs as before (here pip refuses it: the push fails as it did).
#[test]
fn a_revision_that_looks_like_an_option_runs_nothing() {
    let s = Server::new();
    let (_repo, config) = hellogit(&s);
    let vars = [("GIT_CONFIG_GLOBAL", config.to_str().unwrap())];
    let marker = s.root.join("ran");
    let evil = s.root.join("evil.sh");
    std::fs::write(&evil, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&evil, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    s.app("flask-app");
    push_requirements(&s, "tinyweb==1.0.0\n", &vars).assert_ok();
    let rev = format!("--upload-pack={}", evil.display());
    let push = push_requirements(
        &s,
        &format!("tinyweb==1.0.0\nhellogit @ git+{URL}@{rev}\n"),
        &vars,
    );
    push.assert_has(&format!(
        "(the remote has no branch or tag {rev}: pip takes it for a commit): the installer runs"
    ));
    push.assert_has("failed in step pip");
    assert!(!marker.exists(), "a program the line named ran");
}
