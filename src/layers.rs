//! The order of `lib.rs`'s map, checked on the source: modules that once
//! imported each other are given one direction here, as data, and a scan of
//! every `crate::<module>` in `src/*.rs` fails when one of them points up.

use std::collections::BTreeSet;
use std::path::Path;

/// From the top down: a module may use the modules of the layers after its
/// own, never one of its own layer or of a layer before it. Only these
/// modules are checked; the rest of the map is not (yet).
const LAYERS: &[&[&str]] = &[
    &["plan"],
    &["command"],
    &["sync", "tools"],
    &["runtime"],
    &["process"],
    &["report", "settings"],
    &["journal", "record"],
];

/// Imports that still point up, `(user, used)`: to be fixed, then removed
/// from here (the test fails when one of them is gone, so that the list
/// stays true).
const KNOWN: &[(&str, &str)] = &[("journal", "sync"), ("record", "report")];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The modules a source file names as `crate::<module>` (also in
/// `crate::{a, b}`), outside `//` comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let names = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or(""),
                None => rest,
            };
            for name in names.split(',') {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// Every `(user, used)` pair of the table that points up or sideways.
fn upward(sources: &[(String, String)]) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (module, text) in sources {
        let Some(own) = layer(module) else { continue };
        for used in uses(text) {
            if used != *module && layer(&used).is_some_and(|l| l <= own) {
                found.insert((module.clone(), used));
            }
        }
    }
    found
}

fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(module) = name.strip_suffix(".rs") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            sources.push((module.to_string(), text));
        }
    }
    sources
}

#[test]
fn modules_import_down_the_map_only() {
    let found = upward(&sources());
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<String> = found
        .difference(&known)
        .map(|(a, b)| format!("src/{a}.rs uses crate::{b}, which is not below it in the map"))
        .collect();
    assert!(new.is_empty(), "{}", new.join("\n"));
    let fixed: Vec<String> = known
        .difference(&found)
        .map(|(a, b)| format!("{a} no longer uses {b}: remove it from KNOWN"))
        .collect();
    assert!(fixed.is_empty(), "{}", fixed.join("\n"));
}

/// The scan sees both spellings, and not comments.
#[test]
fn the_scan_finds_each_spelling() {
    let text = "use crate::plan::Plan;\nuse crate::{process, report::Report};\n// crate::tools\nlet x = crate::settings::KEY;";
    assert_eq!(
        uses(text).into_iter().collect::<Vec<_>>(),
        ["plan", "process", "report", "settings"]
    );
    let sources = [("settings".to_string(), text.to_string())];
    let found: Vec<_> = upward(&sources).into_iter().collect();
    assert_eq!(
        found,
        [
            ("settings".to_string(), "plan".to_string()),
            ("settings".to_string(), "process".to_string()),
            ("settings".to_string(), "report".to_string()),
        ]
    );
}

/// Every module of the table is a file of the crate (a renamed one would
/// silently leave the check).
#[test]
fn the_table_names_real_modules() {
    let modules: BTreeSet<String> = sources().into_iter().map(|(m, _)| m).collect();
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(modules.contains(*module), "src/{module}.rs is gone");
    }
}

/// The table is the map's order: a module of a later layer is in the same
/// group of `lib.rs` or a later one.
#[test]
fn the_table_follows_the_map() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    // The groups of `mod` lines, separated by blank lines.
    let group = |module: &str| {
        lib.split("\n\n").position(|g| {
            g.lines().any(|l| {
                let l = l.trim_start_matches("pub ");
                l.starts_with(&format!("mod {module};"))
            })
        })
    };
    let mut last = 0;
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        let at = group(module).unwrap_or_else(|| panic!("lib.rs has no mod {module}"));
        assert!(
            at >= last,
            "lib.rs lists {module} above a module of an earlier layer"
        );
        last = at;
    }
}
