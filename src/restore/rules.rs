//! Restore rules: order, stripping of server-populated fields, namespace mapping. Pure functions
//! over JSON objects; every rule is listed in docs/restore.md and has a unit test here.
use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Restore phase of a `group/resource`: lower first.
pub fn phase(group: &str, resource: &str) -> u8 {
    match (group, resource) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => 0,
        ("", "namespaces") => 1,
        ("storage.k8s.io", "storageclasses")
        | ("scheduling.k8s.io", "priorityclasses")
        | ("node.k8s.io", "runtimeclasses") => 2,
        ("", "persistentvolumes") => 3,
        ("", "persistentvolumeclaims") => 4,
        ("", "serviceaccounts" | "secrets" | "configmaps" | "limitranges" | "resourcequotas") => 5,
        (
            "rbac.authorization.k8s.io",
            "clusterroles" | "clusterrolebindings" | "roles" | "rolebindings",
        ) => 6,
        // Before any workload: pods never start unprotected.
        ("", "services") | ("networking.k8s.io", "networkpolicies") => 7,
        ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets")
        | ("batch", "jobs" | "cronjobs")
        | ("", "pods" | "replicationcontrollers") => 8,
        ("admissionregistration.k8s.io", _) | ("apiregistration.k8s.io", "apiservices") => 10,
        _ => 9,
    }
}

/// Groups whose types are built into Kubernetes (their status is owned by controllers).
pub fn is_builtin_group(group: &str) -> bool {
    group.is_empty()
        || group.ends_with(".k8s.io")
        || matches!(
            group,
            "apps" | "batch" | "autoscaling" | "policy" | "extensions"
        )
}

/// Options that change how objects are rewritten.
#[derive(Debug, Clone, Default)]
pub struct RewriteOptions {
    pub namespace_map: BTreeMap<String, String>,
    pub preserve_nodeports: bool,
    pub restore_id: String,
    /// Restore finished Jobs and Jobs created by CronJobs too (`--restore-finished-jobs`).
    pub restore_finished_jobs: bool,
    /// `--storage-class-map OLD=NEW`: claims, claim templates and PVs of class OLD use NEW.
    pub storage_class_map: BTreeMap<String, String>,
}

impl RewriteOptions {
    fn map_class(&self, spec: &mut Value) {
        if let Some(c) = spec["storageClassName"].as_str()
            && let Some(new) = self.storage_class_map.get(c)
        {
            spec["storageClassName"] = Value::String(new.clone());
        }
    }

    pub fn map_ns<'a>(&'a self, ns: &'a str) -> &'a str {
        self.namespace_map.get(ns).map(String::as_str).unwrap_or(ns)
    }
}

pub const RESTORE_LABEL: &str = "lifeboat.io/restore";

const STRIP_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
];

/// Why an object is not restored at all (None: restore it).
pub fn skip_reason(group: &str, resource: &str, obj: &Value, o: &RewriteOptions) -> Option<String> {
    if (group, resource) == ("batch", "jobs") && !o.restore_finished_jobs {
        let owner = obj["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["kind"] == "CronJob");
        if let Some(owner) = owner {
            return Some(format!(
                "created by CronJob {}, which creates its Jobs again on schedule (--restore-finished-jobs restores it)",
                owner["name"].as_str().unwrap_or_default()
            ));
        }
        let finished = obj["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["status"] == "True" && (c["type"] == "Complete" || c["type"] == "Failed"));
        if let Some(c) = finished {
            return Some(format!(
                "the Job had finished ({}); restored it would run again (--restore-finished-jobs restores it)",
                c["type"].as_str().unwrap_or_default()
            ));
        }
    }
    // Endpoints and EndpointSlices that a controller maintains for a Service with a selector
    // are made again from the restored Service; hand-made ones (Services without a selector)
    // are restored.
    if (group, resource) == ("", "endpoints") {
        let m = &obj["metadata"];
        if m["labels"]["endpoints.kubernetes.io/managed-by"].is_string()
            || m["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"].is_string()
        {
            return Some("maintained by the endpoints controller for its Service".into());
        }
    }
    if (group, resource) == ("discovery.k8s.io", "endpointslices")
        && let Some(by) =
            obj["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"].as_str()
        && by.ends_with(".k8s.io")
    {
        return Some(format!("maintained by {by} for its Service"));
    }
    if group.is_empty()
        && resource == "secrets"
        && obj["type"] == "kubernetes.io/service-account-token"
    {
        return Some("service-account token secrets are recreated by the cluster".into());
    }
    if group.is_empty() && resource == "configmaps" && obj["metadata"]["name"] == "kube-root-ca.crt"
    {
        return Some("kube-root-ca.crt is published by the cluster (its own CA)".into());
    }
    None
}

/// What a restored claim gets as its volume. Decided before anything is created, from the
/// backed-up claim and PV ([`claim_volume_from_backup`]) and, where that is not enough, from the
/// PV of the same name in the target ([`claim_volume_in_target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimVolume {
    /// The claim keeps `spec.volumeName`. `restore_pv`: its PV is created from the backup (it
    /// is not in the target); otherwise the PV already in the target is used as it is.
    Keep { restore_pv: bool },
    /// A new volume, filled with the backed-up data (`backup create --snapshot-volumes`).
    NewWithData,
    /// A new empty volume from the claim's storage class: `spec.volumeName` is removed and the
    /// old PV is not restored.
    NewEmpty { reason: String },
}

/// The first half of the decision: what the backup alone says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPlan {
    Decided(ClaimVolume),
    /// Depends on the target's PV `pv`: does it exist, and is it reserved for this claim?
    /// `restore_pv`: the backed-up PV may be created when the target has none.
    CheckTarget {
        pv: String,
        restore_pv: bool,
    },
}

/// What a claim's backup says about its volume.
pub struct ClaimFacts<'a> {
    /// The claim as backed up.
    pub claim: &'a Value,
    /// Its PersistentVolume, when the backup holds it.
    pub pv: Option<&'a Value>,
    /// That PV is among the objects this restore would create (cluster-scoped selection).
    pub pv_selected: bool,
    /// Its data is in the backup and is restored.
    pub has_data: bool,
    /// Its namespace is restored under another name (`--namespace-map`).
    pub mapped: bool,
    /// `--restore-pvs-as-is`.
    pub pvs_as_is: bool,
}

/// Annotations a dynamically provisioned volume carries (on the PV, or on its claim).
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const CLAIM_PROVISIONER: &[&str] = &[
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
];

/// The provisioner that created a claim's volume, when it was dynamically provisioned.
pub fn provisioner(claim: &Value, pv: Option<&Value>) -> Option<String> {
    let pv_says = pv.and_then(|p| p["metadata"]["annotations"][PROVISIONED_BY].as_str());
    let claim_says = CLAIM_PROVISIONER
        .iter()
        .find_map(|k| claim["metadata"]["annotations"][*k].as_str());
    pv_says.or(claim_says).map(str::to_string)
}

