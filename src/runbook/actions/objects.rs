//! Object actions: apply, patch, delete, get; the prior-state capture and restore they share.
use super::*;

/// Reference to a namespaced or cluster-scoped object.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default = "apps_v1")]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

fn apps_v1() -> String {
    "apps/v1".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApplyAction {
    /// A YAML/JSON file with one or more objects, relative to the runbook. Its content is
    /// embedded in the plan.
    #[serde(default)]
    pub file: Option<String>,
    /// Inline objects (one mapping or a list).
    #[serde(default)]
    pub manifest: Option<Value>,
    /// Namespace for objects that do not name one.
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchType {
    Merge,
    Strategic,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchAction {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(rename = "type", default = "merge")]
    pub patch_type: PatchType,
    pub patch: Value,
}

fn merge() -> PatchType {
    PatchType::Merge
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

pub(super) fn obj_ref(o: &Value) -> (String, String, String, Option<String>) {
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

pub(super) fn undo_secret_name(run: &str, step: &str, obj: &str) -> String {
    let h = blake3::hash(format!("{run}\0{step}\0{obj}").as_bytes());
    format!("lifeboat-undo-{}", &h.to_hex()[..20])
}

/// The prior state of one object for undo: absent, the object itself, or (for Secrets, whose
/// data must never be written to the journal) a reference to a copy kept in the cluster.
/// With `change` (the server dry-run of what the step writes), also the fields the step
/// changes, each with a hash of the value it sets (`fields`), so the undo puts back only those
/// fields and notices the ones changed by someone else since (hashes: a Secret's values must
/// not be in the journal either).
pub(super) async fn capture_object<F>(
    ctx: &Ctx<'_>,
    api_version: &str,
    kind: &str,
    name: &str,
    ns: Option<&str>,
    intent: Option<&Value>,
    change: impl FnOnce(Api<DynamicObject>) -> F,
) -> R<Value>
where
    F: std::future::Future<Output = R<DynamicObject>>,
{
    let api = dyn_api(&ctx.cluster.client, api_version, kind, ns).await?;
    let r = json!({"apiVersion": api_version, "kind": kind, "name": name, "namespace": ns});
    let Some(obj) = api.get_opt(name).await.map_err(kerr)? else {
        // Created by the step: its undo deletes it, unless someone changed what the step set
        // (the fields of the server dry run of the create; not for Secrets, whose values must
        // not reach the journal even hashed).
        if kind == "Secret" && api_version == "v1" {
            return Ok(json!({"ref": r, "absent": true}));
        }
        let after = serde_json::to_value(change(api).await?).expect("objects serialize");
        // Only what the step's manifest sets (as the server stores it): fields the server or a
        // controller fills in (a Service's clusterIP) are not the step's to compare.
        let fields: Vec<Value> = leaf_pointers(intent.unwrap_or(&after))
            .into_iter()
            .filter(|p| at_path(&after, p).is_some())
            .map(|p| json!({"path": p, "set": value_hash(at_path(&after, &p))}))
            .collect();
        return Ok(json!({"ref": r, "absent": true, "fields": fields}));
    };
    let mut obj = serde_json::to_value(obj).expect("objects serialize");
    let after = serde_json::to_value(change(api).await?).expect("objects serialize");
    let fields: Vec<Value> = changed_pointers(&obj, &after)
        .into_iter()
        .map(|p| json!({"path": p, "set": value_hash(at_path(&after, &p))}))
        .collect();
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
                // The field list too: even hashes of a Secret's values stay out of the journal.
                "data": {"object": base64_encode(&serde_json::to_vec(&obj).expect("serializes")),
                         "fields": base64_encode(&serde_json::to_vec(&fields).expect("serializes"))}
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
        return Ok(
            json!({"ref": r, "storedIn": {"namespace": ns, "name": copy_name}, "fieldsInCopy": true}),
        );
    }
    Ok(json!({"ref": r, "object": obj, "fields": fields}))
}

/// The paths of an object's leaves that its writer sets: everything but `status` and the
/// server's metadata (of `metadata`, only labels and annotations). Lists are leaves.
pub(super) fn leaf_pointers(v: &Value) -> Vec<Vec<String>> {
    fn walk(path: &mut Vec<String>, v: &Value, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let skip = match path.as_slice() {
                        [] => k == "status",
                        [m] if m == "metadata" => k != "labels" && k != "annotations",
                        _ => false,
                    };
                    if skip {
                        continue;
                    }
                    path.push(k.clone());
                    walk(path, x, out);
                    path.pop();
                }
            }
            _ if !path.is_empty() => out.push(path.clone()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&mut Vec::new(), v, &mut out);
    out
}

/// The value at a path of keys (None: absent).
pub(super) fn at_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

pub(super) fn value_hash(v: Option<&Value>) -> String {
    let text = v
        .map(|v| serde_json::to_string(v).expect("serializes"))
        .unwrap_or_default();
    blake3::hash(format!("{}{text}", v.is_some() as u8).as_bytes()).to_hex()[..32].to_string()
}

/// Set (or with None remove) the value at a path of keys, creating maps on the way.
pub(super) fn set_path(v: &mut Value, path: &[String], value: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        if !cur.get(k).is_some_and(Value::is_object) {
            if value.is_none() {
                return;
            }
            cur[k.as_str()] = json!({});
        }
        cur = cur.get_mut(k).expect("just made");
    }
    match value {
        Some(x) => cur[last.as_str()] = x,
        None => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(last);
            }
        }
    }
}

