//! Version and blocker checks against the target release.
use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};

use super::version::{Minor, kubelet_skew_problem};
use super::{Check, CheckStatus};
use crate::error::Error;

async fn list_all<K>(client: &kube::Client, what: &str) -> Result<Option<Vec<K>>, Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let mut lp = ListParams::default().limit(500);
    let mut out = Vec::new();
    loop {
        match api.list(&lp).await {
            Ok(page) => {
                out.extend(page.items);
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => lp = lp.continue_token(&c),
                    None => return Ok(Some(out)),
                }
            }
            Err(kube::Error::Api(s)) if s.code == 403 => return Ok(None),
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("list {what}"),
                    source,
                });
            }
        }
    }
}

fn forbidden(name: &str, what: &str) -> Check {
    Check::new(
        name,
        CheckStatus::Skipped,
        format!("not allowed to list {what}"),
        vec![],
    )
}

/// All checks. `current` is the apiserver's version now.
pub async fn run(
    client: &kube::Client,
    current: Minor,
    target: Minor,
) -> Result<Vec<Check>, Error> {
    let (nodes, pods, pdbs, vwh, mwh) = tokio::join!(
        list_all::<Node>(client, "nodes"),
        async {
            let api: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
            match api.list(&ListParams::default()).await {
                Ok(l) => Ok(Some(l.items)),
                Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
                Err(source) => Err(Error::Kube {
                    action: "list kube-system pods".into(),
                    source,
                }),
            }
        },
        list_all::<PodDisruptionBudget>(client, "poddisruptionbudgets"),
        list_all::<ValidatingWebhookConfiguration>(client, "validatingwebhookconfigurations"),
        list_all::<MutatingWebhookConfiguration>(client, "mutatingwebhookconfigurations"),
    );
    let mut checks = vec![control_plane_path(current, target)];
    checks.push(match pods? {
        Some(p) => components(&p, current),
        None => forbidden("control-plane-components", "pods in kube-system"),
    });
    match nodes? {
        Some(n) => {
            checks.push(node_skew(&n, target, "kubelet-skew", |n| {
                Some(n.kubelet_version.clone())
            }));
            checks.push(node_skew(&n, target, "kube-proxy-skew", |n| {
                Some(n.kube_proxy_version.clone())
            }));
            checks.push(node_health(&n));
        }
        None => {
            for c in ["kubelet-skew", "kube-proxy-skew", "node-health"] {
                checks.push(forbidden(c, "nodes"));
            }
        }
    }
    checks.push(match pdbs? {
        Some(p) => pdb_check(client, &p).await?,
        None => forbidden("pdb-disruptions", "poddisruptionbudgets"),
    });
    checks.push(match (vwh?, mwh?) {
        (Some(v), Some(m)) => webhook_check(client, &v, &m).await?,
        _ => forbidden("webhook-endpoints", "webhook configurations"),
    });
    Ok(checks)
}

pub fn control_plane_path(current: Minor, target: Minor) -> Check {
    let name = "control-plane-version";
    let steps = current.minors_to(target);
    if steps == 1 {
        Check::new(
            name,
            CheckStatus::Pass,
            format!("{current} → {target} is one minor version"),
            vec![],
        )
    } else if steps == 0 {
        Check::new(
            name,
            CheckStatus::Pass,
            format!("the control plane is already at {target}"),
            vec![],
        )
    } else if steps < 0 {
        Check::new(
            name,
            CheckStatus::Fail,
            format!(
                "{target} is older than the running {current}: Kubernetes does not support downgrades"
            ),
            vec![],
        )
    } else {
        let path: Vec<String> = (0..=steps)
            .map(|i| Minor::new(current.major, current.minor + i as u32).to_string())
            .collect();
        Check::new(
            name,
            CheckStatus::Fail,
            format!(
                "the control plane upgrades one minor at a time: {}",
                path.join(" → ")
            ),
            vec![],
        )
    }
}

fn image_version(image: &str) -> Option<Minor> {
    let image = image.split('@').next()?;
    let (repo, tag) = image.rsplit_once(':')?;
    let _ = repo;
    if tag.contains('/') {
        return None; // the colon was a registry port
    }
    if !tag.starts_with('v') {
        return None;
    }
    tag.parse().ok()
}

