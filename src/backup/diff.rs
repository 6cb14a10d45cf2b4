//! `lifeboat backup diff A B` and `backup diff A --live`: which objects were added, removed or
//! changed between two backups (or a backup and the cluster as it is now), and which fields of
//! each changed object. Secret values are never shown (only the paths); other values only with
//! `--values`. Fields every write changes (resourceVersion, generation, managedFields,
//! status, kubectl's last-applied annotation) are not differences. docs/backup.md#diff.
use std::collections::BTreeMap;
use std::io::Write;

use kube::api::{DynamicObject, ListParams};
use kube::discovery::Scope;
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::repo::Repository;
use crate::repo::snapshot::{Snapshot, TreeEntry};

#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Only these namespaces (empty: all of the backup's).
    pub namespaces: Vec<String>,
    /// Only these resources (`resource[.group]`).
    pub include_resources: Vec<String>,
    /// Show old and new values of changed fields (never for Secrets).
    pub values: bool,
    /// Compare `status` too.
    pub status: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub kind: String,
    pub api_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{}/{}", self.kind, ns, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// `.spec.replicas`, `.spec.template.spec.containers[0].image`, `.data['key.txt']`.
    pub path: String,
    pub change: ChangeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedObject {
    #[serde(flatten)]
    pub object: ObjectRef,
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    /// Backup id of A.
    pub from: String,
    /// Backup id of B, or `live`.
    pub to: String,
    pub added: Vec<ObjectRef>,
    pub removed: Vec<ObjectRef>,
    pub changed: Vec<ChangedObject>,
    pub unchanged: usize,
    /// Objects that could not be read (from the repository or the cluster): not compared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

impl DiffReport {
    pub fn has_differences(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
    }
}

type Key = (String, String, Option<String>, String); // (group, resource, namespace, name)

fn key(e: &TreeEntry) -> Key {
    (
        e.group.clone(),
        e.resource.clone(),
        e.namespace.clone(),
        e.name.clone(),
    )
}

fn object_ref(e: &TreeEntry) -> ObjectRef {
    ObjectRef {
        kind: e.kind.clone(),
        api_version: e.api_version(),
        namespace: e.namespace.clone(),
        name: e.name.clone(),
    }
}

fn selected(e: &TreeEntry, o: &DiffOptions) -> bool {
    let ns_ok = o.namespaces.is_empty()
        || e.namespace
            .as_ref()
            .is_some_and(|ns| o.namespaces.contains(ns));
    let res_ok = o.include_resources.is_empty()
        || o.include_resources.iter().any(|p| {
            let p = p.trim().to_ascii_lowercase();
            let (n, g) = match p.split_once('.') {
                Some((n, g)) => (n.to_string(), Some(g.to_string())),
                None => (p.clone(), None),
            };
            (e.resource == n || e.kind.to_ascii_lowercase() == n)
                && g.is_none_or(|g| g == e.group || (g == "core" && e.group.is_empty()))
        });
    ns_ok && res_ok
}

/// Fields that change without anyone changing the object.
fn normalize(mut v: Value, status: bool) -> Value {
    if let Some(m) = v.as_object_mut() {
        if !status {
            m.remove("status");
        }
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in ["resourceVersion", "generation", "managedFields"] {
                meta.remove(f);
            }
            if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
                if a.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    v
}

fn path_key(parent: &str, k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !k.starts_with(|c: char| c.is_ascii_digit())
    {
        format!("{parent}.{k}")
    } else {
        format!("{parent}['{k}']")
    }
}

/// The changed paths between `a` and `b` (objects compared key by key, arrays index by index;
/// a changed scalar or type is one change at its path).
pub fn field_changes(a: &Value, b: &Value, with_values: bool) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", a, b, with_values, &mut out);
    out
}

/// One key or index: present on both sides (compare deeper), or added, or removed.
fn one(p: String, a: Option<&Value>, b: Option<&Value>, vals: bool, out: &mut Vec<FieldChange>) {
    let val = |v: &Value| vals.then(|| v.clone());
    match (a, b) {
        (Some(va), Some(vb)) => walk(&p, va, vb, vals, out),
        (Some(va), None) => out.push(FieldChange {
            path: p,
            change: ChangeKind::Removed,
            from: val(va),
            to: None,
        }),
        (None, Some(vb)) => out.push(FieldChange {
            path: p,
            change: ChangeKind::Added,
            from: None,
            to: val(vb),
        }),
        (None, None) => {}
    }
}

fn walk(path: &str, a: &Value, b: &Value, vals: bool, out: &mut Vec<FieldChange>) {
    let val = |v: &Value| vals.then(|| v.clone());
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                one(path_key(path, k), x.get(k), y.get(k), vals, out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                one(format!("{path}[{i}]"), x.get(i), y.get(i), vals, out);
            }
        }
        _ if a == b => {}
        _ => out.push(FieldChange {
            path: if path.is_empty() {
                ".".into()
            } else {
                path.into()
            },
            change: ChangeKind::Changed,
            from: val(a),
            to: val(b),
        }),
    }
}