/// Rules, in order (docs/restore.md, "Volumes"):
/// 1. data in the backup: a new volume with that data;
/// 2. a claim that names no volume is restored as it is;
/// 3. `--restore-pvs-as-is`: keep the binding, the PV is restored if the target has none;
/// 4. a mapped namespace: a new empty volume (the original stays with the original claim);
/// 5. a dynamically provisioned volume: a new empty volume (its PV points at the source's disk);
/// 6. a PV that this restore does not create: the target's PV decides;
/// 7. reclaim policy other than Retain: a new empty volume (the restored PV would delete the
///    disk it points at when the copy is torn down);
/// 8. otherwise (pre-provisioned, Retain): the PV is restored if the target has none.
pub fn claim_volume_from_backup(f: &ClaimFacts) -> ClaimPlan {
    if f.has_data {
        return ClaimPlan::Decided(ClaimVolume::NewWithData);
    }
    let Some(pv) = f.claim["spec"]["volumeName"]
        .as_str()
        .filter(|s| !s.is_empty())
    else {
        return ClaimPlan::Decided(ClaimVolume::Keep { restore_pv: false });
    };
    let new_empty = |reason: String| ClaimPlan::Decided(ClaimVolume::NewEmpty { reason });
    if f.pvs_as_is {
        return ClaimPlan::CheckTarget {
            pv: pv.into(),
            restore_pv: f.pv.is_some() && f.pv_selected,
        };
    }
    if f.mapped {
        return new_empty(format!(
            "its namespace is mapped: PV {pv} stays with the original claim"
        ));
    }
    if let Some(by) = provisioner(f.claim, f.pv) {
        return new_empty(format!(
            "PV {pv} was dynamically provisioned by {by} and is not restored (it points at the source's disk)"
        ));
    }
    let Some(pv_obj) = f.pv.filter(|_| f.pv_selected) else {
        return ClaimPlan::CheckTarget {
            pv: pv.into(),
            restore_pv: false,
        };
    };
    let reclaim = pv_obj["spec"]["persistentVolumeReclaimPolicy"]
        .as_str()
        .unwrap_or("Delete");
    if reclaim != "Retain" {
        return new_empty(format!(
            "PV {pv} has reclaim policy {reclaim} and is not restored (deleting the copy would delete the disk it points at)"
        ));
    }
    ClaimPlan::CheckTarget {
        pv: pv.into(),
        restore_pv: true,
    }
}

/// The PersistentVolume of a given name in the target cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPv {
    Absent,
    /// `claim_ref`: (namespace, name) of the claim it is reserved for or bound to.
    Present {
        phase: String,
        claim_ref: Option<(String, String)>,
    },
    /// It could not be read (the message says why).
    Unknown(String),
}

/// The second half: an existing PV is never shared or taken over. It is used only when it is
/// reserved for exactly this claim (`claimRef` names it: an operator prepared it, or an earlier
/// run of this restore bound it).
pub fn claim_volume_in_target(
    pv: &str,
    restore_pv: bool,
    target: &TargetPv,
    claim: (&str, &str),
) -> ClaimVolume {
    let new_empty = |reason: String| ClaimVolume::NewEmpty { reason };
    match target {
        TargetPv::Absent if restore_pv => ClaimVolume::Keep { restore_pv: true },
        TargetPv::Absent => new_empty(format!(
            "PV {pv} is neither restored nor in the target cluster"
        )),
        TargetPv::Present {
            claim_ref: Some((ns, name)),
            ..
        } if ns == claim.0 && name == claim.1 => ClaimVolume::Keep { restore_pv: false },
        TargetPv::Present {
            phase,
            claim_ref: Some((ns, name)),
        } => new_empty(format!(
            "PV {pv} exists in the target ({phase}, claimed by {ns}/{name}) and is never shared or taken over"
        )),
        TargetPv::Present {
            phase,
            claim_ref: None,
        } => new_empty(format!(
            "PV {pv} exists in the target ({phase}) and is not reserved for this claim; it is not taken over"
        )),
        TargetPv::Unknown(why) => new_empty(format!("PV {pv} in the target cannot be read: {why}")),
    }
}

/// A PersistentVolume that no restored claim decided about (its claim is not restored, or it
/// has none): restored as it is only when its reclaim policy is Retain and it was not
/// dynamically provisioned, or with `--restore-pvs-as-is`. `None`: restore it.
pub fn unclaimed_pv_skip_reason(pv: &Value, pvs_as_is: bool) -> Option<String> {
    if pvs_as_is {
        return None;
    }
    if let Some(by) = pv["metadata"]["annotations"][PROVISIONED_BY].as_str() {
        return Some(format!(
            "dynamically provisioned by {by}: restored as it is it would point at the source's disk (--restore-pvs-as-is restores it)"
        ));
    }
    let reclaim = pv["spec"]["persistentVolumeReclaimPolicy"]
        .as_str()
        .unwrap_or("Delete");
    (reclaim != "Retain").then(|| {
        format!(
            "reclaim policy {reclaim}: restored as it is it could delete the disk it points at (--restore-pvs-as-is restores it)"
        )
    })
}

/// Why a restored claim is still Pending once the bind timeout has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// It cannot bind as things are: a failure.
    Stuck(String),
    /// Its class binds only once a pod uses it, and no pod does yet: not a failure.
    WaitsForConsumer,
}

/// What the target says about a Pending claim (all read by the caller).
pub struct PendingFacts<'a> {
    /// The claim as it is in the target.
    pub claim: &'a Value,
    /// Its StorageClass in the target: `None` when the claim names one that does not exist.
    pub class: Option<&'a Value>,
    /// The name of the target's default StorageClass, if any.
    pub default_class: Option<&'a str>,
    /// Events about the claim, any order.
    pub events: &'a [Value],
    /// A pod (other than lifeboat's movers) mounts the claim.
    pub has_consumer: bool,
}

