//! `lifeboat drill`: restore a backup into scratch namespaces, wait until it is ready, prove it
//! is what was backed up, report, and clean up — also on failure, timeout and Ctrl-C.
//!
//! The restore is the restore of `lifeboat restore` (same ordering, stripping and namespace
//! mapping): each backed-up namespace NS is restored as `drill-<NS>-<drill id>`, cluster-scoped
//! objects are never touched. Check list (docs/drill.md): restore reported no failure, every
//! object present (per kind, by name), ConfigMap/Secret data equal (by hash), workloads ready
//! within the timeout, optional RTO/RPO budgets and JSONPath assertions from a drill spec.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde::Serialize;
use serde_json::Value;

pub mod cronjob;
pub mod report;
pub mod spec;

use crate::error::Error;
use crate::repo::Repository;
use crate::repo::snapshot::TreeEntry;
use crate::restore::{self, Outcome, RestoreOptions};

pub const DRILL_LABEL: &str = "lifeboat.io/drill";
pub const EXPIRES_ANNOTATION: &str = "lifeboat.io/drill-expires";
pub const SOURCE_ANNOTATION: &str = "lifeboat.io/drill-source-namespace";

/// Namespaces a drill never restores unless asked by name.
const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease", "default"];

#[derive(Clone)]
pub struct DrillOptions {
    pub backup: String,
    /// Namespaces of the backup to drill (empty: every non-system namespace in it).
    pub namespaces: Vec<String>,
    pub spec: Option<spec::DrillSpec>,
    pub timeout: Duration,
    pub keep: bool,
    /// Cluster label for metrics (default: the API server URL).
    pub cluster_label: String,
    /// Called while waiting for readiness with the workloads that are not ready yet (progress
    /// on a terminal).
    pub on_wait: Option<Arc<dyn Fn(&[String]) + Send + Sync>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub name: String,
    pub namespace: Option<String>,
    pub status: Status,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceMapping {
    pub source: String,
    pub scratch: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    pub schema_version: u32,
    pub drill_id: String,
    pub backup_id: String,
    pub backup_time: String,
    pub backup_age_seconds: f64,
    pub cluster: String,
    pub started: String,
    pub namespaces: Vec<NamespaceMapping>,
    pub passed: bool,
    /// The drill was stopped (Ctrl-C / SIGTERM) before it finished.
    pub interrupted: bool,
    /// Seconds from the start of the restore until every workload was ready (None: never).
    pub rto_seconds: Option<f64>,
    pub restore_seconds: f64,
    pub duration_seconds: f64,
    pub kept: bool,
    pub cleanup: String,
    pub checks: Vec<CheckResult>,
}

impl DrillReport {
    pub fn failed_checks(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count()
    }
}

pub fn new_drill_id() -> String {
    hex::encode(crate::repo::crypto::random::<4>())
}

/// `drill-<ns>-<id>`, shortened to a valid namespace name (≤ 63 characters).
pub fn scratch_name(ns: &str, id: &str) -> String {
    let max_ns = 63 - "drill-".len() - 1 - id.len();
    let ns: String = ns.chars().take(max_ns).collect();
    format!("drill-{}-{id}", ns.trim_end_matches('-'))
}

fn check(name: &str, ns: Option<&str>, status: Status, message: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.into(),
        namespace: ns.map(str::to_string),
        status,
        message: message.into(),
    }
}

/// A stable hash of a ConfigMap's or Secret's payload.
pub fn data_hash(obj: &Value) -> String {
    let mut payload = BTreeMap::new();
    for k in ["data", "binaryData", "type", "immutable"] {
        if let Some(v) = obj.get(k) {
            if !v.is_null() && !(v.is_object() && v.as_object().is_some_and(|m| m.is_empty())) {
                payload.insert(k, v.clone());
            }
        }
    }
    hex::encode(&crate::repo::sha2_256(&serde_json::to_vec(&payload).expect("serializes"))[..16])
}

async fn create_scratch(
    client: &kube::Client,
    name: &str,
    source: &str,
    id: &str,
    expires: &str,
) -> Result<(), Error> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {DRILL_LABEL: id},
            "annotations": {EXPIRES_ANNOTATION: expires, SOURCE_ANNOTATION: source}
        }
    }))
    .expect("valid namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map(|_| ())
        .map_err(|source| Error::Kube {
            action: format!("create scratch namespace {name}"),
            source,
        })
}

