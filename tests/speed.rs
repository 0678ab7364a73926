//! Issue 5: what makes pip run or skip, `--verify`, and the uv installer.

use crate::util::{Server, fixtures};

fn deployed() -> Server {
    let s = Server::new();
    s.app("flask-app")
        .write("base.txt", "tinyweb==1.0.0\n")
        .write("requirements.txt", "-r base.txt\ngreeting==1.0.0\n");
    s.commit("first");
    s.push(&[]).assert_ok().assert_has("successful");
    s
}

/// Pushes a change of app.py and returns what the pusher saw.
fn touch_and_push(s: &Server, vars: &[(&str, &str)]) -> crate::util::Run {
    let n = std::fs::read_to_string(s.work.join("app.py"))
        .unwrap()
        .len();
    s.write(
        "app.py",
        &format!(
            "{}# {n}\n",
            std::fs::read_to_string(s.work.join("app.py")).unwrap()
        ),
    );
    s.commit("touch");
    let push = s.git_with(&["push", s.repo.to_str().unwrap(), "main"], vars);
    push.assert_ok().assert_has("successful");
    push
}

#[test]
fn an_unchanged_push_skips_pip_and_says_why() {
    let s = deployed();
    let push = touch_and_push(&s, &[]);
    push.assert_has("pip skipped: requirements, interpreter, env and pip settings unchanged since");
    assert!(!push.has("Requirement already satisfied"));
    let records = s.records();
    let steps: Vec<&str> = records[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["step"].as_str().unwrap())
        .collect();
    assert!(!steps.contains(&"pip"), "{steps:?}");
}

#[test]
fn each_input_pip_depends_on_makes_it_run() {
    let s = deployed();
    s.write("requirements.txt", "-r base.txt\ngreeting==2.0.0\n");
    s.commit("requirements");
    s.push(&[])
        .assert_has("changed since the last install: requirements")
        .assert_has("Successfully installed greeting-2.0.0");

    s.write("base.txt", "tinyweb==1.0.0\n# a comment changes the blob\n");
    s.commit("included file");
    s.push(&[])
        .assert_has("changed since the last install: requirements");

    touch_and_push(&s, &[]).assert_has("pip skipped");
    let uninstall = std::process::Command::new(s.site.join("env/bin/pip"))
        .args(["uninstall", "-y", "tinyweb"])
        .output()
        .unwrap();
    assert!(uninstall.status.success());
    touch_and_push(&s, &[])
        .assert_has("changed since the last install: env")
        .assert_has("Successfully installed tinyweb-1.0.0");

    touch_and_push(&s, &[("PIP_PRE", "1")])
        .assert_has("changed since the last install: pip settings");

    // A wheel added to a local find-links directory may change what pip picks.
    let links = s.root.join("links");
    std::fs::create_dir(&links).unwrap();
    std::fs::copy(
        fixtures().join("wheels/greeting-1.0.0-py2.py3-none-any.whl"),
        links.join("greeting-1.0.0-py2.py3-none-any.whl"),
    )
    .unwrap();
    s.write(
        "requirements.txt",
        &format!(
            "-r base.txt\n--find-links {}\ngreeting==2.0.0\n",
            links.display()
        ),
    );
    s.commit("own find-links");
    s.push(&[]).assert_ok();
    touch_and_push(&s, &[]).assert_has("pip skipped");
    std::fs::copy(
        fixtures().join("wheels/greeting-2.0.0-py2.py3-none-any.whl"),
        links.join("greeting-2.0.0-py2.py3-none-any.whl"),
    )
    .unwrap();
    touch_and_push(&s, &[]).assert_has("changed since the last install: find-links directories");

    let off = touch_and_push(&s, &[("PUSHDEPLOY_SKIP_UNCHANGED_PACKAGES", "false")]);
    off.assert_has(
        "skipUnchangedPackages is false (environment PUSHDEPLOY_SKIP_UNCHANGED_PACKAGES)",
    );
    touch_and_push(&s, &[]).assert_has("pip skipped");
}

#[test]
fn a_requirement_pip_cannot_see_as_fixed_makes_it_run_every_time() {
    let s = deployed();
    let wheel = fixtures().join("wheels/greeting-1.0.0-py2.py3-none-any.whl");
    s.write(
        "requirements.txt",
        &format!("-r base.txt\ngreeting @ file://{}\n", wheel.display()),
    );
    s.commit("file url");
    s.push(&[]).assert_ok();
    touch_and_push(&s, &[])
        .assert_has("requirements.txt line 2 is a file: URL: the installer always runs");
}

#[test]
fn the_uv_installer_installs_and_says_so() {
    let Some(uv) = crate::util::uv() else {
        eprintln!("uv is not installed: .ci/run installs it; skipping this test here");
        return;
    };
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    let installer = uv.to_str().unwrap();
    let vars = [("PUSHDEPLOY_INSTALLER", installer)];
    let push = s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars);
    push.assert_ok()
        .assert_has(&format!(
            "{installer} pip install -r requirements.txt (into the new env)"
        ))
        .assert_has("successful");
    s.env_python("import greeting, tinyweb").assert_ok();
    std::process::Command::new(s.site.join("env/bin/pip"))
        .arg("--version")
        .status()
        .unwrap()
        .success()
        .then_some(())
        .expect("pip still works");
    // Changing the installer makes it run again.
    touch_and_push(&s, &[]).assert_has("changed since the last install: installer");
    let bad = s.pushdeploy_with(
        &["deploy", "--repo", s.repo.to_str().unwrap()],
        &[("PUSHDEPLOY_INSTALLER", "yarn")],
    );
    assert_eq!(bad.status, 1);
    assert!(bad.stdout.contains("setting installer (environment PUSHDEPLOY_INSTALLER): \"yarn\" is not pip, uv or a path to uv"), "{}", bad.stdout);
}
