//! Issue 10: transactional deployments. Steps that hang are killed with
//! every process they started; what a killed deployment left running is
//! killed before the next one changes anything.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::Server;

/// The flask fixture, pushed and deployed.
fn deployed_flask() -> Server {
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    s.push(&[]).assert_ok().assert_has("successful");
    s
}

/// An executable shell script in the server's temp dir.
fn script(s: &Server, name: &str, body: &str) -> PathBuf {
    let path = s.root.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn set_post_deploy(s: &Server, command: &Path) {
    s.config(&["deploy.postDeploy", command.to_str().unwrap()]);
}

/// Waits a little longer than `secs` and says whether `path` appeared.
fn appears_within(path: &Path, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    path.exists()
}

#[test]
fn a_step_silent_past_the_idle_timeout_is_killed_with_its_children() {
    let s = deployed_flask();
    let late = s.root.join("late.txt");
    // A child in the background that would write 4 s later, and a wait that
    // never ends: no output, no CPU time.
    let hang = script(
        &s,
        "hang.sh",
        &format!("(sleep 4; echo late > {}) &\nsleep 600", late.display()),
    );
    set_post_deploy(&s, &hang);
    s.write("app.py", "# changed\n").commit("second");
    let started = Instant::now();
    let push = s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("SCM_COMMAND_IDLE_TIMEOUT", "2")],
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    push.assert_has("postDeploy showed no sign of work (no output, no CPU time) for 2 s (setting commandIdleTimeout): killed with every process it started");
    assert!(push.has("failed"));
    assert!(!appears_within(&late, 5), "the child was killed too");
    // The lock is free: the next deployment does not wait.
    let again = s.run("deploy", &[]);
    assert!(!again.has("Waiting for"));
}

#[test]
fn a_silent_but_busy_step_is_not_killed() {
    let s = deployed_flask();
    // Three seconds of CPU without a line of output, as a wheel build compiles.
    let busy = script(
        &s,
        "busy.sh",
        "python3 -c 'import time\nend = time.time() + 3\nwhile time.time() < end: pass'\necho built",
    );
    set_post_deploy(&s, &busy);
    s.write("app.py", "# changed\n").commit("second");
    let push = s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("SCM_COMMAND_IDLE_TIMEOUT", "1")],
    );
    push.assert_ok()
        .assert_has("built")
        .assert_has("successful");
}

#[test]
fn the_deployment_time_limit_kills_the_running_step() {
    let s = deployed_flask();
    // Output every 0.2 s: never idle, but never done either.
    let chatty = script(
        &s,
        "chatty.sh",
        "while true; do echo working; sleep 0.2; done",
    );
    set_post_deploy(&s, &chatty);
    s.write("app.py", "# changed\n").commit("second");
    let push = s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("PUSHDEPLOY_DEPLOYMENT_TIMEOUT", "3")],
    );
    push.assert_has("the deployment took longer than its limit (3 s, setting deploymentTimeout)");
}

#[test]
fn a_bad_timeout_is_refused_naming_the_setting() {
    let s = deployed_flask();
    let run = s.pushdeploy_with(
        &["deploy", "--repo", s.repo.to_str().unwrap()],
        &[("SCM_COMMAND_IDLE_TIMEOUT", "soon")],
    );
    assert_eq!(run.status, 1, "a failed deployment");
    run.assert_has("setting commandIdleTimeout (environment SCM_COMMAND_IDLE_TIMEOUT): \"soon\" is not a number of seconds");
}

#[test]
fn processes_a_killed_deployment_left_are_killed_before_the_next_changes_anything() {
    let s = deployed_flask();
    let late = s.root.join("late.txt");
    let started = s.root.join("started");
    let slow = script(
        &s,
        "slow.sh",
        &format!(
            "(sleep 3; echo late > {}) &\ntouch {}\nsleep 600",
            late.display(),
            started.display()
        ),
    );
    set_post_deploy(&s, &slow);
    s.write("app.py", "# changed\n").commit("second");
    s.update_without_deploy();
    let mut child = std::process::Command::new(crate::util::BIN)
        .args(["deploy", "--repo", s.repo.to_str().unwrap()])
        .env("PIP_NO_INDEX", "1")
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env(
            "PUSHDEPLOY_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("cache"),
        )
        .env_remove("GIT_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(appears_within(&started, 120), "postDeploy started");
    child.kill().unwrap();
    child.wait().unwrap();
    // Any command that takes the lock ends what the killed one left.
    let delete = s.pushdeploy(&["env", "delete", "--repo", s.repo.to_str().unwrap()]);
    delete
        .assert_ok()
        .assert_has("Killed postDeploy (process group ");
    assert!(!appears_within(&late, 5), "the grandchild was killed");
}