/// Delete the scratch namespaces (best effort, all of them); returns a description.
pub async fn cleanup(client: &kube::Client, names: &[String]) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut failed = Vec::new();
    for n in names {
        match api.delete(n, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => failed.push(format!("{n}: {}", crate::error::display_chain(&e))),
        }
    }
    if failed.is_empty() {
        format!("deleted {} scratch namespace(s)", names.len())
    } else {
        format!("could not delete: {}", failed.join("; "))
    }
}

/// Run a drill. On any outcome (including errors after the scratch namespaces exist and
/// cancellation through `cancel`), the scratch namespaces are deleted unless `keep`.
pub async fn run(
    client: &kube::Client,
    server: &str,
    repo: Arc<Repository>,
    opts: &DrillOptions,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<DrillReport, Error> {
    // `latest` means the newest backup of this cluster that holds the namespaces drilled.
    let filter = crate::repo::snapshot::SnapshotFilter {
        cluster: Some(crate::repo::snapshot::ClusterRef {
            server: server.to_string(),
            uid: crate::cluster::cluster_uid(client).await,
        }),
        namespaces: opts.namespaces.clone(),
        tags: Vec::new(),
    };
    let (backup_id, snap) = repo.find_snapshot_in(&opts.backup, &filter).await?;
    let entries = repo.snapshot_entries(&snap).await?;
    let in_backup: BTreeSet<String> = entries.iter().filter_map(|e| e.namespace.clone()).collect();
    let namespaces: Vec<String> = if opts.namespaces.is_empty() {
        in_backup
            .iter()
            .filter(|n| !SYSTEM_NAMESPACES.contains(&n.as_str()))
            .cloned()
            .collect()
    } else {
        for n in &opts.namespaces {
            if !in_backup.contains(n) {
                return Err(Error::Usage(format!(
                    "namespace {n} is not in backup {}",
                    &backup_id[..8]
                )));
            }
        }
        opts.namespaces.clone()
    };
    if namespaces.is_empty() {
        return Err(Error::Usage(format!(
            "backup {} holds no namespace to drill",
            &backup_id[..8]
        )));
    }
    let id = new_drill_id();
    let mapping: Vec<NamespaceMapping> = namespaces
        .iter()
        .map(|n| NamespaceMapping {
            source: n.clone(),
            scratch: scratch_name(n, &id),
        })
        .collect();
    let started = jiff::Timestamp::now();
    let expires = started + jiff::SignedDuration::from_secs(opts.timeout.as_secs() as i64 + 3600);
    let scratch: Vec<String> = mapping.iter().map(|m| m.scratch.clone()).collect();
    let backup_time: jiff::Timestamp = snap.time.parse().unwrap_or(started);
    let backup_age = started.duration_since(backup_time).as_secs_f64();

    // A shared lock: no prune can remove this backup's data while it is being restored.
    let lock = crate::repo::lock::Lock::acquire(repo.clone(), false, "drill").await?;
    let mut created = Vec::new();
    let body = async {
        for m in &mapping {
            create_scratch(client, &m.scratch, &m.source, &id, &expires.to_string()).await?;
            created.push(m.scratch.clone());
        }
        drill_body(
            client,
            repo.clone(),
            &backup_id,
            &entries,
            &snap.volumes,
            &snap.dumps,
            &mapping,
            &id,
            opts,
        )
        .await
    };
    let outcome = tokio::select! {
        r = body => Some(r),
        _ = cancel => None,
    };
    // Clean up whatever happened (the namespaces we created, or all we meant to).
    let cleanup_msg = if opts.keep {
        format!("kept: {}", scratch.join(", "))
    } else {
        cleanup(client, &scratch).await
    };
    let interrupted = outcome.is_none();
    let (checks, restore_seconds, rto) = match outcome {
        None => (
            vec![check(
                "interrupted",
                None,
                Status::Fail,
                format!("stopped by a signal before the drill finished; {cleanup_msg}"),
            )],
            0.0,
            None,
        ),
        Some(Err(e)) => {
            let _ = lock.release().await;
            return Err(e);
        }
        Some(Ok(r)) => r,
    };
    let mut checks = checks;
    if let Some(s) = opts.spec.as_ref().filter(|_| !interrupted) {
        if let Some(max) = s.rpo_hours {
            let ok = backup_age <= max * 3600.0;
            checks.push(check(
                "rpo",
                None,
                if ok { Status::Pass } else { Status::Fail },
                format!(
                    "backup is {:.1} h old (budget {max} h)",
                    backup_age / 3600.0
                ),
            ));
        }
        if let Some(max) = s.rto_seconds {
            let (status, msg) = match rto {
                Some(r) if r <= max => (
                    Status::Pass,
                    format!("ready {r:.1}s after the restore started (budget {max}s)"),
                ),
                Some(r) => (
                    Status::Fail,
                    format!("ready only {r:.1}s after the restore started (budget {max}s)"),
                ),
                None => (Status::Fail, format!("never ready (budget {max}s)")),
            };
            checks.push(check("rto", None, status, msg));
        }
    }
    let passed = checks.iter().all(|c| c.status != Status::Fail);
    // The verdict goes into the repository: `backup list` shows it, and prune never removes the
    // newest backup a drill verified.
    if !interrupted {
        let verdict = Verdict {
            drill: id.clone(),
            backup: backup_id.clone(),
            time: crate::repo::now(),
            ok: passed,
            namespaces: namespaces.clone(),
        };
        if let Err(e) = repo
            .write_json(&crate::store::layout::drill(&id), &verdict)
            .await
        {
            tracing::warn!(error = %e, "cannot record the drill verdict in the repository");
        }
    }
    let _ = lock.release().await;
    Ok(DrillReport {
        schema_version: 1,
        drill_id: id,
        backup_id,
        backup_time: snap.time.clone(),
        backup_age_seconds: backup_age,
        cluster: if opts.cluster_label.is_empty() {
            server.to_string()
        } else {
            opts.cluster_label.clone()
        },
        started: started.to_string(),
        namespaces: mapping,
        passed,
        interrupted,
        rto_seconds: rto,
        restore_seconds,
        duration_seconds: jiff::Timestamp::now().duration_since(started).as_secs_f64(),
        kept: opts.keep,
        cleanup: cleanup_msg,
        checks,
    })
}

type BodyResult = (Vec<CheckResult>, f64, Option<f64>);

async fn drill_body(
    client: &kube::Client,
    repo: Arc<Repository>,
    backup_id: &str,
    entries: &[TreeEntry],
    volumes: &[crate::repo::snapshot::VolumeRecord],
    dumps: &[crate::repo::snapshot::DumpRecord],
    mapping: &[NamespaceMapping],
    id: &str,
    opts: &DrillOptions,
) -> Result<BodyResult, Error> {
    let restore_start = Instant::now();
    let ropts = RestoreOptions {
        namespaces: mapping.iter().map(|m| m.source.clone()).collect(),
        include_cluster_resources: crate::backup::ClusterResources::False,
        namespace_map: mapping
            .iter()
            .map(|m| (m.source.clone(), m.scratch.clone()))
            .collect(),
        restore_id: format!("drill-{id}"),
        restore_namespaces: false,
        // Claims that cannot bind fail the restore check; the wait stays within the drill's.
        bind_timeout: opts.timeout.min(RestoreOptions::default().bind_timeout),
        storage_class_map: opts
            .spec
            .as_ref()
            .map(|s| s.storage_class_map.clone())
            .unwrap_or_default(),
        transforms: opts.spec.as_ref().and_then(|s| s.loaded_transforms.clone()),
        // Restore hooks (migrations) are not run in scratch copies: restored Secrets may
        // point them at production systems.
        run_hooks: false,
        ..Default::default()
    };
    let source = restore::Source::Repository {
        repo: repo.clone(),
        backup_id: backup_id.to_string(),
        entries: entries.to_vec(),
        volumes: volumes.to_vec(),
        // Dumps are not poured into scratch copies (restore commands may reach production
        // systems through restored Secrets): each is read back whole and hash-checked below.
        dumps: vec![],
    };
    let report = restore::restore(client, source, &ropts).await?;
    let restore_seconds = restore_start.elapsed().as_secs_f64();
    let mut checks = Vec::new();

    // 1. The restore reported no failed item.
    let failed: Vec<String> = report
        .items
        .iter()
        .filter(|i| i.outcome == Outcome::Failed)
        .map(|i| {
            format!(
                "{}/{}/{}: {}",
                i.kind,
                i.namespace.clone().unwrap_or_default(),
                i.name,
                i.message.clone().unwrap_or_default()
            )
        })
        .collect();
    checks.push(if failed.is_empty() {
        check(
            "restore-succeeded",
            None,
            Status::Pass,
            format!(
                "{} objects restored, none failed",
                report.created + report.skipped
            ),
        )
    } else {
        check(
            "restore-succeeded",
            None,
            Status::Fail,
            format!("{} object(s) failed: {}", failed.len(), failed.join("; ")),
        )
    });

    // 1b. Every dump of the drilled namespaces reads back whole with its recorded hash.
    for d in dumps
        .iter()
        .filter(|d| mapping.iter().any(|m| m.source == d.namespace))
    {
        let scratch = mapping
            .iter()
            .find(|m| m.source == d.namespace)
            .map(|m| m.scratch.as_str());
        checks.push(match crate::backup::dumps::verify(repo.clone(), d).await {
            Ok(()) => check(
                "dump-readable",
                scratch,
                Status::Pass,
                format!(
                    "dump {}:{}: {} bytes read back, hash equal",
                    d.pod, d.name, d.bytes
                ),
            ),
            Err(e) => check(
                "dump-readable",
                scratch,
                Status::Fail,
                format!("dump {}:{}: {e}", d.pod, d.name),
            ),
        });
    }

    // 2. Readiness of the workloads, within the timeout.
    let deadline = restore_start + opts.timeout;
    let mut not_ready: Vec<String>;
    let rto = loop {
        not_ready = Vec::new();
        for m in mapping {
            not_ready.extend(readiness(client, &m.scratch).await?);
        }
        if not_ready.is_empty() {
            break Some(restore_start.elapsed().as_secs_f64());
        }
        if Instant::now() >= deadline {
            break None;
        }
        if let Some(cb) = &opts.on_wait {
            cb(&not_ready);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    checks.push(match rto {
        Some(r) => check(
            "workloads-ready",
            None,
            Status::Pass,
            format!("all workloads ready after {r:.1}s"),
        ),
        None => check(
            "workloads-ready",
            None,
            Status::Fail,
            format!(
                "not ready within {}s: {}",
                opts.timeout.as_secs(),
                not_ready.join(", ")
            ),
        ),
    });

    // 3. Every object of each namespace is there; ConfigMap and Secret data are equal.
    for m in mapping {
        let transforms = opts
            .spec
            .as_ref()
            .and_then(|s| s.loaded_transforms.as_deref());
        checks.extend(compare_namespace(client, &repo, entries, m, transforms).await?);
    }

    // 4. Volume data: each restored volume's files equal the backed-up tree.
    for item in report.items.iter().filter(|i| i.kind == "VolumeData") {
        let scratch = item.namespace.clone().unwrap_or_default();
        let Some(m) = mapping.iter().find(|m| m.scratch == scratch) else {
            continue;
        };
        let Some(v) = volumes
            .iter()
            .find(|v| v.namespace == m.source && v.pvc == item.name)
        else {
            continue;
        };
        let name = format!("volume-data/{}", item.name);
        if item.outcome != Outcome::Created {
            checks.push(check(
                &name,
                Some(&scratch),
                Status::Fail,
                format!("not restored: {}", item.message.clone().unwrap_or_default()),
            ));
            continue;
        }
        checks.push(volume_check(client, &repo, &scratch, v, &name).await);
    }

    // 5. Assertions from the spec.
    if let Some(s) = &opts.spec {
        checks.extend(spec::run_assertions(client, s, mapping).await);
    }
    Ok((checks, restore_seconds, rto))
}

/// Compare a restored claim's files with the backed-up tree (through a mover pod).
async fn volume_check(
    client: &kube::Client,
    repo: &Repository,
    ns: &str,
    v: &crate::repo::snapshot::VolumeRecord,
    name: &str,
) -> CheckResult {
    use crate::volume::mover;
    let want = match crate::volume::load_tree(repo, &v.trees).await {
        Ok(t) => t,
        Err(e) => {
            return check(
                name,
                Some(ns),
                Status::Fail,
                format!(
                    "cannot read the backed-up file tree: {}",
                    crate::error::display_chain(&e)
                ),
            );
        }
    };
    let opts = mover::MoverOptions::default();
    // An interrupted drill deletes its scratch namespace, mover included.
    let cleanup = crate::volume::snapshots::Cleanup::default();
    let started = mover::start(
        client,
        ns,
        &v.pvc,
        mover::Direction::Backup,
        &opts,
        &cleanup,
    );
    let got = match started.await {
        Ok(pod) => {
            let t = mover::read_tree(client, ns, &pod).await;
            mover::stop(client, ns, &pod).await;
            t
        }
        Err(e) => Err(e),
    };
    match got {
        Err(e) => check(
            name,
            Some(ns),
            Status::Fail,
            format!("cannot read the restored volume: {e}"),
        ),
        Ok(got) => {
            let mut diff = crate::volume::compare_trees(&want, &got);
            // A restored pod with an fsGroup had the kubelet change the volume's group and
            // group permissions when it mounted it: that is Kubernetes, not a bad backup.
            let mut note = String::new();
            if !diff.is_empty() {
                if let Some(g) = fs_group_of_claim(client, ns, &v.pvc).await {
                    let after = crate::volume::as_after_fs_group(&want, g);
                    if crate::volume::compare_trees(&after, &got).is_empty() {
                        diff.clear();
                        note = format!(
                            "; the group and group permissions the kubelet set for fsGroup {g} are not counted"
                        );
                    }
                }
            }
            if diff.is_empty() {
                check(
                    name,
                    Some(ns),
                    Status::Pass,
                    format!(
                        "{} files equal to the backup ({} bytes){note}",
                        v.files, v.bytes
                    ),
                )
            } else {
                let n = diff.len();
                let shown: Vec<String> = diff.into_iter().take(5).collect();
                check(
                    name,
                    Some(ns),
                    Status::Fail,
                    format!("{n} difference(s): {}", shown.join("; ")),
                )
            }
        }
    }
}

/// The `fsGroup` of a pod in `ns` (not a mover) that mounts claim `pvc`.
async fn fs_group_of_claim(client: &kube::Client, ns: &str, pvc: &str) -> Option<u64> {
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("!lifeboat.io/mover"))
        .await
        .ok()?;
    pods.items.iter().find_map(|p| {
        let spec = p.spec.as_ref()?;
        let mounts = spec.volumes.iter().flatten().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == pvc)
        });
        if !mounts {
            return None;
        }
        spec.security_context.as_ref()?.fs_group.map(|g| g as u64)
    })
}

