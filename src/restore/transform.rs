//! Restore transforms (`--transform FILE`, docs/restore.md#transforms): an ordered list of rules,
//! each matching objects by kind, namespace, name and labels, and changing them with a JSON patch
//! (RFC 6902), a JSON merge patch (RFC 7396) or a strategic merge patch, or dropping them.
//! Rules are applied in file order to the object as it will be created (after lifeboat's own
//! rewrites and any API-version conversion); `namespaces` matches the namespace in the backup.
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::selector::Selector;
use crate::yaml::PathElem;

pub const API_VERSION: &str = "lifeboat.io/v1";
pub const KIND: &str = "RestoreTransform";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    api_version: String,
    kind: String,
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "match")]
    matches: RawMatch,
    #[serde(default)]
    json_patch: Option<json_patch::Patch>,
    #[serde(default)]
    merge_patch: Option<Value>,
    #[serde(default)]
    strategic_merge_patch: Option<Value>,
    #[serde(default)]
    drop: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMatch {
    /// Kinds (`Deployment`) or `resource[.group]` patterns (`deployments.apps`), like
    /// `--include-resources`.
    #[serde(default)]
    kinds: Vec<String>,
    /// Globs on the namespace in the backup (`*` matches cluster-scoped objects too).
    #[serde(default)]
    namespaces: Vec<String>,
    /// Globs on the object's name.
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    label_selector: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Action {
    JsonPatch(json_patch::Patch),
    MergePatch(Value),
    StrategicMergePatch(Value),
    Drop,
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// `name` from the file, or `rule N` (1-based).
    pub name: String,
    /// `file:line:col` of the rule, for messages.
    pub at: String,
    kinds: Vec<String>,
    namespaces: Vec<String>,
    names: Vec<String>,
    selector: Option<Selector>,
    pub action: Action,
}

/// All rules of one or more files, in order.
#[derive(Debug, Clone, Default)]
pub struct Transforms {
    pub rules: Vec<Rule>,
    pub files: Vec<PathBuf>,
}

/// What the rules did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The names of the rules that changed it (possibly none).
    Changed(Vec<String>),
    /// Dropped by this rule (not restored).
    Dropped(String),
}

/// The object being matched: its type and its namespace in the backup.
pub struct Target<'a> {
    pub kind: &'a str,
    pub resource: &'a str,
    /// Groups the object is known by (the backup's, and the converted one).
    pub groups: &'a [&'a str],
    pub backup_namespace: Option<&'a str>,
}

/// Load several files (rules in the order given); `None` when there are none.
pub fn load_all(paths: &[PathBuf]) -> Result<Option<std::sync::Arc<Transforms>>, Error> {
    let mut all: Option<Transforms> = None;
    for p in paths {
        let t = Transforms::load(p)?;
        match &mut all {
            Some(a) => a.extend(t),
            None => all = Some(t),
        }
    }
    Ok(all.map(std::sync::Arc::new))
}

impl Transforms {
    pub fn load(path: &Path) -> Result<Transforms, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Transforms, Error> {
        let file: File = crate::yaml::parse(path, text)?;
        let at = |p: &[PathElem]| crate::yaml::locate(text, p);
        let err = |p: &[PathElem], message: String| Error::DataFile {
            path: path.to_owned(),
            location: at(p),
            message,
        };
        if file.api_version != API_VERSION || file.kind != KIND {
            return Err(err(
                &[],
                format!(
                    "expected apiVersion {API_VERSION} and kind {KIND}, got {} {}",
                    file.api_version, file.kind
                ),
            ));
        }
        let mut rules = Vec::new();
        for (i, r) in file.rules.into_iter().enumerate() {
            let here = |k: &str| vec![key("rules"), PathElem::Index(i), key(k)];
            let mut actions = Vec::new();
            if let Some(p) = r.json_patch {
                actions.push(("jsonPatch", Action::JsonPatch(p)));
            }
            if let Some(p) = r.merge_patch {
                if !p.is_object() {
                    return Err(err(
                        &here("mergePatch"),
                        "mergePatch must be a mapping".into(),
                    ));
                }
                actions.push(("mergePatch", Action::MergePatch(p)));
            }
            if let Some(p) = r.strategic_merge_patch {
                if !p.is_object() {
                    return Err(err(
                        &here("strategicMergePatch"),
                        "strategicMergePatch must be a mapping".into(),
                    ));
                }
                if let Some(d) = unsupported_directive(&p) {
                    return Err(err(
                        &here("strategicMergePatch"),
                        format!(
                            "unsupported strategic merge patch directive {d} (supported: $patch: delete|replace|merge, $retainKeys is not)"
                        ),
                    ));
                }
                actions.push(("strategicMergePatch", Action::StrategicMergePatch(p)));
            }
            match r.drop {
                Some(true) => actions.push(("drop", Action::Drop)),
                Some(false) => {
                    return Err(err(
                        &here("drop"),
                        "drop: false does nothing; remove it".into(),
                    ));
                }
                None => {}
            }
            let rule_at = vec![key("rules"), PathElem::Index(i)];
            if actions.len() != 1 {
                return Err(err(
                    &rule_at,
                    format!(
                        "a rule needs exactly one of jsonPatch, mergePatch, strategicMergePatch or drop: true (this one has {})",
                        if actions.is_empty() {
                            "none".to_string()
                        } else {
                            actions.iter().map(|a| a.0).collect::<Vec<_>>().join(", ")
                        }
                    ),
                ));
            }
            let selector = match &r.matches.label_selector {
                Some(s) => Some(Selector::parse(s).map_err(|m| {
                    err(
                        &[
                            key("rules"),
                            PathElem::Index(i),
                            key("match"),
                            key("labelSelector"),
                        ],
                        format!("bad label selector: {m}"),
                    )
                })?),
                None => None,
            };
            let m = r.matches;
            if m.kinds.is_empty()
                && m.namespaces.is_empty()
                && m.names.is_empty()
                && selector.is_none()
            {
                return Err(err(
                    &here("match"),
                    "match is empty: name kinds, namespaces, names or a labelSelector (use namespaces: ['*'] to match everything)".into(),
                ));
            }
            rules.push(Rule {
                name: r.name.unwrap_or_else(|| format!("rule {}", i + 1)),
                at: format!("{}:{}", path.display(), at(&rule_at)),
                kinds: m.kinds,
                namespaces: m.namespaces,
                names: m.names,
                selector,
                action: actions.pop().expect("one action").1,
            });
        }
        Ok(Transforms {
            rules,
            files: vec![path.to_owned()],
        })
    }

