//! What runs: the app's processes, decided from the deployed commit (the
//! project folder) as Heroku and App Service decide them. A `Procfile`
//! first, else the `startupCommand` setting (Azure's Startup Command), else
//! detection as App Service's Oryx does it. The decision is plain data with
//! its reason; nothing is started here.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::settings::{STARTUP_COMMAND, Values};

pub const PROCFILE: &str = "Procfile";

/// Oryx's Flask-style entry files, in its order (its `flaskDetector`).
const FLASK_FILES: &[&str] = &[
    "application.py",
    "app.py",
    "run.py",
    "index.py",
    "server.py",
    "wsgi.py",
];

/// Oryx's FastAPI entry files, in its order (its `fastAPIDetector`).
const ASGI_FILES: &[&str] = &[
    "main.py",
    "app.py",
    "application.py",
    "server.py",
    "asgi.py",
    "api.py",
    "index.py",
    "run.py",
];

/// The app's processes and why, or why none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// Process type and command line, in the Procfile's order.
    pub processes: Vec<Process>,
    /// Where the decision came from, or what was looked for in vain.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    #[serde(rename = "type")]
    pub kind: String,
    pub command: String,
}

impl App {
    /// The one line every deployment shows, like the runtime's.
    pub fn line(&self) -> String {
        if self.processes.is_empty() {
            return format!("App: nothing runs ({})", self.reason);
        }
        let list: Vec<String> = self
            .processes
            .iter()
            .map(|p| format!("{}: {}", p.kind, p.command))
            .collect();
        format!("App: {} ({})", list.join("; "), self.reason)
    }
}

fn web(command: String, reason: String) -> App {
    App {
        processes: vec![Process {
            kind: "web".to_string(),
            command,
        }],
        reason,
    }
}

/// Decides what runs; a bad Procfile is an error naming its line.
pub fn decide(values: &Values, commit: &Commit) -> Result<App> {
    if let Some(bytes) = commit.read_root_file(PROCFILE)? {
        return Ok(App {
            processes: parse_procfile(&bytes)?,
            reason: PROCFILE.to_string(),
        });
    }
    if let Some((command, origin)) = values.text(STARTUP_COMMAND) {
        return Ok(web(
            command.trim().to_string(),
            format!("startupCommand, {origin}"),
        ));
    }
    if let Some(app) = django(commit)? {
        return Ok(app);
    }
    // Oryx: a file that imports fastapi (and not flask) is an ASGI app,
    // run by gunicorn with uvicorn's worker (from the uvicorn-worker package).
    for file in ASGI_FILES {
        if let Some(bytes) = commit.read_root_file(file)? {
            let text = String::from_utf8_lossy(&bytes);
            let asgi = text.contains("from fastapi") || text.contains("import fastapi");
            if asgi && !text.contains("from flask") && defines_app(&bytes) {
                let module = file.trim_end_matches(".py");
                return Ok(web(
                    format!("gunicorn -k uvicorn_worker.UvicornWorker {module}:app"),
                    format!("{file} imports fastapi, as Oryx detects an ASGI app"),
                ));
            }
        }
    }
    for file in FLASK_FILES {
        if let Some(bytes) = commit.read_root_file(file)?
            && defines_app(&bytes)
        {
            let module = file.trim_end_matches(".py");
            return Ok(web(
                format!("gunicorn {module}:app"),
                format!("{file} defines app, as Oryx detects a Flask app"),
            ));
        }
    }
    Ok(App {
        processes: Vec::new(),
        reason: format!(
            "no Procfile, no startupCommand, no Django manage.py with its wsgi.py, no {} importing fastapi, no {} defining app",
            ASGI_FILES.join(", "),
            FLASK_FILES.join(", ")
        ),
    })
}

/// Django: `manage.py` names its settings module (`mysite.settings`); the
/// app is that package's `wsgi.py`. When it names none this way (Azure's
/// quickstart sets it through a variable), Oryx's own rule: the first
/// top-level folder, by name, that holds a `wsgi.py`.
fn django(commit: &Commit) -> Result<Option<App>> {
    let Some(manage) = commit.read_root_file("manage.py")? else {
        return Ok(None);
    };
    if let Some(package) = settings_package(&String::from_utf8_lossy(&manage)) {
        // `config.settings.production` (a settings package) has its wsgi.py
        // in `config/`: the nearest package holding one, from the settings
        // inward out.
        for package in enclosing(&package) {
            let wsgi = format!("{}/wsgi.py", package.replace('.', "/"));
            if commit.path_id(&wsgi).is_some() {
                return Ok(Some(web(
                    format!("gunicorn {package}.wsgi"),
                    format!("manage.py and {wsgi}, as Oryx detects a Django app"),
                )));
            }
        }
    }
    // The env is the site's `env` folder, never the app; a folder whose name
    // is no Python identifier cannot be imported as a module.
    let folder = commit.root_folders().into_iter().find(|name| {
        name != "env" && is_identifier(name) && commit.path_id(&format!("{name}/wsgi.py")).is_some()
    });
    Ok(folder.map(|name| {
        web(
            format!("gunicorn {name}.wsgi"),
            format!("manage.py and {name}/wsgi.py, the first folder holding one, as Oryx detects a Django app"),
        )
    }))
}