/// The reason a claim is still Pending, from the claim, its class and its events.
pub fn pending_reason(f: &PendingFacts) -> Pending {
    let spec = &f.claim["spec"];
    let class = spec["storageClassName"].as_str();
    let mut why = match (spec["volumeName"].as_str(), class) {
        (Some(v), _) => format!("waits for PV {v}"),
        (None, Some("")) => {
            "storageClassName is \"\" (static binding only) and no PV was chosen for it".into()
        }
        (None, Some(c)) if f.class.is_none() => {
            format!("StorageClass {c} does not exist in the target cluster")
        }
        (None, None) if f.default_class.is_none() => {
            "it names no StorageClass and the target cluster has no default one".into()
        }
        (None, c) => format!(
            "no volume was provisioned by StorageClass {}{}",
            c.or(f.default_class).unwrap_or_default(),
            f.class
                .and_then(|c| c["provisioner"].as_str())
                .map(|p| format!(" (provisioner {p})"))
                .unwrap_or_default()
        ),
    };
    let wffc = f
        .class
        .is_some_and(|c| c["volumeBindingMode"] == "WaitForFirstConsumer");
    if wffc && !f.has_consumer && spec["volumeName"].is_null() {
        return Pending::WaitsForConsumer;
    }
    // The newest event, warnings first: what the PV controller or provisioner said.
    let time = |e: &Value| {
        e["lastTimestamp"]
            .as_str()
            .or(e["eventTime"].as_str())
            .or(e["metadata"]["creationTimestamp"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    if let Some(e) = f
        .events
        .iter()
        .max_by_key(|e| (e["type"] == "Warning", time(e)))
    {
        why.push_str(&format!(
            "; last event: {}: {}",
            e["reason"].as_str().unwrap_or_default(),
            e["message"].as_str().unwrap_or_default()
        ));
    }
    Pending::Stuck(why)
}

/// Annotation on a claim whose volume a restore filled completely: `<backup id>/<tree ids>`.
/// Written only after the mover's `tar -x` finished; a claim without it was never filled.
pub const RESTORED_FROM: &str = "lifeboat.io/restored-from";

/// The completion record of a volume filled from `backup` with the tree blobs `trees`.
pub fn completion_record(backup: &str, trees: &[String]) -> String {
    format!("{backup}/{}", trees.join(","))
}

/// What a claim that already exists says about its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExistingData {
    /// A restore filled it completely (the record).
    Complete(String),
    /// A restore created it (restore label) but no fill completed: partly filled, or empty.
    Partial,
    /// Not created by a restore: someone else's data, left alone.
    NotOurs,
}

pub fn existing_data(claim: &Value) -> ExistingData {
    let meta = &claim["metadata"];
    if let Some(r) = meta["annotations"][RESTORED_FROM].as_str() {
        return ExistingData::Complete(r.to_string());
    }
    if meta["labels"][RESTORE_LABEL].is_string() {
        return ExistingData::Partial;
    }
    ExistingData::NotOurs
}

/// Claims a workload's pods mount: by name, and (StatefulSets) the prefixes `<template>-<set>-`
/// of the claims made from its volumeClaimTemplates.
pub fn claims_used(group: &str, resource: &str, obj: &Value) -> (Vec<String>, Vec<String>) {
    let pod_spec = match (group, resource) {
        ("", "pods") => &obj["spec"],
        ("batch", "cronjobs") => &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets")
        | ("batch", "jobs")
        | ("", "replicationcontrollers") => &obj["spec"]["template"]["spec"],
        _ => return (vec![], vec![]),
    };
    let names = pod_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .map(str::to_string)
        .collect();
    let mut prefixes = vec![];
    if (group, resource) == ("apps", "statefulsets") {
        let set = obj["metadata"]["name"].as_str().unwrap_or_default();
        for t in obj["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(t) = t["metadata"]["name"].as_str() {
                prefixes.push(format!("{t}-{set}-"));
            }
        }
    }
    (names, prefixes)
}

/// Does the workload mount `claim`?
pub fn uses_claim(group: &str, resource: &str, obj: &Value, claim: &str) -> bool {
    let (names, prefixes) = claims_used(group, resource, obj);
    names.iter().any(|n| n == claim)
        || prefixes.iter().any(|p| {
            claim
                .strip_prefix(p.as_str())
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The `default` ServiceAccount exists in every namespace (the cluster makes it), so restoring
/// it is a merge into the existing one: the backup's `imagePullSecrets` are added (by name), its
/// labels and annotations added or set, and its `automountServiceAccountToken` set when the
/// backup sets it. Returns the merge patch, `None` when there is nothing to change.
pub fn merge_default_service_account(existing: &Value, backed_up: &Value) -> Option<Value> {
    let mut patch = Map::new();
    let mut meta = Map::new();
    for key in ["labels", "annotations"] {
        let mut m = Map::new();
        for (k, v) in backed_up["metadata"][key].as_object().into_iter().flatten() {
            if k == RESTORE_LABEL {
                continue; // the cluster made it, not this restore
            }
            if existing["metadata"][key][k] != *v {
                m.insert(k.clone(), v.clone());
            }
        }
        if !m.is_empty() {
            meta.insert(key.into(), Value::Object(m));
        }
    }
    if !meta.is_empty() {
        patch.insert("metadata".into(), Value::Object(meta));
    }
    let have: Vec<Value> = existing["imagePullSecrets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut all = have.clone();
    for s in backed_up["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if !all.iter().any(|h| h["name"] == s["name"]) {
            all.push(s.clone());
        }
    }
    if all.len() != have.len() {
        patch.insert("imagePullSecrets".into(), Value::Array(all));
    }
    let auto = &backed_up["automountServiceAccountToken"];
    if auto.is_boolean() && existing["automountServiceAccountToken"] != *auto {
        patch.insert("automountServiceAccountToken".into(), auto.clone());
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// Re-link a restored object's backed-up `ownerReferences` to its owners' new UIDs. `resolve`
/// maps (apiVersion, kind, name) to the restored (or existing) owner's UID. References whose
/// owner is not in the target are dropped (returned as `Kind/name`): a reference to a missing
/// UID makes the garbage collector delete the object.
pub fn relink_owner_refs(
    refs: &[Value],
    resolve: impl Fn(&str, &str, &str) -> Option<String>,
) -> (Vec<Value>, Vec<String>) {
    let mut kept = vec![];
    let mut dropped = vec![];
    for r in refs {
        let (Some(api_version), Some(kind), Some(name)) = (
            r["apiVersion"].as_str(),
            r["kind"].as_str(),
            r["name"].as_str(),
        ) else {
            continue;
        };
        match resolve(api_version, kind, name) {
            Some(uid) => {
                let mut r = r.clone();
                r["uid"] = Value::String(uid);
                kept.push(r);
            }
            None => dropped.push(format!("{kind}/{name}")),
        }
    }
    (kept, dropped)
}

fn obj_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("object")
}

/// Rewrite a backed-up object for restore. Returns the object to create.
pub fn rewrite(group: &str, resource: &str, mut obj: Value, o: &RewriteOptions) -> Value {
    // Metadata: server-populated fields go; the namespace is mapped; the restore label is added.
    let meta = obj_mut(
        obj.as_object_mut()
            .expect("objects are JSON objects")
            .entry("metadata")
            .or_insert(Value::Null),
    );
    for k in STRIP_METADATA {
        meta.remove(*k);
    }
    if let Some(ns) = meta
        .get("namespace")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        meta.insert("namespace".into(), Value::String(o.map_ns(&ns).to_string()));
    }
    let labels = obj_mut(meta.entry("labels").or_insert(Value::Null));
    labels.insert(RESTORE_LABEL.into(), Value::String(o.restore_id.clone()));

    // Status: owned by controllers for built-in types (and ignored on create); for custom
    // resources without a status subresource it is part of the object, so it is kept.
    if is_builtin_group(group) {
        obj_mut(&mut obj).remove("status");
    }

    match (group, resource) {
        ("", "namespaces") => {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mapped = o.map_ns(&name).to_string();
            obj["metadata"]["name"] = Value::String(mapped.clone());
            if let Some(l) = obj["metadata"]["labels"].as_object_mut() {
                if l.contains_key("kubernetes.io/metadata.name") {
                    l.insert("kubernetes.io/metadata.name".into(), Value::String(mapped));
                }
            }
        }
        ("", "services") => {
            let spec = obj_mut(&mut obj["spec"]);
            let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
            if !headless {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
            if !o.preserve_nodeports {
                spec.remove("healthCheckNodePort");
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        if let Some(p) = p.as_object_mut() {
                            p.remove("nodePort");
                        }
                    }
                }
            }
        }
        ("", "persistentvolumeclaims") => {
            o.map_class(&mut obj["spec"]);
            if let Some(a) = obj["metadata"]["annotations"].as_object_mut() {
                for k in [
                    "pv.kubernetes.io/bind-completed",
                    "pv.kubernetes.io/bound-by-controller",
                    "volume.beta.kubernetes.io/storage-provisioner",
                    "volume.kubernetes.io/storage-provisioner",
                    "volume.kubernetes.io/selected-node",
                    // A restored copy of a restored claim is filled (or not) by this restore.
                    RESTORED_FROM,
                ] {
                    a.remove(k);
                }
            }
        }
        ("", "persistentvolumes") => {
            o.map_class(&mut obj["spec"]);
            if let Some(a) = obj["metadata"]["annotations"].as_object_mut() {
                a.remove("pv.kubernetes.io/bound-by-controller");
            }
            if let Some(c) = obj["spec"]["claimRef"].as_object_mut() {
                c.remove("uid");
                c.remove("resourceVersion");
                if let Some(ns) = c
                    .get("namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                {
                    c.insert("namespace".into(), Value::String(o.map_ns(&ns).to_string()));
                }
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            if let Some(subjects) = obj["subjects"].as_array_mut() {
                for s in subjects {
                    if let Some(ns) = s["namespace"].as_str().map(str::to_string) {
                        s["namespace"] = Value::String(o.map_ns(&ns).to_string());
                    }
                }
            }
        }
        ("", "pods") => strip_pod_spec(&mut obj["spec"], true),
        ("apps", "statefulsets") => {
            if let Some(ts) = obj["spec"]["volumeClaimTemplates"].as_array_mut() {
                for t in ts {
                    o.map_class(&mut t["spec"]);
                }
            }
        }
        ("batch", "jobs") => {
            strip_job_labels(&mut obj["metadata"]);
            strip_job_labels(&mut obj["spec"]["template"]["metadata"]);
            if obj["spec"]["manualSelector"].as_bool() != Some(true) {
                obj_mut(&mut obj["spec"]).remove("selector");
            }
        }
        _ => {}
    }
    obj
}

fn strip_job_labels(meta: &mut Value) {
    if let Some(l) = meta["labels"].as_object_mut() {
        l.remove("controller-uid");
        l.remove("batch.kubernetes.io/controller-uid");
    }
}

/// Pods: the node binding and the service-account token volume that admission injected.
fn strip_pod_spec(spec: &mut Value, unbind: bool) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    if unbind {
        spec.remove("nodeName");
    }
    let injected = |name: &str| name.starts_with("kube-api-access-");
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        vols.retain(|v| !v["name"].as_str().is_some_and(injected));
    }
    for key in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(m) = c["volumeMounts"].as_array_mut() {
                    m.retain(|v| !v["name"].as_str().is_some_and(injected));
                }
            }
        }
    }
}

