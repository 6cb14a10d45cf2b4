//! Restoring into a newer Kubernetes: an object stored under an API version the target no longer
//! serves is converted to its replacement (from the deprecation database,
//! `data/deprecations.yaml`) when the conversion is mechanical. Each step of a chain (e.g.
//! flowcontrol v1beta1 → v1beta2 → v1beta3 → v1) is one known conversion; a kind lifeboat has no
//! mechanical conversion for, or an object whose meaning would change, is refused with what to do.
//! docs/restore.md lists every conversion.
use serde_json::{Map, Value, json};

use crate::preflight::db::Database;

/// A successful conversion: the object now has `api_version`; `notes` say what changed besides
/// the apiVersion (empty when the schemas are the same).
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub from: String,
    pub api_version: String,
    pub notes: Vec<String>,
}

impl Converted {
    /// One line for the restore report.
    pub fn describe(&self) -> String {
        let mut s = format!("converted from {} to {}", self.from, self.api_version);
        if !self.notes.is_empty() {
            s.push_str(": ");
            s.push_str(&self.notes.join("; "));
        }
        s
    }
}

fn split_api_version(av: &str) -> (&str, &str) {
    match av.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", av),
    }
}

/// Convert `obj` (whose apiVersion the target does not serve) until `served(group, version,
/// kind)` holds. `Ok(None)`: already served. `Err`: why it cannot be converted and what to do.
pub fn convert(
    obj: &mut Value,
    db: &Database,
    served: impl Fn(&str, &str, &str) -> bool,
) -> Result<Option<Converted>, String> {
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let from = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let mut notes = Vec::new();
    let mut current = from.clone();
    for _ in 0..6 {
        let (g, v) = split_api_version(&current);
        if served(g, v, &kind) {
            return Ok((current != from).then(|| Converted {
                from: from.clone(),
                api_version: current.clone(),
                notes: notes.clone(),
            }));
        }
        let Some(entry) = db.lookup(&current, &kind) else {
            return Err(format!(
                "{current} {kind} is not served by the target cluster (lifeboat knows no replacement for it)"
            ));
        };
        let Some(next) = entry.replacement.clone() else {
            return Err(no_replacement(&current, &kind, entry.note.as_deref()));
        };
        step(obj, &current, &next, &kind, &mut notes)?;
        obj["apiVersion"] = Value::String(next.clone());
        current = next;
    }
    Err(format!(
        "{from} {kind} is not served by the target cluster and no replacement in lifeboat's deprecation database is either"
    ))
}

fn no_replacement(av: &str, kind: &str, note: Option<&str>) -> String {
    match kind {
        "PodSecurityPolicy" => format!(
            "{av} PodSecurityPolicy was removed without a replacement: enforce Pod Security Standards with the pod-security.kubernetes.io/enforce label on namespaces (or an admission policy) instead; not restored"
        ),
        _ => format!(
            "{av} {kind} was removed without a replacement{}; not restored",
            note.map(|n| format!(" ({n})")).unwrap_or_default()
        ),
    }
}

/// Kinds whose schema did not change between the deprecated version and its replacement.
fn same_schema(kind: &str, from: &str, to: &str) -> bool {
    let (fg, _) = split_api_version(from);
    let (tg, _) = split_api_version(to);
    matches!(
        (kind, fg, tg),
        ("ControllerRevision", "apps", "apps")
            | ("NetworkPolicy", "extensions", "networking.k8s.io")
            | ("PodSecurityPolicy", "extensions", "policy")
            | ("APIService", "apiregistration.k8s.io", _)
            | ("Lease", "coordination.k8s.io", _)
            | ("IngressClass", "networking.k8s.io", _)
            | (
                "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding",
                "rbac.authorization.k8s.io",
                _
            )
            | ("PriorityClass", "scheduling.k8s.io", _)
            | (
                "CSIDriver"
                    | "CSINode"
                    | "StorageClass"
                    | "VolumeAttachment"
                    | "CSIStorageCapacity"
                    | "VolumeAttributesClass",
                "storage.k8s.io",
                _
            )
            | ("CronJob", "batch", "batch")
            | ("Event", "events.k8s.io", _)
            | ("RuntimeClass", "node.k8s.io", _)
            | ("FlowSchema", "flowcontrol.apiserver.k8s.io", _)
            | (
                "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding",
                "admissionregistration.k8s.io",
                _
            )
            | ("IPAddress" | "ServiceCIDR", "networking.k8s.io", _)
    ) || (kind == "HorizontalPodAutoscaler" && from == "autoscaling/v2beta2")
}