/// Field-level undo: in the object as it is now, put back the prior value of each field the
/// step changed. A field whose value is no longer the one the step set was changed by someone
/// else since: nothing is written and the conflicts are reported (paths only; values may be
/// secret). Returns the object to write, or None when it already has its prior values.
pub(super) fn undo_fields(
    what: &str,
    current: &Value,
    prior: &Value,
    fields: &[Value],
) -> R<Option<Value>> {
    let mut out = current.clone();
    let mut conflicts = Vec::new();
    let mut changed = false;
    for f in fields {
        let path: Vec<String> = serde_json::from_value(f["path"].clone())
            .map_err(|_| format!("{what}: the recorded field list is damaged"))?;
        let now = at_path(current, &path);
        let was = at_path(prior, &path);
        if now == was {
            continue;
        }
        if value_hash(now) != f["set"].as_str().unwrap_or_default() {
            conflicts.push(path.join("."));
            continue;
        }
        set_path(&mut out, &path, was.cloned());
        changed = true;
    }
    if !conflicts.is_empty() {
        return Err(format!(
            "{what}: {} changed by someone else since this step, so nothing was put back (set the step's fields back by hand if that is still right)",
            conflicts.join(", ")
        ));
    }
    Ok(changed.then_some(out))
}

pub(super) fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Strip what the server owns so the object can be written back.
pub(super) fn clean_for_restore(obj: &mut Value) {
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
pub(super) async fn restore_object(ctx: &Ctx<'_>, before: &Value) -> R<String> {
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
        if let Some(fields) = before.get("fields").and_then(Value::as_array)
            && let Some(cur) = api.get_opt(name).await.map_err(kerr)?
        {
            let cur = serde_json::to_value(&cur).expect("objects serialize");
            let changed: Vec<String> = fields
                .iter()
                .filter_map(|f| {
                    let path: Vec<String> = serde_json::from_value(f["path"].clone()).ok()?;
                    (value_hash(at_path(&cur, &path)) != f["set"].as_str().unwrap_or_default())
                        .then(|| path.join("."))
                })
                .collect();
            if !changed.is_empty() {
                return Err(format!(
                    "{what} was created by this step and changed by someone else since ({}), so it is not deleted (delete it by hand if that is still right)",
                    changed.join(", ")
                ));
            }
        }
        return match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(format!("deleted {what} (it did not exist before)")),
            Err(e) if status_code(&e) == Some(404) => Ok(format!("{what} is already gone")),
            Err(e) => Err(format!("cannot delete {what}: {}", kerr(e))),
        };
    }
    let mut fields = before.get("fields").cloned();
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
        let data = copy.data.unwrap_or_default();
        if before["fieldsInCopy"] == true {
            let f = data.get("fields").ok_or_else(|| {
                format!("the saved prior state of {what} ({copy_name}) has no field list")
            })?;
            fields = Some(
                serde_json::from_slice(&f.0)
                    .map_err(|e| format!("the saved prior state of {what} is damaged: {e}"))?,
            );
        }
        let bytes = data
            .get("object")
            .cloned()
            .ok_or_else(|| format!("the saved prior state of {what} ({copy_name}) is empty"))?;
        serde_json::from_slice(&bytes.0)
            .map_err(|e| format!("the saved prior state of {what} is damaged: {e}"))?
    } else {
        return Err(format!("no prior state of {what} was recorded"));
    };
    match api.get_opt(name).await.map_err(kerr)? {
        Some(cur) if fields.as_ref().is_some_and(Value::is_array) => {
            let fields = fields.as_ref().and_then(Value::as_array).expect("checked");
            let current = serde_json::to_value(&cur).expect("objects serialize");
            let Some(obj) = undo_fields(&what, &current, &prior, fields)? else {
                return Ok(format!("{what} already has its prior values"));
            };
            // The object as read, with only the step's fields put back; its resourceVersion
            // makes a write racing another change fail instead of overwriting it.
            let obj: DynamicObject =
                serde_json::from_value(obj).map_err(|e| format!("{what}: {e}"))?;
            api.replace(name, &PostParams::default(), &obj)
                .await
                .map_err(|e| format!("cannot restore {what}: {}", kerr(e)))?;
            Ok(format!(
                "restored {} field(s) of {what} to their prior values",
                fields.len()
            ))
        }
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
pub(super) async fn drop_secret_copy(ctx: &Ctx<'_>, before: &Value) {
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

/// The patch of a `patch` action, as kube sends it.
fn patch_of(a: &PatchAction) -> Patch<&Value> {
    match a.patch_type {
        PatchType::Merge => Patch::Merge(&a.patch),
        PatchType::Strategic => Patch::Strategic(&a.patch),
    }
}

fn dry_run_params(apply: bool) -> PatchParams {
    let mut p = if apply {
        PatchParams::apply(FIELD_MANAGER).force()
    } else {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        }
    };
    p.dry_run = true;
    p
}

/// Undo of apply and patch: each captured object back, newest change first.
async fn undo_objects(ctx: &Ctx<'_>, before: &Value) -> R<String> {
    let objs = before["objects"].as_array().cloned().unwrap_or_default();
    let mut done = Vec::new();
    for o in objs.iter().rev() {
        done.push(restore_object(ctx, o).await?);
    }
    Ok(done.join("; "))
}

/// After the undo is journaled: the in-cluster copies of prior Secret states.
async fn forget_objects(ctx: &Ctx<'_>, before: &Value) {
    for o in before["objects"].as_array().into_iter().flatten() {
        drop_secret_copy(ctx, o).await;
    }
}

impl Act for ApplyAction {
    fn validate(&self) -> R<()> {
        if self.file.is_some() == self.manifest.is_some() {
            return Err("apply needs exactly one of `file` and `manifest`".into());
        }
        Ok(())
    }
    fn reversibility(&self) -> Reversibility {
        Reversibility::Auto
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        let mut lines = Vec::new();
        for o in apply_objects(self, ctx.files)? {
            let (av, kind, name, ns) = obj_ref(&o);
            let what = describe_ref(&kind, ns.as_deref(), &name);
            let api = dyn_api(&ctx.cluster.client, &av, &kind, ns.as_deref()).await?;
            let cur = api.get_opt(&name).await.map_err(kerr)?;
            let new = api
                .patch(&name, &dry_run_params(true), &Patch::Apply(&o))
                .await
                .map_err(|e| format!("server dry-run of {what}: {}", kerr(e)))?;
            lines.push(match cur {
                None => format!("create {what}"),
                Some(cur) => changes_line(&what, &cur, &new),
            });
        }
        Ok(lines.join("; "))
    }
    async fn capture_before(&self, ctx: &Ctx<'_>) -> R<Option<Value>> {
        let mut objs = Vec::new();
        for o in apply_objects(self, ctx.files)? {
            let (av, kind, name, ns) = obj_ref(&o);
            let what = describe_ref(&kind, ns.as_deref(), &name);
            let n = name.clone();
            let intent = o.clone();
            let change = |api: Api<DynamicObject>| async move {
                api.patch(&n, &dry_run_params(true), &Patch::Apply(&o))
                    .await
                    .map_err(|e| format!("server dry-run of {what}: {}", kerr(e)))
            };
            objs.push(
                capture_object(ctx, &av, &kind, &name, ns.as_deref(), Some(&intent), change)
                    .await?,
            );
        }
        Ok(Some(json!({"objects": objs})))
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let mut done = Vec::new();
        for o in apply_objects(self, ctx.files)? {
            let (av, kind, name, ns) = obj_ref(&o);
            let what = describe_ref(&kind, ns.as_deref(), &name);
            let api = dyn_api(&ctx.cluster.client, &av, &kind, ns.as_deref()).await?;
            let mut p = PatchParams::apply(FIELD_MANAGER).force();
            p.dry_run = ctx.dry_run;
            api.patch(&name, &p, &Patch::Apply(&o))
                .await
                .map_err(|e| format!("cannot apply {what}: {}", kerr(e)))?;
            done.push(what);
        }
        let mut out = Outcome::default();
        out.outputs.insert("applied".into(), json!(done.len()));
        out.summary = format!("applied {}{}", done.join(", "), dry(ctx));
        Ok(out)
    }
    async fn undo(ctx: &Ctx<'_>, before: &Value) -> R<String> {
        undo_objects(ctx, before).await
    }
    async fn forget(ctx: &Ctx<'_>, before: &Value) {
        forget_objects(ctx, before).await
    }
}

impl Act for PatchAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::Auto
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        let a = self;
        let what = describe_ref(&a.kind, a.namespace.as_deref(), &a.name);
        let api = dyn_api(
            &ctx.cluster.client,
            &a.api_version,
            &a.kind,
            a.namespace.as_deref(),
        )
        .await?;
        let cur = api
            .get(&a.name)
            .await
            .map_err(|e| format!("{what}: {}", kerr(e)))?;
        let new = api
            .patch(&a.name, &dry_run_params(false), &patch_of(a))
            .await
            .map_err(|e| format!("server dry-run of the patch of {what}: {}", kerr(e)))?;
        Ok(changes_line(&what, &cur, &new))
    }
    async fn capture_before(&self, ctx: &Ctx<'_>) -> R<Option<Value>> {
        let a = self;
        let what = describe_ref(&a.kind, a.namespace.as_deref(), &a.name);
        let change = |api: Api<DynamicObject>| async move {
            api.patch(&a.name, &dry_run_params(false), &patch_of(a))
                .await
                .map_err(|e| format!("server dry-run of the patch of {what}: {}", kerr(e)))
        };
        Ok(Some(json!({"objects": [
            capture_object(ctx, &a.api_version, &a.kind, &a.name, a.namespace.as_deref(), None, change).await?
        ]})))
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let a = self;
        let what = describe_ref(&a.kind, a.namespace.as_deref(), &a.name);
        let api = dyn_api(
            &ctx.cluster.client,
            &a.api_version,
            &a.kind,
            a.namespace.as_deref(),
        )
        .await?;
        api.patch(&a.name, &pp(ctx), &patch_of(a))
            .await
            .map_err(|e| format!("cannot patch {what}: {}", kerr(e)))?;
        Ok(Outcome {
            summary: format!("patched {what}{}", dry(ctx)),
            ..Default::default()
        })
    }
    async fn undo(ctx: &Ctx<'_>, before: &Value) -> R<String> {
        undo_objects(ctx, before).await
    }
    async fn forget(ctx: &Ctx<'_>, before: &Value) {
        forget_objects(ctx, before).await
    }
}

