//! Issue 10: transactional deployments. Steps that hang are killed with
//! every process they started; what a killed deployment left running is
//! killed before the next one changes anything.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::{Server, deployed_flask, snapshot};

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
    // A grandchild that would write long after; its pid, to see it end.
    let grandchild = s.root.join("grandchild.pid");
    let slow = script(
        &s,
        "slow.sh",
        &format!(
            // Once: the rollback's postDeploy (run again after the kill) returns.
            "[ -e {started} ] && exit 0\n(sleep 60; echo late > {}) &\necho $! > {}\ntouch {started}\nsleep 600",
            late.display(),
            grandchild.display(),
            started = started.display()
        ),
    );
    set_post_deploy(&s, &slow);
    s.write("app.py", "# changed\n").commit("second");
    s.update_without_deploy();
    let mut child = s
        .pushdeploy_command(&["deploy", "--repo", s.repo.to_str().unwrap()])
        .spawn(std::process::Stdio::null(), std::process::Stdio::null());
    assert!(appears_within(&started, 120), "postDeploy started");
    child.kill().unwrap();
    child.wait().unwrap();
    // Any command that takes the lock ends what the killed one left.
    let delete = s.pushdeploy(&["env", "delete", "--repo", s.repo.to_str().unwrap()]);
    delete
        .assert_ok()
        .assert_has("Killed postDeploy (process group ");
    let pid = std::fs::read_to_string(&grandchild).unwrap();
    let stat = Path::new("/proc").join(pid.trim()).join("stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Gone, or a zombie waiting for its parent's parent.
    while std::fs::read_to_string(&stat).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    }) {
        assert!(Instant::now() < deadline, "the grandchild was killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!late.exists());
}

// Real gunicorn, started from `env/bin/gunicorn`, serving the fixture app
// from the site through every kind of failed deployment.

/// The fixture app's code, saying `version`; its `/health` answers 500
/// unless `healthy`; `/pid` names the worker (to see a reload happen).
fn app_py(version: &str, healthy: bool) -> String {
    let health = if healthy {
        "\"ok\"".to_string()
    } else {
        "(\"500 Internal Server Error\", \"the database is gone\")".to_string()
    };
    format!(
        "import os\n\nimport greeting\nimport tinyweb\n\napp = tinyweb.App()\n\n\n@app.route(\"/\")\ndef index(environ):\n    return \"{version} greeting %s\" % greeting.__version__\n\n\n@app.route(\"/pid\")\ndef pid(environ):\n    return str(os.getpid())\n\n\n@app.route(\"/health\")\ndef health(environ):\n    return {health}\n"
    )
}

const REQUIREMENTS: &str = "greeting==1.0.0\ntinyweb==1.0.0\ngunicorn==27.0.1\n";
const NEW_REQUIREMENTS: &str = "greeting==2.0.0\ntinyweb==1.0.0\ngunicorn==27.0.1\n";

/// A deployed app served by gunicorn; `postDeploy` reloads it (SIGHUP) and
/// waits until a new worker answers.
struct Served {
    s: Server,
    gunicorn: std::process::Child,
    port: u16,
    /// The last good commit's files, and its id.
    good: std::collections::BTreeMap<String, String>,
    good_id: String,
    /// While this file exists, `postDeploy` reloads and then fails, once.
    fail_post_deploy: PathBuf,
    /// `postDeploy`: the reload.
    post_deploy: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.gunicorn.kill();
        let _ = self.gunicorn.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()
}

/// The reload `postDeploy` runs: SIGHUP to gunicorn's master, then wait for
/// a new worker.
const RELOAD: &str = r#"import os, signal, sys, time, urllib.request
port, pidfile, flag = sys.argv[1], sys.argv[2], sys.argv[3]
def pid():
    try:
        return urllib.request.urlopen("http://127.0.0.1:%s/pid" % port, timeout=2).read()
    except Exception:
        return None
before = pid()
os.kill(int(open(pidfile).read()), signal.SIGHUP)
deadline = time.time() + 60
while time.time() < deadline:
    now = pid()
    if now and now != before:
        break
    time.sleep(0.1)
else:
    sys.exit("gunicorn did not reload")
time.sleep(0.3)
print("reloaded gunicorn")
if os.path.exists(flag):
    os.remove(flag)
    sys.exit(1)
"#;

fn serving_app() -> Served {
    let s = Server::new();
    s.app("flask-app");
    s.write("app.py", &app_py("v1", true))
        .write("requirements.txt", REQUIREMENTS);
    let good_id = s.commit("v1 with gunicorn");
    let port = free_port();
    let pidfile = s.root.join("gunicorn.pid");
    let fail_post_deploy = s.root.join("fail-post-deploy");
    let reload = s.root.join("reload.py");
    std::fs::write(&reload, RELOAD).unwrap();
    let post_deploy = shell_words::join([
        "python3",
        reload.to_str().unwrap(),
        &port.to_string(),
        pidfile.to_str().unwrap(),
        fail_post_deploy.to_str().unwrap(),
    ]);
    s.config(&["deploy.postDeploy", &post_deploy]);
    // The first deployment's postDeploy has no server to reload yet.
    std::fs::write(&pidfile, "999999999").unwrap();
    let first = s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("PUSHDEPLOY_POST_DEPLOY", "true")],
    );
    first.assert_ok().assert_has("successful");
    let script = std::fs::read_to_string(s.site.join("env/bin/gunicorn")).unwrap();
    assert!(
        script.starts_with(&format!("#!{}/env/bin/python\n", s.site.display())),
        "the env's scripts lead through env/: {script}"
    );
    let log = std::fs::File::create(s.root.join("gunicorn.log")).unwrap();
    let gunicorn = std::process::Command::new(s.site.join("env/bin/gunicorn"))
        .args(["--no-control-socket", "--chdir", s.site.to_str().unwrap()])
        .args(["-b", &format!("127.0.0.1:{port}"), "-w", "1"])
        .args(["-p", pidfile.to_str().unwrap(), "app:app"])
        .current_dir(&s.site)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/").is_none() {
        assert!(Instant::now() < deadline, "gunicorn serves the app");
        std::thread::sleep(Duration::from_millis(100));
    }
    let good = app_files(&s.site);
    // A file of the app's own, which no deployment may touch.
    std::fs::create_dir_all(s.site.join("uploads")).unwrap();
    std::fs::write(s.site.join("uploads/avatar.png"), "the app's").unwrap();
    Served {
        s,
        gunicorn,
        port,
        good,
        good_id,
        fail_post_deploy,
        post_deploy,
    }
}

