//! Issue 6: faults. A deployment killed with SIGKILL in the middle of each
//! step (each step made to block or last on purpose, with real inputs, so
//! the kill lands where it should without guessing at times); then the next
//! deployment must complete, leave the site equal to its commit with a
//! working env, mark the killed one's record as not finished, and find the
//! lock free. And a server set up wrong (site missing or a file, state dir
//! unwritable, no interpreter) gets one clear line and nothing half-changed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::util::{Server, deployed_flask, pyenv, snapshot};

/// Long enough for any step of a test deployment on a slow machine.
const PATIENCE: Duration = Duration::from_secs(120);

/// `pushdeploy deploy` running in the background; its output (stdout and
/// stderr in one stream) is read line by line as it comes.
struct Background {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Background {
    fn start(s: &Server, args: &[&str], vars: &[(&str, &str)]) -> Background {
        let (reader, writer) = std::io::pipe().unwrap();
        let child = s
            .pushdeploy_command(&["deploy", "--repo", s.repo.to_str().unwrap()])
            .args(args)
            .envs(vars)
            .spawn(writer.try_clone().unwrap().into(), writer.into());
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Background {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn take(&mut self, line: String) {
        eprintln!("[background] {line}");
        self.seen.push(line);
    }

    /// Waits for a line of output that starts with `prefix`.
    fn wait_for_line(&mut self, prefix: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let found = line.starts_with(prefix);
                    self.take(line);
                    if found {
                        return;
                    }
                }
                Err(_) => self.fail(&format!("no line starting with {prefix:?}")),
            }
        }
    }

    /// Waits until `ready` says so, reading output meanwhile.
    fn wait_until(&mut self, what: &str, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ready() {
            match self.lines.recv_timeout(Duration::from_millis(2)) {
                Ok(line) => self.take(line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("pushdeploy ended before {what}"))
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out waiting for {what}"));
            }
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("{why}; output so far:\n{}", self.seen.join("\n"));
    }

    /// SIGKILL, as `kill -9` or the OOM killer would; returns all it printed.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "pushdeploy was still running when killed"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.take(line);
        }
        self.seen
    }
}

/// The app's files in a directory: no env, no env directories, no `.git`.
fn app_files(dir: &Path) -> BTreeMap<String, String> {
    snapshot(dir)
        .into_iter()
        .filter(|(path, _)| {
            let top = path.split('/').next().unwrap();
            top != "env"
                && top != ".git"
                && !top.starts_with(".pushdeploy-env-")
                && top != ".pushdeploy-repository"
        })
        .collect()
}

/// What a killed deployment may leave at the top of the site (env
/// directories a killed build was making, temp files of a killed sync).
fn leftovers(site: &Path) -> Vec<String> {
    std::fs::read_dir(site)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pushdeploy-"))
        .filter(|n| n != ".pushdeploy-repository")
        .collect()
}