/// Objects of one side: entry → object (`None`: unreadable).
struct Side {
    objects: BTreeMap<Key, (TreeEntry, Option<Value>)>,
}

async fn load_backup(
    repo: &Repository,
    snap: &Snapshot,
    opts: &DiffOptions,
    load: bool,
) -> Result<Side, Error> {
    let entries = repo.snapshot_entries(snap).await?;
    let mut objects = BTreeMap::new();
    for e in entries.into_iter().filter(|e| selected(e, opts)) {
        let v = if load {
            repo.read_blob_json::<Value>(&e.blob).await.ok()
        } else {
            None
        };
        objects.insert(key(&e), (e, v));
    }
    Ok(Side { objects })
}

fn compare(
    from: String,
    to: String,
    a: &Side,
    b: &Side,
    opts: &DiffOptions,
    same_blob: impl Fn(&TreeEntry, &TreeEntry) -> bool,
    mut read: impl FnMut(&TreeEntry, &Option<Value>) -> Option<Value>,
) -> DiffReport {
    let mut r = DiffReport {
        from,
        to,
        added: vec![],
        removed: vec![],
        changed: vec![],
        unchanged: 0,
        unreadable: vec![],
    };
    for (k, (ea, va)) in &a.objects {
        match b.objects.get(k) {
            None => r.removed.push(object_ref(ea)),
            Some((eb, _)) if same_blob(ea, eb) => r.unchanged += 1,
            Some((eb, vb)) => {
                let (Some(x), Some(y)) = (read(ea, va), read(eb, vb)) else {
                    r.unreadable.push(ea.display());
                    continue;
                };
                let secret = ea.group.is_empty() && ea.resource == "secrets";
                let x = normalize(x, opts.status);
                let y = normalize(y, opts.status);
                let fields = field_changes(&x, &y, opts.values && !secret);
                if fields.is_empty() {
                    r.unchanged += 1;
                } else {
                    r.changed.push(ChangedObject {
                        object: object_ref(eb),
                        fields,
                    });
                }
            }
        }
    }
    for (k, (eb, _)) in &b.objects {
        if !a.objects.contains_key(k) {
            r.added.push(object_ref(eb));
        }
    }
    r
}

/// Two backups of one repository. Objects stored as the same blob are identical (content
/// addressed); only the others are read.
pub async fn backups(
    repo: &Repository,
    a: &str,
    b: &str,
    opts: &DiffOptions,
) -> Result<DiffReport, Error> {
    let (ida, sa) = repo.find_snapshot(a).await?;
    let (idb, sb) = repo.find_snapshot(b).await?;
    let side_a = load_backup(repo, &sa, opts, false).await?;
    let side_b = load_backup(repo, &sb, opts, false).await?;
    // Blobs of changed objects, read after the comparison decides which are needed.
    let mut need = Vec::new();
    for (k, (ea, _)) in &side_a.objects {
        if let Some((eb, _)) = side_b.objects.get(k)
            && ea.blob != eb.blob
        {
            need.push(ea.blob);
            need.push(eb.blob);
        }
    }
    let mut cache: std::collections::HashMap<crate::repo::crypto::BlobId, Value> =
        std::collections::HashMap::new();
    for id in need {
        if let std::collections::hash_map::Entry::Vacant(v) = cache.entry(id)
            && let Ok(o) = repo.read_blob_json::<Value>(&id).await
        {
            v.insert(o);
        }
    }
    Ok(compare(
        ida,
        idb,
        &side_a,
        &side_b,
        opts,
        |x, y| x.blob == y.blob,
        |e, _| cache.get(&e.blob).cloned(),
    ))
}