/// Workloads in `ns` that are not ready, as "Kind/name (why)".
pub async fn readiness(client: &kube::Client, ns: &str) -> Result<Vec<String>, Error> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let lp = ListParams::default();
    let err = |what: &str| {
        let what = what.to_string();
        move |source| Error::Kube {
            action: format!("list {what} in {ns}"),
            source,
        }
    };
    let mut out = Vec::new();
    for d in Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(err("deployments"))?
    {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        let available = st
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True");
        if !(available
            && st.available_replicas.unwrap_or(0) >= want
            && st.updated_replicas.unwrap_or(0) >= want)
        {
            out.push(format!(
                "Deployment/{} ({}/{want} available)",
                d.metadata.name.unwrap_or_default(),
                st.available_replicas.unwrap_or(0)
            ));
        }
    }
    for s in Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(err("statefulsets"))?
    {
        let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = s
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if ready < want {
            out.push(format!(
                "StatefulSet/{} ({ready}/{want} ready)",
                s.metadata.name.unwrap_or_default()
            ));
        }
    }
    for d in Api::<DaemonSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(err("daemonsets"))?
    {
        let st = d.status.clone().unwrap_or_default();
        if st.number_available.unwrap_or(0) < st.desired_number_scheduled {
            out.push(format!(
                "DaemonSet/{} ({}/{} available)",
                d.metadata.name.unwrap_or_default(),
                st.number_available.unwrap_or(0),
                st.desired_number_scheduled
            ));
        }
    }
    for j in Api::<Job>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(err("jobs"))?
    {
        let done = j
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        if !done {
            out.push(format!(
                "Job/{} (not complete)",
                j.metadata.name.unwrap_or_default()
            ));
        }
    }
    for p in Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(err("persistentvolumeclaims"))?
    {
        let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
        if phase != "Bound" {
            out.push(format!(
                "PersistentVolumeClaim/{} ({})",
                p.metadata.name.unwrap_or_default(),
                if phase.is_empty() { "Pending" } else { &phase }
            ));
        }
    }
    Ok(out)
}

