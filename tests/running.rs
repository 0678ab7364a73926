//! The app runs (issue 16): a push starts it with real gunicorn (the pinned
//! one, installed from fixtures/wheels beside the env), the next push
//! reloads it with no failed request, a commit that cannot import leaves
//! the old version serving; `start`, `stop`, `status`, `logs` without
//! systemd. Each test has a free port of its own, and stops its app.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::util::{Run, Server};

/// A server whose app pushdeploy runs, on a free port; stopped when dropped.
pub struct Running {
    pub s: Server,
    pub port: u16,
}

impl Running {
    /// `git push` with running on (the tests' environment turns it off).
    pub fn push(&self) -> Run {
        self.s.git_with(
            &["push", self.s.repo.to_str().unwrap(), "main"],
            &[("PUSHDEPLOY_RUN", "true")],
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.s.run("stop", &[]);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `init` turns running on (the tests' environment turns it off again:
/// `Running::push` turns it on); the tests run as root in CI, whose sites
/// are root's: `deploy.runAsRoot`.
pub fn running() -> Running {
    let s = Server::new();
    let port = free_port();
    s.config(&["deploy.run", "true"]);
    s.config(&["deploy.port", &port.to_string()]);
    if rustix::process::geteuid().is_root() {
        s.config(&["deploy.runAsRoot", "true"]);
    }
    Running { s, port }
}

/// GET / on the port: the status and the body, or why there was none.
pub fn get(port: u16) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

#[track_caller]
fn serves(port: u16, expected: &str) {
    match get(port) {
        Ok((200, body)) if body.contains(expected) => {}
        other => panic!("port {port} does not serve {expected:?}: {other:?}"),
    }
}

/// Requests the app continuously on a thread until stopped; the failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    pub fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut count = 0;
            let mut failed = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                count += 1;
                match get(port) {
                    Ok((status, _)) if status < 500 => {}
                    Ok((status, body)) => failed.push(format!("HTTP {status}: {body}")),
                    Err(e) => failed.push(e),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (count, failed)
        });
        Load { stop, thread }
    }

    /// How many requests were made, and the failed ones.
    pub fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn web_pid(r: &Running) -> i32 {
    let status = r.s.run("status", &[]);
    status.assert_ok();
    status
        .remote_or_stdout_line("web: running (pid ")
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Azure's Flask quickstart shape (no gunicorn in its requirements): the
/// push starts it under the pinned gunicorn, kept out of the env; the next
/// push serves the new page, through a new master.
#[test]
fn a_push_starts_the_app_and_the_next_push_serves_the_new_version() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.commit("first");
    let push = r.push();
    push.assert_ok()
        .assert_has("web: started (pid ")
        .assert_has(&format!(
            "Health check: GET http://127.0.0.1:{}/, any answer below 500",
            r.port
        ))
        .assert_has("successful");
    serves(r.port, "greeting 1.0.0: Hello, world!");
    // The env is exactly what the requirements ask for.
    s.env_python("import gunicorn")
        .assert_status(1)
        .assert_has("No module named 'gunicorn'");
    let first = web_pid(&r);

    s.write("requirements.txt", "greeting==2.0.0\ntinyweb==1.0.0\n");
    s.commit("greeting 2");
    r.push()
        .assert_ok()
        .assert_has("web: new gunicorn master (pid ")
        .assert_has("successful");
    serves(r.port, "greeting 2.0.0: Hi, world!");
    assert_ne!(web_pid(&r), first, "a new master serves");
}

/// Requests in a loop across a good push and one whose app cannot import:
/// none fails; the bad one is rolled back, saying why, and the good one
/// still serves.
#[test]
fn a_commit_that_cannot_import_keeps_the_old_version_serving() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.commit("first");
    r.push().assert_ok();
    let load = Load::start(r.port);
    s.write(
        "app.py",
        &s.site_file("app.py")
            .replace("Hello from pushdeploy!", "Version two!"),
    );
    s.commit("two");
    r.push().assert_ok().assert_has("successful");
    serves(r.port, "Version two!");
    let bad = format!("import no_such_module\n{}", s.site_file("app.py"));
    s.write("app.py", &bad);
    s.commit("cannot import");
    let push = r.push();
    push.assert_has("the new version did not start")
        .assert_has("ModuleNotFoundError: No module named 'no_such_module'")
        .assert_has("rolled back to");
    // The old version came back as a new master too (the old master must
    // have reaped the failed one first, or it ignores that USR2).
    assert!(!push.has("may be down"), "{push}");
    serves(r.port, "Version two!");
    let (count, failed) = load.finish();
    assert!(count > 10, "{count} requests only");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    s.run("status", &[]).assert_ok();
}

/// `stop`, `status`, `start`, `logs` without systemd.
#[test]
fn stop_start_status_and_logs() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.commit("first");
    r.push().assert_ok();
    s.run("status", &[])
        .assert_ok()
        .assert_has("web: running (pid ")
        .assert_has("gunicorn app:app");
    s.run("stop", &[])
        .assert_ok()
        .assert_has("web: stopped (pid ");
    assert!(get(r.port).is_err(), "stopped, yet it answers");
    s.run("status", &[])
        .assert_status(3)
        .assert_has("web: not running (stopped, or never started)");
    s.run("start", &[])
        .assert_ok()
        .assert_has("web: started (pid ");
    serves(r.port, "Hello from pushdeploy!");
    s.run("start", &[])
        .assert_ok()
        .assert_has("web: already running (pid ");
    s.run("restart", &[])
        .assert_ok()
        .assert_has("web: new gunicorn master");
    serves(r.port, "Hello from pushdeploy!");
    let logs = s.run("logs", &["--process", "web"]);
    logs.assert_ok()
        .assert_has("Starting gunicorn 27.0.1")
        .assert_has("Booting worker with pid");
    s.run("logs", &["--process", "w$b"])
        .assert_status(2)
        .assert_has("the app has no such process (it has: web)");
}

