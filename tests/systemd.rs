//! `pushdeploy init --systemd` (issue 16): units that run each process type
//! of the deployed app. systemd is not pid 1 where these tests run, so they
//! check what is written (with `systemd-analyze verify`, skipped with its
//! reason where it is missing) and what the user is told to run; nothing
//! here starts a unit.

use std::path::{Path, PathBuf};

use crate::util::{Run, Server, TestCommand};

/// Who owns the site when the tests run as root: the app never runs as root.
const OWNER: u32 = 4242;

fn root() -> bool {
    rustix::process::geteuid().is_root()
}

/// As root, gives the site to a user (system units run as it); as anyone
/// else the site is already the user's own (user units).
fn give_site(site: &Path) {
    if root() {
        std::os::unix::fs::chown(site, Some(OWNER), Some(OWNER)).unwrap();
    }
}

fn init_systemd(s: &Server, repo: &Path, site: &Path, units: &Path) -> Run {
    s.pushdeploy(&[
        "init",
        repo.to_str().unwrap(),
        "--site",
        site.to_str().unwrap(),
        "--systemd",
        "--unit-dir",
        units.to_str().unwrap(),
    ])
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `systemd-analyze verify` of every unit file in `dir`: it must pass and
/// say nothing (it exits 0 after warnings such as an unknown key).
fn assert_verified(dir: &Path) {
    verify(dir, !root());
}

fn verify(dir: &Path, user: bool) {
    let Ok(analyze) = which::which("systemd-analyze") else {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    let runtime = tempfile::tempdir().unwrap();
    let mut cmd = TestCommand::new(&analyze, dir);
    if user {
        cmd.args(["--user"]);
    }
    cmd.args(["verify", "--man=no"]);
    let files: Vec<PathBuf> = names(dir).iter().map(|n| dir.join(n)).collect();
    cmd.args(&files);
    cmd.envs(&[("XDG_RUNTIME_DIR", runtime.path().to_str().unwrap())]);
    let run = cmd.run();
    run.assert_ok();
    assert!(
        run.all().trim().is_empty(),
        "systemd-analyze verify said:\n{run}"
    );
}

const PROCFILE: &str = "web: gunicorn app:app\nworker: python worker.py\nrelease: python -c pass\n";

/// A pushed app with a web and a worker process (and a release phase, which
/// is no service): a unit each, the web one socket-activated, a target that
/// boot starts; they verify; a second run changes nothing.
#[test]
fn init_systemd_writes_a_unit_for_each_process_type() {
    let s = Server::new();
    s.app("flask-app").write("Procfile", PROCFILE);
    s.commit("procfile");
    s.push(&[]).assert_ok().assert_has("successful");
    give_site(&s.site);
    let units = s.root.join("units");
    // A folder for the pid files that a run as root made.
    std::fs::create_dir_all(s.repo.join("pushdeploy/run")).unwrap();

    let run = init_systemd(&s, &s.repo, &s.site, &units);
    run.assert_ok()
        .assert_has("pushdeploy-app-web.service (pushdeploy-app-web.socket on 127.0.0.1:8000)")
        .assert_has(&format!(
            "systemctl link {}/pushdeploy-app.target",
            units.display()
        ))
        .assert_has("systemctl daemon-reload")
        .assert_has("systemctl enable --now pushdeploy-app.target");
    assert_eq!(
        names(&units),
        [
            "pushdeploy-app-web.service",
            "pushdeploy-app-web.socket",
            "pushdeploy-app-worker.service",
            "pushdeploy-app.target"
        ]
    );
    let web = read(&units, "pushdeploy-app-web.service");
    let repo = s.repo.to_str().unwrap();
    assert!(
        web.contains(&format!(
            "\nExecStart=\"{}\" \"serve\" \"--repo\" \"{repo}\" \"--process\" \"web\"\n",
            crate::util::BIN
        )),
        "{web}"
    );
    assert!(
        web.contains(&format!("\nWorkingDirectory={}\n", s.site.display())),
        "{web}"
    );
    if root() {
        assert!(
            web.contains(&format!("\nUser={OWNER}\nGroup={OWNER}\n")),
            "{web}"
        );
    } else {
        assert!(!web.contains("User="), "{web}");
    }
    if root() {
        // The app, as the site's owner, writes its pid files there.
        use std::os::unix::fs::MetadataExt;
        let run = std::fs::metadata(s.repo.join("pushdeploy/run")).unwrap();
        assert_eq!((run.uid(), run.gid()), (OWNER, OWNER));
    }
    let worker = read(&units, "pushdeploy-app-worker.service");
    assert!(worker.contains("\"--process\" \"worker\"\n"), "{worker}");
    assert_verified(&units);
    // The state file says what is installed, for the commands.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.repo.join("pushdeploy/systemd.json")).unwrap())
            .unwrap();
    assert_eq!(state["target"], "pushdeploy-app.target");
    assert_eq!(
        state["processes"][1]["service"],
        "pushdeploy-app-worker.service"
    );
    assert_eq!(state["listen"], "127.0.0.1:8000");

    let before = crate::util::snapshot(&units);
    init_systemd(&s, &s.repo, &s.site, &units)
        .assert_ok()
        .assert_has("unchanged");
    assert_eq!(crate::util::snapshot(&units), before);
}

/// The Procfile loses `worker` and gains `clock`, the port changes: run
/// again, the units follow (the lost one removed and stopped).
#[test]
fn init_systemd_again_follows_the_app() {
    let s = Server::new();
    s.app("flask-app").write("Procfile", PROCFILE);
    s.commit("procfile");
    s.push(&[]).assert_ok();
    give_site(&s.site);
    let units = s.root.join("units");
    init_systemd(&s, &s.repo, &s.site, &units).assert_ok();

    s.write(
        "Procfile",
        "web: gunicorn app:app\nclock: python clock.py\n",
    )
    .write(".deployment", "[config]\nWEBSITES_PORT = 8123\n");
    s.commit("clock instead of worker");
    s.push(&[]).assert_ok().assert_has("successful");
    init_systemd(&s, &s.repo, &s.site, &units)
        .assert_ok()
        .assert_has("removed ")
        .assert_has("systemctl stop pushdeploy-app-worker.service");
    assert_eq!(
        names(&units),
        [
            "pushdeploy-app-clock.service",
            "pushdeploy-app-web.service",
            "pushdeploy-app-web.socket",
            "pushdeploy-app.target"
        ]
    );
    assert!(read(&units, "pushdeploy-app-web.socket").contains("\nListenStream=127.0.0.1:8123\n"));
    assert_verified(&units);
}

/// Before the first push: a web process, only enabled and its socket
/// started (its first connection starts it once something is deployed).
#[test]
fn init_systemd_before_any_push() {
    let s = Server::new();
    give_site(&s.site);
    let units = s.root.join("units");
    init_systemd(&s, &s.repo, &s.site, &units)
        .assert_ok()
        .assert_has("systemctl enable pushdeploy-app.target")
        .assert_has("systemctl start pushdeploy-app-web.socket");
    assert_eq!(
        names(&units),
        [
            "pushdeploy-app-web.service",
            "pushdeploy-app-web.socket",
            "pushdeploy-app.target"
        ]
    );
    assert_verified(&units);
}

/// The app never runs as root: a site root owns is refused, nothing written.
#[test]
fn a_site_owned_by_root_is_refused() {
    if !root() {
        eprintln!("skipped: only root writes system units (these tests run as another user)");
        return;
    }
    let s = Server::new();
    let units = s.root.join("units");
    init_systemd(&s, &s.repo, &s.site, &units)
        .assert_status(2)
        .assert_has(&format!(
            "site {}: owned by root, and the app never runs as root",
            s.site.display()
        ));
    assert!(names(&units).is_empty());
    assert!(!s.repo.join("pushdeploy/systemd.json").exists());
}

/// Odd characters in the repository's name and path: the unit names are
/// escaped as systemd-escape does, ExecStart= quotes the path (`%` and `$`
/// doubled), and the units verify. A path a unit file cannot say (a
/// newline, a quote) is refused before anything is made.
#[test]
fn hostile_repository_paths_are_escaped_or_refused() {
    let s = Server::new();
    let units = s.root.join("units");
    let repo = s.root.join("my shop %n $HOME-é.git");
    let site = s.root.join("site 2");
    s.init_at(&repo, &site).assert_ok();
    give_site(&site);
    init_systemd(&s, &repo, &site, &units).assert_ok();
    let service = r"pushdeploy-my\x20shop\x20\x25n\x20\x24HOME\x2d\xc3\xa9-web.service";
    assert_eq!(names(&units).len(), 3, "{:?}", names(&units));
    let web = read(&units, service);
    let quoted = repo.to_str().unwrap().replace('%', "%%").replace('$', "$$");
    assert!(
        web.contains(&format!("\"--repo\" \"{quoted}\" \"--process\"")),
        "{web}"
    );
    assert_verified(&units);

    for bad in ["new\nline.git", "quote\".git", "back\\slash.git"] {
        let repo = s.root.join(bad);
        let site = s.root.join(format!("site for {}", bad.len()));
        let run = init_systemd(&s, &repo, &site, &units);
        run.assert_status(2).assert_has("repository \"");
        assert!(
            !repo.exists() && !site.exists(),
            "{bad:?} made something:\n{run}"
        );
    }
    assert_eq!(names(&units).len(), 3);
}

/// Two repositories of the same name share a unit dir: the second is
/// refused, naming the first, and the first's units are left as they are.
#[test]
fn units_of_another_repository_are_left_alone() {
    let s = Server::new();
    give_site(&s.site);
    let units = s.root.join("units");
    init_systemd(&s, &s.repo, &s.site, &units).assert_ok();
    let before = crate::util::snapshot(&units);
    let repo = s.root.join("elsewhere/app.git");
    let site = s.root.join("site2");
    s.init_at(&repo, &site).assert_ok();
    give_site(&site);
    init_systemd(&s, &repo, &site, &units)
        .assert_status(2)
        .assert_has("was not written by pushdeploy for")
        .assert_has(&format!("it was for {}", s.repo.display()));
    assert_eq!(crate::util::snapshot(&units), before);
}

/// Root writes system units for a repository its user set up: the
/// repository is left as that user set it up (nothing in it becomes root's,
/// or its pushes could not change it), and a site other than the one it
/// deploys to is refused.
#[test]
fn root_writes_units_for_a_users_repository() {
    if !root() {
        eprintln!("skipped: only root writes system units for another user's repository");
        return;
    }
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    s.push(&[]).assert_ok();
    let chown = |dir: &Path| {
        TestCommand::new("chown", &s.root)
            .args(["-R", &format!("{OWNER}:{OWNER}"), dir.to_str().unwrap()])
            .run()
            .assert_ok();
    };
    chown(&s.repo);
    chown(&s.site);
    let before = crate::util::snapshot(&s.repo);
    let units = s.root.join("units");
    init_systemd(&s, &s.repo, &s.site, &units)
        .assert_ok()
        .assert_has(&format!("as {OWNER}"))
        .assert_has("systemctl enable --now pushdeploy-app.target");
    assert_verified(&units);
    let made_by_root = TestCommand::new("find", &s.root)
        .args([s.repo.to_str().unwrap(), "-not", "-uid", &OWNER.to_string()])
        .run();
    assert_eq!(made_by_root.assert_ok().stdout, "", "{made_by_root}");
    // Only the state file, and the folder the app writes its pid files in.
    let mut after = crate::util::snapshot(&s.repo);
    assert!(after.remove("pushdeploy/systemd.json").is_some());
    assert_eq!(after.remove("pushdeploy/run").as_deref(), Some("dir 755"));
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| after.get(*k) != before.get(*k))
        .collect();
    assert!(
        changed.is_empty() && after.len() == before.len(),
        "changed: {changed:?}"
    );

    init_systemd(&s, &s.repo, &s.root, &units)
        .assert_status(2)
        .assert_has(&format!(
            "deploys to {}, not {}",
            s.site.display(),
            s.root.display()
        ));
}

/// Written again into another folder: the old folder keeps none of them
/// (and keeps what is not pushdeploy's).
#[test]
fn units_moved_to_another_folder_leave_none_behind() {
    let s = Server::new();
    give_site(&s.site);
    let (old, new) = (s.root.join("old units"), s.root.join("new units"));
    init_systemd(&s, &s.repo, &s.site, &old).assert_ok();
    std::fs::write(
        old.join("other.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    init_systemd(&s, &s.repo, &s.site, &new)
        .assert_ok()
        .assert_has(&format!(
            "removed {}",
            old.join("pushdeploy-app.target").display()
        ));
    assert_eq!(names(&old), ["other.service"]);
    assert_eq!(names(&new).len(), 3);
}

/// Run by a user other than root: the user's own units (no `User=`,
/// started with the user's manager), in `~/.config/systemd/user` by
/// default; a site of another user is refused.
#[test]
fn a_user_gets_user_units() {
    if !root() || which::which("setpriv").is_err() {
        eprintln!("skipped: needs root and setpriv to run pushdeploy as another user");
        return;
    }
    let s = Server::new();
    let dir = s.root.join("as user");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    for d in [&s.root, &dir, &home] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::chown(&dir, Some(OWNER), Some(OWNER)).unwrap();
    std::os::unix::fs::chown(&home, Some(OWNER), Some(OWNER)).unwrap();
    let (repo, site) = (dir.join("shop.git"), dir.join("site"));
    let as_user = |args: &[&str]| {
        let mut cmd = TestCommand::new("setpriv", &dir);
        let (uid, gid) = (format!("--reuid={OWNER}"), format!("--regid={OWNER}"));
        cmd.args([
            uid.as_str(),
            gid.as_str(),
            "--clear-groups",
            "--",
            crate::util::BIN,
        ]);
        cmd.args(args);
        let config = home.join(".config");
        cmd.envs(&[
            ("HOME", home.to_str().unwrap()),
            ("XDG_CONFIG_HOME", config.to_str().unwrap()),
        ]);
        cmd.run()
    };
    let (repo_arg, site_arg) = (repo.to_str().unwrap(), site.to_str().unwrap());
    as_user(&["init", repo_arg, "--site", site_arg]).assert_ok();
    let units = home.join(".config/systemd/user");
    as_user(&["init", repo_arg, "--site", site_arg, "--systemd"])
        .assert_ok()
        .assert_has(&format!("systemd user units in {}", units.display()))
        .assert_has("systemctl --user daemon-reload")
        .assert_has(&format!("loginctl enable-linger {OWNER}"));
    let web = read(&units, "pushdeploy-shop-web.service");
    assert!(!web.contains("User=") && !web.contains("Group="), "{web}");
    assert!(read(&units, "pushdeploy-shop.target").contains("\nWantedBy=default.target\n"));
    verify(&units, true);

    // A site of another user: user units would run the app as the wrong one.
    std::os::unix::fs::chown(&site, Some(OWNER + 1), Some(OWNER + 1)).unwrap();
    as_user(&["init", repo_arg, "--site", site_arg, "--systemd"])
        .assert_status(2)
        .assert_has(&format!(
            "owned by {} (uid {}), but user units run as you (uid {OWNER})",
            OWNER + 1,
            OWNER + 1
        ));
}

/// A push under the units: the new version is loaded first (gunicorn's
/// `--check-config`, as the site's owner), then systemd restarts the
/// process behind its socket; one that cannot import is refused before
/// systemd is asked anything. systemd is not pid 1 here: a `systemctl` of
/// the test's own on PATH records what pushdeploy asks of it.
#[test]
fn a_push_under_the_units_loads_the_new_version_before_systemd_restarts_it() {
    let s = Server::new();
    if root() {
        // The site's owner reaches the site through the test's own folder.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&s.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    give_site(&s.site);
    // Nothing serves here: the check is a command that passes.
    s.config(&["deploy.healthCheck", "true"]);
    s.app("flask-app");
    s.commit("first");
    let units = s.root.join("units");
    init_systemd(&s, &s.repo, &s.site, &units).assert_ok();
    let bin = s.root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let asked = s.root.join("systemctl.log");
    let fake = bin.join("systemctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", asked.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let push = || {
        s.git_with(
            &["push", s.repo.to_str().unwrap(), "main"],
            &[("PUSHDEPLOY_RUN", "true"), ("PATH", &path)],
        )
    };
    let scope = if root() { "" } else { "--user " };
    push()
        .assert_ok()
        .assert_has("web: the new version loads (gunicorn --check-config)")
        .assert_has("web: restarted by systemd");
    let restart = format!("{scope}restart pushdeploy-app-web.service\n");
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), restart);

    let bad = format!("import no_such_module\n{}", s.site_file("app.py"));
    s.write("app.py", &bad);
    s.commit("cannot import");
    push()
        .assert_has("process web: the new version does not load")
        .assert_has("No module named 'no_such_module'")
        .assert_has("rolled back to");
    // The rollback restarted the old version; the broken one never was.
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap(),
        format!("{restart}{restart}")
    );
    assert!(!s.site_file("app.py").contains("no_such_module"));
    // `status` asks systemd.
    s.pushdeploy_command(&["status", "--repo", s.repo.to_str().unwrap()])
        .envs(&[("PATH", &path)])
        .run();
    assert!(
        std::fs::read_to_string(&asked).unwrap().contains("show"),
        "{}",
        std::fs::read_to_string(&asked).unwrap()
    );
}
