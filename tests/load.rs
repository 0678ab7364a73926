//! Issue 16: the app runs, and every push ends with the new version serving
//! while clients request it continuously: no request refused, reset or
//! answered 5xx across 20 and more deployments of every kind (code,
//! requirements, an env forced anew, a Python version change, a changed
//! start command, an app that cannot import, a failing `release:`, a
//! `worker:` process). And App Service's detection on apps shaped like
//! Azure's quickstarts, which do not list gunicorn.

use std::time::{Duration, Instant};

use crate::util::{Answer, Load, Request, Run, Server, StopsApp, free_port, http_get};

/// A repository whose pushes run the app on a port of its own.
fn running_server() -> (Server, u16) {
    let s = Server::new();
    let port = free_port();
    // `pushdeploy init` turns running on for a new repository; the pushes
    // of these tests turn it on over the tests' environment (`push`).
    s.config(&["deploy.run", "true"]);
    s.config(&["deploy.port", &port.to_string()]);
    // The app never runs as root unless the server says so; the tests run
    // as root in CI, whose sites are root's.
    if rustix::process::geteuid().is_root() {
        s.config(&["deploy.runAsRoot", "true"]);
    }
    (s, port)
}

/// `git push <repository> <args>` (default: main) with running turned on:
/// the tests' environment turns it off (`PUSHDEPLOY_RUN`, above git config).
fn push(s: &Server, args: &[&str]) -> Run {
    let mut all = vec!["push", s.repo.to_str().unwrap()];
    all.extend_from_slice(if args.is_empty() { &["main"] } else { args });
    s.git_with(&all, &[("PUSHDEPLOY_RUN", "true")])
}

/// What the load app answers (see fixtures/apps/load-app).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Version {
    code: u32,
    python: &'static str,
    greeting: &'static str,
}

impl Version {
    fn page(&self) -> String {
        format!(
            "version={} python={} greeting={}",
            self.code, self.python, self.greeting
        )
    }
}

/// One push of the load test: what it was, when it ran, which version was
/// serving before it and which one must serve after it.
struct Push {
    what: String,
    sent: Instant,
    returned: Instant,
    before: Version,
    after: Version,
}

/// The load app in the clone, its `VERSION` line set to `code`.
fn set_code(s: &Server, code: u32) {
    let fixture = crate::util::fixtures().join("apps/load-app/app.py");
    let app = std::fs::read_to_string(fixture).unwrap();
    assert!(app.contains("VERSION = \"1\"\n"));
    s.write(
        "app.py",
        &app.replace("VERSION = \"1\"\n", &format!("VERSION = \"{code}\"\n")),
    );
}

struct LoadTest<'a> {
    s: &'a Server,
    port: u16,
    serving: Version,
    pushes: Vec<Push>,
}

impl LoadTest<'_> {
    /// Commits what the clone holds and pushes it (with `args`); `after`
    /// is the version that must serve once the push has returned: the new
    /// one, or the one serving before when the deployment must roll back.
    fn push(&mut self, what: &str, args: &[&str], after: Version, rolled_back: bool) -> Run {
        self.s.commit(what);
        let sent = Instant::now();
        let push = push(self.s, args);
        let returned = Instant::now();
        push.assert_ok();
        let record = &self.s.records()[0];
        let status = if rolled_back {
            "rolled back"
        } else {
            "success"
        };
        assert_eq!(record["status"], status, "{what}: {record}\n{push}");
        // The pusher's own first request after the push: the version expected.
        let answer = http_get(self.port, "/");
        assert_eq!(
            answer.body(),
            Some(after.page().as_str()),
            "{what}: {answer:?} after\n{push}"
        );
        self.pushes.push(Push {
            what: what.to_string(),
            sent,
            returned,
            before: self.serving,
            after,
        });
        self.serving = after;
        push
    }

    /// A push that must succeed and serve `after`.
    fn deploys(&mut self, what: &str, args: &[&str], after: Version) -> Run {
        self.push(what, args, after, false)
    }

    /// A push that must roll back, the version before it serving throughout.
    fn rolls_back(&mut self, what: &str) -> Run {
        let before = self.serving;
        self.push(what, &[], before, true)
    }
}

