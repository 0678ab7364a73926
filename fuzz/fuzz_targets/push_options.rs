//! Push options from the environment git gives the hook: the input is
//! `NAME=VALUE` lines; whatever they hold (a huge count included), the
//! options are the values of `GIT_PUSH_OPTION_0`, `_1`, ... up to
//! `GIT_PUSH_OPTION_COUNT` or the first one missing.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pushdeploy::settings::Environment;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pairs: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let count = pairs
        .get("GIT_PUSH_OPTION_COUNT")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0);
    let options = Environment::from_pairs(pairs.iter().map(|(k, v)| (*k, *v))).push_options();
    let expected: Vec<String> = (0..count)
        .map_while(|i| {
            pairs
                .get(format!("GIT_PUSH_OPTION_{i}").as_str())
                .map(|v| v.to_string())
        })
        .collect();
    assert_eq!(options, expected);
});
