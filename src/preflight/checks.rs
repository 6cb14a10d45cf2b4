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

use super::version::{Minor, kube_proxy_skew_problem, kubelet_skew_problem};
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

/// All checks. `current` is the apiserver's version now. `nodes`: node-upgrade mode (`target`
/// is what the kubelets go to; the control plane must be there already).
pub async fn run(
    client: &kube::Client,
    current: Minor,
    target: Minor,
    node_mode: bool,
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
    // Node upgrades: what the kubelets are measured against is the API server as it is now.
    let skew_against = if node_mode { current } else { target };
    let mut checks = vec![if node_mode {
        apiserver_at_node_target(current, target)
    } else {
        control_plane_path(current, target)
    }];
    let pods = pods?;
    let nodes = nodes?;
    checks.push(match &pods {
        Some(p) => components(p, current),
        None => forbidden("control-plane-components", "pods in kube-system"),
    });
    match &nodes {
        Some(n) => checks.push(node_skew(n, skew_against, "kubelet-skew", |n| {
            Some(n.kubelet_version.clone())
        })),
        None => checks.push(forbidden("kubelet-skew", "nodes")),
    }
    checks.push(match &pods {
        Some(p) => kube_proxy_skew(p, nodes.as_deref(), skew_against),
        None => forbidden("kube-proxy-skew", "pods in kube-system"),
    });
    checks.push(match &nodes {
        Some(n) => node_health(n),
        None => forbidden("node-health", "nodes"),
    });
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

/// Node-upgrade mode: kubelets go to `target` only once the API server is there (a kubelet may
/// never be newer than the API server).
pub fn apiserver_at_node_target(current: Minor, target: Minor) -> Check {
    let name = "apiserver-at-target";
    match current.minors_to(target) {
        d if d > 0 => Check::new(
            name,
            CheckStatus::Fail,
            format!(
                "the API server is at {current}: upgrade the control plane to {target} before the nodes (a kubelet may never be newer than the API server)"
            ),
            vec![],
        ),
        0 => Check::new(
            name,
            CheckStatus::Pass,
            format!("the API server is at {target}: nodes may follow"),
            vec![],
        ),
        _ => match kubelet_skew_problem(target, current) {
            Some(p) => Check::new(
                name,
                CheckStatus::Fail,
                format!("kubelets at {target} would be {p}"),
                vec![],
            ),
            None => Check::new(
                name,
                CheckStatus::Pass,
                format!(
                    "the API server is at {current}; kubelets at {target} are within the skew policy"
                ),
                vec![],
            ),
        },
    }
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
            .and_then(get)
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

/// Is this pod kube-proxy? kubeadm, EKS and most installers label its DaemonSet pods
/// `k8s-app=kube-proxy`; GKE and AKS use `component=kube-proxy`.
fn is_kube_proxy(p: &Pod) -> bool {
    let labels = p.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label("k8s-app") == Some("kube-proxy") || label("component") == Some("kube-proxy")
}

/// kube-proxy's version from its image tag: the container named kube-proxy, else the first with
/// a version tag.
fn kube_proxy_version(p: &Pod) -> Option<Minor> {
    let containers = &p.spec.as_ref()?.containers;
    let tagged =
        |c: &k8s_openapi::api::core::v1::Container| c.image.as_deref().and_then(image_version);
    containers
        .iter()
        .find(|c| c.name == "kube-proxy")
        .and_then(tagged)
        .or_else(|| containers.iter().find_map(tagged))
}

/// `kube-proxy-skew`: kube-proxy's real version, from its pods in kube-system (image tag, per
/// node through `spec.nodeName`), against the target apiserver and the kubelet of its node. Node
/// status' `kubeProxyVersion` is not used: the kubelet filled it with its own version up to 1.32
/// and leaves it empty from 1.33. `nodes`: `None` when nodes cannot be listed (only the target
/// is checked then).
pub fn kube_proxy_skew(pods: &[Pod], nodes: Option<&[Node]>, target: Minor) -> Check {
    let name = "kube-proxy-skew";
    let kubelets: BTreeMap<String, Minor> = nodes
        .unwrap_or_default()
        .iter()
        .filter_map(|n| {
            let v = n
                .status
                .as_ref()?
                .node_info
                .as_ref()?
                .kubelet_version
                .parse()
                .ok()?;
            Some((n.metadata.name.clone()?, v))
        })
        .collect();
    let proxies: Vec<&Pod> = pods.iter().filter(|p| is_kube_proxy(p)).collect();
    if proxies.is_empty() {
        return Check::new(
            name,
            CheckStatus::Skipped,
            "skipped: no kube-proxy found (no pod in kube-system labelled k8s-app=kube-proxy or component=kube-proxy; a kube-proxy-free CNI?)",
            vec![],
        );
    }
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    let mut known = 0;
    for p in proxies {
        let pod = p.metadata.name.clone().unwrap_or_default();
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        let on = node
            .as_deref()
            .map(|n| format!(" on node/{n}"))
            .unwrap_or_default();
        let Some(v) = kube_proxy_version(p) else {
            unknown.push(format!("pod/{pod}{on} (no version in its image tag)"));
            continue;
        };
        known += 1;
        let kubelet = node.as_ref().and_then(|n| kubelets.get(n)).copied();
        if let Some(problem) = kube_proxy_skew_problem(v, target, kubelet) {
            let beside = kubelet
                .map(|k| format!(", kubelet {k}"))
                .unwrap_or_default();
            bad.push(format!("pod/{pod}{on} (kube-proxy {v}{beside}: {problem})"));
        }
    }
    if !bad.is_empty() {
        let n = bad.len();
        bad.extend(unknown);
        Check::new(
            name,
            CheckStatus::Fail,
            format!("{n} kube-proxy pod(s) outside the skew policy for an apiserver at {target}"),
            bad,
        )
    } else if known == 0 {
        Check::new(
            name,
            CheckStatus::Skipped,
            "skipped: kube-proxy found, but no version in its image tags",
            unknown,
        )
    } else if !unknown.is_empty() {
        Check::new(
            name,
            CheckStatus::Warn,
            format!(
                "{known} kube-proxy pod(s) within the skew policy for an apiserver at {target}; {} without a version in the image tag",
                unknown.len()
            ),
            unknown,
        )
    } else {
        Check::new(
            name,
            CheckStatus::Pass,
            format!(
                "all {known} kube-proxy pod(s) within the skew policy for an apiserver at {target} and their nodes' kubelets"
            ),
            vec![],
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

/// What a webhook's service has, as far as we may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    Ready,
    NotReady,
    /// The EndpointSlices could not be read (the API's message, e.g. forbidden).
    Unreadable(String),
}

async fn service_endpoints(client: &kube::Client, ns: &str, svc: &str) -> Result<Endpoints, Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let slices = match api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
    {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 403 => return Ok(Endpoints::Unreadable(s.message)),
        Err(source) => {
            return Err(Error::Kube {
                action: "list endpointslices".into(),
                source,
            });
        }
    };
    Ok(
        if slices
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        {
            Endpoints::Ready
        } else {
            Endpoints::NotReady
        },
    )
}

/// One fail-closed webhook: "Kind/config webhook name", its service "ns/name", its endpoints.
pub struct FailClosedHook {
    pub hook: String,
    pub service: String,
    pub endpoints: Endpoints,
}

/// The `webhook-endpoints` verdict over the fail-closed webhooks: fail when one is known to have
/// no ready endpoints; skipped (with the API's reason) when some could not be read and none is
/// known bad — "cannot tell" is never a pass.
pub fn webhook_verdict(hooks: &[FailClosedHook]) -> Check {
    let name = "webhook-endpoints";
    let mut bad = Vec::new();
    let mut unreadable = Vec::new();
    let mut reasons: Vec<&str> = Vec::new();
    for h in hooks {
        match &h.endpoints {
            Endpoints::Ready => {}
            Endpoints::NotReady => bad.push(format!(
                "{}: failurePolicy Fail, service {} has no ready endpoints",
                h.hook, h.service
            )),
            Endpoints::Unreadable(why) => {
                unreadable.push(format!(
                    "{}: service {}: endpoints not readable ({why})",
                    h.hook, h.service
                ));
                if !reasons.contains(&why.as_str()) {
                    reasons.push(why);
                }
            }
        }
    }
    if !bad.is_empty() {
        let n = bad.len();
        bad.extend(unreadable);
        Check::new(
            name,
            CheckStatus::Fail,
            format!(
                "{n} fail-closed webhook(s) without ready endpoints: matching API requests will be rejected during the upgrade"
            ),
            bad,
        )
    } else if !unreadable.is_empty() {
        Check::new(
            name,
            CheckStatus::Skipped,
            format!(
                "skipped (forbidden: {}): the endpoints of {} of {} fail-closed webhook(s) could not be read",
                reasons.join("; "),
                unreadable.len(),
                hooks.len()
            ),
            unreadable,
        )
    } else {
        Check::new(
            name,
            CheckStatus::Pass,
            format!(
                "{} fail-closed webhook(s), all with ready endpoints",
                hooks.len()
            ),
            vec![],
        )
    }
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
    let mut fail_closed = Vec::new();
    for (kind, cfg, hook, policy, svc) in &hooks {
        // admissionregistration.k8s.io/v1 defaults failurePolicy to Fail.
        if policy.as_deref().unwrap_or("Fail") != "Fail" {
            continue;
        }
        let Some(svc) = svc else { continue };
        fail_closed.push(FailClosedHook {
            hook: format!("{kind}/{cfg} webhook {hook}"),
            service: format!("{}/{}", svc.namespace, svc.name),
            endpoints: service_endpoints(client, &svc.namespace, &svc.name).await?,
        });
    }
    Ok(webhook_verdict(&fail_closed))
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

    fn node(name: &str, kubelet: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"nodeInfo": {"kubeletVersion": kubelet, "kubeProxyVersion": kubelet,
                "architecture": "amd64", "operatingSystem": "linux", "bootID": "",
                "containerRuntimeVersion": "", "kernelVersion": "", "machineID": "",
                "osImage": "", "systemUUID": ""}}
        }))
        .unwrap()
    }

    fn proxy_pod(name: &str, node: &str, labels: serde_json::Value, image: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "kube-proxy", "image": image}]}
        }))
        .unwrap()
    }

    /// kube-proxy's version comes from its pods' images, per node: node status'
    /// kubeProxyVersion was the kubelet's own version (and is empty from 1.33).
    #[test]
    fn kube_proxy_skew_reads_the_pods_not_the_node_status() {
        let target = Minor::new(1, 35);
        // The kubelets are fine (1.34); kube-proxy on node b is 1.31: four minors behind 1.35.
        let nodes = vec![node("a", "v1.34.4"), node("b", "v1.34.4")];
        let pods = vec![
            proxy_pod(
                "kube-proxy-1",
                "a",
                serde_json::json!({"k8s-app": "kube-proxy"}),
                "registry.k8s.io/kube-proxy:v1.34.4",
            ),
            proxy_pod(
                "kube-proxy-2",
                "b",
                serde_json::json!({"k8s-app": "kube-proxy"}),
                "registry.k8s.io/kube-proxy:v1.31.2",
            ),
        ];
        let c = kube_proxy_skew(&pods, Some(&nodes), target);
        assert_eq!(c.status, CheckStatus::Fail, "{c:#?}");
        assert_eq!(c.objects.len(), 1, "{c:#?}");
        assert!(
            c.objects[0].contains("kube-proxy-2") && c.objects[0].contains("node/b"),
            "{c:#?}"
        );
        // All within the policy: pass, naming how many were checked.
        let pods = vec![proxy_pod(
            "kube-proxy-x",
            "a",
            serde_json::json!({"component": "kube-proxy"}),
            "gke.gcr.io/kube-proxy-amd64:v1.33.1-gke.100",
        )];
        let c = kube_proxy_skew(&pods, Some(&nodes), target);
        assert_eq!(c.status, CheckStatus::Pass, "{c:#?}");
    }

    /// kube-proxy may be at most three minors older or newer than the kubelet beside it (two
    /// for kube-proxy older than 1.25), and never newer than the apiserver.
    #[test]
    fn kube_proxy_against_its_nodes_kubelet_and_the_target() {
        let target = Minor::new(1, 35);
        let pod = |v: &str| {
            vec![proxy_pod(
                "kube-proxy-1",
                "a",
                serde_json::json!({"k8s-app": "kube-proxy"}),
                &format!("registry.k8s.io/kube-proxy:{v}"),
            )]
        };
        // kubelet 1.31 (itself too old for 1.35, but that is kubelet-skew's finding), kube-proxy
        // 1.35: four minors newer than its kubelet.
        let nodes = vec![node("a", "v1.31.0")];
        let c = kube_proxy_skew(&pod("v1.35.0"), Some(&nodes), target);
        assert_eq!(c.status, CheckStatus::Fail, "{c:#?}");
        assert!(c.objects[0].contains("kubelet"), "{c:#?}");
        // kube-proxy 1.36: newer than the target apiserver.
        let nodes = vec![node("a", "v1.35.0")];
        let c = kube_proxy_skew(&pod("v1.36.0"), Some(&nodes), target);
        assert_eq!(c.status, CheckStatus::Fail, "{c:#?}");
        assert!(c.objects[0].contains("apiserver"), "{c:#?}");
        // kube-proxy 1.32 beside kubelet 1.35, apiserver 1.35: three minors is allowed.
        let c = kube_proxy_skew(&pod("v1.32.9"), Some(&nodes), target);
        assert_eq!(c.status, CheckStatus::Pass, "{c:#?}");
        // kube-proxy 1.24 beside kubelet 1.27 (apiserver 1.26): older than 1.25 allows two.
        let nodes = vec![node("a", "v1.27.0")];
        let c = kube_proxy_skew(&pod("v1.24.0"), Some(&nodes), Minor::new(1, 26));
        assert_eq!(c.status, CheckStatus::Fail, "{c:#?}");
        // Without node access the target is still checked.
        let c = kube_proxy_skew(&pod("v1.31.0"), None, target);
        assert_eq!(c.status, CheckStatus::Fail, "{c:#?}");
    }

    /// No kube-proxy (kube-proxy-free CNIs): skipped and says so, never a silent pass — also on
    /// a 1.33+ cluster whose node status has no kubeProxyVersion.
    #[test]
    fn no_kube_proxy_is_skipped_and_says_so() {
        let nodes = vec![node("a", "v1.34.4")];
        let other: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "coredns-1", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"nodeName": "a", "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.12.0"}]}
        }))
        .unwrap();
        let c = kube_proxy_skew(&[other], Some(&nodes), Minor::new(1, 35));
        assert_eq!(c.status, CheckStatus::Skipped, "{c:#?}");
        assert!(c.message.contains("no kube-proxy found"), "{c:#?}");
    }

    fn hook(name: &str, endpoints: Endpoints) -> FailClosedHook {
        FailClosedHook {
            hook: format!("ValidatingWebhookConfiguration/{name} webhook check.example.com"),
            service: format!("ns/{name}"),
            endpoints,
        }
    }

    /// A 403 on the EndpointSlices is "cannot tell": skipped with the reason, never a pass.
    #[test]
    fn unreadable_webhook_endpoints_are_skipped_not_passed() {
        let forbidden =
            Endpoints::Unreadable("endpointslices.discovery.k8s.io is forbidden".into());
        let c = webhook_verdict(&[hook("a", Endpoints::Ready), hook("b", forbidden.clone())]);
        assert_eq!(c.status, CheckStatus::Skipped, "{c:#?}");
        assert!(c.message.starts_with("skipped (forbidden: "), "{c:#?}");
        assert!(c.objects.iter().any(|o| o.contains("ns/b")), "{c:#?}");
        // A webhook known to be without endpoints still fails, and the unreadable one is named.
        let c = webhook_verdict(&[hook("a", Endpoints::NotReady), hook("b", forbidden)]);
        assert_eq!(c.status, CheckStatus::Fail, "{c:#?}");
        assert_eq!(c.objects.len(), 2, "{c:#?}");
        // Readable and ready: pass.
        let c = webhook_verdict(&[hook("a", Endpoints::Ready)]);
        assert_eq!(c.status, CheckStatus::Pass, "{c:#?}");
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
