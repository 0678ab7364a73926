//! `.python-version`: any bytes give a version or one line naming the file;
//! a version printed back (`X.Y[.Z]`) reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushdeploy::runtime::parse_python_version;

fuzz_target!(|data: &[u8]| {
    match parse_python_version(data) {
        Ok(request) => {
            let printed = request.to_string();
            let version = printed.strip_prefix("python-").expect("python-X.Y");
            let again = parse_python_version(version.as_bytes());
            assert_eq!(again.ok(), Some(request), "{version} reads back the same");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(".python-version: "), "{message:?}");
            assert!(!message.contains(['\n', '\r']), "one line: {message:?}");
            assert!(message.chars().count() < 1000, "short: {message:?}");
        }
    }
});