/// `delete`: one object, in the background (its dependents are collected by the garbage
/// collector). Irreversible; repeating it is harmless (already gone is success).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct DeleteAction(pub ObjectRef);

impl Act for DeleteAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::Irreversible
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String> {
        let d = &self.0;
        let what = describe_ref(&d.kind, d.namespace.as_deref(), &d.name);
        let api = dyn_api(
            &ctx.cluster.client,
            &d.api_version,
            &d.kind,
            d.namespace.as_deref(),
        )
        .await?;
        Ok(match api.get_opt(&d.name).await.map_err(kerr)? {
            Some(_) => format!("delete {what}"),
            None => format!("{what} does not exist (nothing to delete)"),
        })
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let a = &self.0;
        let what = describe_ref(&a.kind, a.namespace.as_deref(), &a.name);
        let api = dyn_api(
            &ctx.cluster.client,
            &a.api_version,
            &a.kind,
            a.namespace.as_deref(),
        )
        .await?;
        let dp = DeleteParams {
            dry_run: ctx.dry_run,
            ..DeleteParams::background()
        };
        let summary = match api.delete(&a.name, &dp).await {
            Ok(_) => format!("deleted {what}{}", dry(ctx)),
            Err(e) if status_code(&e) == Some(404) => format!("{what} did not exist"),
            Err(e) => return Err(format!("cannot delete {what}: {}", kerr(e))),
        };
        Ok(Outcome {
            summary,
            ..Default::default()
        })
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("delete")
    }
}