/// One conversion step from apiVersion `from` to `to`.
fn step(
    obj: &mut Value,
    from: &str,
    to: &str,
    kind: &str,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    if same_schema(kind, from, to) {
        return Ok(());
    }
    match (kind, to) {
        ("Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet", "apps/v1") => {
            workload(obj, from, kind, notes);
            Ok(())
        }
        ("Ingress", "networking.k8s.io/v1") => {
            ingress(obj, notes);
            Ok(())
        }
        ("HorizontalPodAutoscaler", "autoscaling/v2") => {
            hpa_v2beta1(obj, notes);
            Ok(())
        }
        ("PodDisruptionBudget", "policy/v1") => {
            let sel = &obj["spec"]["selector"];
            let empty = sel.is_null()
                || sel.as_object().is_some_and(|m| {
                    m.values().all(|v| {
                        v.is_null()
                            || v.as_object().is_some_and(|o| o.is_empty())
                            || v.as_array().is_some_and(|a| a.is_empty())
                    })
                });
            if empty {
                return Err(format!(
                    "{from} PodDisruptionBudget with an empty selector: in {from} it selects no pods, in policy/v1 every pod of its namespace; give it a selector and apply it by hand; not restored"
                ));
            }
            Ok(())
        }
        ("PriorityLevelConfiguration", _) => {
            priority_level(obj, from, to, notes);
            Ok(())
        }
        ("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration", _) => {
            webhooks(obj, from, notes)
        }
        ("EndpointSlice", "discovery.k8s.io/v1") => {
            endpoint_slice(obj, notes);
            Ok(())
        }
        ("CertificateSigningRequest", "certificates.k8s.io/v1")
            if obj["spec"]["signerName"]
                .as_str()
                .is_some_and(|s| s != "kubernetes.io/legacy-unknown") =>
        {
            Ok(())
        }
        ("CustomResourceDefinition", _) => Err(format!(
            "{from} CustomResourceDefinition is not served; {to} needs a structural schema per version, which is not a mechanical change: convert it by hand (its custom resources are restored once it exists); not restored"
        )),
        _ => Err(format!(
            "{from} {kind} is not served by the target cluster; its replacement is {to}, but lifeboat has no mechanical conversion for it: convert the object by hand (e.g. with a --transform rule or kubectl convert); not restored"
        )),
    }
}

fn workload(obj: &mut Value, from: &str, kind: &str, notes: &mut Vec<String>) {
    let Some(spec) = obj["spec"].as_object_mut() else {
        return;
    };
    if spec.get("selector").is_none_or(Value::is_null) {
        let labels = spec
            .get("template")
            .and_then(|t| t["metadata"]["labels"].as_object())
            .cloned()
            .unwrap_or_default();
        spec.insert("selector".into(), json!({ "matchLabels": labels }));
        notes.push("spec.selector set from the pod template's labels (apps/v1 requires it)".into());
    }
    for gone in ["rollbackTo", "templateGeneration"] {
        if spec.remove(gone).is_some() {
            notes.push(format!("spec.{gone} dropped (not in apps/v1)"));
        }
    }
    // The old versions defaulted these differently; keep the behaviour the object had.
    let old_on_delete = match kind {
        "DaemonSet" => from == "extensions/v1beta1",
        "StatefulSet" => from == "apps/v1beta1",
        _ => false,
    };
    if old_on_delete && spec.get("updateStrategy").is_none_or(Value::is_null) {
        spec.insert("updateStrategy".into(), json!({"type": "OnDelete"}));
        notes.push(format!(
            "spec.updateStrategy set to OnDelete ({from}'s default; apps/v1 defaults to RollingUpdate)"
        ));
    }
}

