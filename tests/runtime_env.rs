//! Issue 3: choosing, checking and forcing the runtime and the env.

use crate::util::{Server, deployed_flask, pyenv};

fn env_version(s: &Server) -> String {
    s.env_python("import sys; print('%d.%d.%d' % sys.version_info[:3])")
        .stdout
        .trim()
        .to_string()
}

#[test]
fn runtime_sources_in_order_runtime_txt_python_version_setting_default() {
    let s = deployed_flask();
    s.remove("runtime.txt")
        .write(".python-version", "# pyenv\n3.12\n");
    s.commit("pyenv file");
    s.push(&[])
        .assert_ok()
        .assert_has("Python runtime: python-3.12 (.python-version) -> ");
    assert!(env_version(&s).starts_with("3.12."));

    s.remove(".python-version");
    s.commit("no version file");
    s.config(&["deploy.python", "3.11"]);
    s.push(&[])
        .assert_ok()
        .assert_has("Python runtime: python-3.11 (setting python, git config deploy.python) -> ")
        .assert_has("runtime changed from python-3.12 to python-3.11");
    assert!(env_version(&s).starts_with("3.11."));

    s.config(&["--unset", "deploy.python"]);
    let run = s.run("deploy", &["--dry-run"]);
    run.assert_ok()
        .assert_has("(no runtime.txt or .python-version; the default python3) -> ");
}

#[test]
fn an_exact_patch_release_must_be_installed() {
    let s = deployed_flask();
    s.write("runtime.txt", "python-3.12.1\n");
    s.commit("exact");
    s.push(&[])
        .assert_ok()
        .assert_has("Python runtime: python-3.12.1 (runtime.txt)")
        .assert_has("successful");
    assert_eq!(env_version(&s), "3.12.1");
    s.write("runtime.txt", "python-3.12.99\n");
    s.commit("missing patch");
    let push = s.push(&[]);
    let last = push.remote().last().unwrap().clone();
    assert!(
        last.contains(
            "runtime.txt: python-3.12.99 is not installed; the 3.12 builds found are 3.12.1 ("
        ),
        "{last}"
    );
    assert_eq!(env_version(&s), "3.12.1");
}

#[test]
fn python_2_without_virtualenv_is_a_clear_error_in_the_plan() {
    let s = deployed_flask();
    s.write("runtime.txt", "python-2.7\n");
    s.commit("python 2");
    let push = s.push(&[]);
    let last = push.remote().last().unwrap().clone();
    assert!(
        last.contains("failed in step plan") && last.contains("has no virtualenv module"),
        "{last}"
    );
    assert!(env_version(&s).starts_with("3.11."));
}

#[test]
fn every_way_of_forcing_a_new_env_says_what_forced_it() {
    let s = deployed_flask();
    // env is a directory that the prepared one exchanges places with: a
    // new env is a new inode at `env`.
    let marker = |s: &Server| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.site.join("env")).unwrap())
    };
    let first = marker(&s);

    s.run("deploy", &["--recreate-env"]).assert_ok().assert_has(
        "Creating virtual environment env/ with python-3.11: forced by flag --recreate-env",
    );
    let second = marker(&s);
    assert_ne!(first, second);

    s.write("app.py", "# touched\n");
    s.commit("touch");
    s.push(&["-o", "recreate-env", "-o", "x;$(touch /tmp/pwned)", "main"])
        .assert_ok()
        .assert_has("Ignoring unknown push option \"x;$(touch /tmp/pwned)\"")
        .assert_has("forced by push option recreate-env");
    let third = marker(&s);
    assert_ne!(second, third);

    s.write("app.py", "# touched again\n");
    s.commit("touch again");
    s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("PUSHDEPLOY_RECREATE_ENV", "1")],
    )
    .assert_ok()
    .assert_has("forced by environment PUSHDEPLOY_RECREATE_ENV");
    assert_ne!(third, marker(&s));

    s.pushdeploy(&["env", "delete", "--repo", s.repo.to_str().unwrap()])
        .assert_ok()
        .assert_has("Deleted ");
    assert!(!s.site.join("env").exists());
    assert_eq!(
        s.env_dirs(),
        2,
        "env delete keeps the env's directory (an app may run on it), and the one replaced before, until the next successful deployment"
    );
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("Creating virtual environment env/ with python-3.11: no env yet");
    s.env_python("import greeting").assert_ok();
    assert_eq!(
        s.env_dirs(),
        0,
        "the deleted env's directory is gone, and there was no env to replace"
    );
}

