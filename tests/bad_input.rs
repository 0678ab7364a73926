//! Issue 2 and 6: bad input fails with one clear line, in the plan, before
//! anything changes; the pushed commits stay in the repository.

use crate::util::{Server, snapshot};

/// Deploys the flask app once, then pushes `files` on top; returns the push.
fn push_bad(
    files: &[(&str, &[u8])],
) -> (
    Server,
    crate::util::Run,
    std::collections::BTreeMap<String, String>,
) {
    let s = Server::new();
    s.app("flask-app");
    s.commit("good");
    s.push(&[]).assert_ok();
    let before = snapshot(&s.site);
    for (path, content) in files {
        std::fs::write(s.work.join(path), content).unwrap();
    }
    s.write("app.py", "changed = True\n");
    let id = s.commit("bad");
    let push = s.push(&[]);
    assert_eq!(push.status, 0, "git keeps the push whatever the hook says");
    assert_eq!(s.branch_head("main"), id, "the ref update stands");
    (s, push, before)
}

/// The one line that says why the deployment failed.
fn failure_line(push: &crate::util::Run) -> String {
    let remote = push.remote();
    let last = remote.last().expect("the hook printed lines").clone();
    assert!(
        last.starts_with("-----> Deployment ") && last.contains(" failed in step plan"),
        "{last}"
    );
    last
}

#[test]
fn runtime_txt_errors_name_file_and_value_and_change_nothing() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "runtime.txt: is empty"),
        (
            b"garbage\n",
            "runtime.txt: \"garbage\" is not a Python runtime",
        ),
        (
            b"python-3.12; rm -rf /\n",
            "runtime.txt: \"python-3.12; rm -rf /\" is not a Python runtime",
        ),
        (b"\x00\x01\x02\xff", "runtime.txt: "),
        (
            b"python-9.9\n",
            "runtime.txt: python-9.9 is not installed; found: ",
        ),
    ];
    for (content, expected) in cases {
        let (s, push, before) = push_bad(&[("runtime.txt", content)]);
        let line = failure_line(&push);
        assert!(line.contains(expected), "{line}");
        if expected.contains("not installed") {
            assert!(
                line.contains("3.11.7 ("),
                "the interpreters that were found are listed: {line}"
            );
        }
        assert_eq!(snapshot(&s.site), before, "nothing changed for {content:?}");
        let records = s.records();
        assert_eq!(records[0]["status"], "failed");
        assert!(
            records[0]["error"]
                .as_str()
                .unwrap()
                .contains("runtime.txt")
        );
    }
}

#[test]
fn unknown_package_fails_the_deployment_in_pip() {
    let (s, push, _) = push_bad(&[(
        "requirements.txt",
        b"greeting==1.0.0\nno-such-package==1.0\n",
    )]);
    push.assert_has("No matching distribution found for no-such-package");
    let last = push.remote().last().unwrap().clone();
    assert!(
        last.contains("failed in step pip") && last.contains("pip install exited with status 1"),
        "{last}"
    );
    assert_eq!(s.records()[0]["status"], "failed");
    s.env_python("import greeting").assert_ok();
    // By hand, the same failure is exit status 1.
    let run = s.run("deploy", &[]);
    assert_eq!(run.status, 1);
    assert!(
        run.stdout
            .lines()
            .last()
            .unwrap()
            .contains("failed in step pip")
    );
}

#[test]
fn a_bad_requirements_line_fails_in_pip() {
    let (_, push, _) = push_bad(&[("requirements.txt", b"greeting===\n")]);
    push.assert_has("failed in step pip");
}

#[test]
fn a_committed_env_is_refused_in_the_plan() {
    let (s, push, before) = push_bad(&[("env", b"not a venv")]);
    let line = failure_line(&push);
    assert!(
        line.contains("commit entry env: the commit contains a virtual environment (env/)"),
        "{line}"
    );
    assert_eq!(snapshot(&s.site), before);
}

