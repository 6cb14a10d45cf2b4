//! Plans (`kind: Plan`, docs/runbooks.md): a runbook rendered with its parameters for one
//! cluster, with a preview of every step and a content hash. `runbook run` refuses a plan whose
//! content no longer matches its hash, or that was made for another cluster.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

use super::actions::{self, Ctx};
use super::journal::Actor;
use super::spec::{self, Action, Loaded};
use super::template::{self, Redactor};
use crate::cluster::{Cluster, ClusterOptions};
use crate::error::Error;
use crate::repo::access::RepoOptions;

pub const KIND: &str = "Plan";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Plan {
    pub api_version: String,
    pub kind: String,
    pub metadata: PlanMeta,
    pub runbook: PlanRunbook,
    pub params: BTreeMap<String, Value>,
    pub cluster: PlanCluster,
    pub preview: Vec<PreviewStep>,
    /// sha256 over the canonical JSON of everything above.
    pub content_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlanMeta {
    pub name: String,
    pub created: String,
    pub created_by: Actor,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlanRunbook {
    pub name: String,
    pub path: String,
    /// The runbook file as it was planned.
    pub source: String,
    /// Files the runbook applies (`apply.file`), by the name the runbook uses.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlanCluster {
    #[serde(default)]
    pub context: Option<String>,
    pub server: String,
    pub server_version: String,
    /// The UID of the cluster's `kube-system` namespace: its identity, whatever address it is
    /// reached at (in a pod, behind a proxy or a tunnel many clusters share one URL). `None`:
    /// it could not be read when planning (older plans, or no permission); then only the server
    /// URL is compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreviewStep {
    pub id: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finally: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint: bool,
    pub undo: String,
    pub preview: String,
}

/// What a run changes, independent of who planned it and when: the runbook and its rendered
/// parameters (which name the targets). Two plans of the same change share one lock.
pub fn change_key(p: &Plan) -> String {
    let what = serde_json::json!({"runbook": p.runbook.name, "params": p.params});
    let bytes = serde_json::to_vec(&what).expect("plans serialize");
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

pub fn content_hash(p: &Plan) -> String {
    let mut c = p.clone();
    c.content_hash = String::new();
    let bytes = serde_json::to_vec(&c).expect("plans serialize");
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

pub fn undo_label(s: &spec::Step) -> String {
    match s.effective_undo() {
        spec::Undo::Auto => "auto".into(),
        spec::Undo::None => "none".into(),
        spec::Undo::Skip => "skip".into(),
        spec::Undo::Action(a) => format!("{} action", a.name()),
    }
}

/// The kubeconfig context in use (None in a pod with a service account).
pub fn context_name(opts: &ClusterOptions) -> Option<String> {
    if let Some(c) = &opts.context {
        return Some(c.clone());
    }
    let kc = match &opts.kubeconfig {
        Some(p) => kube::config::Kubeconfig::read_from(p).ok(),
        None => kube::config::Kubeconfig::read().ok(),
    };
    kc.and_then(|k| k.current_context)
}

/// The template context at plan time and at run time.
pub fn template_context(
    params: &BTreeMap<String, Value>,
    steps: &BTreeMap<String, Value>,
    run: &str,
    dry_run: bool,
) -> Value {
    json!({"params": params, "steps": steps, "run": {"id": run, "dryRun": dry_run}})
}

/// Add a step's own variables (`item` of a group) to a template context.
pub fn with_vars(mut ctx: Value, step: &spec::Step) -> Value {
    for (k, v) in &step.vars {
        ctx[k.as_str()] = v.clone();
    }
    // In a group: `group.steps.ID` is the same item's step ID (its outputs and status).
    if let Some(prefix) = &step.group_item {
        let mut mine = serde_json::Map::new();
        if let Some(all) = ctx["steps"].as_object() {
            for (id, v) in all {
                if let Some(inner) = id.strip_prefix(prefix.as_str()) {
                    mine.insert(inner.to_string(), v.clone());
                }
            }
        }
        ctx["group"] = serde_json::json!({"steps": mine, "item": step.vars.get("item")});
    }
    ctx
}

/// Render a step's action with the given context.
pub fn render_action(
    engine: &template::Engine,
    action: &Action,
    ctx: &Value,
) -> Result<Action, String> {
    let v = serde_json::to_value(action).expect("actions serialize");
    let r = engine.render_value(&v, ctx)?;
    serde_json::from_value(r).map_err(|e| format!("after rendering: {e}"))
}

pub struct PlanInput<'a> {
    pub runbook: &'a Path,
    pub set: &'a [(String, String)],
    pub cluster: &'a Cluster,
    pub cluster_options: &'a ClusterOptions,
    pub repo: &'a RepoOptions,
    pub actor: Actor,
}

/// Make a plan: resolve parameters, embed files, record the cluster, preview each step.
/// Returns the plan and warnings (steps that could not be previewed).
pub async fn make(input: PlanInput<'_>) -> Result<(Plan, Vec<String>), Error> {
    let mut loaded = spec::load(input.runbook)?;
    let params = spec::resolve_params(&loaded, input.set)?;
    loaded.expand(&params)?;
    let files = embed_files(&loaded)?;
    let info = input
        .cluster
        .client
        .apiserver_version()
        .await
        .map_err(|source| crate::error::cluster_error(&input.cluster.server, source))?;
    let redactor = Redactor::default();
    let engine = template::Engine::with_redactor(redactor.clone());
    let mut preview = Vec::new();
    let mut warnings = Vec::new();
    let finally_ids: Vec<&str> = loaded
        .runbook
        .finally
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    for step in loaded.steps.iter().chain(loaded.runbook.finally.iter()) {
        let ctx_value = with_vars(
            template_context(&params, &BTreeMap::new(), "plan", true),
            step,
        );
        let text = match render_action(&engine, &step.action, &ctx_value) {
            Err(e) if e.contains("steps") => {
                "rendered at run time (uses outputs of earlier steps)".to_string()
            }
            Err(e) => format!("rendered at run time ({})", redactor.redact(&e)),
            Ok(action) => {
                let ctx = Ctx {
                    cluster: input.cluster,
                    cluster_options: input.cluster_options,
                    repo: input.repo,
                    run_id: "plan",
                    step_id: &step.id,
                    files: &files,
                    redactor: &redactor,
                    dry_run: true,
                    cleanup: &Default::default(),
                    hooks: &Default::default(),
                    log_dir: None,
                    live: false,
                    instance: "plan".into(),
                    eval: None,
                };
                match actions::preview(&ctx, &action).await {
                    Ok(p) => p,
                    Err(e) => {
                        let e = redactor.redact(&e);
                        warnings.push(format!("step {}: cannot preview: {e}", step.id));
                        format!("cannot preview now: {e}")
                    }
                }
            }
        };
        preview.push(PreviewStep {
            id: step.id.clone(),
            action: step.action.name().to_string(),
            finally: finally_ids.contains(&step.id.as_str()),
            checkpoint: step.checkpoint,
            undo: undo_label(step),
            preview: redactor.redact(&text),
        });
    }
    let now = jiff::Timestamp::now();
    let mut plan = Plan {
        api_version: spec::API_VERSION.into(),
        kind: KIND.into(),
        metadata: PlanMeta {
            name: loaded.runbook.metadata.name.clone(),
            created: now.to_string(),
            created_by: input.actor,
        },
        runbook: PlanRunbook {
            name: loaded.runbook.metadata.name.clone(),
            path: input.runbook.display().to_string(),
            source: loaded.text.clone(),
            files,
        },
        params,
        cluster: PlanCluster {
            context: context_name(input.cluster_options),
            server: input.cluster.server.clone(),
            server_version: info.git_version,
            uid: crate::cluster::cluster_uid(&input.cluster.client).await,
        },
        preview,
        content_hash: String::new(),
    };
    plan.content_hash = content_hash(&plan);
    Ok((plan, warnings))
}

fn embed_files(l: &Loaded) -> Result<BTreeMap<String, String>, Error> {
    let base = l.path.parent().unwrap_or(Path::new("."));
    let mut files = BTreeMap::new();
    for (at, step, _) in l.all_steps() {
        let mut actions = vec![&step.action];
        if let Some(spec::Undo::Action(a)) = &step.undo {
            actions.push(a);
        }
        for a in actions {
            if let Action::Restore(r) = a {
                for f in &r.transforms {
                    let path = base.join(f);
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
                            path: path.clone(),
                            source,
                        })?;
                    // Checked now: a bad rule fails the plan, not the incident.
                    crate::restore::transform::Transforms::parse(&path, &text)?;
                    files.insert(f.clone(), text);
                }
            }
            if let Action::Apply(ap) = a
                && let Some(f) = &ap.file
            {
                if template::is_template(f) {
                    let mut p = at.clone();
                    p.push(spec::PathElem::Key("apply".into()));
                    return Err(l.error_at(
                        &p,
                        "apply.file cannot be a template (the file is embedded in the plan)",
                    ));
                }
                let path = base.join(f);
                let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
                    path: path.clone(),
                    source,
                })?;
                files.insert(f.clone(), text);
            }
        }
    }
    Ok(files)
}

