//! Whole transcripts: everything a user sees, compared with the files in
//! `tests/transcripts/` after `Server::normalise` (ids, temp paths, times,
//! the interpreter found). When output changes on purpose,
//! `UPDATE_TRANSCRIPTS=1 cargo test transcript` rewrites the files; the
//! change then shows in `git diff`.

use crate::util::{Server, assert_transcript};

#[test]
fn transcript_of_a_first_push_of_the_flask_app() {
    let s = Server::new();
    s.app("flask-app");
    let id = s.commit("first");
    let push = s.push(&[]);
    push.assert_ok();
    assert_transcript("first_push", &s.normalise(&push.stderr, &[(&id, "COMMIT")]));
}

#[test]
fn transcript_of_a_dry_run_of_the_flask_app() {
    let s = Server::new();
    s.app("flask-app");
    let id = s.commit("first");
    s.update_without_deploy();
    let dry = s.run("deploy", &["--dry-run"]);
    dry.assert_ok();
    assert_transcript("dry_run", &s.normalise(&dry.all(), &[(&id, "COMMIT")]));
}

#[test]
fn transcripts_normalise_what_changes_between_runs() {
    let s = Server::new();
    let id = "8e088789fec552c195d4b94628e56f90554101f3";
    let text = format!(
        "-----> Deploying 8e08878 to {root}/site   \n\
         -----> Python runtime: python-3.11 (runtime.txt) -> /usr/bin/python3.11 (3.11.2)\n\
         \x20      caching pip for /usr/bin/python3.11 (once per interpreter)\n\
         \x20      /usr/bin/python3.11 -m venv --without-pip {root}/site/.pushdeploy-env-83HCoC\n\
         \x20      pip seeded from {cache}/seeds/python-3.11.2-_usr_bin_python3.11\n\
         \x20      Successfully installed pip-24.0 greeting-1.0.0\n\
         \x20      pip: done in 12.5 s; 10 s; v1.25 stays\n\
         started 2026-11-28T03:26:58Z (pid 4242) by {other}\n",
        root = s.root.display(),
        cache = crate::util::cache_dir().display(),
        other = "0123456789abcdef0123456789abcdef01234567",
    );
    assert_eq!(
        s.normalise(&text, &[(id, "COMMIT")]),
        "-----> Deploying [COMMIT] to [ROOT]/site\n\
         -----> Python runtime: python-3.11 (runtime.txt) -> [PYTHON] ([PYTHON_VERSION])\n\
         \x20      [PYTHON] -m venv --without-pip [ROOT]/site/.pushdeploy-env-[RANDOM]\n\
         \x20      pip seeded from [CACHE]/seeds/[SEED]\n\
         \x20      Successfully installed pip-[VERSION] greeting-1.0.0\n\
         \x20      pip: done in [T] s; 10 s; v1.25 stays\n\
         started [DATE] (pid [PID]) by [ID]\n"
    );
    assert_eq!(
        crate::util::line_diff("a\nb\nc\n", "a\nc\nd\n"),
        "  a\n- b\n  c\n+ d\n"
    );
}
