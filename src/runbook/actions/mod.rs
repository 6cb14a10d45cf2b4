//! The runbook actions. Each is one type implementing [`Act`] (parse is its serde type;
//! validate, preview, capture-before, execute, undo), registered once in `registry!` below,
//! which generates the [`Action`] enum, the list of action names and the dispatch. Step
//! failures are plain messages (they are data of the run, shown and journaled), not program
//! errors.
mod dr;
mod flow;
mod nodes;
mod objects;
mod process;
mod waits;
mod workloads;

pub use dr::*;
pub use flow::*;
pub use nodes::*;
pub use objects::*;
pub use process::*;
pub use waits::*;
pub use workloads::*;

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
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::spec::IntOrTemplate;
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
    /// Post hooks a `backup` step owes (run when the step is abandoned: timeout, Ctrl-C).
    pub hooks: &'a crate::backup::hooks::Pending,
    /// Where `run` steps write their output (`<step>.log`); None: nowhere (plans, dry runs).
    pub log_dir: Option<&'a std::path::Path>,
    /// Show a `run` step's output as it comes (on stderr).
    pub live: bool,
    /// This execution of the step, for names of what it creates in the cluster (`job`): the
    /// same when a crashed attempt is resumed, another for each retry after a failure, each
    /// run after a rollback, and for the step's undo.
    pub instance: String,
    /// Evaluates an expression over the run's parameters and outputs (`assert`); None at plan
    /// time.
    pub eval: Option<&'a (dyn Fn(&str) -> R<bool> + Sync)>,
}

/// What a step produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub outputs: BTreeMap<String, Value>,
    pub summary: String,
}

pub(super) const FIELD_MANAGER: &str = "lifeboat";

pub(super) fn kerr(e: kube::Error) -> String {
    crate::error::display_chain(&e)
}

/// An error worth retrying until the step's timeout: the API server busy or restarting, a
/// connection that broke (not a refusal: 4xx other than 429 are answers).
pub(super) fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