    /// Several files: their rules in order.
    pub fn extend(&mut self, other: Transforms) {
        self.rules.extend(other.rules);
        self.files.extend(other.files);
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Apply every matching rule to `obj`, in order. An error names the rule and its location;
    /// `obj` is then unchanged by that rule.
    pub fn apply(&self, t: &Target<'_>, obj: &mut Value) -> Result<Applied, String> {
        let mut changed = Vec::new();
        for r in &self.rules {
            if !r.matches(t, obj) {
                continue;
            }
            let before = obj.clone();
            match &r.action {
                Action::Drop => return Ok(Applied::Dropped(r.name.clone())),
                Action::MergePatch(p) => json_patch::merge(obj, p),
                Action::StrategicMergePatch(p) => strategic_merge(obj, p),
                Action::JsonPatch(p) => {
                    if let Err(e) = json_patch::patch(obj, p) {
                        *obj = before.clone();
                        // A failed `test` is a condition: the rule does not apply.
                        if matches!(e.kind, json_patch::PatchErrorKind::TestFailed) {
                            continue;
                        }
                        return Err(format!("transform {} ({}): json patch: {e}", r.name, r.at));
                    }
                }
            }
            // Identity must not change: restore decides where an object goes.
            for (field, what) in [("kind", "kind"), ("apiVersion", "apiVersion")] {
                if obj[field] != before[field] {
                    *obj = before;
                    return Err(format!(
                        "transform {} ({}) changed the object's {what}; transforms may not change an object's type",
                        r.name, r.at
                    ));
                }
            }
            if obj["metadata"]["namespace"] != before["metadata"]["namespace"] {
                *obj = before;
                return Err(format!(
                    "transform {} ({}) changed metadata.namespace; use --namespace-map to restore into another namespace",
                    r.name, r.at
                ));
            }
            if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                *obj = before;
                return Err(format!(
                    "transform {} ({}) removed metadata.name",
                    r.name, r.at
                ));
            }
            if *obj != before {
                changed.push(r.name.clone());
            }
        }
        Ok(Applied::Changed(changed))
    }
}

fn key(s: &str) -> PathElem {
    PathElem::Key(s.into())
}

impl Rule {
    fn matches(&self, t: &Target<'_>, obj: &Value) -> bool {
        let kind_ok = self.kinds.is_empty()
            || self.kinds.iter().any(|p| {
                let p = p.trim();
                if p.eq_ignore_ascii_case(t.kind) {
                    return true;
                }
                let p = p.to_ascii_lowercase();
                let (res, group) = match p.split_once('.') {
                    Some((r, g)) => (r, Some(g)),
                    None => (p.as_str(), None),
                };
                res == t.resource
                    && group.is_none_or(|g| {
                        t.groups
                            .iter()
                            .any(|tg| *tg == g || (g == "core" && tg.is_empty()))
                    })
            });
        let ns_ok = self.namespaces.is_empty()
            || self.namespaces.iter().any(|p| match t.backup_namespace {
                Some(ns) => glob(p, ns),
                None => p == "*",
            });
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let name_ok = self.names.is_empty() || self.names.iter().any(|p| glob(p, name));
        let sel_ok = self.selector.as_ref().is_none_or(|s| s.matches_object(obj));
        kind_ok && ns_ok && name_ok && sel_ok
    }
}

