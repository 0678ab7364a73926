//! Issue 17: a change of packages prepares its env beside the live one
//! without copying what does not change (unchanged package files are hard
//! links), and no installer ever writes through such a link: the env the
//! app runs on stays byte for byte, modification times included, through
//! upgrades, downgrades, removals, entry-point scripts, `.pth` files,
//! bytecode compilation and failed installs, with pip and with uv.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::util::Server;

/// Builds the wheels of `pathy` 1.0.0 and 2.0.0 into `dir`: a package with a
/// data file, a single-module package beside it, a `.pth` file and a
/// console script; each version's files differ.
fn build_wheels(dir: &Path) {
    const SCRIPT: &str = r##"
import base64, hashlib, os, sys, zipfile
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for v in ("1.0.0", "2.0.0"):
    di = "pathy-%s.dist-info" % v
    files = {
        "pathy/__init__.py": "VERSION = %r\ndef main():\n    print('pathy', VERSION)\n" % v,
        "pathy/data.txt": "data of %s\n" % v,
        "pathy/sub/__init__.py": "# sub %s\n" % v,
        "pathy_single.py": "SINGLE = %r\n" % v,
        "pathy.pth": "import pathy_single\n",
        di + "/METADATA": "Metadata-Version: 2.1\nName: pathy\nVersion: %s\n" % v,
        di + "/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        di + "/entry_points.txt": "[console_scripts]\npathy = pathy:main\n",
    }
    def h(d):
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(d).digest()).decode().rstrip("=")
    record = "".join("%s,%s,%d\n" % (p, h(d.encode()), len(d.encode())) for p, d in files.items())
    files[di + "/RECORD"] = record + di + "/RECORD,,\n"
    with zipfile.ZipFile(os.path.join(out, "pathy-%s-py3-none-any.whl" % v), "w") as z:
        for p, d in files.items():
            z.writestr(zipfile.ZipInfo(p, (1980, 1, 1, 0, 0, 0)), d)
"##;
    let status = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Everything in an env, as the app would see it and more: each path with
/// its kind, mode, content (or symlink target) and modification time, in
/// nanoseconds. Directories by mode and time.
fn state(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let time = format!("{}.{:09}", meta.mtime(), meta.mtime_nsec());
        let mode = meta.mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            out.insert(rel, format!("link -> {}", target.display()));
        } else if meta.is_dir() {
            out.insert(rel, format!("dir {mode:o} {time}"));
            walk(root, &path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.insert(
                rel,
                format!("file {mode:o} {time} {:?}", String::from_utf8_lossy(&bytes)),
            );
        }
    }
}

/// The env the last successful deployment replaced, kept as the previous one.
fn previous_env(s: &Server) -> PathBuf {
    let text = std::fs::read_to_string(s.repo.join("pushdeploy/env-previous")).unwrap();
    s.site.join(text.lines().next().unwrap().trim())
}

/// The differences between two states, for a readable failure.
fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, was) in before {
        match after.get(path) {
            None => out.push(format!("removed {path}")),
            Some(now) if now != was => out.push(format!("changed {path}: {was} -> {now}")),
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("added {path}"));
    }
    out
}

fn site_packages(env: &Path) -> PathBuf {
    let lib = env.join("lib");
    let python = std::fs::read_dir(&lib)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))
        .unwrap();
    python.path().join("site-packages")
}