/// `get`: read one object and put values from it into the step's outputs
/// (`outputs: {name: .json.path}`). Values read from a Secret are treated as secrets.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GetAction {
    #[serde(default = "v1")]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// Output name → path in the object (`.status.readyReplicas`, `.data['key.with.dots']`).
    pub outputs: BTreeMap<String, String>,
    /// What a path that is not in the object gives: an error (default) or null.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_missing: bool,
}

fn v1() -> String {
    "v1".into()
}

impl Act for GetAction {
    fn validate(&self) -> R<()> {
        if self.outputs.is_empty() {
            return Err(
                "get needs at least one entry in `outputs` (name: .path.in.the.object)".into(),
            );
        }
        for (k, p) in &self.outputs {
            if !p.trim().starts_with(['.', '[', '$']) {
                return Err(format!(
                    "get.outputs.{k}: {p:?} is not a path (write it like .status.readyReplicas)"
                ));
            }
        }
        Ok(())
    }
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!(
            "read {} from {}",
            self.outputs.keys().cloned().collect::<Vec<_>>().join(", "),
            describe_ref(&self.kind, self.namespace.as_deref(), &self.name)
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let what = describe_ref(&self.kind, self.namespace.as_deref(), &self.name);
        let api = dyn_api(
            &ctx.cluster.client,
            &self.api_version,
            &self.kind,
            self.namespace.as_deref(),
        )
        .await?;
        let obj = api
            .get(&self.name)
            .await
            .map_err(|e| format!("{what}: {}", kerr(e)))?;
        let obj = serde_json::to_value(obj).expect("objects serialize");
        let secret = self.kind == "Secret";
        let mut out = Outcome::default();
        for (k, p) in &self.outputs {
            let v = match crate::drill::spec::json_path(&obj, p) {
                Some(v) => v.clone(),
                None if self.allow_missing => Value::Null,
                None => return Err(format!("{what} has no {p}")),
            };
            if secret {
                let mut strings = Vec::new();
                crate::runbook::spec::collect_strings(&v, &mut strings);
                for s in strings {
                    ctx.redactor.add(&s);
                }
            }
            out.outputs.insert(k.clone(), v);
        }
        out.summary = format!(
            "read {} from {what}",
            self.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        Ok(out)
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("get")
    }
}

/// `list`: items found at run time, as the output `items` (and `count`): the names of the
/// objects a selector matches (sorted), or a rendered list (`items: "{{ steps.x.outputs.y }}"`,
/// a list or a comma/space separated string). A group whose `forEach` has this form is
/// expanded from it when the run reaches it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ListSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListSelector {
    #[serde(default = "v1")]
    pub api_version: String,
    pub kind: String,
    /// For namespaced kinds; none: every namespace (items are then `namespace/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<String>,
}