/// Which push a moment falls in, for messages: "during push 3 (code v3)"
/// or "after push 3 (...)".
fn when(pushes: &[Push], at: Instant) -> String {
    for (i, p) in pushes.iter().enumerate().rev() {
        if at >= p.returned {
            return format!("after push {} ({})", i + 1, p.what);
        }
        if at >= p.sent {
            return format!("during push {} ({})", i + 1, p.what);
        }
    }
    "before the first push".to_string()
}

/// Every request of the load, checked against the pushes: none failed; one
/// sent while no push ran got the version the last push left; one sent
/// during a push got the version before it or the one after it, never a
/// version of a deployment that rolled back.
fn check_requests(pushes: &[Push], requests: &[Request]) {
    let mut failures = Vec::new();
    for r in requests {
        let at = when(pushes, r.sent);
        if r.answer.failed() {
            let took = r.answered - r.sent;
            failures.push(format!("{at}: {:?} after {took:?}", r.answer));
            continue;
        }
        let body = r.answer.body().unwrap();
        // The last push sent before this request, and whether it had returned.
        let Some(p) = pushes.iter().rev().find(|p| r.sent >= p.sent) else {
            continue;
        };
        let allowed = if r.sent >= p.returned {
            vec![p.after.page()]
        } else {
            vec![p.before.page(), p.after.page()]
        };
        if !allowed.contains(&body.to_string()) {
            failures.push(format!("{at}: {body:?}, expected one of {allowed:?}"));
        }
    }
    let pages = requests.iter().filter(|r| !r.answer.failed()).count();
    assert!(
        failures.is_empty(),
        "{} of {} requests went wrong:\n{}",
        failures.len(),
        requests.len(),
        failures.join("\n")
    );
    // Requests ran through every push, not only between them.
    for (i, p) in pushes.iter().enumerate().skip(1) {
        let during = requests
            .iter()
            .filter(|r| r.sent >= p.sent && r.sent < p.returned)
            .count();
        assert!(during > 0, "no request during push {} ({})", i + 1, p.what);
    }
    eprintln!("{pages} requests answered across {} pushes", pushes.len());
}

/// The worker's `worker.txt` once it names `code` (a worker is started, or
/// restarted, in the background of the push): its pid.
fn worker_of(s: &Server, code: u32) -> i32 {
    let file = s.site.join("worker.txt");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.get(1) == Some(&format!("version={code}").as_str()) {
            return fields[0].strip_prefix("pid=").unwrap().parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "worker.txt names no worker of v{code}: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alive(pid: i32) -> bool {
    // A zombie has exited: only its parent has not reaped it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(") ")
            .is_some_and(|(_, s)| s.starts_with('Z'))
    })
}

