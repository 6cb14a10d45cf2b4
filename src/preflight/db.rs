//! The API deprecation database: `data/deprecations.yaml`, embedded at build time, plus any
//! `--api-data FILE` in the same format (docs/preflight.md).
use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::version::Minor;
use crate::error::Error;

/// The embedded database.
pub const EMBEDDED: &str = include_str!("../../data/deprecations.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataFile {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub data_version: Option<String>,
    pub entries: Vec<Entry>,
}

/// One API version of one kind that is deprecated (and usually removed) in some release.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Entry {
    /// API group, "" for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub deprecated_in: Minor,
    /// `None` when the removal is not scheduled yet (allowed in `--api-data` files only).
    #[serde(default)]
    pub removed_in: Option<Minor>,
    /// The apiVersion to migrate to; `None` when there is no replacement.
    #[serde(default)]
    pub replacement: Option<String>,
    #[serde(default)]
    pub replacement_available_in: Option<Minor>,
    /// Which product's versions `deprecatedIn`/`removedIn` refer to; default "kubernetes".
    #[serde(default)]
    pub component: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

impl Entry {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn is_kubernetes(&self) -> bool {
        self.component
            .as_deref()
            .is_none_or(|c| c == "kubernetes" || c == "k8s")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// Lookup by (apiVersion, kind).
#[derive(Debug, Default)]
pub struct Database {
    pub entries: Vec<Entry>,
    index: HashMap<(String, String), usize>,
}

/// Parse one data file; `name` is used in error messages (file:line:col).
pub fn parse(name: &Path, text: &str) -> Result<DataFile, Error> {
    let file: DataFile = crate::yaml::parse(name, text)?;
    if file.api_version != "lifeboat.io/v1" || file.kind != "APIDeprecationList" {
        return Err(Error::DataFile {
            path: name.to_owned(),
            location: "1:1".into(),
            message: format!(
                "expected apiVersion lifeboat.io/v1 and kind APIDeprecationList, got {} {}",
                file.api_version, file.kind
            ),
        });
    }
    Ok(file)
}

impl Database {
    pub fn embedded() -> Database {
        let file = parse(Path::new("data/deprecations.yaml"), EMBEDDED)
            .expect("embedded database is valid (tested)");
        let mut db = Database::default();
        db.add(file.entries);
        db
    }

    /// Add entries; a later entry for the same (apiVersion, kind) replaces an earlier one, so
    /// `--api-data` can correct the embedded data.
    pub fn add(&mut self, entries: Vec<Entry>) {
        for e in entries {
            let key = (e.api_version(), e.kind.clone());
            match self.index.get(&key) {
                Some(&i) => self.entries[i] = e,
                None => {
                    self.index.insert(key, self.entries.len());
                    self.entries.push(e);
                }
            }
        }
    }

    pub fn load_extra(&mut self, path: &Path) -> Result<(), Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        self.add(parse(path, &text)?.entries);
        Ok(())
    }

    pub fn lookup(&self, api_version: &str, kind: &str) -> Option<&Entry> {
        self.index
            .get(&(api_version.to_string(), kind.to_string()))
            .map(|&i| &self.entries[i])
    }

    /// Does any entry name this apiVersion (for any kind)? Cheap pre-check for metrics.
    pub fn by_group_version<'a>(
        &'a self,
        api_version: &'a str,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.api_version() == api_version)
    }

    /// Kinds (without `List` twins) that have at least one entry: what live scanning lists.
    pub fn kinds(&self) -> std::collections::BTreeSet<&str> {
        self.entries
            .iter()
            .map(|e| e.kind.as_str())
            .filter(|k| !k.ends_with("List"))
            .collect()
    }
}

/// How an entry affects an upgrade to `target`: removed by then (error), deprecated by then
/// (warning), or not yet (None). Entries of other components than Kubernetes are compared as if
/// the target were their newest release (see docs/preflight.md).
pub fn classify(e: &Entry, target: Minor) -> Option<Severity> {
    if !e.is_kubernetes() {
        return Some(if e.removed_in.is_some() {
            Severity::Error
        } else {
            Severity::Warning
        });
    }
    match e.removed_in {
        Some(r) if r <= target => Some(Severity::Error),
        _ if e.deprecated_in <= target => Some(Severity::Warning),
        _ => None,
    }
}

