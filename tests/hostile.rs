//! Issue 6: hostile commits. Trees that git's own client refuses to make are
//! written object by object into the bare repository, `main` is pointed at
//! them, and `pushdeploy deploy` runs. Whatever the tree holds, nothing is
//! written outside the site: the deployment completes and the site matches
//! the commit, or it fails in the plan naming the entry, with the site as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use git2::{ObjectType, Oid, Repository};

use crate::util::{Run, Server, snapshot};

const FILE: u32 = 0o100644;
const EXEC: u32 = 0o100755;
const LINK: u32 = 0o120000;
const DIR: u32 = 0o040000;
const GITLINK: u32 = 0o160000;

/// A tree to write as raw git objects: names are bytes, written as given,
/// in the order given, unchecked.
#[derive(Clone, Default)]
struct Tree(Vec<(Vec<u8>, Node)>);

#[derive(Clone)]
enum Node {
    Blob(u32, Vec<u8>),
    Tree(Tree),
    Gitlink(Oid),
    /// An entry with any mode pointing at any object id, existing or not.
    Ref(u32, Oid),
}

impl Tree {
    fn new() -> Self {
        Tree::default()
    }

    /// A file at a `/`-separated path, making the directories on the way.
    fn file(self, path: &str, content: &str) -> Self {
        self.at(path, Node::Blob(FILE, content.as_bytes().to_vec()))
    }

    fn link(self, path: &str, target: &str) -> Self {
        self.at(path, Node::Blob(LINK, target.as_bytes().to_vec()))
    }

    fn at(mut self, path: &str, node: Node) -> Self {
        let parts: Vec<&str> = path.split('/').collect();
        self.put(&parts, node);
        self
    }

    fn put(&mut self, parts: &[&str], node: Node) {
        let name = parts[0].as_bytes();
        if parts.len() == 1 {
            self.0.push((name.to_vec(), node));
            return;
        }
        let index = match self
            .0
            .iter()
            .position(|(n, node)| n == name && matches!(node, Node::Tree(_)))
        {
            Some(i) => i,
            None => {
                self.0.push((name.to_vec(), Node::Tree(Tree::new())));
                self.0.len() - 1
            }
        };
        if let Node::Tree(sub) = &mut self.0[index].1 {
            sub.put(&parts[1..], node);
        }
    }

    /// One entry whose name is taken as it is: it may hold `/`, `..`, anything.
    fn raw(mut self, name: &[u8], node: Node) -> Self {
        self.0.push((name.to_vec(), node));
        self
    }

    /// Entries in git's order (a directory sorts as if its name ended in `/`).
    fn sorted(mut self) -> Self {
        let key = |(name, node): &(Vec<u8>, Node)| {
            let mut k = name.clone();
            if matches!(node, Node::Tree(_) | Node::Ref(DIR, _)) {
                k.push(b'/');
            }
            k
        };
        self.0.sort_by_key(key);
        for (_, node) in &mut self.0 {
            if let Node::Tree(sub) = node {
                *sub = std::mem::take(sub).sorted();
            }
        }
        self
    }

    /// What the site should hold after deploying this tree: each path with
    /// `dir`, or the file or link the way `snapshot` shows it. Directories
    /// come from the files in them: the sync makes no empty ones.
    fn expected(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        self.expect_into("", &mut out);
        let dirs: Vec<String> = out
            .keys()
            .flat_map(|path| {
                let parts: Vec<&str> = path.split('/').collect();
                (1..parts.len())
                    .map(|n| parts[..n].join("/"))
                    .collect::<Vec<_>>()
            })
            .collect();
        for dir in dirs {
            out.insert(dir, "dir".into());
        }
        out
    }

