//! Issue 17: after an install, what requirements.txt needs is read in Rust
//! from the env's metadata; what Rust cannot be sure to read as pip does is
//! read by Python, and a line says why.

use crate::packages::installed;
use crate::util::Server;

#[test]
fn what_requirements_need_is_read_in_rust_and_by_python_where_rust_cannot_be_sure() {
    let s = Server::new();
    s.app("flask-app");
    s.write("requirements.txt", "django==0.1.0\ntinyweb==1.0.0\n");
    s.commit("django");
    s.push(&[]).assert_ok();
    // Read in Rust: django goes, and staticpipe, which only django needed.
    s.write(
        "requirements.txt",
        "tinyweb==1.0.0\nDjango[unused]==0.1.0 ; sys_platform == 'win32'\n",
    );
    s.commit("django only on Windows");
    let run = s.push(&[]);
    run.assert_ok().assert_has(
        "removing what requirements.txt no longer needs: django 0.1.0, staticpipe 1.0.0",
    );
    assert!(!run.has("Python reads"), "{run}");
    assert_eq!(installed(&s), ["tinyweb 1.0.0"]);
    // An egg-info put there by hand: importlib.metadata reads it, Rust does
    // not, so Python works out what is needed, and says so.
    let lib = s.site.join("env/lib");
    let python_dir = std::fs::read_dir(&lib).unwrap().next().unwrap().unwrap();
    let egg = python_dir.path().join("site-packages/legacy-1.0.egg-info");
    std::fs::create_dir(&egg).unwrap();
    std::fs::write(
        egg.join("PKG-INFO"),
        "Metadata-Version: 1.1\nName: legacy\nVersion: 1.0\n",
    )
    .unwrap();
    s.write("requirements.txt", "tinyweb==1.0.0\ndjango==0.1.0\n");
    s.commit("django back");
    s.push(&[])
        .assert_ok()
        .assert_has("legacy-1.0.egg-info is not a .dist-info: Python reads the metadata instead");
    s.write("requirements.txt", "tinyweb==1.0.0\n");
    s.commit("django dropped again");
    s.push(&[]).assert_ok().assert_has(
        "removing what requirements.txt no longer needs: django 0.1.0, staticpipe 1.0.0",
    );
    assert_eq!(installed(&s), ["legacy 1.0", "tinyweb 1.0.0"]);
}