fn lock_is_free(s: &Server) -> bool {
    // A child forked at the moment of the kill holds the lock's file until
    // it execs or exits (close-on-exec), which takes a moment on a loaded
    // machine.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let lock = std::fs::File::open(s.repo.join("pushdeploy/lock")).unwrap();
        if lock.try_lock().is_ok() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The checks after a deployment was killed, and the next one that must
/// finish the job.
#[track_caller]
fn recovers(s: &Server, killed: &str, next_args: &[&str]) -> crate::util::Run {
    assert!(
        lock_is_free(s),
        "the kernel frees the lock of a killed deployment"
    );
    let records = s.records();
    assert_eq!(records[0]["id"], killed);
    assert_eq!(
        records[0]["status"], "running",
        "killed before its record was finished"
    );
    let next = s.run("deploy", next_args);
    next.assert_ok();
    assert!(!next.has("Waiting for"), "nothing holds the lock");
    let seq = records[0]["seq"].as_u64().unwrap();
    let records = s.records();
    let old = records
        .iter()
        .find(|r| r["seq"].as_u64() == Some(seq))
        .unwrap();
    // Rolled back when it had begun to change the site, else failed.
    let status = old["status"].as_str().unwrap();
    assert!(status == "failed" || status == "rolled back", "{old}");
    next.assert_has(&format!(
        "Deployment {} (#{seq}) did not finish; its record is marked {status}",
        &killed[..7]
    ));
    assert!(
        old["error"].as_str().unwrap().contains("did not finish"),
        "{old}"
    );
    assert_eq!(records[0]["status"], "success");
    assert_eq!(
        app_files(&s.site),
        app_files(&s.work),
        "the site is the commit"
    );
    s.env_python("import greeting").assert_ok();
    assert!(lock_is_free(s));
    next
}

#[test]
fn killed_during_sync() {
    let s = deployed_flask();
    // Enough files that the sync lasts well over a second in a debug build.
    for i in 0..3000 {
        s.write(
            &format!("bulk/{:02}/file{i}.txt", i % 30),
            &format!("{i}\n"),
        );
    }
    s.write("app.py", "print('second')\n");
    let id = s.commit("many files");
    s.update_without_deploy();
    let pending = s.repo.join("pushdeploy/manifest.pending.json");

    let mut run = Background::start(&s, &[], &[]);
    run.wait_for_line("-----> Syncing files: 3001 to write");
    run.wait_until("the sync started writing", || pending.exists());
    let output = run.kill();
    assert!(
        !output.iter().any(|l| l.contains("sync: done")),
        "{output:?}"
    );
    assert!(pending.exists(), "killed in the middle of the sync");
    let written = snapshot(&s.site.join("bulk"))
        .values()
        .filter(|v| v.starts_with("file"))
        .count();
    assert!(written < 3000, "the sync was cut short ({written} files)");
    // Killed between making a file's temp file and renaming it, a sync
    // leaves the temp file; the kill may land there or not, so one is made
    // here as it would be.
    std::fs::create_dir_all(s.site.join("bulk/07")).unwrap();
    std::fs::write(s.site.join("bulk/07/.pushdeploy-tmp-AbC123"), "half").unwrap();
    std::fs::write(s.site.join(".pushdeploy-tmp-XyZ789"), "").unwrap();

    recovers(&s, &id, &[]);
    assert!(!pending.exists());
    assert_eq!(leftovers(&s.site), Vec::<String>::new());
}

/// A killed deployment's record says running, but the lock is free: `list`,
/// `show` and `list --json` say it did not finish (the stored status stays
/// until the next deployment). The dry run says that the deployment puts
/// the killed sync back first, changes nothing, and plans the files as
/// they will be after the put-back (it said "0 to write", all unchanged).
#[test]
fn a_killed_deployment_lists_as_not_finished_and_the_dry_run_plans_the_put_back() {
    let s = deployed_flask();
    for i in 0..3000 {
        s.write(
            &format!("bulk/{:02}/file{i}.txt", i % 30),
            &format!("{i}\n"),
        );
    }
    s.write("app.py", "print('second')\n");
    let id = s.commit("many files");
    s.update_without_deploy();
    let pending = s.repo.join("pushdeploy/manifest.pending.json");

    let mut run = Background::start(&s, &[], &[]);
    run.wait_for_line("-----> Syncing files: 3001 to write");
    run.wait_until("the sync started writing", || pending.exists());
    // While it runs, it is running.
    let live = s.run("list", &[]);
    live.assert_ok();
    let row = live.stdout.lines().nth(1).unwrap().to_string();
    run.kill();
    assert!(row.contains(" running "), "{row}");
    assert!(lock_is_free(&s));

    let list = s.run("list", &[]);
    list.assert_ok();
    let row = list.stdout.lines().nth(1).unwrap();
    assert!(row.contains(" did not finish "), "{row}");
    let records = s.records();
    assert_eq!(records[0]["status"], "running", "the stored status stays");
    assert_eq!(records[0]["did_not_finish"], true);
    assert_eq!(records[1].get("did_not_finish"), None, "{}", records[1]);
    s.run("show", &[&id[..7]])
        .assert_ok()
        .assert_has("status:   did not finish");

    let before = snapshot(&s.site);
    let dry = s.run("deploy", &["--dry-run"]);
    dry.assert_ok()
        .assert_has("A deployment was killed after it began to change the site: the deployment first puts back the last good deployment (")
        .assert_has("Files: 3001 to write, 0 to delete");
    assert_eq!(snapshot(&s.site), before, "the dry run changes nothing");
    assert!(pending.exists());
    assert!(s.repo.join("pushdeploy/sync-journal.jsonl").exists());

    recovers(&s, &id, &[]).assert_has("Syncing files: 3001 to write");
}

/// A `python3.11` that is the real one, except that `-m venv` blocks (while
/// the file `block` is beside it) after writing its pid to `blocked.pid`.
fn blocking_python(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let real = pyenv("3.11.7").with_file_name("python3.11");
    let script = format!(
        r#"#!/bin/sh
here=$(dirname "$0")
case "$1" in
-c) # pushdeploy's probe: the version, then this wrapper as the executable
    '{real}' "$@" | {{ read -r version; echo "$version"; echo "$0"; }}
    exit 0 ;;
-m) if [ "$2" = venv ] && [ -e "$here/block" ]; then
        echo $$ > "$here/blocked.pid.tmp" && mv "$here/blocked.pid.tmp" "$here/blocked.pid"
        exec sleep 300
    fi ;;
esac
exec '{real}' "$@"
"#,
        real = real.display()
    );
    let path = dir.join("python3.11");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("block"), "").unwrap();
}

