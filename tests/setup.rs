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
