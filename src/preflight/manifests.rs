//! Manifest scanning: files and directories (recursively: `.yaml`, `.yml`, `.json`), multi-document
//! YAML, `kind: List` items, stdin. Only `apiVersion`, `kind` and `metadata.name/namespace` are
//! extracted; the rest of each document is parsed (so syntax errors are found) but not kept.
//! A document that does not parse is reported with file:line and skipped; the scan continues.
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One Kubernetes object found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// 1-based line of the document; for an item of a block-style List, of its `- ` entry.
    pub line: usize,
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseProblem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Scanned {
    pub objects: Vec<ObjectRef>,
    pub problems: Vec<ParseProblem>,
}

// ---- a lenient, allocation-light view of a document ---------------------------------------

#[derive(Debug, Default)]
struct Doc {
    api_version: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    items: Option<Vec<Doc>>,
}

/// Any scalar as a string; collections are skipped.
struct Scalar(Option<String>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
                Scalar::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Scalar, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Scalar, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

struct Meta {
    name: Option<String>,
    namespace: Option<String>,
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Meta;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("metadata")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Meta, A::Error> {
                let mut m = Meta {
                    name: None,
                    namespace: None,
                };
                while let Some(Scalar(k)) = a.next_key::<Scalar>()? {
                    match k.as_deref() {
                        Some("name") => m.name = a.next_value::<Scalar>()?.0,
                        Some("namespace") => m.namespace = a.next_value::<Scalar>()?.0,
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(m)
            }
            fn visit_unit<E>(self) -> Result<Meta, E> {
                Ok(Meta {
                    name: None,
                    namespace: None,
                })
            }
            fn visit_none<E>(self) -> Result<Meta, E> {
                Ok(Meta {
                    name: None,
                    namespace: None,
                })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Meta, E> {
                Ok(Meta {
                    name: None,
                    namespace: None,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Meta, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Meta {
                    name: None,
                    namespace: None,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Doc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Kubernetes object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Doc, A::Error> {
                let mut doc = Doc::default();
                while let Some(Scalar(k)) = a.next_key::<Scalar>()? {
                    match k.as_deref() {
                        Some("apiVersion") => doc.api_version = a.next_value::<Scalar>()?.0,
                        Some("kind") => doc.kind = a.next_value::<Scalar>()?.0,
                        Some("metadata") => {
                            let m = a.next_value::<Meta>()?;
                            doc.name = m.name;
                            doc.namespace = m.namespace;
                        }
                        Some("items") => doc.items = a.next_value::<Option<Vec<Doc>>>()?,
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(doc)
            }
            // Anything that is not a mapping is not a Kubernetes object: valid, ignored.
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Doc, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Doc::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Doc, E> {
                Ok(Doc::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Doc, E> {
                Ok(Doc::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Doc, E> {
                Ok(Doc::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Doc, E> {
                Ok(Doc::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Doc, E> {
                Ok(Doc::default())
            }
            fn visit_unit<E>(self) -> Result<Doc, E> {
                Ok(Doc::default())
            }
            fn visit_none<E>(self) -> Result<Doc, E> {
                Ok(Doc::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Collect the objects of a parsed document that starts at `line` with text `text`. Items of a
/// block-style `items:` list get the line of their own `- ` entry; in any other layout (flow
/// style, JSON) they get the List's line.
fn collect(doc: Doc, line: usize, text: &str, out: &mut Vec<ObjectRef>) {
    let is_list = doc
        .kind
        .as_deref()
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && doc.items.is_some();
    if let (Some(api_version), Some(kind)) = (doc.api_version, doc.kind) {
        out.push(ObjectRef {
            line,
            api_version,
            kind,
            name: doc.name,
            namespace: doc.namespace,
        });
    }
    if is_list {
        let items = doc.items.unwrap_or_default();
        let lines = list_item_lines(text).filter(|l| l.len() == items.len());
        for (i, item) in items.into_iter().enumerate() {
            let item_line = lines.as_ref().map(|l| line + l[i]).unwrap_or(line);
            collect(item, item_line, "", out);
        }
    }
}

/// 0-based line offsets (within a document) of the entries of its top-level block sequence
/// `items:`: the `- ` lines at the sequence's indentation.
fn list_item_lines(text: &str) -> Option<Vec<usize>> {
    let mut lines = text.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, l)| l.trim_end() == "items:" || l.starts_with("items: #"))?;
    let mut indent = None;
    let mut out = Vec::new();
    for (i, l) in lines {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = l.len() - t.len();
        let is_entry = t == "-" || t.starts_with("- ");
        if ind == 0 && !is_entry {
            break; // the next top-level key
        }
        if is_entry {
            match indent {
                None => {
                    indent = Some(ind);
                    out.push(i);
                }
                Some(x) if x == ind => out.push(i),
                _ => {}
            }
        }
    }
    Some(out)
}

// ---- splitting a YAML stream into documents -------------------------------------------------

/// (1-based first line, text) of each document. A line `---` (optionally followed by a space or
/// comment) starts a document, `...` ends one.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let l = line.trim_end_matches(['\n', '\r']);
        let is_sep = l == "---" || l.starts_with("--- ") || l.starts_with("---\t") || l == "...";
        if is_sep {
            docs.push((start_line, &text[start_byte..offset]));
            start_byte = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Scan one file's text. JSON when `json` (one document), else a YAML stream.
pub fn scan_text(text: &str, json: bool) -> Scanned {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut s = Scanned::default();
    if json {
        match serde_json::from_str::<Doc>(text) {
            Ok(doc) => collect(doc, 1, "", &mut s.objects),
            Err(e) => s.problems.push(ParseProblem {
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            }),
        }
        return s;
    }
    for (first_line, doc_text) in split_documents(text) {
        // The common shape is read by the fast path; anything else (and every broken
        // document) by the full parser.
        if let Some(f) = super::fastpath::scan(doc_text) {
            let doc = Doc {
                api_version: f.api_version,
                kind: f.kind,
                name: f.name,
                namespace: f.namespace,
                items: None,
            };
            collect(doc, first_line, doc_text, &mut s.objects);
            continue;
        }
        match serde_norway::from_str::<Doc>(doc_text) {
            Ok(doc) => collect(doc, first_line, doc_text, &mut s.objects),
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                let message = e.to_string();
                // serde_norway appends " at line L column C" relative to the document; drop it
                // since we report the position in the file.
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_string();
                s.problems.push(ParseProblem {
                    line: first_line + line - 1,
                    column,
                    message,
                });
            }
        }
    }
    s
}

/// A scanned input: the path (or "-" for stdin) and what it held.
#[derive(Debug)]
pub struct ScannedFile {
    pub path: PathBuf,
    pub scanned: Scanned,
    /// Set when the file could not be read at all.
    pub read_error: Option<String>,
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("yaml" | "yml" | "json")
    )
}

/// Expand paths: files as given, directories recursively (manifest extensions only, sorted).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), (PathBuf, std::io::Error)> {
        let mut entries: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(dir)
            .map_err(|e| (dir.to_owned(), e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (p, ft) in entries {
            // The entry's own type (no extra stat); symlinked directories are not followed
            // (loops), symlinked files are.
            if ft.is_dir() {
                walk(&p, out)?;
            } else if is_manifest(&p)
                && (ft.is_file()
                    || (ft.is_symlink()
                        && std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false)))
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(p.clone());
        } else if std::fs::metadata(p).map_err(|e| (p.clone(), e))?.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Scan files in parallel. `stdin` supplies the text for the path "-".
pub fn scan_files(files: &[PathBuf], stdin: Option<&str>) -> Vec<ScannedFile> {
    files
        .par_iter()
        .map(|p| {
            let json = p
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            if p.as_os_str() == "-" {
                return ScannedFile {
                    path: p.clone(),
                    scanned: scan_text(stdin.unwrap_or(""), false),
                    read_error: None,
                };
            }
            match std::fs::read(p) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    ScannedFile {
                        path: p.clone(),
                        scanned: scan_text(&text, json),
                        read_error: None,
                    }
                }
                Err(e) => ScannedFile {
                    path: p.clone(),
                    scanned: Scanned::default(),
                    read_error: Some(e.to_string()),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd but valid (or invalid) documents: whatever the fast path accepts, the full parser
    /// accepts with the same fields.
    #[test]
    fn fast_path_never_accepts_what_the_parser_reads_differently() {
        let head = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n";
        let bodies = [
            "data:\n  a: foo{bar}\n  b: x,y\n  c: b]\n  d: x:y\n  e: -x\n",
            "data:\n  a: 'it''s'\n  b: \"x\\ty\"\n  c: x #c\n  d: \"x\" #c\n",
            "data:\n  key with spaces: v\n  \"quoted key\": v\n  a.b/c: d\n",
            "data:\n  a: |+\n    keep\n\n  b: >-\n    folded\n    text\n",
            "data:\n  a: \"x\"#c\n",
            "data:\n  a: 'x'y\n",
            "data:\n  a: b\n  a: c\n",
            "data:\n  a: |\n      deep\n    shallow\n",
            "spec:\n  list:\n  - a\n  -\n    b: c\n  - d: e\n    f: g\n  other: 1\n",
            "spec:\n  list:\n    - a: 1\n      b: 2\n    - c\n",
            "spec:\n  x: 1\n y: 2\n",
            "spec:\n  - a\n",
            "spec: -\n",
            "spec:\n  a: [] # empty\n  b: {}\n  c: []x\n",
            "spec:\n  a: @x\n",
            "spec:\n  a: `x`\n",
            "spec:\n  a: \"\\q\"\n",
            "spec:\n  ? complex\n  : value\n",
            "spec:\n  a: b # ok\n  # comment\n    # indented comment\n  c: d\n",
        ];
        let metas = [
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: 'quoted'\n  namespace: \"ns\"\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: yes\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ~\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: 1e3\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  name: b\n",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    name: not-this\n  name: this\n",
            "kind: Pod\napiVersion: v1\n",
            "apiVersion: v1 # c\nkind: Pod #c\n",
        ];
        let mut accepted = 0;
        for doc in bodies
            .iter()
            .map(|b| format!("{head}{b}"))
            .chain(metas.iter().map(|m| m.to_string()))
        {
            let Some(f) = super::super::fastpath::scan(&doc) else {
                continue;
            };
            accepted += 1;
            let full = serde_norway::from_str::<Doc>(&doc)
                .unwrap_or_else(|e| panic!("parser rejects ({e}):\n{doc}"));
            assert_eq!(
                (full.api_version, full.kind, full.name, full.namespace),
                (f.api_version, f.kind, f.name, f.namespace),
                "{doc}"
            );
        }
        assert!(accepted >= 10, "only {accepted} accepted");
    }

    /// Every document the fast path accepts, the full parser accepts with the same fields; and
    /// the fast path takes most of a realistic corpus (the benchmark's generator).
    #[test]
    fn fast_path_agrees_with_the_full_parser_on_a_generated_corpus() {
        let dir = tempfile::tempdir().unwrap();
        let generator =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/gen-manifests.py");
        let ok = std::process::Command::new("python3")
            .arg(&generator)
            .args(["--files", "3000", "--seed", "7"])
            .arg(dir.path().join("c"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("python3 runs the corpus generator");
        assert!(ok.success());
        let files = expand(&[dir.path().join("c")]).unwrap();
        let (mut fast, mut total) = (0, 0);
        for p in files {
            if p.extension().is_some_and(|e| e == "json") {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            for (_, doc) in split_documents(text) {
                total += 1;
                let Some(f) = super::super::fastpath::scan(doc) else {
                    continue;
                };
                fast += 1;
                let full = serde_norway::from_str::<Doc>(doc).unwrap_or_else(|e| {
                    panic!(
                        "{}: fast path accepted a document the parser rejects ({e}):\n{doc}",
                        p.display()
                    )
                });
                assert!(full.items.is_none(), "{doc}");
                assert_eq!(
                    (full.api_version, full.kind, full.name, full.namespace),
                    (f.api_version, f.kind, f.name, f.namespace),
                    "{}:\n{doc}",
                    p.display()
                );
            }
        }
        assert!(
            fast * 10 > total * 6,
            "the fast path took only {fast} of {total} documents"
        );
    }

    #[test]
    fn multi_document_yaml_with_line_numbers() {
        let text = "# leading comment\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n---\n# only a comment\n---\napiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: b, namespace: web}\n";
        let s = scan_text(text, false);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.objects.len(), 2);
        assert_eq!(s.objects[0].line, 1);
        assert_eq!(s.objects[0].name.as_deref(), Some("a"));
        assert_eq!(
            (s.objects[1].line, s.objects[1].kind.as_str()),
            (10, "Ingress")
        );
        assert_eq!(s.objects[1].namespace.as_deref(), Some("web"));
    }

    #[test]
    fn broken_document_is_reported_with_its_file_line_and_the_rest_is_scanned() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: [unclosed\n---\napiVersion: batch/v1beta1\nkind: CronJob\nmetadata:\n  name: later\n";
        let s = scan_text(text, false);
        assert_eq!(s.objects.len(), 2, "{:?}", s.objects);
        assert_eq!(s.objects[1].kind, "CronJob");
        assert_eq!(s.problems.len(), 1);
        assert!(
            (6..=10).contains(&s.problems[0].line),
            "line in the file, not in the document: {:?}",
            s.problems[0]
        );
    }

    #[test]
    fn list_items_are_objects() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: extensions/v1beta1\n  kind: Deployment\n  metadata: {name: x}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: y}\n";
        let s = scan_text(text, false);
        let kinds: Vec<_> = s.objects.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds, ["List", "Deployment", "Service"]);
        let lines: Vec<_> = s.objects.iter().map(|o| o.line).collect();
        assert_eq!(lines, [1, 4, 7], "each item at its own entry line");
        // A typed List with the same apiVersion as its items, and nested apiVersion keys
        // (scaleTargetRef) that must not be mistaken for the next item.
        let text = "apiVersion: extensions/v1beta1\nkind: DeploymentList\nitems:\n  - apiVersion: autoscaling/v2beta1\n    kind: HorizontalPodAutoscaler\n    spec:\n      scaleTargetRef:\n        apiVersion: extensions/v1beta1\n        kind: Deployment\n  - kind: Deployment\n    metadata: {name: b}\n    apiVersion: extensions/v1beta1\n";
        let s = scan_text(text, false);
        let lines: Vec<_> = s
            .objects
            .iter()
            .map(|o| (o.kind.as_str(), o.line))
            .collect();
        assert_eq!(
            lines,
            [
                ("DeploymentList", 1),
                ("HorizontalPodAutoscaler", 4),
                ("Deployment", 10)
            ]
        );
        // Items after a leading document separator and comments; BOM and CRLF tolerated.
        let text = "\u{feff}---\r\n# c\r\napiVersion: v1\r\nkind: List\r\nitems:\r\n  - kind: Ingress\r\n    apiVersion: \"extensions/v1beta1\"\r\n";
        let s = scan_text(text, false);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.objects[1].line, 6);
    }

    #[test]
    fn json_and_odd_scalars() {
        let s = scan_text(
            r#"{"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": 42}}"#,
            true,
        );
        assert_eq!(s.objects[0].name.as_deref(), Some("42"));
        let s = scan_text("{\"apiVersion\": \n", true);
        assert_eq!(s.problems.len(), 1);
        // Non-object documents are not errors.
        let s = scan_text("just a string\n---\n- a\n- b\n", false);
        assert!(s.objects.is_empty() && s.problems.is_empty());
    }
}