fn git_config(s: &Server, args: &[&str]) {
    let mut all = vec!["--git-dir", s.repo.to_str().unwrap(), "config"];
    all.extend_from_slice(args);
    s.git(&all).assert_ok();
}

#[test]
fn killed_while_creating_the_env() {
    let s = deployed_flask();
    let id = s.git(&["rev-parse", "HEAD"]).stdout.trim().to_string();
    let wrapper = s.root.join("slow-python");
    blocking_python(&wrapper);
    git_config(&s, &["deploy.pythonPath", wrapper.to_str().unwrap()]);
    let pid_file = wrapper.join("blocked.pid");

    let mut run = Background::start(&s, &["--recreate-env"], &[]);
    run.wait_for_line("-----> Creating virtual environment env/");
    run.wait_until("python -m venv blocks", || pid_file.exists());
    let output = run.kill();
    assert!(
        output
            .iter()
            .any(|l| l.contains(&*wrapper.to_string_lossy()))
    );
    // The sleeping `python -m venv` outlives pushdeploy: end it by its pid.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    s.env_python("import greeting").assert_ok();

    git_config(&s, &["--unset", "deploy.pythonPath"]);
    let next = recovers(&s, &id, &[]);
    next.assert_has("Found compatible virtual environment env/");
    // The directory the killed build was making stays beside the env until
    // an env is built again (env::remove_stale runs only then); it is never
    // the env itself.
    let stale = leftovers(&s.site);
    assert!(stale.len() <= 1, "{stale:?}");
}

#[test]
fn killed_during_pip() {
    let s = deployed_flask();
    // pip reads this included requirements file first: a FIFO in the site
    // (a file of the app's, not of the commit), so pip waits in open()
    // until a writer comes.
    let fifo = s.site.join("more-requirements.txt");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let requirements = std::fs::read_to_string(s.work.join("requirements.txt")).unwrap();
    s.write(
        "requirements.txt",
        &format!("{requirements}-r more-requirements.txt\n"),
    );
    let id = s.commit("requirements that include a FIFO");
    s.update_without_deploy();

    let mut run = Background::start(&s, &[], &[]);
    run.wait_for_line("-----> pip install -r requirements.txt");
    // Opening a FIFO for writing without blocking fails until pip has it open.
    let writer = {
        let fifo = fifo.clone();
        let opened = std::cell::RefCell::new(None);
        run.wait_until("pip opens the included requirements file", || {
            const O_NONBLOCK: i32 = 0o4000; // Linux
            if let Ok(f) = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(O_NONBLOCK)
                .open(&fifo)
            {
                *opened.borrow_mut() = Some(f);
            }
            opened.borrow().is_some()
        });
        opened.into_inner().unwrap()
    };
    let output = run.kill();
    assert!(
        !output.iter().any(|l| l.contains("pip: done")),
        "{output:?}"
    );
    // pip dies with pushdeploy (it must not go on installing into the env
    // while the next deployment holds the lock): the FIFO loses its reader.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match std::io::Write::write_all(&mut &writer, b"\n") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            _ if std::time::Instant::now() > deadline => {
                panic!("pip outlived the killed deployment")
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    drop(writer);
    std::fs::remove_file(&fifo).unwrap();
    std::fs::write(&fifo, "").unwrap();
    // The app's file, beside the commit's: the same in the clone, uncommitted.
    std::fs::write(s.work.join("more-requirements.txt"), "").unwrap();

    recovers(&s, &id, &[]).assert_has("pip: done");
}