/// `kill -9` of the master: `status` says it is gone and exits non-zero;
/// the next push starts it.
#[test]
fn a_killed_master_is_reported_and_the_next_push_starts_it() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.commit("first");
    r.push().assert_ok();
    let pid = web_pid(&r);
    // Its workers go too, as after a crash of the machine's OOM killer.
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.run("status", &[])
        .assert_status(3)
        .assert_has(&format!("web: not running (gone: pid {pid} of "));
    s.commit("again");
    r.push()
        .assert_ok()
        .assert_has("web: started (pid ")
        .assert_has("successful");
    serves(r.port, "Hello from pushdeploy!");
    s.run("status", &[]).assert_ok();
}

/// Another program on the port: one line saying so, and the deployment
/// does not stand.
#[test]
fn a_port_in_use_is_said() {
    let r = running();
    let s = &r.s;
    let _other = TcpListener::bind(("127.0.0.1", r.port)).unwrap();
    s.app("flask-app");
    s.commit("first");
    let push = r.push();
    push.assert_has(&format!(
        "port {} on 127.0.0.1 is in use by another program: stop it, or give the app another port",
        r.port
    ))
    .assert_has("rolled back to");
    s.run("status", &[]).assert_status(3);
}

/// A start command that exits at once: said with its status, rolled back,
/// and the last good version serves again.
#[test]
fn a_start_command_that_exits_at_once_is_rolled_back() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.commit("first");
    r.push().assert_ok();
    s.write("Procfile", "web: python -c 'raise SystemExit(4)'\n");
    s.commit("exits");
    r.push()
        .assert_has("process web exited at once (status 4)")
        .assert_has("rolled back to");
    serves(r.port, "Hello from pushdeploy!");
    s.run("status", &[])
        .assert_ok()
        .assert_has("gunicorn app:app");
}

