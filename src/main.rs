use std::process::ExitCode;

fn main() -> ExitCode {
    match pushdeploy::cli::run() {
        Ok(code) => code,
        // Output piped into a program that stopped reading: nothing to say.
        Err(err) if pushdeploy::error::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // A failed deployment has already said why, as its last line.
            if !err.is::<pushdeploy::Failure>() {
                // `{:#}` prints the whole context chain on one line.
                let text = format!("{err:#}");
                eprintln!("pushdeploy: error: {}", pushdeploy::error::printable(&text));
            }
            ExitCode::from(pushdeploy::error::exit_status(&err))
        }
    }
}