pub fn components(pods: &[Pod], apiserver: Minor) -> Check {
    let name = "control-plane-components";
    let mut seen = Vec::new();
    let mut bad = Vec::new();
    for p in pods {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let component = labels
            .get("component")
            .or_else(|| labels.get("k8s-app"))
            .cloned()
            .unwrap_or_default();
        if ![
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
        ]
        .contains(&component.as_str())
        {
            continue;
        }
        for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
            let Some(v) = c.image.as_deref().and_then(image_version) else {
                continue;
            };
            let who = format!(
                "pod/{} ({component} {v})",
                p.metadata.name.clone().unwrap_or_default()
            );
            if v > apiserver {
                bad.push(who.clone());
            }
            seen.push(who);
        }
    }
    if seen.is_empty() {
        Check::new(
            name,
            CheckStatus::Skipped,
            "no control-plane pods visible in kube-system (managed or process-based control plane)",
            vec![],
        )
    } else if bad.is_empty() {
        Check::new(
            name,
            CheckStatus::Pass,
            format!(
                "{} component(s) not newer than the apiserver {apiserver}",
                seen.len()
            ),
            seen,
        )
    } else {
        Check::new(
            name,
            CheckStatus::Fail,
            format!("components newer than the apiserver {apiserver}"),
            bad,
        )
    }
}

pub fn node_skew(
    nodes: &[Node],
    target: Minor,
    name: &str,
    get: impl Fn(&k8s_openapi::api::core::v1::NodeSystemInfo) -> Option<String> + Copy,
) -> Check {
    let what = if name == "kubelet-skew" {
        "kubelet"
    } else {
        "kube-proxy"
    };
    let mut bad = Vec::new();
    let mut known = 0;
    for n in nodes {
        let node = n.metadata.name.clone().unwrap_or_default();
        let Some(v) = n
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .and_then(|i| get(i))
        else {
            continue;
        };
        if v.is_empty() || v.starts_with("v0.0.0") {
            continue;
        }
        let Ok(m) = v.parse::<Minor>() else { continue };
        known += 1;
        if let Some(problem) = kubelet_skew_problem(m, target) {
            bad.push(format!("node/{node} ({what} {v}: {problem})"));
        }
    }
    if known == 0 {
        Check::new(
            name,
            CheckStatus::Skipped,
            format!("no node reports a {what} version"),
            vec![],
        )
    } else if bad.is_empty() {
        Check::new(
            name,
            CheckStatus::Pass,
            format!("all {known} node(s) within the skew policy for an apiserver at {target}"),
            vec![],
        )
    } else {
        Check::new(
            name,
            CheckStatus::Fail,
            format!(
                "{} node(s) must be upgraded before the control plane goes to {target}",
                bad.len()
            ),
            bad,
        )
    }
}

pub fn node_health(nodes: &[Node]) -> Check {
    let mut bad = Vec::new();
    for n in nodes {
        let node = n.metadata.name.clone().unwrap_or_default();
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status == "True")
            .unwrap_or(false);
        let cordoned = n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        match (ready, cordoned) {
            (false, true) => bad.push(format!("node/{node} (NotReady, cordoned)")),
            (false, false) => bad.push(format!("node/{node} (NotReady)")),
            (true, true) => bad.push(format!("node/{node} (cordoned)")),
            _ => {}
        }
    }
    if bad.is_empty() {
        Check::new(
            "node-health",
            CheckStatus::Pass,
            format!("all {} node(s) Ready and schedulable", nodes.len()),
            vec![],
        )
    } else {
        Check::new(
            "node-health",
            CheckStatus::Warn,
            format!("{} node(s) NotReady or cordoned", bad.len()),
            bad,
        )
    }
}

/// Does `selector` select `labels`? (matchLabels and matchExpressions; an empty selector selects
/// everything, as for PDBs in policy/v1.)
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    for (k, v) in selector.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let have = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// "Kind ns/name" of the workloads of type `K` in `ns` whose pod template `selector` selects.
async fn selected_workloads<K>(
    client: &kube::Client,
    ns: &str,
    selector: &LabelSelector,
    template: impl Fn(&K) -> Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> Vec<String>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let items = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    items
        .iter()
        .filter(|w| {
            let labels = template(w)
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            selects(selector, &labels)
        })
        .map(|w| {
            format!(
                "{} {ns}/{}",
                K::kind(&()),
                w.meta().name.clone().unwrap_or_default()
            )
        })
        .collect()
}