/// A Procfile's `worker:` runs beside `web`, with the app's environment;
/// `release:` runs before the reload, and when it fails the deployment is
/// rolled back and the old version serves.
#[test]
fn procfile_worker_and_release() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.write(
        "worker.py",
        "import os, time\nprint('worker up on port', os.environ['PORT'], flush=True)\nwhile True:\n    time.sleep(1)\n",
    );
    s.write(
        "release.py",
        "import os\nopen('released.txt', 'w').write(os.environ['PORT'])\n",
    );
    s.write(
        "Procfile",
        "web: gunicorn app:app --workers 2\nworker: python worker.py\nrelease: python release.py\n",
    );
    s.commit("first");
    r.push()
        .assert_ok()
        .assert_has("release: python release.py (Procfile)")
        .assert_has("worker: started (pid ");
    assert_eq!(s.site_file("released.txt"), r.port.to_string());
    serves(r.port, "Hello from pushdeploy!");
    let status = s.run("status", &[]);
    status
        .assert_ok()
        .assert_has("web: running (pid ")
        .assert_has("worker: running (pid ");
    let logs: Run = s.run("logs", &["--process", "worker"]);
    logs.assert_ok()
        .assert_has(&format!("worker up on port {}", r.port));

    s.write("release.py", "raise SystemExit(5)\n");
    s.write(
        "app.py",
        &s.site_file("app.py")
            .replace("Hello from pushdeploy!", "Never served"),
    );
    s.commit("failing release");
    r.push()
        .assert_has("release exited with status 5")
        .assert_has("rolled back to");
    serves(r.port, "Hello from pushdeploy!");
    s.run("status", &[]).assert_ok();
}

/// A Python version change and a changed start command, under load: each
/// a new master (the new interpreter, the new words), no request failed.
#[test]
fn a_new_python_and_a_new_start_command_serve_with_no_failed_request() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.commit("first");
    r.push().assert_ok();
    let load = Load::start(r.port);
    s.write("runtime.txt", "python-3.12\n");
    s.write(
        "app.py",
        &s.site_file("app.py").replace(
            "return \"Hello from pushdeploy!",
            "import sys\n    return \"Python %d.%d \" % sys.version_info[:2] + \"Hello from pushdeploy!",
        ),
    );
    s.commit("python 3.12");
    r.push()
        .assert_ok()
        .assert_has("Python changes from")
        .assert_has("web: new gunicorn master");
    serves(r.port, "Python 3.12 Hello from pushdeploy!");
    s.write(
        "app2.py",
        "import app as first\n\ndef app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'the second module']\n",
    );
    s.write("Procfile", "web: gunicorn app2:app --workers 2\n");
    s.commit("another start command");
    r.push().assert_ok().assert_has("web: new gunicorn master");
    serves(r.port, "the second module");
    let (count, failed) = load.finish();
    assert!(count > 10, "{count} requests only");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
}

/// Gives the site to `nobody` (65534), who reaches it through the test's
/// own (0700) folder: as root, the app then runs as `nobody`.
fn give_site_to_nobody(s: &Server) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&s.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = rustix::fs::Uid::from_raw(65534);
    rustix::fs::chown(&s.site, Some(nobody), None).unwrap();
}

/// As root, the app runs as the site's owner (here `nobody`), never as
/// root: a site that root owns is refused, with the way out.
#[test]
fn as_root_the_app_runs_as_the_sites_owner() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (to run the app as another user)");
        return;
    }
    let r = running();
    let s = &r.s;
    s.config(&["--unset", "deploy.runAsRoot"]);
    s.app("flask-app");
    s.commit("first");
    r.push()
        .assert_has(&format!(
            "site {} is owned by root: pushdeploy runs the app as the site's owner, never as root",
            s.site.display()
        ))
        .assert_has("rolled back to");
    give_site_to_nobody(s);
    // `release:` is the app's code too: it runs as the owner, with its HOME.
    s.write(
        "Procfile",
        "web: gunicorn app:app\nrelease: python -c \"import os; open('who.txt', 'w').write('%d %s' % (os.getuid(), os.environ['HOME']))\"\n",
    );
    s.commit("as nobody");
    r.push().assert_ok().assert_has("successful");
    serves(r.port, "Hello from pushdeploy!");
    assert_eq!(s.site_file("who.txt"), "65534 /nonexistent");
    let pid = web_pid(&r);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65534"; 4],
        "{uid}"
    );
}

