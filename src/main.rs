use std::process::ExitCode;

fn main() -> ExitCode {
    match pushdeploy::cli::run() {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("pushdeploy: error: {err:#}");
            ExitCode::from(pushdeploy::error::exit_status(&err))
        }
    }
}
