//! Issue 11: when the installer may be skipped, requirement files outside
//! the site, an env that is not a virtual env, and the interpreter and
//! install messages.

use std::path::{Path, PathBuf};

use crate::util::{Run, Server, pyenv};

fn deployed(files: &[(&str, &str)]) -> Server {
    let s = Server::new();
    s.app("flask-app");
    for (path, content) in files {
        s.write(path, content);
    }
    s.commit("first");
    s.push(&[]).assert_ok().assert_has("successful");
    s
}

/// Commits the files and pushes with `vars` in the hook's environment.
fn push_files(s: &Server, files: &[(&str, &str)], vars: &[(&str, &str)]) -> Run {
    for (path, content) in files {
        s.write(path, content);
    }
    s.commit("change");
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], vars)
}

/// Pushes a change of app.py only.
fn touch(s: &Server, vars: &[(&str, &str)]) -> Run {
    let app = std::fs::read_to_string(s.work.join("app.py")).unwrap();
    let app = format!("{app}# {}\n", app.len());
    push_files(s, &[("app.py", &app)], vars)
}

/// A new server for each installer, the one given to it: pip, then uv
/// when it is here.
fn each_installer() -> impl Iterator<Item = (Option<PathBuf>, Server)> {
    let mut installers = vec![None];
    installers.extend(crate::util::uv().map(Some));
    installers.into_iter().map(|uv| {
        let s = Server::new();
        if let Some(uv) = &uv {
            s.config(&["deploy.installer", uv.to_str().unwrap()]);
        }
        (uv, s)
    })
}

fn greeting_version(s: &Server) -> String {
    s.env_python("import greeting; print(greeting.__version__)")
        .stdout
        .trim()
        .to_string()
}

#[test]
fn a_symlinked_requirements_txt_counts_by_the_file_it_leads_to() {
    let s = Server::new();
    s.app("flask-app");
    s.write("reqs/prod.txt", "tinyweb==1.0.0\ngreeting==1.0.0\n");
    s.remove("requirements.txt");
    std::os::unix::fs::symlink("reqs/prod.txt", s.work.join("requirements.txt")).unwrap();
    s.commit("requirements as a link");
    s.push(&[]).assert_ok().assert_has("successful");
    assert_eq!(greeting_version(&s), "1.0.0");
    push_files(
        &s,
        &[("reqs/prod.txt", "tinyweb==1.0.0\ngreeting==2.0.0\n")],
        &[],
    )
    .assert_ok()
    .assert_has("changed since the last install: requirements")
    .assert_has("Successfully installed greeting-2.0.0")
    // pip runs as env/bin/python, so it names the env as users know it.
    .assert_has("Requirement already satisfied: tinyweb==1.0.0 in ./env/lib/");
    assert_eq!(greeting_version(&s), "2.0.0");
}

#[test]
fn an_include_with_its_value_attached_is_followed() {
    let s = deployed(&[
        (
            "requirements.txt",
            "tinyweb==1.0.0\n-rbase.txt\n-cconstraints.txt\n",
        ),
        ("base.txt", "greeting\n"),
        ("constraints.txt", "greeting==1.0.0\n"),
    ]);
    assert_eq!(greeting_version(&s), "1.0.0");
    touch(&s, &[]).assert_ok().assert_has("pip skipped");
    push_files(&s, &[("constraints.txt", "greeting==2.0.0\n")], &[])
        .assert_ok()
        .assert_has("changed since the last install: requirements")
        .assert_has("Successfully installed greeting-2.0.0");
    assert_eq!(greeting_version(&s), "2.0.0");
}

/// A library of the commit, built by a backend of its own (no setuptools
/// from an index needed): `mylib.V` is what `mylib.py` says.
fn write_library(s: &Server, v: &str) {
    s.write(
        "libs/mylib/pyproject.toml",
        "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
    );
    s.write(
        "libs/mylib/backend.py",
        r#"import os, zipfile
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "mylib-1.0-py3-none-any.whl"
    info = "mylib-1.0.dist-info/"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        z.write("mylib.py", "mylib.py")
        z.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: mylib\nVersion: 1.0\n")
        z.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(info + "RECORD", "")
    return name
"#,
    );
    s.write("libs/mylib/mylib.py", &format!("V = {v:?}\n"));
}

