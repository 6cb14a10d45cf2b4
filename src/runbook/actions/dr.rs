//! Backup, restore, preflight and drill as runbook steps.
use super::*;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupAction {
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Also back up PVC contents (like `backup create --snapshot-volumes`).
    #[serde(default)]
    pub snapshot_volumes: bool,
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestoreAction {
    /// Backup id, unique prefix or `latest`.
    pub backup: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub namespace_map: BTreeMap<String, String>,
    /// skip | update | fail (default skip).
    #[serde(default)]
    pub existing: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// Storage class OLD restored as NEW (`restore --storage-class-map`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_class_map: BTreeMap<String, String>,
    /// Restore transform files, relative to the runbook (embedded in the plan):
    /// docs/restore.md#transforms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreflightAction {
    /// Target minor version ("1.35"); default: the next minor.
    #[serde(default)]
    pub target: Option<String>,
    /// Node-upgrade mode (`preflight --nodes-to`): the nodes go to this minor. Whatever
    /// `failOn` says, the step fails when the API server is not there yet or a kubelet is
    /// outside the skew policy against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_to: Option<String>,
    /// removed | deprecated | none (default removed).
    #[serde(default)]
    pub fail_on: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DrillAction {
    #[serde(default = "latest")]
    pub backup: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

fn latest() -> String {
    "latest".into()
}

pub(super) async fn backup(ctx: &Ctx<'_>, b: &BackupAction) -> R<Outcome> {
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
                mode: Default::default(),
            }),
        hooks: crate::backup::HookOptions {
            pending: ctx.hooks.clone(),
            ..Default::default()
        },
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

pub(super) async fn restore(ctx: &Ctx<'_>, r: &RestoreAction) -> R<Outcome> {
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

pub(super) async fn preflight(ctx: &Ctx<'_>, p: &PreflightAction) -> R<Outcome> {
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

pub(super) async fn drill(ctx: &Ctx<'_>, d: &DrillAction) -> R<Outcome> {
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

impl Act for BackupAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        // A second backup is another backup, not damage.
        true
    }
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(3600)
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!(
            "back up {}",
            if self.namespaces.is_empty() {
                "the whole cluster".to_string()
            } else {
                format!("namespaces {}", self.namespaces.join(", "))
            }
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        if ctx.dry_run {
            return Ok(Outcome {
                summary: "would take a backup".into(),
                ..Default::default()
            });
        }
        backup(ctx, self).await
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("backup")
    }
}

impl Act for RestoreAction {
    fn reversibility(&self) -> Reversibility {
        if self.dry_run {
            Reversibility::ReadOnly
        } else {
            Reversibility::Irreversible
        }
    }
    fn safe_to_repeat(&self) -> bool {
        // A restore skips (or updates) what is already there.
        true
    }
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(3600)
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!(
            "restore backup {}{}",
            self.backup,
            if self.dry_run {
                " (server dry-run)"
            } else {
                ""
            }
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        restore(ctx, self).await
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("restore")
    }
}

impl Act for PreflightAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(match &self.nodes_to {
            Some(n) => {
                format!("preflight for a node upgrade to {n} (the API server must be there)")
            }
            None => format!(
                "preflight for {}",
                self.target.as_deref().unwrap_or("the next minor version")
            ),
        })
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        preflight(ctx, self).await
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("preflight")
    }
}

impl Act for DrillAction {
    fn reversibility(&self) -> Reversibility {
        // It restores into scratch namespaces it deletes again.
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(3600)
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!("drill backup {}", self.backup))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, _timeout: Duration) -> R<Outcome> {
        if ctx.dry_run {
            return Ok(Outcome {
                summary: format!("would drill backup {}", self.backup),
                ..Default::default()
            });
        }
        drill(ctx, self).await
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("drill")
    }
}
