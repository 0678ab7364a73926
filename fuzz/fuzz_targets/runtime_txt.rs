//! runtime.txt: any bytes give a runtime or one line naming the file; a
//! runtime printed back reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushdeploy::runtime::parse_runtime_txt;

fuzz_target!(|data: &[u8]| {
    match parse_runtime_txt(data) {
        Ok(request) => {
            let again = parse_runtime_txt(request.to_string().as_bytes());
            assert_eq!(again.ok(), Some(request), "{request} reads back the same");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("runtime.txt: "), "{message:?}");
            assert!(!message.contains(['\n', '\r']), "one line: {message:?}");
            assert!(message.chars().count() < 1000, "short: {message:?}");
        }
    }
});