    fn expect_into(&self, prefix: &str, out: &mut BTreeMap<String, String>) {
        for (name, node) in &self.0 {
            let name = String::from_utf8(name.clone()).unwrap();
            if prefix.is_empty() && [".git", ".deployment", "deploy.sh"].contains(&name.as_str()) {
                continue;
            }
            let path = format!("{prefix}{name}");
            match node {
                Node::Blob(LINK, target) => {
                    out.insert(path, format!("link -> {}", String::from_utf8_lossy(target)));
                }
                Node::Blob(mode, content) => {
                    let mode = if *mode == EXEC { 0o755 } else { 0o644 };
                    out.insert(
                        path,
                        format!("file {mode:o} {:?}", String::from_utf8_lossy(content)),
                    );
                }
                Node::Tree(sub) => sub.expect_into(&format!("{path}/"), out),
                Node::Gitlink(_) | Node::Ref(..) => {}
            }
        }
    }
}

/// The site as `snapshot` shows it, with directories' modes left out, and
/// without the env (which the sync never touches).
fn deployed(site: &Path) -> BTreeMap<String, String> {
    snapshot(site)
        .into_iter()
        .filter(|(path, _)| {
            path != "env" && !path.starts_with("env/") && path != ".pushdeploy-repository"
        })
        .map(|(path, what)| {
            let what = if what.starts_with("dir ") {
                "dir".to_string()
            } else {
                what
            };
            (path, what)
        })
        .collect()
}

/// Writes trees and commits straight into the server's bare repository.
struct Objects {
    repo: Repository,
}

impl Objects {
    fn open(s: &Server) -> Self {
        Objects {
            repo: Repository::open(&s.repo).unwrap(),
        }
    }

    fn write(&self, tree: &Tree) -> Oid {
        let mut raw = Vec::new();
        for (name, node) in &tree.0 {
            let (mode, id) = match node {
                Node::Blob(mode, content) => (*mode, self.repo.blob(content).unwrap()),
                Node::Tree(sub) => (DIR, self.write(sub)),
                Node::Gitlink(id) => (GITLINK, *id),
                Node::Ref(mode, id) => (*mode, *id),
            };
            raw.extend_from_slice(format!("{mode:o} ").as_bytes());
            raw.extend_from_slice(name);
            raw.push(0);
            raw.extend_from_slice(id.as_bytes());
        }
        self.repo
            .odb()
            .unwrap()
            .write(ObjectType::Tree, &raw)
            .unwrap()
    }

    /// `levels` directories named `name`, one in the other, with `leaf` in
    /// the innermost; written from the inside out, without recursion.
    fn nested(&self, levels: usize, name: &str, leaf: &Tree) -> Oid {
        let mut id = self.write(leaf);
        for _ in 1..levels {
            id = self.write(&Tree::new().raw(name.as_bytes(), Node::Ref(DIR, id)));
        }
        id
    }

    /// Commits `tree`, its entries put in git's order, on top of main and
    /// moves main to it (no hook runs).
    fn commit(&self, tree: &Tree, message: &str) -> String {
        self.commit_as_is(&tree.clone().sorted(), message)
    }

    /// Commits `tree` with its entries in the order given.
    fn commit_as_is(&self, tree: &Tree, message: &str) -> String {
        let tree = self.repo.find_tree(self.write(tree)).unwrap();
        let sig = git2::Signature::now("Mallory", "mallory@example.invalid").unwrap();
        let parent = self
            .repo
            .find_reference("refs/heads/main")
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = self
            .repo
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                message,
                &tree,
                &parents,
            )
            .unwrap();
        id.to_string()
    }
}

/// A canary beside the site, and the names at the server's root: neither may
/// change whatever a deployment does.
struct Outside {
    root: BTreeSet<String>,
    canary: BTreeMap<String, String>,
}

impl Outside {
    fn new(s: &Server) -> Self {
        std::fs::create_dir_all(s.root.join("canary/inner")).unwrap();
        std::fs::write(s.root.join("canary/keep.txt"), "canary\n").unwrap();
        std::fs::write(s.root.join("canary/inner/deep.txt"), "deep\n").unwrap();
        Outside {
            root: names(&s.root),
            canary: snapshot(&s.root.join("canary")),
        }
    }