/// The site's files but the env's, ours, and the app's own uploads.
fn app_files(site: &Path) -> std::collections::BTreeMap<String, String> {
    crate::util::snapshot(site)
        .into_iter()
        .filter(|(path, _)| {
            let top = path.split('/').next().unwrap();
            top != "env" && top != "uploads" && !top.starts_with(".pushdeploy-")
        })
        .collect()
}

impl Served {
    fn page(&self) -> String {
        get(self.port, "/").unwrap_or_else(|| panic!("gunicorn answers"))
    }

    /// SIGHUP to gunicorn, as a graceful reload; returns the page after it.
    fn reload(&self) -> String {
        let before = get(self.port, "/pid");
        let pid = std::fs::read_to_string(self.s.root.join("gunicorn.pid")).unwrap();
        let pid = rustix::process::Pid::from_raw(pid.trim().parse().unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = get(self.port, "/pid");
            if now.is_some() && now != before {
                break;
            }
            assert!(Instant::now() < deadline, "gunicorn reloads");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        self.page()
    }

    /// A push of a version that must not stay: new code, new packages.
    fn push_bad(&self, change: impl FnOnce(&Server)) -> crate::util::Run {
        self.s
            .write("app.py", &app_py("v2", true))
            .write("requirements.txt", NEW_REQUIREMENTS);
        change(&self.s);
        self.s.commit("v2");
        self.s.push(&[])
    }

    /// Everything is as the last good deployment left it, and stays so
    /// through a reload; then a good push deploys normally, and a reload
    /// serves its code with its packages.
    #[track_caller]
    fn assert_last_good(&self, status: &str) {
        assert_eq!(app_files(&self.s.site), self.good, "the site's files");
        assert_eq!(
            std::fs::read_to_string(self.s.site.join("uploads/avatar.png")).unwrap(),
            "the app's"
        );
        self.s
            .env_python("import greeting; print(greeting.__version__)")
            .assert_ok()
            .assert_has("1.0.0");
        assert!(self.s.site.join("env/bin/gunicorn").is_file());
        assert_eq!(self.page(), "v1 greeting 1.0.0");
        assert_eq!(self.reload(), "v1 greeting 1.0.0", "after SIGHUP");
        let records = self.s.records();
        assert_eq!(records[0]["status"], status, "{}", records[0]);
        assert!(
            std::fs::read_to_string(self.s.repo.join("pushdeploy/manifest.json"))
                .unwrap()
                .contains(&self.good_id)
        );
        // Nothing of the failed deployment is left in the site.
        let ours: Vec<String> = std::fs::read_dir(&self.s.site)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".pushdeploy-old-") || n.starts_with(".pushdeploy-tmp-"))
            .collect();
        assert!(ours.is_empty(), "{ours:?}");

