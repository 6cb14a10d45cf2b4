//! Workload actions: scale, setImage, rolloutRestart, rolloutUndo.
use super::*;
use k8s_openapi::api::apps::v1::ControllerRevision;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleAction {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub replicas: IntOrTemplate,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SetImageAction {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// Container name; may be left out when the pod template has one container.
    #[serde(default)]
    pub container: Option<String>,
    pub image: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutRestartAction {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// `rolloutUndo`: put the pod template of an earlier revision back, like `kubectl rollout
/// undo` (Deployment: from its ReplicaSets; StatefulSet, DaemonSet: from its
/// ControllerRevisions). Undone by putting the template from before the step back.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutUndoAction {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// The revision to go back to; default: the one before the current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<i64>,
}

pub(super) fn workload_api(client: &kube::Client, kind: &str, ns: &str) -> R<Api<DynamicObject>> {
    let plural = match kind {
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "ReplicaSet" => "replicasets",
        "DaemonSet" => "daemonsets",
        other => {
            return Err(format!(
                "kind {other} is not a workload (Deployment, StatefulSet, ReplicaSet, DaemonSet)"
            ));
        }
    };
    let ar = ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Ok(Api::namespaced_with(client.clone(), ns, &ar))
}

/// A workload, its API, and how messages name it.
pub(super) async fn get_workload(
    client: &kube::Client,
    kind: &str,
    ns: &str,
    name: &str,
) -> R<(Api<DynamicObject>, String, Value)> {
    let api = workload_api(client, kind, ns)?;
    let what = describe_ref(kind, Some(ns), name);
    let obj = api
        .get(name)
        .await
        .map_err(|e| format!("{what}: {}", kerr(e)))?;
    let obj = serde_json::to_value(obj).expect("objects serialize");
    Ok((api, what, obj))
}

pub(super) fn containers(obj: &Value) -> Vec<(String, String)> {
    obj.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["image"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn pick_container(obj: &Value, wanted: Option<&str>, what: &str) -> R<(String, String)> {
    let cs = containers(obj);
    match wanted {
        Some(w) => cs.into_iter().find(|(n, _)| n == w).ok_or_else(|| {
            format!(
                "{what} has no container {w:?} (it has: {})",
                containers(obj)
                    .into_iter()
                    .map(|c| c.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        None if cs.len() == 1 => Ok(cs.into_iter().next().expect("one")),
        None => Err(format!(
            "{what} has {} containers; name one with `container`",
            cs.len()
        )),
    }
}

impl Act for ScaleAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::Auto
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        let a = self;
        let api = workload_api(&ctx.cluster.client, &a.kind, &a.namespace)?;
        let what = describe_ref(&a.kind, Some(&a.namespace), &a.name);
        let cur = api
            .get_scale(&a.name)
            .await
            .map_err(|e| format!("{what}: {}", kerr(e)))?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        Ok(format!("{what} replicas {cur} → {}", a.replicas.get()?))
    }
    async fn capture_before(&self, ctx: &Ctx<'_>) -> R<Option<Value>> {
        let a = self;
        let api = workload_api(&ctx.cluster.client, &a.kind, &a.namespace)?;
        let s = api.get_scale(&a.name).await.map_err(|e| {
            format!(
                "{}: {}",
                describe_ref(&a.kind, Some(&a.namespace), &a.name),
                kerr(e)
            )
        })?;
        // `set`: what this step writes, so its undo can tell whether someone changed the
        // field since (a conflict) instead of overwriting their change.
        Ok(Some(
            json!({"kind": a.kind, "name": a.name, "namespace": a.namespace,
                     "replicas": s.spec.and_then(|s| s.replicas).unwrap_or(0),
                     "set": a.replicas.get()?}),
        ))
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let a = self;
        let mut out = Outcome::default();
        let n = a.replicas.get()?;
        let api = workload_api(&ctx.cluster.client, &a.kind, &a.namespace)?;
        let what = describe_ref(&a.kind, Some(&a.namespace), &a.name);
        let before = api
            .get_scale(&a.name)
            .await
            .map_err(|e| format!("{what}: {}", kerr(e)))?;
        let prev = before.spec.and_then(|s| s.replicas).unwrap_or(0);
        api.patch_scale(
            &a.name,
            &pp(ctx),
            &Patch::Merge(json!({"spec": {"replicas": n}})),
        )
        .await
        .map_err(|e| format!("cannot scale {what}: {}", kerr(e)))?;
        out.outputs.insert("previousReplicas".into(), json!(prev));
        out.summary = format!("{what} scaled {prev} → {n}{}", dry(ctx));
        Ok(out)
    }
    async fn undo(ctx: &Ctx<'_>, before: &Value) -> R<String> {
        let (kind, name, ns) = (
            field(before, "kind")?,
            field(before, "name")?,
            field(before, "namespace")?,
        );
        let n = before["replicas"]
            .as_i64()
            .ok_or("no prior replica count recorded")?;
        let api = workload_api(&ctx.cluster.client, &kind, &ns)?;
        let what = describe_ref(&kind, Some(&ns), &name);
        if let Some(set) = before["set"].as_i64() {
            let now = api
                .get_scale(&name)
                .await
                .map_err(kerr)?
                .spec
                .and_then(|s| s.replicas)
                .unwrap_or(0) as i64;
            if now != set && now != n {
                return Err(conflict(
                    &what,
                    "replicas",
                    &now.to_string(),
                    &set.to_string(),
                    &n.to_string(),
                ));
            }
        }
        api.patch_scale(
            &name,
            &pp(ctx),
            &Patch::Merge(json!({"spec": {"replicas": n}})),
        )
        .await
        .map_err(kerr)?;
        Ok(format!("{what} scaled back to {n}"))
    }
}

impl Act for SetImageAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::Auto
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        let a = self;
        let (_, what, obj) =
            get_workload(&ctx.cluster.client, &a.kind, &a.namespace, &a.name).await?;
        let (c, cur) = pick_container(&obj, a.container.as_deref(), &what)?;
        Ok(format!("{what} container {c} image {cur} → {}", a.image))
    }
    async fn capture_before(&self, ctx: &Ctx<'_>) -> R<Option<Value>> {
        let a = self;
        let (_, what, obj) =
            get_workload(&ctx.cluster.client, &a.kind, &a.namespace, &a.name).await?;
        let (name, image) = pick_container(&obj, a.container.as_deref(), &what)?;
        Ok(Some(
            json!({"kind": a.kind, "name": a.name, "namespace": a.namespace,
                     "container": name, "image": image, "set": a.image}),
        ))
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let a = self;
        let mut out = Outcome::default();
        let (api, what, obj) =
            get_workload(&ctx.cluster.client, &a.kind, &a.namespace, &a.name).await?;
        let (c, prev) = pick_container(&obj, a.container.as_deref(), &what)?;
        api.patch(
            &a.name,
            &pp(ctx),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": c, "image": a.image}]}}}})),
        )
        .await
        .map_err(|e| format!("cannot set the image of {what}: {}", kerr(e)))?;
        out.outputs.insert("previousImage".into(), json!(prev));
        out.summary = format!("{what} container {c}: {prev} → {}{}", a.image, dry(ctx));
        Ok(out)
    }
    async fn undo(ctx: &Ctx<'_>, before: &Value) -> R<String> {
        let client = &ctx.cluster.client;
        let (kind, name, ns) = (
            field(before, "kind")?,
            field(before, "name")?,
            field(before, "namespace")?,
        );
        let (c, image) = (field(before, "container")?, field(before, "image")?);
        if let Some(set) = before["set"].as_str() {
            let (_, what, obj) = get_workload(client, &kind, &ns, &name).await?;
            let (_, now) = pick_container(&obj, Some(&c), &what)?;
            if now != set && now != image {
                return Err(conflict(
                    &what,
                    &format!("container {c} image"),
                    &now,
                    set,
                    &image,
                ));
            }
        }
        let api = workload_api(client, &kind, &ns)?;
        api.patch(
            &name,
            &pp(ctx),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": c, "image": image}]}}}})),
        )
        .await
        .map_err(kerr)?;
        Ok(format!(
            "{} container {c} set back to {image}",
            describe_ref(&kind, Some(&ns), &name)
        ))
    }
}

impl Act for RolloutRestartAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::Irreversible
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!(
            "restart {}",
            describe_ref(&self.kind, Some(&self.namespace), &self.name)
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let a = self;
        let api = workload_api(&ctx.cluster.client, &a.kind, &a.namespace)?;
        let what = describe_ref(&a.kind, Some(&a.namespace), &a.name);
        let now = jiff::Timestamp::now().to_string();
        api.patch(
            &a.name,
            &pp(ctx),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}})),
        )
        .await
        .map_err(|e| format!("cannot restart {what}: {}", kerr(e)))?;
        Ok(Outcome {
            summary: format!("{what} restarted{}", dry(ctx)),
            ..Default::default()
        })
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("rolloutRestart")
    }
}

