//! Live objects: which apiVersion did clients actually use? Read from the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation and from
//! `metadata.managedFields[].apiVersion` — not from the version the server converts to when we
//! read (that is where other tools get false positives and negatives). Only the resource types
//! whose kind appears in the database are listed, metadata-only and paginated.
use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiResource, Discovery, verbs};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

use super::db::{self, Database, Severity};
use super::version::Minor;
use super::{Evidence, EvidenceSource, Finding, Source, Usage, api_message};
use crate::error::Error;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const PAGE: u32 = 500;

#[derive(serde::Deserialize)]
struct LastApplied {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

/// Served, listable resource types whose kind has database entries, and every apiVersion the
/// cluster serves ("v1", "apps/v1", …).
pub async fn resources_for_kinds(
    client: &kube::Client,
    kinds: &BTreeSet<&str>,
) -> Result<(Vec<ApiResource>, BTreeSet<String>), Error> {
    let discovery = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .map_err(|source| Error::Discovery { source })?;
    let mut out = Vec::new();
    let mut served = BTreeSet::new();
    for group in discovery.groups() {
        for v in group.versions() {
            served.insert(if group.name().is_empty() {
                v.to_string()
            } else {
                format!("{}/{v}", group.name())
            });
        }
        for (ar, caps) in group.recommended_resources() {
            if kinds.contains(ar.kind.as_str()) && caps.supports_operation(verbs::LIST) {
                out.push(ar);
            }
        }
    }
    Ok((out, served))
}

/// Returns (findings, objects scanned, notes).
pub async fn scan(
    client: &kube::Client,
    db: &Database,
    target: Minor,
) -> Result<(Vec<Finding>, usize, Vec<String>), Error> {
    let kinds = db.kinds();
    let (resources, served) = resources_for_kinds(client, &kinds).await?;
    let served = &served;
    let mut notes = Vec::new();
    let results: Vec<_> = futures::stream::iter(resources)
        .map(|ar| async move {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let mut found = Vec::new();
            let mut scanned = 0usize;
            let mut lp = ListParams::default().limit(PAGE);
            loop {
                let page = match api.list_metadata(&lp).await {
                    Ok(p) => p,
                    // Deleted between discovery and this LIST: nothing left to scan.
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        return Ok::<_, Error>((found, scanned, None));
                    }
                    Err(kube::Error::Api(s)) if s.code == 403 => {
                        return Ok::<_, Error>((
                            found,
                            scanned,
                            Some(format!("live {}: not listed ({})", ar.plural, s.message)),
                        ));
                    }
                    Err(source) => {
                        return Err(Error::Kube {
                            action: format!("list {}", ar.plural),
                            source,
                        });
                    }
                };
                for obj in &page.items {
                    scanned += 1;
                    found.extend(object_findings(db, target, &ar.kind, &obj.metadata, served));
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => lp = lp.continue_token(&c),
                    None => break,
                }
            }
            Ok((found, scanned, None))
        })
        .buffer_unordered(4)
        .try_collect()
        .await?;
    let mut findings = Vec::new();
    let mut total = 0;
    for (f, n, note) in results {
        findings.extend(f);
        total += n;
        notes.extend(note);
    }
    Ok((findings, total, notes))
}

/// Kinds that only controllers and components write, or that copy their owner's annotations
/// (the DaemonSet and StatefulSet controllers copy them into every ControllerRevision): their
/// last-applied annotation is never evidence of how a client wrote them.
const CONTROLLER_WRITTEN: &[&str] = &["ControllerRevision", "EndpointSlice", "Event", "Lease"];

/// Is this object written by a controller (a controller-written kind, or a controller owner
/// such as the Deployment of a ReplicaSet or the ReplicaSet of a Pod)?
fn controller_written(kind: &str, meta: &ObjectMeta) -> bool {
    CONTROLLER_WRITTEN.contains(&kind)
        || meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true))
}