#[test]
fn a_failed_recreation_leaves_the_old_env_working() {
    let s = deployed_flask();
    let inode = |s: &Server| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.site.join("env")).unwrap())
    };
    let before = inode(&s);
    s.write("runtime.txt", "python-3.12\n")
        .write("requirements.txt", "greeting==1.0.0\nno-such-package==9\n");
    s.commit("3.12 with a bad requirement");
    s.push(&[])
        .assert_has("runtime changed from python-3.11 to python-3.12")
        .assert_has("failed in step pip");
    assert_eq!(inode(&s), before);
    assert!(env_version(&s).starts_with("3.11."));
    s.env_python("import greeting, tinyweb").assert_ok();
    assert_eq!(s.env_dirs(), 0, "the half-built env was removed");
}

#[test]
fn moving_between_two_interpreters_and_back() {
    let s = deployed_flask();
    for (runtime, version) in [("python-3.12", "3.12."), ("python-3.11", "3.11.")] {
        s.write("runtime.txt", runtime);
        s.commit(runtime);
        s.push(&[]).assert_ok().assert_has("runtime changed from");
        assert!(env_version(&s).starts_with(version));
        s.env_python("import greeting, tinyweb").assert_ok();
    }
}

#[test]
fn an_env_made_by_kudu_is_recognised_and_a_hand_made_one_replaced() {
    let s = Server::new();
    let python = pyenv("3.11.7");
    let made = std::process::Command::new(&python)
        .args(["-m", "venv"])
        .arg(s.site.join("env"))
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(s.site.join("env/azure.env.python-3.11.txt"), "").unwrap();
    s.app("flask-app");
    s.commit("first");
    s.push(&[])
        .assert_ok()
        .assert_has("Found compatible virtual environment env/ (python-3.11)")
        .assert_has("Copying env/ aside for the install");
    // Installed into a copy, exchanged with it in one rename; the plain env
    // is kept beside it until the next successful deployment.
    assert!(
        s.site
            .join("env")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_dir()
    );
    assert_eq!(s.env_dirs(), 1);
    s.env_python("import greeting").assert_ok();

    std::fs::remove_file(s.site.join("env/azure.env.python-3.11.txt")).unwrap();
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("env has no marker azure.env.python-3.11.txt");
    assert!(
        s.site
            .join("env")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_dir()
    );
    assert_eq!(
        s.env_dirs(),
        1,
        "the env replaced two deployments ago was removed; the last one is kept"
    );
    // The env works through the path `env`, activate script included.
    let activate = std::process::Command::new("bash")
        .args([
            "-c",
            ". env/bin/activate && python -c 'import greeting' && pip --version",
        ])
        .current_dir(&s.site)
        .output()
        .unwrap();
    assert!(
        activate.status.success(),
        "{}",
        String::from_utf8_lossy(&activate.stderr)
    );
}

#[test]
fn an_env_whose_interpreter_is_gone_is_recreated() {
    let s = Server::new();
    let bin = s.root.join("pythons");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(pyenv("3.11.7"), bin.join("python3.11")).unwrap();
    s.app("flask-app");
    s.commit("first");
    let path = bin.to_str().unwrap();
    s.git_with(
        &["push", s.repo.to_str().unwrap(), "main"],
        &[("PUSHDEPLOY_PYTHON_PATH", path)],
    )
    .assert_ok()
    .assert_has(&format!("-> {path}/python3.11 (3.11.7)"));
    std::fs::remove_dir_all(&bin).unwrap();
    s.run("deploy", &[]).assert_ok().assert_has(&format!(
        "the interpreter the env was built on is gone ({path})"
    ));
    s.env_python("import greeting").assert_ok();
}

