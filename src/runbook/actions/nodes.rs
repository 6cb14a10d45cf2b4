//! Node actions: cordon, uncordon, drain, waitNodeVersion.
use super::*;

/// `cordon`: mark a node unschedulable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CordonAction {
    pub node: String,
}

/// `uncordon`: mark a node schedulable again.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UncordonAction {
    pub node: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DrainAction {
    pub node: String,
    /// Grace period given to evicted pods (default: each pod's own).
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
    /// Evict pods that no controller manages (kubectl drain --force): they are gone for good.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Evict pods with emptyDir volumes, losing that data (kubectl --delete-emptydir-data).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_empty_dir_data: bool,
    /// Leave DaemonSet pods in place (default true: kubectl drain needs --ignore-daemonsets for
    /// the same); false refuses the drain when the node has any.
    #[serde(default = "yes")]
    pub ignore_daemon_sets: bool,
}

fn yes() -> bool {
    true
}

/// `waitNodeVersion`: the node's kubelet reports `kubeletVersion` ("1.35": any patch of it;
/// "v1.35.2": exactly) and the node is Ready with a heartbeat newer than any it had when the
/// step started.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaitNodeVersionAction {
    pub node: String,
    pub kubelet_version: String,
}

pub(super) async fn node_unschedulable(client: &kube::Client, node: &str) -> R<bool> {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes
        .get(node)
        .await
        .map_err(|e| format!("node {node}: {}", kerr(e)))?;
    Ok(n.spec.and_then(|s| s.unschedulable).unwrap_or(false))
}

pub(super) async fn set_unschedulable(ctx: &Ctx<'_>, node: &str, value: bool) -> R<()> {
    let nodes: Api<Node> = Api::all(ctx.cluster.client.clone());
    nodes
        .patch(
            node,
            &pp(ctx),
            &Patch::Merge(
                json!({"spec": {"unschedulable": if value { json!(true) } else { Value::Null }}}),
            ),
        )
        .await
        .map_err(|e| {
            format!(
                "cannot {} node {node}: {}",
                if value { "cordon" } else { "uncordon" },
                kerr(e)
            )
        })?;
    Ok(())
}

pub(super) fn pod_label_match(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let ml_ok = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let me_ok = selector.match_expressions.as_ref().is_none_or(|es| {
        es.iter().all(|e| {
            let vals = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
    });
    (selector.match_labels.is_some() || selector.match_expressions.is_some()) && ml_ok && me_ok
}

/// The PodDisruptionBudgets that cover a pod, described with their current allowance.
pub(super) async fn pdbs_for(client: &kube::Client, pod: &Pod) -> Vec<String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return vec![];
    };
    list.items
        .into_iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| pod_label_match(sel, &labels))
        })
        .map(|p| {
            let st = p.status.unwrap_or_default();
            format!(
                "PodDisruptionBudget {ns}/{} allows {} disruptions ({} healthy, {} desired)",
                p.metadata.name.unwrap_or_default(),
                st.disruptions_allowed,
                st.current_healthy,
                st.desired_healthy
            )
        })
        .collect()
}

pub(super) fn evictable(p: &Pod) -> bool {
    let mirror = p
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let daemon = p
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o.kind == "DaemonSet"));
    let done = matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    );
    !mirror && !daemon && !done && p.metadata.deletion_timestamp.is_none()
}

/// kubectl drain's safety checks, before anything changes: pods that no controller would
/// recreate (`force`), pods whose emptyDir data would be lost (`deleteEmptyDirData`), DaemonSet
/// pods (left in place unless `ignoreDaemonSets: false`, which refuses like kubectl without
/// --ignore-daemonsets).
pub(super) fn drain_refusals(a: &DrainAction, pods: &[Pod]) -> Vec<String> {
    let name = |p: &Pod| {
        format!(
            "{}/{}",
            p.metadata.namespace.clone().unwrap_or_default(),
            p.metadata.name.clone().unwrap_or_default()
        )
    };
    let controller_kind = |p: &Pod| -> Option<String> {
        p.metadata
            .owner_references
            .as_ref()?
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind.clone())
    };
    let mut bare = Vec::new();
    let mut empty_dir = Vec::new();
    let mut daemons = Vec::new();
    for p in pods {
        let mirror = p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
        let done = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        );
        if mirror || done || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match controller_kind(p).as_deref() {
            Some("DaemonSet") => {
                daemons.push(name(p));
                continue;
            }
            None => bare.push(name(p)),
            Some(_) => {}
        }
        let has_empty_dir = p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()));
        if has_empty_dir {
            empty_dir.push(name(p));
        }
    }
    let mut out = Vec::new();
    if !bare.is_empty() && !a.force {
        out.push(format!(
            "pods not managed by a controller would be deleted for good: {} (set force: true to evict them anyway)",
            bare.join(", ")
        ));
    }
    if !empty_dir.is_empty() && !a.delete_empty_dir_data {
        out.push(format!(
            "pods with emptyDir volumes would lose that data: {} (set deleteEmptyDirData: true to evict them anyway)",
            empty_dir.join(", ")
        ));
    }
    if !daemons.is_empty() && !a.ignore_daemon_sets {
        out.push(format!(
            "DaemonSet-managed pods cannot be evicted: {} (set ignoreDaemonSets: true to leave them in place)",
            daemons.join(", ")
        ));
    }
    out
}

