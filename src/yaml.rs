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
    serde_norway::from_str(text).map_err(|e| {
        refine(
            Error::DataFile {
                path: path.to_owned(),
                location: location(&e),
                message: message(&e),
            },
            text,
        )
    })
}

/// Locate a node of `text` by a path of mapping keys and sequence indexes (1-based line:col).
pub fn locate(text: &str, path: &[PathElem]) -> String {
    fn go<'a>(node: &'a marked_yaml::Node, path: &[PathElem]) -> Option<&'a marked_yaml::Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(node);
        };
        let next = match (node, first) {
            (marked_yaml::Node::Mapping(m), PathElem::Key(k)) => m.get_node(k)?,
            (marked_yaml::Node::Sequence(s), PathElem::Index(i)) => s.get(*i)?,
            _ => return None,
        };
        go(next, rest).or(Some(next))
    }
    let Ok(root) = marked_yaml::parse_yaml(0, text) else {
        return "1:1".into();
    };
    // Prefer the key's position for a mapping entry (where the user's eye goes).
    if let Some((PathElem::Key(k), parent_path)) = path.split_last()
        && let Some(marked_yaml::Node::Mapping(m)) = go(&root, parent_path)
        && let Some((key, _)) = m.iter().find(|(key, _)| key.as_str() == k)
        && let Some(start) = key.span().start()
    {
        return format!("{}:{}", start.line(), start.column());
    }
    // A mapping (e.g. a list item) starts at its first key; marked_yaml's own span of a block
    // mapping starts elsewhere.
    go(&root, path)
        .and_then(|n| match n {
            marked_yaml::Node::Mapping(m) => m
                .iter()
                .next()
                .and_then(|(k, _)| k.span().start().copied())
                .or_else(|| n.span().start().copied()),
            _ => n.span().start().copied(),
        })
        .map(|m| format!("{}:{}", m.line(), m.column()))
        .unwrap_or_else(|| "1:1".into())
}

#[derive(Debug, Clone)]
pub enum PathElem {
    Key(String),
    Index(usize),
}

/// serde reports an unknown key at the start of the mapping that holds it; point at the key
/// itself (serde_norway prefixes the message with the path, e.g. `steps[0].scale: `).
pub fn refine(e: Error, text: &str) -> Error {
    let Error::DataFile {
        path,
        location,
        message,
    } = e
    else {
        return e;
    };
    let name = ["unknown field `", "unknown step field or action `"]
        .iter()
        .find_map(|m| message.split(m).nth(1))
        .and_then(|r| r.split('`').next());
    let prefix = message.split(": ").next().unwrap_or("");
    let location = match name {
        Some(name) if prefix != message && !prefix.contains(' ') => {
            let mut at = Vec::new();
            for part in prefix.split('.') {
                let (k, rest) = part.split_once('[').unwrap_or((part, ""));
                if !k.is_empty() {
                    at.push(PathElem::Key(k.into()));
                }
                for idx in rest.split('[') {
                    if let Ok(i) = idx.trim_end_matches(']').parse() {
                        at.push(PathElem::Index(i));
                    }
                }
            }
            at.push(PathElem::Key(name.into()));
            let l = locate(text, &at);
            if l == "1:1" { location } else { l }
        }
        _ => location,
    };
    Error::DataFile {
        path,
        location,
        message,
    }
}