/// The current pod template of a workload, and the template and number of the revision a
/// `rolloutUndo` goes back to.
async fn undo_target(ctx: &Ctx<'_>, a: &RolloutUndoAction) -> R<(Value, Value, i64)> {
    let client = &ctx.cluster.client;
    let (_, what, obj) = get_workload(client, &a.kind, &a.namespace, &a.name).await?;
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let current = obj
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let owned =
        |refs: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.as_ref()
                .is_some_and(|rs| rs.iter().any(|r| r.uid == uid))
        };
    // (revision, template) of every revision the workload owns.
    let mut revisions: Vec<(i64, Value)> = Vec::new();
    if a.kind == "Deployment" {
        // As the API server returns them (not through typed structs, which would drop fields
        // this build does not know and make the undo's comparison inexact).
        let rss = workload_api(client, "ReplicaSet", &a.namespace)?;
        for rs in rss
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("{what}: {}", kerr(e)))?
        {
            let refs = rs.metadata.owner_references.clone();
            if !owned(&refs) {
                continue;
            }
            let Some(rev) = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|m| m.get("deployment.kubernetes.io/revision"))
                .and_then(|r| r.parse::<i64>().ok())
            else {
                continue;
            };
            let mut tpl = rs
                .data
                .pointer("/spec/template")
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(l) = tpl
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                l.remove("pod-template-hash");
            }
            revisions.push((rev, tpl));
        }
    } else if matches!(a.kind.as_str(), "StatefulSet" | "DaemonSet") {
        let crs: Api<ControllerRevision> = Api::namespaced(client.clone(), &a.namespace);
        for cr in crs
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("{what}: {}", kerr(e)))?
        {
            if !owned(&cr.metadata.owner_references) {
                continue;
            }
            let tpl = cr
                .data
                .as_ref()
                .and_then(|d| d.0.pointer("/spec/template").cloned())
                .map(|mut t| {
                    if let Some(o) = t.as_object_mut() {
                        o.remove("$patch");
                    }
                    t
                })
                .ok_or_else(|| format!("{what}: revision {} has no pod template", cr.revision))?;
            revisions.push((cr.revision, tpl));
        }
    } else {
        return Err(format!(
            "rolloutUndo works on Deployments, StatefulSets and DaemonSets, not {}",
            a.kind
        ));
    }
    revisions.sort_by_key(|r| r.0);
    let latest = revisions.last().map(|r| r.0).unwrap_or(0);
    let target = match a.to_revision {
        Some(n) => revisions.iter().find(|r| r.0 == n).ok_or_else(|| {
            format!(
                "{what} has no revision {n} (it has: {})",
                revisions
                    .iter()
                    .map(|r| r.0.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
        None => revisions
            .iter()
            .rev()
            .find(|r| r.0 < latest)
            .ok_or_else(|| format!("{what} has no earlier revision to roll back to"))?,
    };
    Ok((current, target.1.clone(), target.0))
}

/// A strategic merge patch that replaces the pod template whole.
fn replace_template(mut template: Value) -> Value {
    if let Some(o) = template.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

impl Act for RolloutUndoAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::Auto
    }
    fn safe_to_repeat(&self) -> bool {
        // Repeated after it landed, "the revision before the current" is another one (the
        // restored revision becomes the newest): in doubt after a crash.
        false
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        let (cur, target, rev) = undo_target(ctx, self).await?;
        let what = describe_ref(&self.kind, Some(&self.namespace), &self.name);
        let mut changed = changed_paths(&json!({"t": cur}), &json!({"t": target}));
        for c in &mut changed {
            *c = c.trim_start_matches("t.").to_string();
        }
        Ok(format!(
            "{what}: back to revision {rev} (pod template: {})",
            if changed.is_empty() {
                "no change".to_string()
            } else {
                changed.join(", ")
            }
        ))
    }
    async fn capture_before(&self, ctx: &Ctx<'_>) -> R<Option<Value>> {
        let (cur, target, rev) = undo_target(ctx, self).await?;
        Ok(Some(
            json!({"kind": self.kind, "name": self.name, "namespace": self.namespace,
            "template": cur, "set": target, "revision": rev}),
        ))
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let (_, target, rev) = undo_target(ctx, self).await?;
        let api = workload_api(&ctx.cluster.client, &self.kind, &self.namespace)?;
        let what = describe_ref(&self.kind, Some(&self.namespace), &self.name);
        api.patch(
            &self.name,
            &pp(ctx),
            &Patch::Strategic(replace_template(target)),
        )
        .await
        .map_err(|e| format!("cannot roll back {what}: {}", kerr(e)))?;
        let mut out = Outcome::default();
        out.outputs.insert("revision".into(), json!(rev));
        out.summary = format!("{what} rolled back to revision {rev}{}", dry(ctx));
        Ok(out)
    }
    async fn undo(ctx: &Ctx<'_>, before: &Value) -> R<String> {
        let (kind, name, ns) = (
            field(before, "kind")?,
            field(before, "name")?,
            field(before, "namespace")?,
        );
        let prior = before
            .get("template")
            .cloned()
            .ok_or("no prior pod template recorded")?;
        let (_, what, obj) = get_workload(&ctx.cluster.client, &kind, &ns, &name).await?;
        let now = obj
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        if now == prior {
            return Ok(format!("{what} already has its prior pod template"));
        }
        if let Some(set) = before.get("set")
            && &now != set
        {
            let changed = changed_paths(&json!({"t": set}), &json!({"t": now}));
            return Err(format!(
                "{what}: its pod template changed since this step set it ({}); left as is",
                changed
                    .iter()
                    .map(|c| c.trim_start_matches("t."))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let api = workload_api(&ctx.cluster.client, &kind, &ns)?;
        api.patch(&name, &pp(ctx), &Patch::Strategic(replace_template(prior)))
            .await
            .map_err(|e| format!("cannot restore the pod template of {what}: {}", kerr(e)))?;
        Ok(format!("{what} pod template put back"))
    }
}