#[test]
fn the_dry_runs_package_list_matches_what_the_real_run_installs() {
    let s = deployed_flask();
    s.write("requirements.txt", "-r base.txt\ntinyweb==1.0.0\n")
        .write("base.txt", "greeting==2.0.0\n");
    s.commit("upgrade through an included file");
    s.update_without_deploy();
    let dry = s.run("deploy", &["--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let listed: Vec<String> = plan["python"]["packages"]["packages"]
        .as_array()
        .expect("pip's answer is in the plan")
        .iter()
        .map(|p| {
            format!(
                "{}-{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    let run = s.run("deploy", &[]);
    let installed = run.remote_or_stdout_line("Successfully installed ");
    let mut installed: Vec<String> = installed.split_whitespace().map(str::to_string).collect();
    installed.sort();
    assert_eq!(listed, installed);
    assert_eq!(listed, ["greeting-2.0.0"]);
}

#[test]
fn a_new_env_is_seeded_with_the_same_pip_as_venv_would_install() {
    let s = Server::new();
    s.app("flask-app");
    s.write("runtime.txt", "python-3.11.7\n");
    s.commit("first");
    let seeds = s.root.join("cache");
    let vars = [("PUSHDEPLOY_CACHE_DIR", seeds.to_str().unwrap())];
    s.git_with(&["push", s.repo.to_str().unwrap(), "main"], &vars)
        .assert_ok()
        .assert_has("caching pip for ")
        .assert_has("-m venv --without-pip");
    let again = s.deploy_with(&["--recreate-env"], &vars);
    again.assert_ok().assert_has("pip seeded from");
    assert!(
        !again.has("caching pip"),
        "the seed is made once per interpreter"
    );

    let freeze = |pip: &std::path::Path| {
        let out = std::process::Command::new(pip)
            .args(["list", "--format=freeze"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("greeting==") && !l.starts_with("tinyweb=="))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    let plain = s.root.join("plain-venv");
    assert!(
        std::process::Command::new(pyenv("3.11.7"))
            .args(["-m", "venv"])
            .arg(&plain)
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        freeze(&s.site.join("env/bin/pip")),
        freeze(&plain.join("bin/pip"))
    );
    let script = std::fs::read_to_string(s.site.join("env/bin/pip3.11")).unwrap();
    assert!(
        script.starts_with(&format!("#!{}", s.site.join("env/bin/python").display())),
        "{script}"
    );
}

#[test]
fn a_broken_env_and_a_patch_that_differs_are_recreated_with_the_reason() {
    let s = deployed_flask();
    // The env's python is gone, its marker still there.
    let real = std::fs::canonicalize(s.site.join("env")).unwrap();
    std::fs::remove_file(real.join("bin/python")).unwrap();
    s.run("deploy", &[])
        .assert_ok()
        .assert_has("env broken: env/bin/python does not run");
    s.env_python("import greeting").assert_ok();

    // Built on one 3.11, asked for another patch of 3.11.
    let other = if env_version(&s) == "3.11.7" {
        "3.11.2"
    } else {
        "3.11.7"
    };
    if which::which("python3.11").is_err() {
        return;
    }
    s.write("runtime.txt", &format!("python-{other}\n"));
    s.commit("another patch");
    let push = s.push(&[]);
    if push.has("is not installed") {
        eprintln!("only one 3.11 build here: the patch case is not exercised");
        return;
    }
    push.assert_has(&format!("python-{other} is wanted"));
    assert_eq!(env_version(&s), other);
}
