//! Issue 15, items 1 to 3: the transaction holds at every instant. A debug
//! build of pushdeploy reads `PUSHDEPLOY_FAULT` (see `src/fault.rs`): it
//! kills itself (SIGKILL), or fails with an I/O error, at the Nth write,
//! rename or delete of the deployment, its recovery included. The tests
//! count the points of a deployment that changes files and packages, then
//! stop it at each one in turn; the next deployment (which recovers first,
//! then fails in its plan and changes nothing) must leave exactly one
//! commit's files with that commit's env, and the records must name that
//! commit as the active deployment and tell the truth about the stopped one.

use std::collections::BTreeMap;
use std::path::Path;

use crate::util::{Server, snapshot};

/// The site's files that a commit deploys (no env, no env directories).
fn app_files(dir: &Path) -> BTreeMap<String, String> {
    snapshot(dir)
        .into_iter()
        .filter(|(path, _)| {
            let top = path.split('/').next().unwrap();
            top != "env" && top != ".git" && !top.starts_with(".pushdeploy-")
        })
        .collect()
}

/// Two commits that differ in files (one changed, one added, one deleted)
/// and in packages (greeting 1 and 2), and a third whose plan fails: the
/// deployment that recovers and then changes nothing.
struct Commits {
    s: Server,
    one: (String, BTreeMap<String, String>),
    two: (String, BTreeMap<String, String>),
    bad: String,
}

fn commits() -> Commits {
    let s = Server::new();
    // uv installs in a tenth of pip's time, and the rounds are many; pip
    // where uv is not there.
    if let Some(uv) = crate::util::uv() {
        s.config(&["deploy.installer", uv.to_str().unwrap()]);
    }
    s.app("flask-app");
    let one = s.commit("one");
    let one_files = app_files(&s.work);
    s.write(
        "app.py",
        &s.site_file_at_work("app.py").replace("Hello", "Hi"),
    )
    .write("requirements.txt", "greeting==2.0.0\ntinyweb==1.0.0\n")
    .write("added.txt", "added\n")
    .remove("README.md");
    let two = s.commit("two");
    let two_files = app_files(&s.work);
    s.write("runtime.txt", "python-9.9\n");
    let bad = s.commit("bad: no such Python");
    s.update_without_deploy();
    Commits {
        s,
        one: (one, one_files),
        two: (two, two_files),
        bad,
    }
}

trait WorkFile {
    fn site_file_at_work(&self, rel: &str) -> String;
}

impl WorkFile for Server {
    fn site_file_at_work(&self, rel: &str) -> String {
        std::fs::read_to_string(self.work.join(rel)).unwrap()
    }
}

impl Commits {
    fn deploy(&self, rev: &str, fault: Option<&str>) -> crate::util::Run {
        let mut cmd =
            self.s
                .pushdeploy_command(&["deploy", "--repo", self.s.repo.to_str().unwrap(), rev]);
        if let Some(fault) = fault {
            cmd.envs(&[("PUSHDEPLOY_FAULT", fault)]);
        }
        cmd.run()
    }

    /// The points of a deployment of `rev` from the site as it is, by name.
    fn points(&self, rev: &str) -> Vec<String> {
        let file = self.s.root.join("points");
        let _ = std::fs::remove_file(&file);
        self.deploy(rev, Some(&format!("count:{}", file.display())))
            .assert_ok();
        std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            // A record's file name has its number.
            .map(|l| match l.split_once("/deployments/") {
                Some((before, _)) => format!("{before}/deployments/<record>"),
                None => l.to_string(),
            })
            .collect()
    }

    /// Which commit the site holds now, checked whole: its files, its env's
    /// packages, the records. `stopped` is the seq of the stopped deployment
    /// of `target`, `at` says where it was stopped.
    #[track_caller]
    fn check(&self, target: &str, stopped: Option<u64>, at: &str) -> String {
        let files = app_files(&self.s.site);
        let (id, version) = if files == self.one.1 {
            (&self.one.0, "1.0.0")
        } else if files == self.two.1 {
            (&self.two.0, "2.0.0")
        } else {
            panic!("{at}: the site is no commit's files: {files:#?}");
        };
        let greeting = self
            .s
            .env_python("import greeting; print(greeting.__version__)");
        assert_eq!(
            greeting.stdout.trim(),
            version,
            "{at}: the env is another commit's: {greeting}"
        );
        assert!(
            !self.s.site.join("env").is_symlink() && self.s.site.join("env").is_dir(),
            "{at}: env/ is a directory"
        );
        let records = self.s.records();
        let active = records
            .iter()
            .find(|r| r["status"] == "success")
            .unwrap_or_else(|| panic!("{at}: no active deployment: {records:#?}"));
        assert_eq!(
            active["id"].as_str(),
            Some(id.as_str()),
            "{at}: `list` names another deployment active"
        );
        if let Some(record) = records.iter().find(|r| r["seq"].as_u64() == stopped) {
            let status = record["status"].as_str().unwrap();
            if id == target {
                assert_eq!(status, "success", "{at}: it stands: {record}");
            } else {
                assert!(
                    status == "failed" || status == "rolled back",
                    "{at}: {record}"
                );
            }
        }
        let show = self.s.run("show", &[&id[..7]]);
        show.assert_ok().assert_has("status:   success");
        assert_eq!(
            std::fs::read_dir(&self.s.site)
                .unwrap()
                .flatten()
                .filter(|e| e
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".pushdeploy-old-"))
                .count(),
            0,
            "{at}: kept copies left"
        );
        id.clone()
    }
}