async fn compare_namespace(
    client: &kube::Client,
    repo: &Repository,
    entries: &[TreeEntry],
    m: &NamespaceMapping,
    transforms: Option<&crate::restore::transform::Transforms>,
) -> Result<Vec<CheckResult>, Error> {
    let ns = Some(m.scratch.as_str());
    // Backed-up objects of this namespace, by type.
    let mut by_type: BTreeMap<(String, String, String, String), Vec<&TreeEntry>> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.namespace.as_deref() == Some(m.source.as_str()))
    {
        by_type
            .entry((
                e.group.clone(),
                e.version.clone(),
                e.kind.clone(),
                e.resource.clone(),
            ))
            .or_default()
            .push(e);
    }
    let mut missing = Vec::new();
    let mut counts = Vec::new();
    let mut data_diffs = Vec::new();
    let mut data_checked = 0;
    for ((group, version, kind, resource), list) in &by_type {
        let ar = ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, version, kind),
            resource,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &m.scratch, &ar);
        let present: BTreeMap<String, DynamicObject> = match api.list(&ListParams::default()).await
        {
            Ok(l) => l
                .items
                .into_iter()
                .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
                .collect(),
            Err(kube::Error::Api(s)) if s.code == 404 => BTreeMap::new(),
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("list {resource} in {}", m.scratch),
                    source,
                });
            }
        };
        let mut expected = 0;
        let mut found = 0;
        for e in list {
            let mut obj: Value = match repo.read_blob_json(&e.blob).await {
                Ok(o) => o,
                Err(err) => {
                    // The backup itself is damaged: the object cannot have been restored.
                    expected += 1;
                    missing.push(format!(
                        "{kind}/{} (unreadable in the backup: {err})",
                        e.name
                    ));
                    continue;
                }
            };
            if crate::restore::rules::skip_reason(&e.group, &e.resource, &obj, &Default::default())
                .is_some()
            {
                continue; // not restored by design (docs/restore.md)
            }
            // The spec's transforms: what the restore was asked to make of the object.
            if let Some(t) = transforms {
                let groups = [e.group.as_str()];
                let target = crate::restore::transform::Target {
                    kind: &e.kind,
                    resource: &e.resource,
                    groups: &groups,
                    backup_namespace: e.namespace.as_deref(),
                };
                match t.apply(&target, &mut obj) {
                    Ok(crate::restore::transform::Applied::Dropped(_)) => continue,
                    Ok(_) => {}
                    // The restore reported it failed; the object counts as missing.
                    Err(_) => {}
                }
            }
            expected += 1;
            match present.get(&e.name) {
                None => missing.push(format!("{kind}/{}", e.name)),
                Some(live) => {
                    found += 1;
                    if group.is_empty() && (resource == "configmaps" || resource == "secrets") {
                        data_checked += 1;
                        let live = serde_json::to_value(live).expect("serializes");
                        if data_hash(&live) != data_hash(&obj) {
                            data_diffs.push(format!("{kind}/{}", e.name));
                        }
                    }
                }
            }
        }
        if expected > 0 {
            counts.push(format!("{kind} {found}/{expected}"));
        }
    }
    let mut out = vec![if missing.is_empty() {
        check(
            "objects-present",
            ns,
            Status::Pass,
            format!("all objects present: {}", counts.join(", ")),
        )
    } else {
        check(
            "objects-present",
            ns,
            Status::Fail,
            format!(
                "missing in {}: {} ({})",
                m.scratch,
                missing.join(", "),
                counts.join(", ")
            ),
        )
    }];
    out.push(if data_diffs.is_empty() {
        check(
            "data-equal",
            ns,
            Status::Pass,
            format!("{data_checked} ConfigMap/Secret payload(s) equal to the backup"),
        )
    } else {
        check(
            "data-equal",
            ns,
            Status::Fail,
            format!("data differs from the backup: {}", data_diffs.join(", ")),
        )
    });
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    pub deleted: Vec<String>,
    pub kept: Vec<String>,
}

