//! A fast path for the common shape of manifest documents: block mappings and sequences of
//! plain or quoted one-line scalars, block scalars (`|`, `>`), empty flow collections and
//! comments. For such a document it checks the structure line by line and extracts the top-level
//! `apiVersion`, `kind` and `metadata.name/namespace` an order of magnitude faster than a full
//! YAML parser.
//!
//! It never decides that a document is broken: anything outside the subset (flow collections,
//! multi-line flow scalars, anchors, tags, tabs, complex keys, odd indentation, a `kind: List`,
//! values that YAML would read as numbers, booleans or null, …) returns `None`, and the caller
//! parses the document with the full parser, which reports syntax errors with their location.
//! The test below checks on a generated corpus that every document this accepts is accepted by
//! the full parser with the same fields.

/// The fields preflight needs from a document.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    Seq,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Top,
    Metadata,
    Other,
}

#[derive(Clone, Copy)]
struct Ctx {
    indent: usize,
    kind: Kind,
    role: Role,
    /// A sequence written at the same indentation as its parent mapping's keys.
    compact: bool,
}

/// After `key:` (or `-`) with nothing behind it: the value, if any, is on the next lines.
#[derive(Clone, Copy)]
struct Pending {
    indent: usize,
    role: Role,
    from_key: bool,
}

/// A one-line scalar: its text (decoded for quoted scalars without escapes) and whether it
/// could be something other than a string.
struct Scalar<'a> {
    text: std::borrow::Cow<'a, str>,
    plain: bool,
    escaped: bool,
}

enum Value<'a> {
    Scalar(Scalar<'a>),
    EmptyFlow,
    BlockScalar,
}

const INDICATORS: &[u8] = b"-?:,[]{}#&*!|>'\"%@`";

/// Split `key: rest` (or `key:`) into the key and the rest (after the colon, trimmed).
fn split_key(content: &str) -> Option<(Scalar<'_>, &str)> {
    let b = content.as_bytes();
    let (key, after) = match b.first()? {
        b'"' | b'\'' => {
            let (s, used) = quoted(content)?;
            (s, &content[used..])
        }
        c if INDICATORS.contains(c) => return None,
        _ => {
            let mut end = None;
            for (i, w) in b.windows(2).enumerate() {
                if w[0] == b':' && w[1] == b' ' {
                    end = Some(i);
                    break;
                }
                if w[0] == b' ' && w[1] == b'#' {
                    return None;
                }
            }
            let end = match end {
                Some(e) => e,
                None if content.ends_with(':') => content.len() - 1,
                None => return None,
            };
            let k = &content[..end];
            if k.ends_with(' ') || k.is_empty() {
                return None;
            }
            (
                Scalar {
                    text: k.into(),
                    plain: true,
                    escaped: false,
                },
                &content[end..],
            )
        }
    };
    let rest = after.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((key, rest.trim_start()))
}

/// A quoted scalar at the start of `s` that ends on this line: (scalar, bytes used).
fn quoted(s: &str) -> Option<(Scalar<'_>, usize)> {
    let b = s.as_bytes();
    let q = b[0];
    let mut i = 1;
    let mut escaped = false;
    while i < b.len() {
        match b[i] {
            b'\\' if q == b'"' => {
                escaped = true;
                let e = *b.get(i + 1)?;
                let len = match e {
                    b'0' | b'a' | b'b' | b't' | b'n' | b'v' | b'f' | b'r' | b'e' | b' ' | b'"'
                    | b'/' | b'\\' | b'N' | b'_' | b'L' | b'P' => 0,
                    b'x' => 2,
                    b'u' => 4,
                    b'U' => 8,
                    _ => return None,
                };
                let hex = b.get(i + 2..i + 2 + len)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                i += 2 + len;
            }
            b'\'' if q == b'\'' && b.get(i + 1) == Some(&b'\'') => {
                escaped = true;
                i += 2;
            }
            c if c == q => {
                let inner = &s[1..i];
                let text = if q == b'\'' && escaped {
                    inner.replace("''", "'").into()
                } else {
                    inner.into()
                };
                return Some((
                    Scalar {
                        text,
                        plain: false,
                        escaped: escaped && q == b'"',
                    },
                    i + 1,
                ));
            }
            _ => i += 1,
        }
    }
    None // continues on the next line: not in the subset
}

/// Nothing, or a comment, may follow a value.
fn only_comment(rest: &str) -> bool {
    rest.is_empty()
        || (rest.starts_with(' ') && {
            let t = rest.trim_start();
            t.is_empty() || t.starts_with('#')
        })
}