/// Waits until the port serves `expected` (a process started in the
/// background is getting ready); panics after a minute.
fn wait_serving(port: u16, expected: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match get(port) {
            Ok((200, body)) if body.contains(expected) => return,
            other if std::time::Instant::now() > deadline => {
                panic!("port {port} does not serve {expected:?}: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `serve --process web` becomes gunicorn's master (exec: a supervisor's
/// main pid is the app's), given its pid file; `serve` runs every process
/// in the foreground and ends with them when it is stopped.
#[test]
fn serve_execs_one_process_or_runs_all_in_the_foreground() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.write(
        "worker.py",
        "import time\nprint('worker up', flush=True)\nwhile True:\n    time.sleep(1)\n",
    );
    s.write(
        "Procfile",
        "web: gunicorn app:app\nworker: python worker.py\n",
    );
    s.commit("first");
    // Deployed without running it: the supervisor runs it.
    s.push(&[]).assert_ok().assert_has("successful");
    s.run("status", &[]).assert_status(3);
    let repo = s.repo.to_str().unwrap();
    let mut web = s
        .pushdeploy_command(&["serve", "--process", "web", "--repo", repo])
        .spawn(std::process::Stdio::null(), std::process::Stdio::null());
    wait_serving(r.port, "Hello from pushdeploy!");
    // A second one is refused, and leaves the first alone.
    s.run("serve", &["--process", "web"])
        .assert_status(1)
        .assert_has("process web is running already (pid ");
    serves(r.port, "Hello from pushdeploy!");
    let pid_file = s.repo.join("pushdeploy/run/web.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        web.id().to_string(),
        "the served process is gunicorn's master itself"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(web.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    web.wait().unwrap();
    assert!(get(r.port).is_err(), "stopped, yet it answers");

    let all = s
        .pushdeploy_command(&["serve", "--repo", repo])
        .spawn(std::process::Stdio::piped(), std::process::Stdio::null());
    wait_serving(r.port, "Hello from pushdeploy!");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(all.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = all.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("exited"), "{out}");
    assert!(out.contains("worker up"), "{out}");
    assert!(get(r.port).is_err(), "stopped, yet it answers");
}

/// A new version that answers 500: App Service's check fails, the
/// deployment is rolled back, the old version comes back the same way and
/// its check runs again.
#[test]
fn a_failing_health_check_brings_the_old_version_back() {
    let r = running();
    let s = &r.s;
    s.config(&["deploy.healthCheckTimeout", "2"]);
    s.app("flask-app");
    s.commit("first");
    r.push().assert_ok();
    s.write(
        "app.py",
        &s.site_file("app.py").replace(
            "return \"Hello from pushdeploy!",
            "return \"500 Internal Server Error\", \"broken\"\n    return \"",
        ),
    );
    s.commit("answers 500");
    let push = r.push();
    push.assert_has("the health check failed")
        .assert_has("HTTP 500")
        .assert_has("rolled back to");
    let checks = push
        .remote()
        .iter()
        .filter(|l| l.contains("-----> Health check: GET"))
        .count();
    assert_eq!(checks, 2, "the old version's check runs again:\n{push}");
    serves(r.port, "Hello from pushdeploy!");
}

/// Another port (WEBSITES_PORT in `.deployment`): gunicorn's new master
/// would keep the old socket, so the app is started anew, on the new port.
#[test]
fn another_port_starts_the_app_anew_on_it() {
    let r = running();
    let s = &r.s;
    s.config(&["--unset", "deploy.port"]);
    s.app("flask-app");
    s.write(
        ".deployment",
        &format!("[config]\nWEBSITES_PORT = {}\n", r.port),
    );
    s.commit("first");
    r.push().assert_ok();
    serves(r.port, "Hello from pushdeploy!");
    let other = free_port();
    s.write(
        ".deployment",
        &format!("[config]\nWEBSITES_PORT = {other}\n"),
    );
    s.commit("another port");
    r.push()
        .assert_ok()
        .assert_has("web: stopped (pid ")
        .assert_has("as the address changed");
    serves(other, "Hello from pushdeploy!");
    assert!(get(r.port).is_err(), "the old port still answers");
}

/// The app's output goes through pushdeploy's log writer: the log is
/// rotated to `<type>.log.1` when it reaches 10 MiB, so it never holds more.
#[test]
fn the_log_is_size_capped_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    let line = format!("{}\n", "x".repeat(1023));
    let input = line.repeat(11 << 10);
    crate::util::pushdeploy_in(dir.path())
        .args(["log-writer", log.to_str().unwrap()])
        .stdin(input)
        .run()
        .assert_ok();
    let current = std::fs::metadata(&log).unwrap().len();
    let rotated = std::fs::metadata(dir.path().join("web.log.1"))
        .unwrap()
        .len();
    assert!(rotated <= 10 << 20 && rotated > 9 << 20, "{rotated}");
    assert_eq!(current + rotated, 11 << 20);
}

/// The dry run says what happens to the app after the switch.
#[test]
fn the_dry_run_says_the_app_is_reloaded() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.write(
        "Procfile",
        "web: gunicorn app:app\nrelease: python -c pass\n",
    );
    s.commit("first");
    s.update_without_deploy();
    s.pushdeploy_command(&["deploy", "--dry-run", "--repo", s.repo.to_str().unwrap()])
        .envs(&[("PUSHDEPLOY_RUN", "true")])
        .run()
        .assert_ok()
        .assert_has(&format!(
            "After the switch (deploy.run): release: python -c pass runs first; the app is reloaded on 127.0.0.1:{} (gunicorn: a new master, the old one until it is ready); health check: GET http://127.0.0.1:{}/, any answer below 500, within 30 s",
            r.port, r.port
        ));
}

/// `logs -f` prints what the processes write as it comes.
#[test]
fn logs_follow_prints_new_lines() {
    use std::io::BufRead;
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.commit("first");
    r.push().assert_ok();
    let repo = s.repo.to_str().unwrap();
    let mut follow = s
        .pushdeploy_command(&["logs", "-f", "--repo", repo])
        .spawn(std::process::Stdio::piped(), std::process::Stdio::null());
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} from logs -f: {e}"),
            }
        }
    };
    wait_for("Booting worker");
    s.run("restart", &[]).assert_ok();
    wait_for("Handling signal: usr2");
    let _ = follow.kill();
    let _ = follow.wait();
}