/// The apiVersion the object's own last `kubectl apply` used, with its evidence; `None` when
/// there is no annotation, it is of another kind, or the object is controller-written.
fn last_applied_evidence(
    kind: &str,
    meta: &ObjectMeta,
    served: &BTreeSet<String>,
) -> Option<(String, Evidence)> {
    if controller_written(kind, meta) {
        return None;
    }
    let la = meta.annotations.as_ref()?.get(LAST_APPLIED)?;
    let LastApplied {
        api_version: Some(v),
        kind: Some(k),
    } = serde_json::from_str::<LastApplied>(la).ok()?
    else {
        return None;
    };
    if k != kind {
        return None;
    }
    let (usage, reason) = if served.contains(&v) {
        (
            Usage::Current,
            format!("the last kubectl apply used {v}, which the cluster serves"),
        )
    } else {
        (
            Usage::Historical,
            format!("last applied with {v} before the cluster stopped serving it"),
        )
    };
    Some((
        v,
        Evidence {
            source: EvidenceSource::LastApplied,
            manager: None,
            operation: None,
            time: None,
            usage,
            reason,
        },
    ))
}

/// Classify one managedFields entry. An Update manager's apiVersion is part of its identity, so
/// its old entries stay after it moved on: an entry is history when the cluster no longer serves
/// its apiVersion, or when the same manager has a later entry with another apiVersion.
fn managed_fields_evidence(
    mf: &ManagedFieldsEntry,
    all: &[ManagedFieldsEntry],
    served: &BTreeSet<String>,
) -> Option<(String, Evidence)> {
    let v = mf.api_version.clone()?;
    let manager = mf.manager.clone().unwrap_or_else(|| "?".into());
    let superseded = all.iter().find(|o| {
        o.manager == mf.manager
            && o.api_version.is_some()
            && o.api_version != mf.api_version
            && matches!((&o.time, &mf.time), (Some(later), Some(t)) if later > t)
    });
    let (usage, reason) = if !served.contains(&v) {
        (
            Usage::Historical,
            format!("the cluster no longer serves {v}"),
        )
    } else if let Some(o) = superseded {
        (
            Usage::Historical,
            format!(
                "superseded: manager {manager} wrote with {} at {}",
                o.api_version.as_deref().unwrap_or("?"),
                o.time.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
            ),
        )
    } else {
        (
            Usage::Current,
            format!("manager {manager}'s latest entry uses {v}, which the cluster serves"),
        )
    };
    Some((
        v,
        Evidence {
            source: EvidenceSource::ManagedFields,
            manager: Some(manager),
            operation: mf.operation.clone(),
            time: mf.time.as_ref().map(|t| t.0.to_string()),
            usage,
            reason,
        },
    ))
}

