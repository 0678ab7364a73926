//! Issues 10 and 11: the sync never leaves the site, whatever is swapped in
//! it meanwhile (11.1); what it replaces or deletes is put back when the
//! deployment fails or is killed (10); a file the app made is never replaced
//! without being asked (11.5); after a custom command the next sync compares
//! every file (11, faults).
//!
//! The sync has a test-only hook, `PUSHDEPLOY_TEST_SYNC`: `fail:<n>` stops
//! it before its n-th change, `pause:<n>:<file>` makes it create `file` and
//! wait until the test removes it, so a race or a kill lands at a known point.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util::{Run, Server, snapshot};

const HOOK: &str = "PUSHDEPLOY_TEST_SYNC";

fn deploy_with(s: &Server, vars: &[(&str, &str)]) -> Run {
    s.pushdeploy_with(&["deploy", "--repo", s.repo.to_str().unwrap()], vars)
}

/// Waits until `file` exists (the sync paused there).
#[track_caller]
fn wait_for(file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !file.exists() {
        assert!(Instant::now() < deadline, "the sync never paused");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Swaps two names at once, as `renameat2(RENAME_EXCHANGE)` does.
fn exchange(a: &Path, b: &Path) {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .unwrap();
}

/// A site with a folder `data/` where the app may write, holding the
/// committed folder `data/files/`; and a directory outside the site with
/// files of the same names, which no sync may touch.
fn site_with_a_shared_folder() -> (Server, PathBuf) {
    let s = Server::new();
    s.write("app.py", "print('v1')\n")
        .write("data/files/a.txt", "a1\n")
        .write("data/files/c.txt", "c1\n");
    s.commit("first");
    s.push(&[]).assert_ok().assert_has("successful");
    let outside = s.root.join("outside");
    std::fs::create_dir(&outside).unwrap();
    for name in ["a.txt", "b.txt", "c.txt"] {
        std::fs::write(outside.join(name), format!("outside {name}\n")).unwrap();
    }
    std::os::unix::fs::symlink(&outside, s.site.join("data/link")).unwrap();
    (s, outside)
}

/// A commit that changes, adds and deletes files in `data/files/`.
fn change_the_shared_folder(s: &Server, round: usize) {
    s.write("data/files/a.txt", &format!("a{round}\n"));
    if round % 2 == 1 {
        s.write("data/files/b.txt", &format!("b{round}\n"))
            .write("data/files/c.txt", "c\n");
    } else {
        s.remove("data/files/b.txt").remove("data/files/c.txt");
    }
    s.commit(&format!("round {round}"));
}

#[track_caller]
fn assert_untouched(outside: &Path, before: &BTreeMap<String, String>) {
    assert_eq!(
        &snapshot(outside),
        before,
        "nothing outside the site is written, deleted or left behind"
    );
}

#[test]
fn a_folder_swapped_for_a_symlink_between_check_and_use_leads_nowhere() {
    // The commit deletes c.txt, changes a.txt and adds b.txt: three changes,
    // each raced at its own point, on a site of its own.
    for at in 1..=3 {
        let (s, outside) = site_with_a_shared_folder();
        let before = snapshot(&outside);
        s.write("data/files/a.txt", "a2\n")
            .write("data/files/b.txt", "b2\n")
            .remove("data/files/c.txt");
        s.commit("second");
        s.update_without_deploy();
        let pause = s.root.join("paused");
        let hook = format!("pause:{at}:{}", pause.display());
        let run = std::thread::scope(|scope| {
            let deploy = scope.spawn(|| deploy_with(&s, &[(HOOK, &hook)]));
            wait_for(&pause);
            // After the plan checked data/files, it becomes a symlink out.
            exchange(&s.site.join("data/files"), &s.site.join("data/link"));
            std::fs::remove_file(&pause).unwrap();
            deploy.join().unwrap()
        });
        assert_untouched(&outside, &before);
        assert!(
            !s.repo.join("pushdeploy/sync-journal.jsonl").exists(),
            "{}",
            run.all()
        );
        // Swapped back, the commit deploys.
        exchange(&s.site.join("data/files"), &s.site.join("data/link"));
        s.run("deploy", &[]).assert_ok();
        assert_eq!(s.site_file("data/files/b.txt"), "b2\n");
        assert!(!s.site.join("data/files/c.txt").exists());
        assert_untouched(&outside, &before);
    }
}

#[test]
fn a_folder_swapped_in_a_loop_during_pushes_leads_nowhere() {
    let (s, outside) = site_with_a_shared_folder();
    let before = snapshot(&outside);
    /// Stops the swapping when the pushes are over, or a check failed.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = AtomicBool::new(false);
    let (files, link) = (s.site.join("data/files"), s.site.join("data/link"));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                exchange(&files, &link);
            }
        });
        let _stop = Stop(&stop);
        for round in 1..=10 {
            change_the_shared_folder(&s, round);
            // Whether a push succeeds depends on where the swap lands.
            s.push(&[]);
            assert_untouched(&outside, &before);
        }
    });
    assert!(!s.repo.join("pushdeploy/sync-journal.jsonl").exists());
}