        // The next good push: new code and new packages, served after a reload.
        let _ = std::fs::remove_file(&self.fail_post_deploy);
        if self.s.work.join(".deployment").exists() {
            self.s.remove(".deployment");
        }
        self.s
            .write("app.py", &app_py("v3", true))
            .write("requirements.txt", NEW_REQUIREMENTS);
        if self.s.work.join("manage.py").exists() {
            self.s.remove("manage.py");
        }
        self.s.commit("v3");
        self.s.push(&[]).assert_ok().assert_has("successful");
        assert_eq!(self.page(), "v3 greeting 2.0.0", "postDeploy reloaded");
        assert_eq!(self.reload(), "v3 greeting 2.0.0");
    }
}

#[test]
fn gunicorn_keeps_serving_through_a_requirement_pip_cannot_find() {
    let app = serving_app();
    let push = app.push_bad(|s| {
        s.write(
            "requirements.txt",
            &format!("{NEW_REQUIREMENTS}nosuchpackage==1.0\n"),
        );
    });
    push.assert_has("failed in step pip");
    // pip failed before anything of the site changed: nothing to roll back.
    assert!(!push.has("Syncing files"));
    app.assert_last_good("failed");
}

#[test]
fn gunicorn_keeps_serving_through_a_failed_collectstatic() {
    let app = serving_app();
    let push = app.push_bad(|s| {
        s.write(
            "manage.py",
            "import sys\nsys.exit('collectstatic: broken settings')\n",
        )
        .write(
            "requirements.txt",
            &format!("{NEW_REQUIREMENTS}django==0.1.0\n"),
        )
        // A failed collectstatic fails only when strict (issue 15 item 15).
        .write(".deployment", "[config]\nstrictCollectstatic = true\n");
    });
    push.assert_has("failed in step collectstatic")
        .assert_has("rolled back to ");
    app.assert_last_good("rolled back");
}

#[test]
fn gunicorn_keeps_serving_through_a_failed_post_build_command() {
    let app = serving_app();
    let push = app.push_bad(|s| {
        s.write(
            ".deployment",
            "[config]\nPOST_BUILD_COMMAND = sh -c \"exit 1\"\n",
        );
    });
    push.assert_has("failed in step POST_BUILD_COMMAND")
        .assert_has("POST_BUILD_COMMAND exited with status 1");
    app.assert_last_good("rolled back");
}