#[test]
fn a_local_directory_without_dot_slash_makes_pip_run_every_time() {
    let s = Server::new();
    s.app("flask-app");
    write_library(&s, "v1");
    s.write("requirements.txt", "tinyweb==1.0.0\nlibs/mylib\n");
    s.commit("a library of our own");
    s.push(&[]).assert_ok().assert_has("successful");
    let v = || {
        s.env_python("import mylib; print(mylib.V)")
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(v(), "v1");
    write_library(&s, "v2");
    s.commit("v2");
    s.push(&[])
        .assert_ok()
        .assert_has("requirements.txt line 2 is a local path: the installer always runs");
    assert_eq!(v(), "v2");
}

#[test]
fn a_requirement_file_outside_the_site_is_refused_and_no_secret_leaks() {
    let s = deployed(&[]);
    let secret = "SERVER_SECRET=hunter2-do-not-print";
    let vars = [("SERVER_SECRET", "hunter2-do-not-print")];
    let before = std::fs::read_to_string(s.site.join("app.py")).unwrap();
    let push = push_files(
        &s,
        &[(
            "requirements.txt",
            "greeting==2.0.0\n-r /proc/self/environ\n",
        )],
        &vars,
    );
    push.assert_has(
        "requirements.txt line 2: -r \"/proc/self/environ\" is an absolute path; requirement files must be inside the site",
    )
    .assert_has("failed in step plan");
    assert!(!push.has("hunter2"), "the secret reached the pusher");
    assert_eq!(
        std::fs::read_to_string(s.site.join("app.py")).unwrap(),
        before
    );
    assert_eq!(greeting_version(&s), "1.0.0");
    let records = std::fs::read_dir(s.repo.join("pushdeploy/deployments")).unwrap();
    for record in records.flatten() {
        let text = std::fs::read_to_string(record.path()).unwrap();
        assert!(!text.contains("hunter2"), "{secret} in {:?}", record.path());
    }
    let dry = s.pushdeploy_with(
        &["deploy", "--repo", s.repo.to_str().unwrap(), "--dry-run"],
        &vars,
    );
    assert_eq!(dry.status, 1);
    assert!(dry.has("is an absolute path") && !dry.has("hunter2"));

    push_files(
        &s,
        &[(
            "requirements.txt",
            "greeting==2.0.0\n-r reqs/../../etc.txt\n",
        )],
        &[],
    )
    .assert_has("requirements.txt line 2: -r \"reqs/../../etc.txt\" climbs out of the site");
}

/// A local requirement outside the site is refused in the plan, in every
/// spelling pip takes for a path: pip never builds it (its build code
/// would leave a mark).
#[test]
fn a_local_requirement_outside_the_site_is_refused() {
    let s = deployed(&[]);
    let outside = s.root.join("outside");
    let mark = s.root.join("built");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
    )
    .unwrap();
    std::fs::write(
        outside.join("backend.py"),
        format!("open({:?}, 'w').close()\n", mark.to_str().unwrap()),
    )
    .unwrap();
    let dir = outside.to_str().unwrap();
    let table = [
        (format!("{dir}\n"), format!("\"{dir}\" is an absolute path")),
        (
            format!("-e {dir}\n"),
            format!("\"{dir}\" is an absolute path"),
        ),
        (
            format!("outside @ file://{dir}\n"),
            format!("\"{dir}\" is an absolute path"),
        ),
        (
            "-e file:/..\n".to_string(),
            "\"/..\" is an absolute path".to_string(),
        ),
        (
            "libs/../../x\n".to_string(),
            "\"libs/../../x\" climbs out of the site".to_string(),
        ),
        (
            "-e ${OUTSIDE}\n".to_string(),
            format!("\"{dir}\" is an absolute path"),
        ),
    ];
    for (line, want) in table {
        let text = format!("tinyweb==1.0.0\n{line}");
        push_files(&s, &[("requirements.txt", &text)], &[("OUTSIDE", dir)])
            .assert_has(&format!(
                "requirements.txt line 2: {want}; local requirements must be inside the site"
            ))
            .assert_has("failed in step plan");
        assert!(!mark.exists(), "{line}: built");
    }
    // Inside the site, a local path stays allowed.
    write_library(&s, "v1");
    push_files(
        &s,
        &[("requirements.txt", "tinyweb==1.0.0\n./libs/mylib\n")],
        &[],
    )
    .assert_ok()
    .assert_has("successful");
}