/// A backup and the cluster now: the backup's types are listed again (at the version the
/// backup stored, or the served preferred version), in the backup's namespaces, with the
/// backup's label selector and its rules for objects a controller owns.
pub async fn live(
    repo: &Repository,
    client: &kube::Client,
    a: &str,
    opts: &DiffOptions,
) -> Result<DiffReport, Error> {
    let (ida, sa) = repo.find_snapshot(a).await?;
    let side_a = load_backup(repo, &sa, opts, true).await?;
    let namespaces: Vec<String> = if !opts.namespaces.is_empty() {
        opts.namespaces.clone()
    } else {
        sa.selectors.namespaces.clone()
    };
    let types = super::discover(client).await?;
    // The types to list: every type the backup holds objects of, plus every type the backup's
    // selectors would have taken (objects of a new type are additions too).
    let in_backup: std::collections::BTreeSet<(String, String)> = side_a
        .objects
        .values()
        .map(|(e, _)| (e.group.clone(), e.resource.clone()))
        .collect();
    let includes: Vec<super::ResourcePattern> = sa
        .selectors
        .include_resources
        .iter()
        .chain(opts.include_resources.iter())
        .map(|s| super::ResourcePattern::parse(s))
        .collect();
    let excludes: Vec<super::ResourcePattern> = sa
        .selectors
        .exclude_resources
        .iter()
        .map(|s| super::ResourcePattern::parse(s))
        .collect();
    let label_selector = sa.selectors.label_selector.clone();
    let mut side_b = Side {
        objects: BTreeMap::new(),
    };
    let mut unreadable = Vec::new();
    for (ar, caps) in types {
        let held = in_backup.contains(&(ar.group.clone(), ar.plural.clone()));
        let would_take = (includes.is_empty() || includes.iter().any(|p| p.matches(&ar)))
            && !excludes.iter().any(|p| p.matches(&ar))
            && !(sa.selectors.default_excludes && super::default_excluded(&ar));
        let cluster_scoped = caps.scope == Scope::Cluster;
        // Cluster-scoped types are compared only when the backup took all of them.
        let cluster_all = sa.selectors.include_cluster_resources == "true"
            || (sa.selectors.include_cluster_resources == "auto"
                && sa.selectors.namespaces.is_empty());
        if !held && !(would_take && (!cluster_scoped || cluster_all)) {
            continue;
        }
        if cluster_scoped && !opts.namespaces.is_empty() {
            continue;
        }
        // Compare at the version the backup stored when it is still served.
        let stored_version = side_a
            .objects
            .values()
            .find(|(e, _)| e.group == ar.group && e.resource == ar.plural)
            .map(|(e, _)| e.version.clone());
        let mut ar = ar;
        if let Some(v) = stored_version
            && v != ar.version
        {
            ar.version = v.clone();
            ar.api_version = if ar.group.is_empty() {
                v
            } else {
                format!("{}/{}", ar.group, v)
            };
        }
        let scopes: Vec<Option<&str>> = if cluster_scoped || namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        for scope in scopes {
            // Raw JSON, as the backup stores it (no round trip through typed metadata).
            let url = <DynamicObject as kube::Resource>::url_path(&ar, scope);
            let mut lp = ListParams::default().limit(500);
            if let Some(s) = &label_selector {
                lp = lp.labels(s);
            }
            loop {
                let page: Result<Value, String> = match kube::core::Request::new(&url).list(&lp) {
                    Ok(req) => client
                        .request::<Value>(req)
                        .await
                        .map_err(|e| crate::error::display_chain(&e)),
                    Err(e) => Err(e.to_string()),
                };
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        unreadable.push(format!("{}: {e}", super::group_resource(&ar)));
                        break;
                    }
                };
                for o in page["items"].as_array().cloned().unwrap_or_default() {
                    let v = super::prepare(&ar, o);
                    if sa.selectors.default_excludes && super::owned_by_controller(&ar, &v) {
                        continue;
                    }
                    let e = TreeEntry {
                        group: ar.group.clone(),
                        version: ar.version.clone(),
                        resource: ar.plural.clone(),
                        kind: ar.kind.clone(),
                        namespace: if cluster_scoped {
                            None
                        } else {
                            v["metadata"]["namespace"].as_str().map(String::from)
                        },
                        name: v["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        blob: crate::repo::crypto::BlobId([0; 32]),
                        size: 0,
                    };
                    if !selected(&e, opts) {
                        continue;
                    }
                    // A namespace-scoped backup holds only its namespaces' Namespace objects.
                    if !namespaces.is_empty()
                        && e.group.is_empty()
                        && e.resource == "namespaces"
                        && !namespaces.contains(&e.name)
                    {
                        continue;
                    }
                    side_b.objects.insert(key(&e), (e, Some(v)));
                }
                match page["metadata"]["continue"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                {
                    Some(c) => lp = lp.continue_token(c),
                    None => break,
                }
            }
        }
    }
    let mut r = compare(
        ida,
        "live".into(),
        &side_a,
        &side_b,
        opts,
        |_, _| false,
        |_, v| v.clone(),
    );
    r.unreadable.extend(unreadable);
    Ok(r)
}

