//! What each runbook action does against the cluster: capture the state undo needs, execute,
//! undo from the captured state, and preview at plan time. Step failures are plain messages
//! (they are data of the run, shown and journaled), not program errors.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, DeleteParams, DynamicObject, EvictParams, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use super::spec::*;
use super::template::Redactor;
use crate::cluster::{Cluster, ClusterOptions};
use crate::repo::access::RepoOptions;

pub type R<T> = Result<T, String>;

/// Everything an action may use.
pub struct Ctx<'a> {
    pub cluster: &'a Cluster,
    pub cluster_options: &'a ClusterOptions,
    pub repo: &'a RepoOptions,
    pub run_id: &'a str,
    pub step_id: &'a str,
    /// Files referenced by `apply.file`, embedded in the plan.
    pub files: &'a BTreeMap<String, String>,
    pub redactor: &'a Redactor,
    pub dry_run: bool,
    /// Where a step records the temporary objects it creates (deleted on Ctrl-C).
    pub cleanup: &'a crate::volume::snapshots::Cleanup,
    /// Where `run` steps write their output (`<step>.log`); None: nowhere (plans, dry runs).
    pub log_dir: Option<&'a std::path::Path>,
    /// Show a `run` step's output as it comes (on stderr).
    pub live: bool,
}

/// What a step produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub outputs: BTreeMap<String, Value>,
    pub summary: String,
}

const FIELD_MANAGER: &str = "lifeboat";

fn kerr(e: kube::Error) -> String {
    crate::error::display_chain(&e)
}

/// An error worth retrying until the step's timeout: the API server busy or restarting, a
/// connection that broke (not a refusal: 4xx other than 429 are answers).
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

pub async fn resolve(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
) -> R<(ApiResource, bool)> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("{api_version} {kind}: {}", kerr(e)))?;
    Ok((ar, caps.scope == kube::discovery::Scope::Namespaced))
}

