//! Issue 4: records, the lock, list/show/redeploy, and concurrent pushes.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::util::{Run, Server, git_in};

#[test]
fn redeploy_of_an_older_id_restores_its_files_and_packages() {
    let s = Server::new();
    s.app("flask-app").write("old.txt", "v1\n");
    let v1 = s.commit("v1");
    s.push(&[]).assert_ok();
    s.remove("old.txt")
        .write("new.txt", "v2\n")
        .write("requirements.txt", "greeting==2.0.0\ntinyweb==1.0.0\n");
    let v2 = s.commit("v2");
    s.push(&[])
        .assert_ok()
        .assert_has("Successfully installed greeting-2.0.0");
    assert!(s.site.join("new.txt").exists() && !s.site.join("old.txt").exists());

    let run = s.run("redeploy", &[&v1[..7]]);
    run.assert_ok()
        .assert_has(&format!("Deploying {} ({v1})", &v1[..7]));
    assert_eq!(s.site_file("old.txt"), "v1\n");
    assert!(!s.site.join("new.txt").exists());
    s.env_python("import greeting; print(greeting.__version__)")
        .assert_ok()
        .assert_has("1.0.0");

    let records = s.records();
    let summary: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap()[..7].to_string(),
                r["trigger"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        (&v1[..7], "redeploy"),
        (&v2[..7], "push"),
        (&v1[..7], "push"),
    ]
    .map(|(id, trigger)| (id.to_string(), trigger.to_string(), "success".to_string()));
    assert_eq!(summary, expected, "newest first");
    for r in &records {
        assert_eq!(r["author"], "Ada Tester");
        assert!(r["finished"].is_string() && r["started"].is_string());
        let steps: Vec<&str> = r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        assert!(
            steps.contains(&"sync") && steps.contains(&"pip"),
            "{steps:?}"
        );
    }
    assert_eq!(records[1]["message"], "v2");

    let list = s.run("list", &[]);
    list.assert_ok();
    let first_row = list.stdout.lines().nth(1).unwrap();
    assert!(
        first_row.starts_with("3*")
            && first_row.contains("redeploy")
            && first_row.contains(&v1[..7]),
        "{first_row}"
    );
    s.run("show", &[&v2[..6]])
        .assert_ok()
        .assert_has("message:  v2")
        .assert_has("Successfully installed greeting-2.0.0");
    let unknown = s.run("show", &["ffffff"]);
    assert_eq!(unknown.status, 2);
    assert!(
        unknown
            .stderr
            .contains("no deployment has an id starting with \"ffffff\"")
    );
}

#[test]
fn a_push_waits_for_the_running_deployment_and_says_whose() {
    let s = Server::new();
    s.write("index.html", "one\n");
    s.commit("one");
    s.push(&[]).assert_ok();
    // Hold the lock as a running deployment would.
    let lock_path = s.repo.join("pushdeploy/lock");
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.lock().unwrap();
    write!(lock, "deployment 1234567 (pid 42)").unwrap();

    s.write("index.html", "two\n");
    s.commit("two");
    let push = s
        .git_command(&["push", s.repo.to_str().unwrap(), "main"])
        .spawn(Stdio::piped(), Stdio::piped());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        s.site_file("index.html"),
        "one\n",
        "nothing is deployed while the lock is held"
    );
    lock.set_len(0).unwrap();
    lock.unlock().unwrap();
    let out = push.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Waiting for deployment 1234567 (pid 42) to finish"),
        "{stderr}"
    );
    assert!(stderr.contains("successful"), "{stderr}");
    assert_eq!(s.site_file("index.html"), "two\n");
}

/// git in a clone.
fn git(dir: &Path, args: &[&str]) -> Run {
    git_in(dir).args(args).run()
}

/// Pushes the clone's HEAD to main, again while git refuses it because the
/// ref moved under it ("cannot lock ref"), as a user would; what the pusher saw.
fn push_until_accepted(dir: &Path, repo: &Path) -> String {
    for _ in 0..50 {
        let out = git(dir, &["push", "-f", repo.to_str().unwrap(), "HEAD:main"]);
        if out.status == 0 {
            return out.stderr;
        }
        assert!(out.stderr.contains("cannot lock ref"), "{out}");
    }
    panic!("a push was refused 50 times");
}

