//! The post-receive hook's stdin: any text gives ref updates or one line
//! naming the input line; updates printed back as `old new ref` lines read
//! the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushdeploy::receive;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match receive::parse(input) {
        Ok(updates) => {
            let printed: Vec<String> = updates
                .iter()
                .map(|u| format!("{} {} {}", u.old, u.new, u.name))
                .collect();
            let again = receive::parse(&printed.join("\n")).expect("printed updates parse");
            assert_eq!(again, updates);
            for update in &updates {
                // Whatever is deployed or ignored, deciding never panics.
                let _ = receive::decide(update, "main");
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with("post-receive input line "),
                "{message:?}"
            );
            assert!(!message.contains(['\n', '\r']), "one line: {message:?}");
            assert!(message.chars().count() < 1000, "short: {message:?}");
        }
    }
});