/// Issue 15 item 12: a VCS requirement with a file URL (`git+file:` in
/// every spelling pip takes, and the other VCS) is a local requirement: a
/// repository outside the site is refused in the plan, never cloned and
/// built (its build backend would leave a mark).
#[test]
fn a_vcs_requirement_with_a_file_url_outside_the_site_is_refused() {
    let s = deployed(&[]);
    let outside = s.root.join("outside");
    let mark = s.root.join("built");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("pyproject.toml"),
        "[project]\nname = \"outside\"\nversion = \"1\"\n[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
    )
    .unwrap();
    std::fs::write(
        outside.join("backend.py"),
        format!("open({:?}, 'w').close()\n", mark.to_str().unwrap()),
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "outside"],
    ] {
        crate::util::git_in(&outside).args(args).run().assert_ok();
    }
    let dir = outside.to_str().unwrap();
    let absolute = format!("\"{dir}\" is an absolute path");
    let table = [
        format!("git+file://{dir}#egg=outside"),
        format!("-e git+file://{dir}#egg=outside"),
        format!("outside @ git+file://{dir}@main"),
        format!("outside@GIT+FILE://localhost{dir}"),
        format!("git+file:{dir}@main#egg=outside"),
        format!("--editable=hg+file://{dir}#egg=outside"),
        format!("svn+file://{dir}#egg=outside"),
        format!("outside @ bzr+file://{dir}"),
        "outside @ git+file://${OUTSIDE}".to_string(),
    ];
    for line in table {
        let text = format!("tinyweb==1.0.0\n{line}\n");
        push_files(&s, &[("requirements.txt", &text)], &[("OUTSIDE", dir)])
            .assert_has(&format!(
                "requirements.txt line 2: {absolute}; local requirements must be inside the site"
            ))
            .assert_has("failed in step plan");
        assert!(!mark.exists(), "{line}: built");
    }
}

/// A requirement file that is a symlink to a file the commit lacks (one the
/// site has) is refused, and pip never prints that file's first line.
#[test]
fn a_requirements_symlink_to_a_file_not_of_the_commit_is_refused() {
    let s = deployed(&[]);
    s.remove("requirements.txt");
    std::os::unix::fs::symlink("env/pyvenv.cfg", s.work.join("requirements.txt")).unwrap();
    s.commit("requirements as a link into the env");
    let push = s.push(&[]);
    push.assert_has(
        "requirements.txt is a symlink to env/pyvenv.cfg, which is not a file of the commit",
    )
    .assert_has("failed in step plan");
    assert!(!push.has("home ="), "{}", push.stderr);
}

/// A copy of pyenv's 3.11.7 whose site-packages is its own (empty) folder:
/// the interpreter an env is built on, watched for installs.
fn own_interpreter(root: &Path) -> (PathBuf, PathBuf) {
    let real = pyenv("3.11.7");
    let original = real.parent().unwrap().parent().unwrap();
    let copy = root.join("python");
    std::fs::create_dir_all(copy.join("bin")).unwrap();
    std::fs::copy(original.join("bin/python3.11"), copy.join("bin/python3.11")).unwrap();
    let lib = copy.join("lib/python3.11");
    std::fs::create_dir_all(lib.join("site-packages")).unwrap();
    for entry in std::fs::read_dir(original.join("lib/python3.11")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "site-packages" {
            std::os::unix::fs::symlink(entry.path(), lib.join(entry.file_name())).unwrap();
        }
    }
    (copy.join("bin"), lib.join("site-packages"))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_env_without_pyvenv_cfg_is_recreated_and_its_base_interpreter_untouched() {
    if !pyenv("3.11.7").is_file() {
        eprintln!("no pyenv 3.11.7 here: skipping");
        return;
    }
    let s = Server::new();
    let (bin, base_packages) = own_interpreter(&s.root);
    s.config(&["deploy.pythonPath", bin.to_str().unwrap()]);
    let cache = s.root.join("cache");
    let vars = [("PUSHDEPLOY_CACHE_DIR", cache.to_str().unwrap())];
    s.app("flask-app");
    s.commit("first");
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars)
        .assert_ok()
        .assert_has(&format!("-> {}", bin.join("python3.11").display()));
    let base_before = listing(&base_packages);
    std::fs::remove_file(s.site.join("env/pyvenv.cfg")).unwrap();
    push_files(
        &s,
        &[("requirements.txt", "tinyweb==1.0.0\ngreeting==2.0.0\n")],
        &vars,
    )
    .assert_ok()
    .assert_has("env broken: env/bin/python is not a virtual env")
    .assert_has("Successfully installed greeting-2.0.0");
    assert_eq!(
        listing(&base_packages),
        base_before,
        "installed into the base"
    );
    assert_eq!(greeting_version(&s), "2.0.0");
    assert!(s.site.join("env/pyvenv.cfg").is_file());
}