/// An LD_PRELOAD library whose fsync() stops for good when it is about to
/// make a deployment record final: a file in `STOP_DIR` holding `STOP_WORD`.
/// It writes `STOP_FLAG` first, so the test knows where the process stands.
const STOP_BEFORE_RECORD: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    const char *dir = getenv("STOP_DIR"), *word = getenv("STOP_WORD"), *flag = getenv("STOP_FLAG");
    if (dir && word && flag) {
        char link[64], path[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        if (n > 0) {
            path[n] = 0;
            static char buf[1 << 16];
            ssize_t m;
            if (strncmp(path, dir, strlen(dir)) == 0
                && (m = pread(fd, buf, sizeof buf - 1, 0)) > 0) {
                buf[m] = 0;
                if (strstr(buf, word)) {
                    close(open(flag, O_WRONLY | O_CREAT, 0644));
                    for (;;) pause();
                }
            }
        }
    }
    return real(fd);
}
"#;

fn stop_library(dir: &Path) -> PathBuf {
    crate::util::preload_library(dir, "stop", STOP_BEFORE_RECORD)
}

#[test]
fn killed_while_writing_the_record() {
    let s = deployed_flask();
    s.write("app.py", "print('second')\n");
    let id = s.commit("second");
    s.update_without_deploy();
    let library = stop_library(&s.root);
    let flag = s.root.join("stopped");
    let deployments = s.repo.join("pushdeploy/deployments");

    let mut run = Background::start(
        &s,
        &[],
        &[
            ("LD_PRELOAD", library.to_str().unwrap()),
            ("STOP_DIR", deployments.to_str().unwrap()),
            ("STOP_WORD", "\"status\": \"success\""),
            ("STOP_FLAG", flag.to_str().unwrap()),
        ],
    );
    run.wait_until("the record is about to say success", || flag.exists());
    let output = run.kill();
    assert!(
        output
            .last()
            .is_some_and(|l| l.contains(&format!("Deployment {} successful", &id[..7]))),
        "the work was done, only the record was not: {output:?}"
    );

    // Issue 15 item 1: it had passed its commit point, so it stands: the
    // next deployment finishes it and marks its record a success.
    assert!(lock_is_free(&s));
    let seq = s.records()[0]["seq"].as_u64().unwrap();
    let next = s.run("deploy", &[]);
    next.assert_ok().assert_has(&format!(
        "Deployment {} (#{seq}) did not finish; its record is marked success",
        &id[..7]
    ));
    assert!(!next.has("putting back"), "{next}");
    let records = s.records();
    let old = records
        .iter()
        .find(|r| r["seq"].as_u64() == Some(seq))
        .unwrap();
    assert_eq!(old["status"], "success", "{old}");
    assert_eq!(
        app_files(&s.site),
        app_files(&s.work),
        "the site is the commit"
    );
    s.env_python("import greeting").assert_ok();
}

/// A second server setting that is wrong, and the one line that says so.
struct Misconfigured {
    status: i32,
    line: String,
}

fn deploy_line(s: &Server, vars: &[(&str, &str)]) -> Misconfigured {
    let run = s.pushdeploy_with(&["deploy", "--repo", s.repo.to_str().unwrap()], vars);
    let line = if run.stderr.trim().is_empty() {
        run.stdout.lines().last().unwrap_or("").to_string()
    } else {
        assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
        run.stderr.trim().to_string()
    };
    Misconfigured {
        status: run.status,
        line,
    }
}