#[test]
fn gunicorn_keeps_serving_through_a_failed_post_deploy() {
    let app = serving_app();
    // postDeploy reloads gunicorn into the new version, then fails: the
    // rollback's postDeploy reloads it into the old one.
    std::fs::write(&app.fail_post_deploy, "").unwrap();
    let push = app.push_bad(|_| {});
    push.assert_has("failed in step postDeploy")
        .assert_has("rolled back to ");
    assert!(!push.has("may be down"));
    app.assert_last_good("rolled back");
}

#[test]
fn gunicorn_keeps_serving_through_a_failed_health_check() {
    let app = serving_app();
    let url = format!("http://127.0.0.1:{}/health", app.port);
    app.s.config(&["deploy.healthCheck", &url]);
    app.s.config(&["deploy.healthCheckTimeout", "3"]);
    let push = app.push_bad(|s| {
        s.write("app.py", &app_py("v2", false));
    });
    push.assert_has("failed in step healthCheck")
        .assert_has("HTTP 500")
        .assert_has("the body starts: \"the database is gone\"")
        .assert_has("rolled back to ");
    // The old version passed the check again after the rollback.
    assert!(!push.has("may be down"));
    app.assert_last_good("rolled back");
}

#[test]
fn gunicorn_keeps_serving_through_a_step_that_hangs() {
    let app = serving_app();
    let push = app.push_bad(|s| {
        s.write(
            ".deployment",
            "[config]\nSCM_COMMAND_IDLE_TIMEOUT = 2\nPOST_BUILD_COMMAND = sleep 600\n",
        );
    });
    push.assert_has("showed no sign of work")
        .assert_has("rolled back to ");
    app.assert_last_good("rolled back");
}

/// Kills pushdeploy while the step that starts with `header` runs; the next
/// command that takes the lock puts everything back.
fn killed_at(app: &Served, header: &str, started: &Path) {
    app.s.update_without_deploy();
    let mut child = app
        .s
        .pushdeploy_command(&["deploy", "--repo", app.s.repo.to_str().unwrap()])
        .spawn(std::process::Stdio::null(), std::process::Stdio::null());
    assert!(appears_within(started, 120), "{header} started");
    child.kill().unwrap();
    child.wait().unwrap();
    let again = app.s.run("redeploy", &[&app.good_id]);
    again
        .assert_ok()
        .assert_has("A deployment was killed after it began to change the site: putting back");
    let records = app.s.records();
    assert_eq!(records[1]["status"], "rolled back", "{}", records[1]);
}

#[test]
fn gunicorn_keeps_serving_after_a_kill_during_the_post_build_command() {
    let app = serving_app();
    let started = app.s.root.join("post-build-started");
    app.s
        .write("app.py", &app_py("v2", true))
        .write("requirements.txt", NEW_REQUIREMENTS)
        .write(
            ".deployment",
            &format!(
                "[config]\nPOST_BUILD_COMMAND = sh -c \"touch {}; sleep 600\"\n",
                started.display()
            ),
        );
    app.s.commit("v2");
    killed_at(&app, "POST_BUILD_COMMAND", &started);
    app.assert_last_good("success");
}

#[test]
fn gunicorn_keeps_serving_after_a_kill_during_post_deploy() {
    let app = serving_app();
    let started = app.s.root.join("post-deploy-started");
    // postDeploy reloads gunicorn into the new version and then hangs.
    let hang = script(
        &app.s,
        "reload-and-hang.sh",
        &format!(
            "{} && touch {} && sleep 600",
            app.post_deploy,
            started.display()
        ),
    );
    app.s
        .write("app.py", &app_py("v2", true))
        .write("requirements.txt", NEW_REQUIREMENTS);
    app.s.commit("v2");
    set_post_deploy(&app.s, &hang);
    app.s.update_without_deploy();
    let mut child = app
        .s
        .pushdeploy_command(&["deploy", "--repo", app.s.repo.to_str().unwrap()])
        .spawn(std::process::Stdio::null(), std::process::Stdio::null());
    assert!(appears_within(&started, 120), "postDeploy reloaded");
    assert_eq!(app.page(), "v2 greeting 2.0.0", "the new version ran");
    child.kill().unwrap();
    child.wait().unwrap();
    // The plain reload again, for the recovery and what follows.
    app.s.config(&["deploy.postDeploy", &app.post_deploy]);
    let again = app.s.run("redeploy", &[&app.good_id]);
    again
        .assert_ok()
        .assert_has("A deployment was killed after it began to change the site: putting back");
    assert_eq!(app.s.records()[1]["status"], "rolled back");
    app.assert_last_good("success");
}

