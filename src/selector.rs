//! Kubernetes label selectors (the `-l` syntax): `k=v`, `k==v`, `k!=v`, `k`, `!k`,
//! `k in (a,b)`, `k notin (a,b)`, comma-separated, all must match.
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(Vec<Req>);

fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected (values) in {s:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for term in split_top(s) {
            let t = term.trim();
            if t.is_empty() {
                continue;
            }
            let r = if let Some((k, v)) = t.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                Req::In(k.trim().into(), set(v)?)
            } else if let Some(k) = t.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else if t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Req::Exists(t.into())
            } else {
                return Err(format!("invalid label selector term {t:?}"));
            };
            reqs.push(r);
        }
        Ok(Selector(reqs))
    }

    /// As a `metav1.LabelSelector`: (matchLabels, matchExpressions).
    pub fn to_label_selector(&self) -> (serde_json::Value, serde_json::Value) {
        use serde_json::json;
        let mut labels = serde_json::Map::new();
        let mut exprs = Vec::new();
        for r in &self.0 {
            match r {
                Req::Eq(k, v) => {
                    labels.insert(k.clone(), json!(v));
                }
                Req::Ne(k, v) => exprs.push(json!({"key": k, "operator": "NotIn", "values": [v]})),
                Req::Exists(k) => exprs.push(json!({"key": k, "operator": "Exists"})),
                Req::NotExists(k) => exprs.push(json!({"key": k, "operator": "DoesNotExist"})),
                Req::In(k, v) => exprs.push(json!({"key": k, "operator": "In", "values": v})),
                Req::NotIn(k, v) => exprs.push(json!({"key": k, "operator": "NotIn", "values": v})),
            }
        }
        (
            serde_json::Value::Object(labels),
            serde_json::Value::Array(exprs),
        )
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::Ne(k, v) => labels.get(k) != Some(v),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }

    /// Labels of a JSON object.
    pub fn matches_object(&self, obj: &serde_json::Value) -> bool {
        let labels: BTreeMap<String, String> = obj["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_terms() {
        let l: BTreeMap<String, String> = [("app", "web"), ("tier", "fe")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        for (s, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=web,tier=fe", true),
            ("app=web,tier=be", false),
            ("tier in (fe, be)", true),
            ("tier notin (fe)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("missing notin (x)", true),
            ("", true),
        ] {
            assert_eq!(Selector::parse(s).unwrap().matches(&l), want, "{s}");
        }
        assert!(Selector::parse("a in b").is_err());
    }
}