/// The resource (plural) name Kubernetes uses for a kind, for matching metrics labels.
pub fn plural(kind: &str) -> String {
    let l = kind.to_ascii_lowercase();
    if l == "endpoints" {
        l
    } else if let Some(stem) = l
        .strip_suffix('y')
        .filter(|s| !s.ends_with(['a', 'e', 'o', 'u']))
    {
        format!("{stem}ies")
    } else if l.ends_with('s') || l.ends_with('x') || l.ends_with("ch") || l.ends_with("sh") {
        format!("{l}es")
    } else {
        format!("{l}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kinds Kubernetes has (or had) in the groups the database covers.
    const KNOWN_KINDS: &[&str] = &[
        "APIService",
        "CSIDriver",
        "CSINode",
        "CSIStorageCapacity",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "ControllerRevision",
        "CronJob",
        "CustomResourceDefinition",
        "DaemonSet",
        "Deployment",
        "EndpointSlice",
        "Event",
        "FlowSchema",
        "HorizontalPodAutoscaler",
        "IPAddress",
        "Ingress",
        "IngressClass",
        "Lease",
        "LocalSubjectAccessReview",
        "MutatingWebhookConfiguration",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PodSecurityPolicy",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "ReplicaSet",
        "Role",
        "RoleBinding",
        "RuntimeClass",
        "SelfSubjectAccessReview",
        "SelfSubjectRulesReview",
        "ServiceCIDR",
        "StatefulSet",
        "StorageClass",
        "SubjectAccessReview",
        "TokenReview",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
        "VolumeAttributesClass",
    ];
    /// Create-only kinds: no List kind exists.
    const NO_LIST: &[&str] = &[
        "TokenReview",
        "SubjectAccessReview",
        "LocalSubjectAccessReview",
        "SelfSubjectAccessReview",
        "SelfSubjectRulesReview",
    ];

    #[test]
    fn embedded_database_is_consistent() {
        let file = parse(Path::new("data/deprecations.yaml"), EMBEDDED).unwrap();
        assert!(file.entries.len() > 100, "the database lost rows");
        let mut seen = std::collections::HashSet::new();
        for e in &file.entries {
            let what = format!("{}/{} {}", e.group, e.version, e.kind);
            assert!(
                seen.insert((e.group.clone(), e.version.clone(), e.kind.clone())),
                "duplicate entry {what}"
            );
            let item = e.kind.strip_suffix("List").unwrap_or(&e.kind);
            assert!(KNOWN_KINDS.contains(&item), "unknown kind name {what}");
            assert!(
                !(e.kind.ends_with("List") && NO_LIST.contains(&item)),
                "{what}: that kind has no List"
            );
            assert!(
                e.group.is_empty()
                    || e.group.contains('.')
                    || e.group == "extensions"
                    || e.group == "apps"
                    || e.group == "batch"
                    || e.group == "policy"
                    || e.group == "autoscaling",
                "odd group {what}"
            );
            assert!(
                e.version.starts_with('v') && e.version.contains("beta")
                    || e.version.contains("alpha"),
                "only pre-GA versions are removed: {what}"
            );
            assert_eq!(e.deprecated_in.major, 1, "{what}");
            let removed = e
                .removed_in
                .unwrap_or_else(|| panic!("{what}: removedIn missing"));
            assert!(
                removed >= e.deprecated_in,
                "{what}: removed {removed} before deprecated {}",
                e.deprecated_in
            );
            assert!(e.is_kubernetes(), "{what}");
            match (&e.replacement, e.replacement_available_in) {
                (Some(r), Some(since)) => {
                    assert_ne!(r, &e.api_version(), "{what}: replacement equals itself");
                    assert!(
                        r.matches('/').count() == 1 || !r.contains('/'),
                        "{what}: bad replacement {r}"
                    );
                    assert!(
                        since <= removed,
                        "{what}: replacement available only after removal"
                    );
                }
                (None, None) => assert!(e.note.is_some(), "{what}: no replacement needs a note"),
                _ => panic!("{what}: replacement and replacementAvailableIn go together"),
            }
            // Every listable kind has its List twin with the same data, and vice versa.
            if !NO_LIST.contains(&item) {
                let twin = if e.kind.ends_with("List") {
                    item.to_string()
                } else {
                    format!("{}List", e.kind)
                };
                let t = file
                    .entries
                    .iter()
                    .find(|x| x.group == e.group && x.version == e.version && x.kind == twin)
                    .unwrap_or_else(|| panic!("{what}: missing {twin}"));
                assert_eq!(
                    (
                        t.deprecated_in,
                        t.removed_in,
                        &t.replacement,
                        t.replacement_available_in
                    ),
                    (
                        e.deprecated_in,
                        e.removed_in,
                        &e.replacement,
                        e.replacement_available_in
                    ),
                    "{what} and {twin} differ"
                );
            }
        }
        // Every removal release of the migration guide is covered.
        let releases: std::collections::BTreeSet<String> = file
            .entries
            .iter()
            .filter_map(|e| e.removed_in)
            .map(|r| r.to_string())
            .collect();
        for r in ["1.16", "1.22", "1.25", "1.26", "1.27", "1.29", "1.32"] {
            assert!(releases.contains(r), "no removals for {r}");
        }
        // Spot checks against the guide.
        let db = Database::embedded();
        let e = db.lookup("networking.k8s.io/v1beta1", "Ingress").unwrap();
        assert_eq!(
            (e.removed_in, e.replacement.as_deref()),
            (Some(Minor::new(1, 22)), Some("networking.k8s.io/v1"))
        );
        let e = db
            .lookup("autoscaling/v2beta2", "HorizontalPodAutoscaler")
            .unwrap();
        assert_eq!(e.removed_in, Some(Minor::new(1, 26)));
        let e = db.lookup("policy/v1beta1", "PodSecurityPolicy").unwrap();
        assert_eq!(
            (e.removed_in, e.replacement.as_deref()),
            (Some(Minor::new(1, 25)), None)
        );
        let e = db
            .lookup("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema")
            .unwrap();
        assert_eq!(e.removed_in, Some(Minor::new(1, 32)));
        assert!(db.lookup("batch/v1beta1", "CronJobList").is_some());
    }

    #[test]
    fn api_data_files_are_validated_with_locations() {
        let bad = "apiVersion: lifeboat.io/v1\nkind: APIDeprecationList\nentries:\n  - group: cert-manager.io\n    version: v1alpha2\n    kind: Certificate\n    deprecatedIn: \"1.4\"\n    removedIn: \"1.6\"\n    replacment: cert-manager.io/v1\n";
        let err = parse(Path::new("extra.yaml"), bad).unwrap_err().to_string();
        assert!(err.starts_with("extra.yaml:9:"), "{err}");
        assert!(err.contains("replacment"), "{err}");
        let bad_version = "apiVersion: lifeboat.io/v1\nkind: APIDeprecationList\nentries:\n  - {group: x.io, version: v1, kind: X, deprecatedIn: \"one\"}\n";
        assert!(parse(Path::new("v.yaml"), bad_version).is_err());
    }

    #[test]
    fn plurals_match_kubernetes_resource_names() {
        for (k, p) in [
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("PodSecurityPolicy", "podsecuritypolicies"),
            ("Deployment", "deployments"),
            ("PriorityClass", "priorityclasses"),
            ("EndpointSlice", "endpointslices"),
            ("CronJob", "cronjobs"),
            ("StorageClass", "storageclasses"),
            ("FlowSchema", "flowschemas"),
            ("Endpoints", "endpoints"),
        ] {
            assert_eq!(plural(k), p);
        }
    }

    #[test]
    fn classification_against_target() {
        let e = Entry {
            group: "extensions".into(),
            version: "v1beta1".into(),
            kind: "Ingress".into(),
            deprecated_in: Minor::new(1, 14),
            removed_in: Some(Minor::new(1, 22)),
            replacement: Some("networking.k8s.io/v1".into()),
            replacement_available_in: Some(Minor::new(1, 19)),
            component: None,
            note: None,
        };
        assert_eq!(classify(&e, Minor::new(1, 13)), None);
        assert_eq!(classify(&e, Minor::new(1, 14)), Some(Severity::Warning));
        assert_eq!(classify(&e, Minor::new(1, 21)), Some(Severity::Warning));
        assert_eq!(classify(&e, Minor::new(1, 22)), Some(Severity::Error));
        assert_eq!(classify(&e, Minor::new(1, 30)), Some(Severity::Error));
    }
}