fn value(rest: &str) -> Option<Value<'_>> {
    let b = rest.as_bytes();
    match b[0] {
        b'"' | b'\'' => {
            let (s, used) = quoted(rest)?;
            only_comment(&rest[used..]).then_some(Value::Scalar(s))
        }
        b'|' | b'>' => {
            let header = rest[1..].split(" #").next().unwrap_or("").trim_end();
            matches!(header, "" | "-" | "+").then_some(Value::BlockScalar)
        }
        b'[' | b'{' => {
            let close = if b[0] == b'[' { "]" } else { "}" };
            (rest[1..].starts_with(close) && only_comment(&rest[2..])).then_some(Value::EmptyFlow)
        }
        b'-' if b.get(1).is_none_or(|c| *c == b' ') => None,
        b'-' => plain(rest),
        c if INDICATORS.contains(&c) => None,
        _ => plain(rest),
    }
}

fn plain(rest: &str) -> Option<Value<'_>> {
    let text = match rest.find(" #") {
        Some(i) => &rest[..i],
        None => rest,
    }
    .trim_end();
    if text.contains(": ") || text.ends_with(':') {
        return None;
    }
    Some(Value::Scalar(Scalar {
        text: text.into(),
        plain: true,
        escaped: false,
    }))
}

/// The string a field holds, or `None` (outside the subset) when YAML could read it as another
/// type or it needs unescaping.
fn string_field(s: &Scalar) -> Option<String> {
    if s.escaped {
        return None;
    }
    if s.plain {
        let t: &str = &s.text;
        let first = t.as_bytes().first()?;
        if first.is_ascii_digit() || b"-+.~".contains(first) {
            return None;
        }
        if matches!(
            t.to_ascii_lowercase().as_str(),
            "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
        ) {
            return None;
        }
    }
    Some(s.text.to_string())
}

/// The fields of `doc` (one document, without `---` lines), or `None` when the document is not
/// in the subset this understands.
pub fn scan(doc: &str) -> Option<Fields> {
    let mut f = Fields::default();
    let mut stack: Vec<Ctx> = Vec::with_capacity(8);
    let mut pending: Option<Pending> = None;
    // Inside a block scalar: (indentation of its parent line, indentation of its content).
    let mut block: Option<(usize, Option<usize>)> = None;
    for raw in doc.lines() {
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim_end_matches(' ');
        if line.contains('\t') {
            return None;
        }
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        if let Some((parent, body)) = block {
            if content.is_empty() {
                continue;
            }
            if indent > parent {
                match body {
                    None => block = Some((parent, Some(indent))),
                    Some(b) if indent < b => return None,
                    Some(_) => {}
                }
                continue;
            }
            block = None;
        }
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let dash = content == "-" || content.starts_with("- ");
        if stack.is_empty() {
            // The document's first line: a top-level mapping at column 1.
            if indent != 0 || dash {
                return None;
            }
            stack.push(Ctx {
                indent: 0,
                kind: Kind::Map,
                role: Role::Top,
                compact: false,
            });
        }
        if let Some(p) = pending.take() {
            if indent > p.indent {
                stack.push(Ctx {
                    indent,
                    kind: if dash { Kind::Seq } else { Kind::Map },
                    role: p.role,
                    compact: false,
                });
            } else if indent == p.indent && dash && p.from_key {
                stack.push(Ctx {
                    indent,
                    kind: Kind::Seq,
                    role: Role::Other,
                    compact: true,
                });
            } else if matches!(p.role, Role::Metadata) {
                return None; // `metadata:` without a mapping: let the parser decide
            }
        }
        while let Some(top) = stack.last() {
            if top.indent > indent || (top.compact && top.indent == indent && !dash) {
                stack.pop();
            } else {
                break;
            }
        }
        let top = *stack.last()?;
        if top.indent != indent {
            return None; // a continuation line, or broken indentation
        }
        match top.kind {
            Kind::Map => {
                if dash {
                    return None;
                }
                key_line(content, indent, top.role, &mut f, &mut pending, &mut block)?;
            }
            Kind::Seq => {
                if !dash {
                    return None;
                }
                let rest = content[1..].trim_start_matches(' ');
                if rest.is_empty() || rest.starts_with('#') {
                    pending = Some(Pending {
                        indent,
                        role: Role::Other,
                        from_key: false,
                    });
                    continue;
                }
                if rest.starts_with("- ") || rest == "-" {
                    return None;
                }
                let col = indent + (content.len() - rest.len());
                if split_key(rest).is_some() {
                    // `- key: value`: a mapping whose keys are at `col`.
                    stack.push(Ctx {
                        indent: col,
                        kind: Kind::Map,
                        role: Role::Other,
                        compact: false,
                    });
                    key_line(rest, col, Role::Other, &mut f, &mut pending, &mut block)?;
                } else {
                    match value(rest)? {
                        Value::BlockScalar => block = Some((indent, None)),
                        Value::Scalar(_) | Value::EmptyFlow => {}
                    }
                }
            }
        }
    }
    if stack.is_empty() {
        return None; // only comments: the caller never passes such a document
    }
    if pending.is_some_and(|p| p.role == Role::Metadata) {
        return None;
    }
    Some(f)
}