impl Act for ListAction {
    fn validate(&self) -> R<()> {
        if self.selector.is_some() == self.items.is_some() {
            return Err("needs exactly one of `items` and `selector`".into());
        }
        Ok(())
    }
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(match &self.selector {
            Some(s) => format!(
                "at run time: the {} {}{}",
                s.kind,
                s.label_selector
                    .as_ref()
                    .map(|l| format!("matching {l}"))
                    .unwrap_or_else(|| "objects".into()),
                s.namespace
                    .as_ref()
                    .map(|n| format!(" in {n}"))
                    .unwrap_or_default()
            ),
            None => "at run time: the items rendered from earlier steps' outputs".into(),
        })
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        let items: Vec<Value> = match (&self.items, &self.selector) {
            (Some(v), _) => crate::runbook::spec::list_items(v),
            (None, Some(s)) => {
                let (ar, namespaced) =
                    resolve(&ctx.cluster.client, &s.api_version, &s.kind).await?;
                let api: Api<DynamicObject> = match (&s.namespace, namespaced) {
                    (Some(ns), true) => Api::namespaced_with(ctx.cluster.client.clone(), ns, &ar),
                    _ => Api::all_with(ctx.cluster.client.clone(), &ar),
                };
                let mut lp = ListParams::default();
                if let Some(l) = &s.label_selector {
                    lp = lp.labels(l);
                }
                if let Some(f) = &s.field_selector {
                    lp = lp.fields(f);
                }
                let list = api
                    .list(&lp)
                    .await
                    .map_err(|e| format!("list {} {}: {}", s.api_version, s.kind, kerr(e)))?;
                let mut names: Vec<String> = list
                    .items
                    .iter()
                    .map(|o| {
                        let name = o.metadata.name.clone().unwrap_or_default();
                        match (&o.metadata.namespace, &s.namespace) {
                            (Some(ns), None) => format!("{ns}/{name}"),
                            _ => name,
                        }
                    })
                    .collect();
                names.sort();
                names.into_iter().map(Value::String).collect()
            }
            (None, None) => return Err("list needs `items` or `selector`".into()),
        };
        // Each item becomes part of step ids: two that give the same id would make the second
        // look done already; and ids are journaled, so no item may hold a secret.
        let mut ids = std::collections::BTreeMap::new();
        for it in &items {
            let label = crate::runbook::spec::item_label(it);
            if ctx.redactor.touches(&label) {
                return Err(
                    "an item contains a secret value; items become step ids, which are journaled"
                        .into(),
                );
            }
            if let Some(prev) = ids.insert(crate::runbook::spec::id_part(it), label.clone()) {
                return Err(if prev == label {
                    format!("item {label} is listed twice")
                } else {
                    format!("items {prev} and {label} would give the same step ids")
                });
            }
        }
        let mut o = Outcome::default();
        o.summary = if items.is_empty() {
            "no items".into()
        } else {
            format!(
                "{} item(s): {}",
                items.len(),
                items
                    .iter()
                    .map(crate::runbook::spec::item_label)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        o.outputs.insert("count".into(), json!(items.len()));
        o.outputs.insert("items".into(), Value::Array(items));
        Ok(o)
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("list")
    }
}