/// `init` turns running on for a new repository only: one it adopts keeps
/// what it did.
#[test]
fn init_turns_running_on_for_a_new_repository() {
    let s = Server::new();
    assert_eq!(
        s.git_server(&["config", "deploy.run"]).stdout.trim(),
        "true"
    );
    let adopted = s.root.join("adopted.git");
    crate::util::git_in(&s.root)
        .args(["init", "-q", "--bare", adopted.to_str().unwrap()])
        .run()
        .assert_ok();
    let init = s.init_at(&adopted, &s.root.join("adopted-site"));
    init.assert_ok();
    assert!(!init.has("deploy.run"), "{init}");
    crate::util::git_in(&s.root)
        .args([
            "--git-dir",
            adopted.to_str().unwrap(),
            "config",
            "deploy.run",
        ])
        .run()
        .assert_status(1);
}

/// A gunicorn the requirements install is the one that runs: nothing is
/// installed beside the env, and the launcher adds nothing to the path.
#[test]
fn the_envs_own_gunicorn_runs_when_it_has_one() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.write(
        "requirements.txt",
        "greeting==1.0.0\ntinyweb==1.0.0\ngunicorn==27.0.1\n",
    );
    s.commit("with gunicorn");
    let push = r.push();
    push.assert_ok().assert_has("web: started (pid ");
    assert!(!push.has("the env has no gunicorn"), "{push}");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.repo.join("pushdeploy/run/web.json")).unwrap())
            .unwrap();
    assert_eq!(spec["path"], serde_json::Value::Null);
    serves(r.port, "Hello from pushdeploy!");
}

