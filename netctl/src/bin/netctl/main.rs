//! `netctl`: `ip`'s grammar over the netctl library. `netctl --help`
//! prints the grammar. Exit status: 0 done, 1 failed, 2 the command line
//! was not understood.

mod help;
mod parse;
mod run;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let invocation = match parse::parse(&args) {
        Ok(invocation) => invocation,
        Err(parse::Usage(message)) => {
            eprintln!("netctl: {message}");
            return ExitCode::from(2);
        }
    };
    match run::run(invocation) {
        Ok(outcome) => {
            // A closed pipe (`netctl link | head`) is not an error worth a panic.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(outcome.stdout.as_bytes());
            let _ = stdout.flush();
            outcome.code
        }
        Err(err) => {
            eprintln!("netctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}
