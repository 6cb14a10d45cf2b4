//! Reporters: turn an operation's result into table / JSON / YAML on stdout. Operations never
//! print; commands hand their result to `emit`.
use std::io::Write;

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::error::Error;

pub mod progress;

/// Something that can be shown as a human table as well as serialized.
pub trait Render: Serialize {
    /// The human (table) form, written to `w`.
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()>;

    /// Markdown (for change tickets). Only some reports have one.
    fn markdown(&self, _w: &mut dyn Write) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "markdown",
        ))
    }
}

/// Write text to stdout (a closed pipe is reported as `Error::Output`, never a panic).
pub fn print_str(text: &str) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    w.write_all(text.as_bytes())
        .and_then(|_| w.flush())
        .map_err(|source| Error::Output { source })
}

pub fn emit<T: Render>(format: OutputFormat, value: &T) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    write_to(&mut w, format, value)
}

pub fn write_to<T: Render>(
    w: &mut dyn Write,
    format: OutputFormat,
    value: &T,
) -> Result<(), Error> {
    write_inner(w, format, value)?;
    w.flush().map_err(|source| Error::Output { source })
}

fn write_inner<T: Render>(w: &mut dyn Write, format: OutputFormat, value: &T) -> Result<(), Error> {
    match format {
        OutputFormat::Table => value.table(w).map_err(|source| Error::Output { source }),
        OutputFormat::Markdown => value.markdown(w).map_err(|source| {
            if source.kind() == std::io::ErrorKind::Unsupported {
                Error::UnsupportedOutput { format: "markdown" }
            } else {
                Error::Output { source }
            }
        }),
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *w, value).map_err(|e| Error::Encode {
                format: "json",
                source: Box::new(e),
            })?;
            writeln!(w).map_err(|source| Error::Output { source })
        }
        OutputFormat::Yaml => {
            let s = serde_norway::to_string(value).map_err(|e| Error::Encode {
                format: "yaml",
                source: Box::new(e),
            })?;
            w.write_all(s.as_bytes())
                .map_err(|source| Error::Output { source })
        }
    }
}
