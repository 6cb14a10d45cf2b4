//! The `lifeboat` binary: parse arguments, resolve settings, set up logging and the runtime, run,
//! map the result to an exit code. Everything else lives in the library.
use std::process::ExitCode;

use clap::Parser;
use lifeboat::error::{Exit, display_chain};

fn main() -> ExitCode {
    let cli = match lifeboat::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Success.into()
            };
        }
    };
    let settings = match lifeboat::config::Settings::resolve(&cli.global) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("error: {}", display_chain(&err));
            return err.exit_code().into();
        }
    };
    lifeboat::logging::init(&cli.global, settings.log_format.value);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return Exit::Failure.into();
        }
    };
    let result = runtime.block_on(lifeboat::run(cli, settings));
    // Work abandoned by a cancelled operation (Ctrl-C) may leave a blocking thread behind; it
    // must not keep the process alive once the outcome is known.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code.into(),
        // Output piped into a command that stopped reading (`| head`): not an error.
        Err(lifeboat::error::Error::Output { source })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Exit::Success.into()
        }
        Err(err) => {
            eprintln!("error: {}", display_chain(&err));
            err.exit_code().into()
        }
    }
}