/// Normalise an object for comparison between backup and restore (tests, drills): drop what a
/// restore legitimately changes.
pub fn normalise(group: &str, resource: &str, obj: &Value) -> Value {
    let mut o = rewrite(group, resource, obj.clone(), &RewriteOptions::default());
    let meta = obj_mut(&mut o["metadata"]);
    meta.remove("namespace");
    if let Some(l) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        l.remove(RESTORE_LABEL);
        l.remove("kubernetes.io/metadata.name");
    }
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove("deployment.kubernetes.io/revision");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> RewriteOptions {
        RewriteOptions {
            namespace_map: [("old".to_string(), "new".to_string())].into(),
            preserve_nodeports: false,
            restore_id: "r1".into(),
            restore_finished_jobs: false,
            storage_class_map: [("gp2".to_string(), "gp3".to_string())].into(),
        }
    }

    #[test]
    fn order_follows_dependencies() {
        let order = [
            ("apiextensions.k8s.io", "customresourcedefinitions"),
            ("", "namespaces"),
            ("storage.k8s.io", "storageclasses"),
            ("", "persistentvolumes"),
            ("", "persistentvolumeclaims"),
            ("", "secrets"),
            ("rbac.authorization.k8s.io", "rolebindings"),
            ("", "services"),
            ("apps", "deployments"),
            ("networking.k8s.io", "ingresses"),
            (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
            ),
        ];
        for w in order.windows(2) {
            assert!(
                phase(w[0].0, w[0].1) < phase(w[1].0, w[1].1),
                "{:?} before {:?}",
                w[0],
                w[1]
            );
        }
        assert_eq!(phase("apiregistration.k8s.io", "apiservices"), 10);
        // Before every workload (bare Pods included): network policies, priority and runtime
        // classes.
        for w in [
            ("", "pods"),
            ("apps", "deployments"),
            ("apps", "statefulsets"),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
        ] {
            for first in [
                ("networking.k8s.io", "networkpolicies"),
                ("scheduling.k8s.io", "priorityclasses"),
                ("node.k8s.io", "runtimeclasses"),
                ("", "serviceaccounts"),
            ] {
                assert!(
                    phase(first.0, first.1) < phase(w.0, w.1),
                    "{first:?} before {w:?}"
                );
            }
        }
        assert_eq!(phase("example.com", "widgets"), 9);
    }

    #[test]
    fn server_populated_metadata_is_stripped_and_label_added() {
        let o = rewrite(
            "",
            "configmaps",
            json!({"metadata": {"name": "c", "namespace": "old", "uid": "u", "resourceVersion": "5", "generation": 2,
                "creationTimestamp": "t", "managedFields": [], "selfLink": "/x", "deletionTimestamp": "t",
                "ownerReferences": [{"uid": "gone"}], "labels": {"a": "b"}}, "data": {"k": "v"}}),
            &opts(),
        );
        let m = o["metadata"].as_object().unwrap();
        for k in STRIP_METADATA {
            assert!(!m.contains_key(*k), "{k} kept");
        }
        assert_eq!(o["metadata"]["namespace"], "new");
        assert_eq!(o["metadata"]["labels"]["a"], "b");
        assert_eq!(o["metadata"]["labels"][RESTORE_LABEL], "r1");
        assert_eq!(o["data"]["k"], "v");
    }

    #[test]
    fn status_is_dropped_for_builtin_types_kept_for_custom_resources() {
        let d = rewrite(
            "apps",
            "deployments",
            json!({"metadata": {"name": "d"}, "status": {"replicas": 1}}),
            &opts(),
        );
        assert!(d.get("status").is_none());
        let cr = rewrite(
            "example.com",
            "widgets",
            json!({"metadata": {"name": "w"}, "status": {"phase": "Ready"}}),
            &opts(),
        );
        assert_eq!(cr["status"]["phase"], "Ready");
    }

    #[test]
    fn services_lose_cluster_ips_and_node_ports() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
            "healthCheckNodePort": 31000, "ports": [{"port": 80, "nodePort": 30080}]}});
        let o = rewrite("", "services", svc.clone(), &opts());
        assert!(o["spec"].get("clusterIP").is_none() && o["spec"].get("clusterIPs").is_none());
        assert!(o["spec"]["ports"][0].get("nodePort").is_none());
        assert!(o["spec"].get("healthCheckNodePort").is_none());
        let keep = RewriteOptions {
            preserve_nodeports: true,
            ..opts()
        };
        let o = rewrite("", "services", svc, &keep);
        assert_eq!(o["spec"]["ports"][0]["nodePort"], 30080);
        let headless = rewrite(
            "",
            "services",
            json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}}),
            &opts(),
        );
        assert_eq!(
            headless["spec"]["clusterIP"], "None",
            "headless stays headless"
        );
    }

    #[test]
    fn pvc_and_pv_binding_is_reset() {
        let pvc = rewrite(
            "",
            "persistentvolumeclaims",
            json!({"metadata": {"name": "data", "namespace": "old", "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes", "volume.kubernetes.io/selected-node": "n1", "lifeboat.io/restored-from": "b/t", "keep": "me"}},
                "spec": {"volumeName": "pv-1"}, "status": {"phase": "Bound"}}),
            &opts(),
        );
        let a = pvc["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), ["keep"]);
        assert_eq!(
            pvc["spec"]["volumeName"], "pv-1",
            "binds to the restored PV again"
        );
        let pv = rewrite(
            "",
            "persistentvolumes",
            json!({"metadata": {"name": "pv-1"}, "spec": {"claimRef": {"namespace": "old", "name": "data", "uid": "u", "resourceVersion": "9"}}, "status": {"phase": "Bound"}}),
            &opts(),
        );
        assert_eq!(
            pv["spec"]["claimRef"],
            json!({"namespace": "new", "name": "data"})
        );
        assert!(pv.get("status").is_none());
    }

    fn claim(volume: Option<&str>, annotations: Value) -> Value {
        json!({"metadata": {"name": "data", "namespace": "old", "annotations": annotations},
               "spec": {"volumeName": volume, "storageClassName": "fast"}})
    }

    fn pv(reclaim: &str, provisioned_by: Option<&str>) -> Value {
        let annotations = match provisioned_by {
            Some(p) => json!({PROVISIONED_BY: p}),
            None => json!({}),
        };
        json!({"metadata": {"name": "pv-1", "annotations": annotations},
               "spec": {"persistentVolumeReclaimPolicy": reclaim,
                        "claimRef": {"namespace": "old", "name": "data"}}})
    }

    fn facts<'a>(claim: &'a Value, pv: Option<&'a Value>) -> ClaimFacts<'a> {
        ClaimFacts {
            claim,
            pv,
            pv_selected: pv.is_some(),
            has_data: false,
            mapped: false,
            pvs_as_is: false,
        }
    }

    fn new_empty_because(plan: ClaimPlan, needle: &str) {
        match plan {
            ClaimPlan::Decided(ClaimVolume::NewEmpty { reason }) => {
                assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
            }
            other => panic!("expected a new empty volume ({needle}), got {other:?}"),
        }
    }

    #[test]
    fn claims_with_backed_up_data_get_a_new_volume_with_it() {
        let c = claim(Some("pv-1"), json!({}));
        let p = pv("Retain", None);
        let f = ClaimFacts {
            has_data: true,
            pvs_as_is: true,
            ..facts(&c, Some(&p))
        };
        assert_eq!(
            claim_volume_from_backup(&f),
            ClaimPlan::Decided(ClaimVolume::NewWithData)
        );
    }

    #[test]
    fn claims_that_name_no_volume_are_restored_as_they_are() {
        let c = claim(None, json!({}));
        assert_eq!(
            claim_volume_from_backup(&facts(&c, None)),
            ClaimPlan::Decided(ClaimVolume::Keep { restore_pv: false })
        );
    }

    #[test]
    fn a_mapped_namespace_never_keeps_the_original_volume() {
        let c = claim(Some("pv-1"), json!({}));
        let p = pv("Retain", None);
        let f = ClaimFacts {
            mapped: true,
            ..facts(&c, Some(&p))
        };
        new_empty_because(claim_volume_from_backup(&f), "mapped");
    }

    #[test]
    fn dynamically_provisioned_volumes_are_not_restored() {
        // Known from the PV's annotation, or from the claim's when the PV is not in the backup.
        let c = claim(Some("pv-1"), json!({}));
        let p = pv("Retain", Some("ebs.csi.aws.com"));
        new_empty_because(
            claim_volume_from_backup(&facts(&c, Some(&p))),
            "ebs.csi.aws.com",
        );
        let c = claim(
            Some("pv-1"),
            json!({"volume.kubernetes.io/storage-provisioner": "pd.csi.storage.gke.io"}),
        );
        new_empty_because(claim_volume_from_backup(&facts(&c, None)), "pd.csi");
    }

    #[test]
    fn pre_provisioned_volumes_are_restored_only_with_reclaim_policy_retain() {
        let c = claim(Some("pv-1"), json!({}));
        new_empty_because(
            claim_volume_from_backup(&facts(&c, Some(&pv("Delete", None)))),
            "reclaim policy Delete",
        );
        new_empty_because(
            claim_volume_from_backup(&facts(&c, Some(&pv("Recycle", None)))),
            "Recycle",
        );
        let p = pv("Retain", None);
        assert_eq!(
            claim_volume_from_backup(&facts(&c, Some(&p))),
            ClaimPlan::CheckTarget {
                pv: "pv-1".into(),
                restore_pv: true
            }
        );
        // The PV is in the backup but not selected (--include-cluster-resources false): the
        // target decides, nothing is restored.
        let f = ClaimFacts {
            pv_selected: false,
            ..facts(&c, Some(&p))
        };
        assert_eq!(
            claim_volume_from_backup(&f),
            ClaimPlan::CheckTarget {
                pv: "pv-1".into(),
                restore_pv: false
            }
        );
    }

    #[test]
    fn restore_pvs_as_is_keeps_any_binding_but_still_asks_the_target() {
        let c = claim(Some("pv-1"), json!({}));
        let p = pv("Delete", Some("ebs.csi.aws.com"));
        let f = ClaimFacts {
            mapped: true,
            pvs_as_is: true,
            ..facts(&c, Some(&p))
        };
        assert_eq!(
            claim_volume_from_backup(&f),
            ClaimPlan::CheckTarget {
                pv: "pv-1".into(),
                restore_pv: true
            }
        );
    }

    #[test]
    fn an_existing_pv_is_used_only_when_reserved_for_exactly_this_claim() {
        let bound_elsewhere = TargetPv::Present {
            phase: "Bound".into(),
            claim_ref: Some(("old".into(), "data".into())),
        };
        // Restoring old/data as new/data: the PV belongs to old/data.
        match claim_volume_in_target("pv-1", true, &bound_elsewhere, ("new", "data")) {
            ClaimVolume::NewEmpty { reason } => {
                assert!(reason.contains("claimed by old/data"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            claim_volume_in_target("pv-1", true, &bound_elsewhere, ("old", "data")),
            ClaimVolume::Keep { restore_pv: false }
        );
        let unreserved = TargetPv::Present {
            phase: "Available".into(),
            claim_ref: None,
        };
        assert!(matches!(
            claim_volume_in_target("pv-1", true, &unreserved, ("old", "data")),
            ClaimVolume::NewEmpty { .. }
        ));
        assert_eq!(
            claim_volume_in_target("pv-1", true, &TargetPv::Absent, ("old", "data")),
            ClaimVolume::Keep { restore_pv: true }
        );
        assert!(matches!(
            claim_volume_in_target("pv-1", false, &TargetPv::Absent, ("old", "data")),
            ClaimVolume::NewEmpty { .. }
        ));
        assert!(matches!(
            claim_volume_in_target(
                "pv-1",
                true,
                &TargetPv::Unknown("forbidden".into()),
                ("old", "data")
            ),
            ClaimVolume::NewEmpty { .. }
        ));
    }

    #[test]
    fn unclaimed_pvs_are_restored_only_when_retained_and_pre_provisioned() {
        assert!(unclaimed_pv_skip_reason(&pv("Retain", None), false).is_none());
        assert!(unclaimed_pv_skip_reason(&pv("Delete", None), false).is_some());
        assert!(unclaimed_pv_skip_reason(&pv("Retain", Some("x.csi")), false).is_some());
        assert!(unclaimed_pv_skip_reason(&pv("Delete", Some("x.csi")), true).is_none());
    }

    #[test]
    fn pending_claims_say_why() {
        let c = json!({"spec": {"storageClassName": "gone"}});
        let stuck = |f: &PendingFacts| match pending_reason(f) {
            Pending::Stuck(s) => s,
            other => panic!("{other:?}"),
        };
        let base = PendingFacts {
            claim: &c,
            class: None,
            default_class: None,
            events: &[],
            has_consumer: false,
        };
        assert!(stuck(&base).contains("StorageClass gone does not exist"));
        let no_class = json!({"spec": {}});
        let f = PendingFacts {
            claim: &no_class,
            ..base
        };
        assert!(stuck(&f).contains("no default"));
        let empty = json!({"spec": {"storageClassName": ""}});
        let f = PendingFacts {
            claim: &empty,
            ..base
        };
        assert!(stuck(&f).contains("static binding only"));
        let named = json!({"spec": {"volumeName": "pv-9", "storageClassName": "gone"}});
        let f = PendingFacts {
            claim: &named,
            ..base
        };
        assert!(stuck(&f).contains("waits for PV pv-9"));

        // The newest warning event is quoted.
        let fast = json!({"spec": {"storageClassName": "fast"}});
        let class = json!({"metadata": {"name": "fast"}, "provisioner": "ebs.csi.aws.com"});
        let events = [
            json!({"type": "Warning", "reason": "Old", "message": "old", "lastTimestamp": "2026-01-01T00:00:00Z"}),
            json!({"type": "Warning", "reason": "ProvisioningFailed", "message": "quota exceeded", "lastTimestamp": "2026-01-02T00:00:00Z"}),
            json!({"type": "Normal", "reason": "ExternalProvisioning", "message": "waiting", "lastTimestamp": "2026-01-03T00:00:00Z"}),
        ];
        let f = PendingFacts {
            claim: &fast,
            class: Some(&class),
            events: &events,
            ..base
        };
        let s = stuck(&f);
        assert!(s.contains("provisioner ebs.csi.aws.com"), "{s}");
        assert!(
            s.ends_with("last event: ProvisioningFailed: quota exceeded"),
            "{s}"
        );

        // WaitForFirstConsumer without a pod using the claim is not stuck; with one it is.
        let wffc = json!({"metadata": {"name": "fast"}, "provisioner": "x", "volumeBindingMode": "WaitForFirstConsumer"});
        let f = PendingFacts {
            claim: &fast,
            class: Some(&wffc),
            ..base
        };
        assert_eq!(pending_reason(&f), Pending::WaitsForConsumer);
        let f = PendingFacts {
            has_consumer: true,
            ..f
        };
        assert!(matches!(pending_reason(&f), Pending::Stuck(_)));
    }

    #[test]
    fn an_existing_claim_is_complete_only_with_the_record() {
        let rec = completion_record("b1", &["t1".into(), "t2".into()]);
        assert_eq!(rec, "b1/t1,t2");
        let c = json!({"metadata": {"labels": {RESTORE_LABEL: "r1"}, "annotations": {RESTORED_FROM: rec}}});
        assert_eq!(existing_data(&c), ExistingData::Complete("b1/t1,t2".into()));
        let c = json!({"metadata": {"labels": {RESTORE_LABEL: "r1"}}});
        assert_eq!(existing_data(&c), ExistingData::Partial);
        let c = json!({"metadata": {"labels": {"app": "db"}}});
        assert_eq!(existing_data(&c), ExistingData::NotOurs);
    }

    #[test]
    fn workloads_name_the_claims_they_mount() {
        let vols = json!([{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}, {"name": "e", "emptyDir": {}}]);
        let pod = json!({"spec": {"volumes": vols}});
        assert!(uses_claim("", "pods", &pod, "data"));
        assert!(!uses_claim("", "pods", &pod, "other"));
        let dep = json!({"spec": {"template": {"spec": {"volumes": vols}}}});
        assert!(uses_claim("apps", "deployments", &dep, "data"));
        let cj =
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"volumes": vols}}}}}});
        assert!(uses_claim("batch", "cronjobs", &cj, "data"));
        let sts = json!({"metadata": {"name": "db"}, "spec": {"template": {"spec": {}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}});
        assert!(uses_claim("apps", "statefulsets", &sts, "data-db-0"));
        assert!(uses_claim("apps", "statefulsets", &sts, "data-db-12"));
        assert!(!uses_claim("apps", "statefulsets", &sts, "data-db-x"));
        assert!(!uses_claim("apps", "statefulsets", &sts, "data-dbx-0"));
        assert!(!uses_claim("", "configmaps", &pod, "data"));
    }

    #[test]
    fn finished_jobs_and_cronjob_jobs_are_not_restored_by_default() {
        let o = opts();
        let keep = RewriteOptions {
            restore_finished_jobs: true,
            ..opts()
        };
        let done = json!({"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        let failed = json!({"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        let running = json!({"metadata": {"name": "j"}, "status": {"active": 1, "conditions": [{"type": "Suspended", "status": "False"}]}});
        let scheduled = json!({"metadata": {"name": "backup-2901", "ownerReferences": [{"kind": "CronJob", "name": "backup"}]}, "status": {"active": 1}});
        assert!(
            skip_reason("batch", "jobs", &done, &o)
                .unwrap()
                .contains("Complete")
        );
        assert!(skip_reason("batch", "jobs", &failed, &o).is_some());
        assert!(skip_reason("batch", "jobs", &running, &o).is_none());
        assert!(
            skip_reason("batch", "jobs", &scheduled, &o)
                .unwrap()
                .contains("CronJob backup")
        );
        for j in [&done, &failed, &scheduled] {
            assert!(skip_reason("batch", "jobs", j, &keep).is_none());
        }
    }

    #[test]
    fn only_hand_made_endpoints_are_restored() {
        let o = opts();
        let managed = json!({"metadata": {"name": "web", "labels": {"endpoints.kubernetes.io/managed-by": "endpoint-controller"}}});
        let managed_old = json!({"metadata": {"name": "web", "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "t"}}});
        let manual = json!({"metadata": {"name": "external-db"}, "subsets": [{"addresses": [{"ip": "10.1.2.3"}]}]});
        assert!(skip_reason("", "endpoints", &managed, &o).is_some());
        assert!(skip_reason("", "endpoints", &managed_old, &o).is_some());
        assert!(skip_reason("", "endpoints", &manual, &o).is_none());
        let slice = |by: &str| json!({"metadata": {"name": "s", "labels": {"endpointslice.kubernetes.io/managed-by": by}}});
        assert!(
            skip_reason(
                "discovery.k8s.io",
                "endpointslices",
                &slice("endpointslice-controller.k8s.io"),
                &o
            )
            .is_some()
        );
        assert!(
            skip_reason(
                "discovery.k8s.io",
                "endpointslices",
                &slice("endpointslicemirroring-controller.k8s.io"),
                &o
            )
            .is_some()
        );
        assert!(skip_reason("discovery.k8s.io", "endpointslices", &slice("team-a"), &o).is_none());
        let unlabelled = json!({"metadata": {"name": "s"}});
        assert!(skip_reason("discovery.k8s.io", "endpointslices", &unlabelled, &o).is_none());
    }

    #[test]
    fn the_default_service_account_is_merged() {
        let existing = json!({"metadata": {"name": "default", "labels": {"a": "1"}},
                              "imagePullSecrets": [{"name": "cluster-pull"}]});
        let backed_up = json!({"metadata": {"name": "default", "labels": {"a": "1", "team": "shop", RESTORE_LABEL: "r1"},
                                            "annotations": {"eks.amazonaws.com/role-arn": "arn:x"}},
                               "imagePullSecrets": [{"name": "registry"}, {"name": "cluster-pull"}],
                               "automountServiceAccountToken": false});
        let p = merge_default_service_account(&existing, &backed_up).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"labels": {"team": "shop"}, "annotations": {"eks.amazonaws.com/role-arn": "arn:x"}},
                   "imagePullSecrets": [{"name": "cluster-pull"}, {"name": "registry"}],
                   "automountServiceAccountToken": false})
        );
        // Applied once, nothing is left to change.
        let merged = json!({"metadata": {"name": "default", "labels": {"a": "1", "team": "shop"},
                                         "annotations": {"eks.amazonaws.com/role-arn": "arn:x"}},
                            "imagePullSecrets": [{"name": "cluster-pull"}, {"name": "registry"}],
                            "automountServiceAccountToken": false});
        assert_eq!(merge_default_service_account(&merged, &backed_up), None);
    }

    #[test]
    fn storage_classes_follow_the_class_map() {
        let pvc = rewrite(
            "",
            "persistentvolumeclaims",
            json!({"metadata": {"name": "d"}, "spec": {"storageClassName": "gp2"}}),
            &opts(),
        );
        assert_eq!(pvc["spec"]["storageClassName"], "gp3");
        let other = rewrite(
            "",
            "persistentvolumeclaims",
            json!({"metadata": {"name": "d"}, "spec": {"storageClassName": "fast"}}),
            &opts(),
        );
        assert_eq!(other["spec"]["storageClassName"], "fast");
        let none = rewrite(
            "",
            "persistentvolumeclaims",
            json!({"metadata": {"name": "d"}, "spec": {}}),
            &opts(),
        );
        assert!(none["spec"].get("storageClassName").is_none());
        let pv = rewrite(
            "",
            "persistentvolumes",
            json!({"metadata": {"name": "p"}, "spec": {"storageClassName": "gp2"}}),
            &opts(),
        );
        assert_eq!(pv["spec"]["storageClassName"], "gp3");
        let sts = rewrite(
            "apps",
            "statefulsets",
            json!({"metadata": {"name": "db"}, "spec": {"volumeClaimTemplates": [
                {"metadata": {"name": "data"}, "spec": {"storageClassName": "gp2"}},
                {"metadata": {"name": "logs"}, "spec": {}}]}}),
            &opts(),
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "gp3"
        );
        assert!(
            sts["spec"]["volumeClaimTemplates"][1]["spec"]
                .get("storageClassName")
                .is_none()
        );
    }

    #[test]
    fn owner_references_get_the_new_uids_or_are_dropped() {
        let refs = [
            json!({"apiVersion": "example.com/v1", "kind": "Database", "name": "db", "uid": "old-1", "controller": true, "blockOwnerDeletion": true}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "old-2"}),
        ];
        let (kept, dropped) = relink_owner_refs(&refs, |av, k, n| {
            (av == "example.com/v1" && k == "Database" && n == "db").then(|| "new-1".to_string())
        });
        assert_eq!(
            kept,
            [
                json!({"apiVersion": "example.com/v1", "kind": "Database", "name": "db", "uid": "new-1", "controller": true, "blockOwnerDeletion": true})
            ]
        );
        assert_eq!(dropped, ["ConfigMap/gone"]);
    }

    #[test]
    fn binding_subjects_follow_the_namespace_map() {
        let rb = rewrite(
            "rbac.authorization.k8s.io",
            "rolebindings",
            json!({"metadata": {"name": "rb", "namespace": "old"}, "subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "old"},
                {"kind": "ServiceAccount", "name": "b", "namespace": "other"}, {"kind": "User", "name": "u"}]}),
            &opts(),
        );
        assert_eq!(rb["subjects"][0]["namespace"], "new");
        assert_eq!(rb["subjects"][1]["namespace"], "other");
        assert!(rb["subjects"][2].get("namespace").is_none());
        let crb = rewrite(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            json!({"metadata": {"name": "c"}, "subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "old"}]}),
            &opts(),
        );
        assert_eq!(crb["subjects"][0]["namespace"], "new");
    }

    #[test]
    fn namespaces_are_renamed() {
        let ns = rewrite(
            "",
            "namespaces",
            json!({"metadata": {"name": "old", "labels": {"kubernetes.io/metadata.name": "old"}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
            &opts(),
        );
        assert_eq!(ns["metadata"]["name"], "new");
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "new"
        );
        assert!(ns.get("status").is_none());
    }

    #[test]
    fn pods_are_unbound_and_lose_injected_token_volumes() {
        let pod = rewrite(
            "",
            "pods",
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1",
                "volumes": [{"name": "kube-api-access-abcde"}, {"name": "data"}],
                "containers": [{"name": "c", "volumeMounts": [{"name": "kube-api-access-abcde"}, {"name": "data"}]}]}}),
            &opts(),
        );
        assert!(pod["spec"].get("nodeName").is_none());
        assert_eq!(pod["spec"]["volumes"], json!([{"name": "data"}]));
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": "data"}])
        );
    }

    #[test]
    fn jobs_lose_generated_selector_and_controller_uid_labels() {
        let job = rewrite(
            "batch",
            "jobs",
            json!({"metadata": {"name": "j", "labels": {"controller-uid": "x", "batch.kubernetes.io/controller-uid": "x", "app": "a"}},
                "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "x"}},
                "template": {"metadata": {"labels": {"controller-uid": "x", "batch.kubernetes.io/controller-uid": "x", "job-name": "j"}}}}}),
            &opts(),
        );
        assert!(job["spec"].get("selector").is_none());
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"],
            json!({"job-name": "j"})
        );
        assert_eq!(job["metadata"]["labels"]["app"], "a");
        assert!(job["metadata"]["labels"].get("controller-uid").is_none());
    }

    #[test]
    fn service_account_token_secrets_are_skipped() {
        assert!(
            skip_reason(
                "",
                "secrets",
                &json!({"type": "kubernetes.io/service-account-token"}),
                &opts()
            )
            .is_some()
        );
        assert!(skip_reason("", "secrets", &json!({"type": "Opaque"}), &opts()).is_none());
        assert!(
            skip_reason(
                "",
                "configmaps",
                &json!({"metadata": {"name": "kube-root-ca.crt"}}),
                &opts()
            )
            .is_some()
        );
        assert!(
            skip_reason(
                "",
                "configmaps",
                &json!({"metadata": {"name": "app"}}),
                &opts()
            )
            .is_none()
        );
    }
}

