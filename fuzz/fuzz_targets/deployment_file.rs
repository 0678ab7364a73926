//! `.deployment`: any bytes give its `[config]` entries or one line naming
//! the file; entries printed back read the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushdeploy::deployment_file::parse;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(file) => {
            let again = parse(file.render().as_bytes()).expect("what parses prints back in the format");
            let pairs = |f: &pushdeploy::deployment_file::DeploymentFile| {
                f.entries.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect::<Vec<_>>()
            };
            assert_eq!(pairs(&again), pairs(&file));
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(".deployment"), "{message:?}");
            assert!(!message.contains(['\n', '\r']), "one line: {message:?}");
            assert!(message.chars().count() < 1000, "short: {message:?}");
        }
    }
});
