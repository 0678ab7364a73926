//! Issue 15, items 6, 8, 9 and 10: every program a deployment starts is
//! bounded by its limits, leaves nothing running once it exits, and its
//! output costs no more memory or record space however much there is.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::util::{Server, deployed_flask};

/// The size of `path` now and 1.5 s later (0 when it is not there): equal
/// when nothing writes to it any more.
fn sizes_apart(path: &Path) -> (u64, u64) {
    let size = || std::fs::metadata(path).map_or(0, |m| m.len());
    let before = size();
    std::thread::sleep(Duration::from_millis(1500));
    (before, size())
}

/// The shell loop of a process left in the background that appends a line
/// to `file` ten times a second, its output away from the step's.
fn writer_loop(file: &str) -> String {
    format!("(while :; do echo tick >> {file}; sleep 0.1; done) > /dev/null 2>&1 &")
}

fn site_packages(s: &Server) -> PathBuf {
    let lib = s.site.join("env/lib");
    let python = std::fs::read_dir(&lib).unwrap().flatten().next().unwrap();
    python.path().join("site-packages")
}

#[test]
fn a_custom_command_leaves_nothing_writing_once_it_exits() {
    let s = Server::new();
    let ticks = s.root.join("ticks.txt");
    s.app("flask-app")
        .write(".deployment", "[config]\ncommand = ./deploy.sh\n")
        .write(
            "deploy.sh",
            &format!(
                "#!/bin/sh\ncp \"$DEPLOYMENT_SOURCE/app.py\" \"$DEPLOYMENT_TARGET/app.py\"\n{}\n{}\nsleep 0.3\necho built\n",
                // One writes into the staging dir, one where the test sees it.
                writer_loop("\"$DEPLOYMENT_TARGET/late.txt\""),
                writer_loop(ticks.to_str().unwrap()),
            ),
        );
    std::fs::set_permissions(
        s.work.join("deploy.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    s.commit("custom command with a writer left behind");
    s.push(&[])
        .assert_ok()
        .assert_has("built")
        .assert_has("successful");
    let (before, after) = sizes_apart(&ticks);
    assert!(before > 0, "the writer ran");
    assert_eq!(
        before, after,
        "the command's group was killed when it exited"
    );
}

#[test]
fn a_post_build_command_leaves_nothing_writing_after_the_deployment_or_a_rollback() {
    let s = deployed_flask();
    let ticks = s.site.join("ticks.txt");
    s.write(
        ".deployment",
        &format!(
            "[config]\nPOST_BUILD_COMMAND = sh -c {}\n",
            shell_words::quote(&writer_loop("ticks.txt"))
        ),
    )
    .commit("a POST_BUILD_COMMAND that leaves a writer");
    s.push(&[]).assert_ok().assert_has("successful");
    let (before, after) = sizes_apart(&ticks);
    assert!(before > 0, "the writer ran");
    assert_eq!(before, after, "nothing writes into the site any more");

    // The same, then a failing postDeploy: rolled back, and still quiet.
    std::fs::remove_file(&ticks).unwrap();
    s.config(&["deploy.postDeploy", "false"]);
    s.write("app.py", "# changed\n").commit("second");
    s.push(&[]).assert_has("rolled back to ");
    let (before, after) = sizes_apart(&ticks);
    assert_eq!(
        before, after,
        "nothing writes into the site after the rollback"
    );
}

#[test]
fn output_without_newlines_counts_as_work_for_the_idle_timeout() {
    let s = deployed_flask();
    // A dot every half second for 4 s, no newline, no CPU time to speak of.
    s.write(
        "dots.py",
        "import sys, time\nfor _ in range(8):\n    sys.stdout.write('.')\n    sys.stdout.flush()\n    time.sleep(0.5)\n",
    )
    .write(".deployment", "[config]\nPOST_BUILD_COMMAND = python3 dots.py\n")
    .commit("dots");
    let push = s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("SCM_COMMAND_IDLE_TIMEOUT", "2")],
    );
    push.assert_ok()
        .assert_has("........")
        .assert_has("successful");
}