/// Waits for process `pid` to end (a stopped process may take a moment).
fn ends(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

#[test]
fn twenty_pushes_under_load_fail_no_request() {
    let (s, port) = running_server();
    let _stop = StopsApp(&s);
    s.app("load-app");
    let v = |code, python, greeting| Version {
        code,
        python,
        greeting,
    };
    let mut t = LoadTest {
        s: &s,
        port,
        serving: v(0, "-", "-"),
        pushes: Vec::new(),
    };

    // Nothing runs yet: the first push starts the app, nobody else does.
    assert_eq!(http_get(port, "/"), Answer::Refused);
    t.deploys("first", &[], v(1, "3.11", "1.0.0"));
    // gunicorn is not in the requirements: provided beside the env, not in it.
    assert!(!s.site.join("env/bin/gunicorn").exists());
    let load = Load::start(port, 2);
    // The load is under way before the next push.
    while load.requests().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }

    set_code(&s, 2);
    t.deploys("code v2", &[], v(2, "3.11", "1.0.0"));
    set_code(&s, 3);
    t.deploys("code v3", &[], v(3, "3.11", "1.0.0"));

    // Requirements: greeting 2.0.0 installed into a copy of the env.
    set_code(&s, 4);
    s.write("requirements.txt", "greeting==2.0.0\ntinyweb==1.0.0\n");
    t.deploys("requirements v4", &[], v(4, "3.11", "2.0.0"));
    set_code(&s, 5);
    t.deploys("code v5", &[], v(5, "3.11", "2.0.0"));

    // An env forced anew, by a push option and by the commit's setting.
    set_code(&s, 6);
    t.deploys(
        "push option recreate-env v6",
        &["-o", "recreate-env", "main"],
        v(6, "3.11", "2.0.0"),
    )
    .assert_has(
        "Creating virtual environment env/ with python-3.11: forced by push option recreate-env",
    );
    set_code(&s, 7);
    s.write(".deployment", "[config]\nrecreateEnv = true\n");
    t.deploys("recreateEnv v7", &[], v(7, "3.11", "2.0.0"))
        .assert_has("Creating virtual environment env/ with python-3.11: forced by ");
    set_code(&s, 8);
    s.remove(".deployment");
    t.deploys("code v8", &[], v(8, "3.11", "2.0.0"));

    // A Python version change: a new master with the new interpreter.
    set_code(&s, 9);
    s.write("runtime.txt", "python-3.12\n");
    t.deploys("python 3.12 v9", &[], v(9, "3.12", "2.0.0"));
    set_code(&s, 10);
    t.deploys("code v10", &[], v(10, "3.12", "2.0.0"));

    // A changed start command: the Procfile replaces the detected one.
    set_code(&s, 11);
    s.write("Procfile", "web: gunicorn --workers 2 app:app\n");
    t.deploys("procfile v11", &[], v(11, "3.12", "2.0.0"));

    // An app that cannot import: rolled back, v11 serving throughout.
    s.write("app.py", "raise RuntimeError('this commit cannot start')\n");
    t.rolls_back("import fails");
    set_code(&s, 13);
    t.deploys("fixed v13", &[], v(13, "3.12", "2.0.0"));

    // A failing release phase: rolled back before any reload.
    set_code(&s, 14);
    s.write(
        "Procfile",
        "web: gunicorn --workers 2 app:app\nrelease: python -c \"raise SystemExit(3)\"\n",
    );
    t.rolls_back("release fails");
    set_code(&s, 15);
    s.write(
        "Procfile",
        "web: gunicorn --workers 2 app:app\nrelease: python -c \"open('released.txt', 'w').write('15')\"\n",
    );
    t.deploys("release v15", &[], v(15, "3.12", "2.0.0"));
    assert_eq!(s.site_file("released.txt"), "15");

    // A worker process beside web, started, then restarted with new code.
    set_code(&s, 16);
    s.write(
        "Procfile",
        "web: gunicorn --workers 2 app:app\nworker: python worker.py\n",
    );
    t.deploys("worker v16", &[], v(16, "3.12", "2.0.0"));
    let worker16 = worker_of(&s, 16);
    assert!(alive(worker16), "the worker of v16");
    set_code(&s, 17);
    t.deploys("code v17 with worker", &[], v(17, "3.12", "2.0.0"));
    let worker17 = worker_of(&s, 17);
    assert!(ends(worker16), "the worker of v16 still runs after v17");
    assert!(alive(worker17), "the worker of v17");

    // Back to 3.11 and to the detected command: a new Python and a new
    // command at once; the worker the Procfile no longer names stops.
    set_code(&s, 18);
    s.remove("Procfile");
    s.write("runtime.txt", "python-3.11\n");
    t.deploys("python 3.11, no Procfile v18", &[], v(18, "3.11", "2.0.0"));
    assert!(ends(worker17), "the worker still runs without a Procfile");
    set_code(&s, 19);
    s.write("requirements.txt", "greeting==1.0.0\ntinyweb==1.0.0\n");
    t.deploys("requirements v19", &[], v(19, "3.11", "1.0.0"));

    // Azure's Startup Command, from the commit: another command change.
    set_code(&s, 20);
    s.write(
        ".deployment",
        "[config]\nstartupCommand = gunicorn --workers 1 app:app\n",
    );
    t.deploys("startupCommand v20", &[], v(20, "3.11", "1.0.0"));
    set_code(&s, 21);
    t.deploys("code v21", &[], v(21, "3.11", "1.0.0"));

    let requests = load.stop();
    assert!(t.pushes.len() >= 20);
    check_requests(&t.pushes, &requests);
}