/// `*` (any run) and `?` (one character) wildcards.
pub fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

/// Lists of built-in types that strategic merge patch merges by a key (patchMergeKey) instead
/// of replacing; keyed by field name. `ports` uses `containerPort` in containers and `port` in
/// Services (chosen by which key the items have).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "readinessGates"
        | "hostAliases" => match field {
            "hostAliases" => "ip",
            "readinessGates" => "conditionType",
            _ => "name",
        },
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "topologySpreadConstraints" => "topologyKey",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Primitive lists that strategic merge patch merges as sets.
fn is_set_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn unsupported_directive(p: &Value) -> Option<String> {
    match p {
        Value::Object(m) => {
            for (k, v) in m {
                if k.starts_with('$') && k != "$patch" && !k.starts_with("$setElementOrder/") {
                    return Some(k.clone());
                }
                if k == "$patch" && !matches!(v.as_str(), Some("delete" | "replace" | "merge")) {
                    return Some(format!("$patch: {v}"));
                }
                if let Some(d) = unsupported_directive(v) {
                    return Some(d);
                }
            }
            None
        }
        Value::Array(a) => a.iter().find_map(unsupported_directive),
        _ => None,
    }
}

/// A strategic merge patch for built-in types (docs/restore.md#transforms says which lists
/// merge by key): maps merge recursively, `null` deletes a key, lists with a merge key merge
/// item by item (`$patch: delete` in an item removes it), other lists are replaced, and
/// `$patch: replace` in a map replaces the whole map.
pub fn strategic_merge(doc: &mut Value, patch: &Value) {
    merge_map(doc, patch);
}

fn merge_map(doc: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut m = p.clone();
        m.remove("$patch");
        *doc = Value::Object(strip_directives(m));
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let d = doc.as_object_mut().expect("object");
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            d.remove(k);
            continue;
        }
        match (d.get_mut(k), v) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => merge_map(existing, v),
            (Some(Value::Array(existing)), Value::Array(items)) => {
                merge_list(k, existing, items);
            }
            _ => {
                let clean = match v {
                    Value::Object(m) => Value::Object(strip_directives(m.clone())),
                    Value::Array(a) => Value::Array(
                        a.iter()
                            .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                            .cloned()
                            .map(|i| match i {
                                Value::Object(m) => Value::Object(strip_directives(m)),
                                other => other,
                            })
                            .collect(),
                    ),
                    other => other.clone(),
                };
                d.insert(k.clone(), clean);
            }
        }
    }
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        if let Value::Object(inner) = v {
            *inner = strip_directives(std::mem::take(inner));
        }
    }
    m
}

fn merge_list(field: &str, existing: &mut Vec<Value>, items: &[Value]) {
    if is_set_list(field) {
        for i in items {
            if !existing.contains(i) {
                existing.push(i.clone());
            }
        }
        return;
    }
    let Some(mk) = merge_key(field, existing.as_slice()).or_else(|| merge_key(field, items)) else {
        *existing = items.to_vec();
        return;
    };
    for item in items {
        let k = &item[mk];
        let pos = existing.iter().position(|e| !k.is_null() && &e[mk] == k);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(p), true) => {
                existing.remove(p);
            }
            (None, true) => {}
            (Some(p), false) => merge_map(&mut existing[p], item),
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                merge_map(&mut fresh, item);
                existing.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Transforms, Error> {
        Transforms::parse(Path::new("t.yaml"), text)
    }

    fn target<'a>(
        kind: &'a str,
        resource: &'a str,
        groups: &'a [&'a str],
        ns: &'a str,
    ) -> Target<'a> {
        Target {
            kind,
            resource,
            groups,
            backup_namespace: Some(ns),
        }
    }

    const FILE: &str = "apiVersion: lifeboat.io/v1
kind: RestoreTransform
rules:
  - name: one-replica
    match:
      kinds: [deployments.apps]
      namespaces: ['shop*']
    jsonPatch:
      - {op: replace, path: /spec/replicas, value: 1}
  - match: {kinds: [Secret], names: ['legacy-*']}
    drop: true
  - match: {kinds: [Deployment], labelSelector: 'tier=web'}
    strategicMergePatch:
      spec:
        template:
          spec:
            containers:
              - name: web
                image: web:2
              - name: sidecar
                $patch: delete
  - match: {kinds: [Service]}
    mergePatch: {spec: {type: ClusterIP, loadBalancerIP: null}}
  - name: only-when-big
    match: {kinds: [Deployment]}
    jsonPatch:
      - {op: test, path: /spec/replicas, value: 10}
      - {op: add, path: /metadata/labels/big, value: 'yes'}