#[test]
fn after_a_failed_install_the_dry_run_says_the_last_install_failed() {
    let s = deployed(&[]);
    let push = push_files(&s, &[("requirements.txt", "greeting==9.9.9\n")], &[]);
    push.assert_has("failed in step pip");
    let dry = s.run("deploy", &["--dry-run"]);
    dry.assert_ok();
    let line = dry.remote_or_stdout_line("pip: runs (");
    assert!(
        line.starts_with("the last install, by deployment ")
            && line.contains(", failed; changed since the last successful one: requirements"),
        "{line}"
    );
    let json = s.run("deploy", &["--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(plan["python"]["pip"]["action"], "run");
    assert_eq!(plan["python"]["pip"]["reason"]["kind"], "lastFailed");
}

/// A failed install ran in a copy of the env aside: a push back to the
/// live env's requirements skips the installer.
#[test]
fn after_a_failed_install_a_push_back_to_the_live_requirements_skips_pip() {
    let s = deployed(&[]);
    let good = std::fs::read_to_string(s.work.join("requirements.txt")).unwrap();
    push_files(&s, &[("requirements.txt", "greeting==9.9.9\n")], &[])
        .assert_has("failed in step pip");
    let push = push_files(&s, &[("requirements.txt", &good)], &[]);
    push.assert_ok()
        .assert_has("successful")
        .assert_has("unchanged since");
    assert!(!push.has("failed"), "{}", push.stderr);
    assert_eq!(greeting_version(&s), "1.0.0");
}

/// `python3` and `python3.11` in one folder, both links to one file.
fn two_names(root: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join("names");
    std::fs::create_dir_all(&dir).unwrap();
    let real = std::fs::canonicalize(pyenv("3.11.7")).unwrap();
    for name in ["python3", "python3.11"] {
        std::os::unix::fs::symlink(&real, dir.join(name)).unwrap();
    }
    (dir.join("python3"), dir.join("python3.11"))
}

#[test]
fn one_interpreter_by_two_names_is_one_interpreter() {
    if !pyenv("3.11.7").is_file() {
        eprintln!("no pyenv 3.11.7 here: skipping");
        return;
    }
    let s = Server::new();
    let (short, long) = two_names(&s.root);
    let cache = s.root.join("cache");
    let vars = [("PUSHDEPLOY_CACHE_DIR", cache.to_str().unwrap())];
    s.config(&["deploy.python", short.to_str().unwrap()]);
    s.app("flask-app");
    s.remove("runtime.txt");
    s.commit("no runtime.txt");
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars)
        .assert_ok()
        .assert_has("successful");
    s.config(&["deploy.python", long.to_str().unwrap()]);
    let push = touch(&s, &vars);
    push.assert_ok().assert_has("pip skipped");
    assert!(
        !push.has("changed since the last install"),
        "taken for another interpreter"
    );
    let seeds = || listing(&cache.join("seeds"));
    let before = seeds();
    let again = s.deploy_with(&["--recreate-env"], &vars);
    again.assert_ok().assert_has("pip seeded from");
    assert!(!again.has("caching pip"), "a second seed for the same file");
    assert_eq!(seeds(), before);
}

#[test]
fn a_less_exact_runtime_keeps_the_env_and_names_the_interpreter_it_runs() {
    if !pyenv("3.11.7").is_file() || which::which("python3.11").is_err() {
        eprintln!("needs pyenv's 3.11.7 and another python3.11 on PATH: skipping");
        return;
    }
    let s = deployed(&[("runtime.txt", "python-3.11.7\n")]);
    let env_python = std::fs::canonicalize(s.site.join("env/bin/python")).unwrap();
    let push = push_files(&s, &[("runtime.txt", "python-3.11\n")], &[]);
    push.assert_ok()
        .assert_has(&format!(
            "Python runtime: python-3.11 (runtime.txt) -> {} (3.11.7)",
            env_python.display()
        ))
        .assert_has("Found compatible virtual environment env/")
        .assert_has("pip skipped");
    assert!(!push.has("changed since the last install"));
}

#[test]
fn an_env_that_leads_outside_the_site_is_replaced_and_left_alone() {
    let s = deployed(&[]);
    let real = std::fs::canonicalize(s.site.join("env")).unwrap();
    let outside = s.root.join("outside-env");
    // `env` is the directory itself: moving it out leaves no `env`.
    std::fs::rename(&real, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, s.site.join("env")).unwrap();
    let before = crate::util::snapshot(&outside);
    push_files(
        &s,
        &[("requirements.txt", "tinyweb==1.0.0\ngreeting==2.0.0\n")],
        &[],
    )
    .assert_ok()
    .assert_has(&format!(
        "env/ leads outside the site, to {}",
        outside.display()
    ))
    .assert_has("Successfully installed greeting-2.0.0");
    assert_eq!(
        crate::util::snapshot(&outside),
        before,
        "the outside env changed"
    );
    assert_eq!(greeting_version(&s), "2.0.0");
}

/// The env's packages but what it was made with, as `name version`, sorted.
pub fn installed(s: &Server) -> Vec<String> {
    let run = s.env_python(
        "import importlib.metadata as m; print('\\n'.join(sorted('%s %s' % (d.metadata['Name'].lower(), d.version) for d in m.distributions())))",
    );
    run.assert_ok();
    run.stdout
        .lines()
        .filter(|l| !l.starts_with("pip ") && !l.starts_with("setuptools "))
        .map(str::to_string)
        .collect()
}

#[test]
fn what_requirements_need_follows_includes_markers_and_dependencies_not_constraints() {
    let s = deployed(&[("requirements.txt", "django==0.1.0\ntinyweb==1.0.0\n")]);
    assert_eq!(
        installed(&s),
        ["django 0.1.0", "staticpipe 1.0.0", "tinyweb 1.0.0"]
    );
    // django goes, and staticpipe, which only django needed: a constraint
    // and a requirement whose marker does not hold do not keep it.
    s.write(
        "requirements.txt",
        "-r base/requirements.txt\n-c constraints.txt\nstaticpipe==1.0.0 ; python_version < '3'\n",
    );
    s.write("base/requirements.txt", "tinyweb==1.0.0\n");
    s.write("constraints.txt", "staticpipe==1.0.0\n");
    s.commit("django dropped");
    s.push(&[]).assert_ok().assert_has(
        "removing what requirements.txt no longer needs: django 0.1.0, staticpipe 1.0.0",
    );
    assert_eq!(installed(&s), ["tinyweb 1.0.0"]);
    // An extra of a requirement counts, and what the installed version needs.
    s.write(
        "base/requirements.txt",
        "tinyweb==1.0.0\ndjango[unused]==0.1.0\n",
    );
    s.commit("django back, with an extra it does not have");
    s.push(&[]).assert_ok();
    assert_eq!(
        installed(&s),
        ["django 0.1.0", "staticpipe 1.0.0", "tinyweb 1.0.0"]
    );
}

/// Issue 15 item 24: pip keeps whatever satisfies a requirement, so pushing
/// back an older commit kept a newer commit's pin of a shared dependency.
/// Requirements installed before get the versions they got then; new ones
/// get what a new env would. Run with pip, and with uv when it is here.
#[test]
fn a_push_back_gets_the_versions_it_had_and_a_new_commit_what_a_new_env_would() {
    for (uv, s) in each_installer() {
        // The index of the first push has greeting 1.0.0 only. (`--no-index`
        // in the file: uv 0.13 reads no UV_NO_INDEX.)
        let wheels = s.root.join("wheels");
        std::fs::create_dir(&wheels).unwrap();
        let fixtures = crate::util::fixtures().join("wheels");
        let add = |name: &str| {
            std::fs::copy(fixtures.join(name), wheels.join(name)).unwrap();
        };
        add("greeting-1.0.0-py2.py3-none-any.whl");
        add("tinyweb-1.0.0-py2.py3-none-any.whl");
        let links = wheels.to_str().unwrap();
        let vars = [("PIP_FIND_LINKS", links), ("UV_FIND_LINKS", links)];
        s.app("flask-app");
        s.write("requirements.txt", "--no-index\ngreeting\ntinyweb==1.0.0\n");
        let a = s.commit("A: greeting, any version");
        s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars)
            .assert_ok();
        assert_eq!(greeting_version(&s), "1.0.0");
        let first = env_listing(&s);

        // greeting 2.0.0 appears; B pins it.
        add("greeting-2.0.0-py2.py3-none-any.whl");
        let b = push_files(
            &s,
            &[(
                "requirements.txt",
                "--no-index\ngreeting==2.0.0\ntinyweb==1.0.0\n",
            )],
            &vars,
        );
        b.assert_ok();
        assert_eq!(greeting_version(&s), "2.0.0");

        // A again, by redeploy: the env it had.
        let repo = s.repo.to_str().unwrap();
        s.pushdeploy_with(&["redeploy", "--repo", repo, &a[..7]], &vars)
            .assert_ok()
            .assert_has("these requirements were installed before, by deployment");
        assert_eq!(env_listing(&s), first, "{uv:?}");

        // A commit never deployed: what a new env gets, the newest that fits,
        // not the 1.0.0 that A left.
        push_files(
            &s,
            &[(
                "requirements.txt",
                "--no-index\ngreeting>=1\ntinyweb==1.0.0\n",
            )],
            &vars,
        )
        .assert_ok();
        assert_eq!(greeting_version(&s), "2.0.0", "{uv:?}");

        // A's tree pushed again as a new commit: its requirements got 1.0.0.
        push_files(
            &s,
            &[("requirements.txt", "--no-index\ngreeting\ntinyweb==1.0.0\n")],
            &vars,
        )
        .assert_ok();
        assert_eq!(env_listing(&s), first, "{uv:?}");

        // Once greeting 1.0.0 is gone from the index, A installs as new
        // requirements would, and says why.
        push_files(
            &s,
            &[(
                "requirements.txt",
                "--no-index\ngreeting==2.0.0\ntinyweb==1.0.0\n",
            )],
            &vars,
        )
        .assert_ok();
        std::fs::remove_file(wheels.join("greeting-1.0.0-py2.py3-none-any.whl")).unwrap();
        s.pushdeploy_with(&["redeploy", "--repo", repo, &a[..7]], &vars)
            .assert_ok()
            .assert_has("the versions installed before cannot be installed again");
        assert_eq!(greeting_version(&s), "2.0.0", "{uv:?}");
    }
}