/// One pin changes, back and forth, a package goes, an install fails: at
/// each step the env the deployment replaced (or, for the failure, the live
/// one) is exactly as it was, and the new env shares the unchanged files.
fn nothing_is_written_through_the_links(installer: Option<&Path>, vars: &[(&str, &str)]) {
    let s = Server::new();
    let push = || s.git_with(&["push", s.repo.to_str().unwrap(), "main"], vars);
    if let Some(uv) = installer {
        s.config(&["deploy.installer", uv.to_str().unwrap()]);
    }
    let wheels = s.root.join("more-wheels");
    build_wheels(&wheels);
    let requirements = |pathy: Option<&str>, extra: &str| {
        let pathy = pathy.map(|v| format!("pathy=={v}\n")).unwrap_or_default();
        format!(
            "--find-links {}\ngreeting==1.0.0\ngunicorn==27.0.1\n{pathy}{extra}",
            wheels.display()
        )
    };
    s.app("flask-app")
        .write("requirements.txt", &requirements(Some("1.0.0"), ""));
    s.commit("pathy 1");
    push().assert_ok().assert_has("successful");
    s.env_python("import pathy, pathy_single; print(pathy.VERSION, pathy_single.SINGLE)")
        .assert_ok()
        .assert_has("1.0.0 1.0.0");

    let steps: [(&str, Option<&str>, &str); 4] = [
        ("upgrade", Some("2.0.0"), ""),
        ("downgrade", Some("1.0.0"), ""),
        ("failed install", Some("2.0.0"), "nosuchpackage==1.0\n"),
        ("removal", None, ""),
    ];
    for (what, pathy, extra) in steps {
        // `env` is a real directory: after a switch, the env it was lives on
        // under the name of the directory prepared aside.
        let before = state(&s.site.join("env"));
        s.write("requirements.txt", &requirements(pathy, extra));
        s.commit(what);
        let push = push();
        let mut old_env = s.site.join("env");
        if extra.is_empty() {
            push.assert_ok()
                .assert_has("Copying env/ aside")
                .assert_has("successful");
            // The app's Python runs in the new env, writing its bytecode.
            let expect = pathy.map_or("gone".to_string(), |v| format!("{v} {v}"));
            s.env_python(
                "try:\n import pathy, pathy_single, greeting\n print(pathy.VERSION, pathy_single.SINGLE)\nexcept ImportError:\n print('gone')",
            )
            .assert_ok()
            .assert_has(&expect);
            if let Some(v) = pathy {
                let script = std::process::Command::new(s.site.join("env/bin/pathy"))
                    .output()
                    .unwrap();
                let out = String::from_utf8_lossy(&script.stdout);
                assert!(out.contains(&format!("pathy {v}")), "{out}");
            }
            old_env = previous_env(&s);
            // Unchanged files are shared, not copied.
            let file = |env: &Path| site_packages(env).join("greeting/__init__.py");
            assert_eq!(
                std::fs::metadata(file(&s.site.join("env"))).unwrap().ino(),
                std::fs::metadata(file(&old_env)).unwrap().ino(),
                "{what}: an unchanged package file is shared"
            );
        } else {
            push.assert_has("failed in step");
        }
        let after = state(&old_env);
        assert!(
            after == before,
            "{what}: the env the app ran on changed: {:#?}",
            diff(&before, &after)
        );
    }
}

#[test]
fn pip_never_writes_through_a_shared_file_into_the_live_env() {
    nothing_is_written_through_the_links(None, &[]);
}

#[test]
fn uv_never_writes_through_a_shared_file_into_the_live_env() {
    let Some(uv) = crate::util::uv() else {
        eprintln!("uv not found: skipped");
        return;
    };
    nothing_is_written_through_the_links(Some(&uv), &[]);
}

/// uv copies from its cache instead of linking when the cache is on
/// another file system, and compiles bytecode when told to.
#[test]
fn uv_copying_and_compiling_never_writes_through_a_shared_file() {
    let Some(uv) = crate::util::uv() else {
        eprintln!("uv not found: skipped");
        return;
    };
    nothing_is_written_through_the_links(
        Some(&uv),
        &[("UV_LINK_MODE", "copy"), ("UV_COMPILE_BYTECODE", "1")],
    );
}