#[test]
fn a_refused_health_check_without_post_deploy_rolls_back_and_says_the_site_may_be_down() {
    let s = deployed_flask();
    let before = app_files(&s.site);
    // Nothing listens there: refused, before and after the rollback.
    let url = format!("http://127.0.0.1:{}/", free_port());
    s.config(&["deploy.healthCheck", &url]);
    s.config(&["deploy.healthCheckTimeout", "2"]);
    s.write("app.py", "# v2\n").commit("v2");
    let push = s.push(&[]);
    push.assert_has("No postDeploy: the app was not restarted, so the health check probes the version that was running")
        .assert_has("attempt 1: ")
        .assert_has("failed in step healthCheck");
    let last = push.remote().last().unwrap().clone();
    assert!(last.contains("rolled back to "), "{last}");
    assert!(
        last.contains("but the site may be down: the health check failed after"),
        "{last}"
    );
    assert_eq!(app_files(&s.site), before);
    assert_eq!(s.records()[0]["status"], "rolled back");
    let list = s.run("list", &[]);
    list.assert_ok().assert_has("rolled back");
}

#[test]
fn env_delete_leaves_a_running_gunicorn_serving() {
    let app = serving_app();
    app.s
        .pushdeploy(&["env", "delete", "--repo", app.s.repo.to_str().unwrap()])
        .assert_ok();
    assert!(!app.s.site.join("env").exists());
    assert_eq!(app.page(), "v1 greeting 1.0.0");
    assert_eq!(app.page(), "v1 greeting 1.0.0");
    // The next deployment makes the env anew and reloads into it.
    app.s.write("app.py", &app_py("v3", true)).commit("v3");
    app.s
        .push(&[])
        .assert_ok()
        .assert_has("Creating virtual environment env/");
    assert_eq!(app.page(), "v3 greeting 1.0.0");
}