#[test]
fn a_server_set_up_wrong_gets_one_clear_line_and_no_change() {
    let s = deployed_flask();
    s.write("app.py", "print('second')\n");
    s.commit("second");
    s.update_without_deploy();
    let site_before = snapshot(&s.site);
    let state = s.repo.join("pushdeploy");

    // The site is missing.
    let aside = s.root.join("site.aside");
    std::fs::rename(&s.site, &aside).unwrap();
    let out = deploy_line(&s, &[]);
    assert_eq!(out.status, 1);
    assert!(
        out.line
            .contains(&format!("site {}: does not exist", s.site.display())),
        "{}",
        out.line
    );
    assert!(!s.site.exists(), "the site is not made by a deployment");

    // The site is a file.
    std::fs::write(&s.site, "not a directory").unwrap();
    let out = deploy_line(&s, &[]);
    assert_eq!(out.status, 1);
    assert!(
        out.line
            .contains(&format!("site {}: is not a directory", s.site.display())),
        "{}",
        out.line
    );
    assert_eq!(std::fs::read_to_string(&s.site).unwrap(), "not a directory");
    std::fs::remove_file(&s.site).unwrap();
    std::fs::rename(&aside, &s.site).unwrap();
    assert_eq!(snapshot(&s.site), site_before);

    // The state dir cannot be made: below a regular file.
    let file = s.root.join("a-file");
    std::fs::write(&file, "").unwrap();
    let records_before = snapshot(&state);
    let bad_state = file.join("state");
    git_config(&s, &["deploy.stateDir", bad_state.to_str().unwrap()]);
    let out = deploy_line(&s, &[]);
    assert!(out.status == 1 || out.status == 2, "{}", out.status);
    assert!(out.line.contains(&*file.to_string_lossy()), "{}", out.line);
    assert_eq!(snapshot(&s.site), site_before);
    git_config(&s, &["--unset", "deploy.stateDir"]);
    assert_eq!(snapshot(&state), records_before);

    // No interpreter anywhere: PATH holds git alone, pyenv's root is empty,
    // and the commit has no runtime.txt.
    let bin = s.root.join("only-git");
    std::fs::create_dir(&bin).unwrap();
    let git = which_git();
    std::os::unix::fs::symlink(&git, bin.join("git")).unwrap();
    let empty = s.root.join("no-pyenv");
    std::fs::create_dir(&empty).unwrap();
    s.remove("runtime.txt");
    s.commit("no runtime.txt");
    s.update_without_deploy();
    let vars = [
        ("PATH", bin.to_str().unwrap()),
        ("PYENV_ROOT", empty.to_str().unwrap()),
    ];
    let out = deploy_line(&s, &vars);
    assert_eq!(out.status, 1);
    assert!(
        out.line.contains("failed in step plan")
            && out.line.contains("setting python (default): \"python3\" is not a Python interpreter that runs; found: none"),
        "{}",
        out.line
    );
    assert_eq!(snapshot(&s.site), site_before);
    // The same with runtime.txt back: it names the runtime that is missing.
    s.write("runtime.txt", "python-3.11\n");
    s.commit("runtime.txt again");
    s.update_without_deploy();
    let out = deploy_line(&s, &vars);
    assert_eq!(out.status, 1);
    assert!(
        out.line
            .contains("runtime.txt: python-3.11 is not installed; found: none"),
        "{}",
        out.line
    );
    assert_eq!(snapshot(&s.site), site_before);

    // With all of it put right, the same server deploys.
    s.run("deploy", &[]).assert_ok();
    assert_eq!(app_files(&s.site), app_files(&s.work));
}

fn which_git() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn killed_during_collectstatic() {
    let s = Server::new();
    s.app("django-app");
    // The settings wait while the file `block` exists: collectstatic then
    // hangs until the test is done killing it.
    let block = s.root.join("block");
    let settings = std::fs::read_to_string(s.work.join("mysite/settings.py")).unwrap();
    s.write(
        "mysite/settings.py",
        &format!(
            "{settings}\nimport time\nwhile os.path.exists({:?}):\n    time.sleep(0.05)\n",
            block.display().to_string()
        ),
    );
    let id = s.commit("django");
    s.update_without_deploy();
    std::fs::write(&block, "").unwrap();
    let mut run = Background::start(&s, &[], &[]);
    run.wait_for_line("-----> python manage.py collectstatic");
    let output = run.kill();
    assert!(
        !output.iter().any(|l| l.contains("collectstatic: done")),
        "{output:?}"
    );
    std::fs::remove_file(&block).unwrap();

    assert!(
        lock_is_free(&s),
        "the kernel frees the lock of a killed deployment"
    );
    let next = s.run("deploy", &[]);
    next.assert_ok()
        .assert_has("did not finish; its record is marked rolled back")
        .assert_has("env/ removed: there was none before")
        .assert_has("2 static files copied to");
    let records = s.records();
    assert_eq!(records[1]["id"], id.as_str());
    assert_eq!(records[1]["status"], "rolled back");
    assert_eq!(records[0]["status"], "success");
    assert!(s.site.join("staticfiles/css/site.css").is_file());
    s.env_python("import django, greeting").assert_ok();
    assert!(lock_is_free(&s));
}
