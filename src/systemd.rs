//! `pushdeploy init --systemd`: systemd units that run the deployed app's
//! processes, start them at boot and restart them when they crash, and the
//! commands (start, stop, restart, status, logs, a deployment's
//! replacement of a process) as `systemctl` and `journalctl` calls.
//!
//! Each process type gets `pushdeploy-<repo>-<type>.service`, whose
//! ExecStart is `pushdeploy serve --repo R --process TYPE` (which exec()s the
//! process: gunicorn's master is the unit's main pid); a gunicorn `web` gets
//! `pushdeploy-<repo>-web.socket` too, and `pushdeploy-<repo>.target` wants
//! them all and is what boot starts. The unit files are plain data made from
//! the app (`render`); the calls are argv lists built as data and run through
//! `process`, so both are testable where systemd does not run.
//!
//! How a deployment's reload works under these units (see
//! `processes::Launch::reload`; checked with gunicorn 27.0.1 under
//! `systemd-socket-activate`, which hands a socket over as systemd does):
//! - First gunicorn's `--check-config` loads the new version, as the app's
//!   user: one that cannot import is refused while the old one serves (a
//!   master whose workers cannot import exits, and `Restart=always` would
//!   retry it every second until a rollback).
//! - Then each process is `replace`d: the master stops gracefully and a new
//!   one starts, while the socket, which systemd holds, keeps new
//!   connections waiting. USR2 must not be used on a socket-activated
//!   gunicorn: its new master is told LISTEN_FDS=1, but gunicorn has moved
//!   the socket off fd 3, so the new master dies (EBADF) and the old one
//!   serves on, old code and all (gunicorn issue #2856).
//! - `replace` is a `systemctl restart` where the caller may, else a TERM
//!   to the unit's main pid and `Restart=always` starts it anew: a system
//!   unit's owner cannot restart it without root, but may signal its own
//!   process.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::usage;
use crate::process::{Limits, Runner};
use crate::report::Report;

/// The state file that says units are installed, under the state dir.
const STATE_FILE: &str = "systemd.json";

/// The first line of every unit file pushdeploy writes: a file without it
/// (or naming another repository) is never overwritten or removed.
const MARK: &str = "# Written by `pushdeploy init --systemd` for ";

/// The Procfile type that runs once per deployment (Heroku's release phase),
/// never as a service.
const RELEASE: &str = "release";

/// System units (run as root: `/etc/systemd/system`, `User=` the site's owner)
/// or the user's own (`~/.config/systemd/user`, run as that user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    System,
    User,
}

impl Scope {
    /// `--user` for systemctl and journalctl, when it is the user's manager.
    fn flag(self) -> Option<&'static str> {
        (self == Scope::User).then_some("--user")
    }

    /// The target that boot (or the user's login, or lingering) starts.
    fn boot_target(self) -> &'static str {
        match self {
            Scope::System => "multi-user.target",
            Scope::User => "default.target",
        }
    }
}

/// One process type's units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUnits {
    #[serde(rename = "type")]
    pub kind: String,
    pub service: String,
    /// The socket that holds the listening socket (gunicorn `web` only).
    pub socket: Option<String>,
}

/// The units `init --systemd` installed, as its state file records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Units {
    pub scope: Scope,
    /// Where the unit files are.
    pub dir: PathBuf,
    pub target: String,
    pub processes: Vec<ProcessUnits>,
    /// The web socket's address, when there is one.
    pub listen: Option<SocketAddr>,
}

/// The units installed for the repository whose state dir this is.
pub fn installed(state_dir: &Path) -> Option<Units> {
    let bytes = std::fs::read(state_dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// systemd-escape's rules for a unit name's part (`unit_name_escape`):
/// ASCII letters, digits, `:` and `_` stay, and `.` unless first; `/` becomes
/// `-`; every other byte is `\xNN`. A `-` is escaped too, so that the name
/// and type parts of `pushdeploy-<name>-<type>` can never run into each other.
pub fn escape(text: &str) -> String {
    let mut out = String::new();
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i > 0 => out.push('.'),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The longest unit name systemd takes (UNIT_NAME_MAX less its NUL).
const UNIT_NAME_MAX: usize = 255;

/// The units' names, from the repository's directory name (`shop.git`:
/// `pushdeploy-shop`); the prefix keeps them from ever naming a unit of the
/// system's (a repository called `getty`).
pub fn prefix(repo: &Path) -> Result<String> {
    let name = repo
        .components()
        .next_back()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match name.strip_suffix(".git") {
        Some(stem) if !stem.is_empty() => stem.to_string(),
        _ => name,
    };
    if name.is_empty() {
        bail!(
            "{}: no directory name to name the units after",
            repo.display()
        );
    }
    Ok(format!("pushdeploy-{}", escape(&name)))
}

fn unit_name(prefix: &str, kind: &str, suffix: &str) -> Result<String> {
    let name = format!("{prefix}-{}.{suffix}", escape(kind));
    if name.len() > UNIT_NAME_MAX {
        return Err(usage(format!(
            "unit name {name} is longer than systemd's {UNIT_NAME_MAX} characters; give the repository a shorter name"
        )));
    }
    Ok(name)
}

/// Whether a web command gets a socket unit: gunicorn (`gunicorn ...` or
/// `python -m gunicorn ...`) takes its listening socket from systemd
/// (LISTEN_FDS), on the `bind` and `port` settings. Another web server would
/// try to bind the port the socket holds; a gunicorn given its own address
/// (`-b`, `--bind`) would be moved off it. Those bind themselves, as they
/// say, without a socket unit (as `serve` gives `--bind` only to a gunicorn
/// without one: an address in a config file gives way to both).
pub fn socket_activated(command: &str) -> bool {
    let words = shell_words::split(command).unwrap_or_default();
    let base = |w: &String| w.rsplit('/').next().unwrap_or(w).to_string();
    let options = match words.as_slice() {
        [first, rest @ ..] if base(first) == "gunicorn" => rest,
        [python, m, module, rest @ ..]
            if base(python).starts_with("python") && m == "-m" && module == "gunicorn" =>
        {
            rest
        }
        _ => return false,
    };
    let own_address = |w: &String| w == "--bind" || w.starts_with("--bind=") || w.starts_with("-b");
    !options.iter().any(own_address)
}

/// The site's owner, whom the app runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The names `User=` and `Group=` take (else the numbers).
    pub user: String,
    pub group: String,
}

impl Owner {
    /// The owner of `site`, named as /etc/passwd and /etc/group name them.
    pub fn of(site: &Path) -> Result<Owner> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs_err::metadata(site)?;
        let (uid, gid) = (meta.uid(), meta.gid());
        let name = |file: &str, id: u32| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|text| name_in(&text, id))
                .unwrap_or_else(|| id.to_string())
        };
        Ok(Owner {
            uid,
            gid,
            user: name("/etc/passwd", uid),
            group: name("/etc/group", gid),
        })
    }
}

/// The name with id `id` in a passwd or group file, when systemd takes it
/// as a name (letters, digits, `_` and `-`, not first a digit or `-`).
fn name_in(text: &str, id: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let found = fields.nth(1)?.parse::<u32>().ok()? == id;
        let valid = !name.is_empty()
            && name.len() <= 31
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        (found && valid).then(|| name.to_string())
    })
}

