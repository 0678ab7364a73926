//! `pushdeploy init` and the steps that are skipped.

use crate::util::Server;

#[test]
fn init_twice_changes_nothing_and_says_so() {
    let s = Server::new();
    let hook = std::fs::read_to_string(s.repo.join("hooks/post-receive")).unwrap();
    assert!(
        hook.starts_with("#!/bin/sh") && hook.contains("post-receive"),
        "{hook}"
    );
    let again = s.pushdeploy(&[
        "init",
        s.repo.to_str().unwrap(),
        "--site",
        s.site.to_str().unwrap(),
    ]);
    again
        .assert_ok()
        .assert_has("is already set up to deploy to")
        .assert_has("nothing changed");
    let config = s.run("config", &[]);
    config.assert_ok().assert_has("git config deploy.site");
}

#[test]
fn init_with_a_branch_deploys_that_branch() {
    let s = Server::new();
    let repo = s.root.join("other.git");
    let site = s.root.join("other-site");
    s.pushdeploy(&[
        "init",
        repo.to_str().unwrap(),
        "--site",
        site.to_str().unwrap(),
        "--branch",
        "production",
    ])
    .assert_ok();
    s.app("flask-app");
    s.commit("first");
    let push = s.git(&["push", repo.to_str().unwrap(), "main"]);
    push.assert_ok()
        .assert_has("Ignored: ref refs/heads/main is not the deployment branch production");
    assert!(!site.join("app.py").exists());
    s.git(&["push", repo.to_str().unwrap(), "main:production"])
        .assert_ok()
        .assert_has("successful");
    assert!(site.join("app.py").exists());
}

#[test]
fn python_steps_are_skipped_without_requirements_or_with_the_skip_file() {
    let s = Server::new();
    s.write("index.html", "<p>static</p>\n");
    s.commit("static site");
    s.push(&[])
        .assert_ok()
        .assert_has("Python steps skipped: no requirements.txt in the commit")
        .assert_has("successful");
    assert!(!s.site.join("env").exists());
    s.app("flask-app").write(".skipPythonDeployment", "");
    s.commit("python, skipped");
    s.push(&[])
        .assert_ok()
        .assert_has("Python steps skipped: .skipPythonDeployment is in the commit");
    assert!(!s.site.join("env").exists());
    assert!(s.site.join("app.py").exists());
}

/// Issue 11: root running a command on the deploy user's repository hears
/// whose it is and how to run it as them, not libgit2's "not owned by
/// current user". Only root can give a repository to another user here.
#[test]
fn a_repository_of_another_user_is_named_with_its_owner() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: the message is checked by the unit test in cli.rs");
        return;
    }
    let s = Server::new();
    std::os::unix::fs::chown(&s.repo, Some(65534), None).unwrap();
    let run = s.run("list", &[]);
    run.assert_status(2)
        .assert_has(&format!("{} belongs to ", s.repo.display()))
        .assert_has(", not to root; run pushdeploy as the repository's owner")
        .assert_has(" pushdeploy list --repo ");
    assert!(!run.has("not owned by current user"), "{run}");
    // Adopting it with init is refused the same way.
    s.pushdeploy(&[
        "init",
        s.repo.to_str().unwrap(),
        "--site",
        s.site.to_str().unwrap(),
    ])
    .assert_status(2)
    .assert_has(&format!("{} belongs to ", s.repo.display()))
    .assert_has(" pushdeploy init ");
}

/// Issue 11: outside a repository, the message says how to name one.
#[test]
fn outside_a_repository_the_message_mentions_repo() {
    let s = Server::new();
    let run = s.pushdeploy(&["list"]);
    run.assert_status(2)
        .assert_has(&format!("{}: not a git repository", s.root.display()))
        .assert_has("--repo <path>");
    let missing = s.root.join("missing.git");
    s.pushdeploy(&["list", "--repo", missing.to_str().unwrap()])
        .assert_status(2)
        .assert_has("repository ")
        .assert_has("No such file or directory");
}

/// Issue 11: `init` on a developer's clone (its directory or its `.git`)
/// is refused with why and what to do, and nothing is written into it.
#[test]
fn init_refuses_a_repository_with_a_work_tree() {
    let s = Server::new();
    let site = s.root.join("other-site");
    for target in [s.work.clone(), s.work.join(".git")] {
        let run = s.pushdeploy(&[
            "init",
            target.to_str().unwrap(),
            "--site",
            site.to_str().unwrap(),
        ]);
        run.assert_status(2)
            .assert_has(&format!(
                "a repository with a work tree ({}), not a bare one",
                s.work.display()
            ))
            .assert_has("git clone --bare ");
    }
    assert!(!s.work.join(".git/hooks/post-receive").exists());
    assert!(!site.exists());
}