/// The findings for one object: one per old apiVersion it was written with, `current` when any
/// evidence shows use today (severity from the database), else `historical` (info). `served`:
/// the apiVersions the cluster serves today.
pub fn object_findings(
    db: &Database,
    target: Minor,
    kind: &str,
    meta: &ObjectMeta,
    served: &BTreeSet<String>,
) -> Vec<Finding> {
    // apiVersion -> how we know it was used
    let mut used: BTreeMap<String, Vec<Evidence>> = BTreeMap::new();
    if let Some((v, ev)) = last_applied_evidence(kind, meta, served) {
        used.entry(v).or_default().push(ev);
    }
    let all = meta.managed_fields.as_deref().unwrap_or_default();
    for mf in all {
        if let Some((v, ev)) = managed_fields_evidence(mf, all, served) {
            let e = used.entry(v).or_default();
            if !e.contains(&ev) {
                e.push(ev);
            }
        }
    }
    let mut out = Vec::new();
    for (api_version, evidence) in used {
        let Some(e) = db.lookup(&api_version, kind) else {
            continue;
        };
        let Some(sev) = db::classify(e, target) else {
            continue;
        };
        let usage = evidence
            .iter()
            .map(|e| e.usage)
            .max()
            .unwrap_or(Usage::Historical);
        let reasons = evidence
            .iter()
            .filter(|e| e.usage == usage)
            .map(|e| e.reason.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let (sev, message) = match usage {
            Usage::Current => (
                sev,
                format!(
                    "{} (written as {api_version}: {reasons})",
                    api_message(e, sev, target)
                ),
            ),
            Usage::Historical => (
                Severity::Info,
                format!(
                    "historical use only, not a blocker: {} (written as {api_version} in the past: {reasons})",
                    api_message(e, sev, target)
                ),
            ),
        };
        let mut f = Finding::for_entry(Source::Live, e, sev, message);
        f.namespace = meta.namespace.clone();
        f.name = meta.name.clone();
        f.usage = Some(usage);
        f.evidence = evidence;
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::db::Severity;
    use crate::preflight::{EvidenceSource, Usage};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    fn meta(v: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(v).unwrap()
    }

    fn served(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn last_applied(api_version: &str, kind: &str) -> String {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "web"}}).to_string()
    }

    /// The StatefulSet controller copies the StatefulSet's annotations into every
    /// ControllerRevision: an `apps/v1beta1 StatefulSet` annotation is not evidence of an
    /// `apps/v1beta1 ControllerRevision`.
    #[test]
    fn controller_revisions_do_not_inherit_the_owners_last_applied_version() {
        let db = Database::embedded();
        let rev = meta(json!({
            "name": "web-6d4f7c9b8", "namespace": "shop",
            "annotations": {LAST_APPLIED: last_applied("apps/v1beta1", "StatefulSet")},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                 "uid": "u1", "controller": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "apps/v1", "time": "2026-01-01T00:00:00Z"}]
        }));
        let served = served(&["apps/v1", "apps/v1beta1"]);
        let f = object_findings(&db, Minor::new(1, 35), "ControllerRevision", &rev, &served);
        assert!(f.is_empty(), "{f:#?}");
        // Even if an annotation of the same kind were copied: controller-written kinds carry no
        // last-applied evidence.
        let rev = meta(json!({
            "name": "web-6d4f7c9b8", "namespace": "shop",
            "annotations": {LAST_APPLIED: last_applied("apps/v1beta1", "ControllerRevision")},
        }));
        let f = object_findings(&db, Minor::new(1, 35), "ControllerRevision", &rev, &served);
        assert!(f.is_empty(), "{f:#?}");
    }

    /// A ReplicaSet owned by a Deployment (any object with a controller owner) is written by
    /// its controller, whatever annotation it carries.
    #[test]
    fn controller_owned_objects_carry_no_last_applied_evidence() {
        let db = Database::embedded();
        let rs = meta(json!({
            "name": "web-abc", "namespace": "shop",
            "annotations": {LAST_APPLIED: last_applied("extensions/v1beta1", "ReplicaSet")},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                 "uid": "u1", "controller": true}],
        }));
        let served = served(&["apps/v1", "extensions/v1beta1"]);
        let f = object_findings(&db, Minor::new(1, 35), "ReplicaSet", &rs, &served);
        assert!(f.is_empty(), "{f:#?}");
    }

    /// The annotation's own kind decides: a kind-less or other-kind annotation says nothing
    /// about this object.
    #[test]
    fn last_applied_of_another_kind_is_not_attributed_to_the_object() {
        let db = Database::embedded();
        let served = served(&["apps/v1", "apps/v1beta1"]);
        for la in [
            last_applied("apps/v1beta1", "StatefulSet"),
            json!({"apiVersion": "apps/v1beta1"}).to_string(),
        ] {
            let m = meta(
                json!({"name": "web", "namespace": "shop", "annotations": {LAST_APPLIED: la}}),
            );
            let f = object_findings(&db, Minor::new(1, 35), "Deployment", &m, &served);
            assert!(f.is_empty(), "{f:#?}");
        }
    }

    /// The user's own last apply, with a version the cluster still serves, is current use: an
    /// error at a target that removed it, with the evidence in the finding.
    #[test]
    fn current_last_applied_is_an_error_with_its_evidence() {
        let db = Database::embedded();
        let m = meta(json!({
            "name": "web", "namespace": "shop",
            "annotations": {LAST_APPLIED: last_applied("extensions/v1beta1", "Deployment")},
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                               "apiVersion": "extensions/v1beta1", "time": "2019-05-01T10:00:00Z"}]
        }));
        let served = served(&["apps/v1", "extensions/v1beta1"]);
        let f = object_findings(&db, Minor::new(1, 16), "Deployment", &m, &served);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].usage, Some(Usage::Current));
        assert_eq!(f[0].evidence.len(), 2, "{:#?}", f[0].evidence);
        assert_eq!(f[0].evidence[0].source, EvidenceSource::LastApplied);
        assert_eq!(f[0].evidence[0].usage, Usage::Current);
        let mf = &f[0].evidence[1];
        assert_eq!(mf.source, EvidenceSource::ManagedFields);
        assert_eq!(mf.manager.as_deref(), Some("kubectl-client-side-apply"));
        assert_eq!(mf.operation.as_deref(), Some("Update"));
        assert_eq!(mf.time.as_deref(), Some("2019-05-01T10:00:00Z"));
        let json = serde_json::to_value(&f[0]).unwrap();
        assert_eq!(json["usage"], "current");
        assert_eq!(json["evidence"][0]["source"], "lastApplied");
        assert_eq!(json["evidence"][1]["manager"], "kubectl-client-side-apply");
    }

    /// An apiVersion the cluster no longer serves cannot be used by anyone today: the
    /// annotation and managedFields that name it are history (info, never an error).
    #[test]
    fn versions_the_cluster_no_longer_serves_are_historical() {
        let db = Database::embedded();
        let m = meta(json!({
            "name": "web", "namespace": "shop",
            "annotations": {LAST_APPLIED: last_applied("apps/v1beta1", "StatefulSet")},
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                               "apiVersion": "apps/v1beta1", "time": "2019-05-01T10:00:00Z"}]
        }));
        let served = served(&["apps/v1"]);
        let f = object_findings(&db, Minor::new(1, 35), "StatefulSet", &m, &served);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].severity, Severity::Info);
        assert_eq!(f[0].usage, Some(Usage::Historical));
        assert!(f[0].evidence.iter().all(|e| e.usage == Usage::Historical));
        assert!(f[0].message.contains("historical"), "{}", f[0].message);
    }

    /// An Update manager's apiVersion is part of its identity, so an old entry stays after the
    /// manager moved on: an entry superseded by a later one of the same manager is history.
    #[test]
    fn managed_fields_superseded_by_the_same_manager_are_historical() {
        let db = Database::embedded();
        let m = meta(json!({
            "name": "web", "namespace": "shop",
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update",
                 "apiVersion": "autoscaling/v2beta2", "time": "2022-01-01T00:00:00Z"},
                {"manager": "kube-controller-manager", "operation": "Update",
                 "apiVersion": "autoscaling/v2", "time": "2022-06-01T00:00:00Z"}
            ]
        }));
        // A 1.25 cluster still serves autoscaling/v2beta2 (removed in 1.26).
        let served = served(&["autoscaling/v1", "autoscaling/v2", "autoscaling/v2beta2"]);
        let f = object_findings(
            &db,
            Minor::new(1, 26),
            "HorizontalPodAutoscaler",
            &m,
            &served,
        );
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].api_version, "autoscaling/v2beta2");
        assert_eq!(f[0].severity, Severity::Info);
        assert_eq!(f[0].usage, Some(Usage::Historical));
        assert!(
            f[0].evidence[0].reason.contains("autoscaling/v2"),
            "{:#?}",
            f[0].evidence
        );
        // The same entry alone (nothing newer from its manager) is current use.
        let m = meta(json!({
            "name": "web", "namespace": "shop",
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update",
                 "apiVersion": "autoscaling/v2beta2", "time": "2022-01-01T00:00:00Z"}
            ]
        }));
        let f = object_findings(
            &db,
            Minor::new(1, 26),
            "HorizontalPodAutoscaler",
            &m,
            &served,
        );
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].usage, Some(Usage::Current));
    }
}
