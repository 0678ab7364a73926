//! Issue 2: push-to-deploy, end to end.

use std::os::unix::fs::PermissionsExt;

use crate::util::{Server, snapshot};

#[test]
fn first_push_deploys_files_env_and_packages() {
    let s = Server::new();
    s.app("flask-app");
    s.write("bin/start", "#!/bin/sh\nexec env/bin/python app.py\n");
    std::fs::set_permissions(
        s.work.join("bin/start"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("app.py", s.work.join("main.py")).unwrap();
    let id = s.commit("first");
    let push = s.push(&[]);
    push.assert_ok();

    let remote = push.remote();
    assert!(
        remote
            .iter()
            .any(|l| l.starts_with("-----> Deploying ") && l.contains("refs/heads/main")),
        "{remote:?}"
    );
    assert!(
        remote
            .iter()
            .any(|l| l.contains("Python runtime: python-3.11 (runtime.txt) -> "))
    );
    assert!(
        remote
            .iter()
            .any(|l| l.contains("Creating virtual environment env/ with python-3.11: no env yet"))
    );
    assert!(
        remote
            .iter()
            .any(|l| l.contains("Successfully installed greeting-1.0.0 tinyweb-1.0.0"))
    );
    let last = remote.last().expect("the hook printed lines");
    assert!(
        last.starts_with(&format!("-----> Deployment {} successful in ", &id[..7])),
        "{last}"
    );

    assert_eq!(
        s.site_file("app.py"),
        std::fs::read_to_string(s.work.join("app.py")).unwrap()
    );
    let mode = std::fs::metadata(s.site.join("bin/start"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755);
    assert_eq!(
        std::fs::metadata(s.site.join("app.py"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    assert_eq!(
        std::fs::read_link(s.site.join("main.py")).unwrap().to_str(),
        Some("app.py")
    );
    assert!(s.site.join("env/azure.env.python-3.11.txt").is_file());
    s.env_python(
        "import greeting, tinyweb, sys; print(greeting.__version__, sys.version_info[:2])",
    )
    .assert_ok()
    .assert_has("1.0.0 (3, 11)");

    let records = s.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["id"], id.as_str());
    assert_eq!(records[0]["status"], "success");
    assert_eq!(records[0]["trigger"], "push");
    let show = s.run("show", &[&id[..8]]);
    show.assert_ok()
        .assert_has("Successfully installed greeting-1.0.0");
}

#[test]
fn second_push_changes_deletes_and_keeps_app_files() {
    let s = Server::new();
    s.app("flask-app")
        .write("docs/old.txt", "old\n")
        .write("static/app.js", "1\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    std::fs::create_dir_all(s.site.join("uploads")).unwrap();
    std::fs::write(s.site.join("uploads/photo.jpg"), "app data").unwrap();
    std::fs::write(s.site.join("static/user.css"), "made by the app").unwrap();

    s.write(
        "app.py",
        &s.site_file("app.py").replace("Hello from", "Hi from"),
    )
    .remove("docs")
    .remove("static/app.js");
    s.commit("second");
    let push = s.push(&[]);
    push.assert_ok()
        .assert_has("Syncing files: 1 to write, 2 to delete")
        .assert_has("Found compatible virtual environment env/ (python-3.11)");
    assert!(s.site_file("app.py").contains("Hi from"));
    assert!(
        !s.site.join("docs").exists(),
        "a directory left empty by the deletion goes too"
    );
    assert!(!s.site.join("static/app.js").exists());
    assert_eq!(s.site_file("uploads/photo.jpg"), "app data");
    assert_eq!(s.site_file("static/user.css"), "made by the app");
    s.env_python("import greeting").assert_ok();
}

#[test]
fn other_branches_tags_and_deletions_are_ignored() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    s.push(&[]).assert_ok();
    let before = snapshot(&s.site);

    s.git(&["checkout", "-q", "-b", "feature"]).assert_ok();
    s.write("app.py", "broken = (\n");
    s.commit("wip");
    let push = s.push(&["feature"]);
    push.assert_ok()
        .assert_has("Ignored: ref refs/heads/feature is not the deployment branch main");
    push.assert_has("Nothing to deploy: pushes to refs/heads/main deploy to");
    s.git(&["tag", "v1"]).assert_ok();
    s.push(&["v1"])
        .assert_ok()
        .assert_has("Ignored: tag refs/tags/v1 is not the deployment branch main");
    s.push(&[":refs/heads/feature"])
        .assert_ok()
        .assert_has("Ignored: ref refs/heads/feature");
    assert_eq!(snapshot(&s.site), before);
    assert_eq!(s.records().len(), 1);
}

#[test]
fn runtime_change_recreates_env_with_reason() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    s.push(&[]).assert_ok();
    s.write("runtime.txt", "python-3.12\n");
    s.commit("move to 3.12");
    let push = s.push(&[]);
    push.assert_ok().assert_has("Creating virtual environment env/ with python-3.12: runtime changed from python-3.11 to python-3.12");
    assert!(s.site.join("env/azure.env.python-3.12.txt").is_file());
    assert!(!s.site.join("env/azure.env.python-3.11.txt").exists());
    s.env_python("import sys, greeting; print(sys.version_info[:2])")
        .assert_ok()
        .assert_has("(3, 12)");
    assert_eq!(
        s.env_dirs(),
        1,
        "the old env directory is kept until the next successful deployment"
    );
    push.assert_has(
        "Python changes from python-3.11 to python-3.12: the app server needs a full restart",
    );
}

#[test]
fn dry_run_changes_nothing_and_prints_the_plan() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    s.push(&[]).assert_ok();
    s.write("requirements.txt", "greeting==2.0.0\ntinyweb==1.0.0\n")
        .write("new.txt", "new\n")
        .remove("README.md");
    s.commit("upgrade");
    s.update_without_deploy();
    let site_before = snapshot(&s.site);
    let state_before = snapshot(&s.repo.join("pushdeploy"));

    let run = s.run("deploy", &["--dry-run"]);
    run.assert_ok().assert_has("(dry run: nothing changes)");
    run.assert_has("Files: 2 to write, 1 to delete")
        .assert_has("write  new.txt (new)")
        .assert_has("delete README.md");
    run.assert_has("env: reuse env/ (python-3.11)")
        .assert_has("pip: would install greeting 2.0.0");
    let json = s.run("deploy", &["--dry-run", "--json"]);
    json.assert_ok();
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).expect("the plan is JSON");
    assert_eq!(plan["sync"]["delete"][0], "README.md");
    assert_eq!(plan["python"]["env"]["action"], "reuse");
    assert_eq!(
        plan["python"]["packages"]["packages"][0]["name"],
        "greeting"
    );

    assert_eq!(
        snapshot(&s.site),
        site_before,
        "the dry run changed the site or the env"
    );
    assert_eq!(
        snapshot(&s.repo.join("pushdeploy")),
        state_before,
        "the dry run changed the records"
    );
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("Successfully installed greeting-2.0.0");
    assert_ne!(snapshot(&s.site), site_before);
}

#[test]
fn the_pusher_sees_each_line_as_it_happens() {
    use std::io::{BufRead, BufReader};
    let s = Server::new();
    s.write("index.html", "x\n");
    s.commit("first");
    // A slow last step: the first lines must reach the pusher before it ends.
    s.config(&["deploy.postDeploy", "sleep 3"]);
    let mut push = s
        .git_command(&["push", s.repo.to_str().unwrap(), "main"])
        .spawn(std::process::Stdio::null(), std::process::Stdio::piped());
    let mut lines = BufReader::new(push.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("remote: -----> Deploying "), "{first}");
    assert!(
        push.try_wait().unwrap().is_none(),
        "the line came before the push ended"
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(push.wait().unwrap().success());
    assert!(rest.iter().any(|l| l.contains("successful")), "{rest:?}");
}