fn ingress_backend(b: &Value) -> Value {
    if b.get("resource").is_some() {
        return json!({"resource": b["resource"]});
    }
    let port = match &b["servicePort"] {
        Value::Number(n) => json!({"number": n}),
        Value::String(s) => match s.parse::<u64>() {
            Ok(n) => json!({"number": n}),
            Err(_) => json!({"name": s}),
        },
        _ => json!({}),
    };
    json!({"service": {"name": b["serviceName"], "port": port}})
}

fn ingress(obj: &mut Value, notes: &mut Vec<String>) {
    let Some(spec) = obj["spec"].as_object_mut() else {
        return;
    };
    if let Some(b) = spec.remove("backend") {
        spec.insert("defaultBackend".into(), ingress_backend(&b));
        notes.push("spec.backend became spec.defaultBackend".into());
    }
    let mut paths = 0;
    let mut typed = 0;
    if let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) {
        for r in rules {
            if let Some(ps) = r["http"]["paths"].as_array_mut() {
                for p in ps {
                    paths += 1;
                    if let Some(b) = p.get("backend").cloned() {
                        p["backend"] = ingress_backend(&b);
                    }
                    if p.get("pathType").is_none_or(Value::is_null) {
                        p["pathType"] = json!("ImplementationSpecific");
                        typed += 1;
                    }
                }
            }
        }
    }
    if paths > 0 {
        notes.push("backends serviceName/servicePort became service.name/service.port".into());
    }
    if typed > 0 {
        notes.push(format!(
            "pathType ImplementationSpecific set on {typed} path(s) (the old default)"
        ));
    }
}

/// autoscaling/v2beta1 metric specs → autoscaling/v2 (`target` objects).
fn hpa_v2beta1(obj: &mut Value, notes: &mut Vec<String>) {
    let Some(metrics) = obj["spec"]["metrics"].as_array_mut() else {
        return;
    };
    for m in metrics.iter_mut() {
        let t = m["type"].as_str().unwrap_or_default().to_string();
        let key = match t.as_str() {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => continue,
        };
        let Some(old) = m.get(key).and_then(Value::as_object).cloned() else {
            continue;
        };
        let mut new = Map::new();
        let target = if let Some(u) = old.get("targetAverageUtilization") {
            json!({"type": "Utilization", "averageUtilization": u})
        } else if let Some(v) = old.get("targetAverageValue") {
            json!({"type": "AverageValue", "averageValue": v})
        } else if let Some(v) = old.get("averageValue") {
            json!({"type": "AverageValue", "averageValue": v})
        } else if let Some(v) = old.get("targetValue") {
            json!({"type": "Value", "value": v})
        } else {
            Value::Null
        };
        match key {
            "resource" | "containerResource" => {
                new.insert("name".into(), old.get("name").cloned().unwrap_or_default());
                if let Some(c) = old.get("container") {
                    new.insert("container".into(), c.clone());
                }
            }
            _ => {
                let mut metric = Map::new();
                metric.insert(
                    "name".into(),
                    old.get("metricName").cloned().unwrap_or_default(),
                );
                if let Some(s) = old.get("selector").or_else(|| old.get("metricSelector")) {
                    metric.insert("selector".into(), s.clone());
                }
                new.insert("metric".into(), Value::Object(metric));
                if key == "object"
                    && let Some(t) = old.get("target")
                {
                    new.insert("describedObject".into(), t.clone());
                }
            }
        }
        if !target.is_null() {
            new.insert("target".into(), target);
        }
        m[key] = Value::Object(new);
    }
    notes.push("metrics rewritten to autoscaling/v2 metric/target form".into());
}

