//! Issue 11: what a pushed commit may steer. App settings by allow-list,
//! none for `postDeploy`; the installer and the interpreter chosen by the
//! server; push options that are not UTF-8.

use std::os::unix::fs::PermissionsExt;

use crate::util::Server;

fn executable(s: &Server, rel: &str, script: &str) {
    s.write(rel, script);
    std::fs::set_permissions(s.work.join(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A directory of the server's own programs, put first on PATH.
fn server_bin(s: &Server, name: &str, script: &str) -> String {
    let dir = s.root.join("server-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join(name);
    std::fs::write(&program, script).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

/// Issue 11 item 2: `PATH = <site>/bin` made `postDeploy`'s program name
/// find the commit's `bin/restart-app`.
#[test]
fn post_deploy_runs_the_servers_program_with_no_app_setting_of_the_commit() {
    let s = Server::new();
    let marker = s.root.join("restarted.txt");
    let path = server_bin(
        &s,
        "restart-app",
        &format!(
            "#!/bin/sh\necho \"server restart, style=${{GREETING_STYLE:-unset}}\" > {}\n",
            marker.display()
        ),
    );
    s.config(&["deploy.postDeploy", "restart-app"]);
    s.write("app.py", "print('hi')\n").write(
        ".deployment",
        &format!(
            "[config]\nPATH = {}/bin\nGREETING_STYLE = formal\n",
            s.site.display()
        ),
    );
    executable(
        &s,
        "bin/restart-app",
        &format!(
            "#!/bin/sh\necho commit > {}/commit-ran.txt\n",
            s.root.display()
        ),
    );
    s.commit("a PATH into the commit's bin");
    let push = s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("PATH", &path)],
    );
    push.assert_ok()
        .assert_has(".deployment line 2: PATH is not an app setting a commit may set; left out")
        .assert_has("successful");
    assert!(s.site.join("bin/restart-app").is_file());
    assert!(
        !s.root.join("commit-ran.txt").exists(),
        "the commit's program ran"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "server restart, style=unset\n",
        "postDeploy gets no app setting"
    );
}

/// Issue 11 item 4: `PIP_TARGET` from `.deployment` installed outside the
/// site while the env lacked the package. Neither it nor the other names a
/// commit may not set reach pip; a committed pip.conf is not read either.
#[test]
fn pip_steering_settings_from_the_commit_install_nothing_outside() {
    let s = Server::new();
    let outside = s.root.join("outside");
    let outside_conf = s.root.join("outside-conf");
    let fake_home = s.root.join("fake-home");
    std::fs::create_dir_all(fake_home.join(".config/pip")).unwrap();
    std::fs::write(
        fake_home.join(".config/pip/pip.conf"),
        format!("[install]\ntarget = {}\n", outside_conf.display()),
    )
    .unwrap();
    s.app("flask-app")
        .write(
            ".deployment",
            &format!(
                "[config]\nPIP_TARGET = {}\nLD_PRELOAD = /nonexistent/preload.so\nPYTHONPATH = {}/evil\nHOME = {}\nDJANGO_SETTINGS_MODULE = shop.settings\n",
                outside.display(),
                s.site.display(),
                fake_home.display()
            ),
        )
        .write(
            "pip.conf",
            &format!("[install]\ntarget = {}\n", outside_conf.display()),
        );
    s.commit("pip steering");
    let push = s.push(&[]);
    push.assert_ok().assert_has("successful");
    for (line, name) in [(2, "PIP_TARGET"), (3, "LD_PRELOAD"), (5, "HOME")] {
        push.assert_has(&format!(
            ".deployment line {line}: {name} is not an app setting a commit may set; left out"
        ));
    }
    // Keys are read in any case, as Kudu does: PYTHONPATH is the server's pythonPath.
    push.assert_has(".deployment line 4: PYTHONPATH names the server's setting pythonPath (keys are read regardless of case, as Kudu does), which a commit may not set; left out");
    assert!(!push.has("DJANGO_SETTINGS_MODULE is not"), "allowed");
    assert!(!outside.exists(), "pip installed outside the site");
    assert!(!outside_conf.exists(), "a committed pip.conf steered pip");
    s.env_python("import greeting, tinyweb").assert_ok();
}

/// The allowed ones arrive: an app's own variable and an index variable, in
/// the environment of the steps that get app settings (here a custom
/// command, which prints what it got).
#[test]
fn allowed_app_settings_still_arrive() {
    let s = Server::new();
    s.write(
        ".deployment",
        "[config]\ncommand = ./show.sh\nDJANGO_SETTINGS_MODULE = shop.settings\nPIP_INDEX_URL = http://127.0.0.1:9/simple\nLD_PRELOAD = /nonexistent/preload.so\nPYTHONPATH = /nonexistent\n",
    );
    executable(
        &s,
        "show.sh",
        "#!/bin/sh\necho \"got DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-} PIP_INDEX_URL=${PIP_INDEX_URL:-} LD_PRELOAD=${LD_PRELOAD:-} PYTHONPATH=${PYTHONPATH:-}\"\n",
    );
    s.write("runtime.txt", "python-3.11\n");
    s.commit("show the environment");
    s.push(&[])
        .assert_ok()
        .assert_has("got DJANGO_SETTINGS_MODULE=shop.settings PIP_INDEX_URL=http://127.0.0.1:9/simple LD_PRELOAD= PYTHONPATH= ")
        .assert_has(".deployment line 5: LD_PRELOAD is not an app setting")
        .assert_has("successful");
}

/// A committed uv.toml (`[pip] target = ...`) redirected `uv pip install`
/// out of the env: uv runs with `--no-config`.
#[test]
fn a_committed_uv_toml_does_not_steer_uv() {
    let Some(uv) = crate::util::uv() else {
        eprintln!("uv is not installed: .ci/run installs it; skipping this test here");
        return;
    };
    let s = Server::new();
    let outside = s.root.join("outside");
    s.app("flask-app")
        .write(
            "uv.toml",
            &format!("[pip]\ntarget = \"{}\"\n", outside.display()),
        )
        .write(".deployment", "[config]\ninstaller = uv\n");
    s.commit("uv.toml");
    // uv's path is the server's setting.
    s.config(&["deploy.uvPath", uv.to_str().unwrap()]);
    s.push(&[])
        .assert_ok()
        .assert_has(&format!(
            "{} pip install -r requirements.txt (into the new env)",
            uv.display()
        ))
        .assert_has("successful");
    assert!(!outside.exists(), "uv installed outside the site");
    s.env_python("import greeting, tinyweb").assert_ok();
}

/// Issue 11 item 3: `installer = /bin/sh` ran `/bin/sh pip install -r ...`
/// in the site, so a shell read the commit's file `pip`.
#[test]
fn a_commit_chooses_pip_or_uv_never_a_program() {
    let s = Server::new();
    s.app("flask-app")
        .write(".deployment", "[config]\ninstaller = /bin/sh\n");
    executable(
        &s,
        "pip",
        &format!("#!/bin/sh\necho ran > {}/pip-ran.txt\n", s.root.display()),
    );
    s.commit("installer is a shell");
    let push = s.push(&[]);
    push.assert_has(
        "s: .deployment line 2: installer = \"/bin/sh\": a commit may only set pip or uv (uv's path is the server's setting uvPath)",
    );
    push.assert_has("failed in step plan");
    assert!(!s.root.join("pip-ran.txt").exists(), "the commit's pip ran");
    assert!(!s.site.join("env").exists());
}

/// Issue 11 item 7: `.deployment` `python = <site>/tool` (a file an earlier
/// push deployed) was run by `--dry-run` to ask its version. A commit names
/// a version; a command or a path is the server's to give.
#[test]
fn a_commit_names_a_python_version_and_no_program_runs() {
    let s = Server::new();
    let marker = s.root.join("tool-ran.txt");
    s.app("flask-app");
    executable(
        &s,
        "tool",
        &format!(
            "#!/bin/sh\necho ran >> {}\nexec python3 \"$@\"\n",
            marker.display()
        ),
    );
    s.commit("a tool");
    s.push(&[]).assert_ok().assert_has("successful");
    assert!(s.site.join("tool").is_file());

    s.remove("runtime.txt").write(
        ".deployment",
        &format!("[config]\npython = {}/tool\n", s.site.display()),
    );
    s.commit("python is the tool");
    s.update_without_deploy();
    let refused = format!(
        ".deployment line 2: python = \"{}/tool\": a commit may only set a version such as 3.12 (a command or path is the server's setting)",
        s.site.display()
    );
    let dry = s.run("deploy", &["--dry-run"]);
    assert_ne!(dry.status, 0);
    assert!(dry.all().contains(&refused), "{}", dry.all());
    let real = s.run("deploy", &[]);
    assert_eq!(real.status, 1);
    assert!(real.stdout.contains(&refused), "{}", real.stdout);
    assert!(!marker.exists(), "the commit's program ran");

    // A version is fine.
    s.write(".deployment", "[config]\npython = 3.11\n");
    s.commit("python is a version");
    s.push(&[])
        .assert_ok()
        .assert_has("(setting python, .deployment line 2) -> ")
        .assert_has("successful");
}

/// Issue 11: `git push -o $'x\xff'` panicked the hook (`std::env::vars`):
/// the ref moved, nothing deployed, no record. The option is ignored with
/// one line and the deployment goes on.
#[test]
fn a_push_option_that_is_not_utf8_is_ignored_and_the_push_deploys() {
    use std::os::unix::ffi::OsStrExt;
    let s = Server::new();
    s.write("app.py", "print('hi')\n");
    s.commit("first");
    // The one argument that is not UTF-8 goes through the same builder.
    let push = s
        .git_command(&["push", "-o"])
        .args([std::ffi::OsStr::from_bytes(b"x\xff")])
        .args(["-o", "recreate-env", s.repo.to_str().unwrap(), "main"])
        .run();
    push.assert_ok()
        .assert_has("Ignoring push option \"x\\xff\": it is not UTF-8; known: recreate-env");
    let err = &push.stderr;
    assert!(!err.contains("panicked"), "{err}");
    push.assert_has("successful");
    assert!(s.site.join("app.py").is_file());
    let records = s.records();
    assert_eq!(records.len(), 1, "one record");
}

/// Issue 11, messages: `(setting python, default)` said nothing to a new
/// user; the line says why the default applies.
#[test]
fn the_default_python_says_why_it_applies() {
    let s = Server::new();
    s.app("flask-app").remove("runtime.txt");
    s.commit("no runtime");
    s.push(&[])
        .assert_ok()
        .assert_has("Python runtime: python-3.")
        .assert_has("(no runtime.txt or .python-version; the default python3) -> ");
}

/// Issue 11, messages: "python-3.12 is not installed" came back unchanged
/// with an unreadable or a missing `pythonPath`: it says where it looked and
/// which directories it skipped.
#[test]
fn a_missing_runtime_says_where_it_looked_and_what_it_skipped() {
    let s = Server::new();
    let missing = s.root.join("no-such-dir");
    let file = s.root.join("a-file");
    std::fs::write(&file, "").unwrap();
    let python_path = format!("{}:{}", missing.display(), file.display());
    s.config(&["deploy.pythonPath", &python_path]);
    s.app("flask-app").write("runtime.txt", "python-9.9\n");
    s.commit("no such python");
    let push = s.push(&[]);
    push.assert_has("runtime.txt: python-9.9 is not installed; found: ")
        .assert_has(&format!(
            "; looked in PATH, pyenv root {} and pythonPath {python_path}; skipped pythonPath directories it could not read: {} (missing), {} (not a directory)",
            std::env::var("PYENV_ROOT")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|_| crate::util::home().join(".pyenv"))
                .display(),
            missing.display(),
            file.display()
        ));
}