/// A drill's verdict on a backup, stored sealed under `drills/<drill id>`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verdict {
    pub drill: String,
    pub backup: String,
    pub time: String,
    pub ok: bool,
    pub namespaces: Vec<String>,
}

/// Every readable drill verdict (damaged ones are skipped with a warning).
pub async fn verdicts(repo: &Repository) -> Result<Vec<Verdict>, crate::repo::RepoError> {
    let mut out = Vec::new();
    for f in repo.list(crate::store::layout::DRILLS).await? {
        match repo.read_json::<Verdict>(&f.key, "drill verdict").await {
            Ok(v) => out.push(v),
            Err(crate::repo::RepoError::Store { source, .. }) if source.is_not_found() => {}
            Err(e @ crate::repo::RepoError::Store { .. }) => return Err(e),
            Err(e) => tracing::warn!(key = %f.key, error = %e, "damaged drill verdict skipped"),
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time));
    Ok(out)
}

/// Delete scratch namespaces whose expiry has passed (left by crashed or killed drills).
pub async fn gc(client: &kube::Client, all: bool, dry_run: bool) -> Result<GcReport, Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(DRILL_LABEL))
        .await
        .map_err(|source| Error::Kube {
            action: "list drill namespaces".into(),
            source,
        })?;
    let now = jiff::Timestamp::now();
    let mut report = GcReport {
        dry_run,
        deleted: vec![],
        kept: vec![],
    };
    for ns in list.items {
        let name = ns.metadata.name.clone().unwrap_or_default();
        if !name.starts_with("drill-") {
            continue;
        }
        let expired = ns
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXPIRES_ANNOTATION))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_none_or(|t| t <= now);
        if (expired || all) && ns.metadata.deletion_timestamp.is_none() {
            if !dry_run {
                api.delete(&name, &DeleteParams::background())
                    .await
                    .map_err(|source| Error::Kube {
                        action: format!("delete namespace {name}"),
                        source,
                    })?;
            }
            report.deleted.push(name);
        } else {
            report.kept.push(name);
        }
    }
    Ok(report)
}