fn priority_level(obj: &mut Value, from: &str, to: &str, notes: &mut Vec<String>) {
    let limited = &mut obj["spec"]["limited"];
    if !limited.is_object() {
        return;
    }
    if let Some(v) = limited
        .as_object_mut()
        .and_then(|l| l.remove("assuredConcurrencyShares"))
    {
        limited["nominalConcurrencyShares"] = v;
        notes.push("spec.limited.assuredConcurrencyShares became nominalConcurrencyShares".into());
    }
    // v1beta3 treated 0 as "unset" (30); v1 takes 0 literally.
    if from.ends_with("/v1beta3")
        && to.ends_with("/v1")
        && limited["nominalConcurrencyShares"].as_u64() == Some(0)
    {
        limited["nominalConcurrencyShares"] = json!(30);
        notes.push("nominalConcurrencyShares 0 (v1beta3: the default, 30) set to 30".into());
    }
}

fn webhooks(obj: &mut Value, from: &str, notes: &mut Vec<String>) -> Result<(), String> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(hooks) = obj["webhooks"].as_array_mut() else {
        return Ok(());
    };
    let mut defaulted = false;
    for h in hooks.iter_mut() {
        match h["sideEffects"].as_str() {
            Some("None" | "NoneOnDryRun") => {}
            other => {
                return Err(format!(
                    "{from} webhook {} of {name} has sideEffects {}: admissionregistration.k8s.io/v1 accepts only None or NoneOnDryRun; check the webhook and apply it by hand; not restored",
                    h["name"].as_str().unwrap_or("?"),
                    other.unwrap_or("unset (Unknown)")
                ));
            }
        }
        for (field, old_default) in [
            ("admissionReviewVersions", json!(["v1beta1"])),
            ("failurePolicy", json!("Ignore")),
            ("matchPolicy", json!("Exact")),
            ("timeoutSeconds", json!(30)),
        ] {
            if h.get(field).is_none_or(Value::is_null) {
                h[field] = old_default;
                defaulted = true;
            }
        }
    }
    if defaulted {
        notes.push(format!(
            "unset webhook fields given {from}'s defaults (admissionReviewVersions [v1beta1], failurePolicy Ignore, matchPolicy Exact, timeoutSeconds 30)"
        ));
    }
    Ok(())
}