/// A deployed site with every kind of change ahead: files changed, added and
/// deleted, modes, symlinks, a file that becomes a directory and back, a
/// folder that goes, and the app's own files beside them.
fn site_with_changes_ahead() -> Server {
    let s = Server::new();
    s.write("app.py", "print('v1')\n")
        .write("static/site.css", "css1\n")
        .write("old/gone.txt", "gone\n")
        .write("old/deep/gone.txt", "deep\n")
        .write("becomes_dir", "file\n")
        .write("was_dir/inner.txt", "inner\n")
        .write("run.sh", "#!/bin/sh\necho 1\n");
    std::fs::set_permissions(
        s.work.join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("app.py", s.work.join("main.py")).unwrap();
    s.commit("first");
    s.push(&[]).assert_ok().assert_has("successful");
    // The app's own files, in its own folder and in a committed one.
    std::fs::create_dir(s.site.join("uploads")).unwrap();
    std::fs::write(s.site.join("uploads/photo.jpg"), "app data").unwrap();
    std::fs::write(s.site.join("static/user.css"), "made by the app").unwrap();
    std::fs::set_permissions(
        s.site.join("static"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();

    s.write("app.py", "print('v2')\n")
        .write("static/site.css", "css2\n")
        .write("new/dir/added.txt", "added\n")
        .remove("old")
        .remove("becomes_dir")
        .write("becomes_dir/x.txt", "x\n")
        .remove("was_dir")
        .write("was_dir", "now a file\n")
        .write("run.sh", "#!/bin/sh\necho 2\n")
        .remove("main.py");
    std::fs::set_permissions(
        s.work.join("run.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink("static/site.css", s.work.join("main.py")).unwrap();
    s.commit("second");
    s.update_without_deploy();
    s
}

#[track_caller]
fn assert_nothing_kept(s: &Server) {
    assert!(!s.repo.join("pushdeploy/sync-journal.jsonl").exists());
    let ours: Vec<String> = std::fs::read_dir(&s.site)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pushdeploy-") && n != ".pushdeploy-repository")
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

#[test]
fn a_sync_that_fails_half_way_is_put_back_exactly() {
    let s = site_with_changes_ahead();
    let before = snapshot(&s.site);
    let mut n = 1;
    loop {
        let run = deploy_with(&s, &[(HOOK, &format!("fail:{n}"))]);
        if run.status == 0 {
            break;
        }
        assert!(run.has("test fault before change"), "{}", run.all());
        assert_eq!(snapshot(&s.site), before, "after a failure at change {n}");
        assert_nothing_kept(&s);
        n += 1;
        assert!(n < 50, "the hook never let the sync through");
    }
    assert!(n > 10, "every change was failed at once ({n})");
    // The deployment that went through left the commit and the app's files.
    assert_eq!(s.site_file("app.py"), "print('v2')\n");
    assert_eq!(s.site_file("becomes_dir/x.txt"), "x\n");
    assert_eq!(s.site_file("was_dir"), "now a file\n");
    assert!(!s.site.join("old").exists());
    assert_eq!(s.site_file("uploads/photo.jpg"), "app data");
    assert_eq!(s.site_file("static/user.css"), "made by the app");
    assert_nothing_kept(&s);
}

#[test]
fn a_failed_step_after_the_sync_puts_the_files_back() {
    let s = site_with_changes_ahead();
    let before = snapshot(&s.site);
    s.config(&["deploy.postDeploy", "false"]);
    let run = s.run("deploy", &[]);
    assert_eq!(run.status, 1);
    run.assert_has("Files put back as they were before the sync");
    assert_eq!(snapshot(&s.site), before);
    assert_nothing_kept(&s);
    // The next deployment syncs from the commit that is still deployed.
    s.config(&["--unset", "deploy.postDeploy"]);
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("(changes since ");
    assert_eq!(s.site_file("was_dir"), "now a file\n");
}

#[test]
fn a_failed_first_deployment_leaves_no_file_of_it() {
    let s = Server::new();
    std::fs::write(s.site.join("notes.txt"), "the admin's").unwrap();
    let before = snapshot(&s.site);
    s.write("app.py", "print('v1')\n")
        .write("deep/er/file.txt", "x\n");
    s.commit("first");
    s.config(&["deploy.postDeploy", "false"]);
    let push = s.push(&[]);
    push.assert_has("failed in step postDeploy");
    assert_eq!(snapshot(&s.site), before);
    assert_nothing_kept(&s);
}

/// Runs a deployment paused by the hook at `at`, and kills it there with
/// SIGKILL (its pid is in the lock file).
fn kill_paused_deployment(s: &Server, at: usize) {
    let pause = s.root.join("paused");
    let hook = format!("pause:{at}:{}", pause.display());
    std::thread::scope(|scope| {
        let deploy = scope.spawn(|| deploy_with(s, &[(HOOK, &hook)]));
        wait_for(&pause);
        let holder = std::fs::read_to_string(s.repo.join("pushdeploy/lock")).unwrap();
        let pid: i32 = holder
            .rsplit_once("(pid ")
            .and_then(|(_, p)| p.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("no pid in the lock file: {holder:?}"));
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let killed = deploy.join().unwrap();
        assert_eq!(killed.status, -1, "killed by a signal");
    });
    std::fs::remove_file(&pause).unwrap();
    assert!(s.repo.join("pushdeploy/sync-journal.jsonl").exists());
}

#[test]
fn a_killed_sync_is_put_back_by_the_next_deployment() {
    let s = site_with_changes_ahead();
    let before = snapshot(&s.site);
    kill_paused_deployment(&s, 8);
    assert_ne!(
        snapshot(&s.site),
        before,
        "the sync made changes before the kill"
    );
    // The next deployment undoes the killed sync before its own; stopped at
    // its first change, it shows the site as the kill left it, put back.
    let next = deploy_with(&s, &[(HOOK, "fail:1")]);
    next.assert_has("A sync that did not finish was undone");
    assert_eq!(snapshot(&s.site), before);
    assert_nothing_kept(&s);
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("(changes since ");
    assert_eq!(s.site_file("app.py"), "print('v2')\n");
    assert_eq!(s.site_file("uploads/photo.jpg"), "app data");
}

#[test]
fn a_file_the_app_made_is_refused_unless_equal_or_taken_over() {
    let s = Server::new();
    s.write("app.py", "print('v1')\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    std::fs::write(s.site.join("db.sqlite3"), "the app's data").unwrap();

    // A commit that adds a different db.sqlite3 is refused, with how to accept.
    s.write("db.sqlite3", "the commit's")
        .write("app.py", "print('v2')\n");
    s.commit("adds the database");
    let push = s.push(&[]);
    let last = push.remote().last().unwrap().clone();
    assert!(
        last.contains("failed in step plan")
            && last.contains(
                "commit entry db.sqlite3: the site has this file, which pushdeploy did not write"
            )
            && last.contains("takeOverFiles"),
        "{last}"
    );
    assert_eq!(s.site_file("db.sqlite3"), "the app's data");
    assert_eq!(s.site_file("app.py"), "print('v1')\n");

    // The same with the site's bytes is taken over silently.
    s.write("db.sqlite3", "the app's data");
    s.commit("the database as it is");
    s.push(&[]).assert_ok().assert_has("taken over db.sqlite3");
    assert_eq!(s.site_file("app.py"), "print('v2')\n");

    // Taken over with the setting: the commit's replaces the site's.
    std::fs::write(s.site.join("other.db"), "the app's").unwrap();
    s.write("other.db", "the commit's");
    s.commit("adds another");
    s.update_without_deploy();
    s.run("deploy", &[]).assert_has("other.db");
    s.run("deploy", &["-c", "takeOverFiles=true"]).assert_ok();
    assert_eq!(s.site_file("other.db"), "the commit's");
}

#[test]
fn a_first_deployment_onto_a_filled_site_says_what_it_takes_over_and_refuses() {
    let s = Server::new();
    std::fs::write(s.site.join("same.txt"), "same\n").unwrap();
    std::fs::write(s.site.join("differs.txt"), "the site's\n").unwrap();
    std::fs::write(s.site.join("app_only.txt"), "kept\n").unwrap();
    s.write("same.txt", "same\n")
        .write("differs.txt", "the commit's\n")
        .write("app.py", "x\n");
    s.commit("first");
    s.update_without_deploy();
    // The dry run lists both, then fails as the deployment would.
    let dry = s.run("deploy", &["--dry-run"]);
    assert_eq!(dry.status, 1);
    dry.assert_has("take   same.txt (the site's own file, equal to the commit's: taken over)")
        .assert_has("refuse differs.txt (the site's own file differs from the commit's; -c takeOverFiles=true replaces it)")
        .assert_has("commit entry differs.txt: the site has this file");
    let run = s.run("deploy", &[]);
    assert_eq!(run.status, 1);
    run.assert_has("commit entry differs.txt: the site has this file");
    assert_eq!(s.site_file("differs.txt"), "the site's\n");
    assert!(!s.site.join("app.py").exists(), "nothing was written");
    let run = s.run("deploy", &["--dry-run", "-c", "takeOverFiles=true"]);
    run.assert_ok()
        .assert_has("take   same.txt (the site's own file, equal to the commit's: taken over)")
        .assert_has("write  differs.txt (the site's own file differs: taken over (takeOverFiles))");
    s.run("deploy", &["-c", "takeOverFiles=true"]).assert_ok();
    assert_eq!(s.site_file("differs.txt"), "the commit's\n");
    assert_eq!(s.site_file("app_only.txt"), "kept\n");
}

#[test]
fn the_sync_after_a_custom_command_compares_every_file() {
    let s = Server::new();
    s.write("app.py", "print('the commit')\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    s.write(".deployment", "[config]\ncommand = build.sh\n")
        .write(
            "build.sh",
            "#!/bin/sh\necho \"print('the command')\" > \"$DEPLOYMENT_TARGET/app.py\"\n",
        );
    std::fs::set_permissions(
        s.work.join("build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    s.commit("custom command");
    s.push(&[]).assert_ok().assert_has("successful");
    assert_eq!(s.site_file("app.py"), "print('the command')\n");
    s.remove(".deployment").remove("build.sh");
    s.commit("built-in again");
    s.push(&[])
        .assert_ok()
        .assert_has("ran a custom command: every file compared with the site");
    assert_eq!(s.site_file("app.py"), "print('the commit')\n");
}

#[test]
fn a_deployment_killed_while_cleaning_up_after_success_is_finished_by_the_next() {
    let s = site_with_changes_ahead();
    // Paused once the journal says the deployment succeeded.
    kill_paused_deployment(&s, 0);
    let next = s.run("deploy", &[]);
    next.assert_ok()
        .assert_has(
            "A deployment that succeeded was stopped while it cleaned up: its cleanup is done",
        )
        .assert_has("Syncing files: 0 to write, 0 to delete (changes since ");
    assert_eq!(s.site_file("app.py"), "print('v2')\n");
    assert_eq!(s.site_file("uploads/photo.jpg"), "app data");
    assert_nothing_kept(&s);
}

/// Runs a deployment paused by the hook before change `at`, calls `during`
/// there (the app at work), and lets it go on.
fn deploy_paused(s: &Server, at: usize, args: &[&str], during: impl FnOnce()) -> Run {
    let pause = s.root.join("paused");
    let hook = format!("pause:{at}:{}", pause.display());
    std::thread::scope(|scope| {
        let deploy = scope.spawn(|| {
            s.pushdeploy_with(
                &[&["deploy", "--repo", s.repo.to_str().unwrap()], args].concat(),
                &[(HOOK, &hook)],
            )
        });
        wait_for(&pause);
        // Let go even when a check in `during` fails, or the test hangs.
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(during));
        std::fs::remove_file(&pause).unwrap();
        let run = deploy.join().unwrap();
        if let Err(panic) = checked {
            std::panic::resume_unwind(panic);
        }
        run
    })
}

/// Issue 15, item 5: the sync decides at write time, not only in its plan.
/// A file the app makes at a name the commit adds, after the plan, is the
/// app's: refused (unless `takeOverFiles`), and the undo never removes it.
#[test]
fn a_file_the_app_makes_after_the_plan_is_refused_and_never_removed() {
    let s = Server::new();
    s.write("app.py", "print('v1')\n").write("a/x.txt", "x1\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    // Changes in order: a/x.txt, then the top folder's app.py, b.txt, c.txt
    // (whose names the sync looks at together, before app.py).
    s.write("a/x.txt", "x2\n")
        .write("app.py", "print('v2')\n")
        .write("b.txt", "the commit's b\n")
        .write("c.txt", "the commit's c\n");
    s.commit("adds b.txt and c.txt");
    s.update_without_deploy();
    let refused = |run: &Run, name: &str| {
        assert_eq!(run.status, 1, "{}", run.all());
        run.assert_has(&format!(
            "commit entry {name}: the site has this file, which pushdeploy did not write: it appeared after the plan"
        ))
        .assert_has("the site's files are as they were before it");
    };

    // Made before the sync looks at the top folder: seen there, refused.
    let before = snapshot(&s.site);
    let run = deploy_paused(&s, 1, &[], || {
        std::fs::write(s.site.join("b.txt"), "the app's b").unwrap();
    });
    refused(&run, "b.txt");
    assert_eq!(s.site_file("b.txt"), "the app's b");
    std::fs::remove_file(s.site.join("b.txt")).unwrap();
    assert_eq!(snapshot(&s.site), before);
    assert_nothing_kept(&s);

    // Made after the sync looked, as it is about to write there: its
    // create finds the name taken; the undo removes the b.txt it wrote,
    // not the app's c.txt.
    let run = deploy_paused(&s, 4, &[], || {
        std::fs::write(s.site.join("c.txt"), "the app's c").unwrap();
    });
    refused(&run, "c.txt");
    assert_eq!(s.site_file("c.txt"), "the app's c");
    std::fs::remove_file(s.site.join("c.txt")).unwrap();
    assert_eq!(snapshot(&s.site), before);
    assert_nothing_kept(&s);

    // Killed there instead, and the app makes c.txt before the next
    // deployment puts the killed sync back: the b.txt the sync wrote goes,
    // the app's c.txt stays.
    kill_paused_deployment(&s, 4);
    std::fs::write(s.site.join("c.txt"), "the app's c").unwrap();
    let next = deploy_with(&s, &[(HOOK, "fail:1")]);
    next.assert_has("A sync that did not finish was undone");
    assert_eq!(s.site_file("c.txt"), "the app's c");
    std::fs::remove_file(s.site.join("c.txt")).unwrap();
    assert_eq!(snapshot(&s.site), before);
    assert_nothing_kept(&s);

    // With takeOverFiles, the app's file is replaced by the commit's.
    let run = deploy_paused(&s, 1, &["-c", "takeOverFiles=true"], || {
        std::fs::write(s.site.join("b.txt"), "the app's b").unwrap();
    });
    run.assert_ok();
    assert_eq!(s.site_file("b.txt"), "the commit's b\n");
    assert_eq!(s.site_file("c.txt"), "the commit's c\n");
    assert_eq!(s.site_file("app.py"), "print('v2')\n");
    assert_nothing_kept(&s);
}

/// Issue 15, item 7: a FIFO where the commit has a file (a local user's,
/// in a folder the app writes) is never read as one: the plan opens without
/// blocking and checks what it opened. The commit's own file is repaired,
/// one the app's folder holds at a new name is refused.
#[test]
fn a_fifo_where_the_commit_has_a_file_never_holds_a_deployment() {
    let s = Server::new();
    s.write("app.py", "print('v1')\n")
        .write("data/seed.txt", "seed\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    let fifo = |rel: &str| {
        let path = s.site.join(rel);
        let _ = std::fs::remove_file(&path);
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
    };
    fifo("data/seed.txt");
    fifo("data/new.txt");
    s.write("data/new.txt", "new\n");
    s.commit("adds data/new.txt");
    s.update_without_deploy();
    let run = s.run("deploy", &["--verify"]);
    assert_eq!(run.status, 1, "{}", run.all());
    run.assert_has(
        "commit entry data/new.txt: the site has this file, which pushdeploy did not write",
    );
    std::fs::remove_file(s.site.join("data/new.txt")).unwrap();
    s.run("deploy", &["--verify"]).assert_ok();
    assert_eq!(s.site_file("data/seed.txt"), "seed\n");
    assert_eq!(s.site_file("data/new.txt"), "new\n");
}

/// Issue 15, item 4: two repositories that deploy into one site (set up by
/// hand, past `init`'s refusal) never sweep each other's kept copies or
/// temp files: one's rollback still puts back the file it deleted, after
/// the other deployed meanwhile.
#[test]
fn two_repositories_in_one_site_never_sweep_each_others_kept_files() {
    let a = Server::new();
    a.write("app.py", "print('a')\n").write("x.txt", "a's x\n");
    a.commit("first");
    a.push(&[]).assert_ok();
    // Repository b, made for a site of its own, then pointed at a's site.
    let b_repo = a.root.join("b.git");
    let b_site = a.root.join("b-site");
    a.init_at(&b_repo, &b_site).assert_ok();
    crate::util::git_in(&a.root)
        .args([
            "--git-dir",
            b_repo.to_str().unwrap(),
            "config",
            "deploy.site",
        ])
        .args([a.site.to_str().unwrap()])
        .run()
        .assert_ok();
    let b_work = a.root.join("b-work");
    std::fs::create_dir(&b_work).unwrap();
    std::fs::write(b_work.join("b.txt"), "b's\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "b"],
    ] {
        crate::util::git_in(&b_work).args(args).run().assert_ok();
    }
    crate::util::git_in(&a.root)
        .args(["--git-dir", b_repo.to_str().unwrap(), "fetch", "-q"])
        .args([b_work.to_str().unwrap()])
        .args(["+main:main"])
        .run()
        .assert_ok();

    // a's next commit deletes x.txt and adds y.txt; its deployment fails
    // after the sync (postDeploy), so it puts x.txt back.
    a.remove("x.txt").write("y.txt", "a's y\n");
    a.commit("second");
    a.update_without_deploy();
    a.config(&["deploy.postDeploy", "false"]);
    let run = deploy_paused(&a, 2, &[], || {
        // x.txt is kept aside, under a name that says whose it is; a's
        // write of a temp file there is under way.
        let aside: Vec<String> = std::fs::read_dir(&a.site)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".pushdeploy-old-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let tag = aside[0]["pushdeploy-old-".len() + 1..]
            .split('-')
            .next()
            .unwrap()
            .to_string();
        let temp = a.site.join(format!(".pushdeploy-tmp-{tag}-1234"));
        std::fs::write(&temp, "a's temp").unwrap();
        // Meanwhile b deploys into the same site (its own lock).
        let b = a.pushdeploy(&["deploy", "--repo", b_repo.to_str().unwrap()]);
        b.assert_ok().assert_has(&format!(
            "warning: repository {} deploys to this site too",
            std::fs::canonicalize(&a.repo).unwrap().display()
        ));
        assert_eq!(a.site_file("b.txt"), "b's\n");
        assert!(a.site.join(&aside[0]).is_dir(), "b swept a's kept files");
        assert!(temp.exists(), "b swept a's temp file");
    });
    assert_eq!(run.status, 1, "{}", run.all());
    run.assert_has("Files put back as they were before the sync");
    assert_eq!(a.site_file("x.txt"), "a's x\n");
    assert!(!a.site.join("y.txt").exists());
    // a's own sweeps take its temp file; b's file stays.
    a.config(&["--unset", "deploy.postDeploy"]);
    a.run("deploy", &[]).assert_ok();
    assert!(!a.site.join("x.txt").exists());
    assert_eq!(a.site_file("b.txt"), "b's\n");
    assert_nothing_kept(&a);
}

/// Issue 15, item 5, the same for files the sync deleted or replaced: when
/// the app writes a new file at such a name after the sync, the rollback
/// leaves the app's file and keeps the deployment's for a person, instead
/// of putting it back over the app's.
#[test]
fn a_rollback_never_puts_a_kept_file_over_one_the_app_wrote_since() {
    let s = Server::new();
    s.write("app.py", "print('v1')\n")
        .write("d.txt", "ours d\n")
        .write("e.txt", "ours e1\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    // Changes: delete d.txt, then write e.txt, then f.txt.
    s.remove("d.txt")
        .write("e.txt", "ours e2\n")
        .write("f.txt", "ours f\n");
    s.commit("second");
    s.update_without_deploy();
    s.config(&["deploy.postDeploy", "false"]);
    let run = deploy_paused(&s, 3, &[], || {
        std::fs::write(s.site.join("d.txt"), "the app's d").unwrap();
        // A new file renamed over the sync's e.txt, as editors and apps do.
        std::fs::write(s.root.join("e.new"), "the app's e").unwrap();
        std::fs::rename(s.root.join("e.new"), s.site.join("e.txt")).unwrap();
    });
    assert_eq!(run.status, 1, "{}", run.all());
    run.assert_has("d.txt: a file the sync did not write is there now")
        .assert_has("e.txt: a file the sync did not write is there now");
    assert_eq!(s.site_file("d.txt"), "the app's d");
    assert_eq!(s.site_file("e.txt"), "the app's e");
    assert!(!s.site.join("f.txt").exists());
    // The deployment's own copies are kept for a person to look at.
    let kept: Vec<String> = std::fs::read_dir(&s.site)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pushdeploy-unrestored-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let contents: std::collections::BTreeSet<String> =
        snapshot(&s.site.join(&kept[0])).into_values().collect();
    assert!(
        contents.iter().any(|c| c.contains("ours d"))
            && contents.iter().any(|c| c.contains("ours e1")),
        "{contents:?}"
    );
}

/// Issue 15, item 7, where the sync reads a file by its path: a custom
/// command's output. A file of it swapped for a FIFO after the plan (by a
/// process the command left behind) is refused when the sync opens it,
/// and the sync is undone; it is never read as the file, nor waited on.
#[test]
fn a_fifo_swapped_into_a_commands_output_is_refused_not_read() {
    let s = Server::new();
    s.write("app.py", "print('v1')\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    let noted = s.root.join("target-path");
    s.write(".deployment", "[config]\ncommand = build.sh\n").write(
        "build.sh",
        &format!(
            "#!/bin/sh\necho \"$DEPLOYMENT_TARGET\" > '{}'\necho one > \"$DEPLOYMENT_TARGET/a.txt\"\necho two > \"$DEPLOYMENT_TARGET/b.txt\"\n",
            noted.display()
        ),
    );
    std::fs::set_permissions(
        s.work.join("build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    s.commit("custom command");
    s.update_without_deploy();
    // A FIFO with a second name outside the output, to reach it whatever
    // becomes of the output directory.
    let fifo = s.root.join("fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let run = deploy_paused(&s, 2, &[], || {
        let target = PathBuf::from(std::fs::read_to_string(&noted).unwrap().trim_end());
        std::fs::remove_file(target.join("b.txt")).unwrap();
        std::fs::hard_link(&fifo, target.join("b.txt")).unwrap();
        // A writer that feeds whoever opens it for reading.
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(fifo) {
                let _ = w.write_all(b"from the fifo\n");
            }
        });
    });
    // Lets the writer go if nothing opened the FIFO.
    let _reader = rustix::fs::open(
        &fifo,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    );
    assert_eq!(run.status, 1, "{}", run.all());
    run.assert_has("b.txt: not a regular file");
    assert!(!s.site.join("a.txt").exists() && !s.site.join("b.txt").exists());
    assert_eq!(s.site_file("app.py"), "print('v1')\n");
    assert_nothing_kept(&s);
}

/// Python trusts `__pycache__/<module>.<tag>.pyc` while the source has the
/// size and whole-second mtime it records: a same-size change synced within
/// the second of the one before would run the old code. A source the sync
/// replaces, deletes or puts back loses its bytecode; another module's
/// bytecode stays.
#[test]
fn a_changed_deleted_or_put_back_source_loses_its_bytecode() {
    let s = Server::new();
    s.write("requirements.txt", "");
    s.write("app.py", "X = 1\n");
    s.write("gone.py", "Y = 1\n");
    s.write("other.py", "Z = 1\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    let cache = s.site.join("__pycache__");
    let plant = |names: &[&str]| {
        std::fs::create_dir_all(&cache).unwrap();
        for name in names {
            std::fs::write(cache.join(name), "stale").unwrap();
        }
    };
    let left = || {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    plant(&[
        "app.cpython-311.pyc",
        "app.cpython-311.opt-1.pyc",
        "gone.cpython-311.pyc",
        "other.cpython-311.pyc",
    ]);
    s.write("app.py", "X = 2\n");
    s.remove("gone.py");
    s.commit("second");
    s.push(&[]).assert_ok().assert_has("successful");
    assert_eq!(left(), ["other.cpython-311.pyc"]);

    // The new version's bytecode (made here by postDeploy, as the app would
    // make it) does not outlive a rollback that puts the old source back.
    let made = s.root.join("made-bytecode");
    std::fs::write(
        &made,
        format!(
            "#!/bin/sh\nif grep -q 'X = 3' app.py; then echo new > '{}/app.cpython-311.pyc'; fi\n",
            cache.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.config(&["deploy.postDeploy", made.to_str().unwrap()]);
    // The new version fails its check; the old one passes it again.
    s.config(&["deploy.healthCheck", "grep -q 'X = 2' app.py"]);
    s.config(&["deploy.healthCheckTimeout", "1"]);
    s.write("app.py", "X = 3\n");
    s.commit("third");
    let push = s.push(&[]);
    push.assert_has("rolled back to");
    assert!(!push.has("may be down"), "{push}");
    assert_eq!(s.site_file("app.py"), "X = 2\n");
    assert_eq!(left(), ["other.cpython-311.pyc"]);
}