/// The env's distributions and versions, pip's own left out.
fn env_listing(s: &Server) -> Vec<String> {
    let run = s.env_python(
        "import importlib.metadata as m; print('\\n'.join(sorted('%s %s' % (d.metadata['Name'].lower(), d.version) for d in m.distributions())))",
    );
    run.assert_ok();
    run.stdout
        .lines()
        .filter(|l| !l.starts_with("pip ") && !l.starts_with("setuptools "))
        .map(str::to_string)
        .collect()
}

/// Issue 15 item 20, for requirements.txt: a local folder named without
/// `-e` is built into the env; a push that changes only its code gives the
/// env the new code, with pip (which rebuilds it) as with uv (which would
/// keep its first build while the version holds).
#[test]
fn a_local_package_in_the_env_is_the_deployed_commits_code() {
    for (uv, s) in each_installer() {
        // Offline (uv 0.13 reads no UV_NO_INDEX): flit_core from fixtures/wheels.
        let vars = [("UV_OFFLINE", "1")];
        let mylib = |message: &str| {
            s.write(
                "mylib/pyproject.toml",
                "[project]\nname = \"mylib\"\nversion = \"0.1.0\"\ndescription = \"x\"\n\n[build-system]\nrequires = [\"flit_core==4.2.0\"]\nbuild-backend = \"flit_core.buildapi\"\n",
            )
            .write("mylib/mylib.py", &format!("MESSAGE = {message:?}\n"));
        };
        // From outside the site, as a script of env/bin runs.
        let message = || {
            let run = crate::util::TestCommand::new(s.site.join("env/bin/python"), &s.root)
                .args(["-c", "import mylib; print(mylib.MESSAGE)"])
                .run();
            run.assert_ok();
            run.stdout.trim().to_string()
        };
        s.app("flask-app");
        mylib("one");
        push_files(
            &s,
            &[(
                "requirements.txt",
                "greeting==1.0.0\ntinyweb==1.0.0\n./mylib\n",
            )],
            &vars,
        )
        .assert_ok()
        .assert_has("successful");
        assert_eq!(message(), "one", "{uv:?}");
        mylib("two");
        push_files(&s, &[], &vars)
            .assert_ok()
            .assert_has("successful");
        assert_eq!(message(), "two", "{uv:?}");
    }
}

