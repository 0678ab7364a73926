//! What runs (issue 16): the app's processes, decided from the deployed
//! commit: the Procfile, else `startupCommand`, else detection as App
//! Service's Oryx does it. Shown by every deployment, the dry run (text and
//! JSON) and the record; nothing is started yet.

use crate::util::Server;

/// The dry run of the repository's main, text and JSON: (the App line,
/// the JSON plan's `app`).
fn dry_run(s: &Server) -> (String, serde_json::Value) {
    let text = s.run("deploy", &["--dry-run"]);
    text.assert_ok();
    let line = text
        .all()
        .lines()
        .find(|l| l.contains("App: "))
        .unwrap_or_else(|| panic!("no App line:\n{}", text.all()))
        .trim()
        .to_string();
    let json = s.run("deploy", &["--dry-run", "--json"]);
    json.assert_ok();
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).expect(&json.stdout);
    (line, plan["app"].clone())
}

/// A push shows the same line, and the record keeps it.
fn pushed_line(s: &Server, expected: &str) {
    let push = s.push(&[]);
    push.assert_ok().assert_has(expected);
    let seq = s.records().len();
    s.run("show", &[&format!("#{seq}")])
        .assert_ok()
        .assert_has(expected);
}

/// Azure's Flask quickstart shape: app.py defining app, no Procfile.
#[test]
fn a_flask_app_py_runs_under_gunicorn() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    let line = "App: web: gunicorn app:app (app.py defines app, as Oryx detects a Flask app)";
    pushed_line(&s, line);
    let (text, json) = dry_run(&s);
    assert!(text.ends_with(line), "{text}");
    assert_eq!(json["processes"][0]["type"], "web");
    assert_eq!(json["processes"][0]["command"], "gunicorn app:app");
}

/// Azure's Django quickstart shape: manage.py names mysite.settings, and
/// mysite/wsgi.py is the app; no gunicorn in its requirements.
#[test]
fn a_django_project_runs_its_wsgi_module() {
    let s = Server::new();
    s.app("django-app");
    s.commit("first");
    let line = "App: web: gunicorn mysite.wsgi (manage.py and mysite/wsgi.py, as Oryx detects a Django app)";
    pushed_line(&s, line);
    let (text, json) = dry_run(&s);
    assert!(text.ends_with(line), "{text}");
    assert_eq!(json["processes"][0]["command"], "gunicorn mysite.wsgi");
}

/// The Procfile comes first, every process type in its order; then
/// startupCommand (from `.deployment` here) before detection.
#[test]
fn the_procfile_wins_then_the_startup_command() {
    let s = Server::new();
    s.app("flask-app");
    s.write(
        "Procfile",
        "web: gunicorn app:app --workers 2\nworker: python worker.py\nrelease: python migrate.py\n",
    );
    s.write(".deployment", "[config]\nstartupCommand = python app.py\n");
    s.commit("procfile");
    s.update_without_deploy();
    let (text, json) = dry_run(&s);
    assert!(
        text.ends_with("App: web: gunicorn app:app --workers 2; worker: python worker.py; release: python migrate.py (Procfile)"),
        "{text}"
    );
    assert_eq!(json["processes"].as_array().unwrap().len(), 3);
    assert_eq!(json["reason"], "Procfile");

    s.remove("Procfile");
    s.commit("startup command");
    let line = "App: web: python app.py (startupCommand, .deployment";
    pushed_line(&s, line);
    let (text, _) = dry_run(&s);
    assert!(text.contains(line), "{text}");
}

/// Nothing to run: the line says what was looked for.
#[test]
fn nothing_runs_and_the_output_says_what_was_looked_for() {
    let s = Server::new();
    s.write("index.html", "hello\n");
    s.write("app.py", "print('no app here')\n");
    s.commit("static");
    s.update_without_deploy();
    let (text, json) = dry_run(&s);
    assert!(
        text.contains("App: nothing runs (no Procfile, no startupCommand, no Django manage.py with its wsgi.py, no application.py, app.py, index.py, server.py defining app)"),
        "{text}"
    );
    assert_eq!(json["processes"], serde_json::json!([]));
}

/// Bad Procfile lines: one line naming the Procfile, the line and the
/// value; the push fails and the site keeps the last good version.
#[test]
fn bad_procfile_lines_are_refused_with_their_line() {
    let s = Server::new();
    s.write("index.html", "v1\n");
    s.commit("good");
    s.push(&[]).assert_ok();
    for (procfile, expected) in [
        (
            "web: gunicorn app:app\nworker:\n",
            "Procfile line 2: process type worker has no command",
        ),
        (
            "# jobs\nw$b!: run it\n",
            "Procfile line 2: process type \"w$b!\" is not letters, digits, _ and -",
        ),
    ] {
        s.write("index.html", "v2\n");
        s.write("Procfile", procfile);
        s.commit("bad procfile");
        let push = s.push(&["-f", "main"]);
        assert!(push.has(expected), "{}", push.all());
        assert_eq!(s.site_file("index.html"), "v1\n");
    }
}