";

    #[test]
    fn rules_apply_in_order() {
        let t = parse(FILE).unwrap();
        assert_eq!(t.rules.len(), 5);
        assert_eq!(t.rules[0].at, "t.yaml:4:5");
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"tier": "web"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "s:1"}]}}}});
        let r = t
            .apply(
                &target("Deployment", "deployments", &["apps"], "shop"),
                &mut d,
            )
            .unwrap();
        assert_eq!(
            r,
            Applied::Changed(vec!["one-replica".into(), "rule 3".into()])
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "web:2", "ports": [{"containerPort": 80}]}])
        );
        assert!(
            d["metadata"]["labels"].get("big").is_none(),
            "failed test: not applied"
        );

        // Another namespace: the first rule does not match.
        let mut d2 = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {}}, "spec": {"replicas": 10}});
        let r = t
            .apply(
                &target("Deployment", "deployments", &["apps"], "other"),
                &mut d2,
            )
            .unwrap();
        assert_eq!(r, Applied::Changed(vec!["only-when-big".into()]));
        assert_eq!(d2["spec"]["replicas"], 10);
        assert_eq!(d2["metadata"]["labels"]["big"], "yes");

        let mut s =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "legacy-db"}});
        assert_eq!(
            t.apply(&target("Secret", "secrets", &[""], "shop"), &mut s)
                .unwrap(),
            Applied::Dropped("rule 2".into())
        );
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": "1.2.3.4", "ports": [{"port": 80}]}});
        t.apply(&target("Service", "services", &[""], "shop"), &mut svc)
            .unwrap();
        assert_eq!(
            svc["spec"],
            json!({"type": "ClusterIP", "ports": [{"port": 80}]})
        );
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse("apiVersion: lifeboat.io/v1\nkind: RestoreTransform\nrules:\n  - match: {kinds: [Secret]}\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("t.yaml:4:5") && s.contains("exactly one"), "{s}");
        let e = parse("apiVersion: lifeboat.io/v1\nkind: RestoreTransform\nrules:\n  - match: {kinds: [Secret], labelSelector: 'a in (b'}\n    drop: true\n").unwrap_err();
        assert!(e.to_string().contains("t.yaml:4:30"), "{e}");
        let e = parse("apiVersion: lifeboat.io/v1\nkind: RestoreTransform\nrules:\n  - match: {kinds: [Secret]}\n    jsonPatch:\n      - {op: frobnicate, path: /a}\n").unwrap_err();
        assert!(e.to_string().starts_with("t.yaml:6:"), "{e}");
        let e = parse("apiVersion: lifeboat.io/v1\nkind: RestoreTransform\nrules:\n  - match: {kinds: [Secret]}\n    dorp: true\n").unwrap_err();
        assert!(e.to_string().contains("t.yaml:5:"), "{e}");
        let e = parse("apiVersion: lifeboat.io/v1\nkind: RestoreTransform\nrules:\n  - match: {}\n    drop: true\n").unwrap_err();
        assert!(e.to_string().contains("match is empty"), "{e}");
    }

    #[test]
    fn a_patch_may_not_move_or_retype_an_object() {
        let t = parse("apiVersion: lifeboat.io/v1\nkind: RestoreTransform\nrules:\n  - match: {kinds: [ConfigMap]}\n    mergePatch: {metadata: {namespace: prod}}\n").unwrap();
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "dev"}});
        let e = t
            .apply(&target("ConfigMap", "configmaps", &[""], "dev"), &mut o)
            .unwrap_err();
        assert!(
            e.contains("namespace-map") && e.contains("t.yaml:4:5"),
            "{e}"
        );
        assert_eq!(o["metadata"]["namespace"], "dev");
    }

    #[test]
    fn strategic_merge_lists() {
        let mut d = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}],
            "finalizers": ["a"], "tolerations": [{"key": "x"}],
            "env": [{"name": "A", "value": "1"}]}});
        strategic_merge(
            &mut d,
            &json!({"spec": {
            "ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "$patch": "delete"}, {"port": 9090}],
            "finalizers": ["b", "a"], "tolerations": [{"key": "y"}],
            "env": {"$patch": "replace", "x": 1}}}),
        );
        assert_eq!(
            d["spec"]["ports"],
            json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 9090}])
        );
        assert_eq!(d["spec"]["finalizers"], json!(["a", "b"]));
        assert_eq!(d["spec"]["tolerations"], json!([{"key": "y"}]));
        assert_eq!(d["spec"]["env"], json!({"x": 1}));
    }

    #[test]
    fn globs() {
        assert!(glob("web-*", "web-1"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("web", "web-1"));
        assert!(glob("*-db-*", "shop-db-0"));
    }
}