impl crate::output::Render for DiffReport {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let short = |s: &str| {
            if s.len() == 64 {
                s[..8].to_string()
            } else {
                s.to_string()
            }
        };
        for o in &self.added {
            writeln!(w, "+ {}", o.display())?;
        }
        for o in &self.removed {
            writeln!(w, "- {}", o.display())?;
        }
        for c in &self.changed {
            writeln!(w, "~ {}", c.object.display())?;
            for f in &c.fields {
                let sign = match f.change {
                    ChangeKind::Added => "+",
                    ChangeKind::Removed => "-",
                    ChangeKind::Changed => "~",
                };
                let vals = match (&f.from, &f.to) {
                    (None, None) => String::new(),
                    (a, b) => format!(
                        ": {} -> {}",
                        a.as_ref().map(brief).unwrap_or_else(|| "(none)".into()),
                        b.as_ref().map(brief).unwrap_or_else(|| "(none)".into())
                    ),
                };
                writeln!(w, "    {sign} {}{vals}", f.path)?;
            }
        }
        for u in &self.unreadable {
            writeln!(w, "! {u}: not compared (cannot be read)")?;
        }
        writeln!(
            w,
            "{} → {}: {} added, {} removed, {} changed, {} unchanged",
            short(&self.from),
            short(&self.to),
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.unchanged
        )
    }
}

fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(79).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_of_changes() {
        let a = json!({"metadata": {"name": "w", "resourceVersion": "1", "labels": {"app.kubernetes.io/v": "1"}},
                       "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "a:1"}]}}},
                       "status": {"ready": 2}});
        let b = json!({"metadata": {"name": "w", "resourceVersion": "9", "labels": {"app.kubernetes.io/v": "2"}},
                       "spec": {"replicas": 3, "paused": true, "template": {"spec": {"containers": [{"image": "a:2"}, {"image": "s"}]}}},
                       "status": {"ready": 0}});
        let f = field_changes(&normalize(a, false), &normalize(b, false), false);
        let paths: Vec<(&str, ChangeKind)> =
            f.iter().map(|c| (c.path.as_str(), c.change)).collect();
        assert_eq!(
            paths,
            [
                (
                    ".metadata.labels['app.kubernetes.io/v']",
                    ChangeKind::Changed
                ),
                (".spec.paused", ChangeKind::Added),
                (".spec.replicas", ChangeKind::Changed),
                (
                    ".spec.template.spec.containers[0].image",
                    ChangeKind::Changed
                ),
                (".spec.template.spec.containers[1]", ChangeKind::Added),
            ]
        );
        assert!(f.iter().all(|c| c.from.is_none() && c.to.is_none()));
    }

    #[test]
    fn values_only_when_asked() {
        let f = field_changes(&json!({"a": 1}), &json!({"a": 2}), true);
        assert_eq!(f[0].from, Some(json!(1)));
        assert_eq!(f[0].to, Some(json!(2)));
    }
}