/// Stops a deployment at each of its points in turn with `mode` (`kill` or
/// `fail`), from one commit to the other and back, each round from where the
/// last one left the site. Once both have been deployed, every round has
/// the same points, whichever way it goes: the same kinds of file changes,
/// and a previous env that the finish sweeps.
fn every_point(mode: &str) {
    let c = commits();
    for rev in [&c.one.0, &c.two.0, &c.one.0] {
        c.deploy(rev, None).assert_ok();
    }
    let points = c.points(&c.two.0);
    assert_eq!(c.points(&c.one.0), points, "both ways have the same points");
    let mut now = c.one.0.clone();
    let mut newest = c.s.records()[0]["seq"].as_u64();
    for (n, name) in points.iter().enumerate() {
        let target = if now == c.one.0 { &c.two.0 } else { &c.one.0 };
        let at = format!("{mode} at point {name}");
        let run = c.deploy(target, Some(&format!("{mode}:{}", n + 1)));
        if mode == "kill" {
            assert_eq!(run.status, -1, "{at}: killed: {run}");
        }
        // The next deployment recovers, then fails in its plan.
        let next = c.deploy(&c.bad, None);
        next.assert_status(1).assert_has("python-9.9");
        // Stopped before its record was started: no record to check.
        let records = c.s.records();
        let stopped = records
            .iter()
            .map(|r| r["seq"].as_u64())
            .find(|seq| *seq > newest && *seq < records[0]["seq"].as_u64())
            .flatten();
        newest = records[0]["seq"].as_u64();
        now = c.check(target, stopped, &at);
    }
}

#[test]
fn a_kill_at_any_point_leaves_one_commit_with_its_env_and_true_records() {
    every_point("kill");
}

#[test]
fn an_io_error_at_any_point_leaves_one_commit_with_its_env_and_true_records() {
    every_point("fail");
}

/// The recovery itself, stopped at each of its points: a deployment killed
/// just before its commit point (files and env switched: the recovery puts
/// both back) and just after it (the recovery finishes it), then the
/// recovering deployment killed at each point of its recovery in turn; the
/// one after it must still leave one commit's files with its env.
#[test]
fn a_kill_at_any_point_of_a_recovery_leaves_one_commit_with_its_env() {
    let c = commits();
    for rev in [&c.one.0, &c.two.0, &c.one.0] {
        c.deploy(rev, None).assert_ok();
    }
    let points = c.points(&c.two.0);
    c.deploy(&c.one.0, None).assert_ok();
    let switched = points
        .iter()
        .position(|p| p.ends_with("exchange env"))
        .expect("a point at the env switch");
    let mut now = c.one.0.clone();
    // The commit point's write, then the first point after it.
    for k in [switched + 2, switched + 3] {
        let other = |now: &str| {
            if now == c.one.0 {
                c.two.0.clone()
            } else {
                c.one.0.clone()
            }
        };
        let t = other(&now);
        assert_eq!(c.deploy(&t, Some(&format!("kill:{k}"))).status, -1);
        let file = c.s.root.join("recovery-points");
        let _ = std::fs::remove_file(&file);
        let count = format!("count:{}", file.display());
        c.deploy(&c.bad, Some(&count)).assert_status(1);
        let recovery = std::fs::read_to_string(&file).unwrap();
        now = c.check(&t, None, &format!("recovered from kill at point {k}"));
        for (r, name) in recovery.lines().enumerate() {
            let t = other(&now);
            let at = format!("kill at point {k}, then at recovery point {name}");
            assert_eq!(c.deploy(&t, Some(&format!("kill:{k}"))).status, -1);
            let killed = c.deploy(&c.bad, Some(&format!("kill:{}", r + 1)));
            assert_eq!(killed.status, -1, "{at}: {killed}");
            c.deploy(&c.bad, None).assert_status(1);
            now = c.check(&t, None, &at);
        }
    }
}

/// `env delete` keeps the env's directory for an app that may still run on
/// it, until the next successful deployment: killed at any of its points,
/// the directory is either still `env` or kept, and a deployment that fails
/// after its sweep leaves it there.
#[test]
fn env_delete_killed_at_any_point_keeps_the_env_s_directory() {
    let c = commits();
    c.deploy(&c.one.0, None).assert_ok();
    let repo = c.s.repo.to_str().unwrap().to_string();
    let file = c.s.root.join("points");
    let count = format!("count:{}", file.display());
    let delete = |fault: &str| {
        c.s.pushdeploy_command(&["env", "delete", "--repo", &repo])
            .envs(&[("PUSHDEPLOY_FAULT", fault)])
            .run()
    };
    delete(&count).assert_ok();
    c.deploy(&c.one.0, None).assert_ok();
    let points = std::fs::read_to_string(&file).unwrap();
    // A commit whose install fails, after the sweep of old env directories.
    let runtime = crate::util::fixtures().join("apps/flask-app/runtime.txt");
    c.s.write("runtime.txt", &std::fs::read_to_string(runtime).unwrap())
        .write("requirements.txt", "greeting==1.0.0\nno-such-package==9\n");
    let failing = c.s.commit("a requirement pip cannot find");
    c.s.update_without_deploy();
    for (n, name) in points.lines().enumerate() {
        assert_eq!(delete(&format!("kill:{}", n + 1)).status, -1, "{name}");
        c.deploy(&failing, None)
            .assert_status(1)
            .assert_has("no-such-package");
        let kept: Vec<_> = std::fs::read_dir(&c.s.site)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("bin/python").exists())
            .collect();
        assert_eq!(
            kept.len(),
            1,
            "killed at {name}: one env, as env/ or kept: {kept:?}"
        );
        // Back to a site with env/ for the next round.
        c.deploy(&c.one.0, None).assert_ok();
    }
}