impl crate::output::Render for GcReport {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        for n in &self.deleted {
            writeln!(w, "{verb} {n}")?;
        }
        for n in &self.kept {
            writeln!(w, "kept {n} (not expired)")?;
        }
        writeln!(
            w,
            "{} expired drill namespace(s) {verb}, {} not expired yet",
            self.deleted.len(),
            self.kept.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_valid_namespace_names() {
        assert_eq!(scratch_name("shop", "a1b2c3d4"), "drill-shop-a1b2c3d4");
        let long = scratch_name(&"x".repeat(80), "a1b2c3d4");
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("-a1b2c3d4"));
        let dashy = scratch_name(&format!("{}-y", "x".repeat(47)), "a1b2c3d4");
        assert!(!dashy.contains("--"), "{dashy}");
    }

    #[test]
    fn data_hash_ignores_metadata_but_not_payload() {
        let a = serde_json::json!({"metadata": {"name": "a", "uid": "1"}, "data": {"k": "v"}});
        let b = serde_json::json!({"metadata": {"name": "a", "uid": "2", "labels": {"x": "y"}}, "data": {"k": "v"}});
        let c = serde_json::json!({"metadata": {"name": "a"}, "data": {"k": "w"}});
        assert_eq!(data_hash(&a), data_hash(&b));
        assert_ne!(data_hash(&a), data_hash(&c));
        let s1 = serde_json::json!({"type": "Opaque", "data": {"p": "c2VjcmV0"}});
        let s2 = serde_json::json!({"type": "Opaque", "data": {"p": "c2VjcmV0"}, "metadata": {}});
        assert_eq!(data_hash(&s1), data_hash(&s2));
    }
}
