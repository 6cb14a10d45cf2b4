//! Logging to stderr with `tracing`. Verbosity comes from -v/-q (`RUST_LOG` overrides it for
//! debugging); the line format from --log-format.
use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

pub fn init(global: &GlobalArgs, format: LogFormat) {
    let level = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    // Our own crate at the chosen level. Dependencies stay silent below -vv: we report their
    // failures ourselves, as one line, and their own error logs would repeat it.
    let default = match global.verbose {
        0 | 1 => format!("off,lifeboat={level}"),
        2 => format!("warn,lifeboat={level}"),
        _ => level.to_string(),
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