/// An LD_PRELOAD library: the first `unlinkat()` of a path under `STOP_DIR`
/// writes `STOP_REACHED`, then waits while `STOP_HOLD` is there (20 s at
/// most, so that a test without the fix ends, and fails).
const HOLD_REMOVAL: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int unlinkat(int dirfd, const char *path, int flags) {
    static int (*real)(int, const char *, int);
    if (!real) real = (int (*)(int, const char *, int))dlsym(RTLD_NEXT, "unlinkat");
    const char *dir = getenv("STOP_DIR"), *hold = getenv("STOP_HOLD"), *reached = getenv("STOP_REACHED");
    if (dir && hold && reached) {
        char full[8192] = "";
        if (path[0] == '/') {
            snprintf(full, sizeof full, "%s", path);
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, full, 4096);
            if (n > 0) full[n] = 0;
        }
        static int waited;
        if (!waited && strncmp(full, dir, strlen(dir)) == 0) {
            waited = 1;
            close(open(reached, O_WRONLY | O_CREAT, 0644));
            for (int i = 0; i < 400 && access(hold, F_OK) == 0; i++) usleep(50000);
        }
    }
    return real(dirfd, path, flags);
}
"#;

fn hold_library(dir: &Path) -> PathBuf {
    crate::util::preload_library(dir, "hold", HOLD_REMOVAL)
}

/// Waits (polling, 60 s at most) until `done` says yes.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn lock_is_free(s: &Server) -> bool {
    let lock = std::fs::File::open(s.repo.join("pushdeploy/lock")).unwrap();
    lock.try_lock().is_ok()
}

#[test]
fn git_push_returns_before_the_old_env_is_removed_which_holds_the_lock() {
    let s = Server::new();
    s.app("flask-app");
    s.commit("greeting 1");
    s.push(&[]).assert_ok().assert_has("successful");
    let pin = |version: &str| {
        s.write(
            "requirements.txt",
            &format!("greeting=={version}\ntinyweb==1.0.0\n"),
        );
    };
    pin("2.0.0");
    s.commit("greeting 2");
    s.push(&[]).assert_ok().assert_has("successful");
    pin("1.0.0");
    s.commit("greeting 1 again");
    // The env of two deployments ago, which this push's success makes old:
    // a large one.
    let old = previous_env(&s);
    for i in 0..2000 {
        std::fs::write(old.join(format!("lib/extra-{i}.py")), "x = 1\n").unwrap();
    }
    let library = hold_library(&s.root);
    let (hold, reached) = (s.root.join("hold"), s.root.join("reached"));
    std::fs::write(&hold, "").unwrap();
    let push = s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[
            ("LD_PRELOAD", library.to_str().unwrap()),
            ("STOP_DIR", old.to_str().unwrap()),
            ("STOP_HOLD", hold.to_str().unwrap()),
            ("STOP_REACHED", reached.to_str().unwrap()),
        ],
    );
    push.assert_ok();
    let last = push.remote().last().cloned().unwrap_or_default();
    assert!(last.contains("successful"), "the last line: {push}");
    assert!(
        old.exists(),
        "git push returned before the old env's removal ended"
    );
    // The removal is under way, under the deployment lock: a deployment
    // now would wait for it, and say for what.
    eventually("the removal begins", || reached.exists());
    assert!(!lock_is_free(&s), "the removal holds the lock");
    let holder = std::fs::read_to_string(s.repo.join("pushdeploy/lock")).unwrap();
    assert!(holder.contains("removal of old envs"), "{holder}");
    std::fs::remove_file(&hold).unwrap();
    eventually("the removal ends and lets the lock go", || lock_is_free(&s));
    assert!(!old.exists(), "the old env was removed");
    assert_eq!(s.env_dirs(), 1, "the previous env is kept");
    s.env_python("import greeting; print(greeting.__version__)")
        .assert_ok()
        .assert_has("1.0.0");
}

