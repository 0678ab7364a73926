//! Issue 6: properties of the parsers that read what others write
//! (runtime.txt, `.python-version`, the hook's stdin, push options): any
//! input gives a value or one line that names the file, never a panic; and
//! what parses, printed back, parses to the same value.

use proptest::prelude::*;
use proptest::test_runner::Config;

use pushdeploy::receive::{self, RefUpdate};
use pushdeploy::runtime::{Request, parse_python_version, parse_runtime_txt};
use pushdeploy::settings::Environment;

/// Bounded, so that the whole file runs in a few seconds; no regression
/// files are written into the source tree.
fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

/// An error message is one line, starts with what was read, and stays short
/// whatever the input's size (a value is shown cut to 60 characters, each
/// escaped to at most 10: `\u{10ffff}`).
#[track_caller]
fn one_line(message: &str, start: &str) {
    assert!(message.starts_with(start), "{message:?}");
    assert!(!message.contains(['\n', '\r']), "one line: {message:?}");
    assert!(message.chars().count() < 1000, "short: {message:?}");
}

/// Bytes that look like a version file more often than random ones do.
fn versionish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "[pPyYtThHoOnN\\-0-9. \t\r\n#\u{feff}]{0,24}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 250..270),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (0u32..10000, 0u32..10000, proptest::option::of(0u32..10000)).prop_map(
        |(major, minor, patch)| Request {
            major,
            minor,
            patch,
        },
    )
}

/// Whitespace, line ends and a byte order mark that the files may carry.
fn padding() -> impl Strategy<Value = (bool, String, String)> {
    let space = proptest::sample::select(vec!["", " ", "\t", "  ", "\n", "\r\n", " \r\n\r\n"]);
    (any::<bool>(), space.clone(), space).prop_map(|(bom, a, b)| (bom, a.into(), b.into()))
}

fn padded((bom, before, after): &(bool, String, String), value: &str) -> Vec<u8> {
    let bom = if *bom { "\u{feff}" } else { "" };
    format!("{bom}{before}{value}{after}").into_bytes()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn runtime_txt_never_panics_and_errors_are_one_line(bytes in versionish()) {
        match parse_runtime_txt(&bytes) {
            Ok(request) => {
                prop_assert_eq!(parse_runtime_txt(request.to_string().as_bytes()).unwrap(), request);
            }
            Err(e) => one_line(&e.to_string(), "runtime.txt: "),
        }
    }

    #[test]
    fn runtime_txt_reads_what_request_prints(
        request in request(),
        pad in padding(),
        upper in proptest::sample::select(vec!["python-", "Python-", "PYTHON-"]),
    ) {
        let text = request.to_string().replacen("python-", upper, 1);
        prop_assert_eq!(parse_runtime_txt(&padded(&pad, &text)).unwrap(), request);
    }

    #[test]
    fn python_version_never_panics_and_errors_are_one_line(bytes in versionish()) {
        match parse_python_version(&bytes) {
            Ok(request) => {
                let printed = request.to_string();
                let version = printed.strip_prefix("python-").unwrap();
                prop_assert_eq!(parse_python_version(version.as_bytes()).unwrap(), request);
            }
            Err(e) => one_line(&e.to_string(), ".python-version: "),
        }
    }

    #[test]
    fn python_version_reads_its_first_version_line(
        request in request(),
        pad in padding(),
        comments in proptest::collection::vec("# [a-z 0-9.]{0,12}\n|\n|  \n", 0..4),
        later in "[0-9a-z. ]{0,8}",
    ) {
        let printed = request.to_string();
        let version = printed.strip_prefix("python-").unwrap();
        let text = format!("{}{version}\n{later}\n", comments.concat());
        prop_assert_eq!(parse_python_version(&padded(&pad, &text)).unwrap(), request);
    }
}

fn object_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{40}",
        "[0-9A-F]{40}",
        "[0-9a-f]{64}",
        Just("0".repeat(40))
    ]
}

fn ref_name() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(vec!["refs/heads/", "refs/tags/", "refs/notes/"]),
        proptest::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9_-]{0,12}", 1..4),
    )
        .prop_map(|(kind, parts)| format!("{kind}{}", parts.join("/")))
}

fn ref_update() -> impl Strategy<Value = RefUpdate> {
    (object_id(), object_id(), ref_name()).prop_map(|(old, new, name)| RefUpdate { old, new, name })
}

fn printed(update: &RefUpdate) -> String {
    format!("{} {} {}", update.old, update.new, update.name)
}

