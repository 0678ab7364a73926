//! Issue 16 (README): the README is the user's short path and the reference
//! lives under docs/. These tests keep the two honest: every link resolves
//! (file and heading), every page is reachable from the README, every setting
//! of `src/settings.rs` has its row in docs/settings.md (and no row names a
//! setting that does not exist), and every `pushdeploy <command>` the text
//! names is a command of the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pushdeploy::settings::KEYS;

use crate::util::{BIN, TestCommand};

/// Commands the docs describe while they are built on other branches: drop
/// a name here once `pushdeploy --help` lists it (none now).
const COMMANDS_BEING_BUILT: &[&str] = &[];

/// The README stays the short path: the reference goes under docs/.
const README_MAX_LINES: usize = 300;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/, by their path from the root.
fn pages() -> BTreeMap<PathBuf, String> {
    let mut pages = BTreeMap::new();
    pages.insert(
        PathBuf::from("README.md"),
        std::fs::read_to_string(root().join("README.md")).unwrap(),
    );
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let rel = path.strip_prefix(root()).unwrap().to_path_buf();
            pages.insert(rel, std::fs::read_to_string(&path).unwrap());
        }
    }
    pages
}

/// A page split into its prose and its code blocks (indented by four spaces
/// after a blank line, or fenced); a list item's continuation lines are prose.
fn prose_and_code(text: &str) -> (String, Vec<String>) {
    let (mut prose, mut code) = (String::new(), Vec::new());
    let (mut fenced, mut in_block, mut after_blank) = (false, false, true);
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let blank = line.trim().is_empty();
        in_block = fenced
            || (line.starts_with("    ") && (after_blank || in_block))
            || (in_block && blank);
        if in_block && !blank {
            code.push(line.to_string());
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
        after_blank = blank;
    }
    (prose, code)
}

/// Prose outside inline code spans (which may run over a line end), and the spans.
fn outside_and_spans(prose: &str) -> (String, Vec<String>) {
    let (mut outside, mut spans) = (String::new(), Vec::new());
    for (i, part) in prose.split('`').enumerate() {
        if i % 2 == 0 {
            outside.push_str(part);
        } else {
            spans.push(part.to_string());
        }
    }
    (outside, spans)
}

/// The targets of the Markdown links `[text](target)` of a page.
fn links(text: &str) -> Vec<String> {
    let (outside, _) = outside_and_spans(&prose_and_code(text).0);
    let mut found = Vec::new();
    let mut rest = outside.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        found.push(after[..end].to_string());
        rest = &after[end..];
    }
    found
}

/// GitHub's anchors for a page's headings: lower case, punctuation dropped,
/// spaces as `-`, a repeated heading numbered.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if fenced || hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = line[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

#[test]
fn every_link_of_the_readme_and_docs_resolves_to_a_file_and_heading() {
    let pages = pages();
    let mut bad = Vec::new();
    for (page, text) in &pages {
        for target in links(text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let dir = page.parent().unwrap_or(Path::new(""));
            let linked = if file.is_empty() {
                page.clone()
            } else {
                normalize(&dir.join(file))
            };
            if !root().join(&linked).exists() {
                bad.push(format!(
                    "{}: {target}: no file {}",
                    page.display(),
                    linked.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                let Some(linked_text) = pages.get(&linked) else {
                    bad.push(format!(
                        "{}: {target}: an anchor into a page that is not README or docs/",
                        page.display()
                    ));
                    continue;
                };
                if !anchors(linked_text).contains(anchor) {
                    bad.push(format!(
                        "{}: {target}: {} has no heading #{anchor} (it has: {:?})",
                        page.display(),
                        linked.display(),
                        anchors(linked_text)
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

/// `docs/../README.md` as `README.md`; links never climb above the root.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                assert!(out.pop(), "{} climbs above the repository", path.display());
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_readme_is_the_short_path_and_links_every_docs_page() {
    let pages = pages();
    let readme = &pages[Path::new("README.md")];
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; at most {README_MAX_LINES}: put the reference under docs/"
    );
    let linked: BTreeSet<String> = links(readme)
        .into_iter()
        .map(|t| t.split('#').next().unwrap().to_string())
        .collect();
    let unlinked: Vec<String> = pages
        .keys()
        .filter(|p| p.starts_with("docs"))
        .map(|p| p.display().to_string())
        .filter(|p| !linked.contains(p))
        .collect();
    assert!(
        unlinked.is_empty(),
        "docs pages the README does not link: {unlinked:?}"
    );
    // .ci/run and tests/demo.rs rely on these two commands as they are.
    for command in [
        "    bash scripts/demo     # build, then a real push",
        "    cargo test            # unit and integration tests",
    ] {
        assert!(readme.contains(command), "README lost {command:?}");
    }
}

#[test]
fn docs_settings_has_a_true_row_for_every_setting_and_none_other() {
    let text = std::fs::read_to_string(root().join("docs/settings.md")).unwrap();
    // The table's rows: `| `key` ...`, the key being the first code span.
    let rows: BTreeMap<String, String> = text
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let key = l[3..].split('`').next().unwrap().to_string();
            (key, l.to_string())
        })
        .collect();
    let mut bad = Vec::new();
    for key in KEYS {
        let Some(row) = rows.get(key.name) else {
            bad.push(format!("{}: no row", key.name));
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        if cells.get(1) != Some(&format!("`{}`", key.env).as_str()) {
            bad.push(format!(
                "{}: the environment column is not `{}`: {row}",
                key.name, key.env
            ));
        }
        if !key.file.eq_ignore_ascii_case(key.name)
            && !cells[0].contains(&format!("(`.deployment`: `{}`)", key.file))
        {
            bad.push(format!(
                "{}: the row does not give its .deployment name {}: {row}",
                key.name, key.file
            ));
        }
    }
    for name in rows.keys() {
        if !KEYS.iter().any(|k| k.name == name) {
            bad.push(format!(
                "{name}: a row for a setting src/settings.rs does not have"
            ));
        }
    }
    assert!(bad.is_empty(), "docs/settings.md:\n{}", bad.join("\n"));
}

#[test]
fn every_command_the_docs_name_is_a_command_of_pushdeploy() {
    let help = TestCommand::new(BIN, &root()).args(["--help"]).run();
    help.assert_ok();
    let mut commands: BTreeSet<String> = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(commands.contains("deploy"), "{}", help.stdout);
    commands.extend(COMMANDS_BEING_BUILT.iter().map(|c| c.to_string()));
    let mut bad = Vec::new();
    for (page, text) in pages() {
        // `pushdeploy <word>` in code: inline spans and code blocks.
        let (prose, mut code) = prose_and_code(&text);
        code.extend(outside_and_spans(&prose).1);
        for snippet in code {
            let words: Vec<&str> = snippet.split_whitespace().collect();
            for pair in words.windows(2) {
                let word = pair[1];
                if pair[0] == "pushdeploy"
                    && word.starts_with(|c: char| c.is_ascii_lowercase())
                    && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    && !commands.contains(word)
                {
                    bad.push(format!("{}: pushdeploy {word}", page.display()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "commands that pushdeploy does not have:\n{}",
        bad.join("\n")
    );
}