#[test]
fn concurrent_pushes_from_several_clones_end_at_the_branch_head() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("base");
    s.push(&[]).assert_ok();
    let clones: Vec<PathBuf> = (0..3)
        .map(|i| {
            let dir = s.clone_as(&format!("clone{i}"));
            std::fs::write(dir.join("who.txt"), format!("clone {i}\n")).unwrap();
            git(&dir, &["add", "-A"]).assert_ok();
            git(&dir, &["commit", "-q", "-m", &format!("clone {i}")]).assert_ok();
            dir
        })
        .collect();
    let threads: Vec<_> = clones
        .into_iter()
        .map(|dir| {
            let repo = s.repo.clone();
            std::thread::spawn(move || push_until_accepted(&dir, &repo))
        })
        .collect();
    for thread in threads {
        let stderr = thread.join().unwrap();
        assert!(stderr.contains("successful"), "{stderr}");
    }
    let head = s.branch_head("main");
    let records = s.records();
    assert_eq!(records.len(), 4, "every push has a record");
    assert!(
        records
            .iter()
            .all(|r| r["status"] == "success" && r["finished"].is_string())
    );
    assert_eq!(
        records[0]["id"],
        head.as_str(),
        "the last deployment is the branch head"
    );
    assert_eq!(s.site_file("who.txt"), s.file_at_head("who.txt"));
    s.env_python("import greeting").assert_ok();
}