pub(super) fn status_code(e: &kube::Error) -> Option<u16> {
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

pub(super) async fn dyn_api(
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

pub(super) fn describe_ref(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

pub(super) fn pp(ctx: &Ctx) -> PatchParams {
    let mut p = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    p.dry_run = ctx.dry_run;
    p
}

/// The undo would overwrite a change someone else made after the step.
pub(super) fn conflict(what: &str, field: &str, now: &str, set: &str, prior: &str) -> String {
    format!(
        "{what}: {field} is now {now}, not the {set} this step set; changed by someone else since, so it is left as is (set it back to {prior} by hand if that is still right)"
    )
}

/// Paths whose value differs between two versions of an object (server-owned metadata and
/// status left out). Values are not shown: they may be secret.
pub fn changed_paths(before: &Value, after: &Value) -> Vec<String> {
    changed_pointers(before, after)
        .into_iter()
        .map(|p| {
            if p.is_empty() {
                ".".into()
            } else {
                p.join(".")
            }
        })
        .collect()
}

/// The same as key paths (a key may contain dots: annotations). Lists are compared whole.
pub fn changed_pointers(before: &Value, after: &Value) -> Vec<Vec<String>> {
    fn walk(
        path: &mut Vec<String>,
        a: Option<&Value>,
        b: Option<&Value>,
        out: &mut Vec<Vec<String>>,
    ) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let server_owned = match path.as_slice() {
                        [] => k == "status",
                        [m] if m == "metadata" => matches!(
                            k.as_str(),
                            "managedFields"
                                | "resourceVersion"
                                | "generation"
                                | "creationTimestamp"
                                | "uid"
                        ),
                        _ => false,
                    };
                    if server_owned {
                        continue;
                    }
                    path.push(k.clone());
                    walk(path, x.get(k), y.get(k), out);
                    path.pop();
                }
            }
            (a, b) if a != b => out.push(path.clone()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&mut Vec::new(), Some(before), Some(after), &mut out);
    out
}

pub(super) fn changes_line<T: serde::Serialize>(what: &str, cur: &T, new: &T) -> String {
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

/// One runbook action. Nothing about undo has a default: an action states its reversibility,
/// what it captures before it runs, and how it is undone from that capture, or the compiler
/// refuses it.
#[allow(async_fn_in_trait)]
pub trait Act {
    /// Checks of the action as written that its serde type cannot express, reported at the
    /// action's line:column when the runbook loads (templates are not rendered yet).
    fn validate(&self) -> R<()> {
        Ok(())
    }
    /// What undoing means when the step does not say (`undo:`).
    fn reversibility(&self) -> Reversibility;
    /// Whether running it a second time, after a crash left it half done, is harmless. Those
    /// that are not are "in doubt" on resume and need `--in-doubt rerun|skip` or an answer.
    fn safe_to_repeat(&self) -> bool;
    /// The step timeout when the step does not set one.
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(300)
    }
    /// What would change, without changing anything (plans and confirmations).
    async fn preview(&self, ctx: &Ctx<'_>) -> R<String>;
    /// The state undo needs, captured just before `execute`. `None`: nothing to capture, which
    /// only read-only and irreversible actions may answer.
    async fn capture_before(&self, ctx: &Ctx<'_>) -> R<Option<Value>>;
    /// Run it. `timeout` bounds waits (the engine also bounds the whole step). In a dry run
    /// (`ctx.dry_run`) nothing may change.
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome>;
    /// Undo from the captured state alone (`before`): the action's own fields may have
    /// rendered differently since. Read-only and irreversible actions answer with
    /// [`not_undoable`].
    async fn undo(ctx: &Ctx<'_>, before: &Value) -> R<String>;
    /// Called once the undo's result is journaled: delete what the capture kept outside the
    /// journal for the undo (a Secret's prior state). Until then a repeated undo (after a
    /// crash) still finds it. Best effort.
    async fn forget(_ctx: &Ctx<'_>, _before: &Value) {}
}

/// " (server dry-run)" in summaries of dry runs.
pub(super) fn dry(ctx: &Ctx) -> &'static str {
    if ctx.dry_run { " (server dry-run)" } else { "" }
}

/// A string field of a captured prior state.
pub(super) fn field(before: &Value, k: &str) -> R<String> {
    before[k]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("the recorded prior state has no {k}"))
}

/// The undo of an action that has none.
pub(super) fn not_undoable(name: &str) -> R<String> {
    Err(format!("a {name} step cannot be undone automatically"))
}

macro_rules! registry {
    ($($variant:ident($ty:ty) = $name:literal,)*) => {
        /// The actions a step can take. Serialized externally tagged (`{scale: {...}}`), which
        /// is also how they are written in a runbook.
        #[derive(Debug, Clone, Deserialize, Serialize)]
        pub enum Action {
            $(#[serde(rename = $name)] $variant($ty),)*
        }

        /// Every action's name, as written in a runbook.
        pub const ACTIONS: &[&str] = &[$($name),*];

        impl Action {
            pub fn name(&self) -> &'static str {
                match self { $(Action::$variant(_) => $name,)* }
            }
            pub fn reversibility(&self) -> Reversibility {
                match self { $(Action::$variant(a) => a.reversibility(),)* }
            }
            pub fn safe_to_repeat(&self) -> bool {
                match self { $(Action::$variant(a) => a.safe_to_repeat(),)* }
            }
            pub fn default_timeout(&self) -> Duration {
                match self { $(Action::$variant(a) => a.default_timeout(),)* }
            }
            pub fn validate(&self) -> R<()> {
                match self { $(Action::$variant(a) => a.validate(),)* }
            }
            /// Parse the value of step field `key` when it names an action; None otherwise.
            pub fn parse_field<'de, M: serde::de::MapAccess<'de>>(
                key: &str,
                map: &mut M,
            ) -> Option<Result<Action, M::Error>> {
                match key {
                    $($name => Some(map.next_value::<$ty>().map(Action::$variant)),)*
                    _ => None,
                }
            }
        }

        /// Plan-time preview of an action: what would change, without changing anything.
        pub async fn preview(ctx: &Ctx<'_>, action: &Action) -> R<String> {
            match action { $(Action::$variant(a) => a.preview(ctx).await,)* }
        }

        /// The state undo needs, captured before the action runs.
        pub async fn capture_before(ctx: &Ctx<'_>, action: &Action) -> R<Option<Value>> {
            match action { $(Action::$variant(a) => a.capture_before(ctx).await,)* }
        }

        /// Run an action.
        pub async fn execute(ctx: &Ctx<'_>, action: &Action, timeout: Duration) -> R<Outcome> {
            match action { $(Action::$variant(a) => a.execute(ctx, timeout).await,)* }
        }

        /// Delete what an action's capture kept for its undo, once the undo is journaled.
        pub async fn forget_capture(ctx: &Ctx<'_>, action: &Action, before: &Value) {
            match action { $(Action::$variant(_) => <$ty as Act>::forget(ctx, before).await,)* }
        }

        /// Undo an action from its captured state alone (`action` only says which kind).
        pub async fn undo_auto(ctx: &Ctx<'_>, action: &Action, before: &Value) -> R<String> {
            match action { $(Action::$variant(_) => <$ty as Act>::undo(ctx, before).await,)* }
        }
    };
}

registry! {
    Backup(BackupAction) = "backup",
    Restore(RestoreAction) = "restore",
    Preflight(PreflightAction) = "preflight",
    Drill(DrillAction) = "drill",
    Apply(ApplyAction) = "apply",
    Patch(PatchAction) = "patch",
    Get(GetAction) = "get",
    List(ListAction) = "list",
    Scale(ScaleAction) = "scale",
    SetImage(SetImageAction) = "setImage",
    RolloutRestart(RolloutRestartAction) = "rolloutRestart",
    RolloutUndo(RolloutUndoAction) = "rolloutUndo",
    Cordon(CordonAction) = "cordon",
    Uncordon(UncordonAction) = "uncordon",
    Drain(DrainAction) = "drain",
    Delete(DeleteAction) = "delete",
    Wait(WaitAction) = "wait",
    WaitWorkloads(WaitWorkloadsAction) = "waitWorkloads",
    WaitNodeVersion(WaitNodeVersionAction) = "waitNodeVersion",
    Sleep(SleepAction) = "sleep",
    Run(RunAction) = "run",
    Exec(ExecAction) = "exec",
    Job(JobAction) = "job",
    Http(HttpAction) = "http",
    Approve(ApproveAction) = "approve",
    Assert(AssertAction) = "assert",
}

impl Action {
    /// Whether the step changes the cluster (an interactive run asks before it).
    pub fn mutates(&self) -> bool {
        !matches!(self.reversibility(), Reversibility::ReadOnly)
    }
}

/// What undoing an action means when the step does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reversibility {
    /// The action records its prior state and can restore it (`undo: auto` is the default).
    Auto,
    /// The action changes nothing in the cluster (`undo: skip` is the default).
    ReadOnly,
    /// The action cannot be undone automatically (`undo: none` is the default).
    Irreversible,
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