/// Python reuses `__pycache__/app.*.pyc` when the source's size and its
/// modification time in whole seconds are those the bytecode was compiled
/// from. A code change of the same size whose sync falls in the same second
/// as the previous version's (two quick pushes) must still serve the new
/// code. The test makes the two writes meet in one second: it sets the live
/// app.py's time to the current second and has it compiled, then pushes
/// the change at once; an attempt whose sync fell in the next second is
/// tried again.
#[test]
fn a_same_size_change_in_the_same_second_serves_the_new_code() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let (s, port) = running_server();
    let _stop = StopsApp(&s);
    s.app("load-app");
    s.commit("first");
    push(&s, &[]).assert_ok();
    let second = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    for attempt in 0..5 {
        // At the start of a second, so that the push has most of it.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        std::thread::sleep(Duration::from_nanos(
            1_000_000_000 - now.subsec_nanos() as u64,
        ));
        let started = SystemTime::now();
        let live = std::fs::File::options()
            .write(true)
            .open(s.site.join("app.py"))
            .unwrap();
        live.set_modified(started).unwrap();
        drop(live);
        // Compiled as the running app's workers compile it (whatever the
        // environment of the test says about bytecode).
        let compiled = std::process::Command::new(s.site.join("env/bin/python"))
            .args(["-c", "import app"])
            .current_dir(&s.site)
            .env_remove("PYTHONDONTWRITEBYTECODE")
            .status()
            .unwrap();
        assert!(compiled.success());
        let code = 2 + attempt;
        set_code(&s, code);
        s.commit(&format!("v{code}"));
        let push = push(&s, &[]);
        push.assert_ok();
        let written = std::fs::metadata(s.site.join("app.py"))
            .unwrap()
            .modified()
            .unwrap();
        let page = http_get(port, "/");
        assert_eq!(
            page.body()
                .map(|b| b.split(' ').next().unwrap().to_string()),
            Some(format!("version={code}")),
            "the page after the push of v{code}\n{push}"
        );
        if second(written) == second(started) {
            return;
        }
        eprintln!("attempt {attempt}: the sync fell in the next second; again");
    }
    panic!("no push synced app.py within the second it began in");
}

/// `pushdeploy stop` right after a push that reloaded the app: the new
/// gunicorn master (started by USR2) still has its pid in `web.pid.2`
/// until it notices its parent is gone. `status` finds it there; `stop`
/// must too, and leave nothing serving.
#[test]
fn stop_right_after_a_reload_stops_the_app() {
    let (s, port) = running_server();
    let _stop = StopsApp(&s);
    s.app("load-app");
    s.commit("first");
    push(&s, &[]).assert_ok();
    set_code(&s, 2);
    s.commit("v2");
    push(&s, &[]).assert_ok();
    s.run("status", &[])
        .assert_ok()
        .assert_has("web: running (pid ");
    s.run("stop", &[]).assert_ok();
    assert_eq!(http_get(port, "/"), Answer::Refused, "after stop");
    assert_ne!(s.run("status", &[]).status, 0);
}

// ---- Detection on apps shaped like Azure's quickstarts ----------------------

/// Detection alone (a dry run, nothing started): Azure's Django quickstart
/// sets DJANGO_SETTINGS_MODULE from a variable in manage.py, so the module
/// cannot be read from it; App Service (Oryx's djangoDetector) runs the
/// first folder of the app that holds a wsgi.py.
#[test]
fn the_django_quickstart_is_detected_as_app_service_detects_it() {
    let s = Server::new();
    s.app("django-quickstart");
    s.commit("quickstart");
    s.update_without_deploy();
    s.run("deploy", &["--dry-run"])
        .assert_ok()
        .assert_has("App: web: gunicorn quickstartproject.wsgi (");
}