/// Everything the unit files say: plain data, rendered by `render`.
#[derive(Debug, Clone)]
pub struct Spec {
    pub scope: Scope,
    pub repo: PathBuf,
    pub site: PathBuf,
    pub state_dir: PathBuf,
    /// The pushdeploy binary ExecStart runs.
    pub exe: PathBuf,
    /// `User=`/`Group=` (system units only).
    pub owner: Option<Owner>,
    pub prefix: String,
    /// (type, command) of each process that runs as a service.
    pub processes: Vec<(String, String)>,
    pub listen: SocketAddr,
}

/// A unit file: its name and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub name: String,
    pub text: String,
}

/// A path as a unit file's path setting takes it (WorkingDirectory=):
/// systemd does not unquote these, it only expands `%`
/// specifiers (so `%` is written `%%`) and strips surrounding white space and
/// continues a line that ends in `\`. A path whose characters could be read
/// otherwise (a control character, a backslash, a quote, white space at
/// its end) is refused, never rewritten into another path.
fn path_value(what: &str, path: &Path) -> Result<String> {
    let text = path.to_str().ok_or_else(|| {
        usage(format!(
            "{what} {}: not UTF-8, which unit files must be",
            crate::error::shown(path.as_os_str().as_encoded_bytes())
        ))
    })?;
    let bad = text
        .chars()
        .find(|c| c.is_control() || matches!(c, '\\' | '"' | '\''));
    if !path.is_absolute() || bad.is_some() || text.ends_with(char::is_whitespace) {
        return Err(usage(format!(
            "{what} {}: a unit file cannot name this path (control characters, \\, quotes and white space at its end are refused); move it to a plainer path",
            crate::error::shown(text.as_bytes())
        )));
    }
    Ok(text.replace('%', "%%"))
}

/// One word of a command line as ExecStart= reads it: double-quoted, with
/// `\` and `"` escaped C-style, `%` written `%%` (specifiers) and `$` written
/// `$$` (variable expansion). Control characters are refused.
fn exec_word(what: &str, word: &str) -> Result<String> {
    if word.chars().any(|c| c.is_control()) {
        return Err(usage(format!(
            "{what} {}: a unit file cannot name it (a control character); move it to a plainer path",
            crate::error::shown(word.as_bytes())
        )));
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// Free text (Description=): `%` doubled, control characters shown escaped.
fn text_value(text: &str) -> String {
    crate::error::printable(text)
        .replace(['\n', '\t'], " ")
        .replace('%', "%%")
}

impl Spec {
    /// The units' names: the target, and each process's.
    pub fn names(&self) -> Result<(String, Vec<ProcessUnits>)> {
        let target = format!("{}.target", self.prefix);
        let processes = self
            .processes
            .iter()
            .map(|(kind, command)| {
                let socket = (kind == "web" && socket_activated(command))
                    .then(|| unit_name(&self.prefix, kind, "socket"))
                    .transpose()?;
                Ok(ProcessUnits {
                    kind: kind.clone(),
                    service: unit_name(&self.prefix, kind, "service")?,
                    socket,
                })
            })
            .collect::<Result<_>>()?;
        Ok((target, processes))
    }

    /// The unit files, in a fixed order (target, then each process's).
    pub fn render(&self) -> Result<Vec<UnitFile>> {
        let (target, processes) = self.names()?;
        // The repository's path is in comments and Description= too.
        path_value("repository", &self.repo)?;
        let repo = exec_word("repository", &self.repo.to_string_lossy())?;
        let mark = format!(
            "{MARK}{}\n# Run that command again rather than editing: it rewrites this file.\n",
            mark_of(&self.repo)
        );
        let site = path_value("site", &self.site)?;
        let about = text_value(&self.repo.to_string_lossy());
        let mut files = Vec::new();

        let mut wants: Vec<&str> = Vec::new();
        for p in &processes {
            wants.extend(p.socket.as_deref());
            wants.push(&p.service);
        }
        files.push(UnitFile {
            name: target.clone(),
            text: format!(
                "{mark}[Unit]\nDescription=The app deployed by pushdeploy from {about}\n\
                 Wants={}\n\n[Install]\nWantedBy={}\n",
                wants.join(" "),
                self.scope.boot_target()
            ),
        });

        for p in &processes {
            let mut unit = format!(
                "{mark}[Unit]\nDescription={} process of the app deployed from {about}\nPartOf={target}\n",
                text_value(&p.kind)
            );
            if self.scope == Scope::System {
                unit.push_str("After=network.target\n");
            }
            if let Some(socket) = &p.socket {
                unit.push_str(&format!("Requires={socket}\nAfter={socket}\n"));
                // Started by its socket (the first request after a first push,
                // which no one without root could start otherwise), the web
                // process brings the other processes up with it.
                for other in processes.iter().filter(|o| o.kind != p.kind) {
                    unit.push_str(&format!("Wants={}\n", other.service));
                }
            }
            // Restarted after a crash, every second, and never given up on:
            // an app that crashes while its database is down comes back with it.
            unit.push_str("StartLimitIntervalSec=0\n\n[Service]\n");
            // exec: started once pushdeploy serve exec()s; readiness is the
            // socket's business (connections wait in its backlog), and a
            // gunicorn older than 20 that sends no READY cannot hang a start.
            unit.push_str("Type=exec\n");
            let exe = exec_word("pushdeploy executable", &self.exe.to_string_lossy())?;
            let kind = exec_word("process type", &p.kind)?;
            unit.push_str(&format!(
                "ExecStart={exe} \"serve\" \"--repo\" {repo} \"--process\" {kind}\n"
            ));
            unit.push_str(&format!("WorkingDirectory={site}\n"));
            if let Some(owner) = &self.owner {
                unit.push_str(&format!("User={}\nGroup={}\n", owner.user, owner.group));
            }
            unit.push_str("Restart=always\nRestartSec=1s\n");
            // The master is sent TERM and stops its workers gracefully (they
            // finish their requests); whatever is left at the end is killed.
            unit.push_str("KillMode=mixed\n");
            unit.push_str(&format!(
                "SyslogIdentifier={}\n",
                p.service.trim_end_matches(".service")
            ));
            files.push(UnitFile {
                name: p.service.clone(),
                text: unit,
            });

            if let Some(socket) = &p.socket {
                files.push(UnitFile {
                    name: socket.clone(),
                    text: format!(
                        "{mark}[Unit]\nDescription=The {} socket of the app deployed from {about}\n\
                         PartOf={target}\n\n[Socket]\n\
                         # Held by systemd across restarts: connections wait, none is refused.\n\
                         ListenStream={}\nService={}\n",
                        text_value(&p.kind),
                        self.listen,
                        p.service
                    ),
                });
            }
        }
        Ok(files)
    }

    pub fn units(&self, dir: &Path) -> Result<Units> {
        let (target, processes) = self.names()?;
        let has_socket = processes.iter().any(|p| p.socket.is_some());
        Ok(Units {
            scope: self.scope,
            dir: dir.to_path_buf(),
            target,
            processes,
            listen: has_socket.then_some(self.listen),
        })
    }
}

/// The processes that run as services: every type but `release`. An app
/// not deployed yet gets a `web` one (every app App Service detects has it).
pub fn services_of(app: Option<&App>) -> Vec<(String, String)> {
    match app {
        Some(app) => app
            .processes
            .iter()
            .filter(|p| p.kind != RELEASE)
            .map(|p| (p.kind.clone(), p.command.clone()))
            .collect(),
        None => vec![("web".to_string(), "gunicorn".to_string())],
    }
}

/// What the deployment should say when the app no longer matches the
/// installed units (a process type gained or lost, the web command changed
/// to or from gunicorn, another port or address): units are written by
/// `init --systemd` (root's, for system units), so the user is told to run
/// it again. `None` when they match.
pub fn mismatch(units: &Units, app: &App, listen: SocketAddr, repo: &Path) -> Option<String> {
    let wanted: Vec<(String, bool)> = services_of(Some(app))
        .into_iter()
        .map(|(kind, command)| {
            let socket = kind == "web" && socket_activated(&command);
            (kind, socket)
        })
        .collect();
    let have: Vec<(String, bool)> = units
        .processes
        .iter()
        .map(|p| (p.kind.clone(), p.socket.is_some()))
        .collect();
    let same_listen = units.listen.is_none_or(|l| l == listen);
    if wanted == have && same_listen {
        return None;
    }
    let sudo = if units.scope == Scope::System {
        "sudo "
    } else {
        ""
    };
    let kinds = |list: &[(String, bool)]| {
        list.iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "the systemd units (processes {}{}) do not match the app (processes {}, on {listen}): run `{sudo}pushdeploy init {} --systemd` to write them again",
        kinds(&have),
        units
            .listen
            .map(|l| format!(", on {l}"))
            .unwrap_or_default(),
        kinds(&wanted),
        repo.display()
    ))
}

/// The web socket's address: the `bind` and `port` settings.
fn listen_of(values: &crate::settings::Values) -> Result<SocketAddr> {
    use crate::settings::{BIND, PORT};
    let address = values.shown(BIND).text;
    let port = values.shown(PORT).text;
    Ok(SocketAddr::new(
        address
            .parse()
            .with_context(|| format!("setting bind {address:?}"))?,
        port.parse()
            .with_context(|| format!("setting port {port:?}"))?,
    ))
}

/// What a deployment does to make a process run the new version under
/// systemd, when a signal of gunicorn's own is not the way (see the module's
/// comment): plain data, so that the dry run can show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replace {
    /// `systemctl [--user] restart <service>`: root, or the user's own units.
    Restart(Vec<OsString>),
    /// A system unit, and no root: TERM to its main pid (asked with this
    /// argv); `Restart=always` starts it anew.
    Terminate {
        service: String,
        main_pid: Vec<OsString>,
    },
}