async fn dyn_api(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> R<Api<DynamicObject>> {
    let (ar, namespaced) = resolve(client, api_version, kind).await?;
    Ok(if namespaced {
        Api::namespaced_with(client.clone(), namespace.unwrap_or("default"), &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    })
}

fn describe_ref(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn pp(ctx: &Ctx) -> PatchParams {
    let mut p = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    p.dry_run = ctx.dry_run;
    p
}

fn workload_api(client: &kube::Client, kind: &str, ns: &str) -> R<Api<DynamicObject>> {
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
async fn get_workload(
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

fn containers(obj: &Value) -> Vec<(String, String)> {
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

fn pick_container(obj: &Value, wanted: Option<&str>, what: &str) -> R<(String, String)> {
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

/// Objects of an `apply` action, with the namespace default applied.
pub fn apply_objects(a: &ApplyAction, files: &BTreeMap<String, String>) -> R<Vec<Value>> {
    let mut docs = Vec::new();
    if let Some(f) = &a.file {
        let text = files
            .get(f)
            .ok_or_else(|| format!("file {f} is not embedded in the plan"))?;
        for d in serde_norway::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(d).map_err(|e| format!("{f}: {e}"))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    if let Some(m) = &a.manifest {
        match m {
            Value::Array(items) => docs.extend(items.iter().cloned()),
            other => docs.push(other.clone()),
        }
    }
    let mut out = Vec::new();
    for mut d in docs {
        if d["kind"] == "List" {
            if let Some(items) = d["items"].as_array() {
                out.extend(items.iter().cloned());
            }
            continue;
        }
        if d.pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(format!(
                "an object of kind {} has no metadata.name",
                d["kind"].as_str().unwrap_or("?")
            ));
        }
        if let (Some(ns), Some(meta)) = (&a.namespace, d.get_mut("metadata"))
            && meta.get("namespace").is_none()
        {
            meta["namespace"] = json!(ns);
        }
        out.push(d);
    }
    Ok(out)
}

fn obj_ref(o: &Value) -> (String, String, String, Option<String>) {
    (
        o["apiVersion"].as_str().unwrap_or_default().to_string(),
        o["kind"].as_str().unwrap_or_default().to_string(),
        o.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        o.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string),
    )
}

fn undo_secret_name(run: &str, step: &str, obj: &str) -> String {
    let h = blake3::hash(format!("{run}\0{step}\0{obj}").as_bytes());
    format!("lifeboat-undo-{}", &h.to_hex()[..20])
}

/// The prior state of one object for undo: absent, the object itself, or (for Secrets, whose
/// data must never be written to the journal) a reference to a copy kept in the cluster.
async fn capture_object(
    ctx: &Ctx<'_>,
    api_version: &str,
    kind: &str,
    name: &str,
    ns: Option<&str>,
) -> R<Value> {
    let api = dyn_api(&ctx.cluster.client, api_version, kind, ns).await?;
    let r = json!({"apiVersion": api_version, "kind": kind, "name": name, "namespace": ns});
    let Some(obj) = api.get_opt(name).await.map_err(kerr)? else {
        return Ok(json!({"ref": r, "absent": true}));
    };
    let mut obj = serde_json::to_value(obj).expect("objects serialize");
    clean_for_restore(&mut obj);
    if kind == "Secret" && api_version == "v1" {
        let ns = ns.unwrap_or("default");
        let copy_name = undo_secret_name(ctx.run_id, ctx.step_id, name);
        if !ctx.dry_run {
            let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(ctx.cluster.client.clone(), ns);
            let copy: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": copy_name, "namespace": ns,
                    "labels": {"app.kubernetes.io/managed-by": "lifeboat", "lifeboat.io/undo": "true"},
                    "annotations": {"lifeboat.io/run": ctx.run_id, "lifeboat.io/step": ctx.step_id, "lifeboat.io/of": name}},
                "type": "Opaque",
                "data": {"object": base64_encode(&serde_json::to_vec(&obj).expect("serializes"))}
            }))
            .expect("a valid Secret");
            // Created once per run, step and object: a retry or a resume after the change
            // landed must not overwrite the state from before the first attempt.
            secrets
                .create(&PostParams::default(), &copy)
                .await
                .map(|_| ())
                .or_else(|e| {
                    if status_code(&e) == Some(409) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| {
                    format!(
                        "cannot keep the prior state of Secret {ns}/{name} for undo: {}",
                        kerr(e)
                    )
                })?;
        }
        return Ok(json!({"ref": r, "storedIn": {"namespace": ns, "name": copy_name}}));
    }
    Ok(json!({"ref": r, "object": obj}))
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Strip what the server owns so the object can be written back.
fn clean_for_restore(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "resourceVersion",
            "managedFields",
            "generation",
            "creationTimestamp",
            "uid",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
}

/// Put an object back to its captured state.
async fn restore_object(ctx: &Ctx<'_>, before: &Value) -> R<String> {
    let r = &before["ref"];
    let (av, kind, name) = (
        r["apiVersion"].as_str().unwrap_or_default(),
        r["kind"].as_str().unwrap_or_default(),
        r["name"].as_str().unwrap_or_default(),
    );
    let ns = r["namespace"].as_str();
    let what = describe_ref(kind, ns, name);
    let api = dyn_api(&ctx.cluster.client, av, kind, ns).await?;
    if before["absent"] == true {
        return match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(format!("deleted {what} (it did not exist before)")),
            Err(e) if status_code(&e) == Some(404) => Ok(format!("{what} is already gone")),
            Err(e) => Err(format!("cannot delete {what}: {}", kerr(e))),
        };
    }
    let mut prior = if let Some(o) = before.get("object") {
        o.clone()
    } else if let Some(s) = before.get("storedIn") {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(
            ctx.cluster.client.clone(),
            s["namespace"].as_str().unwrap_or("default"),
        );
        let copy_name = s["name"].as_str().unwrap_or_default();
        let copy = secrets.get(copy_name).await.map_err(|e| {
            format!(
                "the saved prior state of {what} ({copy_name}) is unavailable: {}",
                kerr(e)
            )
        })?;
        let bytes = copy
            .data
            .and_then(|d| d.get("object").cloned())
            .ok_or_else(|| format!("the saved prior state of {what} ({copy_name}) is empty"))?;
        serde_json::from_slice(&bytes.0)
            .map_err(|e| format!("the saved prior state of {what} is damaged: {e}"))?
    } else {
        return Err(format!("no prior state of {what} was recorded"));
    };
    match api.get_opt(name).await.map_err(kerr)? {
        Some(cur) => {
            prior["metadata"]["resourceVersion"] = json!(cur.metadata.resource_version);
            let obj: DynamicObject =
                serde_json::from_value(prior).map_err(|e| format!("{what}: {e}"))?;
            api.replace(name, &PostParams::default(), &obj)
                .await
                .map_err(|e| format!("cannot restore {what}: {}", kerr(e)))?;
            Ok(format!("restored {what} to its prior state"))
        }
        None => {
            let obj: DynamicObject =
                serde_json::from_value(prior).map_err(|e| format!("{what}: {e}"))?;
            api.create(&PostParams::default(), &obj)
                .await
                .map_err(|e| format!("cannot re-create {what}: {}", kerr(e)))?;
            Ok(format!("re-created {what}"))
        }
    }
}

/// Remove the in-cluster copies of prior Secret states (after a successful undo).
async fn drop_secret_copy(ctx: &Ctx<'_>, before: &Value) {
    if let Some(s) = before.get("storedIn") {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(
            ctx.cluster.client.clone(),
            s["namespace"].as_str().unwrap_or("default"),
        );
        let _ = secrets
            .delete(
                s["name"].as_str().unwrap_or_default(),
                &DeleteParams::default(),
            )
            .await;
    }
}

async fn node_unschedulable(client: &kube::Client, node: &str) -> R<bool> {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes
        .get(node)
        .await
        .map_err(|e| format!("node {node}: {}", kerr(e)))?;
    Ok(n.spec.and_then(|s| s.unschedulable).unwrap_or(false))
}

async fn set_unschedulable(ctx: &Ctx<'_>, node: &str, value: bool) -> R<()> {
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

/// The state undo needs, captured before the action runs. `None`: the action has no state.
pub async fn capture_before(ctx: &Ctx<'_>, action: &Action) -> R<Option<Value>> {
    let client = &ctx.cluster.client;
    Ok(match action {
        Action::Scale(a) => {
            let api = workload_api(client, &a.kind, &a.namespace)?;
            let s = api.get_scale(&a.name).await.map_err(|e| {
                format!(
                    "{}: {}",
                    describe_ref(&a.kind, Some(&a.namespace), &a.name),
                    kerr(e)
                )
            })?;
            // `set`: what this step writes, so its undo can tell whether someone changed the
            // field since (a conflict) instead of overwriting their change.
            Some(
                json!({"kind": a.kind, "name": a.name, "namespace": a.namespace,
                         "replicas": s.spec.and_then(|s| s.replicas).unwrap_or(0),
                         "set": a.replicas.get()?}),
            )
        }
        Action::SetImage(a) => {
            let (_, what, obj) = get_workload(client, &a.kind, &a.namespace, &a.name).await?;
            let (name, image) = pick_container(&obj, a.container.as_deref(), &what)?;
            Some(
                json!({"kind": a.kind, "name": a.name, "namespace": a.namespace,
                         "container": name, "image": image, "set": a.image}),
            )
        }
        Action::Cordon(a) | Action::Uncordon(a) => Some(
            json!({"node": a.node, "unschedulable": node_unschedulable(client, &a.node).await?}),
        ),
        Action::Drain(a) => Some(
            json!({"node": a.node, "unschedulable": node_unschedulable(client, &a.node).await?}),
        ),
        Action::Patch(a) => Some(json!({"objects": [
            capture_object(ctx, &a.api_version, &a.kind, &a.name, a.namespace.as_deref()).await?
        ]})),
        Action::Apply(a) => {
            let mut objs = Vec::new();
            for o in apply_objects(a, ctx.files)? {
                let (av, kind, name, ns) = obj_ref(&o);
                objs.push(capture_object(ctx, &av, &kind, &name, ns.as_deref()).await?);
            }
            Some(json!({"objects": objs}))
        }
        _ => None,
    })
}

/// The undo would overwrite a change someone else made after the step.
fn conflict(what: &str, field: &str, now: &str, set: &str, prior: &str) -> String {
    format!(
        "{what}: {field} is now {now}, not the {set} this step set; changed by someone else since, so it is left as is (set it back to {prior} by hand if that is still right)"
    )
}

/// Undo an auto-reversible action from its captured state.
/// Undo an auto-reversible action from its captured state alone (what to restore and where
/// is in `before`; `action` only says which kind of action it was).
pub async fn undo_auto(ctx: &Ctx<'_>, action: &Action, before: &Value) -> R<String> {
    let client = &ctx.cluster.client;
    let field = |k: &str| -> R<String> {
        before[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the recorded prior state has no {k}"))
    };
    match action {
        Action::Scale(_) => {
            let (kind, name, ns) = (field("kind")?, field("name")?, field("namespace")?);
            let n = before["replicas"]
                .as_i64()
                .ok_or("no prior replica count recorded")?;
            let api = workload_api(client, &kind, &ns)?;
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
            Ok(format!(
                "{} scaled back to {n}",
                describe_ref(&kind, Some(&ns), &name)
            ))
        }
        Action::SetImage(_) => {
            let (kind, name, ns) = (field("kind")?, field("name")?, field("namespace")?);
            let (c, image) = (field("container")?, field("image")?);
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
        Action::Cordon(_) | Action::Uncordon(_) | Action::Drain(_) => {
            let node = field("node")?;
            let v = before["unschedulable"].as_bool().unwrap_or(false);
            set_unschedulable(ctx, &node, v).await?;
            Ok(format!(
                "node {node} {}",
                if v { "cordoned again" } else { "uncordoned" }
            ))
        }
        Action::Patch(_) | Action::Apply(_) => {
            let objs = before["objects"].as_array().cloned().unwrap_or_default();
            let mut done = Vec::new();
            for o in objs.iter().rev() {
                done.push(restore_object(ctx, o).await?);
            }
            for o in &objs {
                drop_secret_copy(ctx, o).await;
            }
            Ok(done.join("; "))
        }
        other => Err(format!(
            "a {} step cannot be undone automatically",
            other.name()
        )),
    }
}

/// Run an action. `timeout` bounds waits and drains (the engine also bounds the whole step).
pub async fn execute(ctx: &Ctx<'_>, action: &Action, timeout: Duration) -> R<Outcome> {
    let client = &ctx.cluster.client;
    let mut out = Outcome::default();
    let dry = if ctx.dry_run { " (server dry-run)" } else { "" };
    match action {
        Action::Scale(a) => {
            let n = a.replicas.get()?;
            let api = workload_api(client, &a.kind, &a.namespace)?;
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
            out.summary = format!("{what} scaled {prev} → {n}{dry}");
        }
        Action::SetImage(a) => {
            let (api, what, obj) = get_workload(client, &a.kind, &a.namespace, &a.name).await?;
            let (c, prev) = pick_container(&obj, a.container.as_deref(), &what)?;
            api.patch(
                &a.name,
                &pp(ctx),
                &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": c, "image": a.image}]}}}})),
            )
            .await
            .map_err(|e| format!("cannot set the image of {what}: {}", kerr(e)))?;
            out.outputs.insert("previousImage".into(), json!(prev));
            out.summary = format!("{what} container {c}: {prev} → {}{dry}", a.image);
        }
        Action::RolloutRestart(a) => {
            let api = workload_api(client, &a.kind, &a.namespace)?;
            let what = describe_ref(&a.kind, Some(&a.namespace), &a.name);
            let now = jiff::Timestamp::now().to_string();
            api.patch(
                &a.name,
                &pp(ctx),
                &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}})),
            )
            .await
            .map_err(|e| format!("cannot restart {what}: {}", kerr(e)))?;
            out.summary = format!("{what} restarted{dry}");
        }
        Action::Cordon(a) => {
            set_unschedulable(ctx, &a.node, true).await?;
            out.summary = format!("node {} cordoned{dry}", a.node);
        }
        Action::Uncordon(a) => {
            set_unschedulable(ctx, &a.node, false).await?;
            out.summary = format!("node {} uncordoned{dry}", a.node);
        }
        Action::Drain(a) => {
            out.summary = drain(ctx, a, timeout).await?;
        }
        Action::Apply(a) => {
            let mut done = Vec::new();
            for o in apply_objects(a, ctx.files)? {
                let (av, kind, name, ns) = obj_ref(&o);
                let what = describe_ref(&kind, ns.as_deref(), &name);
                let api = dyn_api(client, &av, &kind, ns.as_deref()).await?;
                let mut p = PatchParams::apply(FIELD_MANAGER).force();
                p.dry_run = ctx.dry_run;
                api.patch(&name, &p, &Patch::Apply(&o))
                    .await
                    .map_err(|e| format!("cannot apply {what}: {}", kerr(e)))?;
                done.push(what);
            }
            out.outputs.insert("applied".into(), json!(done.len()));
            out.summary = format!("applied {}{dry}", done.join(", "));
        }
        Action::Patch(a) => {
            let what = describe_ref(&a.kind, a.namespace.as_deref(), &a.name);
            let api = dyn_api(client, &a.api_version, &a.kind, a.namespace.as_deref()).await?;
            let patch = match a.patch_type {
                PatchType::Merge => Patch::Merge(&a.patch),
                PatchType::Strategic => Patch::Strategic(&a.patch),
            };
            api.patch(&a.name, &pp(ctx), &patch)
                .await
                .map_err(|e| format!("cannot patch {what}: {}", kerr(e)))?;
            out.summary = format!("patched {what}{dry}");
        }
        Action::Delete(a) => {
            let what = describe_ref(&a.kind, a.namespace.as_deref(), &a.name);
            let api = dyn_api(client, &a.api_version, &a.kind, a.namespace.as_deref()).await?;
            let dp = DeleteParams {
                dry_run: ctx.dry_run,
                ..DeleteParams::background()
            };
            match api.delete(&a.name, &dp).await {
                Ok(_) => out.summary = format!("deleted {what}{dry}"),
                Err(e) if status_code(&e) == Some(404) => {
                    out.summary = format!("{what} did not exist")
                }
                Err(e) => return Err(format!("cannot delete {what}: {}", kerr(e))),
            }
        }
        Action::Wait(w) => {
            out.summary = wait(ctx, w, timeout).await?;
        }
        Action::WaitWorkloads(w) => {
            out.summary = wait_workloads(ctx, &w.namespace, timeout).await?;
        }
        Action::Run(r) => {
            if ctx.dry_run {
                out.summary = format!("would run: {}", ctx.redactor.redact(&r.command));
            } else {
                out = run_command(ctx, r, timeout).await?;
            }
        }
        Action::Http(h) if ctx.dry_run && !matches!(h.method.as_str(), "GET" | "HEAD") => {
            out.summary = format!("would send {} {}", h.method, h.url);
        }
        Action::Http(h) => {
            out = http(h, timeout).await?;
        }
        Action::Approve(_) => {
            out.summary = "approved".into();
        }
        Action::Backup(b) => {
            if ctx.dry_run {
                out.summary = "would take a backup".into();
            } else {
                out = backup(ctx, b).await?;
            }
        }
        Action::Restore(r) => {
            out = restore(ctx, r).await?;
        }
        Action::Preflight(p) => {
            out = preflight(ctx, p).await?;
        }
        Action::WaitNodeVersion(w) => {
            if ctx.dry_run {
                out.summary = format!(
                    "would wait until node {} runs a kubelet {}",
                    w.node, w.kubelet_version
                );
            } else {
                out = wait_node_version(ctx, w, timeout).await?;
            }
        }
        Action::Drill(d) => {
            if ctx.dry_run {
                out.summary = format!("would drill backup {}", d.backup);
            } else {
                out = drill(ctx, d).await?;
            }
        }
    }
    Ok(out)
}

fn pod_label_match(
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
async fn pdbs_for(client: &kube::Client, pod: &Pod) -> Vec<String> {
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

fn evictable(p: &Pod) -> bool {
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
fn drain_refusals(a: &DrainAction, pods: &[Pod]) -> Vec<String> {
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

async fn drain(ctx: &Ctx<'_>, a: &DrainAction, timeout: Duration) -> R<String> {
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

/// Paths whose value differs between two versions of an object (server-owned metadata and
/// status left out). Values are not shown: they may be secret.
pub fn changed_paths(before: &Value, after: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if matches!(
                        p.as_str(),
                        "metadata.managedFields"
                            | "metadata.resourceVersion"
                            | "metadata.generation"
                            | "metadata.creationTimestamp"
                            | "metadata.uid"
                            | "status"
                    ) {
                        continue;
                    }
                    walk(
                        &p,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            (a, b) if a != b => out.push(if path.is_empty() {
                ".".into()
            } else {
                path.to_string()
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn changes_line<T: serde::Serialize>(what: &str, cur: &T, new: &T) -> String {
    let paths = changed_paths(
        &serde_json::to_value(cur).expect("serializes"),
        &serde_json::to_value(new).expect("serializes"),
    );
    if paths.is_empty() {
        format!("{what}: no change (server dry-run)")
    } else {
        format!("{what}: changes {} (server dry-run)", paths.join(", "))
    }
}

fn condition_status(obj: &Value, ty: &str) -> Option<String> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

fn rollout_done(kind: &str, o: &Value) -> (bool, String) {
    let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let gen_ok = n("/status/observedGeneration") >= n("/metadata/generation");
    match kind {
        "Deployment" => {
            let want = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (upd, total, avail) = (
                n("/status/updatedReplicas"),
                n("/status/replicas"),
                n("/status/availableReplicas"),
            );
            (
                gen_ok && upd == want && total == want && avail == want,
                format!("{upd}/{want} updated, {avail} available, {total} total"),
            )
        }
        "StatefulSet" => {
            let want = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (upd, ready) = (n("/status/updatedReplicas"), n("/status/readyReplicas"));
            let same_rev =
                o.pointer("/status/updateRevision") == o.pointer("/status/currentRevision");
            (
                gen_ok && ready == want && (upd == want || same_rev),
                format!("{upd}/{want} updated, {ready} ready"),
            )
        }
        "DaemonSet" => {
            let want = n("/status/desiredNumberScheduled");
            let (upd, avail) = (
                n("/status/updatedNumberScheduled"),
                n("/status/numberAvailable"),
            );
            (
                gen_ok && upd == want && avail == want,
                format!("{upd}/{want} updated, {avail} available"),
            )
        }
        other => (
            false,
            format!("rollout waits work for Deployment, StatefulSet and DaemonSet, not {other}"),
        ),
    }
}

async fn wait(ctx: &Ctx<'_>, w: &WaitAction, timeout: Duration) -> R<String> {
    let what = describe_ref(&w.kind, w.namespace.as_deref(), &w.name);
    let api = dyn_api(
        &ctx.cluster.client,
        &w.api_version,
        &w.kind,
        w.namespace.as_deref(),
    )
    .await?;
    let deadline = Instant::now() + timeout;
    let goal = if let Some(c) = &w.condition {
        format!("condition {c}={}", w.status.as_deref().unwrap_or("True"))
    } else if let Some(p) = &w.json_path {
        match &w.value {
            Some(v) => format!("{p} = {v}"),
            None => format!("{p} to exist"),
        }
    } else {
        "rollout to complete".to_string()
    };
    let mut last = String::from("not found yet");
    loop {
        let got = match api.get_opt(&w.name).await {
            Ok(o) => o,
            // A restarting API server is not the answer: keep waiting until the timeout.
            Err(e) if transient(&e) && !ctx.dry_run && Instant::now() < deadline => {
                last = format!("cannot read it: {}", kerr(e));
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(format!("{what}: {}", kerr(e))),
        };
        if let Some(obj) = got {
            let o = serde_json::to_value(obj).expect("serializes");
            let (ok, now) = if let Some(c) = &w.condition {
                let want = w.status.as_deref().unwrap_or("True");
                let got = condition_status(&o, c);
                (
                    got.as_deref() == Some(want),
                    format!("{c} is {}", got.as_deref().unwrap_or("absent")),
                )
            } else if let Some(p) = &w.json_path {
                let got = crate::drill::spec::json_path(&o, p).map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                });
                let ok = match (&got, &w.value) {
                    (Some(g), Some(want)) => g == want,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                (ok, format!("{p} is {}", got.as_deref().unwrap_or("absent")))
            } else {
                rollout_done(&w.kind, &o)
            };
            if ok {
                return Ok(format!("{what}: {goal}"));
            }
            last = now;
        }
        if ctx.dry_run {
            return Ok(format!("{what}: would wait for {goal} (now: {last})"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {}s waiting for {what}: {goal} (last seen: {last})",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

async fn wait_workloads(ctx: &Ctx<'_>, ns: &str, timeout: Duration) -> R<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let unready = crate::drill::readiness(&ctx.cluster.client, ns)
            .await
            .map_err(|e| crate::error::display_chain(&e))?;
        if unready.is_empty() {
            return Ok(format!("every workload in namespace {ns} is ready"));
        }
        if ctx.dry_run {
            return Ok(format!("would wait for {}", unready.join(", ")));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {}s; not ready in {ns}: {}",
                timeout.as_secs(),
                unready.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Kills the command's whole process group when dropped (Ctrl-C drops the step's future; a
/// timeout too): the shell and whatever it started, not the shell alone.
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.take()
            && let Ok(pid) = i32::try_from(pid)
        {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// Copy one output stream of a `run` command line by line: into `keep` (bounded), the step's
/// log file and, when live, stderr; secrets redacted on the way.
async fn pump<S: tokio::io::AsyncRead + Unpin>(
    stream: S,
    keep: &mut Vec<u8>,
    log: Option<&std::sync::Mutex<std::fs::File>>,
    live: bool,
    redactor: &Redactor,
) {
    use tokio::io::AsyncBufReadExt;
    const KEEP: usize = 1 << 20;
    let mut lines = tokio::io::BufReader::new(stream).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        if keep.len() < KEEP {
            keep.extend_from_slice(&line[..line.len().min(KEEP - keep.len())]);
            keep.push(b'\n');
        }
        let text = redactor.redact(&String::from_utf8_lossy(&line));
        if let Some(f) = log {
            use std::io::Write;
            let mut f = f.lock().expect("log file");
            let _ = writeln!(f, "{text}");
        }
        if live {
            eprintln!("    │ {text}");
        }
    }
}

async fn run_command(ctx: &Ctx<'_>, r: &RunAction, timeout: Duration) -> R<Outcome> {
    let dir = tempfile_dir()?;
    let out_file = dir.join("output");
    std::fs::write(&out_file, b"").map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&r.command)
        .envs(&r.env)
        .env("LIFEBOAT_OUTPUT", &out_file)
        .env("LIFEBOAT_RUN_ID", ctx.run_id)
        .env("LIFEBOAT_STEP_ID", ctx.step_id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    // The step's log (appended to by every attempt), for `runbook logs`.
    let log = match ctx.log_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            let path = d.join(format!("{}.log", ctx.step_id));
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            use std::io::Write;
            let _ = writeln!(
                f,
                "--- {} attempt at {}",
                ctx.step_id,
                jiff::Timestamp::now()
            );
            Some(std::sync::Mutex::new(f))
        }
        None => None,
    };
    let mut child = cmd.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
    let mut group = GroupKill(child.id());
    let (so, se) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let work = async {
        tokio::join!(
            pump(so, &mut out_buf, log.as_ref(), ctx.live, ctx.redactor),
            pump(se, &mut err_buf, log.as_ref(), ctx.live, ctx.redactor),
        );
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, work).await {
        Ok(st) => st.map_err(|e| e.to_string())?,
        Err(_) => {
            drop(group); // the whole process group
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("command timed out after {}s", timeout.as_secs()));
        }
    };
    // It finished by itself; what it left running in its group is killed too.
    drop(std::mem::replace(&mut group, GroupKill(None)));
    let output = std::process::Output {
        status,
        stdout: out_buf,
        stderr: err_buf,
    };
    let mut o = Outcome::default();
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            o.outputs.insert(k.trim().to_string(), json!(v));
        }
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail = |s: &str| -> String {
        let lines: Vec<&str> = s.trim_end().lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    let trimmed: String = stdout.trim().chars().take(4096).collect();
    o.outputs.insert("stdout".into(), json!(trimmed));
    let code = output.status.code().unwrap_or(-1);
    o.outputs.insert("exitCode".into(), json!(code));
    if !output.status.success() {
        let detail = tail(&stderr);
        let detail = if detail.is_empty() {
            tail(&stdout)
        } else {
            detail
        };
        return Err(format!(
            "command exited with status {code}{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {}", detail.replace('\n', " | "))
            }
        ));
    }
    o.summary = if trimmed.is_empty() {
        "command succeeded".into()
    } else {
        format!("command succeeded: {}", tail(&trimmed).replace('\n', " | "))
    };
    Ok(o)
}

fn tempfile_dir() -> R<std::path::PathBuf> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| e.to_string())?;
    let d = std::env::temp_dir().join(format!("lifeboat-step-{}", hex::encode(b)));
    std::fs::create_dir(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d)
}

async fn http(h: &HttpAction, timeout: Duration) -> R<Outcome> {
    use http_body_util::BodyExt;
    crate::cluster::install_crypto_provider();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no TLS root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut req = http::Request::builder()
        .method(h.method.as_str())
        .uri(&h.url);
    for (k, v) in &h.headers {
        req = req.header(k, v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            h.body.clone().unwrap_or_default(),
        )))
        .map_err(|e| format!("invalid request to {}: {e}", h.url))?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| {
            format!(
                "{} {}: {}",
                h.method,
                h.url,
                crate::error::display_chain(&e)
            )
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{}: {e}", h.url))?
            .to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, body) = tokio::time::timeout(timeout, fut).await.map_err(|_| {
        format!(
            "{} {} timed out after {}s",
            h.method,
            h.url,
            timeout.as_secs()
        )
    })??;
    let mut o = Outcome::default();
    o.outputs.insert("status".into(), json!(status));
    o.outputs.insert(
        "body".into(),
        json!(body.chars().take(1024).collect::<String>()),
    );
    if status != h.expect_status {
        return Err(format!(
            "{} {} answered {status}, expected {}",
            h.method, h.url, h.expect_status
        ));
    }
    if let Some(want) = &h.body_contains
        && !body.contains(want.as_str())
    {
        return Err(format!(
            "{} {}: the body does not contain {want:?}",
            h.method, h.url
        ));
    }
    o.summary = format!("{} {} → {status}", h.method, h.url);
    Ok(o)
}

async fn backup(ctx: &Ctx<'_>, b: &BackupAction) -> R<Outcome> {
    let repo = crate::repo::access::open(ctx.repo);
    let repository = async { repo.await.map(|r| (r, false)) };
    let opts = crate::backup::BackupOptions {
        namespaces: b.namespaces.clone(),
        selector: b.selector.clone(),
        tags: {
            let mut t = b.tags.clone();
            t.insert("lifeboat.io/run".into(), ctx.run_id.to_string());
            t
        },
        context: ctx.cluster_options.context.clone(),
        volumes: b
            .snapshot_volumes
            .then(|| crate::volume::snapshots::VolumeOptions {
                snapshot_class: None,
                keep_snapshots: false,
                snapshot_timeout: Duration::from_secs(600),
                mover: Default::default(),
                cleanup: ctx.cleanup.clone(),
                counters: Default::default(),
                progress: false,
            }),
        ..Default::default()
    };
    let s = crate::backup::create(
        repository,
        ctx.cluster,
        &opts,
        Arc::new(crate::backup::NoProgress),
    )
    .await
    .map_err(|e| crate::error::display_chain(&e))?;
    let mut o = Outcome::default();
    o.outputs.insert("backupId".into(), json!(s.id));
    o.outputs.insert("objects".into(), json!(s.objects));
    o.summary = format!(
        "backup {} ({} objects)",
        &s.id[..s.id.len().min(12)],
        s.objects
    );
    if !s.warnings.is_empty() {
        o.summary
            .push_str(&format!("; warnings: {}", s.warnings.join("; ")));
    }
    Ok(o)
}

async fn restore(ctx: &Ctx<'_>, r: &RestoreAction) -> R<Outcome> {
    let repo = crate::repo::access::open(ctx.repo)
        .await
        .map_err(|e| crate::error::display_chain(&e))?;
    let source = crate::restore::repository_source(repo, &r.backup)
        .await
        .map_err(|e| crate::error::display_chain(&e))?;
    let existing = match r.existing.as_deref() {
        None | Some("skip") => crate::restore::Existing::Skip,
        Some("update") => crate::restore::Existing::Update,
        Some("fail") => crate::restore::Existing::Fail,
        Some(other) => return Err(format!("existing: {other:?} is not skip, update or fail")),
    };
    let mut transforms: Option<crate::restore::transform::Transforms> = None;
    for f in &r.transforms {
        let text = ctx
            .files
            .get(f)
            .ok_or_else(|| format!("transform file {f} is not embedded in the plan"))?;
        let t = crate::restore::transform::Transforms::parse(std::path::Path::new(f), text)
            .map_err(|e| crate::error::display_chain(&e))?;
        match &mut transforms {
            Some(a) => a.extend(t),
            None => transforms = Some(t),
        }
    }
    let opts = crate::restore::RestoreOptions {
        namespaces: r.namespaces.clone(),
        namespace_map: r.namespace_map.clone().into_iter().collect(),
        existing,
        dry_run: r.dry_run || ctx.dry_run,
        storage_class_map: r.storage_class_map.clone(),
        transforms: transforms.map(std::sync::Arc::new),
        ..Default::default()
    };
    let rep = crate::restore::restore(&ctx.cluster.client, source, &opts)
        .await
        .map_err(|e| crate::error::display_chain(&e))?;
    let mut o = Outcome::default();
    o.outputs.insert("restoreId".into(), json!(rep.id));
    // The backup `latest` (or a prefix) resolved to: later steps restore exactly this one.
    o.outputs.insert("backupId".into(), json!(rep.backup));
    o.outputs.insert("created".into(), json!(rep.created));
    o.outputs.insert("failed".into(), json!(rep.failed));
    if rep.failed > 0 {
        let first: Vec<String> = rep
            .items
            .iter()
            .filter(|i| i.outcome == crate::restore::Outcome::Failed)
            .take(3)
            .map(|i| {
                format!(
                    "{} {}: {}",
                    i.kind,
                    i.name,
                    i.message.clone().unwrap_or_default()
                )
            })
            .collect();
        return Err(format!(
            "restore: {} objects failed ({})",
            rep.failed,
            first.join("; ")
        ));
    }
    o.summary = format!(
        "restore{}: {} created, {} skipped",
        if opts.dry_run {
            " (server dry-run)"
        } else {
            ""
        },
        rep.created,
        rep.skipped
    );
    Ok(o)
}

async fn preflight(ctx: &Ctx<'_>, p: &PreflightAction) -> R<Outcome> {
    use crate::preflight::{FailOn, PreflightOptions};
    let fail_on = match p.fail_on.as_deref() {
        None | Some("removed") => FailOn::Removed,
        Some("deprecated") => FailOn::Deprecated,
        Some("none") => FailOn::None,
        Some(o) => return Err(format!("failOn: {o:?} is not removed, deprecated or none")),
    };
    let target = p
        .target
        .as_deref()
        .map(|t| {
            t.parse::<crate::preflight::version::Minor>()
                .map_err(|e| format!("target: {e}"))
        })
        .transpose()?;
    let nodes_to = p
        .nodes_to
        .as_deref()
        .map(|t| {
            t.parse::<crate::preflight::version::Minor>()
                .map_err(|e| format!("nodesTo: {e}"))
        })
        .transpose()?;
    let opts = PreflightOptions {
        target: if nodes_to.is_some() { None } else { target },
        nodes_to,
        manifests: vec![],
        helm: None,
        no_cluster: false,
        fail_on,
        api_data: vec![],
    };
    let rep = crate::preflight::preflight(&opts, ctx.cluster_options)
        .await
        .map_err(|e| crate::error::display_chain(&e))?;
    let s = &rep.summary;
    let mut o = Outcome::default();
    o.outputs.insert("target".into(), json!(rep.target));
    o.outputs.insert("removed".into(), json!(s.errors));
    o.outputs.insert("deprecated".into(), json!(s.warnings));
    o.outputs
        .insert("failedChecks".into(), json!(s.checks_failed));
    let line = format!(
        "preflight for {}: {} removed APIs, {} deprecated, {} failed checks",
        rep.target, s.errors, s.warnings, s.checks_failed
    );
    // A node upgrade never goes ahead of the API server, whatever failOn waives.
    let hard: Vec<String> = rep
        .checks
        .iter()
        .filter(|c| {
            nodes_to.is_some()
                && c.status == crate::preflight::CheckStatus::Fail
                && matches!(c.name.as_str(), "apiserver-at-target" | "kubelet-skew")
        })
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect();
    if !hard.is_empty() {
        return Err(format!("{line} ({})", hard.join("; ")));
    }
    if rep.exit(fail_on) != crate::error::Exit::Success {
        let why: Vec<String> = rep
            .checks
            .iter()
            .filter(|c| c.status == crate::preflight::CheckStatus::Fail)
            .map(|c| format!("{}: {}", c.name, c.message))
            .chain(
                rep.findings
                    .iter()
                    .filter(|f| f.severity == crate::preflight::db::Severity::Error)
                    .take(3)
                    .map(|f| f.message.clone()),
            )
            .take(5)
            .collect();
        return Err(format!("{line} ({})", why.join("; ")));
    }
    o.summary = line;
    Ok(o)
}

/// Whether kubelet version `v` ("v1.35.2") is `want` ("1.35": any patch; "v1.35.2": exactly).
fn kubelet_matches(v: &str, want: &str) -> bool {
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
async fn node_life(ctx: &Ctx<'_>, name: &str) -> R<Option<(String, bool, String, String)>> {
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
async fn wait_node_version(
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
            Ok(None) => last = "the node does not exist (replaced under another name?)".into(),
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

async fn drill(ctx: &Ctx<'_>, d: &DrillAction) -> R<Outcome> {
    let repo = crate::repo::access::open(ctx.repo)
        .await
        .map_err(|e| crate::error::display_chain(&e))?;
    let opts = crate::drill::DrillOptions {
        backup: d.backup.clone(),
        namespaces: d.namespaces.clone(),
        spec: None,
        timeout: Duration::from_secs(600),
        keep: false,
        cluster_label: String::new(),
        on_wait: None,
    };
    let rep = crate::drill::run(
        &ctx.cluster.client,
        &ctx.cluster.server,
        repo,
        &opts,
        std::future::pending::<()>(),
    )
    .await
    .map_err(|e| crate::error::display_chain(&e))?;
    let mut o = Outcome::default();
    o.outputs.insert("drillId".into(), json!(rep.drill_id));
    o.outputs.insert("passed".into(), json!(rep.passed));
    if !rep.passed {
        return Err(format!(
            "drill {} failed {} checks",
            rep.drill_id,
            rep.failed_checks()
        ));
    }
    o.summary = format!("drill {} passed", rep.drill_id);
    Ok(o)
}

/// Plan-time preview of an action: what would change, without changing anything.
pub async fn preview(ctx: &Ctx<'_>, action: &Action) -> R<String> {
    let client = &ctx.cluster.client;
    Ok(match action {
        Action::Scale(a) => {
            let api = workload_api(client, &a.kind, &a.namespace)?;
            let what = describe_ref(&a.kind, Some(&a.namespace), &a.name);
            let cur = api
                .get_scale(&a.name)
                .await
                .map_err(|e| format!("{what}: {}", kerr(e)))?
                .spec
                .and_then(|s| s.replicas)
                .unwrap_or(0);
            format!("{what} replicas {cur} → {}", a.replicas.get()?)
        }
        Action::SetImage(a) => {
            let (_, what, obj) = get_workload(client, &a.kind, &a.namespace, &a.name).await?;
            let (c, cur) = pick_container(&obj, a.container.as_deref(), &what)?;
            format!("{what} container {c} image {cur} → {}", a.image)
        }
        Action::Cordon(a) | Action::Uncordon(a) => {
            let now = node_unschedulable(client, &a.node).await?;
            let state = |c: bool| if c { "cordoned" } else { "schedulable" };
            let want = matches!(action, Action::Cordon(_));
            if now == want {
                format!("node {} is already {}", a.node, state(now))
            } else {
                format!("node {}: {} → {}", a.node, state(now), state(want))
            }
        }
        Action::Delete(d) => {
            let what = describe_ref(&d.kind, d.namespace.as_deref(), &d.name);
            let api = dyn_api(client, &d.api_version, &d.kind, d.namespace.as_deref()).await?;
            match api.get_opt(&d.name).await.map_err(kerr)? {
                Some(_) => format!("delete {what}"),
                None => format!("{what} does not exist (nothing to delete)"),
            }
        }
        Action::Patch(a) => {
            let what = describe_ref(&a.kind, a.namespace.as_deref(), &a.name);
            let api = dyn_api(client, &a.api_version, &a.kind, a.namespace.as_deref()).await?;
            let cur = api
                .get(&a.name)
                .await
                .map_err(|e| format!("{what}: {}", kerr(e)))?;
            let patch = match a.patch_type {
                PatchType::Merge => Patch::Merge(&a.patch),
                PatchType::Strategic => Patch::Strategic(&a.patch),
            };
            let p = PatchParams {
                dry_run: true,
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let new = api
                .patch(&a.name, &p, &patch)
                .await
                .map_err(|e| format!("server dry-run of the patch of {what}: {}", kerr(e)))?;
            changes_line(&what, &cur, &new)
        }
        Action::Apply(a) => {
            let mut lines = Vec::new();
            for o in apply_objects(a, ctx.files)? {
                let (av, kind, name, ns) = obj_ref(&o);
                let what = describe_ref(&kind, ns.as_deref(), &name);
                let api = dyn_api(client, &av, &kind, ns.as_deref()).await?;
                let cur = api.get_opt(&name).await.map_err(kerr)?;
                let mut p = PatchParams::apply(FIELD_MANAGER).force();
                p.dry_run = true;
                let new = api
                    .patch(&name, &p, &Patch::Apply(&o))
                    .await
                    .map_err(|e| format!("server dry-run of {what}: {}", kerr(e)))?;
                lines.push(match cur {
                    None => format!("create {what}"),
                    Some(cur) => changes_line(&what, &cur, &new),
                });
            }
            lines.join("; ")
        }
        Action::Drain(a) => {
            let pods: Api<Pod> = Api::all(client.clone());
            let lp = ListParams::default().fields(&format!("spec.nodeName={}", a.node));
            let list = pods.list(&lp).await.map_err(kerr)?;
            let n = list.items.iter().filter(|p| evictable(p)).count();
            let cordoned = node_unschedulable(client, &a.node).await?;
            format!(
                "node {} ({}): cordon and evict {n} pods",
                a.node,
                if cordoned {
                    "already cordoned"
                } else {
                    "schedulable"
                }
            )
        }
        Action::Wait(w) => format!(
            "wait for {} {}",
            describe_ref(&w.kind, w.namespace.as_deref(), &w.name),
            if w.rollout {
                "rollout".to_string()
            } else if let Some(c) = &w.condition {
                format!("condition {c}")
            } else {
                w.json_path.clone().unwrap_or_default()
            }
        ),
        Action::WaitWorkloads(w) => format!(
            "wait until every workload in namespace {} is ready",
            w.namespace
        ),
        Action::RolloutRestart(a) => format!(
            "restart {}",
            describe_ref(&a.kind, Some(&a.namespace), &a.name)
        ),
        Action::Run(r) => format!("run: {}", ctx.redactor.redact(&r.command)),
        Action::Http(h) => format!("{} {} (expect {})", h.method, h.url, h.expect_status),
        Action::Approve(a) => format!("ask for approval: {}", a.message),
        Action::Backup(b) => format!(
            "back up {}",
            if b.namespaces.is_empty() {
                "the whole cluster".to_string()
            } else {
                format!("namespaces {}", b.namespaces.join(", "))
            }
        ),
        Action::Restore(r) => format!(
            "restore backup {}{}",
            r.backup,
            if r.dry_run { " (server dry-run)" } else { "" }
        ),
        Action::Preflight(p) => match &p.nodes_to {
            Some(n) => {
                format!("preflight for a node upgrade to {n} (the API server must be there)")
            }
            None => format!(
                "preflight for {}",
                p.target.as_deref().unwrap_or("the next minor version")
            ),
        },
        Action::WaitNodeVersion(w) => format!(
            "wait until node {} runs a kubelet {} and reports Ready again",
            w.node, w.kubelet_version
        ),
        Action::Drill(d) => format!("drill backup {}", d.backup),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_rules() {
        let done = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}});
        assert!(rollout_done("Deployment", &done).0);
        let old_pods = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 3, "availableReplicas": 2}});
        assert!(!rollout_done("Deployment", &old_pods).0);
        let stale = json!({"metadata": {"generation": 3}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}});
        assert!(!rollout_done("Deployment", &stale).0);
    }

    #[test]
    fn apply_objects_default_namespace_and_lists() {
        let a = ApplyAction {
            file: None,
            manifest: Some(json!([
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
                {"apiVersion": "v1", "kind": "List", "items": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "x"}}]}
            ])),
            namespace: Some("shop".into()),
        };
        let objs = apply_objects(&a, &BTreeMap::new()).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0]["metadata"]["namespace"], "shop");
        assert_eq!(objs[1]["metadata"]["namespace"], "x");
    }

    #[test]
    fn changed_paths_skip_server_fields() {
        let a = json!({"metadata": {"name": "a", "resourceVersion": "1"}, "data": {"k": "x", "same": "y"}});
        let b = json!({"metadata": {"name": "a", "resourceVersion": "2"}, "data": {"k": "z", "same": "y", "new": "n"}});
        assert_eq!(changed_paths(&a, &b), ["data.k", "data.new"]);
    }

    #[test]
    fn restore_strips_server_fields() {
        let mut o = json!({"metadata": {"name": "a", "resourceVersion": "5", "uid": "u", "managedFields": []}, "status": {}});
        clean_for_restore(&mut o);
        assert_eq!(o, json!({"metadata": {"name": "a"}}));
    }
}