/// One `key: value` line of a mapping at `indent` whose role is `role`.
fn key_line(
    content: &str,
    indent: usize,
    role: Role,
    f: &mut Fields,
    pending: &mut Option<Pending>,
    block: &mut Option<(usize, Option<usize>)>,
) -> Option<()> {
    let (key, rest) = split_key(content)?;
    let key_text: &str = &key.text;
    if key.escaped {
        return None;
    }
    let watched = match role {
        Role::Top => matches!(key_text, "apiVersion" | "kind" | "metadata" | "items"),
        Role::Metadata => matches!(key_text, "name" | "namespace"),
        Role::Other => false,
    };
    if rest.is_empty() || rest.starts_with('#') {
        if watched && !(role == Role::Top && key_text == "metadata") {
            return None;
        }
        *pending = Some(Pending {
            indent,
            role: if role == Role::Top && key_text == "metadata" {
                Role::Metadata
            } else {
                Role::Other
            },
            from_key: true,
        });
        return Some(());
    }
    let v = value(rest)?;
    if !watched {
        if let Value::BlockScalar = v {
            *block = Some((indent, None));
        }
        return Some(());
    }
    let Value::Scalar(s) = v else {
        return None;
    };
    let text = string_field(&s)?;
    match (role, key_text) {
        (Role::Top, "apiVersion") => f.api_version = Some(text),
        (Role::Top, "kind") => f.kind = Some(text),
        (Role::Metadata, "name") => f.name = Some(text),
        (Role::Metadata, "namespace") => f.namespace = Some(text),
        _ => return None, // `metadata: x`, `items: x`: let the parser decide
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(a: &str, k: &str, n: Option<&str>, ns: Option<&str>) -> Fields {
        Fields {
            api_version: Some(a.into()),
            kind: Some(k.into()),
            name: n.map(Into::into),
            namespace: ns.map(Into::into),
        }
    }

    #[test]
    fn common_shapes_are_read() {
        let doc = "# c\napiVersion: apps/v1 # comment\nkind: \"Deployment\"\nmetadata:\n  name: 'web'\n  namespace: shop\n  labels:\n    app.kubernetes.io/name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.27\n        args: []\n        command:\n          - sh\n          - -c\n          - |\n            echo: hi\n            exit 0\n      volumes: []\n  replicas: 3\ndata:\n  script: |-\n    #!/bin/sh\n      nested: fine\n";
        assert_eq!(
            scan(doc),
            Some(fields("apps/v1", "Deployment", Some("web"), Some("shop")))
        );
        let crlf = "apiVersion: v1\r\nkind: ConfigMap\r\nmetadata:\r\n  name: a\r\n";
        assert_eq!(scan(crlf), Some(fields("v1", "ConfigMap", Some("a"), None)));
    }

    #[test]
    fn anything_unusual_goes_to_the_full_parser() {
        for doc in [
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: 123\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n   bad: indent\n",
            "apiVersion: v1\nkind: Pod\nspec:\n  x: a\n  continued plain\n",
            "apiVersion: v1\nkind: Pod\nspec: &anchor\n  a: b\n",
            "apiVersion: v1\nkind: Pod\nspec:\n\ta: b\n",
            "apiVersion: v1\nkind: Pod\nspec: a: b\n",
            "apiVersion: v1\nkind: Pod\nspec: \"unterminated\n",
            "apiVersion: v1\nkind: Pod\nspec: [a, b]\n",
            "apiVersion: v1\nkind: Pod\nspec: {{ .Values.x }}\n",
            "  apiVersion: v1\n",
            "- a\n",
            "apiVersion: \"v\\u0031\"\nkind: Pod\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\nspec: {}\n",
        ] {
            assert_eq!(scan(doc), None, "{doc}");
        }
    }
}