/// An object another object refers to by name, in the same namespace (for `restore --name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    pub group: &'static str,
    pub resource: &'static str,
    pub kind: &'static str,
    /// A name, or a prefix of the claims a StatefulSet's claim templates make.
    pub name: String,
    pub prefix: bool,
}

fn pod_spec<'a>(group: &str, resource: &str, obj: &'a Value) -> Option<&'a Value> {
    Some(match (group, resource) {
        ("", "pods") => &obj["spec"],
        ("batch", "cronjobs") => &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets")
        | ("batch", "jobs")
        | ("", "replicationcontrollers") => &obj["spec"]["template"]["spec"],
        _ => return None,
    })
}

/// What `obj` names in its own namespace: the ConfigMaps, Secrets, claims and ServiceAccount of
/// a pod template, an Ingress's Services and TLS Secrets, a RoleBinding's Role and
/// ServiceAccounts, an HPA's or PDB's target is not included (they select, not name).
pub fn references(group: &str, resource: &str, obj: &Value) -> Vec<Reference> {
    let mut out = std::collections::BTreeSet::new();
    let mut add = |group, resource, kind, name: Option<&str>, prefix| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            out.insert(Reference {
                group,
                resource,
                kind,
                name: n.to_string(),
                prefix,
            });
        }
    };
    if let Some(spec) = pod_spec(group, resource, obj) {
        let (claims, prefixes) = claims_used(group, resource, obj);
        for c in &claims {
            add(
                "",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                Some(c),
                false,
            );
        }
        for p in &prefixes {
            add(
                "",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                Some(p),
                true,
            );
        }
        add(
            "",
            "serviceaccounts",
            "ServiceAccount",
            spec["serviceAccountName"]
                .as_str()
                .filter(|s| *s != "default"),
            false,
        );
        for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            add("", "secrets", "Secret", s["name"].as_str(), false);
        }
        for v in spec["volumes"].as_array().into_iter().flatten() {
            add(
                "",
                "configmaps",
                "ConfigMap",
                v["configMap"]["name"].as_str(),
                false,
            );
            add(
                "",
                "secrets",
                "Secret",
                v["secret"]["secretName"].as_str(),
                false,
            );
            for src in v["projected"]["sources"].as_array().into_iter().flatten() {
                add(
                    "",
                    "configmaps",
                    "ConfigMap",
                    src["configMap"]["name"].as_str(),
                    false,
                );
                add(
                    "",
                    "secrets",
                    "Secret",
                    src["secret"]["name"].as_str(),
                    false,
                );
            }
        }
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                for e in c["env"].as_array().into_iter().flatten() {
                    let vf = &e["valueFrom"];
                    add(
                        "",
                        "configmaps",
                        "ConfigMap",
                        vf["configMapKeyRef"]["name"].as_str(),
                        false,
                    );
                    add(
                        "",
                        "secrets",
                        "Secret",
                        vf["secretKeyRef"]["name"].as_str(),
                        false,
                    );
                }
                for e in c["envFrom"].as_array().into_iter().flatten() {
                    add(
                        "",
                        "configmaps",
                        "ConfigMap",
                        e["configMapRef"]["name"].as_str(),
                        false,
                    );
                    add(
                        "",
                        "secrets",
                        "Secret",
                        e["secretRef"]["name"].as_str(),
                        false,
                    );
                }
            }
        }
    }
    match (group, resource) {
        ("networking.k8s.io" | "extensions", "ingresses") => {
            let backends = obj["spec"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["http"]["paths"].as_array().into_iter().flatten())
                .map(|p| &p["backend"])
                .chain([&obj["spec"]["defaultBackend"], &obj["spec"]["backend"]]);
            for b in backends {
                add(
                    "",
                    "services",
                    "Service",
                    b["service"]["name"].as_str().or(b["serviceName"].as_str()),
                    false,
                );
            }
            for t in obj["spec"]["tls"].as_array().into_iter().flatten() {
                add("", "secrets", "Secret", t["secretName"].as_str(), false);
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings") => {
            if obj["roleRef"]["kind"] == "Role" {
                add(
                    "rbac.authorization.k8s.io",
                    "roles",
                    "Role",
                    obj["roleRef"]["name"].as_str(),
                    false,
                );
            }
            for s in obj["subjects"].as_array().into_iter().flatten() {
                if s["kind"] == "ServiceAccount" && s["namespace"] == obj["metadata"]["namespace"] {
                    add(
                        "",
                        "serviceaccounts",
                        "ServiceAccount",
                        s["name"].as_str(),
                        false,
                    );
                }
            }
        }
        _ => {}
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod reference_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_names_its_config_secrets_claims_and_account() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {
            "serviceAccountName": "web",
            "imagePullSecrets": [{"name": "regcred"}],
            "volumes": [{"name": "c", "configMap": {"name": "web-config"}},
                        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "p", "projected": {"sources": [{"secret": {"name": "tls"}}]}}],
            "containers": [{"name": "a", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                            "envFrom": [{"configMapRef": {"name": "env"}}]}]}}}});
        let names: Vec<String> = references("apps", "deployments", &d)
            .into_iter()
            .map(|r| format!("{}/{}", r.kind, r.name))
            .collect();
        assert_eq!(
            names,
            [
                "ConfigMap/env",
                "ConfigMap/web-config",
                "PersistentVolumeClaim/data",
                "Secret/db",
                "Secret/regcred",
                "Secret/tls",
                "ServiceAccount/web"
            ]
        );
    }
}