pub(super) async fn drain(ctx: &Ctx<'_>, a: &DrainAction, timeout: Duration) -> R<String> {
    let client = &ctx.cluster.client;
    let deadline = Instant::now() + timeout;
    let pods: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={}", a.node));
    let list = loop {
        match pods.list(&lp).await {
            Ok(l) => break l,
            Err(e) if transient(&e) && Instant::now() < deadline => {
                tracing::warn!(
                    "cannot list the pods on node {}: {}; retrying",
                    a.node,
                    kerr(e)
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                return Err(format!(
                    "cannot list the pods on node {}: {}",
                    a.node,
                    kerr(e)
                ));
            }
        }
    };
    // Refused before the node is even cordoned: a refused drain changes nothing.
    let refusals = drain_refusals(a, &list.items);
    if !refusals.is_empty() {
        return Err(format!(
            "drain of node {} refused: {}",
            a.node,
            refusals.join("; ")
        ));
    }
    set_unschedulable(ctx, &a.node, true).await?;
    let targets: Vec<Pod> = list.items.into_iter().filter(evictable).collect();
    if ctx.dry_run {
        return Ok(format!(
            "node {} cordoned (server dry-run); would evict {} pods",
            a.node,
            targets.len()
        ));
    }
    let mut pending: Vec<Pod> = targets.clone();
    let mut last_refusal: BTreeMap<String, String> = BTreeMap::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for p in pending {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(ctx.cluster.client_no_retry.clone(), &ns);
            let ep = EvictParams {
                delete_options: a.grace_period_seconds.map(|g| DeleteParams {
                    grace_period_seconds: Some(g as u32),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match api.evict(&name, &ep).await {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) if status_code(&e) == Some(429) => {
                    let pdbs = pdbs_for(client, &p).await;
                    let why = if pdbs.is_empty() {
                        kerr(e)
                    } else {
                        pdbs.join("; ")
                    };
                    last_refusal.insert(format!("{ns}/{name}"), why);
                    still.push(p);
                }
                Err(e) if transient(&e) => {
                    last_refusal.insert(format!("{ns}/{name}"), kerr(e));
                    still.push(p);
                }
                Err(e) => return Err(format!("cannot evict pod {ns}/{name}: {}", kerr(e))),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = pending
                .iter()
                .map(|p| {
                    let k = format!(
                        "{}/{}",
                        p.metadata.namespace.clone().unwrap_or_default(),
                        p.metadata.name.clone().unwrap_or_default()
                    );
                    match last_refusal.get(&k) {
                        Some(w) => format!("pod {k}: {w}"),
                        None => format!("pod {k}"),
                    }
                })
                .collect();
            return Err(format!(
                "drain of node {} timed out after {}s; eviction refused for {}",
                a.node,
                timeout.as_secs(),
                names.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Wait for the evicted pods to be gone (like kubectl drain).
    loop {
        let now = match pods.list(&lp).await {
            Ok(l) => l,
            Err(e) if transient(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(kerr(e)),
        };
        let left: Vec<String> = now
            .items
            .into_iter()
            .filter(|p| {
                targets
                    .iter()
                    .any(|t| t.metadata.uid.is_some() && t.metadata.uid == p.metadata.uid)
            })
            .map(|p| p.metadata.name.unwrap_or_default())
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "drain of node {}: evicted pods still terminating after {}s: {}",
                a.node,
                timeout.as_secs(),
                left.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(format!(
        "node {} drained ({} pods evicted)",
        a.node,
        targets.len()
    ))
}

/// Whether kubelet version `v` ("v1.35.2") is `want` ("1.35": any patch; "v1.35.2": exactly).
pub(super) fn kubelet_matches(v: &str, want: &str) -> bool {
    let v = v.trim_start_matches('v');
    let want = want.trim_start_matches('v');
    let base = v.split(['-', '+']).next().unwrap_or(v);
    if want.split('.').count() >= 3 {
        base == want
    } else {
        base == want || base.starts_with(&format!("{want}."))
    }
}

/// A node's latest signs of life: its Ready condition (status, heartbeat, transition) and its
/// kube-node-lease renew time, all as the API server records them (no local clock involved).
pub(super) async fn node_life(
    ctx: &Ctx<'_>,
    name: &str,
) -> R<Option<(String, bool, String, String)>> {
    let nodes: Api<Node> = Api::all(ctx.cluster.client.clone());
    let Some(n) = nodes.get_opt(name).await.map_err(kerr)? else {
        return Ok(None);
    };
    let status = n.status.unwrap_or_default();
    let version = status
        .node_info
        .map(|i| i.kubelet_version)
        .unwrap_or_default();
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready");
    let is_ready = ready.as_ref().is_some_and(|c| c.status == "True");
    let beat = ready
        .as_ref()
        .and_then(|c| {
            c.last_heartbeat_time
                .as_ref()
                .or(c.last_transition_time.as_ref())
        })
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(ctx.cluster.client.clone(), "kube-node-lease");
    let renewed = match leases.get_opt(name).await {
        Ok(Some(l)) => l
            .spec
            .and_then(|s| s.renew_time)
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    };
    Ok(Some((version, is_ready, beat, renewed)))
}

/// `waitNodeVersion`: the node's kubelet reports the target version and the node is Ready with
/// a heartbeat newer than any it had when the step started (a Ready read right after a kubelet
/// restart may be the old kubelet's, still within its grace period). Transient API errors are
/// retried until the timeout.
pub(super) async fn wait_node_version(
    ctx: &Ctx<'_>,
    w: &WaitNodeVersionAction,
    timeout: Duration,
) -> R<Outcome> {
    let deadline = Instant::now() + timeout;
    // The heartbeats at the start (server timestamps, compared as RFC 3339 strings of one
    // clock: the API server's).
    let start = loop {
        match node_life(ctx, &w.node).await {
            Ok(Some((_, _, beat, renewed))) => break (beat, renewed),
            Ok(None) => break (String::new(), String::new()),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!("node {}: {e}; retrying", w.node);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    };
    loop {
        let last;
        match node_life(ctx, &w.node).await {
            Ok(Some((version, ready, beat, renewed))) => {
                let fresh = (!beat.is_empty() && beat > start.0)
                    || (!renewed.is_empty() && renewed > start.1);
                if kubelet_matches(&version, &w.kubelet_version) && ready && fresh {
                    let mut o = Outcome::default();
                    o.outputs.insert("kubeletVersion".into(), json!(version));
                    o.summary = format!(
                        "node {} runs kubelet {version} and is Ready (heartbeat {})",
                        w.node,
                        if beat > start.0 { &beat } else { &renewed }
                    );
                    return Ok(o);
                }
                last = format!(
                    "kubelet {}, {}, {}",
                    if version.is_empty() {
                        "unknown"
                    } else {
                        &version
                    },
                    if ready { "Ready" } else { "not Ready" },
                    if fresh {
                        "heartbeat after the step started"
                    } else {
                        "no heartbeat since the step started"
                    }
                );
            }
            Ok(None) => last = "the node does not exist (replaced under another name? the upgrade hook can say which: node=NEW in $LIFEBOAT_OUTPUT)".into(),
            Err(e) => last = format!("cannot read it: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "node {} did not come back with kubelet {} within {}s: {last}",
                w.node,
                w.kubelet_version,
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Undo of cordon, uncordon and drain: the node's schedulability as it was.
async fn undo_schedulable(ctx: &Ctx<'_>, before: &Value) -> R<String> {
    let node = field(before, "node")?;
    let v = before["unschedulable"].as_bool().unwrap_or(false);
    set_unschedulable(ctx, &node, v).await?;
    Ok(format!(
        "node {node} {}",
        if v { "cordoned again" } else { "uncordoned" }
    ))
}

async fn capture_schedulable(ctx: &Ctx<'_>, node: &str) -> R<Option<Value>> {
    Ok(Some(
        json!({"node": node, "unschedulable": node_unschedulable(&ctx.cluster.client, node).await?}),
    ))
}

async fn preview_schedulable(ctx: &Ctx<'_>, node: &str, want: bool) -> R<String> {
    let now = node_unschedulable(&ctx.cluster.client, node).await?;
    let state = |c: bool| if c { "cordoned" } else { "schedulable" };
    Ok(if now == want {
        format!("node {node} is already {}", state(now))
    } else {
        format!("node {node}: {} → {}", state(now), state(want))
    })
}

impl Act for CordonAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::Auto
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        preview_schedulable(ctx, &self.node, true).await
    }
    async fn capture_before(&self, ctx: &Ctx<'_>) -> R<Option<Value>> {
        capture_schedulable(ctx, &self.node).await
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        set_unschedulable(ctx, &self.node, true).await?;
        Ok(Outcome {
            summary: format!("node {} cordoned{}", self.node, dry(ctx)),
            ..Default::default()
        })
    }
    async fn undo(ctx: &Ctx<'_>, before: &Value) -> R<String> {
        undo_schedulable(ctx, before).await
    }
}

impl Act for UncordonAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::Auto
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        preview_schedulable(ctx, &self.node, false).await
    }
    async fn capture_before(&self, ctx: &Ctx<'_>) -> R<Option<Value>> {
        capture_schedulable(ctx, &self.node).await
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        set_unschedulable(ctx, &self.node, false).await?;
        Ok(Outcome {
            summary: format!("node {} uncordoned{}", self.node, dry(ctx)),
            ..Default::default()
        })
    }
    async fn undo(ctx: &Ctx<'_>, before: &Value) -> R<String> {
        undo_schedulable(ctx, before).await
    }
}

impl Act for DrainAction {
    fn reversibility(&self) -> Reversibility {
        // The evicted pods are recreated elsewhere by their controllers; the undo makes the
        // node schedulable again.
        Reversibility::Auto
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        let client = &ctx.cluster.client;
        let pods: Api<Pod> = Api::all(client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        let list = pods.list(&lp).await.map_err(kerr)?;
        let n = list.items.iter().filter(|p| evictable(p)).count();
        let cordoned = node_unschedulable(client, &self.node).await?;
        Ok(format!(
            "node {} ({}): cordon and evict {n} pods",
            self.node,
            if cordoned {
                "already cordoned"
            } else {
                "schedulable"
            }
        ))
    }
    async fn capture_before(&self, ctx: &Ctx<'_>) -> R<Option<Value>> {
        capture_schedulable(ctx, &self.node).await
    }
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome> {
        Ok(Outcome {
            summary: drain(ctx, self, timeout).await?,
            ..Default::default()
        })
    }
    async fn undo(ctx: &Ctx<'_>, before: &Value) -> R<String> {
        undo_schedulable(ctx, before).await
    }
}

impl Act for WaitNodeVersionAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!(
            "wait until node {} runs a kubelet {} and reports Ready again",
            self.node, self.kubelet_version
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome> {
        if ctx.dry_run {
            return Ok(Outcome {
                summary: format!(
                    "would wait until node {} runs a kubelet {}",
                    self.node, self.kubelet_version
                ),
                ..Default::default()
            });
        }
        wait_node_version(ctx, self, timeout).await
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("waitNodeVersion")
    }
}

#[cfg(test)]
mod drain_tests {
    use super::*;

    fn pod(name: &str, owner: Option<&str>, empty_dir: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop",
                "ownerReferences": owner.map(|k| vec![json!({"apiVersion": "apps/v1", "kind": k, "name": "x", "uid": "u", "controller": true})])},
            "spec": {"containers": [{"name": "c", "image": "i"}],
                     "volumes": if empty_dir { json!([{"name": "scratch", "emptyDir": {}}]) } else { json!([]) }},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    #[test]
    fn kubectl_drain_safety_checks() {
        let a: DrainAction = serde_json::from_value(json!({"node": "n"})).unwrap();
        assert!(a.ignore_daemon_sets && !a.force && !a.delete_empty_dir_data);
        let pods = vec![
            pod("web", Some("ReplicaSet"), false),
            pod("agent", Some("DaemonSet"), true),
            pod("bare", None, false),
            pod("cache", Some("ReplicaSet"), true),
        ];
        let r = drain_refusals(&a, &pods);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].contains("shop/bare") && r[0].contains("force: true"));
        assert!(r[1].contains("shop/cache") && !r[1].contains("agent"));
        let all: DrainAction =
            serde_json::from_value(json!({"node": "n", "force": true, "deleteEmptyDirData": true}))
                .unwrap();
        assert!(drain_refusals(&all, &pods).is_empty());
        let strict: DrainAction =
            serde_json::from_value(json!({"node": "n", "ignoreDaemonSets": false, "force": true, "deleteEmptyDirData": true}))
                .unwrap();
        let r = drain_refusals(&strict, &pods);
        assert!(r.len() == 1 && r[0].contains("shop/agent"), "{r:?}");
    }
}

#[cfg(test)]
mod node_version_tests {
    #[test]
    fn kubelet_versions_match_by_minor_or_exactly() {
        use super::kubelet_matches;
        assert!(kubelet_matches("v1.35.2", "1.35"));
        assert!(kubelet_matches("v1.35.0-eks-1", "1.35"));
        assert!(!kubelet_matches("v1.3.5", "1.35"));
        assert!(!kubelet_matches("v1.350.1", "1.35"));
        assert!(kubelet_matches("v1.35.2", "v1.35.2"));
        assert!(!kubelet_matches("v1.35.3", "1.35.2"));
        assert!(!kubelet_matches("", "1.35"));
    }
}