/// Issue 15 item 22: `installer = uv` finds uv as uv.lock does: `uvPath`,
/// else uv on PATH at the pinned version, else the pinned uv in the cache
/// dir (put there beforehand here: the tests are offline), and a missing
/// one is installed there first (offline it cannot be: the line says how
/// to provide it). It used to demand uv on PATH or `uvPath`.
#[test]
fn the_uv_installer_is_the_pinned_uv_of_the_cache_dir() {
    let Some(uv) = crate::util::uv() else {
        eprintln!("uv is not installed: .ci/run installs it; skipping this test here");
        return;
    };
    let version = String::from_utf8(
        std::process::Command::new(&uv)
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .nth(1)
    .unwrap()
    .to_string();
    let s = Server::new();
    s.config(&["deploy.uvVersion", &version]);
    let cache = s.root.join("cache");
    let home = cache.join(format!("tools/uv-{version}"));
    std::fs::create_dir_all(home.join("bin")).unwrap();
    std::os::unix::fs::symlink(&uv, home.join("bin/uv")).unwrap();
    std::fs::write(home.join(".pushdeploy-complete"), &version).unwrap();
    let vars = [("PUSHDEPLOY_CACHE_DIR", cache.to_str().unwrap())];
    s.app("flask-app")
        .write(".deployment", "[config]\ninstaller = uv\n");
    s.commit("uv installs");
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars)
        .assert_ok()
        .assert_has(&format!(
            "{} pip install -r requirements.txt (into the new env)",
            home.join("bin/uv").display()
        ));
    s.env_python("import greeting, tinyweb").assert_ok();

    // Another pinned version is installed into the cache dir first.
    s.config(&["deploy.uvVersion", "0.0.1"]);
    s.deploy_with(&["--dry-run"], &vars).assert_has(&format!(
        "with uv 0.0.1 (not installed: installed into {} first)",
        cache.join("tools/uv-0.0.1/bin/uv").display()
    ));
    let push = touch(&s, &vars);
    let line = push.remote_or_stdout_line("failed");
    assert!(
        line.contains("uv 0.0.1 cannot be installed")
            && line.contains("put it on PATH, or set `git config deploy.uvPath <path to uv>`"),
        "{line}"
    );
    assert!(!cache.join("tools/uv-0.0.1").exists());
}