#[test]
fn a_killed_command_deployment_leaves_no_checkout() {
    let s = deployed_flask();
    let started = s.root.join("command-started");
    s.write(
        "deploy.sh",
        &format!("#!/bin/sh\ntouch {}\nsleep 600\n", started.display()),
    );
    std::fs::set_permissions(
        s.work.join("deploy.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    s.write(".deployment", "[config]\ncommand = deploy.sh\n")
        .commit("a custom command");
    s.update_without_deploy();
    let mut child = s
        .pushdeploy_command(&["deploy", "--repo", s.repo.to_str().unwrap()])
        .spawn(std::process::Stdio::null(), std::process::Stdio::null());
    assert!(appears_within(&started, 120), "the command started");
    let tmp = s.repo.join("pushdeploy/tmp");
    assert!(std::fs::read_dir(&tmp).unwrap().count() > 0, "its checkout");
    child.kill().unwrap();
    child.wait().unwrap();
    s.pushdeploy(&["env", "delete", "--repo", s.repo.to_str().unwrap()])
        .assert_ok()
        .assert_has("Killed deploy.sh (process group ");
    assert!(!tmp.exists(), "the checkout is gone");
}

// Custom commands: the command builds into a staging copy (its
// DEPLOYMENT_TARGET), whose files are then synced into the site through the
// journal, so they are all or nothing like the built-in sync's.

/// Commits `.deployment` with `command = deploy.sh` and the script.
fn commit_command(s: &Server, body: &str) {
    s.write("deploy.sh", &format!("#!/bin/sh\nset -e\n{body}\n"));
    std::fs::set_permissions(
        s.work.join("deploy.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    s.write(".deployment", "[config]\ncommand = deploy.sh\n")
        .commit("a custom command");
}

/// The flask site, with a file of the app's own beside the deployed ones.
fn deployed_flask_with_app_data() -> Server {
    let s = deployed_flask();
    std::fs::create_dir_all(s.site.join("uploads")).unwrap();
    std::fs::write(s.site.join("uploads/photo.jpg"), "app data").unwrap();
    s
}

#[test]
fn a_command_that_writes_files_then_fails_leaves_the_site_as_it_was() {
    let s = deployed_flask_with_app_data();
    let before = snapshot(&s.site);
    commit_command(
        &s,
        r#"# The target starts as the deployed files: not the env, not the app's own.
test -f "$DEPLOYMENT_TARGET/requirements.txt" || exit 9
test ! -e "$DEPLOYMENT_TARGET/env" || exit 8
test ! -e "$DEPLOYMENT_TARGET/uploads" || exit 10
echo "print('half')" > "$DEPLOYMENT_TARGET/app.py"
echo new > "$DEPLOYMENT_TARGET/new.txt"
rm "$DEPLOYMENT_TARGET/requirements.txt"
exit 1"#,
    );
    let push = s.push(&[]);
    push.assert_has("deploy.sh exited with status 1")
        .assert_has("the command built into a staging copy: the site was not changed");
    assert_eq!(snapshot(&s.site), before);
}

#[test]
fn a_command_deploys_its_files_and_a_failing_post_deploy_puts_them_back() {
    let s = deployed_flask_with_app_data();
    // postDeploy fails while the site has fail.txt: the second command's.
    let post = script(&s, "post.sh", "[ ! -e fail.txt ]");
    set_post_deploy(&s, &post);
    commit_command(
        &s,
        r#"echo "print('v2')" > "$DEPLOYMENT_TARGET/app.py"
mkdir -p "$DEPLOYMENT_TARGET/build"
echo built > "$DEPLOYMENT_TARGET/build/out.txt"
rm "$DEPLOYMENT_TARGET/requirements.txt""#,
    );
    s.push(&[])
        .assert_ok()
        .assert_has("Syncing the command's files: ")
        .assert_has("successful");
    assert_eq!(s.site_file("app.py"), "print('v2')\n");
    assert_eq!(s.site_file("build/out.txt"), "built\n");
    assert!(!s.site.join("requirements.txt").exists());
    assert!(
        !s.site.join("deploy.sh").exists(),
        "only what the command left in DEPLOYMENT_TARGET"
    );
    assert_eq!(s.site_file("uploads/photo.jpg"), "app data");
    let good = snapshot(&s.site);

    commit_command(
        &s,
        r#"echo "print('v3')" > "$DEPLOYMENT_TARGET/app.py"
rm -r "$DEPLOYMENT_TARGET/build"
echo x > "$DEPLOYMENT_TARGET/fail.txt""#,
    );
    let push = s.push(&[]);
    push.assert_has("failed in step postDeploy")
        .assert_has("(the last good deployment)");
    assert_eq!(snapshot(&s.site), good);
    assert_eq!(s.records()[0]["status"], "rolled back");

    // The built-in sync after it: the command's files are pushdeploy's,
    // so the ones the commit lacks go; the app's stay.
    s.remove(".deployment")
        .remove("deploy.sh")
        .commit("built-in again");
    s.push(&[]).assert_ok().assert_has("successful");
    assert!(!s.site.join("build").exists(), "{:?}", snapshot(&s.site));
    assert!(!s.site_file("requirements.txt").is_empty());
    assert_eq!(s.site_file("uploads/photo.jpg"), "app data");
}

#[test]
fn a_command_killed_with_pushdeploy_changes_nothing_and_the_next_deployment_deploys() {
    let s = deployed_flask_with_app_data();
    let before = snapshot(&s.site);
    let started = s.root.join("command-started");
    let hold = s.root.join("hold");
    std::fs::write(&hold, "").unwrap();
    commit_command(
        &s,
        &format!(
            r#"echo "print('cmd')" > "$DEPLOYMENT_TARGET/app.py"
(sleep 2; echo late > "$DEPLOYMENT_TARGET/late.txt") &
if [ -e {hold} ]; then touch {started}; sleep 600; fi"#,
            hold = hold.display(),
            started = started.display()
        ),
    );
    s.update_without_deploy();
    let mut child = s
        .pushdeploy_command(&["deploy", "--repo", s.repo.to_str().unwrap()])
        .spawn(std::process::Stdio::null(), std::process::Stdio::null());
    assert!(appears_within(&started, 120), "the command started");
    // Its process group recorded (a loaded machine may lag behind the script).
    assert!(appears_within(
        &s.repo.join("pushdeploy/processes.json"),
        30
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(snapshot(&s.site), before, "the site is as it was");
    std::fs::remove_file(&hold).unwrap();
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("Killed deploy.sh (process group ")
        .assert_has("successful");
    assert_eq!(s.site_file("app.py"), "print('cmd')\n");
    assert_eq!(s.site_file("uploads/photo.jpg"), "app data");
    let tmp = s.repo.join("pushdeploy/tmp");
    assert!(
        std::fs::read_dir(&tmp).map_or(true, |d| d.count() == 0),
        "no checkout or staging copy is left"
    );
}

#[test]
fn a_command_deployment_killed_in_post_deploy_is_put_back_by_the_next_deployment() {
    let s = deployed_flask_with_app_data();
    let before = snapshot(&s.site);
    let started = s.root.join("started");
    // Hangs once (the killed deployment's); returns for the rollback's run.
    let slow = script(
        &s,
        "slow.sh",
        &format!(
            "[ -e {started} ] && exit 0\ntouch {started}\nsleep 600",
            started = started.display()
        ),
    );
    set_post_deploy(&s, &slow);
    commit_command(
        &s,
        r#"echo "print('cmd')" > "$DEPLOYMENT_TARGET/app.py"
echo new > "$DEPLOYMENT_TARGET/new.txt""#,
    );
    s.update_without_deploy();
    let mut child = s
        .pushdeploy_command(&["deploy", "--repo", s.repo.to_str().unwrap()])
        .spawn(std::process::Stdio::null(), std::process::Stdio::null());
    assert!(appears_within(&started, 120), "postDeploy started");
    assert_eq!(
        s.site_file("app.py"),
        "print('cmd')\n",
        "the files switched"
    );
    assert!(appears_within(
        &s.repo.join("pushdeploy/processes.json"),
        30
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    // The next deployment first puts back the killed one's files (and runs
    // the old version's postDeploy again), then deploys.
    s.remove(".deployment")
        .remove("deploy.sh")
        .commit("built-in again");
    s.push(&[])
        .assert_ok()
        .assert_has("A deployment was killed after it began to change the site")
        .assert_has("Killed postDeploy (process group ")
        .assert_has("successful");
    assert_eq!(snapshot(&s.site), before);
}

#[test]
fn what_a_command_may_not_leave_in_its_target_fails_before_the_site_changes() {
    let s = deployed_flask_with_app_data();
    let before = snapshot(&s.site);
    commit_command(&s, r#"mkdir -p "$DEPLOYMENT_TARGET/env/bin""#);
    s.push(&[]).assert_has(
        "DEPLOYMENT_TARGET: the command wrote env; env at the top of the site is pushdeploy's",
    );
    assert_eq!(snapshot(&s.site), before);
    commit_command(&s, r#"ln -s /etc/passwd "$DEPLOYMENT_TARGET/passwd""#);
    s.push(&[]).assert_has(
        "DEPLOYMENT_TARGET: the command made the symlink passwd to /etc/passwd which points outside the site",
    );
    assert_eq!(snapshot(&s.site), before);
}

/// Issue 15 item 21: uWSGI records the real path of `env/bin/uwsgi` and
/// re-executes it at every graceful reload. A program started from
/// `env/bin/python` that resolves its env's real path, as uWSGI does, and
/// re-executes from it after a second and a third deployment (each with
/// new packages, so each switches the env) must find that path valid.
#[test]
fn a_program_that_resolved_the_env_s_real_path_can_re_execute_after_two_deployments() {
    let s = deployed_flask();
    let resolved = s.root.join("resolved");
    let go = s.root.join("go");
    let ran = s.root.join("ran");
    let reloader = s.root.join("reloader.py");
    std::fs::write(
        &reloader,
        format!(
            r#"import os, sys, time
# The env's bin, resolved as uWSGI resolves its binary's path.
bin = os.path.realpath(os.path.dirname(sys.executable))
open({resolved:?}, "w").write(bin)
while not os.path.exists({go:?}):
    time.sleep(0.05)
# The reload: execute the resolved path again.
code = "import greeting; open(%r, 'w').write(greeting.__version__)" % {ran:?}
python = os.path.join(bin, "python")
os.execv(python, [python, "-c", code])
"#
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(s.site.join("env/bin/python"))
        .arg(&reloader)
        .current_dir(&s.site)
        .spawn()
        .unwrap();
    assert!(appears_within(&resolved, 60), "the program started");
    let path = std::fs::read_to_string(&resolved).unwrap();
    for version in ["2.0.0", "1.0.0"] {
        s.write(
            "requirements.txt",
            &format!("greeting=={version}\ntinyweb==1.0.0\n"),
        );
        s.commit(&format!("greeting {version}"));
        s.push(&[])
            .assert_ok()
            .assert_has("Switching env/ to the prepared virtual environment");
    }
    assert!(
        Path::new(&path).is_dir(),
        "the resolved path {path} is gone"
    );
    std::fs::write(&go, "").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the re-executed program failed: {status}");
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap(),
        "1.0.0",
        "it runs the deployed env"
    );
}

/// Issue 15 item 3, the running app: gunicorn, reloaded by `postDeploy`,
/// with the deployment killed at a sample of its points (see
/// tests/every_point.rs for all of them): in the sync, just before and just
/// after the env switch, and just after the commit point. After the next
/// deployment (which recovers, then fails in its plan), gunicorn serves the
/// commit whose files and env the site holds, after a reload too.
#[test]
fn gunicorn_serves_the_commit_the_site_holds_after_a_kill_at_sampled_points() {
    let app = serving_app();
    app.s
        .write("app.py", &app_py("v2", true))
        .write("requirements.txt", NEW_REQUIREMENTS);
    let v2 = app.s.commit("v2");
    app.s.write("runtime.txt", "python-9.9\n");
    let bad = app.s.commit("bad: no such Python");
    app.s.update_without_deploy();
    let deploy = |rev: &str, fault: &str| {
        app.s
            .pushdeploy_command(&["deploy", "--repo", app.s.repo.to_str().unwrap(), rev])
            .envs(&[("PUSHDEPLOY_FAULT", fault)])
            .run()
    };
    let file = app.s.root.join("points");
    deploy(&v2, &format!("count:{}", file.display())).assert_ok();
    let points: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let at = |name: &str| points.iter().position(|p| p.ends_with(name)).unwrap() + 1;
    let switch = at("exchange env");
    for k in [at("journal line"), switch, switch + 1, switch + 2] {
        app.s.run("redeploy", &[&app.good_id]).assert_ok();
        assert_eq!(app.page(), "v1 greeting 1.0.0");
        assert_eq!(deploy(&v2, &format!("kill:{k}")).status, -1);
        deploy(&bad, "").assert_status(1);
        let name = &points[k - 1];
        let (page, version) = if app_files(&app.s.site) == app.good {
            ("v1 greeting 1.0.0", "1.0.0")
        } else {
            assert!(app.s.site_file("app.py").contains("v2"), "{name}");
            ("v2 greeting 2.0.0", "2.0.0")
        };
        app.s
            .env_python("import greeting; print(greeting.__version__)")
            .assert_has(version);
        assert_eq!(app.page(), page, "killed at {name}");
        assert_eq!(app.reload(), page, "killed at {name}, after SIGHUP");
    }
}