    #[track_caller]
    fn unchanged(&self, s: &Server) {
        assert_eq!(
            names(&s.root),
            self.root,
            "something appeared or went beside the site"
        );
        assert_eq!(
            snapshot(&s.root.join("canary")),
            self.canary,
            "the canary beside the site changed"
        );
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A server whose site holds a first, ordinary deployment.
fn deployed_server() -> (Server, Objects, Outside) {
    let s = Server::new();
    let objects = Objects::open(&s);
    let outside = Outside::new(&s);
    let base = Tree::new()
        .file("app.py", "print('base')\n")
        .file("static/site.css", "body {}\n");
    objects.commit(&base, "base");
    s.run("deploy", &[]).assert_ok();
    assert_eq!(deployed(&s.site), base.expected());
    (s, objects, outside)
}

/// The deployment completed and the site is exactly the commit.
#[track_caller]
fn assert_deployed(s: &Server, run: &Run, tree: &Tree, outside: &Outside) {
    run.assert_ok();
    assert_eq!(deployed(&s.site), tree.expected());
    outside.unchanged(s);
}

/// The deployment failed in the plan with one line naming the entry, and
/// changed nothing.
#[track_caller]
fn assert_refused(
    s: &Server,
    run: &Run,
    entry: &str,
    before: &BTreeMap<String, String>,
    outside: &Outside,
) -> String {
    assert_eq!(run.status, 1, "a refused commit is a failed deployment");
    let last = run.stdout.lines().last().unwrap_or("").to_string();
    assert!(
        last.starts_with("-----> Deployment ") && last.contains(" failed in step plan "),
        "{last}"
    );
    assert!(
        last.contains(&format!("commit entry {entry}")),
        "the failure names {entry}: {last}"
    );
    assert_eq!(&snapshot(&s.site), before, "the site changed");
    outside.unchanged(s);
    last
}

fn app() -> Tree {
    Tree::new().file("app.py", "print('next')\n")
}

fn blob(content: &str) -> Node {
    Node::Blob(FILE, content.as_bytes().to_vec())
}

#[test]
fn entries_that_name_no_file_are_refused_in_the_plan() {
    let (s, objects, outside) = deployed_server();
    let before = snapshot(&s.site);
    let escape = || Tree::new().file("canary/keep.txt", "owned\n");
    let cases: Vec<(Tree, &str)> = vec![
        (app().raw(b"..", Node::Tree(escape())), "\"..\""),
        (app().raw(b".", Node::Tree(escape())), "\".\""),
        (
            app().raw(b".git", Node::Tree(Tree::new().file("hooks/x", "x"))),
            "\".git\"",
        ),
        (
            app().raw(b".GIT", Node::Tree(Tree::new().file("config", "x"))),
            "\".GIT\"",
        ),
        (
            app().raw(b"static", Node::Tree(Tree::new().raw(b".Git", blob("x")))),
            "\"static/.Git\"",
        ),
        (
            app().raw(b"../canary/keep.txt", blob("owned\n")),
            "\"../canary/keep.txt\"",
        ),
        (app().raw(b"a/b", blob("x")), "\"a/b\""),
        (app().raw(b"/abs", blob("x")), "\"/abs\""),
        (app().raw(b"bad\xffname", blob("x")), r#""bad\xffname""#),
        (
            app().file("static/.pushdeploy-tmp-x1", "x"),
            "static/.pushdeploy-tmp-x1: names starting with .pushdeploy-tmp- are pushdeploy's temp files",
        ),
        // libgit2 cannot read a tree with an empty name: the directory that
        // holds it is named. (A NUL cannot be in a name: it ends the name in
        // git's tree format, so no such tree can be written at all.)
        (
            app().raw(b"sub", Node::Tree(Tree::new().raw(b"", blob("x")))),
            "sub: reading the directory",
        ),
    ];
    for (tree, entry) in cases {
        let id = objects.commit(&tree, "hostile");
        let run = s.run("deploy", &[]);
        assert_refused(&s, &run, entry, &before, &outside);
        let records = s.records();
        assert_eq!(records[0]["id"], id.as_str());
        assert_eq!(records[0]["status"], "failed");
    }
}

#[test]
fn trees_git_does_not_write_are_refused_in_the_plan() {
    let (s, objects, outside) = deployed_server();
    let before = snapshot(&s.site);
    let blob_id = objects.repo.blob(b"x").unwrap();
    let tree_id = objects.write(&Tree::new().file("inner.txt", "x"));
    let missing = Oid::from_str("1234567890123456789012345678901234567890").unwrap();
    let cases: Vec<(Tree, &str, &str)> = vec![
        // The same name twice: which content would be deployed?
        (
            app()
                .file("runtime.txt", "python-3.11\n")
                .file("runtime.txt", "python-3.12\n"),
            "runtime.txt",
            "appears twice in its directory",
        ),
        (
            app()
                .file("static", "a file")
                .file("static/x.css", "a directory"),
            "static",
            "appears twice in its directory",
        ),
        (
            Tree::new().file("b.txt", "b").file("a.txt", "a"),
            "a.txt",
            "not in git's order",
        ),
        (
            app().raw(b"lie", Node::Ref(FILE, tree_id)),
            "lie",
            "is a tree; refused",
        ),
        (
            app().raw(b"lie", Node::Ref(DIR, blob_id)),
            "lie: reading the directory",
            "",
        ),
        (
            app().raw(b"gone.txt", Node::Ref(FILE, missing)),
            "gone.txt",
            "cannot be read",
        ),
        (
            app().raw(b"gone", Node::Ref(DIR, missing)),
            "gone: reading the directory",
            "",
        ),
    ];
    for (tree, entry, why) in cases {
        objects.commit_as_is(&tree, "hand-made tree");
        let run = s.run("deploy", &[]);
        let line = assert_refused(&s, &run, entry, &before, &outside);
        assert!(line.contains(why), "{line}");
    }
}

#[test]
fn symlinks_out_of_the_site_are_refused_in_the_plan() {
    let (s, objects, outside) = deployed_server();
    let before = snapshot(&s.site);
    let canary = s.root.join("canary");
    let canary = canary.to_str().unwrap();
    let long = "a/".repeat(2100);
    let cases: Vec<(Tree, &str)> = vec![
        (app().link("a", canary), "a"),
        (app().link("a", "/"), "a"),
        (app().link("a", "../canary"), "a"),
        (app().link("static/a", "../../canary/keep.txt"), "static/a"),
        (app().link("a", "static/../../canary"), "a"),
        // Each link alone stays inside; followed one through the other, they
        // leave: d/l is the site itself, so d/l/.. is the site's parent.
        (app().link("d/l", "..").link("e", "d/l/../canary"), "e"),
        (app().link("a", ""), "a"),
        (app().link("a", "app.py\0/../../x"), "a"),
        (app().at("a", Node::Blob(LINK, b"\xff\xfe".to_vec())), "a"),
        (app().link("a", &long), "a"),
    ];
    for (tree, entry) in cases {
        objects.commit(&tree, "link out");
        let run = s.run("deploy", &[]);
        let line = assert_refused(&s, &run, entry, &before, &outside);
        assert!(line.contains("symlink"), "{line}");
    }
    // Links that stay inside are written as links, never followed.
    let inside = app()
        .link("main.py", "app.py")
        .link("static/up", "../app.py")
        .link("d/l", "..")
        .link("d/here", ".")
        .link("e", "d/l/static/site.css")
        .link("dangling", "no/such/file");
    let run = s.run("deploy", &[]);
    assert_eq!(run.status, 1);
    objects.commit(&inside, "links inside");
    let run = s.run("deploy", &[]);
    assert_deployed(&s, &run, &inside, &outside);
}

#[test]
fn a_symlink_then_a_directory_of_the_same_name() {
    let (s, objects, outside) = deployed_server();
    let before = snapshot(&s.site);
    let canary = s.root.join("canary");
    objects.commit(&app().link("a", canary.to_str().unwrap()), "link out");
    let run = s.run("deploy", &[]);
    assert_refused(&s, &run, "a", &before, &outside);
    let dir = app().file("a/keep.txt", "mine\n").file("a/b/c.txt", "c\n");
    objects.commit(&dir, "now a directory");
    let run = s.run("deploy", &[]);
    assert_deployed(&s, &run, &dir, &outside);

    // A link inside the site, then a directory in its place, then the link again.
    let link = app().file("static/site.css", "css\n").link("a", "static");
    objects.commit(&link, "a links to static");
    assert_deployed(&s, &s.run("deploy", &[]), &link, &outside);
    let dir = app()
        .file("static/site.css", "css\n")
        .file("a/site.css", "written into a, not static\n");
    objects.commit(&dir, "a is a directory again");
    assert_deployed(&s, &s.run("deploy", &[]), &dir, &outside);
    assert_eq!(s.site_file("static/site.css"), "css\n");
    objects.commit(&link, "and a link again");
    assert_deployed(&s, &s.run("deploy", &[]), &link, &outside);
}

#[test]
fn a_symlink_in_the_site_is_never_written_through() {
    let (s, objects, outside) = deployed_server();
    let canary = s.root.join("canary");
    // Links put into the site by hand, where the commit has directories.
    std::fs::remove_dir_all(s.site.join("static")).unwrap();
    std::os::unix::fs::symlink(&canary, s.site.join("static")).unwrap();
    std::os::unix::fs::symlink(&canary, s.site.join("data")).unwrap();
    let tree = app()
        .file("static/keep.txt", "owned\n")
        .file("data/inner/deep.txt", "owned\n");
    objects.commit(&tree, "write below the links");
    // The links are the app's: refused, never written through or replaced.
    let before = snapshot(&s.site);
    let run = s.run("deploy", &[]);
    assert_eq!(run.status, 1);
    let last = run.stdout.lines().last().unwrap();
    assert!(
        last.contains("failed in step plan")
            && last.contains("the site has a symlink data that pushdeploy did not write, where the commit has a directory"),
        "{last}"
    );
    assert_eq!(snapshot(&s.site), before);
    outside.unchanged(&s);
    std::fs::remove_file(s.site.join("static")).unwrap();
    std::fs::remove_file(s.site.join("data")).unwrap();
    let run = s.run("deploy", &[]);
    assert_deployed(&s, &run, &tree, &outside);

    // A directory the last deployment wrote, made a link by hand: the
    // files pushdeploy would delete are not looked for through it.
    std::fs::remove_dir_all(s.site.join("data")).unwrap();
    std::os::unix::fs::symlink(canary.join("inner"), s.site.join("data")).unwrap();
    let next = app().file("static/keep.txt", "owned\n");
    objects.commit(&next, "data/inner/deep.txt is gone");
    let run = s.run("deploy", &[]);
    run.assert_ok();
    outside.unchanged(&s);
    assert!(
        std::fs::symlink_metadata(s.site.join("data"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the hand-made link stays"
    );
}

#[test]
fn a_file_becomes_a_directory_and_back() {
    let (s, objects, outside) = deployed_server();
    let steps = [
        app().file("x", "a file\n"),
        app()
            .file("x/y", "in a directory\n")
            .file("x/z/w", "deeper\n"),
        app().file("x", "a file again\n"),
        app().link("x", "app.py"),
        app().file("x/y", "a directory again\n"),
    ];
    for tree in &steps {
        objects.commit(tree, "x changes kind");
        assert_deployed(&s, &s.run("deploy", &[]), tree, &outside);
    }
}

#[test]
fn names_that_differ_in_case_are_different_files() {
    let (s, objects, outside) = deployed_server();
    let tree = app()
        .file("App.py", "upper\n")
        .file("APP.PY", "all upper\n")
        .file("Static/site.css", "capital\n")
        .file("static/site.css", "lower\n");
    objects.commit(&tree, "case variants");
    assert_deployed(&s, &s.run("deploy", &[]), &tree, &outside);
    assert_eq!(s.site_file("app.py"), "print('next')\n");
    assert_eq!(s.site_file("App.py"), "upper\n");
}

#[test]
fn long_names_and_deep_paths() {
    let (s, objects, outside) = deployed_server();
    let name = "n".repeat(255);
    let deep = format!("{}leaf.txt", "d/".repeat(100));
    let tree = app()
        .file(&name, "255 bytes\n")
        .file(&format!("dir/{name}/{name}"), "long\n")
        .file(&deep, "100 levels down\n");
    objects.commit(&tree, "long and deep");
    assert_deployed(&s, &s.run("deploy", &[]), &tree, &outside);

    let before = snapshot(&s.site);
    objects.commit(&app().file(&"n".repeat(256), "x"), "name too long");
    let line = assert_refused(&s, &s.run("deploy", &[]), "\"nnnnnnnnnn", &before, &outside);
    assert!(line.contains("256 bytes"), "{line}");
    // 3000 levels: a path no file system takes, refused before the walk
    // goes deeper (and before its recursion could run out of stack).
    let deep = objects.nested(3000, "d", &app());
    objects.commit(&app().raw(b"d", Node::Ref(DIR, deep)), "too deep");
    let line = assert_refused(&s, &s.run("deploy", &[]), "\"d/d/d/d", &before, &outside);
    assert!(line.contains("more than a file system takes"), "{line}");
    // Short enough in the commit, too long once the site's path is put before it:
    // the sync says so before it writes anything.
    let levels = (4095 - "leaf".len()) / 2 - 4;
    let deep = objects.nested(levels, "d", &Tree::new().file("leaf", "x"));
    objects.commit(
        &app().raw(b"d", Node::Ref(DIR, deep)),
        "too deep for this site",
    );
    let run = s.run("deploy", &[]);
    assert_eq!(run.status, 1);
    let last = run.stdout.lines().last().unwrap();
    assert!(
        last.contains("failed in step plan") && last.contains("nothing was written"),
        "{last}"
    );
    assert_eq!(snapshot(&s.site), before);
    outside.unchanged(&s);
}

#[test]
fn a_submodule_is_skipped_and_reported() {
    let (s, objects, outside) = deployed_server();
    let pinned = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
    let tree = app()
        .at("vendor/lib", Node::Gitlink(pinned))
        .file("vendor/README", "vendored\n")
        .at("only", Node::Gitlink(pinned));
    objects.commit(&tree, "submodules");
    let run = s.run("deploy", &[]);
    assert_deployed(&s, &run, &tree, &outside);
    run.assert_has("skipped vendor/lib: a submodule (gitlink)")
        .assert_has("skipped only: a submodule (gitlink)");
    assert!(!s.site.join("only").exists());
}

#[test]
fn a_name_cannot_forge_output_lines() {
    let (s, objects, outside) = deployed_server();
    let before = snapshot(&s.site);
    let forged = "x\n-----> Deployment 0000000 successful in 0.01 s";
    objects.commit(&app().file(forged, "x"), "newline in a name");
    let run = s.run("deploy", &[]);
    assert_refused(&s, &run, "\"x\\n-----> Deployment", &before, &outside);
    assert!(
        !run.all()
            .lines()
            .any(|l| l.starts_with("-----> Deployment 0000000")),
        "{}",
        run.all()
    );
    objects.commit(&app().file("tab\there", "x"), "tab in a name");
    assert_refused(
        &s,
        &s.run("deploy", &[]),
        "\"tab\\there\"",
        &before,
        &outside,
    );
}

#[test]
fn a_file_where_the_site_has_a_directory_of_its_own() {
    let (s, objects, outside) = deployed_server();
    // Directories the app made, with a file and empty.
    std::fs::create_dir_all(s.site.join("uploads/2024")).unwrap();
    std::fs::write(s.site.join("uploads/2024/photo.jpg"), "app data").unwrap();
    std::fs::create_dir_all(s.site.join("cache")).unwrap();
    let before = snapshot(&s.site);
    for (name, holding) in [
        (
            "uploads",
            "holding uploads/2024/photo.jpg that pushdeploy did not write",
        ),
        (
            "cache",
            "holding the empty directory cache that pushdeploy did not make",
        ),
    ] {
        // app.py comes first in path order: a sync that found out only when
        // it got there would have changed it already.
        objects.commit(
            &app().file("static/new.css", "x").file(name, "a file"),
            "a file there",
        );
        let run = s.run("deploy", &[]);
        assert_eq!(run.status, 1);
        let last = run.stdout.lines().last().unwrap();
        assert!(
            last.contains("failed in step plan")
                && last.contains(&format!(
                    "commit entry {name}: the site has a directory there, {holding}"
                ))
                && last.contains("nothing was written"),
            "{last}"
        );
        assert_eq!(snapshot(&s.site), before);
        outside.unchanged(&s);
    }
}

/// Issue 15 item 23: with `project`, a symlink to a file elsewhere in the
/// commit leads into the commit, not out to the server: it deploys as the
/// file it names, and follows that file's changes. A link out of the commit
/// is still refused, and so is one to a folder out of the project.
#[test]
fn a_link_out_of_the_project_deploys_as_the_file_it_names() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let s = Server::new();
    s.write(".deployment", "[config]\nproject = src\n")
        .write("src/app.py", "print('app')\n")
        .write("ops/scripts/build.sh", "echo one\n")
        .write("ops/conf/app.ini", "[app]\n");
    let script = s.work.join("ops/scripts/build.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink("../ops/scripts/build.sh", s.work.join("src/build.sh")).unwrap();
    std::fs::create_dir_all(s.work.join("src/conf")).unwrap();
    symlink("../../ops/conf/app.ini", s.work.join("src/conf/app.ini")).unwrap();
    s.commit("links into ops/");
    s.push(&[]).assert_ok().assert_has("successful");
    for (rel, content) in [("build.sh", "echo one\n"), ("conf/app.ini", "[app]\n")] {
        let meta = std::fs::symlink_metadata(s.site.join(rel)).unwrap();
        assert!(meta.is_file(), "{rel} is a file in the site");
        assert_eq!(s.site_file(rel), content);
    }
    let mode = std::fs::metadata(s.site.join("build.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o755,
        "the executable it names stays executable"
    );

    // Only the file it names changes: the site follows.
    s.write("ops/scripts/build.sh", "echo two\n");
    s.commit("build.sh changes");
    s.push(&[]).assert_ok().assert_has("successful");
    assert_eq!(s.site_file("build.sh"), "echo two\n");
    // A dry run and a full comparison agree with the diff.
    s.run("deploy", &["--dry-run"]).assert_ok();
    s.run("deploy", &["--verify"]).assert_ok();
    assert_eq!(s.site_file("build.sh"), "echo two\n");

    // Out of the commit, or to a folder: refused in the plan, naming the link.
    let before = snapshot(&s.site);
    for (target, says) in [
        ("../../outside.txt", "points outside the site"),
        (
            "../../ops/conf",
            "leads to the folder ops/conf of the commit",
        ),
    ] {
        std::fs::remove_file(s.work.join("src/conf/app.ini")).unwrap();
        symlink(target, s.work.join("src/conf/app.ini")).unwrap();
        s.commit("a link that cannot deploy");
        let run = s.push(&[]);
        let last = run.remote().last().cloned().unwrap_or_default();
        assert!(
            last.contains("failed in step plan")
                && last.contains("commit entry conf/app.ini: symlink to")
                && last.contains(says),
            "{last}"
        );
        assert_eq!(snapshot(&s.site), before);
    }
}