/// The steps of the newest deployment's record, and whether their times
/// add up to its total (only output and the record lie between them).
fn last_steps(s: &Server) -> Vec<String> {
    let record = &s.records()[0];
    let steps = record["steps"].as_array().unwrap();
    let sum: f64 = steps.iter().map(|st| st["seconds"].as_f64().unwrap()).sum();
    let total = record["seconds"].as_f64().unwrap();
    assert!(sum <= total && sum >= total * 0.5, "{sum} of {total}");
    steps
        .iter()
        .map(|st| st["step"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 17: a VCS line that cannot count as pinned (here: at a short
/// commit id, which no remote lists) makes pip run on every push, and what
/// the requirements need then takes a whole resolution (`pip install
/// --dry-run --report`). It runs again only when what it depends on changed
/// (the requirement files, the env's packages, the interpreter, the
/// installer, the settings), as a step of its own, with its time in the
/// record; the dry run says so.
#[test]
fn a_vcs_requirement_is_resolved_again_only_when_its_inputs_change() {
    let s = Server::new();
    let (_, config) = crate::vcs::hellogit(&s);
    let vars = [("GIT_CONFIG_GLOBAL", config.to_str().unwrap())];
    s.app("flask-app");
    let run = crate::util::git_in(&s.root.join("hellogit"))
        .args(["rev-parse", "--short=9", "HEAD"])
        .run();
    let short = run.stdout.trim();
    let vcs = format!("hellogit @ git+https://git.example.invalid/hellogit.git@{short}\n");
    s.write("requirements.txt", &format!("tinyweb==1.0.0\n{vcs}"));
    s.commit("a package from git");
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars)
        .assert_ok()
        .assert_has("successful in");

    let push = touch(&s, &vars);
    push.assert_ok()
        .assert_has(&format!("requirements.txt line 2: which commit {short} of https://git.example.invalid/hellogit.git names is not known (the remote has no branch or tag {short}: pip takes it for a commit): the installer runs"))
        .assert_has("What requirements.txt needs: pip install --dry-run --report resolves it again (requirements.txt line 2 is a VCS URL; no earlier resolution is recorded)")
        .assert_has("closure: done in");
    assert!(last_steps(&s).contains(&"closure".to_string()));

    // Nothing it depends on changed: its names again, no resolution.
    let push = touch(&s, &vars);
    push.assert_ok()
        .assert_has("What requirements.txt needs: as resolved after deployment ")
        .assert_has("closure: done in");
    assert!(!push.has("resolves it again"), "{}", push.stderr);
    assert!(last_steps(&s).contains(&"closure".to_string()));

    s.update_without_deploy();
    s.run("deploy", &["--dry-run"]).assert_ok().assert_has(
        "closure: what requirements.txt needs takes a whole resolution (requirements.txt line 2 is a VCS URL)",
    );

    // A requirement added: resolved again, and what it gave is remembered.
    push_files(
        &s,
        &[("requirements.txt", &format!("tinyweb==1.0.0\ngreeting==1.0.0\n{vcs}"))],
        &vars,
    )
    .assert_ok()
    .assert_has("resolves it again (requirements.txt line 3 is a VCS URL; changed since the last resolution: requirements, env)");
    // Dropped again: resolved again, and what it no longer needs goes.
    push_files(
        &s,
        &[("requirements.txt", &format!("tinyweb==1.0.0\n{vcs}"))],
        &vars,
    )
    .assert_ok()
    .assert_has("changed since the last resolution: requirements")
    .assert_has("removing what requirements.txt no longer needs: greeting 1.0.0");
    touch(&s, &vars)
        .assert_ok()
        .assert_has("What requirements.txt needs: as resolved after deployment ");
}

/// Issue 17: a VCS line at a full commit id names one tree for good, as
/// `==` names one release: an unchanged push skips pip (and so the
/// resolution after it); another commit id makes it run and install that.
#[test]
fn a_vcs_requirement_at_a_commit_id_lets_an_unchanged_push_skip_pip() {
    let s = Server::new();
    let (_, config) = crate::vcs::hellogit(&s);
    let vars = [("GIT_CONFIG_GLOBAL", config.to_str().unwrap())];
    let repo = s.root.join("hellogit");
    let head = |repo: &Path| {
        let run = crate::util::git_in(repo).args(["rev-parse", "HEAD"]).run();
        run.stdout.trim().to_string()
    };
    let first = head(&repo);
    let line = |id: &str| {
        format!("tinyweb==1.0.0\nhellogit @ git+https://git.example.invalid/hellogit.git@{id}\n")
    };
    s.app("flask-app");
    s.write("requirements.txt", &line(&first));
    s.commit("a package from git, at a commit");
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars)
        .assert_ok()
        .assert_has("successful in");
    let push = touch(&s, &vars);
    push.assert_ok()
        .assert_has(&format!(
            "requirements.txt line 2: https://git.example.invalid/hellogit.git at commit {}; env/ has it",
            &first[..7]
        ))
        .assert_has("pip skipped");
    assert!(!push.has("What requirements.txt needs"), "{}", push.stderr);

    std::fs::write(
        repo.join("hellogit/__init__.py"),
        "WHERE = \"second commit\"\n",
    )
    .unwrap();
    crate::util::git_in(&repo)
        .args(["commit", "-q", "-am", "second"])
        .run()
        .assert_ok();
    let second = head(&repo);
    // pip alone keeps the installed build while its version is the same:
    // the env's one, at the other commit, is uninstalled first.
    push_files(&s, &[("requirements.txt", &line(&second))], &vars)
        .assert_ok()
        .assert_has(&format!(
            "env/ has hellogit {}: installed again",
            &first[..7]
        ))
        .assert_has(&format!(
            "Resolved https://git.example.invalid/hellogit.git to commit {second}"
        ));
    s.env_python("import hellogit; assert hellogit.WHERE == 'second commit', hellogit.WHERE")
        .assert_ok();
    touch(&s, &vars).assert_ok().assert_has("pip skipped");
}

/// Issue 17: a requirements file that pins every package in the env (as
/// `pip freeze` writes it) is installed without `--upgrade` (the index is not
/// asked about each package), and the env is what a new one would get; one
/// package in the env that no line pins (a dependency) keeps the eager upgrade.
/// With pip, and with uv when it is here.
#[test]
fn a_file_that_pins_every_package_installs_without_asking_the_index_about_each() {
    for (uv, s) in each_installer() {
        let said = "installed without --upgrade";
        s.app("flask-app");
        s.write("requirements.txt", "tinyweb==1.0.0\ngreeting==1.0.0\n");
        s.commit("pinned");
        s.push(&[]).assert_ok();
        let run = push_files(
            &s,
            &[("requirements.txt", "tinyweb==1.0.0\ngreeting==2.0.0\n")],
            &[],
        );
        run.assert_ok().assert_has(said);
        assert_eq!(greeting_version(&s), "2.0.0", "{uv:?}");
        assert_eq!(
            env_listing(&s),
            ["greeting 2.0.0", "tinyweb 1.0.0"],
            "{uv:?}"
        );

        // Django 0.1.0 needs staticpipe, which no line pins: eager again.
        push_files(
            &s,
            &[(
                "requirements.txt",
                "tinyweb==1.0.0\ngreeting==2.0.0\nDjango==0.1.0\n",
            )],
            &[],
        )
        .assert_ok();
        let run = push_files(
            &s,
            &[(
                "requirements.txt",
                "tinyweb==1.0.0\ngreeting==1.0.0\nDjango==0.1.0\n",
            )],
            &[],
        );
        run.assert_ok();
        assert!(!run.has(said), "{uv:?}: {run}");
        assert_eq!(
            env_listing(&s),
            [
                "django 0.1.0",
                "greeting 1.0.0",
                "staticpipe 1.0.0",
                "tinyweb 1.0.0"
            ],
            "{uv:?}"
        );
    }
}

/// Issue 17: uv keeps what it learnt of an interpreter by its path, so the
/// env prepared aside for an install is made under one of a few fixed
/// names: a dependency change does not begin with uv running the env's
/// Python to ask again, which cost 70 ms or more a push. Seen in uv's cache:
/// its interpreter entries stop growing once each name was seen.
#[test]
fn uv_knows_the_env_prepared_aside_from_earlier_pushes() {
    let Some(uv) = crate::util::uv() else {
        eprintln!("uv is not installed: skipped");
        return;
    };
    let s = Server::new();
    s.config(&["deploy.installer", uv.to_str().unwrap()]);
    let cache = s.root.join("uv-cache");
    let vars = [("UV_CACHE_DIR", cache.to_str().unwrap())];
    let entries = || -> usize {
        std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("interpreter-"))
            .map(|e| walk_files(&e.path()))
            .sum()
    };
    s.app("flask-app");
    s.write("requirements.txt", "tinyweb==1.0.0\ngreeting==1.0.0\n");
    s.commit("first");
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars)
        .assert_ok();
    let mut counts = Vec::new();
    for version in ["2.0.0", "1.0.0", "2.0.0", "1.0.0", "2.0.0"] {
        let text = format!("tinyweb==1.0.0\ngreeting=={version}\n");
        push_files(&s, &[("requirements.txt", &text)], &vars).assert_ok();
        assert_eq!(greeting_version(&s), version);
        counts.push(entries());
    }
    // The first two changes may each meet a name for the first time.
    assert!(
        counts[2..].iter().all(|&c| c == counts[1]),
        "uv's interpreter entries after each push: {counts:?}"
    );
}

fn walk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk_files(&e.path()),
                    _ => 1,
                })
                .sum()
        })
        .unwrap_or(0)
}