/// Issue 11: setting up is not a deployment; when it fails (here a file
/// where a directory must be, which stops root as a permission error stops
/// other users) the exit status is 2, not 1.
#[test]
fn init_failing_on_the_file_system_exits_2() {
    let s = Server::new();
    let file = s.root.join("a-file");
    std::fs::write(&file, "").unwrap();
    let repo = file.join("app.git");
    let site = s.root.join("site2");
    s.init_at(&repo, &site)
        .assert_status(2)
        .assert_has("creating ");
    let repo = s.root.join("new.git");
    s.init_at(&repo, &file.join("site")).assert_status(2);
    if !rustix::process::geteuid().is_root() {
        // As another user, a directory that cannot be written.
        let locked = s.root.join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o555))
            .unwrap();
        let repo = locked.join("app.git");
        s.init_at(&repo, &site)
            .assert_status(2)
            .assert_has("ermission denied");
    }
}

/// Re-running `init` with another site is refused: the state dir's manifest
/// belongs to the site it names, and switching silently left it stale.
#[test]
fn init_with_another_site_is_refused_without_move_site() {
    let s = Server::new();
    let other = s.root.join("other-site");
    let again = s.init_at(&s.repo, &other);
    again
        .assert_status(2)
        .assert_has("already deploys to")
        .assert_has("--move-site")
        .assert_has("compares every file");
    assert!(!other.exists(), "a refused init made the site");
    s.run("config", &[]).assert_ok().assert_has(
        &std::fs::canonicalize(&s.site)
            .unwrap()
            .display()
            .to_string(),
    );
}

/// With `--move-site` the deployed-commit basis is forgotten: the next
/// deployment, onto the new site, compares every file as a first one.
#[test]
fn init_move_site_makes_the_next_deployment_a_first_one() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    s.push(&[]).assert_ok().assert_has("successful");
    let other = s.root.join("other-site");
    s.pushdeploy(&[
        "init",
        s.repo.to_str().unwrap(),
        "--site",
        other.to_str().unwrap(),
        "--move-site",
    ])
    .assert_ok()
    .assert_has("set deploy.site")
    .assert_has("the next deployment compares every file");
    assert!(!s.repo.join("pushdeploy/manifest.json").exists());
    s.write("extra.txt", "extra\n");
    s.commit("second");
    s.push(&[])
        .assert_ok()
        .assert_has("first deployment to this site")
        .assert_has("successful");
    assert!(other.join("app.py").exists() && other.join("extra.txt").exists());
    // The old site is left as it was.
    assert!(s.site.join("app.py").exists() && !s.site.join("extra.txt").exists());
}

/// A failed `init` leaves no half-made repository behind.
#[test]
fn a_failed_init_makes_no_repository() {
    let s = Server::new();
    let blocker = s.root.join("blocker");
    std::fs::write(&blocker, "a file, not a directory\n").unwrap();
    let repo = s.root.join("new.git");
    s.init_at(&repo, &blocker.join("site")).assert_status(2);
    assert!(!repo.exists(), "init left {}", repo.display());
}

/// A `.deployment` key names a setting in any case, as in Kudu (issue 15
/// item 14): an app's `PYTHONPATH` is the server's `pythonPath`, left out,
/// and the line says why.
#[test]
fn deployment_keys_name_settings_in_any_case() {
    let s = Server::new();
    s.app("flask-app")
        .write(".deployment", "[config]\nPYTHONPATH = x\n");
    s.commit("PYTHONPATH in .deployment");
    let push = s.push(&[]);
    push.assert_ok()
        .assert_has(
            ".deployment line 2: PYTHONPATH names the server's setting pythonPath (keys are read regardless of case, as Kudu does), which a commit may not set; left out",
        )
        .assert_has("successful");
}

/// `config` says what an unset `poetryPath` means, not just another key's name.
#[test]
fn config_describes_the_default_poetry() {
    let s = Server::new();
    s.run("config", &[])
        .assert_ok()
        .assert_has("(Poetry poetryVersion, on PATH or installed into the cache dir)");
}

/// Issue 15, item 4: `init` refuses a site that another repository deploys
/// to, naming it; once that repository deploys elsewhere, the site is free.
#[test]
fn init_refuses_a_site_another_repository_deploys_to() {
    let s = Server::new();
    let other = s.root.join("other.git");
    let refused = s.init_at(&other, &s.site);
    refused
        .assert_status(2)
        .assert_has(&format!(
            "site {}: repository {} deploys to it",
            s.site.display(),
            std::fs::canonicalize(&s.repo).unwrap().display()
        ))
        .assert_has("--move-site");
    assert!(!other.exists(), "a refused init made the repository");
    // Through another spelling of the site's path too.
    let spelled = s.root.join("link-to-site");
    std::os::unix::fs::symlink(&s.site, &spelled).unwrap();
    s.init_at(&other, &spelled).assert_status(2);
    // The first repository moves to another site: the old one is free.
    let moved = s.root.join("moved-site");
    s.pushdeploy(&[
        "init",
        s.repo.to_str().unwrap(),
        "--site",
        moved.to_str().unwrap(),
        "--move-site",
    ])
    .assert_ok();
    s.init_at(&other, &s.site).assert_ok();
    // Now the other one deploys there: the first cannot come back silently.
    s.pushdeploy(&[
        "init",
        s.repo.to_str().unwrap(),
        "--site",
        s.site.to_str().unwrap(),
        "--move-site",
    ])
    .assert_status(2)
    .assert_has("other.git deploys to it");
}