/// Azure's Django quickstart: manage.py chooses its settings module at run
/// time, `quickstartproject/wsgi.py` is the app, and its requirements do not
/// name gunicorn. The first push serves it with a gunicorn beside the env,
/// never installed into it.
#[test]
fn the_django_quickstart_serves_with_gunicorn_beside_the_env() {
    let (s, port) = running_server();
    let _stop = StopsApp(&s);
    s.app("django-quickstart");
    s.commit("quickstart");
    let push = push(&s, &[]);
    push.assert_ok()
        .assert_has("App: web: gunicorn quickstartproject.wsgi (")
        .assert_has("successful");
    // Served once the push has returned, without being started by hand.
    let page = http_get(port, "/");
    assert!(
        page.body().is_some_and(|p| p.contains("Welcome to Azure")),
        "{page:?}\n{push}"
    );
    // The env is what requirements.txt asks for, and no more.
    s.env_python("import gunicorn")
        .assert_status(1)
        .assert_has("No module named 'gunicorn'");
    assert!(!s.site.join("env/bin/gunicorn").exists());
}

/// Azure's Flask quickstart: app.py defines app, requirements name gunicorn
/// (as Azure's does): the env's own gunicorn serves it.
#[test]
fn the_flask_quickstart_serves_with_the_envs_gunicorn() {
    let (s, port) = running_server();
    let _stop = StopsApp(&s);
    s.app("flask-quickstart");
    s.commit("quickstart");
    let push = push(&s, &[]);
    push.assert_ok()
        .assert_has("App: web: gunicorn app:app (app.py defines app, as Oryx detects a Flask app)")
        .assert_has("successful");
    // Served once the push has returned, without being started by hand.
    let page = http_get(port, "/");
    assert!(
        page.body().is_some_and(|p| p.contains("Welcome to Azure")),
        "{page:?}\n{push}"
    );
    s.env_python("import gunicorn; print(gunicorn.__version__)")
        .assert_ok()
        .assert_has("27.0.1");
}

// ---- The instrument ------------------------------------------------------------

/// The flask fixture served by `python app.py <port>` (tinyweb's server),
/// its packages imported from the wheels themselves: no env needed.
fn serve_by_hand(port: u16) -> std::process::Child {
    let wheels = crate::util::fixtures().join("wheels");
    let path = ["tinyweb-1.0.0", "greeting-1.0.0"]
        .map(|w| {
            wheels
                .join(format!("{w}-py2.py3-none-any.whl"))
                .display()
                .to_string()
        })
        .join(":");
    let child = std::process::Command::new("python3")
        .args(["app.py", &port.to_string()])
        .current_dir(crate::util::fixtures().join("apps/flask-app"))
        .env("PYTHONPATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/").failed() {
        assert!(Instant::now() < deadline, "python app.py never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// The load and its check see a restart with a gap (what a deployment
/// without a graceful reload does): requests refused while nothing
/// listens, blamed on the push that ran then. Without this, zero failures
/// in the load test could mean that the instrument sees nothing.
#[test]
fn the_load_sees_a_restart_with_a_gap() {
    let port = free_port();
    let mut app = serve_by_hand(port);
    let load = Load::start(port, 2);
    std::thread::sleep(Duration::from_millis(300));
    let v1 = Version {
        code: 1,
        python: "-",
        greeting: "-",
    };
    let sent = Instant::now();
    // SIGTERM, then a new server: the port is closed in between.
    let pid = app.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    app.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut again = serve_by_hand(port);
    let returned = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let requests = load.stop();
    again.kill().unwrap();
    again.wait().unwrap();

    let refused = requests
        .iter()
        .filter(|r| r.answer == Answer::Refused)
        .count();
    assert!(refused > 0, "{requests:?}");
    let page = "Hello from pushdeploy! greeting 1.0.0: Hello, world!";
    assert!(requests.iter().any(|r| r.answer.body() == Some(page)));
    let push = Push {
        what: "restart".to_string(),
        sent,
        returned,
        before: v1,
        after: v1,
    };
    let check = std::panic::catch_unwind(|| check_requests(&[push], &requests));
    let message = *check.unwrap_err().downcast::<String>().unwrap();
    assert!(
        message.contains("during push 1 (restart): Refused"),
        "{message}"
    );
}