fn is_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a.b.c`, `a.b`, `a`.
fn enclosing(package: &str) -> Vec<&str> {
    let mut out = vec![package];
    let mut rest = package;
    while let Some((outer, _)) = rest.rsplit_once('.') {
        out.push(outer);
        rest = outer;
    }
    out
}

/// The package of `DJANGO_SETTINGS_MODULE` as `manage.py` sets it:
/// `os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')`.
fn settings_package(manage: &str) -> Option<String> {
    let line = manage
        .lines()
        .find(|l| l.contains("DJANGO_SETTINGS_MODULE") && l.contains("setdefault"))?;
    let after = &line[line.find("DJANGO_SETTINGS_MODULE")? + "DJANGO_SETTINGS_MODULE".len()..];
    // The value is the second argument: after the comma.
    let after = &after[after.find(',')? + 1..];
    let quote = after.find(['\'', '"'])?;
    let rest = &after[quote + 1..];
    let module = &rest[..rest.find(['\'', '"'])?];
    let (package, _) = module.rsplit_once('.')?;
    let ok = package.split('.').all(is_identifier);
    ok.then(|| package.to_string())
}

/// Whether a module assigns `app` at its top level (`app = Flask(...)`).
fn defines_app(source: &[u8]) -> bool {
    String::from_utf8_lossy(source).lines().any(|l| {
        l.strip_prefix("app")
            .map(|rest| {
                let rest = rest.trim_start();
                (rest.starts_with('=') && !rest.starts_with("==")) || rest.starts_with(':')
            })
            .unwrap_or(false)
    })
}

/// Heroku's format: `type: command` a line, `#` comments and blank lines
/// skipped; a type is letters, digits, `_` and `-`.
pub fn parse_procfile(bytes: &[u8]) -> Result<Vec<Process>> {
    let text = String::from_utf8_lossy(bytes);
    let mut out: Vec<Process> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let shown = crate::error::shown(trimmed.as_bytes());
        let Some((kind, command)) = trimmed.split_once(':') else {
            bail!("{PROCFILE} line {n}: {shown} is not `type: command`");
        };
        let kind = kind.trim();
        let command = command.trim();
        if kind.is_empty()
            || !kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!(
                "{PROCFILE} line {n}: process type {} is not letters, digits, _ and -",
                crate::error::shown(kind.as_bytes())
            );
        }
        if command.is_empty() {
            bail!("{PROCFILE} line {n}: process type {kind} has no command");
        }
        if out.iter().any(|p| p.kind == kind) {
            bail!("{PROCFILE} line {n}: process type {kind} is given twice");
        }
        out.push(Process {
            kind: kind.to_string(),
            command: command.to_string(),
        });
    }
    if out.is_empty() {
        bail!("{PROCFILE}: no process types (lines such as `web: gunicorn app:app`)");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfile_types_in_order() {
        let p = parse_procfile(b"# c\nweb: gunicorn app:app\n\nworker: python w.py\nrelease: python manage.py migrate\n").unwrap();
        let kinds: Vec<&str> = p.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["web", "worker", "release"]);
        assert_eq!(p[0].command, "gunicorn app:app");
    }

    #[test]
    fn bad_procfile_lines_name_the_line_and_value() {
        let e = parse_procfile(b"web: gunicorn app:app\nworker:\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Procfile line 2: process type worker has no command"
        );
        let e = parse_procfile(b"\nw$b!: run\n").unwrap_err();
        assert!(
            e.to_string().starts_with("Procfile line 2: process type ")
                && e.to_string().contains("w$b!"),
            "{e}"
        );
        let e = parse_procfile(b"just words\n").unwrap_err();
        assert!(e.to_string().starts_with("Procfile line 1: "), "{e}");
    }

    #[test]
    fn django_settings_package_from_manage_py() {
        let manage =
            "import os\n    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n";
        assert_eq!(settings_package(manage).as_deref(), Some("mysite"));
        assert_eq!(settings_package("print(1)\n"), None);
        assert_eq!(
            settings_package("os.environ.setdefault('DJANGO_SETTINGS_MODULE', '$(x).settings')"),
            None
        );
    }

    #[test]
    fn a_settings_package_looks_outward_for_wsgi_py() {
        let manage =
            "os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"config.settings.production\")";
        assert_eq!(settings_package(manage).as_deref(), Some("config.settings"));
        assert_eq!(enclosing("config.settings"), ["config.settings", "config"]);
    }

    #[test]
    fn flask_app_defined_at_top_level() {
        assert!(defines_app(
            b"from flask import Flask\napp = Flask(__name__)\n"
        ));
        assert!(!defines_app(
            b"application = 1\n    app = 2\nif app == 3: pass\n"
        ));
    }
}