/// The same for uv.lock, whose env `uv sync` makes exact: a package
/// upgraded, one removed, one added; the replaced env is as it was.
#[test]
fn uv_sync_never_writes_through_a_shared_file_into_the_live_env() {
    let Some(uv) = crate::util::uv() else {
        eprintln!("uv not found: skipped");
        return;
    };
    let s = Server::new();
    s.config(&["deploy.uvPath", uv.to_str().unwrap()]);
    s.app("uv-app");
    let lock = |s: &Server| {
        let out = std::process::Command::new(&uv)
            .args(["lock", "--quiet", "--no-index", "--find-links"])
            .arg(crate::util::fixtures().join("wheels"))
            .current_dir(&s.work)
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("UV_PYTHON", crate::util::pyenv("3.12.1"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    lock(&s);
    s.commit("v1");
    s.push(&[]).assert_ok().assert_has("successful");
    let before = state(&s.site.join("env"));
    let text = std::fs::read_to_string(s.work.join("pyproject.toml")).unwrap();
    s.write(
        "pyproject.toml",
        &text.replace(
            "dependencies = [\"greeting==1.0.0\", \"tinyweb==1.0.0\"]",
            "dependencies = [\"greeting==2.0.0\", \"staticpipe==1.0.0\"]",
        ),
    );
    lock(&s);
    s.commit("v2");
    s.push(&[])
        .assert_ok()
        .assert_has("Copying env/ aside")
        .assert_has("successful");
    s.env_python("import greeting, staticpipe; print(greeting.__version__)")
        .assert_ok()
        .assert_has("2.0.0");
    let after = state(&previous_env(&s));
    assert!(
        after == before,
        "the env the app ran on changed: {:#?}",
        diff(&before, &after)
    );
}

/// Python trusts a module's `.pyc` while the source has the size and
/// whole-second mtime it records. A downgrade can write the older version's
/// module with both (uv links or copies it from its cache, with the cache's
/// time; an upgrade and a downgrade within one second): the bytecode of
/// what the installer wrote goes, with pip and with uv. The stale `.pyc` is
/// made here as Python would have made it in that second.
fn a_downgrade_never_runs_the_newer_versions_bytecode(installer: Option<&Path>) {
    let s = Server::new();
    if let Some(uv) = installer {
        s.config(&["deploy.installer", uv.to_str().unwrap()]);
    }
    let wheels = s.root.join("more-wheels");
    build_wheels(&wheels);
    let requirements = |v: &str| {
        format!(
            "--find-links {}\ngreeting==1.0.0\npathy=={v}\n",
            wheels.display()
        )
    };
    s.app("flask-app")
        .write("requirements.txt", &requirements("1.0.0"));
    s.commit("pathy 1");
    s.push(&[]).assert_ok().assert_has("successful");
    let module = |s: &Server| site_packages(&s.site.join("env")).join("pathy_single.py");
    let first = std::fs::metadata(module(&s)).unwrap().mtime();
    s.write("requirements.txt", &requirements("2.0.0"));
    s.commit("pathy 2");
    s.push(&[]).assert_ok().assert_has("successful");
    // 2.0.0's bytecode, stamped with the time and size 1.0.0's module has.
    s.env_python(&format!(
        "import importlib.util as u, importlib._bootstrap_external as b, pathy_single as m\n\
         code = compile(open(m.__file__).read(), m.__file__, 'exec')\n\
         data = b._code_to_timestamp_pyc(code, {first}, len(\"SINGLE = '1.0.0'\\n\"))\n\
         open(u.cache_from_source(m.__file__), 'wb').write(data)\n"
    ))
    .assert_ok();
    s.write("requirements.txt", &requirements("1.0.0"));
    s.commit("pathy 1 again");
    s.push(&[]).assert_ok().assert_has("successful");
    s.env_python("import pathy_single; print('single', pathy_single.SINGLE)")
        .assert_ok()
        .assert_has("single 1.0.0");
}

#[test]
fn a_pip_downgrade_never_runs_the_newer_versions_bytecode() {
    a_downgrade_never_runs_the_newer_versions_bytecode(None);
}

#[test]
fn a_uv_downgrade_never_runs_the_newer_versions_bytecode() {
    let Some(uv) = crate::util::uv() else {
        eprintln!("uv not found: skipped");
        return;
    };
    a_downgrade_never_runs_the_newer_versions_bytecode(Some(&uv));
}