pub fn write(plan: &Plan, path: &Path) -> Result<(), Error> {
    let text = serde_norway::to_string(plan).map_err(|e| Error::Encode {
        format: "yaml",
        source: Box::new(e),
    })?;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| Error::ReadFile {
            path: dir.to_owned(),
            source,
        })?;
    }
    let header = "# lifeboat plan: review it, then `lifeboat runbook run` this file.\n\
                  # Do not edit: a plan whose content no longer matches contentHash is refused.\n";
    crate::drill::report::write_atomic(path, &format!("{header}{text}"))
}

/// Read a plan and check its hash and its runbook.
pub fn load(path: &Path) -> Result<(Plan, Loaded), Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let plan: Plan = crate::yaml::parse(path, &text)?;
    if plan.api_version != spec::API_VERSION || plan.kind != KIND {
        return Err(Error::DataFile {
            path: path.to_owned(),
            location: "1:1".into(),
            message: format!(
                "not a lifeboat plan (apiVersion {API}, kind Plan); make one with `lifeboat runbook plan`",
                API = spec::API_VERSION
            ),
        });
    }
    let want = content_hash(&plan);
    if want != plan.content_hash {
        return Err(Error::Runbook(format!(
            "{} was changed after it was planned (its content does not match contentHash); \
             make a new plan with `lifeboat runbook plan`",
            path.display()
        )));
    }
    let mut loaded = spec::parse(&PathBuf::from(&plan.runbook.path), &plan.runbook.source)?;
    loaded.expand(&plan.params)?;
    Ok((plan, loaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_steps_name_the_same_items_steps_and_default_covers_a_missing_output() {
        let mut step: spec::Step = serde_norway::from_str(
            "id: node-a-uncordon\nuncordon: {node: \"{{ group.steps.upgrade.outputs.node | default(item) }}\"}\n",
        )
        .unwrap();
        step.vars.insert("item".into(), serde_json::json!("a"));
        step.group_item = Some("node-a-".into());
        let engine = template::Engine::new();
        let steps = |out: Value| {
            let mut m = BTreeMap::new();
            m.insert(
                "node-a-upgrade".to_string(),
                serde_json::json!({"outputs": out, "status": "succeeded"}),
            );
            m.insert(
                "node-b-upgrade".to_string(),
                serde_json::json!({"outputs": {"node": "wrong"}, "status": "succeeded"}),
            );
            m
        };
        let render = |out: Value| {
            let ctx = with_vars(
                template_context(&BTreeMap::new(), &steps(out), "r", false),
                &step,
            );
            match render_action(&engine, &step.action, &ctx).unwrap() {
                Action::Uncordon(u) => u.node,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            render(serde_json::json!({"node": "a-replacement"})),
            "a-replacement"
        );
        assert_eq!(render(serde_json::json!({})), "a");
    }

    #[test]
    fn hash_covers_every_field() {
        let mut p = Plan {
            api_version: spec::API_VERSION.into(),
            kind: KIND.into(),
            metadata: PlanMeta {
                name: "x".into(),
                created: "t".into(),
                created_by: Actor::default(),
            },
            runbook: PlanRunbook {
                name: "x".into(),
                path: "x.yaml".into(),
                source: "steps: []".into(),
                files: BTreeMap::new(),
            },
            params: BTreeMap::from([("replicas".into(), json!(3))]),
            cluster: PlanCluster {
                context: None,
                server: "https://a".into(),
                server_version: "v1.34.4".into(),
                uid: Some("0d6c0f8e-1".into()),
            },
            preview: vec![],
            content_hash: String::new(),
        };
        let h = content_hash(&p);
        p.content_hash = h.clone();
        assert_eq!(content_hash(&p), h, "the hash field itself is not hashed");
        p.params.insert("replicas".into(), json!(4));
        assert_ne!(content_hash(&p), h);
        let key = change_key(&p);
        p.metadata.created = "later".into();
        p.metadata.created_by.user = "bob".into();
        assert_eq!(
            change_key(&p),
            key,
            "another plan of the same change: one lock"
        );
        p.params.insert("replicas".into(), json!(5));
        assert_ne!(change_key(&p), key);
        let h4 = content_hash(&p);
        p.cluster.uid = Some("another-cluster".into());
        assert_ne!(content_hash(&p), h4, "the cluster identity is hashed");
    }
}
