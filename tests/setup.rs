//! `pushdeploy init` and the steps that are skipped.

use crate::util::Server;

#[test]
fn init_twice_changes_nothing_and_says_so() {
    let s = Server::new();
    let hook = std::fs::read_to_string(s.repo.join("hooks/post-receive")).unwrap();
    assert!(
        hook.starts_with("#!/bin/sh") && hook.contains("post-receive"),
        "{hook}"
    );
    let again = s.pushdeploy(&[
        "init",
        s.repo.to_str().unwrap(),
        "--site",
        s.site.to_str().unwrap(),
    ]);
    again
        .assert_ok()
        .assert_has("is already set up to deploy to")
        .assert_has("nothing changed");
    let config = s.run("config", &[]);
    config.assert_ok().assert_has("git config deploy.site");
}

#[test]
fn init_with_a_branch_deploys_that_branch() {
    let s = Server::new();
    let repo = s.root.join("other.git");
    s.pushdeploy(&[
        "init",
        repo.to_str().unwrap(),
        "--site",
        s.site.to_str().unwrap(),
        "--branch",
        "production",
    ])
    .assert_ok();
    s.app("flask-app");
    s.commit("first");
    let push = s.git(&["push", repo.to_str().unwrap(), "main"]);
    push.assert_ok()
        .assert_has("Ignored: ref refs/heads/main is not the deployment branch production");
    assert!(!s.site.join("app.py").exists());
    s.git(&["push", repo.to_str().unwrap(), "main:production"])
        .assert_ok()
        .assert_has("successful");
    assert!(s.site.join("app.py").exists());
}

#[test]
fn python_steps_are_skipped_without_requirements_or_with_the_skip_file() {
    let s = Server::new();
    s.write("index.html", "<p>static</p>\n");
    s.commit("static site");
    s.push(&[])
        .assert_ok()
        .assert_has("Python steps skipped: no requirements.txt in the commit")
        .assert_has("successful");
    assert!(!s.site.join("env").exists());
    s.app("flask-app").write(".skipPythonDeployment", "");
    s.commit("python, skipped");
    s.push(&[])
        .assert_ok()
        .assert_has("Python steps skipped: .skipPythonDeployment is in the commit");
    assert!(!s.site.join("env").exists());
    assert!(s.site.join("app.py").exists());
}

/// Issue 11: root running a command on the deploy user's repository hears
/// whose it is and how to run it as them, not libgit2's "not owned by
/// current user". Only root can give a repository to another user here.
#[test]
fn a_repository_of_another_user_is_named_with_its_owner() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: the message is checked by the unit test in cli.rs");
        return;
    }
    let s = Server::new();
    std::os::unix::fs::chown(&s.repo, Some(65534), None).unwrap();
    let run = s.run("list", &[]);
    run.assert_status(2)
        .assert_has(&format!("{} belongs to ", s.repo.display()))
        .assert_has(", not to root; run pushdeploy as the repository's owner")
        .assert_has(" pushdeploy list --repo ");
    assert!(!run.has("not owned by current user"), "{run}");
}

/// Issue 11: outside a repository, the message says how to name one.
#[test]
fn outside_a_repository_the_message_mentions_repo() {
    let s = Server::new();
    let run = s.pushdeploy(&["list"]);
    run.assert_status(2)
        .assert_has(&format!("{}: not a git repository", s.root.display()))
        .assert_has("--repo <path>");
    let missing = s.root.join("missing.git");
    s.pushdeploy(&["list", "--repo", missing.to_str().unwrap()])
        .assert_status(2)
        .assert_has("repository ")
        .assert_has("No such file or directory");
}
