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
    // A wheel of the commit (one outside the site is refused).
    let name = "greeting-1.0.0-py2.py3-none-any.whl";
    std::fs::create_dir_all(s.work.join("wheels")).unwrap();
    std::fs::copy(
        fixtures().join("wheels").join(name),
        s.work.join("wheels").join(name),
    )
    .unwrap();
    s.write(
        "requirements.txt",
        &format!("-r base.txt\n./wheels/{name}\n"),
    );
    s.commit("a local wheel");
    s.push(&[]).assert_ok();
    touch_and_push(&s, &[])
        .assert_has("requirements.txt line 2 is a local path: the installer always runs");
}

#[test]
#[ignore = "needs uv: bash .ci/run installs it and runs ignored tests"]
fn the_uv_installer_installs_and_says_so() {
    let uv = crate::util::uv()
        .expect("uv is on PATH or in target/tools/bin (bash .ci/run installs it there)");
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

#[test]
fn the_sync_works_from_the_diff_and_verify_repairs_drift() {
    let s = Server::new();
    s.write("a.txt", "a\n")
        .write("b/c.txt", "c\n")
        .write("d.txt", "d\n");
    let first = s.commit("first");
    s.push(&[])
        .assert_ok()
        .assert_has("Syncing files: 3 to write, 0 to delete (first deployment to this site)");
    s.write("a.txt", "a2\n").remove("d.txt");
    s.commit("second");
    s.push(&[]).assert_ok().assert_has(&format!(
        "Syncing files: 1 to write, 1 to delete (changes since {})",
        &first[..7]
    ));

    // Drift: a deployed file edited and another deleted by hand.
    std::fs::write(s.site.join("a.txt"), "edited by hand\n").unwrap();
    std::fs::remove_file(s.site.join("b/c.txt")).unwrap();
    std::fs::write(s.site.join("upload.bin"), "the app's").unwrap();
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("Syncing files: 0 to write, 0 to delete (changes since");
    assert_eq!(
        s.site_file("a.txt"),
        "edited by hand\n",
        "without --verify, only changes are synced"
    );
    let verify = s.run("deploy", &["--verify"]);
    verify.assert_ok().assert_has("Syncing files: 2 to write, 0 to delete, 0 unchanged (--verify: every file compared with the site)");
    assert_eq!(s.site_file("a.txt"), "a2\n");
    assert_eq!(s.site_file("b/c.txt"), "c\n");
    assert_eq!(s.site_file("upload.bin"), "the app's");
    s.run("deploy", &["--verify"])
        .assert_ok()
        .assert_has("0 to write, 0 to delete, 2 unchanged");
}

#[test]
fn git_keeps_the_deployed_commit_and_a_lost_one_falls_back_to_comparing() {
    let s = Server::new();
    s.write("keep.txt", "k\n").write("old.txt", "o\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    // History rewritten and pruned: the deployed commit is pinned, so it stays.
    s.git(&["checkout", "-q", "--orphan", "fresh"]).assert_ok();
    s.remove("old.txt").write("new.txt", "n\n");
    s.commit("rewritten");
    s.push(&["-f", "fresh:main"])
        .assert_ok()
        .assert_has("1 to write, 1 to delete (changes since");
    assert!(!s.site.join("old.txt").exists());
    s.git_server(&["gc", "-q", "--prune=now"]).assert_ok();
    s.write("more.txt", "m\n");
    s.commit("more");
    s.push(&["fresh:main"])
        .assert_ok()
        .assert_has("1 to write, 0 to delete (changes since");

    // A manifest naming a commit git does not have: every file is compared.
    let manifest = s.repo.join("pushdeploy/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let lost = json["commit"].as_str().unwrap().to_string();
    std::fs::write(
        &manifest,
        text.replace(&lost, "1111111111111111111111111111111111111111"),
    )
    .unwrap();
    s.run("deploy", &[]).assert_ok().assert_has("the deployed commit 1111111 is gone from the repository: every file compared with the site");
}

/// The system calls of a first deployment of `files` files (40 a
/// directory, no Python), counted by `strace -f -c`, std's debug-build
/// check of each descriptor it closes (`fcntl`) left out.
fn first_deployment_calls(strace: &std::path::Path, files: usize) -> u64 {
    let s = Server::new();
    for i in 0..files {
        s.write(
            &format!("src/d{:03}/f{i:05}.txt", i / 40),
            &format!("{i}\n"),
        );
    }
    s.commit("files");
    s.update_without_deploy();
    let out = s.root.join("strace.txt");
    crate::util::TestCommand::new(strace, &s.root)
        .args(["-f", "-c", "-o"])
        .args([&out])
        .args([env!("CARGO_BIN_EXE_pushdeploy"), "deploy", "--repo"])
        .args([&s.repo])
        .run()
        .assert_ok()
        .assert_has("successful");
    assert_eq!(s.site_file(&format!("src/d000/f{:05}.txt", 7)), "7\n");
    let table = std::fs::read_to_string(&out).unwrap();
    table
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let name = *words.last()?;
            let calls: u64 = words.get(3)?.parse().ok()?;
            (name != "total" && name != "fcntl").then_some(calls)
        })
        .sum()
}

/// Issue 17: a first deployment makes each file with five system calls
/// (its temp name opened, written, its inode read for the journal, closed,
/// renamed in without replacing anything), as `git archive | tar -x` takes
/// four or five: no lookup of a name in a directory the sync has just
/// made, no mode set again that the umask left as it was, no search among
/// the loose objects for a packed blob, no process id asked for each temp
/// name. Counted as the difference between 800 and 400 files, where
/// strace is installed; a directory (of 40 files here) takes a dozen more,
/// its journal lines among them: under half a call a file.
#[test]
fn a_first_deployment_takes_five_system_calls_a_file() {
    let Ok(strace) = which::which("strace") else {
        eprintln!("strace is not installed: skipping");
        return;
    };
    let small = first_deployment_calls(&strace, 400);
    let large = first_deployment_calls(&strace, 800);
    let per_file = (large - small) as f64 / 400.0;
    assert!(per_file <= 5.5, "{per_file} system calls a file");
}

/// Issue 17: a first deployment's memory does not grow with the repository's
/// delta chains. 12,000 similar files (18 MiB) written by `git fast-import`,
/// which stores each as a delta of the one before, in chains of up to 50 (a
/// bulk import, or a push whose files are alike, looks the same). libgit2
/// kept 16 MiB of the bases it inflated and every tree it read (raw and
/// parsed); the pack reader keeps 2 MiB of objects and gives back the pages
/// of the pack it read. Peak RSS measured by GNU time, where it is installed.
#[test]
fn a_first_deployment_of_delta_chains_keeps_its_memory() {
    let time = std::path::Path::new("/usr/bin/time");
    if !time.exists() {
        eprintln!("GNU time is not installed: skipping");
        return;
    }
    let s = Server::new();
    let common: String = (0..60)
        .map(|i| format!("setting_{i} = {}  # shared by every file\n", i * 7919))
        .collect();
    let content = |i: usize| format!("# file {i}\n{common}value = {i}\n");
    let mut stream = String::from(
        "commit refs/heads/main\ncommitter t <t@example.invalid> 1700000000 +0000\ndata 4\nbulk\n",
    );
    for i in 0..12_000 {
        let text = content(i);
        let path = format!("src/d{:03}/f{i:05}.py", i / 50);
        stream.push_str(&format!(
            "M 100644 inline {path}\ndata {}\n{text}\n",
            text.len()
        ));
    }
    stream.push_str("done\n");
    crate::util::git_in(&s.root)
        .args(["--git-dir"])
        .args([&s.repo])
        .args(["fast-import", "--quiet", "--done"])
        .stdin(stream)
        .run()
        .assert_ok();
    let out = s.root.join("time.txt");
    crate::util::TestCommand::new(time, &s.root)
        .args(["-f", "%M", "-o"])
        .args([&out])
        .args([env!("CARGO_BIN_EXE_pushdeploy"), "deploy", "--repo"])
        .args([&s.repo])
        .run()
        .assert_ok()
        .assert_has("12000 to write");
    assert_eq!(s.site_file("src/d100/f05007.py"), content(5007));
    let text = std::fs::read_to_string(&out).unwrap();
    let kib: u64 = text.split_whitespace().last().unwrap().parse().unwrap();
    assert!(kib < 24 * 1024, "peak RSS {kib} KiB");
}