#[test]
fn tens_of_megabytes_of_output_stream_to_the_pusher_and_leave_a_small_record() {
    let s = deployed_flask();
    // 20 MB in lines, then 20 MB of NUL bytes without a newline, then what
    // pushdeploy (the step's parent) used at most, in kB.
    s.write(
        "big.sh",
        "echo FIRST-LINE\nyes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c 20000000\nhead -c 20000000 /dev/zero\necho\necho LAST-LINE\ngrep VmHWM /proc/$PPID/status\n",
    )
    .write(".deployment", "[config]\nPOST_BUILD_COMMAND = sh big.sh\n")
    .commit("big output");
    s.update_without_deploy();
    let mut child = s
        .pushdeploy_command(&["deploy", "--repo", s.repo.to_str().unwrap()])
        .spawn(Stdio::piped(), Stdio::inherit());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut head, mut tail, mut total) = (Vec::new(), Vec::new(), 0usize);
    let mut line = Vec::new();
    while out.read_until(b'\n', &mut line).unwrap() > 0 {
        total += line.len();
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if head.len() < 200 {
            head.push(text);
        } else {
            tail.push(text);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
        line.clear();
    }
    assert!(
        child.wait().unwrap().success(),
        "head {head:#?}\ntail {tail:#?}"
    );
    // The pusher saw it all, the first line and the last.
    assert!(total > 40_000_000, "{total} bytes");
    assert!(head.iter().any(|l| l.trim() == "FIRST-LINE"), "{head:#?}");
    assert!(tail.iter().any(|l| l.trim() == "LAST-LINE"), "{tail:#?}");
    let peak_kb: u64 = tail
        .iter()
        .find_map(|l| l.trim().strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM line in {tail:#?}"));
    eprintln!("peak RSS of pushdeploy: {peak_kb} kB");
    // About 15 MB whatever the output's size; holding a 20 MB line took 65.
    assert!(peak_kb < 40_000, "pushdeploy peaked at {peak_kb} kB");
    // The record keeps the head and the tail, and says where it cut.
    let records = s.repo.join("pushdeploy/deployments");
    let newest = std::fs::read_dir(&records)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .unwrap();
    let size = std::fs::metadata(&newest).unwrap().len();
    assert!(size < 1_000_000, "{} is {size} bytes", newest.display());
    let shown = s.run("show", &["#2"]);
    shown
        .assert_ok()
        .assert_has("FIRST-LINE")
        .assert_has("LAST-LINE")
        .assert_has("[output cut here: ");
}

#[test]
fn an_interpreter_that_hangs_at_start_fails_the_deployment_in_time() {
    let s = deployed_flask();
    // A .pth file runs at every start of the env's Python: it hangs once the
    // new commit's files are in the site (after pip, which was always timed).
    let marker = s.site.join("SLOW");
    std::fs::write(
        site_packages(&s).join("slow.pth"),
        format!(
            "import os, time; os.path.exists({:?}) and time.sleep(120)\n",
            marker.to_str().unwrap()
        ),
    )
    .unwrap();
    let before = crate::util::snapshot(&s.site);
    s.write("SLOW", "")
        .write("requirements.txt", "greeting==2.0.0\ntinyweb==1.0.0\n")
        .commit("second");
    let push = s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("PUSHDEPLOY_DEPLOYMENT_TIMEOUT", "10")],
    );
    push.assert_has("the deployment took longer than its limit (10 s, setting deploymentTimeout)");
    assert!(!push.has("successful"), "{push}");
    assert!(!marker.exists(), "the files were put back");
    assert_eq!(
        before,
        crate::util::snapshot(&s.site),
        "the site is as it was"
    );
    let records = s.records();
    assert_eq!(records[0]["status"], "rolled back", "{records:#?}");
}

#[test]
fn the_dry_run_runs_the_envs_python_under_the_deployment_limit() {
    let s = deployed_flask();
    let marker = s.root.join("SLOW");
    std::fs::write(
        site_packages(&s).join("slow.pth"),
        format!(
            "import os, time; os.path.exists({:?}) and time.sleep(120)\n",
            marker.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(&marker, "").unwrap();
    s.write("requirements.txt", "greeting==2.0.0\ntinyweb==1.0.0\n")
        .commit("second");
    s.update_without_deploy();
    let run = s.deploy_with(&["--dry-run"], &[("PUSHDEPLOY_DEPLOYMENT_TIMEOUT", "5")]);
    run.assert_has("the deployment took longer than its limit (5 s, setting deploymentTimeout)");
}