/// Issue 6's soak: 20 pushes from 4 clones at once. Every accepted push is
/// deployed in turn, every record is whole, and the site ends at the head.
#[test]
fn twenty_pushes_from_four_clones_at_once() {
    let s = Server::new();
    s.write("index.html", "base\n");
    s.commit("base");
    s.push(&[]).assert_ok();
    let clones: Vec<PathBuf> = (0..4).map(|i| s.clone_as(&format!("soak{i}"))).collect();
    let threads: Vec<_> = clones
        .into_iter()
        .enumerate()
        .map(|(i, dir)| {
            let repo = s.repo.clone();
            std::thread::spawn(move || {
                for n in 0..5 {
                    std::fs::write(dir.join("index.html"), format!("clone {i} push {n}\n"))
                        .unwrap();
                    std::fs::write(dir.join(format!("clone{i}.txt")), format!("{n}\n")).unwrap();
                    git(&dir, &["add", "-A"]).assert_ok();
                    git(
                        &dir,
                        &["commit", "-q", "-m", &format!("clone {i} push {n}")],
                    )
                    .assert_ok();
                    let stderr = push_until_accepted(&dir, &repo);
                    assert!(stderr.contains("successful"), "{stderr}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let records = s.records();
    assert_eq!(
        records.len(),
        21,
        "one record for each of the 20 pushes, and the base"
    );
    for r in &records {
        assert_eq!(r["status"], "success", "{r}");
        assert!(r["finished"].is_string());
    }
    let head = s.branch_head("main");
    assert_eq!(records[0]["id"], head.as_str());
    assert_eq!(s.site_file("index.html"), s.file_at_head("index.html"));
    // Only the head's files are in the site: files of other heads are gone.
    for i in 0..4 {
        let name = format!("clone{i}.txt");
        let in_head = !s.file_at_head(&name).is_empty();
        assert_eq!(s.site.join(&name).exists(), in_head, "{name}");
    }
}

/// Issue 11 item 8: a commit's message and author are data for the terminal,
/// never commands (title, clear screen, a forged row).
#[test]
fn list_and_show_print_no_control_character_of_a_commit() {
    let s = Server::new();
    s.write("index.html", "x\n");
    s.git(&["add", "-A"]).assert_ok();
    let message = "fix\x1b]0;owned\x07\x1b[2J\rforged\x7f\u{9b}31m";
    s.git_with(
        &["commit", "-q", "-m", message],
        &[("GIT_AUTHOR_NAME", "Eve\x1b[31m Red\u{85}")],
    )
    .assert_ok();
    s.push(&[]).assert_ok();
    let raw = |text: &str| text.chars().any(|c| c.is_control() && c != '\n');
    let list = s.run("list", &[]);
    list.assert_ok()
        .assert_has(r"fix\u{1b}]0;owned\u{7}\u{1b}[2J\rforged");
    assert!(!raw(&list.stdout), "{:?}", list.stdout);
    let show = s.run("show", &["#1"]);
    show.assert_ok()
        .assert_has(r"author:   Eve\u{1b}[31m Red\u{85}")
        .assert_has(r"\u{7f}\u{9b}31m");
    assert!(!raw(&show.stdout), "{:?}", show.stdout);
    for args in [&["list", "--json"][..], &["deploy", "--dry-run", "--json"]] {
        let json = s.run(args[0], &args[1..]);
        json.assert_ok().assert_has(r"\u001b]0;owned");
        assert!(!raw(&json.stdout), "{:?}", json.stdout);
    }
    assert_eq!(
        s.records()[0]["message"],
        message,
        "the record keeps the text"
    );
}

/// Issue 15 item 13: format characters (a bidi override, zero-width ones, a
/// BOM) in a commit's names, message and author reached `list` and `show`
/// raw, so `report<U+202E>txt.exe` read `reportexe.txt`. Every output that
/// shows them escapes them; the files keep their names.
#[test]
fn names_with_format_characters_are_shown_escaped_everywhere() {
    let s = Server::new();
    s.write("index.html", "x\n");
    s.commit("first");
    s.push(&[]).assert_ok();
    let evil = "report\u{202e}txt.exe";
    let zero = "zero\u{200b}width\u{2066}.txt";
    // The app's own file where the commit adds one: the plan names it.
    std::fs::write(s.site.join(evil), "the app's\n").unwrap();
    s.write(evil, "the commit's\n").write(zero, "z\n");
    s.git(&["add", "-A"]).assert_ok();
    s.git_with(
        &["commit", "-q", "-m", &format!("add {evil} and {zero}")],
        &[("GIT_AUTHOR_NAME", "Mallory\u{feff}\u{200f}")],
    )
    .assert_ok();
    let hidden = ['\u{202e}', '\u{200b}', '\u{2066}', '\u{feff}', '\u{200f}'];
    let raw = |text: &str| text.contains(hidden);
    let push = s.push(&[]);
    push.assert_has(r"report\u{202e}txt.exe");
    assert!(!raw(&push.all()), "{:?}", push.all());
    let list = s.run("list", &[]);
    list.assert_ok()
        .assert_has(r"add report\u{202e}txt.exe and zero\u{200b}width\u{2066}.txt");
    assert!(!raw(&list.stdout), "{:?}", list.stdout);
    let show = s.run("show", &["#2"]);
    show.assert_ok()
        .assert_has(r"author:   Mallory\u{feff}\u{200f}")
        .assert_has(r"error:    ")
        .assert_has(r"report\u{202e}txt.exe");
    assert!(!raw(&show.stdout), "{:?}", show.stdout);
    for args in [&["list", "--json"][..], &["deploy", "--dry-run", "--json"]] {
        let json = s.run(args[0], &args[1..]);
        // The dry run shows the refused file, and exits 1 for it.
        json.assert_has(r"report\u202etxt.exe");
        assert!(!raw(&json.stdout), "{:?}", json.stdout);
    }
    // Once the app's file is gone the commit deploys, under the names as they are.
    std::fs::remove_file(s.site.join(evil)).unwrap();
    s.run("deploy", &[]).assert_ok().assert_has("successful");
    assert_eq!(s.site_file(evil), "the commit's\n");
    assert_eq!(s.site_file(zero), "z\n");
    assert_eq!(s.records()[0]["author"], "Mallory\u{feff}\u{200f}");
    // An app setting's value from `.deployment`, as `config` shows it.
    s.write(
        ".deployment",
        "[config]\nGREETING = hi\u{202e}there\u{1b}[2J\n",
    );
    s.commit("greeting");
    s.update_without_deploy();
    for (args, escaped) in [
        (&[][..], r"hi\u{202e}there\u{1b}[2J"),
        (&["--json"], r"hi\u202ethere\u001b[2J"),
    ] {
        let config = s.run("config", args);
        config.assert_ok().assert_has(escaped);
        assert!(!raw(&config.stdout), "{:?}", config.stdout);
    }
}

/// A record as `Records::start` writes it when a deployment begins, in the
/// format records have had from the start (the id a hex string): all that a
/// deployment killed with SIGKILL leaves behind.
fn write_running_record(s: &Server, seq: u64, id: &str) {
    let dir = s.repo.join("pushdeploy/deployments");
    std::fs::create_dir_all(&dir).unwrap();
    let record = serde_json::json!({
        "seq": seq,
        "id": id,
        "ref": "refs/heads/main",
        "author": "Ada Tester",
        "message": "killed",
        "trigger": "push",
        "started": "2026-11-28T03:26:58Z",
        "finished": null,
        "status": "running",
        "steps": [],
        "error": null,
        "pid": 999999999u32,
        "seconds": null,
        "log": ["-----> Deploying"]
    });
    let path = dir.join(format!("{seq:06}-{}.json", &id[..7]));
    std::fs::write(path, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
}

/// Issue 11: a killed deployment has no time, and `list` says so with `-`
/// (it printed `-0.00 s`, the sum of no steps).
#[test]
fn a_killed_deployments_record_shows_no_time_in_list() {
    let s = Server::new();
    s.write("index.html", "x\n");
    let id = s.commit("killed");
    s.update_without_deploy();
    write_running_record(&s, 1, &id);
    let running = s.run("list", &[]);
    running.assert_ok();
    // No deployment holds the lock: it was killed, not running.
    let row = running.stdout.lines().nth(1).unwrap().to_string();
    assert!(
        row.contains(" did not finish ") && row.contains(" -  "),
        "{row}"
    );
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("(#1) did not finish; its record is marked failed");
    let list = s.run("list", &[]);
    list.assert_ok();
    assert!(!list.stdout.contains("-0.00"), "{}", list.stdout);
    let killed = list.stdout.lines().nth(2).unwrap();
    assert!(
        killed.starts_with("1 ") && killed.contains(" failed "),
        "{killed}"
    );
    assert!(killed.contains(" -  "), "{killed}");
}

/// Issue 9: records keep the id as 40 hex digits, so records written before
/// ids were typed (this one also lacks `seconds`, as the first ones did)
/// list, show and redeploy as they did; a record whose id is not a commit
/// id is refused with its file named.
#[test]
fn records_in_the_format_written_before_load() {
    let s = Server::new();
    s.write("index.html", "old\n");
    let old = s.commit("old");
    s.update_without_deploy();
    let dir = s.repo.join("pushdeploy/deployments");
    std::fs::create_dir_all(&dir).unwrap();
    let record = format!(
        r#"{{
  "seq": 1,
  "id": "{old}",
  "ref": "refs/heads/main",
  "author": "Ada Tester",
  "message": "old",
  "trigger": "push",
  "started": "2026-11-20T10:00:00Z",
  "finished": "2026-11-20T10:00:01Z",
  "status": "success",
  "steps": [{{"step": "sync", "seconds": 0.25}}],
  "error": null,
  "pid": 4242,
  "log": ["-----> Deploying {short} (refs/heads/main)"]
}}"#,
        short = &old[..7]
    );
    std::fs::write(dir.join(format!("000001-{}.json", &old[..7])), record).unwrap();
    let list = s.run("list", &[]);
    list.assert_ok()
        .assert_has(&format!("1* {} success push", &old[..7]));
    assert!(list.stdout.contains("0.25 s"), "the steps' sum: {list}");
    s.run("show", &[&old[..9]])
        .assert_ok()
        .assert_has(&format!("deployment #1 {old}"))
        .assert_has("step:     sync 0.25 s");
    s.write("index.html", "new\n");
    s.commit("new");
    s.push(&[]).assert_ok().assert_has("successful");
    s.run("redeploy", &["#1"]).assert_ok();
    assert_eq!(s.site_file("index.html"), "old\n");
    let records = s.records();
    assert_eq!(records[0]["id"], old.as_str(), "written as it was read");
    assert_eq!(records[2]["id"], old.as_str());

    let bad = std::fs::read_to_string(dir.join(format!("000001-{}.json", &old[..7])))
        .unwrap()
        .replace(&old, &old[..12]);
    std::fs::write(dir.join("000009-bad.json"), bad).unwrap();
    s.run("list", &[])
        .assert_status(1)
        .assert_has("000009-bad.json: not a deployment record")
        .assert_has("is not a commit id");
}

/// `list` sizes its columns to their contents: a `rolled back` status does
/// not push the columns after it out of line.
#[test]
fn list_columns_line_up_with_a_rolled_back_deployment() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("good");
    s.push(&[]).assert_ok();
    s.write(".deployment", "[config]\nPOST_BUILD_COMMAND = false\n");
    s.commit("fails after the switch");
    s.push(&[]).assert_has("rolled back");
    let list = s.run("list", &[]);
    list.assert_ok().assert_has("rolled back");
    let lines: Vec<&str> = list.stdout.lines().collect();
    let column = |line: &str, word: &str| line.find(word);
    let header = lines[0];
    for (name, cell) in [("TRIGGER", "push"), ("MESSAGE", "good")] {
        let at = column(header, name).unwrap();
        let row = lines.iter().find(|l| l.contains("good")).unwrap();
        assert_eq!(column(row, cell), Some(at), "{name}:\n{}", list.stdout);
    }
    let rolled = lines.iter().find(|l| l.contains("rolled back")).unwrap();
    assert_eq!(
        rolled.find("push"),
        header.find("TRIGGER"),
        "{}",
        list.stdout
    );
}

/// The dry run's JSON: every key camelCase (no `keep_unneeded` among
/// camelCase keys), and the paths the README names are there.
#[test]
fn dry_run_json_keys_are_camel_case_and_the_readme_paths_exist() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("first");
    s.push(&[]).assert_ok();
    s.write("requirements.txt", "greeting==2.0.0\ntinyweb==1.0.0\n");
    s.commit("greeting 2");
    s.update_without_deploy();
    let run = s.run("deploy", &["--dry-run", "--json"]);
    run.assert_ok();
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    keys(&plan, &mut all);
    assert!(!all.iter().any(|k| k.contains('_')), "{all:?}");
    assert!(all.iter().any(|k| k == "keepUnneeded"), "{all:?}");
    assert_eq!(plan["python"]["pip"]["action"], "run", "{plan}");
    assert_eq!(plan["python"]["pip"]["reason"]["kind"], "changed", "{plan}");
    assert_eq!(plan["sync"]["basis"]["kind"], "diff", "{plan}");
}

/// A push after `env delete` removes the deleted env (seconds, for a big
/// one) after its last line, not while the pusher waits; the work between
/// the steps is steps of the record, so its steps account for its whole time.
#[test]
fn a_deleted_env_is_removed_after_the_push_and_the_record_steps_account_for_its_time() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("v1");
    s.push(&[]).assert_ok();
    s.pushdeploy(&["env", "delete", "--repo", s.repo.to_str().unwrap()])
        .assert_ok();
    s.write("app.py", "print('v2')\n");
    s.commit("v2");
    let push = s.push(&[]);
    push.assert_ok();
    assert!(!push.has("Removed 1 old env directory"), "{push}");
    // The removal holds the lock until it is done.
    let lock = std::fs::File::open(s.repo.join("pushdeploy/lock")).unwrap();
    lock.lock().unwrap();
    assert_eq!(s.env_dirs(), 0, "the deleted env is removed after the push");
    let record = &s.records()[0];
    let steps = record["steps"].as_array().unwrap();
    let names: Vec<&str> = steps
        .iter()
        .map(|st| st["step"].as_str().unwrap())
        .collect();
    for step in ["plan", "env", "sync", "finish"] {
        assert!(names.contains(&step), "{names:?}");
    }
    let sum: f64 = steps.iter().map(|st| st["seconds"].as_f64().unwrap()).sum();
    let total = record["seconds"].as_f64().unwrap();
    // A generous margin: only output and the record lie between the steps.
    assert!(
        sum <= total && sum >= total * 0.5,
        "{sum} of {total}: {names:?}"
    );
}