/// As root, the pinned gunicorn comes from root's cache, which may be
/// closed to the site's owner (root's home is): the app gets a copy in its
/// run folder, and serves.
#[test]
fn as_root_the_pinned_gunicorn_is_read_by_the_sites_owner_from_a_closed_cache() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root (to run the app as another user)");
        return;
    }
    let r = running();
    let s = &r.s;
    s.config(&["--unset", "deploy.runAsRoot"]);
    give_site_to_nobody(s);
    use std::os::unix::fs::PermissionsExt;
    // A cache of its own, in a folder only root enters.
    let closed = s.root.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cache = closed.join("cache");
    s.app("flask-app");
    s.commit("first");
    s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[
            ("PUSHDEPLOY_RUN", "true"),
            ("PUSHDEPLOY_CACHE_DIR", cache.to_str().unwrap()),
        ],
    )
    .assert_ok()
    .assert_has("the env has no gunicorn: installing gunicorn")
    .assert_has("successful");
    serves(r.port, "Hello from pushdeploy!");
    let status = s.run("status", &[]);
    status.assert_ok();
    let spec = std::fs::read_to_string(s.repo.join("pushdeploy/run/web.json")).unwrap();
    assert!(spec.contains("/pushdeploy/run/gunicorn-"), "{spec}");
}

/// A supervisor of the user's (runit, s6, a container) runs `serve
/// --process web`; pushes must keep its process its own. The test is that
/// supervisor: it starts `serve` again whenever it ends.
struct Supervisor {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    starts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn start(s: &Server) -> Supervisor {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let starts = std::sync::Arc::new(AtomicUsize::new(0));
        let repo = s.repo.to_str().unwrap().to_string();
        let mut command = s.pushdeploy_command(&["serve", "--process", "web", "--repo", &repo]);
        let (stop2, starts2) = (stop.clone(), starts.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                starts2.fetch_add(1, Ordering::SeqCst);
                let mut child =
                    command.spawn(std::process::Stdio::null(), std::process::Stdio::null());
                loop {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    if stop2.load(Ordering::SeqCst) {
                        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                        child.wait().unwrap();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Supervisor {
            stop,
            starts,
            thread: Some(thread),
        }
    }

    fn starts(&self) -> usize {
        self.starts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Under `serve`: a code change reloads in place (HUP, the master stays the
/// supervisor's, no request fails), a commit that cannot import is refused
/// before the reload, and a Python version change stops the process for
/// its supervisor to start anew.
#[test]
fn pushes_keep_a_process_that_serve_runs_its_supervisors() {
    let r = running();
    let s = &r.s;
    s.app("flask-app");
    s.commit("first");
    // Deployed without running it: the supervisor runs it.
    s.push(&[]).assert_ok().assert_has("successful");
    let supervisor = Supervisor::start(s);
    wait_serving(r.port, "Hello from pushdeploy!");
    let master = web_pid(&r);

    let load = Load::start(r.port);
    s.write(
        "app.py",
        &s.site_file("app.py")
            .replace("Hello from pushdeploy!", "Version two!"),
    );
    s.commit("two");
    r.push()
        .assert_ok()
        .assert_has("web: the new version loads (gunicorn --check-config)")
        .assert_has(&format!(
            "web: reloaded in place (HUP): new workers serve the new version; the master (pid {master}) stays its supervisor's"
        ))
        .assert_has("successful");
    serves(r.port, "Version two!");

    let bad = format!("import no_such_module\n{}", s.site_file("app.py"));
    s.write("app.py", &bad);
    s.commit("cannot import");
    r.push()
        .assert_has("process web: the new version does not load")
        .assert_has("No module named 'no_such_module'")
        .assert_has("rolled back to");
    serves(r.port, "Version two!");
    let (count, failed) = load.finish();
    assert!(count > 10, "{count} requests only");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(web_pid(&r), master, "the supervisor's master stayed");
    assert_eq!(supervisor.starts(), 1);

    s.write(
        "app.py",
        &s.site_file("app.py")
            .replace("Version two!", "Version three!"),
    );
    s.write("runtime.txt", "python-3.12\n");
    s.commit("python 3.12");
    r.push()
        .assert_ok()
        .assert_has("and started again by its supervisor")
        .assert_has("successful");
    serves(r.port, "Version three!");
    assert_eq!(supervisor.starts(), 2);
    drop(supervisor);
}