/// The hook's stdin with anything in it.
fn hook_input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-f rfsheadtg/\n\0]{0,200}",
        proptest::collection::vec(ref_update(), 0..3)
            .prop_map(|u| { u.iter().map(printed).collect::<Vec<_>>().join("\n") + " x" }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hook_input_never_panics_and_errors_are_one_line(input in hook_input()) {
        match receive::parse(&input) {
            Ok(updates) => {
                let again = updates.iter().map(printed).collect::<Vec<_>>().join("\n");
                prop_assert_eq!(receive::parse(&again).unwrap(), updates);
            }
            Err(e) => one_line(&e.to_string(), "post-receive input line "),
        }
    }

    #[test]
    fn hook_input_reads_what_git_writes(
        updates in proptest::collection::vec(ref_update(), 0..6),
        final_newline in any::<bool>(),
        blank_lines in any::<bool>(),
    ) {
        let sep = if blank_lines { "\n\n" } else { "\n" };
        let mut input = updates.iter().map(printed).collect::<Vec<_>>().join(sep);
        if final_newline {
            input.push('\n');
        }
        prop_assert_eq!(receive::parse(&input).unwrap(), updates);
    }

    #[test]
    fn a_bad_hook_line_is_named_by_its_number(
        updates in proptest::collection::vec(ref_update(), 1..6),
        at in any::<prop::sample::Index>(),
        bad in "[^\n]{1,40}",
    ) {
        prop_assume!(receive::parse(&bad).is_err());
        let mut lines: Vec<String> = updates.iter().map(printed).collect();
        let n = at.index(lines.len() + 1);
        lines.insert(n, bad);
        let err = receive::parse(&lines.join("\n")).unwrap_err().to_string();
        one_line(&err, &format!("post-receive input line {}: ", n + 1));
    }
}

/// Names a push option environment may hold, the interesting ones often.
fn variable() -> impl Strategy<Value = String> {
    prop_oneof![
        (0usize..12).prop_map(|i| format!("GIT_PUSH_OPTION_{i}")),
        Just("GIT_PUSH_OPTION_COUNT".to_string()),
        "GIT_PUSH_OPTION_[0-9a-z_-]{0,4}",
        "[A-Z_]{1,12}",
    ]
}

/// A count as git might set it, or not: small numbers, huge ones, signs,
/// spaces, words.
fn count() -> impl Strategy<Value = String> {
    prop_oneof![
        (0usize..20).prop_map(|n| n.to_string()),
        any::<usize>().prop_map(|n| n.to_string()),
        "[-+ 0-9]{0,4}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn push_options_come_back_as_given(options in proptest::collection::vec(any::<String>(), 0..10)) {
        let names: Vec<String> = (0..options.len()).map(|i| format!("GIT_PUSH_OPTION_{i}")).collect();
        let count = options.len().to_string();
        let mut pairs = vec![("GIT_PUSH_OPTION_COUNT", count.as_str())];
        pairs.extend(names.iter().map(String::as_str).zip(options.iter().map(String::as_str)));
        prop_assert_eq!(Environment::from_pairs(pairs).push_options(), options);
    }

    #[test]
    fn push_options_never_panic_and_come_from_their_variables(
        vars in proptest::collection::vec((variable(), any::<String>()), 0..16),
        count in count(),
    ) {
        let mut pairs: Vec<(&str, &str)> =
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        pairs.push(("GIT_PUSH_OPTION_COUNT", &count));
        let env = Environment::from_pairs(pairs.iter().copied());
        let options = env.push_options();
        // GIT_PUSH_OPTION_0, 1, ... up to the count or the first one missing.
        let n = count.parse::<usize>().unwrap_or(0);
        let set: std::collections::BTreeMap<&str, &str> = pairs.iter().copied().collect();
        let expected: Vec<String> = (0..n)
            .map_while(|i| set.get(format!("GIT_PUSH_OPTION_{i}").as_str()).map(|v| v.to_string()))
            .collect();
        prop_assert_eq!(options, expected);
    }
}

/// Found while writing the properties above: `push_options` counted up to
/// `GIT_PUSH_OPTION_COUNT` whatever it said, so a huge count looped for ever.
#[test]
fn a_huge_push_option_count_returns_at_once() {
    let (send, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let env = Environment::from_pairs([
            ("GIT_PUSH_OPTION_COUNT", "18446744073709551615"),
            ("GIT_PUSH_OPTION_0", "recreate-env"),
        ]);
        let _ = send.send(env.push_options());
    });
    let options = done
        .recv_timeout(std::time::Duration::from_secs(2))
        .expect("push_options returns within 2 s");
    assert_eq!(options, ["recreate-env"]);
}

/// Text that looks like a `.deployment` file more often than random bytes do.
fn deploymentish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "(\\[config\\]|\\[other\\]|[a-zA-Z_]{1,8} ?= ?[ -~]{0,12}|#[ -~]{0,8}|;x|= x|[ -~]{0,12}|\u{feff})(\r?\n(\\[config\\]|[a-zA-Z_]{1,8} ?= ?[ -~]{0,12}|[ -~]{0,12})){0,6}"
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn deployment_files_parse_or_name_file_and_line(bytes in deploymentish()) {
        use pushdeploy::deployment_file::parse;
        match parse(&bytes) {
            Ok(file) => {
                let again = parse(file.render().as_bytes()).expect("what parses prints back in the format");
                let pairs = |f: &pushdeploy::deployment_file::DeploymentFile| {
                    f.entries.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect::<Vec<_>>()
                };
                prop_assert_eq!(pairs(&again), pairs(&file));
            }
            Err(e) => one_line(&e.to_string(), ".deployment"),
        }
    }
}
