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
    // The record keeps the decision as data.
    let record = &s.records()[0];
    assert_eq!(record["app"]["processes"][0]["command"], "gunicorn app:app");
    assert_eq!(record["app"]["reason"], json["reason"]);
    // `config` shows what the branch's head runs, in text and JSON.
    s.run("config", &[]).assert_ok().assert_has(line);
    let config = s.run("config", &["--json"]);
    let config: serde_json::Value = serde_json::from_str(&config.stdout).expect(&config.stdout);
    assert_eq!(config["app"]["processes"][0]["command"], "gunicorn app:app");
    assert_eq!(config["port"]["value"], "8000");
    assert_eq!(config["bind"]["value"], "127.0.0.1");
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

/// An ASGI app (FastAPI, as Oryx detects it): gunicorn with uvicorn's
/// worker; a file importing flask stays a Flask app.
#[test]
fn an_asgi_app_runs_with_uvicorn_workers() {
    let s = Server::new();
    s.write(
        "main.py",
        "from fastapi import FastAPI\n\napp = FastAPI()\n",
    );
    s.write("index.html", "x\n");
    s.commit("asgi");
    let line = "App: web: gunicorn -k uvicorn_worker.UvicornWorker main:app (main.py imports fastapi, as Oryx detects an ASGI app)";
    pushed_line(&s, line);
    let (text, _) = dry_run(&s);
    assert!(text.ends_with(line), "{text}");
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
        text.contains("App: nothing runs (no Procfile, no startupCommand, no Django manage.py with its wsgi.py, no main.py, app.py, application.py, server.py, asgi.py, api.py, index.py, run.py importing fastapi, no application.py, app.py, run.py, index.py, server.py, wsgi.py defining app)"),
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

/// `pushdeploy appsettings <action> --repo <repo> <args>`.
fn appsettings(s: &Server, args: &[&str]) -> crate::util::Run {
    let repo = s.repo.to_str().unwrap();
    let mut all = vec!["appsettings", args[0], "--repo", repo];
    all.extend_from_slice(&args[1..]);
    s.pushdeploy(&all)
}

/// `pushdeploy appsettings`: stored 0600 under the state dir, listed
/// masked, names checked; the build steps see the values, over the
/// commit's own app setting of that name, and postDeploy does not.
#[test]
fn server_app_settings_reach_the_build_steps_not_post_deploy() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::new();
    appsettings(&s, &["set", "SECRET_TOKEN=s3cr=t"]).assert_ok();
    appsettings(&s, &["set", "OTHER_NAME=gone"]).assert_ok();
    let stored = s.repo.join("pushdeploy/appsettings.json");
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", stored.display());
    let list = appsettings(&s, &["list"]);
    list.assert_ok()
        .assert_has("SECRET_TOKEN=********")
        .assert_has("OTHER_NAME=********");
    assert!(!list.has("s3cr=t"), "{}", list.all());
    appsettings(&s, &["list", "--show-values"])
        .assert_ok()
        .assert_has("SECRET_TOKEN=s3cr=t");
    appsettings(&s, &["unset", "OTHER_NAME"]).assert_ok();
    assert!(!appsettings(&s, &["list"]).has("OTHER_NAME"));
    for bad in [
        "PATH=/tmp",
        "PUSHDEPLOY_SITE=/x",
        "=v",
        "POST_BUILD_COMMAND=x",
        "NOEQUALS",
    ] {
        let run = appsettings(&s, &["set", bad]);
        assert_ne!(run.status, 0, "{bad}: {}", run.all());
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.all());
    }

    s.config(&[
        "deploy.postDeploy",
        "sh -c 'echo \"[$SECRET_TOKEN]\" > post-deploy.txt'",
    ]);
    s.write("index.html", "hello\n");
    s.write(
        ".deployment",
        "[config]\nSECRET_TOKEN = from-the-commit\nPOST_BUILD_COMMAND = sh -c \"echo $SECRET_TOKEN > built.txt\"\n",
    );
    s.commit("first");
    let push = s.push(&[]);
    push.assert_ok();
    assert!(!push.has("s3cr=t"), "{}", push.all());
    assert_eq!(s.site_file("built.txt"), "s3cr=t\n");
    assert_eq!(s.site_file("post-deploy.txt"), "[]\n");
    let dry = s.run("deploy", &["--dry-run"]);
    dry.assert_ok()
        .assert_has("App setting: SECRET_TOKEN (pushdeploy appsettings; overrides .deployment's)");
    assert!(!dry.has("s3cr=t"), "{}", dry.all());
    let json = s.run("deploy", &["--dry-run", "--json"]);
    assert!(!json.has("s3cr=t"), "{}", json.all());
}

/// A settings package (`config.settings.production`, cookiecutter-django's
/// layout): the wsgi.py is the package's that holds it, `config/wsgi.py`.
#[test]
fn a_django_settings_package_finds_the_wsgi_py_beside_it() {
    let s = Server::new();
    s.write(
        "manage.py",
        "import os\nos.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"config.settings.production\")\n",
    );
    s.write("config/__init__.py", "");
    s.write("config/settings/__init__.py", "");
    s.write("config/settings/production.py", "DEBUG = False\n");
    s.write("config/wsgi.py", "application = None\n");
    s.commit("settings package");
    s.update_without_deploy();
    let (text, _) = dry_run(&s);
    assert!(
        text.ends_with("App: web: gunicorn config.wsgi (manage.py and config/wsgi.py, as Oryx detects a Django app)"),
        "{text}"
    );
}

/// Azure's Django quickstart sets the settings module through a variable
/// (`settings_module = ...; os.environ.setdefault('DJANGO_SETTINGS_MODULE',
/// settings_module)`): Oryx's rule then decides, the first top-level folder
/// by name holding a `wsgi.py`; one that is no module name is passed over.
#[test]
fn a_django_settings_module_set_through_a_variable_finds_the_first_wsgi_folder() {
    let s = Server::new();
    s.write(
        "manage.py",
        "import os\nsettings_module = 'quickstartproject.production' if 'WEBSITE_HOSTNAME' in os.environ else 'quickstartproject.settings'\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', settings_module)\n",
    );
    s.write("a-folder/wsgi.py", "application = None\n");
    s.write("hello_azure/views.py", "");
    s.write("quickstartproject/__init__.py", "");
    s.write("quickstartproject/wsgi.py", "application = None\n");
    s.write("zeta/wsgi.py", "application = None\n");
    s.commit("quickstart");
    s.update_without_deploy();
    let (text, json) = dry_run(&s);
    assert!(
        text.ends_with("App: web: gunicorn quickstartproject.wsgi (manage.py and quickstartproject/wsgi.py, the first folder holding one, as Oryx detects a Django app)"),
        "{text}"
    );
    assert_eq!(
        json["processes"][0]["command"],
        "gunicorn quickstartproject.wsgi"
    );
}