/// The programs' names, looked up on PATH like a shell would.
const SYSTEMCTL: &str = "systemctl";
const JOURNALCTL: &str = "journalctl";

fn argv(program: &str, scope: Scope, rest: &[&str]) -> Vec<OsString> {
    let mut out = vec![OsString::from(program)];
    out.extend(scope.flag().map(OsString::from));
    out.extend(rest.iter().map(OsString::from));
    out
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether systemd runs this machine (sd_booted()'s test).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// One process's state, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStatus {
    pub kind: String,
    pub service: String,
    /// `active (running)`, `inactive (dead)`, ...
    pub state: String,
    pub pid: Option<u32>,
    /// Running, or waiting on its socket for the first connection.
    pub up: bool,
}

impl ProcessStatus {
    pub fn line(&self) -> String {
        let pid = self.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
        format!("{}: {}{pid} ({})", self.kind, self.state, self.service)
    }
}

impl Units {
    fn services(&self) -> Vec<&str> {
        self.processes.iter().map(|p| p.service.as_str()).collect()
    }

    fn find(&self, kind: &str) -> Result<&ProcessUnits> {
        self.processes
            .iter()
            .find(|p| p.kind == kind)
            .ok_or_else(|| {
                usage(format!(
                    "process {}: the systemd units run {}",
                    crate::error::shown(kind.as_bytes()),
                    self.processes
                        .iter()
                        .map(|p| p.kind.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The target starts every socket and service it wants.
    pub fn start_argv(&self) -> Vec<OsString> {
        argv(SYSTEMCTL, self.scope, &["start", &self.target])
    }

    /// The target stops everything that is `PartOf=` it, sockets included
    /// (a socket left listening would start its service again).
    pub fn stop_argv(&self) -> Vec<OsString> {
        argv(SYSTEMCTL, self.scope, &["stop", &self.target])
    }

    /// The services only: the sockets stay, and hold connections meanwhile.
    pub fn restart_argv(&self) -> Vec<OsString> {
        let mut rest = vec!["restart"];
        rest.extend(self.services());
        argv(SYSTEMCTL, self.scope, &rest)
    }

    pub fn status_argv(&self) -> Vec<OsString> {
        let mut rest = vec!["show", "--property=Id,ActiveState,SubState,MainPID"];
        rest.extend(self.services());
        rest.extend(self.processes.iter().filter_map(|p| p.socket.as_deref()));
        argv(SYSTEMCTL, self.scope, &rest)
    }

    /// `journalctl [--user] -u <unit>... [-f]`: one process's, or all.
    pub fn logs_argv(&self, process: Option<&str>, follow: bool) -> Result<Vec<OsString>> {
        let mut rest = vec!["--no-pager", "--output=short-iso"];
        let chosen = match process {
            Some(kind) => vec![self.find(kind)?],
            None => self.processes.iter().collect(),
        };
        for p in chosen {
            rest.push("-u");
            rest.push(&p.service);
            if let Some(socket) = &p.socket {
                rest.push("-u");
                rest.push(socket);
            }
        }
        if follow {
            rest.push("--follow");
        }
        Ok(argv(JOURNALCTL, self.scope, &rest))
    }

    /// How a deployment makes `process` run the new version (see `Replace`).
    pub fn replace_plan(&self, process: &str, root: bool) -> Result<Replace> {
        let p = self.find(process)?;
        Ok(if root || self.scope == Scope::User {
            Replace::Restart(argv(SYSTEMCTL, self.scope, &["restart", &p.service]))
        } else {
            Replace::Terminate {
                service: p.service.clone(),
                main_pid: argv(
                    SYSTEMCTL,
                    self.scope,
                    &["show", "--property=MainPID", "--value", &p.service],
                ),
            }
        })
    }

    /// Parses `systemctl show`'s blocks into each process's state.
    pub fn parse_status(&self, shown: &str) -> Vec<ProcessStatus> {
        let blocks: Vec<std::collections::BTreeMap<&str, &str>> = shown
            .split("\n\n")
            .map(|block| block.lines().filter_map(|l| l.split_once('=')).collect())
            .collect();
        let of = |unit: &str| blocks.iter().find(|b| b.get("Id") == Some(&unit));
        self.processes
            .iter()
            .map(|p| {
                let service = of(&p.service);
                let get = |key| {
                    service
                        .and_then(|b| b.get(key).copied())
                        .unwrap_or("unknown")
                };
                let active = get("ActiveState");
                let pid = get("MainPID").parse::<u32>().ok().filter(|&n| n > 0);
                let listening = p
                    .socket
                    .as_deref()
                    .and_then(of)
                    .is_some_and(|b| b.get("ActiveState") == Some(&"active"));
                let (state, up) = if active == "active" && pid.is_some() {
                    (format!("{active} ({})", get("SubState")), true)
                } else if listening && active != "failed" {
                    let on = self.listen.map(|l| format!(" on {l}")).unwrap_or_default();
                    (
                        format!("{active}, its socket listening{on}: starts on the first request"),
                        true,
                    )
                } else {
                    (format!("{active} ({})", get("SubState")), false)
                };
                ProcessStatus {
                    kind: p.kind.clone(),
                    service: p.service.clone(),
                    state,
                    pid,
                    up,
                }
            })
            .collect()
    }

    pub fn start_all(&self) -> Result<()> {
        systemctl(&self.start_argv(), self.scope)
    }

    pub fn stop_all(&self) -> Result<()> {
        systemctl(&self.stop_argv(), self.scope)
    }

    pub fn restart_all(&self) -> Result<()> {
        systemctl(&self.restart_argv(), self.scope)
    }

    /// Each process's state; `status` exits 0 only when every one is up.
    pub fn status(&self) -> Result<Vec<ProcessStatus>> {
        let shown = answer(&self.status_argv(), self.scope)?;
        Ok(self.parse_status(&shown))
    }

    /// Shows the logs (journald's) on the terminal; with `follow`, until
    /// interrupted.
    pub fn logs(&self, process: Option<&str>, follow: bool) -> Result<std::process::ExitStatus> {
        let argv = self.logs_argv(process, follow)?;
        crate::process::run_attached(&argv, &user_bus(self.scope))
    }

    /// Makes `process` run the deployed version (see `Replace`).
    pub fn replace(&self, process: &str) -> Result<()> {
        match self.replace_plan(process, is_root())? {
            Replace::Restart(argv) => systemctl(&argv, self.scope),
            Replace::Terminate { service, main_pid } => {
                let shown = answer(&main_pid, self.scope)?;
                let pid = shown.trim().parse::<i32>().unwrap_or(0);
                let Some(pid) = rustix::process::Pid::from_raw(pid) else {
                    bail!(
                        "{service} is not running, and only root can start a system unit: run `sudo systemctl start {service}`"
                    );
                };
                rustix::process::kill_process(pid, rustix::process::Signal::TERM).with_context(
                    || format!("stopping {service}'s main process {pid:?} so that systemd starts it anew"),
                )
            }
        }
    }
}

/// The user manager's runtime dir, for systemctl --user and journalctl
/// --user run from a hook where the login session did not set it.
fn user_bus(scope: Scope) -> Vec<(OsString, OsString)> {
    if scope != Scope::User || std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return Vec::new();
    }
    let dir = PathBuf::from(format!("/run/user/{}", rustix::process::geteuid().as_raw()));
    if dir.is_dir() {
        vec![("XDG_RUNTIME_DIR".into(), dir.into_os_string())]
    } else {
        Vec::new()
    }
}

fn expression(argv: &[OsString], scope: Scope) -> duct::Expression {
    user_bus(scope)
        .into_iter()
        .fold(duct::cmd(&argv[0], &argv[1..]), |e, (k, v)| e.env(k, v))
}

/// A command line as a shell would take it back (a unit name's `\x20` in
/// single quotes), to be shown and pasted, never run by a shell.
fn shown_argv(argv: &[OsString]) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,/:=@+".contains(c);
    argv.iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if !a.is_empty() && a.chars().all(plain) {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a systemctl call; a failure names it and says systemctl's reason.
fn systemctl(argv: &[OsString], scope: Scope) -> Result<()> {
    answer(argv, scope)
        .map(|_| ())
        .map_err(|e| match root_hint(argv, scope, is_root()) {
            Some(hint) => e.context(hint),
            None => e,
        })
}

/// What to say when a system unit's call fails without root: polkit
/// refuses a system unit's start, stop or restart to the unit's own user.
fn root_hint(argv: &[OsString], scope: Scope, root: bool) -> Option<String> {
    (scope == Scope::System && !root).then(|| {
        format!(
            "system units are root's to start, stop and restart: `sudo {}`",
            shown_argv(argv)
        )
    })
}

/// Runs a call and returns its output; a failure names it with its reason.
fn answer(argv: &[OsString], scope: Scope) -> Result<String> {
    let what = shown_argv(argv);
    let runner = Runner::new(Vec::new(), Limits::DEFAULT, None);
    let out = runner.capture(&what, expression(argv, scope))?;
    if !out.success {
        bail!("{what} failed: {}", crate::process::last_line(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where units go by default: root's system units, else the user's own.
pub fn default_dir(scope: Scope, env: &crate::settings::Environment) -> PathBuf {
    match scope {
        Scope::System => PathBuf::from("/etc/systemd/system"),
        Scope::User => env
            .get("XDG_CONFIG_HOME")
            .filter(|d| d.starts_with('/'))
            .map(PathBuf::from)
            .unwrap_or_else(|| env.home().join(".config"))
            .join("systemd/user"),
    }
}

/// How the mark names a repository (a comment: nothing is expanded in it).
fn mark_of(repo: &Path) -> String {
    crate::error::printable(&repo.to_string_lossy()).replace('\n', " ")
}

/// The repository whose mark a unit file has, if pushdeploy wrote it.
fn marked_for(text: &str) -> Option<&str> {
    text.lines().next()?.strip_prefix(MARK)
}

/// Writes the units (only the files that changed), removes the ones of
/// process types the app lost, records them in the state dir, and has
/// systemd load and start them when it runs this machine and the units are
/// in its own directory; else says what to run. Returns what it did, a line
/// each.
pub fn install(spec: &Spec, dir: &Path, deployed: bool) -> Result<Vec<String>> {
    let files = spec.render()?;
    let units = spec.units(dir)?;
    let repo_mark = mark_of(&spec.repo);
    // Every check first: nothing is written when a file is another's.
    for file in &files {
        let path = dir.join(&file.name);
        if let Ok(text) = std::fs::read_to_string(&path)
            && marked_for(&text) != Some(repo_mark.as_str())
        {
            return Err(usage(format!(
                "{}: exists and was not written by pushdeploy for {} ({}); remove or rename it, or rename the repository",
                path.display(),
                spec.repo.display(),
                match marked_for(&text) {
                    Some(other) => format!("it was for {other}"),
                    None => "it is not pushdeploy's".to_string(),
                }
            )));
        }
    }
    let mut done = Vec::new();
    for file in &files {
        let path = dir.join(&file.name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(file.text.as_str()) {
            crate::files::write_atomic(&path, file.text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            fs_err::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            done.push(format!("wrote {}", path.display()));
        }
    }
    // The units of process types the app no longer has (all of them, when
    // the units moved to another folder).
    let mut gone = Vec::new();
    if let Some(old) = installed(&spec.state_dir) {
        let moved = old.dir != dir;
        let names = old
            .processes
            .iter()
            .flat_map(|p| std::iter::once(&p.service).chain(&p.socket))
            .chain(moved.then_some(&old.target));
        for name in names {
            if !moved && files.iter().any(|f| &f.name == name) {
                continue;
            }
            let path = old.dir.join(name);
            let ours = std::fs::read_to_string(&path)
                .is_ok_and(|t| marked_for(&t) == Some(repo_mark.as_str()));
            if ours {
                gone.push(name.clone());
                crate::files::remove_file_if_there(&path)?;
                done.push(format!("removed {}", path.display()));
            }
        }
    }
    // Root writes into a user's state dir: what it makes there stays that
    // user's (the owner of the nearest folder that exists).
    let state_owner = {
        use std::os::unix::fs::MetadataExt;
        let meta = spec
            .state_dir
            .ancestors()
            .find_map(|d| std::fs::metadata(d).ok())
            .context("the state dir has no folder above it")?;
        (meta.uid(), meta.gid())
    };
    make_dir(&spec.state_dir, state_owner)?;
    let state = spec.state_dir.join(STATE_FILE);
    crate::files::write_atomic(&state, &serde_json::to_vec_pretty(&units)?)?;
    give(&state, state_owner)?;
    if spec.scope == Scope::System
        && let Some(owner) = &spec.owner
    {
        // The app writes its pid files there, as the site's owner (even
        // when the folder was made by a run as root).
        let run = spec.state_dir.join("run");
        make_dir(&run, (owner.uid, owner.gid))?;
        give(&run, (owner.uid, owner.gid))?;
    }

    if done.is_empty() {
        done.push("unit files unchanged".to_string());
    }
    let mut calls = activation(&units, &gone, deployed);
    let ours = dir == default_dir(spec.scope, &crate::settings::Environment::from_process());
    if !ours {
        // systemd reads only its own folders: `link` puts a link to each
        // file there (only root's or the user's manager may: never run here).
        let mut link = argv(SYSTEMCTL, spec.scope, &["link"]);
        link.extend(files.iter().map(|f| dir.join(&f.name).into_os_string()));
        calls.insert(0, link);
    }
    if booted() && ours {
        done.extend(run_calls(&calls, |call| systemctl(call, spec.scope)));
    } else {
        let why = if ours {
            "systemd does not run this machine"
        } else {
            "systemd does not read this folder"
        };
        done.push(format!("{why}; to load and start them, run:"));
        for call in &calls {
            done.push(format!("  {}", shown_argv(call)));
        }
    }
    Ok(done)
}

/// Runs the calls in order. The unit files are written whatever systemctl
/// says: a call that fails (no user manager running, say) is told, with the
/// calls left to run by hand, itself first.
fn run_calls(
    calls: &[Vec<OsString>],
    mut run: impl FnMut(&[OsString]) -> Result<()>,
) -> Vec<String> {
    let mut done = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        if let Err(e) = run(call) {
            done.push(format!("warning: {e:#}; run these yourself:"));
            done.extend(calls[i..].iter().map(|c| format!("  {}", shown_argv(c))));
            break;
        }
        done.push(format!("ran {}", shown_argv(call)));
    }
    done
}

/// Makes `dir` (and the folders above it that are missing) and, as root,
/// gives what it made to `owner`.
fn make_dir(dir: &Path, owner: (u32, u32)) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs_err::create_dir_all(dir)?;
    for made in missing.into_iter().rev() {
        give(made, owner)?;
    }
    Ok(())
}

/// As root, gives `path` to `owner` (a uid and gid); else nothing to do.
fn give(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    rustix::fs::chown(
        path,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )
    .with_context(|| format!("giving {} to uid {uid}", path.display()))
}

/// The systemctl calls that load the units and start them: the units of
/// lost process types stopped, then everything started (when an app is
/// deployed; before, only the sockets, whose first connection starts the
/// app once it is there) and the target enabled at boot.
pub fn activation(units: &Units, gone: &[String], deployed: bool) -> Vec<Vec<OsString>> {
    let mut calls = vec![argv(SYSTEMCTL, units.scope, &["daemon-reload"])];
    if !gone.is_empty() {
        let mut rest = vec!["stop"];
        rest.extend(gone.iter().map(String::as_str));
        calls.push(argv(SYSTEMCTL, units.scope, &rest));
    }
    if deployed {
        calls.push(argv(
            SYSTEMCTL,
            units.scope,
            &["enable", "--now", &units.target],
        ));
    } else {
        calls.push(argv(SYSTEMCTL, units.scope, &["enable", &units.target]));
        let sockets: Vec<&str> = units
            .processes
            .iter()
            .filter_map(|p| p.socket.as_deref())
            .collect();
        if !sockets.is_empty() {
            let mut rest = vec!["start"];
            rest.extend(sockets);
            calls.push(argv(SYSTEMCTL, units.scope, &rest));
        }
    }
    calls
}

/// `pushdeploy init --systemd [--unit-dir DIR]`, after the repository is
/// set up: the units for the app the site runs (the last successful
/// deployment's; else what the branch's head would run; else, nothing
/// pushed yet, a `web` process), for the site's owner.
pub fn init(
    repo_path: &Path,
    site: &Path,
    unit_dir: Option<&Path>,
    report: &mut Report,
) -> Result<()> {
    use crate::settings::{Environment, Settings, Sources};
    let another = another_users(repo_path);
    if another {
        // Root reads a user's repository (libgit2 refuses one of another
        // user's, as git does) only to write units that run as that user:
        // nothing of the repository runs here.
        // SAFETY: a global option, set before this process opens any
        // repository on another thread (it has none).
        unsafe { git2::opts::set_verify_owner_validation(false)? };
    }
    let repo = git2::Repository::open_bare(repo_path)
        .with_context(|| format!("opening {}", repo_path.display()))?;
    let env = Environment::from_process();
    let settings = Settings::resolve(repo.path(), &repo, Sources::new(env.clone(), &repo)?)?;
    let repo_path = repo.path().components().as_path().to_path_buf();
    let given = fs_err::canonicalize(site).unwrap_or_else(|_| site.to_path_buf());
    if another && settings.site != given {
        return Err(usage(format!(
            "{}: deploys to {}, not {}; its owner changes that with `pushdeploy init {} --site {} --move-site`, then run this again",
            repo_path.display(),
            settings.site.display(),
            site.display(),
            repo_path.display(),
            site.display()
        )));
    }
    let scope = if is_root() {
        Scope::System
    } else {
        Scope::User
    };

    let owner = Owner::of(&settings.site)?;
    if owner.uid == 0 {
        return Err(usage(format!(
            "site {}: owned by root, and the app never runs as root; give it to the user the app runs as (`chown -R USER {}`), then run this again",
            settings.site.display(),
            settings.site.display()
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if scope == Scope::User && owner.uid != me {
        return Err(usage(format!(
            "site {}: owned by {} (uid {}), but user units run as you (uid {me}); run this as {}, or as root for system units",
            settings.site.display(),
            owner.user,
            owner.uid,
            owner.user
        )));
    }

    // The commit whose app the units run, and its settings (its port).
    let records = crate::record::Records::new(&settings.state_dir).list()?;
    let last_good = records
        .iter()
        .find(|r| r.status == crate::record::Status::Success);
    let rev = match last_good {
        Some(record) => Some(record.id.to_string()),
        None => repo
            .find_reference(&format!("refs/heads/{}", settings.branch))
            .is_ok()
            .then(|| format!("refs/heads/{}", settings.branch)),
    };
    let (app, values) = match &rev {
        Some(rev) => {
            let commit = crate::commit::Commit::open(&repo, rev)?;
            let (values, commit) = crate::plan::prepare(&settings, commit)?;
            let app = match last_good.and_then(|r| r.app.clone()) {
                Some(app) => app,
                None => crate::app::decide(&values, &commit)?,
            };
            (Some(app), values)
        }
        None => (
            None,
            settings.for_commit(&crate::deployment_file::DeploymentFile::default())?,
        ),
    };
    let processes = services_of(app.as_ref());
    if processes.is_empty() {
        let why = app.map(|a| a.reason).unwrap_or_default();
        return Err(usage(format!(
            "the app runs no process ({why}): no units to write"
        )));
    }
    let listen = listen_of(&values)?;

    let spec = Spec {
        scope,
        repo: repo_path.clone(),
        site: settings.site.clone(),
        state_dir: settings.state_dir.clone(),
        exe: std::env::current_exe().context("finding the pushdeploy executable")?,
        owner: (scope == Scope::System).then(|| owner.clone()),
        prefix: prefix(&repo_path)?,
        processes,
        listen,
    };
    let dir = match unit_dir {
        Some(dir) => std::path::absolute(dir)?,
        None => default_dir(scope, &env),
    };
    fs_err::create_dir_all(&dir)?;
    let done = install(&spec, &dir, last_good.is_some())?;
    let (kind, who) = match scope {
        Scope::System => ("system", format!("as {}", owner.user)),
        Scope::User => ("user", "as you".to_string()),
    };
    report.header(format!(
        "systemd {kind} units in {}: {}, {who}",
        dir.display(),
        spec.units(&dir)?
            .processes
            .iter()
            .map(|p| match &p.socket {
                Some(socket) => format!("{} ({} on {listen})", p.service, socket),
                None => p.service.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for line in done {
        report.detail(line);
    }
    // Without it, a push does not reload what the units run.
    if !repo.config()?.get_bool("deploy.run").unwrap_or(false) {
        report.detail(format!(
            "warning: deploy.run is not on, so pushes do not reload the app; as the repository's owner, run `{}`",
            shown_argv(&[
                "git".into(),
                "--git-dir".into(),
                repo_path.clone().into_os_string(),
                "config".into(),
                "deploy.run".into(),
                "true".into()
            ])
        ));
    }
    if scope == Scope::User {
        report.detail(format!(
            "user units stop when your last session ends, unless lingering is on: `loginctl enable-linger {}`",
            owner.user
        ));
    }
    Ok(())
}

/// Whether root was asked for units of a repository another user owns:
/// then `init` leaves the repository as its owner set it up (the hook and
/// config root would write there would be root's, which the owner's pushes
/// could not change) and only writes the units.
pub fn another_users(repo: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    is_root() && std::fs::metadata(repo).is_ok_and(|m| m.uid() != 0)
}

/// Refuses, before `init` makes or changes anything, a repository or site
/// path that a unit file cannot name (see `path_value`).
pub fn check_paths(repo: &Path, site: &Path) -> Result<()> {
    path_value("repository", &std::path::absolute(repo)?)?;
    path_value("site", &std::path::absolute(site)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Process;

    fn spec(scope: Scope, repo: &str, processes: &[(&str, &str)]) -> Spec {
        let repo = PathBuf::from(repo);
        Spec {
            scope,
            prefix: prefix(&repo).unwrap(),
            state_dir: repo.join("pushdeploy"),
            repo,
            site: PathBuf::from("/srv/www/shop"),
            exe: PathBuf::from("/usr/local/bin/pushdeploy"),
            owner: (scope == Scope::System).then(|| Owner {
                uid: 1000,
                gid: 1000,
                user: "alice".into(),
                group: "alice".into(),
            }),
            processes: processes
                .iter()
                .map(|(k, c)| (k.to_string(), c.to_string()))
                .collect(),
            listen: "127.0.0.1:8000".parse().unwrap(),
        }
    }

    fn file<'a>(files: &'a [UnitFile], name: &str) -> &'a str {
        &files
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no {name} in {files:#?}"))
            .text
    }

    fn strings(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// systemd-escape's rules, odd characters among them.
    #[test]
    fn names_are_escaped_as_systemd_escape_does() {
        for (text, escaped) in [
            ("shop", "shop"),
            ("my-shop", r"my\x2dshop"),
            ("a b", r"a\x20b"),
            (".hidden", r"\x2ehidden"),
            ("v1.2_x:y", "v1.2_x:y"),
            ("$(rm -rf)", r"\x24\x28rm\x20\x2drf\x29"),
            ("é", r"\xc3\xa9"),
            ("a\nb", r"a\x0ab"),
            ("%i", r"\x25i"),
        ] {
            assert_eq!(escape(text), escaped, "{text:?}");
        }
        assert_eq!(
            prefix(Path::new("/srv/git/shop.git")).unwrap(),
            "pushdeploy-shop"
        );
        assert_eq!(
            prefix(Path::new("/srv/git/my-shop.git/")).unwrap(),
            r"pushdeploy-my\x2dshop"
        );
        assert_eq!(
            prefix(Path::new("/srv/.git")).unwrap(),
            r"pushdeploy-\x2egit"
        );
        // A name systemd cannot take is refused, not cut.
        let long = format!("/srv/{}.git", "a".repeat(250));
        let s = spec(Scope::System, &long, &[("web", "gunicorn app:app")]);
        let e = s.render().unwrap_err().to_string();
        assert!(e.contains("longer than systemd's 255"), "{e}");
    }

    /// The real systemd-escape agrees, where it is installed.
    #[test]
    fn escape_agrees_with_systemd_escape() {
        let Ok(program) = which::which("systemd-escape") else {
            eprintln!("skipped: systemd-escape is not installed");
            return;
        };
        let runner = Runner::new(Vec::new(), Limits::DEFAULT, None);
        for text in [
            "shop", "my-shop", "a b", ".hidden", "$(x)", "é%\\\"'", "a.b.c",
        ] {
            let out = runner
                .capture("systemd-escape", duct::cmd(&program, ["--", text]))
                .unwrap();
            assert!(out.success, "{text:?}");
            assert_eq!(
                escape(text),
                String::from_utf8_lossy(&out.stdout).trim(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn system_units_for_a_gunicorn_web_and_a_worker() {
        let s = spec(
            Scope::System,
            "/srv/git/shop.git",
            &[("web", "gunicorn app:app"), ("worker", "python worker.py")],
        );
        let files = s.render().unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pushdeploy-shop.target",
                "pushdeploy-shop-web.service",
                "pushdeploy-shop-web.socket",
                "pushdeploy-shop-worker.service"
            ]
        );
        let target = file(&files, "pushdeploy-shop.target");
        assert!(target.contains("\nWants=pushdeploy-shop-web.socket pushdeploy-shop-web.service pushdeploy-shop-worker.service\n"), "{target}");
        assert!(
            target.contains("\nWantedBy=multi-user.target\n"),
            "{target}"
        );
        let web = file(&files, "pushdeploy-shop-web.service");
        for line in [
            "ExecStart=\"/usr/local/bin/pushdeploy\" \"serve\" \"--repo\" \"/srv/git/shop.git\" \"--process\" \"web\"",
            "WorkingDirectory=/srv/www/shop",
            "User=alice",
            "Group=alice",
            "Restart=always",
            "KillMode=mixed",
            "PartOf=pushdeploy-shop.target",
            "Requires=pushdeploy-shop-web.socket",
            "Wants=pushdeploy-shop-worker.service",
            "StartLimitIntervalSec=0",
        ] {
            assert!(web.lines().any(|l| l == line), "{line} not in\n{web}");
        }
        let socket = file(&files, "pushdeploy-shop-web.socket");
        assert!(
            socket.contains("\nListenStream=127.0.0.1:8000\n"),
            "{socket}"
        );
        let worker = file(&files, "pushdeploy-shop-worker.service");
        assert!(!worker.contains(".socket"), "{worker}");
        assert!(worker.contains("\"--process\" \"worker\"\n"), "{worker}");
    }

    #[test]
    fn user_units_run_as_the_user_and_start_with_the_login() {
        let s = spec(
            Scope::User,
            "/home/a/shop.git",
            &[("web", "gunicorn app:app")],
        );
        let files = s.render().unwrap();
        let web = file(&files, "pushdeploy-shop-web.service");
        assert!(!web.contains("User=") && !web.contains("Group="), "{web}");
        assert!(!web.contains("network.target"), "{web}");
        let target = file(&files, "pushdeploy-shop.target");
        assert!(target.contains("\nWantedBy=default.target\n"), "{target}");
    }

    /// Another web server would bind the port the socket holds, a gunicorn
    /// with its own address would be moved off it: no socket.
    #[test]
    fn only_gunicorn_on_the_settings_address_gets_the_socket() {
        for (command, socket) in [
            ("gunicorn app:app", true),
            ("/srv/env/bin/gunicorn -w 3 app:app", true),
            ("python -m gunicorn app:app", true),
            ("python3.12 -m gunicorn app:app", true),
            ("uvicorn main:app --port $PORT", false),
            ("python app.py", false),
            ("gunicornish", false),
            // Its own address.
            ("gunicorn -b 0.0.0.0:5000 app:app", false),
            ("gunicorn -b0.0.0.0:5000 app:app", false),
            ("gunicorn --bind=unix:/run/a.sock app:app", false),
            ("gunicorn --bind 0.0.0.0:5000 app:app", false),
            // A config file's address gives way to the settings', as to --bind.
            ("gunicorn -c gunicorn.conf.py app:app", true),
            ("gunicorn --workers 3 --backlog 64 app:app", true),
        ] {
            assert_eq!(socket_activated(command), socket, "{command}");
            let files = spec(Scope::System, "/srv/shop.git", &[("web", command)])
                .render()
                .unwrap();
            assert_eq!(
                files.iter().any(|f| f.name.ends_with(".socket")),
                socket,
                "{command}"
            );
        }
        // `release` runs once per deployment: never a service.
        let app = App {
            processes: vec![
                Process {
                    kind: "web".into(),
                    command: "gunicorn a:app".into(),
                },
                Process {
                    kind: "release".into(),
                    command: "python migrate.py".into(),
                },
            ],
            reason: "Procfile".into(),
        };
        assert_eq!(
            services_of(Some(&app)),
            [("web".to_string(), "gunicorn a:app".to_string())]
        );
    }

    /// Paths are quoted per systemd.syntax (ExecStart=) or refused (path
    /// settings), never read as something else.
    #[test]
    fn hostile_paths_are_quoted_or_refused() {
        let s = spec(
            Scope::System,
            "/srv/my shop %n $HOME \"q\" \\x.git",
            &[("web", "gunicorn a:app")],
        );
        // Quotes and backslashes cannot be written in WorkingDirectory=
        // (nor left in a comment): refused.
        let e = s.render().unwrap_err().to_string();
        assert!(e.starts_with("repository \"/srv/my shop %n $HOME"), "{e}");
        // In ExecStart= each is escaped.
        assert_eq!(
            exec_word("x", "/srv/my shop %n $HOME \"q\" \\x").unwrap(),
            r#""/srv/my shop %%n $$HOME \"q\" \\x""#
        );
        let s = spec(
            Scope::System,
            "/srv/my shop %n $HOME.git",
            &[("web", "gunicorn a:app")],
        );
        let web = file(
            &s.render().unwrap(),
            r"pushdeploy-my\x20shop\x20\x25n\x20\x24HOME-web.service",
        )
        .to_string();
        assert!(
            web.contains("\"--repo\" \"/srv/my shop %%n $$HOME.git\""),
            "{web}"
        );
        let mut s = s;
        s.site = PathBuf::from("/srv/www/50% off");
        let web = file(
            &s.render().unwrap(),
            r"pushdeploy-my\x20shop\x20\x25n\x20\x24HOME-web.service",
        )
        .to_string();
        assert!(
            web.contains("\nWorkingDirectory=/srv/www/50%% off\n"),
            "{web}"
        );
        for bad in [
            "/srv/a\nExecStartPre=/bin/sh",
            "/srv/a\\",
            "/srv/a ",
            "/srv/'a'",
            "relative",
        ] {
            let e = path_value("site", Path::new(bad)).unwrap_err();
            assert!(e.to_string().starts_with("site \""), "{bad:?}: {e}");
            assert_eq!(crate::error::exit_status(&e), 2);
        }
        assert!(exec_word("repository", "/srv/a\nb").is_err());
        // Unit files are UTF-8: a path that is not cannot be named.
        use std::os::unix::ffi::OsStrExt;
        let latin1 = Path::new(std::ffi::OsStr::from_bytes(b"/srv/caf\xe9"));
        let e = path_value("site", latin1).unwrap_err().to_string();
        assert_eq!(
            e,
            "site \"/srv/caf\\xe9\": not UTF-8, which unit files must be"
        );
        assert_eq!(
            path_value("site", Path::new("/srv/50% off")).unwrap(),
            "/srv/50%% off"
        );
    }

    /// The rendered units pass `systemd-analyze verify` with nothing to say.
    #[test]
    fn rendered_units_pass_systemd_analyze_verify() {
        let Ok(analyze) = which::which("systemd-analyze") else {
            eprintln!("skipped: systemd-analyze is not installed");
            return;
        };
        for scope in [Scope::System, Scope::User] {
            let dir = tempfile::tempdir().unwrap();
            let runtime = tempfile::tempdir().unwrap();
            let exe = dir.path().join("pushdeploy");
            std::fs::write(&exe, "").unwrap();
            std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let mut s = spec(
                scope,
                "/srv/my shop %n $HOME-é.git",
                &[
                    ("web", "gunicorn app:app"),
                    ("worker", "python w.py"),
                    ("clock-2", "python c.py"),
                ],
            );
            s.exe = exe;
            let mut paths = Vec::new();
            for f in s.render().unwrap() {
                let path = dir.path().join(&f.name);
                std::fs::write(&path, &f.text).unwrap();
                paths.push(path);
            }
            let mut args: Vec<OsString> = Vec::new();
            args.extend(scope.flag().map(OsString::from));
            args.push("verify".into());
            args.push("--man=no".into());
            args.extend(paths.iter().map(|p| p.clone().into_os_string()));
            let runner = Runner::new(Vec::new(), Limits::DEFAULT, None);
            let out = runner
                .capture(
                    "systemd-analyze verify",
                    duct::cmd(&analyze, &args).env("XDG_RUNTIME_DIR", runtime.path()),
                )
                .unwrap();
            let said = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(out.success && said.trim().is_empty(), "{scope:?}: {said}");
        }
    }

    fn units(scope: Scope) -> Units {
        spec(
            scope,
            "/srv/shop.git",
            &[("web", "gunicorn a:app"), ("worker", "python w.py")],
        )
        .units(Path::new("/etc/systemd/system"))
        .unwrap()
    }

    #[test]
    fn commands_as_argv() {
        let u = units(Scope::System);
        assert_eq!(
            strings(&u.start_argv()),
            ["systemctl", "start", "pushdeploy-shop.target"]
        );
        assert_eq!(
            strings(&u.stop_argv()),
            ["systemctl", "stop", "pushdeploy-shop.target"]
        );
        assert_eq!(
            strings(&u.restart_argv()),
            [
                "systemctl",
                "restart",
                "pushdeploy-shop-web.service",
                "pushdeploy-shop-worker.service"
            ]
        );
        assert_eq!(
            strings(&u.logs_argv(Some("worker"), true).unwrap()),
            [
                "journalctl",
                "--no-pager",
                "--output=short-iso",
                "-u",
                "pushdeploy-shop-worker.service",
                "--follow"
            ]
        );
        assert_eq!(
            strings(&u.logs_argv(None, false).unwrap()),
            [
                "journalctl",
                "--no-pager",
                "--output=short-iso",
                "-u",
                "pushdeploy-shop-web.service",
                "-u",
                "pushdeploy-shop-web.socket",
                "-u",
                "pushdeploy-shop-worker.service"
            ]
        );
        let e = u.logs_argv(Some("w$b"), false).unwrap_err().to_string();
        assert_eq!(e, "process \"w$b\": the systemd units run web, worker");
        let user = units(Scope::User);
        assert_eq!(
            strings(&user.start_argv()),
            ["systemctl", "--user", "start", "pushdeploy-shop.target"]
        );
        assert_eq!(
            strings(&user.logs_argv(None, false).unwrap())[..2],
            ["journalctl", "--user"]
        );
    }

    /// Root, or the user's own units: a restart. A system unit's owner: a TERM
    /// to its main pid, and Restart=always.
    #[test]
    fn a_replacement_without_root_terminates_the_main_pid() {
        let u = units(Scope::System);
        assert_eq!(
            u.replace_plan("worker", true).unwrap(),
            Replace::Restart(argv(
                SYSTEMCTL,
                Scope::System,
                &["restart", "pushdeploy-shop-worker.service"]
            ))
        );
        match u.replace_plan("worker", false).unwrap() {
            Replace::Terminate { service, main_pid } => {
                assert_eq!(service, "pushdeploy-shop-worker.service");
                assert_eq!(
                    strings(&main_pid),
                    [
                        "systemctl",
                        "show",
                        "--property=MainPID",
                        "--value",
                        "pushdeploy-shop-worker.service"
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        // A refused call says how to make it as root.
        let stop = u.stop_argv();
        assert_eq!(
            root_hint(&stop, Scope::System, false).as_deref(),
            Some(
                "system units are root's to start, stop and restart: `sudo systemctl stop pushdeploy-shop.target`"
            )
        );
        assert_eq!(root_hint(&stop, Scope::System, true), None);
        assert_eq!(root_hint(&stop, Scope::User, false), None);
        assert!(matches!(
            units(Scope::User).replace_plan("web", false).unwrap(),
            Replace::Restart(_)
        ));
    }

    /// The calls run through the runner: where systemd does not run the
    /// machine, the real systemctl fails, and the error names the call and
    /// says systemctl's reason.
    #[test]
    fn a_failed_call_names_it_and_its_reason() {
        if which::which("systemctl").is_err() || booted() {
            eprintln!("skipped: needs systemctl on a machine systemd does not run");
            return;
        }
        let e = format!("{:#}", units(Scope::System).start_all().unwrap_err());
        assert!(
            e.contains("systemctl start pushdeploy-shop.target failed: ") && e.len() > 48,
            "{e}"
        );
        let e = format!("{:#}", units(Scope::System).status().unwrap_err());
        assert!(e.contains("systemctl show --property="), "{e}");
    }

    #[test]
    fn status_from_systemctl_show() {
        let u = units(Scope::System);
        let shown = "MainPID=0\nId=pushdeploy-shop-web.service\nActiveState=inactive\nSubState=dead\n\n\
                     MainPID=4321\nId=pushdeploy-shop-worker.service\nActiveState=active\nSubState=running\n\n\
                     MainPID=0\nId=pushdeploy-shop-web.socket\nActiveState=active\nSubState=listening\n";
        let status = u.parse_status(shown);
        assert!(status.iter().all(|s| s.up), "{status:?}");
        assert_eq!(
            status[1].line(),
            "worker: active (running), pid 4321 (pushdeploy-shop-worker.service)"
        );
        assert!(
            status[0]
                .line()
                .contains("its socket listening on 127.0.0.1:8000"),
            "{}",
            status[0].line()
        );
        // The worker crashed for good: not up.
        let shown = shown.replace("MainPID=4321", "MainPID=0").replace(
            "ActiveState=active\nSubState=running",
            "ActiveState=failed\nSubState=failed",
        );
        let status = u.parse_status(&shown);
        assert!(!status[1].up, "{status:?}");
        assert_eq!(status[1].pid, None);
    }

    #[test]
    fn units_follow_the_app_or_say_how() {
        let u = units(Scope::System);
        let app = |kinds: &[(&str, &str)]| App {
            processes: kinds
                .iter()
                .map(|(k, c)| Process {
                    kind: k.to_string(),
                    command: c.to_string(),
                })
                .collect(),
            reason: "Procfile".into(),
        };
        let listen: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let repo = Path::new("/srv/shop.git");
        let same = app(&[
            ("web", "gunicorn b:app"),
            ("worker", "python x.py"),
            ("release", "m"),
        ]);
        assert_eq!(mismatch(&u, &same, listen, repo), None);
        let lost = app(&[("web", "gunicorn b:app")]);
        let said = mismatch(&u, &lost, listen, repo).unwrap();
        assert!(
            said.contains("run `sudo pushdeploy init /srv/shop.git --systemd`"),
            "{said}"
        );
        let other_port = mismatch(&u, &same, "127.0.0.1:9000".parse().unwrap(), repo).unwrap();
        assert!(other_port.contains("on 127.0.0.1:9000"), "{other_port}");
        let not_gunicorn = app(&[("web", "uvicorn main:app"), ("worker", "python x.py")]);
        assert!(mismatch(&u, &not_gunicorn, listen, repo).is_some());
    }

    #[test]
    fn owner_names_from_passwd() {
        let passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n1bad:x:1001:1001::/:/bin/sh\n";
        assert_eq!(name_in(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(name_in(passwd, 1001), None);
        assert_eq!(name_in(passwd, 4242), None);
    }

    #[test]
    fn a_failed_activation_says_what_is_left_to_run() {
        let calls = activation(&units(Scope::User), &[], true);
        let mut n = 0;
        let said = run_calls(&calls, |_| {
            n += 1;
            if n == 2 {
                bail!("Failed to connect to bus")
            } else {
                Ok(())
            }
        });
        assert_eq!(
            said,
            [
                "ran systemctl --user daemon-reload",
                "warning: Failed to connect to bus; run these yourself:",
                "  systemctl --user enable --now pushdeploy-shop.target"
            ]
        );
    }

    #[test]
    fn activation_before_and_after_a_deployment() {
        let u = units(Scope::System);
        let shown =
            |calls: Vec<Vec<OsString>>| calls.iter().map(|c| shown_argv(c)).collect::<Vec<_>>();
        assert_eq!(
            shown(activation(&u, &[], true)),
            [
                "systemctl daemon-reload",
                "systemctl enable --now pushdeploy-shop.target"
            ]
        );
        assert_eq!(
            shown(activation(
                &u,
                &["pushdeploy-shop-clock.service".into()],
                false
            )),
            [
                "systemctl daemon-reload",
                "systemctl stop pushdeploy-shop-clock.service",
                "systemctl enable pushdeploy-shop.target",
                "systemctl start pushdeploy-shop-web.socket"
            ]
        );
        assert_eq!(
            shown_argv(&[r"pushdeploy-a\x20b.target".into()]),
            r"'pushdeploy-a\x20b.target'"
        );
    }
}
