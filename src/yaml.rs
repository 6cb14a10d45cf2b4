//! Reading our own YAML files (deprecation data, drill specs): one place that turns a parse
//! error into `file:line:col: message`.
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::Error;

/// The message of a YAML error without serde_norway's trailing " at line L column C" (the
/// location is reported once, as file:line:col).
pub fn message(e: &serde_norway::Error) -> String {
    let m = e.to_string();
    m.split(" at line ").next().unwrap_or(&m).to_string()
}

pub fn location(e: &serde_norway::Error) -> String {
    e.location()
        .map(|l| format!("{}:{}", l.line(), l.column()))
        .unwrap_or_else(|| "1:1".into())
}

/// Parse `text` (the content of `path`) or fail with `path:line:col: message`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Error> {
    serde_norway::from_str(text).map_err(|e| Error::DataFile {
        path: path.to_owned(),
        location: location(&e),
        message: message(&e),
    })
}