fn endpoint_slice(obj: &mut Value, notes: &mut Vec<String>) {
    let Some(eps) = obj["endpoints"].as_array_mut() else {
        return;
    };
    let mut moved = false;
    for ep in eps.iter_mut() {
        let Some(topo) = ep
            .as_object_mut()
            .and_then(|o| o.remove("topology"))
            .and_then(|t| t.as_object().cloned())
        else {
            continue;
        };
        moved = true;
        let mut rest = Map::new();
        for (k, v) in topo {
            match k.as_str() {
                "kubernetes.io/hostname" if ep.get("nodeName").is_none() => {
                    ep["nodeName"] = v;
                }
                "topology.kubernetes.io/zone" if ep.get("zone").is_none() => {
                    ep["zone"] = v;
                }
                _ => {
                    rest.insert(k, v);
                }
            }
        }
        if !rest.is_empty() {
            ep["deprecatedTopology"] = Value::Object(rest);
        }
    }
    if moved {
        notes.push("endpoints[].topology became nodeName, zone and deprecatedTopology".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served_v134(g: &str, v: &str, _k: &str) -> bool {
        matches!(
            (g, v),
            ("", "v1")
                | ("apps", "v1")
                | ("batch", "v1")
                | ("policy", "v1")
                | ("networking.k8s.io", "v1")
                | ("autoscaling", "v1" | "v2")
                | ("storage.k8s.io", "v1")
                | ("flowcontrol.apiserver.k8s.io", "v1")
                | ("admissionregistration.k8s.io", "v1")
                | ("discovery.k8s.io", "v1")
                | ("rbac.authorization.k8s.io", "v1")
                | ("apiextensions.k8s.io", "v1")
        )
    }

    fn conv(v: Value) -> (Value, Result<Option<Converted>, String>) {
        let mut v = v;
        let db = Database::embedded();
        let r = convert(&mut v, &db, served_v134);
        (v, r)
    }

    #[test]
    fn served_objects_are_untouched() {
        let o = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 2}});
        let (v, r) = conv(o.clone());
        assert_eq!(r, Ok(None));
        assert_eq!(v, o);
    }

    #[test]
    fn ingress_extensions_v1beta1() {
        let (v, r) = conv(json!({
            "apiVersion": "extensions/v1beta1", "kind": "Ingress",
            "metadata": {"name": "web"},
            "spec": {
                "backend": {"serviceName": "default", "servicePort": 80},
                "rules": [{"host": "a.example", "http": {"paths": [
                    {"path": "/", "backend": {"serviceName": "web", "servicePort": "http"}},
                    {"path": "/api", "pathType": "Prefix", "backend": {"serviceName": "api", "servicePort": "8080"}}
                ]}}]
            }
        }));
        let c = r.unwrap().unwrap();
        assert_eq!(c.api_version, "networking.k8s.io/v1");
        assert_eq!(v["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(
            v["spec"]["defaultBackend"],
            json!({"service": {"name": "default", "port": {"number": 80}}})
        );
        assert!(v["spec"].get("backend").is_none());
        let paths = &v["spec"]["rules"][0]["http"]["paths"];
        assert_eq!(
            paths[0]["backend"],
            json!({"service": {"name": "web", "port": {"name": "http"}}})
        );
        assert_eq!(paths[0]["pathType"], "ImplementationSpecific");
        assert_eq!(paths[1]["pathType"], "Prefix");
        assert_eq!(
            paths[1]["backend"]["service"]["port"],
            json!({"number": 8080})
        );
        assert!(c.describe().contains("defaultBackend"), "{}", c.describe());
    }

    #[test]
    fn hpa_v2beta1_metrics() {
        let (v, r) = conv(json!({
            "apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler",
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                     "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 70}},
                        {"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "10"}},
                        {"type": "Object", "object": {"metricName": "hits", "target": {"kind": "Service", "name": "web"}, "targetValue": "100"}},
                        {"type": "External", "external": {"metricName": "queue", "metricSelector": {"matchLabels": {"q": "a"}}, "targetAverageValue": "5"}}
                     ]}
        }));
        assert_eq!(r.unwrap().unwrap().api_version, "autoscaling/v2");
        let m = &v["spec"]["metrics"];
        assert_eq!(
            m[0]["resource"],
            json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}})
        );
        assert_eq!(
            m[1]["pods"],
            json!({"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}})
        );
        assert_eq!(
            m[2]["object"],
            json!({"metric": {"name": "hits"}, "describedObject": {"kind": "Service", "name": "web"},
                   "target": {"type": "Value", "value": "100"}})
        );
        assert_eq!(
            m[3]["external"],
            json!({"metric": {"name": "queue", "selector": {"matchLabels": {"q": "a"}}},
                   "target": {"type": "AverageValue", "averageValue": "5"}})
        );
    }

    #[test]
    fn flowcontrol_chain_to_v1() {
        let (v, r) = conv(json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1beta1", "kind": "PriorityLevelConfiguration",
            "spec": {"type": "Limited", "limited": {"assuredConcurrencyShares": 0,
                     "limitResponse": {"type": "Reject"}}}
        }));
        let c = r.unwrap().unwrap();
        assert_eq!(c.api_version, "flowcontrol.apiserver.k8s.io/v1");
        assert_eq!(v["spec"]["limited"]["nominalConcurrencyShares"], 30);
        assert!(
            v["spec"]["limited"]
                .get("assuredConcurrencyShares")
                .is_none()
        );
    }

    #[test]
    fn same_schema_kinds_change_only_api_version() {
        for (av, kind, to) in [
            ("batch/v1beta1", "CronJob", "batch/v1"),
            (
                "storage.k8s.io/v1beta1",
                "CSIStorageCapacity",
                "storage.k8s.io/v1",
            ),
            (
                "autoscaling/v2beta2",
                "HorizontalPodAutoscaler",
                "autoscaling/v2",
            ),
            (
                "rbac.authorization.k8s.io/v1beta1",
                "Role",
                "rbac.authorization.k8s.io/v1",
            ),
            (
                "extensions/v1beta1",
                "NetworkPolicy",
                "networking.k8s.io/v1",
            ),
        ] {
            let o = json!({"apiVersion": av, "kind": kind, "spec": {"x": 1}});
            let (v, r) = conv(o);
            let c = r.unwrap().unwrap();
            assert_eq!(c.api_version, to, "{av} {kind}");
            assert!(c.notes.is_empty());
            assert_eq!(v["spec"], json!({"x": 1}));
        }
    }

    #[test]
    fn workloads_get_a_selector_and_old_defaults() {
        let (v, r) = conv(json!({
            "apiVersion": "extensions/v1beta1", "kind": "DaemonSet",
            "spec": {"templateGeneration": 3,
                     "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {}}}
        }));
        let c = r.unwrap().unwrap();
        assert_eq!(c.api_version, "apps/v1");
        assert_eq!(
            v["spec"]["selector"],
            json!({"matchLabels": {"app": "agent"}})
        );
        assert_eq!(v["spec"]["updateStrategy"]["type"], "OnDelete");
        assert!(v["spec"].get("templateGeneration").is_none());
    }

    #[test]
    fn pdb_with_an_empty_selector_is_refused() {
        let (_, r) = conv(
            json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget",
                                  "spec": {"minAvailable": 1, "selector": {}}}),
        );
        assert!(r.unwrap_err().contains("empty selector"));
        let (v, r) = conv(
            json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget",
                                  "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "b"}}}}),
        );
        assert_eq!(r.unwrap().unwrap().api_version, "policy/v1");
        assert_eq!(v["apiVersion"], "policy/v1");
    }

    #[test]
    fn refusals_say_what_to_do() {
        let (_, r) =
            conv(json!({"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "spec": {}}));
        assert!(r.unwrap_err().contains("Pod Security"));
        let (_, r) = conv(
            json!({"apiVersion": "extensions/v1beta1", "kind": "PodSecurityPolicy", "spec": {}}),
        );
        assert!(r.unwrap_err().contains("without a replacement"));
        let (_, r) = conv(
            json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition"}),
        );
        assert!(r.unwrap_err().contains("structural schema"));
        let (_, r) = conv(json!({"apiVersion": "admissionregistration.k8s.io/v1beta1",
            "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "w"},
            "webhooks": [{"name": "a.example"}]}));
        assert!(r.unwrap_err().contains("sideEffects"));
        let (_, r) = conv(json!({"apiVersion": "example.com/v1alpha1", "kind": "Widget"}));
        assert!(r.unwrap_err().contains("not served"));
    }

    #[test]
    fn webhooks_keep_their_old_defaults() {
        let (v, r) = conv(json!({"apiVersion": "admissionregistration.k8s.io/v1beta1",
            "kind": "MutatingWebhookConfiguration", "metadata": {"name": "w"},
            "webhooks": [{"name": "a.example", "sideEffects": "None", "timeoutSeconds": 5}]}));
        r.unwrap().unwrap();
        let h = &v["webhooks"][0];
        assert_eq!(h["failurePolicy"], "Ignore");
        assert_eq!(h["matchPolicy"], "Exact");
        assert_eq!(h["timeoutSeconds"], 5);
        assert_eq!(h["admissionReviewVersions"], json!(["v1beta1"]));
    }

    #[test]
    fn endpoint_slice_topology() {
        let (v, r) = conv(
            json!({"apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "topology": {
                "kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": "z", "rack": "r1"}}]}),
        );
        r.unwrap().unwrap();
        let ep = &v["endpoints"][0];
        assert_eq!(ep["nodeName"], "n1");
        assert_eq!(ep["zone"], "z");
        assert_eq!(ep["deprecatedTopology"], json!({"rack": "r1"}));
        assert!(ep.get("topology").is_none());
    }
}