async fn pdb_check(client: &kube::Client, pdbs: &[PodDisruptionBudget]) -> Result<Check, Error> {
    let mut bad = Vec::new();
    for p in pdbs {
        let Some(st) = &p.status else { continue };
        if st.disruptions_allowed > 0 || st.expected_pods == 0 {
            continue;
        }
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let selector = p
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let mut owners = Vec::new();
        owners.extend(
            selected_workloads::<Deployment>(client, &ns, &selector, |d| {
                d.spec.as_ref().map(|s| &s.template)
            })
            .await,
        );
        owners.extend(
            selected_workloads::<StatefulSet>(client, &ns, &selector, |d| {
                d.spec.as_ref().map(|s| &s.template)
            })
            .await,
        );
        owners.extend(
            selected_workloads::<DaemonSet>(client, &ns, &selector, |d| {
                d.spec.as_ref().map(|s| &s.template)
            })
            .await,
        );
        let workload = if owners.is_empty() {
            "no workload found for its selector".to_string()
        } else {
            owners.join(", ")
        };
        bad.push(format!(
            "poddisruptionbudget/{ns}/{name} allows 0 disruptions ({} of {} pods healthy, {} desired): {workload}",
            st.current_healthy, st.expected_pods, st.desired_healthy
        ));
    }
    Ok(if bad.is_empty() {
        Check::new(
            "pdb-disruptions",
            CheckStatus::Pass,
            format!(
                "{} PodDisruptionBudget(s), none blocks draining",
                pdbs.len()
            ),
            vec![],
        )
    } else {
        Check::new(
            "pdb-disruptions",
            CheckStatus::Warn,
            format!(
                "{} PodDisruptionBudget(s) allow zero disruptions: node drains will hang",
                bad.len()
            ),
            bad,
        )
    })
}

async fn service_has_ready_endpoints(
    client: &kube::Client,
    ns: &str,
    svc: &str,
) -> Result<bool, Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let slices = match api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
    {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 403 => return Ok(true), // cannot tell: do not accuse
        Err(source) => {
            return Err(Error::Kube {
                action: "list endpointslices".into(),
                source,
            });
        }
    };
    Ok(slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)))
}

async fn webhook_check(
    client: &kube::Client,
    validating: &[ValidatingWebhookConfiguration],
    mutating: &[MutatingWebhookConfiguration],
) -> Result<Check, Error> {
    // (config kind, config name, webhook name, failurePolicy, service ns/name)
    let mut hooks = Vec::new();
    for c in validating {
        for w in c.webhooks.iter().flatten() {
            hooks.push((
                "ValidatingWebhookConfiguration",
                c.metadata.name.clone().unwrap_or_default(),
                w.name.clone(),
                w.failure_policy.clone(),
                w.client_config.service.clone(),
            ));
        }
    }
    for c in mutating {
        for w in c.webhooks.iter().flatten() {
            hooks.push((
                "MutatingWebhookConfiguration",
                c.metadata.name.clone().unwrap_or_default(),
                w.name.clone(),
                w.failure_policy.clone(),
                w.client_config.service.clone(),
            ));
        }
    }
    let mut bad = Vec::new();
    let mut fail_closed = 0;
    for (kind, cfg, hook, policy, svc) in &hooks {
        // admissionregistration.k8s.io/v1 defaults failurePolicy to Fail.
        if policy.as_deref().unwrap_or("Fail") != "Fail" {
            continue;
        }
        let Some(svc) = svc else { continue };
        fail_closed += 1;
        if !service_has_ready_endpoints(client, &svc.namespace, &svc.name).await? {
            bad.push(format!("{kind}/{cfg} webhook {hook}: failurePolicy Fail, service {}/{} has no ready endpoints", svc.namespace, svc.name));
        }
    }
    Ok(if bad.is_empty() {
        Check::new(
            "webhook-endpoints",
            CheckStatus::Pass,
            format!("{fail_closed} fail-closed webhook(s), all with ready endpoints"),
            vec![],
        )
    } else {
        Check::new(
            "webhook-endpoints",
            CheckStatus::Fail,
            format!(
                "{} fail-closed webhook(s) without ready endpoints: matching API requests will be rejected during the upgrade",
                bad.len()
            ),
            bad,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_minor_at_a_time() {
        let c = |a, b| control_plane_path(Minor::new(1, a), Minor::new(1, b));
        assert_eq!(c(34, 35).status, CheckStatus::Pass);
        assert_eq!(c(34, 34).status, CheckStatus::Pass);
        let skip = c(34, 36);
        assert_eq!(skip.status, CheckStatus::Fail);
        assert!(
            skip.message.contains("1.34 → 1.35 → 1.36"),
            "{}",
            skip.message
        );
        assert_eq!(c(34, 33).status, CheckStatus::Fail);
    }

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "fe".to_string()),
        ]
        .into();
        let sel: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"app": "web"}})).unwrap();
        assert!(selects(&sel, &labels));
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["be"]}]})).unwrap();
        assert!(!selects(&sel, &labels));
        let sel: LabelSelector = serde_json::from_value(
            serde_json::json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
        )
        .unwrap();
        assert!(selects(&sel, &labels));
    }

    #[test]
    fn image_tags() {
        assert_eq!(
            image_version("registry.k8s.io/kube-apiserver:v1.34.4"),
            Some(Minor::new(1, 34))
        );
        assert_eq!(
            image_version("localhost:5000/kube-proxy:v1.33.1@sha256:abc"),
            Some(Minor::new(1, 33))
        );
        assert_eq!(image_version("nginx:latest"), None);
    }
}
