//! Issue 4: `.deployment`, the Django step, postDeploy and the precedence of
//! settings.

use std::os::unix::fs::PermissionsExt;

use crate::util::{Server, snapshot};

fn config_value(s: &Server, args: &[&str], vars: &[(&str, &str)], key: &str) -> (String, String) {
    let mut all = vec!["config", "--repo", s.repo.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let run = s.pushdeploy_with(&all, vars);
    run.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    (
        json[key]["value"].as_str().unwrap().to_string(),
        json[key]["origin"].to_string(),
    )
}

#[test]
fn precedence_of_one_key_across_all_five_sources() {
    let s = Server::new();
    s.write("index.html", "x\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    assert_eq!(
        config_value(&s, &[], &[], "python"),
        ("python3".into(), "\"default\"".into())
    );
    s.config(&["deploy.python", "3.10"]);
    assert_eq!(
        config_value(&s, &[], &[], "python"),
        ("3.10".into(), r#"{"gitConfig":"deploy.python"}"#.into())
    );
    s.write(".deployment", "[config]\npython = 3.12\n");
    s.commit("deployment file");
    s.push(&[]).assert_ok();
    assert_eq!(
        config_value(&s, &[], &[], "python"),
        ("3.12".into(), r#"{"deployment":2}"#.into())
    );
    let env = [("PUSHDEPLOY_PYTHON", "3.13")];
    assert_eq!(
        config_value(&s, &[], &env, "python"),
        (
            "3.13".into(),
            r#"{"environment":"PUSHDEPLOY_PYTHON"}"#.into()
        )
    );
    assert_eq!(
        config_value(&s, &["-c", "python=3.11"], &env, "python"),
        ("3.11".into(), r#"{"flag":"-c python"}"#.into())
    );
    // A server-only key is never taken from the pushed commit.
    s.write(
        ".deployment",
        "[config]\nbranch = evil\nsite = /tmp/elsewhere\n",
    );
    s.commit("tries to redirect");
    s.push(&[]).assert_ok().assert_has("successful");
    assert_eq!(
        config_value(&s, &[], &[], "site").0,
        s.site.canonicalize().unwrap().to_str().unwrap()
    );
    let bad = s.run("config", &["-c", "nosuchkey=1"]);
    assert_eq!(bad.status, 2);
    assert!(
        bad.stderr.contains("\"nosuchkey\" is not a setting"),
        "{}",
        bad.stderr
    );
}

#[test]
fn project_deploys_a_sub_folder_with_its_own_runtime_and_requirements() {
    let s = Server::new();
    s.write("MONOREPO.md", "monorepo\n")
        .write(".deployment", "[config]\nproject = src/webapp\n");
    let app = s.work.join("src/webapp");
    std::fs::create_dir_all(&app).unwrap();
    crate::util::copy_dir(&crate::util::fixtures().join("apps/flask-app"), &app);
    s.write("src/webapp/runtime.txt", "python-3.12\n");
    s.commit("monorepo");
    s.push(&[])
        .assert_ok()
        .assert_has("Python runtime: python-3.12 (runtime.txt)")
        .assert_has("successful");
    assert!(s.site.join("app.py").is_file());
    assert!(!s.site.join("MONOREPO.md").exists() && !s.site.join("src").exists());
    s.env_python("import sys, greeting; assert sys.version_info[:2] == (3, 12)")
        .assert_ok();

    s.write(".deployment", "[config]\nproject = src/nothing\n");
    s.commit("bad project");
    s.push(&[])
        .assert_has("setting project: \"src/nothing\" is not a folder of commit");
}

#[test]
fn build_off_syncs_files_only_and_other_keys_reach_the_build_as_variables() {
    let s = Server::new();
    s.app("flask-app").write(
        ".deployment",
        "[config]\nSCM_DO_BUILD_DURING_DEPLOYMENT = false\n",
    );
    s.commit("files only");
    s.push(&[]).assert_ok().assert_has(
        "Python steps skipped: SCM_DO_BUILD_DURING_DEPLOYMENT is false (.deployment line 2)",
    );
    assert!(s.site.join("app.py").exists() && !s.site.join("env").exists());
    assert!(
        !s.site.join(".deployment").exists(),
        ".deployment is not deployed"
    );

    // Other keys are app settings: variables for the build steps, pip included.
    s.write(
        ".deployment",
        "[config]\nPIP_FIND_LINKS = /nonexistent-wheels\nGREETING_STYLE = formal\n",
    )
    .write("requirements.txt", "greeting==2.0.0\n");
    s.commit("build with app settings");
    s.update_without_deploy();
    s.run("deploy", &["--dry-run"])
        .assert_ok()
        .assert_has("App setting: GREETING_STYLE=formal");
    s.run("deploy", &[])
        .assert_has("Looking in links: /nonexistent-wheels")
        .assert_has("failed in step pip");

    s.write(".deployment", "[config]\nproject\n");
    s.commit("malformed");
    let before = snapshot(&s.site);
    let push = s.push(&[]);
    push.assert_has(".deployment line 2: \"project\" is not `key = value`");
    assert_eq!(snapshot(&s.site), before);
}

#[test]
fn a_custom_command_runs_instead_of_the_built_in_steps_with_kudus_variables() {
    let s = Server::new();
    s.app("flask-app").write(
        ".deployment",
        "[config]\ncommand = ./deploy.sh\nGREETING = hello\n",
    );
    s.write(
        "deploy.sh",
        r#"#!/bin/sh
set -e
for v in DEPLOYMENT_SOURCE DEPLOYMENT_TARGET DEPLOYMENT_TEMP NEXT_MANIFEST_PATH PREVIOUS_MANIFEST_PATH SCM_COMMIT_ID PYTHON_RUNTIME PYTHON_EXE GREETING; do
  eval "value=\${$v:-}"
  [ -n "$value" ] || { echo "missing $v"; exit 3; }
  echo "$v=$value" >> "$DEPLOYMENT_TARGET/vars.txt"
done
test -f "$DEPLOYMENT_SOURCE/deploy.sh" && test -f "$DEPLOYMENT_SOURCE/.deployment"
test -d "$DEPLOYMENT_TEMP"
cp "$DEPLOYMENT_SOURCE/app.py" "$DEPLOYMENT_TARGET/app.py"
"$PYTHON_EXE" -c 'import sys; print("custom step on", sys.version_info[:2])'
ls "$DEPLOYMENT_SOURCE" > "$NEXT_MANIFEST_PATH"
[ -n "${FAIL:-}" ] && exit 7
echo done
"#,
    );
    std::fs::set_permissions(
        s.work.join("deploy.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let id = s.commit("custom");
    let push = s.push(&[]);
    push.assert_ok()
        .assert_has("Running deploy.sh (from .deployment)")
        .assert_has("custom step on (3, 11)")
        .assert_has("successful");
    let vars = s.site_file("vars.txt");
    assert!(vars.contains(&format!("SCM_COMMIT_ID={id}")), "{vars}");
    assert!(
        vars.contains("PYTHON_RUNTIME=python-3.11") && vars.contains("GREETING=hello"),
        "{vars}"
    );
    // The target is a staging copy in the state dir, synced into the site after.
    assert!(
        vars.lines()
            .any(|l| l.starts_with("DEPLOYMENT_TARGET=") && l.contains("/pushdeploy/tmp/target-")),
        "{vars}"
    );
    assert!(s.site.join("app.py").exists());
    assert!(
        !s.site.join("requirements.txt").exists() && !s.site.join("env").exists(),
        "the built-in steps did not run"
    );
    assert!(
        s.repo.join("pushdeploy/command-manifest.txt").is_file(),
        "the next manifest becomes the previous one"
    );

    let run = s.pushdeploy_with(
        &["deploy", "--repo", s.repo.to_str().unwrap()],
        &[("FAIL", "1")],
    );
    assert_eq!(run.status, 1);
    assert!(
        run.stdout.contains("failed in step command after")
            && run.stdout.contains("deploy.sh exited with status 7")
            && run.stdout.contains("the site was not changed"),
        "{}",
        run.stdout
    );

    std::fs::set_permissions(
        s.work.join("deploy.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    s.commit("not executable");
    s.push(&[])
        .assert_has("setting command: deploy.sh is not executable in the commit");
}

#[test]
fn collectstatic_runs_for_django_and_both_ways_to_skip_it_work() {
    let s = Server::new();
    s.app("django-app");
    s.commit("django");
    s.push(&[])
        .assert_ok()
        .assert_has("python manage.py collectstatic --noinput --clear")
        .assert_has("2 static files copied to");
    assert!(s.site.join("staticfiles/css/site.css").is_file());
    let records = s.records();
    let steps = records[0]["steps"].as_array().unwrap();
    assert!(steps.iter().any(|st| st["step"] == "collectstatic"));

    std::fs::remove_dir_all(s.site.join("staticfiles")).unwrap();
    s.write(".skipDjango", "");
    s.commit("skip django");
    s.update_without_deploy();
    s.run("deploy", &["--dry-run"])
        .assert_has("Django: skipped (.skipDjango is in the commit)");
    s.run("deploy", &[]).assert_ok().assert_has("successful");
    assert!(!s.site.join("staticfiles").exists());

    s.remove(".skipDjango");
    s.commit("django again");
    s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("DISABLE_COLLECTSTATIC", "1")],
    )
    .assert_ok();
    assert!(!s.site.join("staticfiles").exists());
    s.write(".deployment", "[config]\nDISABLE_COLLECTSTATIC = true\n");
    s.commit("disabled in the file");
    s.update_without_deploy();
    s.run("deploy", &["--dry-run"])
        .assert_has("Django: skipped (DISABLE_COLLECTSTATIC is set (.deployment line 2))");
}

/// Issue 15 item 15: Kudu's script runs collectstatic without checking its
/// status and Oryx prints it and goes on, so Azure's Django quickstart
/// deploys commits that have no `STATIC_ROOT`; here they rolled back. A
/// failure is a warning (the output, the record, `list`, `show`); the
/// setting `strictCollectstatic` makes it a failure that rolls back.
#[test]
fn a_failing_collectstatic_is_a_warning_unless_strict_collectstatic() {
    let s = Server::new();
    s.app("django-app");
    s.commit("django");
    s.push(&[]).assert_ok();
    // The quickstart's commits before STATIC_ROOT: collectstatic exits 1.
    let no_static_root = "STATICFILES_DIRS = ['static']\n";
    s.write("mysite/settings.py", no_static_root)
        .write("version.txt", "2\n");
    let second = s.commit("no STATIC_ROOT yet");
    let push = s.push(&[]);
    push.assert_ok()
        .assert_has("AttributeError")
        .assert_has(
            "-----> Warning: collectstatic failed (manage.py collectstatic exited with status 1): the app may lack its static files; the deployment goes on, as in Kudu (setting strictCollectstatic = true makes this a failure that rolls back)",
        );
    let last = push.remote().last().unwrap().clone();
    assert!(
        last.starts_with(&format!(
            "-----> Deployment {} successful in ",
            &second[..7]
        )) && last.ends_with(", with a warning (above)"),
        "{last}"
    );
    assert_eq!(s.site_file("version.txt"), "2\n");
    let records = s.records();
    assert_eq!(records[0]["status"], "success");
    let warnings = records[0]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("collectstatic failed"),
        "{warnings:?}"
    );
    assert!(
        records[1].get("warnings").is_none(),
        "none written when none"
    );
    let list = s.run("list", &[]);
    list.assert_ok();
    let row = list.stdout.lines().nth(1).unwrap();
    assert!(
        row.starts_with("2*") && row.contains("success, 1 warning"),
        "{row}"
    );
    s.run("show", &["#2"])
        .assert_ok()
        .assert_has("status:   success\nwarning:  collectstatic failed (manage.py collectstatic exited with status 1)");
    s.run("deploy", &["--dry-run"]).assert_has(
        "collectstatic --noinput --clear, when Django is installed in env/; a failure is a warning",
    );

    // Strict, from the commit: the failure rolls back.
    s.write(".deployment", "[config]\nstrictCollectstatic = true\n")
        .write("version.txt", "3\n");
    s.commit("strict");
    let push = s.push(&[]);
    let last = push.remote().last().unwrap().clone();
    let rolled_back = format!(
        "manage.py collectstatic exited with status 1; rolled back to {} (the last good deployment)",
        &second[..7]
    );
    assert!(
        last.contains("failed in step collectstatic after") && last.ends_with(&rolled_back),
        "{last}"
    );
    // The previous version's collectstatic, run again by the rollback,
    // fails as it did when it deployed: a warning, and the site runs it.
    assert_eq!(
        push.all().matches("Warning: collectstatic failed").count(),
        1
    );
    assert_eq!(s.site_file("version.txt"), "2\n");
    assert_eq!(s.records()[0]["status"], "rolled back");

    // Strict, from the server's git config, the same.
    s.config(&["deploy.strictCollectstatic", "true"]);
    s.remove(".deployment").write("version.txt", "4\n");
    s.commit("strict on the server");
    let push = s.push(&[]);
    let last = push.remote().last().unwrap().clone();
    assert!(
        last.contains("failed in step collectstatic after") && last.ends_with(&rolled_back),
        "{last}"
    );
    assert_eq!(s.site_file("version.txt"), "2\n");
    // Fixed, it deploys as before: the static files are collected again.
    s.write(
        "mysite/settings.py",
        &format!("{no_static_root}STATIC_ROOT = 'staticfiles'\n"),
    );
    s.commit("STATIC_ROOT at last");
    s.push(&[])
        .assert_ok()
        .assert_has("2 static files copied to");
    assert_eq!(s.site_file("version.txt"), "4\n");
}

#[test]
fn post_deploy_runs_after_success_and_its_failure_fails_the_deployment() {
    let s = Server::new();
    s.write("index.html", "x\n");
    s.commit("first");
    s.config(&["deploy.postDeploy", "touch 'restarted app.txt'"]);
    s.push(&[])
        .assert_ok()
        .assert_has("postDeploy: touch 'restarted app.txt'")
        .assert_has("successful");
    assert!(s.site.join("restarted app.txt").exists());
    // The pushed commit cannot set it.
    s.write(".deployment", "[config]\npostDeploy = touch evil.txt\n");
    s.commit("tries postDeploy");
    s.config(&["deploy.postDeploy", "false"]);
    let push = s.push(&[]);
    assert!(
        push.remote()
            .last()
            .unwrap()
            .contains("failed in step postDeploy after"),
        "{:?}",
        push.remote()
    );
    assert!(!s.site.join("evil.txt").exists());
    assert_eq!(s.records()[0]["status"], "rolled back");
}

#[test]
fn changing_the_project_removes_the_old_projects_files() {
    let s = Server::new();
    s.write(".deployment", "[config]\nproject = one\n")
        .write("one/a.txt", "a\n")
        .write("one/shared.txt", "1\n");
    s.write("two/b.txt", "b\n").write("two/shared.txt", "2\n");
    s.commit("project one");
    s.push(&[]).assert_ok();
    assert!(s.site.join("a.txt").exists() && !s.site.join("b.txt").exists());
    std::fs::write(s.site.join("upload.bin"), "the app's").unwrap();
    s.write(".deployment", "[config]\nproject = two\n");
    s.commit("project two");
    s.push(&[])
        .assert_ok()
        .assert_has("project changed from one to two: every file compared with the site");
    assert!(
        !s.site.join("a.txt").exists(),
        "the old project's file is deleted"
    );
    assert_eq!(s.site_file("shared.txt"), "2\n");
    assert_eq!(s.site_file("b.txt"), "b\n");
    assert_eq!(s.site_file("upload.bin"), "the app's");
}

#[test]
fn a_process_left_in_the_background_does_not_hold_the_deployment() {
    let s = Server::new();
    s.write("index.html", "x\n");
    s.commit("first");
    // A restart command that leaves a server running, holding its output.
    s.config(&["deploy.postDeploy", "sh -c 'sleep 30 & echo started'"]);
    let start = std::time::Instant::now();
    s.push(&[])
        .assert_ok()
        .assert_has("started")
        .assert_has("leaving a process in the background")
        .assert_has("successful");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "the push did not wait for the background process"
    );
}

/// Issue 11: `--clear` stays (Kudu's command), but Django's line per
/// deleted file is folded into one count line.
#[test]
fn collectstatic_clear_prints_one_line_for_the_files_it_deletes() {
    let s = Server::new();
    s.app("django-app");
    s.commit("django");
    s.push(&[])
        .assert_ok()
        .assert_has("2 static files copied to");
    s.write("static/css/more.css", "p {}\n");
    s.commit("one more static file");
    let push = s.push(&[]);
    push.assert_ok()
        .assert_has("python manage.py collectstatic --noinput --clear")
        .assert_has("Deleting 2 files ('css/site.css' ... 'js/site.js')")
        .assert_has("3 static files copied to");
    assert!(!push.has("Deleting 'css/site.css'"), "{push}");
    assert!(s.site.join("staticfiles/css/more.css").is_file());
}

/// Issue 15 item 14: Kudu reads `.deployment` keys regardless of case
/// (`OrdinalIgnoreCase`). `PROJECT = src/app` became an app setting and the
/// whole repository deployed; `Command = build.sh` was left out and the
/// repository, the script included, deployed instead of its output. The
/// trust rules hold in any case: a server-only key is still left out.
#[test]
fn deployment_keys_name_the_settings_in_any_case_as_in_kudu() {
    let s = Server::new();
    s.config(&["deploy.postDeploy", "touch restarted.txt"]);
    s.write("MONOREPO.md", "monorepo\n")
        .write("src/app/index.html", "app\n")
        .write(
            ".deployment",
            "[CONFIG]\nPROJECT = src/app\nScm_Do_Build_During_Deployment = FALSE\nPOSTDEPLOY = touch evil.txt\nHealthCheck = false\nGREETING = hi\n",
        );
    s.commit("odd case");
    s.push(&[])
        .assert_ok()
        .assert_has("Python steps skipped: SCM_DO_BUILD_DURING_DEPLOYMENT is false (.deployment line 3)")
        .assert_has(".deployment line 4: POSTDEPLOY names the server's setting postDeploy (keys are read regardless of case, as Kudu does), which a commit may not set; left out")
        .assert_has(".deployment line 5: HealthCheck names the server's setting healthCheck (keys are read regardless of case, as Kudu does), which a commit may not set; left out")
        .assert_has("successful");
    assert_eq!(s.site_file("index.html"), "app\n");
    assert!(!s.site.join("MONOREPO.md").exists() && !s.site.join("src").exists());
    assert!(s.site.join("restarted.txt").exists() && !s.site.join("evil.txt").exists());
    assert_eq!(
        config_value(&s, &[], &[], "project"),
        ("src/app".into(), r#"{"deployment":2}"#.into())
    );

    s.write(".deployment", "[config]\nCommand = build.sh\n");
    s.write(
        "build.sh",
        "#!/bin/sh\necho built > \"$DEPLOYMENT_TARGET/built.txt\"\n",
    );
    std::fs::set_permissions(
        s.work.join("build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    s.commit("a command in another case");
    s.push(&[])
        .assert_ok()
        .assert_has("Running build.sh (from .deployment)")
        .assert_has("successful");
    assert_eq!(s.site_file("built.txt"), "built\n");
    assert!(!s.site.join("build.sh").exists() && !s.site.join("MONOREPO.md").exists());
}

/// The rollback to a version that deployed with its collectstatic failing
/// (a warning): that collectstatic fails again, and the old version's
/// postDeploy and health check still run; the site is not called down.
#[test]
fn a_rollback_to_a_version_whose_collectstatic_fails_runs_its_post_deploy() {
    let s = Server::new();
    s.app("django-app")
        .write("mysite/settings.py", "STATICFILES_DIRS = ['static']\n");
    let first = s.commit("no STATIC_ROOT");
    s.config(&["deploy.postDeploy", "sh -c 'echo reloaded >> reloads.txt'"]);
    s.config(&["deploy.healthCheck", "test ! -e broken.txt"]);
    s.config(&["deploy.healthCheckTimeout", "1"]);
    s.push(&[])
        .assert_ok()
        .assert_has("Warning: collectstatic failed");
    s.write("broken.txt", "the health check fails\n");
    s.commit("fails its health check");
    let push = s.push(&[]);
    let last = push.remote().last().unwrap().clone();
    assert!(
        last.contains("failed in step healthCheck")
            && last.ends_with(&format!(
                "rolled back to {} (the last good deployment)",
                &first[..7]
            )),
        "{last}"
    );
    assert!(!s.site.join("broken.txt").exists());
    assert_eq!(s.site_file("reloads.txt"), "reloaded\nreloaded\nreloaded\n");
    let records = s.records();
    assert_eq!(records[0]["status"], "rolled back");
    assert_eq!(records[0]["warnings"].as_array().unwrap().len(), 2);
}