#[test]
fn usage_errors_exit_with_status_2() {
    let s = Server::new();
    let bogus = s.root.join("nothing-here");
    let run = s.pushdeploy(&["deploy", "--repo", bogus.to_str().unwrap()]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("nothing-here"), "{}", run.stderr);
    let plain = s.root.join("plain.git");
    git2::Repository::init_bare(&plain).unwrap();
    let run = s.pushdeploy(&["deploy", "--repo", plain.to_str().unwrap()]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.contains("setting site is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn python_version_errors_name_file_and_value() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("good");
    s.push(&[]).assert_ok();
    let before = snapshot(&s.site);
    s.remove("runtime.txt")
        .write(".python-version", "3.12; rm -rf /\n");
    s.commit("bad .python-version");
    let push = s.push(&[]);
    let line = failure_line(&push);
    assert!(
        line.contains(".python-version: \"3.12; rm -rf /\" is not a version pushdeploy can use"),
        "{line}"
    );
    assert_eq!(snapshot(&s.site), before);
}

#[test]
fn ref_names_with_shell_characters_are_only_data() {
    let s = Server::new();
    s.write("index.html", "x\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    let canary = s.root.join("pwned");
    // No spaces: git refuses them in ref names; ${IFS} stands in for one.
    let name = format!(
        "x;$(touch${{IFS}}{})`touch${{IFS}}{}`'\"",
        canary.display(),
        canary.display()
    );
    let push = s.push(&[&format!("HEAD:refs/heads/{name}")]);
    push.assert_ok()
        .assert_has("Ignored: ref refs/heads/x;$(touch");
    assert!(!canary.exists(), "nothing ran the ref name");
    // The hook's input with a name git would never send is refused with the line.
    let zero = "0".repeat(40);
    let bad = s
        .pushdeploy_command(&["post-receive", "--repo", s.repo.to_str().unwrap()])
        .stdin(format!("{zero} {zero} refs/heads/a b\nmore\n"))
        .run();
    bad.assert_status(1);
    let stderr = &bad.stderr;
    assert!(
        stderr.contains("post-receive input line 1: \"0000"),
        "{stderr}"
    );
    assert!(stderr.lines().count() == 1, "{stderr}");
}

#[test]
fn an_app_file_where_the_commit_has_a_directory_is_kept_and_named() {
    let s = Server::new();
    s.write("index.html", "x\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    std::fs::write(s.site.join("logs"), "the app's log\n").unwrap();
    let before = snapshot(&s.site);
    s.write("logs/README", "a directory now\n");
    s.commit("logs is a directory");
    let push = s.push(&[]);
    let line = failure_line(&push);
    assert!(
        line.contains(
            "commit entry logs/README: the site has a file logs that pushdeploy did not write"
        ),
        "{line}"
    );
    assert_eq!(snapshot(&s.site), before);
    // The next deployment does not take the refused one for an interrupted sync.
    s.remove("logs");
    s.write("index.html", "y\n");
    s.commit("back to a file-free logs");
    s.push(&[]).assert_ok().assert_has("changes since");
    assert_eq!(s.site_file("logs"), "the app's log\n");
}

/// Issue 15 item 11: a duration past any real need (2^64-1 s overflowed the
/// clock and panicked after the switch, with no rollback) fails the plan,
/// from each layer of the server, naming the setting, the value and the range.
#[test]
fn absurd_timeouts_fail_in_the_plan_naming_setting_value_and_range() {
    let s = Server::new();
    s.write("index.html", "one\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    let before = snapshot(&s.site);
    let huge = "18446744073709551615";
    s.config(&["deploy.healthCheck", "true"]);
    s.config(&["deploy.healthCheckTimeout", huge]);
    s.write("index.html", "two\n");
    s.commit("second");
    let line = failure_line(&s.push(&[]));
    assert!(
        line.contains(&format!(
            ": setting healthCheckTimeout (git config deploy.healthCheckTimeout): \"{huge}\" is not a number of seconds from 1 to 86400 (one day); the site is unchanged"
        )),
        "{line}"
    );
    assert_eq!(snapshot(&s.site), before);
    s.config(&["--unset", "deploy.healthCheckTimeout"]);
    for (args, vars, named) in [
        (
            vec![],
            vec![("PUSHDEPLOY_DEPLOYMENT_TIMEOUT", huge)],
            "setting deploymentTimeout (environment PUSHDEPLOY_DEPLOYMENT_TIMEOUT)",
        ),
        (
            vec!["-c", "commandIdleTimeout=86401"],
            vec![],
            "setting commandIdleTimeout (flag -c commandIdleTimeout): \"86401\" is not a number of seconds from 1 to 86400",
        ),
    ] {
        let run = s.deploy_with(&args, &vars);
        assert_eq!(run.status, 1, "{run}");
        assert!(run.all().contains(named), "{run}");
        assert_eq!(snapshot(&s.site), before);
    }
    // A commit's own absurd idle timeout fails its plan the same way.
    s.write(
        ".deployment",
        "[config]\nSCM_COMMAND_IDLE_TIMEOUT = 99999999999999999999\n",
    );
    s.commit("idle for ever");
    let line = failure_line(&s.push(&[]));
    assert!(
        line.contains("setting commandIdleTimeout (.deployment line 2): \"99999999999999999999\" is not a number of seconds from 1 to 86400"),
        "{line}"
    );
    assert_eq!(snapshot(&s.site), before);
    s.remove(".deployment");
    s.commit("sane again");
    s.push(&[]).assert_ok();
    assert_eq!(s.site_file("index.html"), "two\n");
}

/// Issue 15 item 16: the last line of a deployment that failed before the
/// switch said only why (`pip install exited with status 1`); over SSH one
/// could not tell whether the site was broken. It says the site is unchanged
/// and which deployment it still runs, as the rolled-back line does.
#[test]
fn a_failure_before_the_switch_says_what_the_site_still_runs() {
    let s = Server::new();
    s.app("flask-app")
        .write("requirements.txt", "no-such-package==1.0\n");
    let first = s.commit("broken from the start");
    let push = s.push(&[]);
    let last = push.remote().last().unwrap().clone();
    assert!(
        last.starts_with(&format!("-----> Deployment {} failed in step pip after ", &first[..7]))
            && last.ends_with(
                ": pip install exited with status 1; the site is unchanged: nothing was deployed to it yet"
            ),
        "{last}"
    );
    s.write("requirements.txt", "greeting==1.0.0\n");
    let good = s.commit("good");
    s.push(&[]).assert_ok();
    s.write(
        "requirements.txt",
        "greeting==1.0.0\nno-such-package==1.0\n",
    );
    s.commit("bad");
    let push = s.push(&[]);
    let last = push.remote().last().unwrap().clone();
    assert!(
        last.ends_with(&format!(
            ": pip install exited with status 1; the site is unchanged: it still runs {} (the last good deployment)",
            &good[..7]
        )),
        "{last}"
    );
    // By hand, the same line.
    let run = s.run("deploy", &[]);
    assert_eq!(run.status, 1);
    let by_hand = run.stdout.lines().last().unwrap();
    assert!(
        by_hand.ends_with(&format!(
            "it still runs {} (the last good deployment)",
            &good[..7]
        )),
        "{by_hand}"
    );
}
