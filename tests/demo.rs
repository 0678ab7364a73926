//! Issue 15 (small): `bash scripts/demo` looked for `target/debug` and failed
//! when `CARGO_TARGET_DIR` (or a cargo config's `target-dir`) put the binary
//! elsewhere; it runs the binary cargo says it built.
//!
//! Issue 16: the demo's push starts the app, a second push serves its new
//! page, with the time from push to page; the app is stopped at the end.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::{BIN, TestCommand, fixtures};

#[test]
fn the_demo_runs_the_binary_cargo_reports_wherever_the_target_dir_is() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // A checkout without target/: the demo and the fixtures it deploys.
    let checkout = root.join("checkout");
    std::fs::create_dir_all(checkout.join("scripts")).unwrap();
    let demo = checkout.join("scripts/demo");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo"),
        &demo,
    )
    .unwrap();
    std::os::unix::fs::symlink(fixtures(), checkout.join("fixtures")).unwrap();
    // The binary where CARGO_TARGET_DIR puts it, and a cargo that reports it
    // there as `cargo build --message-format=json` does (a real build would
    // take minutes in a fresh target dir).
    let target = root.join("elsewhere");
    let built = target.join("debug/pushdeploy");
    std::fs::create_dir_all(built.parent().unwrap()).unwrap();
    std::fs::copy(BIN, &built).unwrap();
    let stub = root.join("stub-bin");
    std::fs::create_dir_all(&stub).unwrap();
    let asked = root.join("cargo-args");
    let artifact = serde_json::json!({
        "reason": "compiler-artifact",
        "target": {"name": "pushdeploy", "kind": ["bin"]},
        "executable": built,
    });
    std::fs::write(
        stub.join("cargo"),
        format!(
            "#!/bin/sh\necho \"$@\" > '{}'\ncat <<'JSON'\n{artifact}\n{{\"reason\":\"build-finished\",\"success\":true}}\nJSON\n",
            asked.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(stub.join("cargo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", stub.display(), std::env::var("PATH").unwrap());
    let target_dir = target.to_str().unwrap();
    let run = TestCommand::new("bash", root)
        .args([&demo])
        // Running on, as `init` leaves it for a user (the tests' environment
        // turns it off).
        .envs(&[
            ("PATH", &path),
            ("CARGO_TARGET_DIR", target_dir),
            ("PUSHDEPLOY_RUN", "true"),
        ])
        .run();
    run.assert_ok()
        .assert_has("Deployment ")
        .assert_has("Hello from pushdeploy!");
    // Issue 16: the push started the app, a second push served its new page,
    // and the demo stopped the app when it ended.
    run.assert_has("Hello again from pushdeploy!")
        .assert_has("from git push to this page served: ");
    let url = run.remote_or_stdout_line("GET http://127.0.0.1:");
    let port: u16 = url.split('/').next().unwrap().parse().unwrap();
    assert_eq!(
        crate::util::http_get(port, "/"),
        crate::util::Answer::Refused
    );
    let args = std::fs::read_to_string(&asked).unwrap();
    assert!(
        args.contains("build") && args.contains("--message-format=json"),
        "{args}"
    );
    assert!(!checkout.join("target").exists());
}
