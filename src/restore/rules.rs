//! Restore rules: order, stripping of server-populated fields, namespace mapping. Pure functions
//! over JSON objects; every rule is listed in docs/restore.md and has a unit test here.
use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Restore phase of a `group/resource`: lower first.
pub fn phase(group: &str, resource: &str) -> u8 {
    match (group, resource) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => 0,
        ("", "namespaces") => 1,
        ("storage.k8s.io", "storageclasses") => 2,
        ("", "persistentvolumes") => 3,
        ("", "persistentvolumeclaims") => 4,
        ("", "serviceaccounts" | "secrets" | "configmaps" | "limitranges" | "resourcequotas") => 5,
        (
            "rbac.authorization.k8s.io",
            "clusterroles" | "clusterrolebindings" | "roles" | "rolebindings",
        ) => 6,
        ("", "services") => 7,
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
}

impl RewriteOptions {
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
pub fn skip_reason(group: &str, resource: &str, obj: &Value) -> Option<String> {
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
            if let Some(a) = obj["metadata"]["annotations"].as_object_mut() {
                for k in [
                    "pv.kubernetes.io/bind-completed",
                    "pv.kubernetes.io/bound-by-controller",
                    "volume.beta.kubernetes.io/storage-provisioner",
                    "volume.kubernetes.io/storage-provisioner",
                    "volume.kubernetes.io/selected-node",
                ] {
                    a.remove(k);
                }
            }
        }
        ("", "persistentvolumes") => {
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
                "pv.kubernetes.io/bound-by-controller": "yes", "volume.kubernetes.io/selected-node": "n1", "keep": "me"}},
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
                &json!({"type": "kubernetes.io/service-account-token"})
            )
            .is_some()
        );
        assert!(skip_reason("", "secrets", &json!({"type": "Opaque"})).is_none());
        assert!(
            skip_reason(
                "",
                "configmaps",
                &json!({"metadata": {"name": "kube-root-ca.crt"}})
            )
            .is_some()
        );
        assert!(skip_reason("", "configmaps", &json!({"metadata": {"name": "app"}})).is_none());
    }
}
