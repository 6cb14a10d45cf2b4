//! `lifeboat restore`: put a backup's objects back, in dependency order, with server-populated
//! fields stripped (rules.rs, docs/restore.md), namespaces optionally mapped, an explicit policy
//! for objects that already exist, and a per-object outcome. Drills use this same code path.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde::Serialize;
use serde_json::Value;

pub mod archive;
pub mod convert;
pub mod dumps;
pub mod hooks;
pub mod rules;
pub mod transform;

use crate::backup::ClusterResources;
use crate::error::Error;
use crate::repo::Repository;
use crate::repo::snapshot::TreeEntry;
use crate::selector::Selector;
use rules::RewriteOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// Leave the existing object alone and report it as skipped
    Skip,
    /// Server-side apply the backed-up object over the existing one
    Update,
    /// Report the object as failed
    Fail,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Original namespaces to restore (empty: all).
    pub namespaces: Vec<String>,
    pub selector: Option<String>,
    pub include_resources: Vec<String>,
    pub exclude_resources: Vec<String>,
    pub include_cluster_resources: ClusterResources,
    pub namespace_map: BTreeMap<String, String>,
    pub existing: Existing,
    pub dry_run: bool,
    pub preserve_nodeports: bool,
    pub crd_timeout: Duration,
    pub concurrency: usize,
    /// Restore id (label value); generated when empty.
    pub restore_id: String,
    /// Create the Namespace objects of the backup (drills create their scratch namespaces
    /// themselves, with their own labels).
    pub restore_namespaces: bool,
    /// Mover pods that fill restored claims with their backed-up data.
    pub mover: crate::volume::mover::MoverOptions,
    /// Use the backup's VolumeSnapshot as the claim's data source when it still exists (same
    /// cluster, same namespace) instead of streaming the data from the repository.
    pub from_snapshot: bool,
    /// Every mover pod is recorded here before it is created; the caller deletes them when the
    /// restore is interrupted (Ctrl-C).
    pub cleanup: crate::volume::snapshots::Cleanup,
    /// Restore PersistentVolumes as they are, and keep claims bound to them, whatever their
    /// reclaim policy or provisioner (`--restore-pvs-as-is`). A PV that exists in the target is
    /// still never changed, shared or taken over.
    pub pvs_as_is: bool,
    /// How long to wait, once everything is created, for restored claims to bind (zero: do not
    /// wait). Claims that were Bound in the backup and are still Pending are failed items.
    pub bind_timeout: Duration,
    /// Restore finished Jobs and Jobs created by CronJobs too (they run again).
    pub restore_finished_jobs: bool,
    /// Claims (and claim templates, PVs) of storage class OLD are restored with class NEW.
    pub storage_class_map: BTreeMap<String, String>,
    /// `--transform` rules, applied to each object before it is created.
    pub transforms: Option<Arc<transform::Transforms>>,
    /// `--name`: only objects whose name matches one of these globs (plus the namespaces they
    /// need); what they reference is listed in the report.
    pub names: Vec<String>,
    /// With `names`: also restore the objects they refer to (rules::references).
    pub with_dependencies: bool,
    /// Run the restore hooks the restored pod templates declare (hooks.rs), once their pods
    /// are ready (`--no-hooks`: do not).
    pub run_hooks: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            namespaces: vec![],
            selector: None,
            include_resources: vec![],
            exclude_resources: vec![],
            include_cluster_resources: ClusterResources::Auto,
            namespace_map: BTreeMap::new(),
            existing: Existing::Skip,
            dry_run: false,
            preserve_nodeports: false,
            crd_timeout: Duration::from_secs(60),
            concurrency: 16,
            restore_id: String::new(),
            restore_namespaces: true,
            run_hooks: true,
            mover: Default::default(),
            from_snapshot: false,
            cleanup: Default::default(),
            pvs_as_is: false,
            bind_timeout: Duration::from_secs(180),
            restore_finished_jobs: false,
            storage_class_map: BTreeMap::new(),
            transforms: None,
            names: vec![],
            with_dependencies: false,
        }
    }
}

/// The embedded deprecation database (parsed once).
fn deprecation_db() -> &'static crate::preflight::db::Database {
    static DB: std::sync::OnceLock<crate::preflight::db::Database> = std::sync::OnceLock::new();
    DB.get_or_init(crate::preflight::db::Database::embedded)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Updated,
    Skipped,
    Failed,
    /// Dry run only: the server could not validate the object because something it depends on
    /// (its namespace, its CRD) is itself only created by this restore.
    Unvalidated,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub kind: String,
    pub api_version: String,
    pub namespace: Option<String>,
    pub name: String,
    pub outcome: Outcome,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub id: String,
    pub backup: String,
    pub dry_run: bool,
    pub created: usize,
    pub updated: usize,
    pub skipped: usize,
    pub failed: usize,
    pub unvalidated: usize,
    pub duration_seconds: f64,
    pub items: Vec<Item>,
    /// `--name` restores: what the restored objects refer to, and whether it was restored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
}

/// Fill each restored claim with its backed-up files through a mover pod.
async fn fill_volumes(
    client: &kube::Client,
    source: &Source,
    opts: &RestoreOptions,
    rw: &RewriteOptions,
    data_claims: &BTreeSet<(String, String)>,
    items: &mut Vec<Item>,
) {
    let Source::Repository {
        repo, backup_id, ..
    } = source
    else {
        return;
    };
    for v in source.volumes() {
        if !data_claims.contains(&(v.namespace.clone(), v.pvc.clone())) {
            continue;
        }
        let ns = rw.map_ns(&v.namespace).to_string();
        let mut item = Item {
            kind: "VolumeData".into(),
            api_version: "lifeboat.io/v1".into(),
            namespace: Some(ns.clone()),
            name: v.pvc.clone(),
            outcome: Outcome::Failed,
            message: None,
        };
        let claim = items
            .iter()
            .find(|i| {
                i.kind == "PersistentVolumeClaim"
                    && i.namespace.as_deref() == Some(ns.as_str())
                    && i.name == v.pvc
            })
            .map(|i| i.outcome);
        let size = crate::backup::human_bytes(v.bytes);
        let record = rules::completion_record(
            backup_id,
            &v.trees.iter().map(|t| t.to_hex()).collect::<Vec<_>>(),
        );
        match claim {
            Some(Outcome::Created) if opts.dry_run => {
                item.outcome = Outcome::Created;
                item.message = Some(format!("{} files ({size}) would be restored", v.files));
            }
            Some(Outcome::Created) => {
                let from_snapshot =
                    Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
                        client.clone(),
                        &ns,
                    )
                    .get(&v.pvc)
                    .await
                    .ok()
                    .and_then(|c| c.spec.and_then(|s| s.data_source))
                    .filter(|d| d.kind == "VolumeSnapshot");
                if let Some(d) = from_snapshot {
                    // Provisioned from the snapshot as a whole by the CSI driver: complete.
                    match record_fill(client, &ns, &v.pvc, &record).await {
                        Ok(()) => {
                            item.outcome = Outcome::Created;
                            item.message = Some(format!("from VolumeSnapshot {ns}/{}", d.name));
                        }
                        Err(e) => item.message = Some(e),
                    }
                } else {
                    fill_and_record(client, repo, &ns, v, opts, &record, "", &mut item).await;
                }
            }
            Some(Outcome::Skipped | Outcome::Updated) => {
                let claim = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
                    client.clone(),
                    &ns,
                )
                .get(&v.pvc)
                .await
                .map(|c| serde_json::to_value(c).unwrap_or_default());
                match claim.as_ref().map(rules::existing_data) {
                    Err(e) => {
                        item.message = Some(format!(
                            "the claim cannot be read back: {}",
                            crate::error::display_chain(e)
                        ))
                    }
                    Ok(rules::ExistingData::Complete(r)) if r == record => {
                        item.outcome = Outcome::Skipped;
                        item.message = Some("already filled from this backup".into());
                    }
                    Ok(rules::ExistingData::Complete(r)) => {
                        item.outcome = Outcome::Skipped;
                        item.message = Some(format!(
                            "the claim already existed, filled from {r}; its data was left as it is"
                        ));
                    }
                    Ok(rules::ExistingData::NotOurs) => {
                        item.outcome = Outcome::Skipped;
                        item.message =
                            Some("the claim already existed; its data was left as it is".into());
                    }
                    // Created by an earlier restore whose fill never completed: never accepted.
                    Ok(rules::ExistingData::Partial) => {
                        let users = claim_users(client, &ns, &v.pvc).await;
                        if !users.is_empty() {
                            item.message = Some(format!(
                                "partly restored: an earlier restore created the claim but its fill never completed (no {} annotation), and {} uses it; delete what uses it (or the claim) and restore again",
                                rules::RESTORED_FROM,
                                users.join(", ")
                            ));
                        } else if opts.dry_run {
                            item.outcome = Outcome::Created;
                            item.message = Some(format!(
                                "an earlier fill did not complete: {} files ({size}) would be restored again",
                                v.files
                            ));
                        } else {
                            fill_and_record(
                                client,
                                repo,
                                &ns,
                                v,
                                opts,
                                &record,
                                "filled again (an earlier fill did not complete): ",
                                &mut item,
                            )
                            .await;
                        }
                    }
                }
            }
            _ => item.message = Some("the claim was not restored, so neither is its data".into()),
        }
        items.push(item);
    }
}

/// Fill one claim and, once the whole tree is written, record it on the claim.
#[allow(clippy::too_many_arguments)]
async fn fill_and_record(
    client: &kube::Client,
    repo: &Arc<Repository>,
    ns: &str,
    v: &crate::repo::snapshot::VolumeRecord,
    opts: &RestoreOptions,
    record: &str,
    prefix: &str,
    item: &mut Item,
) {
    let size = crate::backup::human_bytes(v.bytes);
    match fill_one(client, repo.clone(), ns, v, opts).await {
        Ok(()) => match record_fill(client, ns, &v.pvc, record).await {
            Ok(()) => {
                item.outcome = Outcome::Created;
                item.message = Some(format!("{prefix}{} files ({size}) restored", v.files));
            }
            Err(e) => item.message = Some(e),
        },
        Err(e) => item.message = Some(e.to_string()),
    }
}

/// Write the completion record (`rules::RESTORED_FROM`) on a filled claim.
async fn record_fill(
    client: &kube::Client,
    ns: &str,
    claim: &str,
    record: &str,
) -> Result<(), String> {
    Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .patch(
            claim,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {rules::RESTORED_FROM: record}}}),
            ),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "filled, but the completion record could not be written: {}",
                crate::error::display_chain(&e)
            )
        })
}

/// Pods (not lifeboat's movers, not finished) that mount `claim`, as `pod NAME`.
async fn claim_users(client: &kube::Client, ns: &str, claim: &str) -> Vec<String> {
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    pods.into_iter()
        .filter(|p| {
            !p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(crate::volume::mover::LABEL))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
        .filter(|p| {
            let v = serde_json::to_value(p).unwrap_or_default();
            rules::uses_claim("", "pods", &v, claim)
        })
        .filter_map(|p| p.metadata.name.map(|n| format!("pod {n}")))
        .collect()
}

async fn fill_one(
    client: &kube::Client,
    repo: Arc<Repository>,
    ns: &str,
    v: &crate::repo::snapshot::VolumeRecord,
    opts: &RestoreOptions,
) -> Result<(), crate::volume::VolumeError> {
    use crate::volume::mover;
    let entries = crate::volume::load_tree(&repo, &v.trees).await?;
    let pod = mover::start(
        client,
        ns,
        &v.pvc,
        mover::Direction::Restore,
        &opts.mover,
        &opts.cleanup,
    )
    .await?;
    let r = mover::restore(client, ns, &pod, repo, &entries, Default::default()).await;
    mover::stop(client, ns, &pod).await;
    r
}

async fn snapshot_exists(client: &kube::Client, ns: &str, name: &str) -> bool {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &crate::volume::snapshots::snapshot_resource(),
    );
    matches!(api.get_opt(name).await, Ok(Some(_)))
}

/// Where the objects come from.
pub enum Source {
    Repository {
        repo: Arc<Repository>,
        backup_id: String,
        entries: Vec<TreeEntry>,
        /// Volume data of the backup (`backup create --snapshot-volumes`).
        volumes: Vec<crate::repo::snapshot::VolumeRecord>,
        /// Dumps of the backup (dump hooks).
        dumps: Vec<crate::repo::snapshot::DumpRecord>,
    },
    /// (entry, object) pairs from an export archive.
    Archive {
        name: String,
        objects: Vec<(TreeEntry, Value)>,
    },
}

impl Source {
    fn volumes(&self) -> &[crate::repo::snapshot::VolumeRecord] {
        match self {
            Source::Repository { volumes, .. } => volumes,
            Source::Archive { .. } => &[],
        }
    }

    fn entries(&self) -> Vec<TreeEntry> {
        match self {
            Source::Repository { entries, .. } => entries.clone(),
            Source::Archive { objects, .. } => objects.iter().map(|(e, _)| e.clone()).collect(),
        }
    }
    fn name(&self) -> String {
        match self {
            Source::Repository { backup_id, .. } => backup_id.clone(),
            Source::Archive { name, .. } => name.clone(),
        }
    }
    async fn load(&self, e: &TreeEntry, idx: usize) -> Result<Value, Error> {
        match self {
            Source::Repository { repo, .. } => Ok(repo.read_blob_json::<Value>(&e.blob).await?),
            Source::Archive { objects, .. } => Ok(objects[idx].1.clone()),
        }
    }

    /// Load many objects at once: from a repository, each pack is read once (whole) and the
    /// needed blobs decoded from it. A blob that cannot be read maps to an error message.
    async fn preload(&self, items: &[(usize, TreeEntry)]) -> HashMap<usize, Result<Value, String>> {
        let mut out = HashMap::new();
        match self {
            Source::Archive { objects, .. } => {
                for (idx, _) in items {
                    out.insert(*idx, Ok(objects[*idx].1.clone()));
                }
            }
            Source::Repository { repo, .. } => {
                let index = repo.index_snapshot().await;
                let mut by_pack: BTreeMap<crate::repo::PackId, Vec<(usize, &TreeEntry)>> =
                    BTreeMap::new();
                for (idx, e) in items {
                    match index.get(&e.blob) {
                        Some(l) => by_pack.entry(l.pack).or_default().push((*idx, e)),
                        None => {
                            out.insert(
                                *idx,
                                Err(format!("blob {} is not in the repository index", e.blob)),
                            );
                        }
                    }
                }
                let results: Vec<Vec<(usize, Result<Value, String>)>> =
                    futures::stream::iter(by_pack)
                        .map(|(pack, entries)| {
                            let index = &index;
                            async move {
                                let key = crate::store::layout::pack(&pack.to_hex());
                                let bytes = match repo.store().get(&key).await {
                                    Ok(b) => b,
                                    Err(err) => {
                                        return entries
                                            .iter()
                                            .map(|(i, _)| (*i, Err(err.to_string())))
                                            .collect::<Vec<_>>();
                                    }
                                };
                                entries
                                    .iter()
                                    .map(|(i, e)| {
                                        let l = index[&e.blob];
                                        let r = bytes
                                            .get(
                                                l.offset as usize
                                                    ..(l.offset as usize + l.length as usize),
                                            )
                                            .ok_or_else(|| "pack is truncated".to_string())
                                            .and_then(|sealed| {
                                                repo.decode_blob(&e.blob, &l, sealed, &key)
                                                    .map_err(|err| err.to_string())
                                            })
                                            .and_then(|plain| {
                                                serde_json::from_slice::<Value>(&plain)
                                                    .map_err(|err| err.to_string())
                                            });
                                        (*i, r)
                                    })
                                    .collect()
                            }
                        })
                        .buffer_unordered(4)
                        .collect()
                        .await;
                out.extend(results.into_iter().flatten());
            }
        }
        out
    }
}

/// `resource[.group]` matcher over tree entries (same syntax as backup's).
fn pattern_matches(p: &str, e: &TreeEntry) -> bool {
    let p = p.trim().to_ascii_lowercase();
    if p == "*" {
        return true;
    }
    let (name, group) = match p.split_once('.') {
        Some((n, g)) => (n.to_string(), Some(g.to_string())),
        None => (p.clone(), None),
    };
    (e.resource == name || e.kind.to_ascii_lowercase() == name)
        && group.is_none_or(|g| g == e.group || (g == "core" && e.group.is_empty()))
}

pub fn new_restore_id() -> String {
    hex::encode(crate::repo::crypto::random::<6>())
}

struct Target {
    /// (group, version, kind) -> (resource, capabilities)
    by_gvk: HashMap<(String, String, String), (ApiResource, ApiCapabilities)>,
}

async fn discover_target(client: &kube::Client) -> Result<Target, Error> {
    let d = kube::discovery::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .map_err(|source| Error::Discovery { source })?;
    let mut by_gvk = HashMap::new();
    for g in d.groups() {
        for v in g.versions() {
            for (ar, caps) in g.versioned_resources(v) {
                if ar.plural.contains('/') {
                    continue;
                }
                by_gvk.insert(
                    (ar.group.clone(), ar.version.clone(), ar.kind.clone()),
                    (ar, caps),
                );
            }
        }
    }
    Ok(Target { by_gvk })
}

fn is_not_found_namespace(s: &kube::core::Status) -> bool {
    s.code == 404 && s.message.contains("namespaces")
}

pub async fn restore(
    client: &kube::Client,
    source: Source,
    opts: &RestoreOptions,
) -> Result<RestoreReport, Error> {
    let start = Instant::now();
    let restore_id = if opts.restore_id.is_empty() {
        new_restore_id()
    } else {
        opts.restore_id.clone()
    };
    let selector = match &opts.selector {
        Some(s) => Some(Selector::parse(s).map_err(Error::Usage)?),
        None => None,
    };
    let rw = RewriteOptions {
        namespace_map: opts.namespace_map.clone(),
        preserve_nodeports: opts.preserve_nodeports,
        restore_id: restore_id.clone(),
        restore_finished_jobs: opts.restore_finished_jobs,
        storage_class_map: opts.storage_class_map.clone(),
    };

    // 1. Candidates: namespace and resource filters on the entries.
    let all = source.entries();
    for ns in &opts.namespaces {
        if !all.iter().any(|e| {
            e.namespace.as_deref() == Some(ns.as_str())
                || (e.group.is_empty() && e.resource == "namespaces" && &e.name == ns)
        }) {
            return Err(Error::Usage(format!(
                "namespace {ns} is not in backup {}",
                source.name()
            )));
        }
    }
    let filtered_ns = !opts.namespaces.is_empty();
    let ns_ok = |e: &TreeEntry| {
        e.namespace
            .as_ref()
            .is_none_or(|ns| !filtered_ns || opts.namespaces.contains(ns))
    };
    let res_ok = |e: &TreeEntry| {
        (opts.include_resources.is_empty()
            || opts.include_resources.iter().any(|p| pattern_matches(p, e)))
            && !opts.exclude_resources.iter().any(|p| pattern_matches(p, e))
    };
    let mut candidates: Vec<(usize, TreeEntry)> = all
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, e)| e.namespace.is_some() && ns_ok(e) && res_ok(e))
        .collect();

    // --name: only the named objects; what they reference is listed (and, with
    // --with-dependencies, restored too).
    let mut dependencies: Vec<Dependency> = Vec::new();
    let by_name = !opts.names.is_empty();
    let name_ok = |e: &TreeEntry| opts.names.iter().any(|p| transform::glob(p, &e.name));
    if by_name {
        candidates.retain(|(_, e)| name_ok(e));
        let cluster_named = all
            .iter()
            .any(|e| e.namespace.is_none() && name_ok(e) && res_ok(e));
        if candidates.is_empty() && !cluster_named {
            return Err(Error::Usage(format!(
                "no object of backup {} matches --name {} (with the other filters)",
                source.name(),
                opts.names.join(",")
            )));
        }
        dependencies = resolve_dependencies(&source, &all, &mut candidates, opts).await?;
    }

    // Cluster-scoped objects: all, none, or (auto with -n or --name) what the selected
    // namespaced objects use.
    let cluster_policy = match opts.include_cluster_resources {
        ClusterResources::True => Some(true),
        ClusterResources::False => Some(false),
        ClusterResources::Auto if !filtered_ns && !by_name => Some(true),
        ClusterResources::Auto => None,
    };
    // Namespaces needed by the candidates (and those selected with -n) are always restored.
    let mut needed_ns: BTreeSet<String> = candidates
        .iter()
        .filter_map(|(_, e)| e.namespace.clone())
        .collect();
    needed_ns.extend(opts.namespaces.iter().cloned());
    let mut wanted: BTreeSet<(String, String, String)> = BTreeSet::new(); // (group, resource, name)
    if cluster_policy.is_none() {
        for (idx, e) in &candidates {
            match (e.group.as_str(), e.resource.as_str()) {
                ("", "persistentvolumeclaims") => {
                    let o = source.load(e, *idx).await?;
                    if let Some(v) = o["spec"]["volumeName"].as_str() {
                        wanted.insert((String::new(), "persistentvolumes".into(), v.into()));
                    }
                    if let Some(c) = o["spec"]["storageClassName"].as_str()
                        && !opts.storage_class_map.contains_key(c)
                    {
                        wanted.insert(("storage.k8s.io".into(), "storageclasses".into(), c.into()));
                    }
                }
                ("rbac.authorization.k8s.io", "rolebindings") => {
                    let o = source.load(e, *idx).await?;
                    if o["roleRef"]["kind"] == "ClusterRole" {
                        if let Some(n) = o["roleRef"]["name"].as_str() {
                            wanted.insert((
                                "rbac.authorization.k8s.io".into(),
                                "clusterroles".into(),
                                n.into(),
                            ));
                        }
                    }
                }
                (g, r) if !rules::is_builtin_group(g) => {
                    wanted.insert((
                        "apiextensions.k8s.io".into(),
                        "customresourcedefinitions".into(),
                        format!("{r}.{g}"),
                    ));
                }
                _ => {}
            }
        }
    }
    for (idx, e) in all.iter().enumerate() {
        if e.namespace.is_some() {
            continue;
        }
        let take = if e.group.is_empty() && e.resource == "namespaces" {
            opts.restore_namespaces
                && (needed_ns.contains(&e.name)
                    || (cluster_policy == Some(true) && !filtered_ns && res_ok(e)))
        } else {
            match cluster_policy {
                Some(true) => res_ok(e) && (!by_name || name_ok(e)),
                Some(false) => false,
                None => {
                    wanted.contains(&(e.group.clone(), e.resource.clone(), e.name.clone()))
                        || (by_name && name_ok(e) && res_ok(e))
                }
            }
        };
        if take {
            candidates.push((idx, e.clone()));
        }
    }
    candidates.sort_by(|a, b| {
        let ka = (
            rules::phase(&a.1.group, &a.1.resource),
            &a.1.group,
            &a.1.resource,
            &a.1.namespace,
            &a.1.name,
        );
        let kb = (
            rules::phase(&b.1.group, &b.1.resource),
            &b.1.group,
            &b.1.resource,
            &b.1.namespace,
            &b.1.name,
        );
        ka.cmp(&kb)
    });

    // Claims whose data is in the backup and that this restore creates.
    let data_claims: BTreeSet<(String, String)> = source
        .volumes()
        .iter()
        .filter(|v| {
            candidates.iter().any(|(_, e)| {
                e.group.is_empty()
                    && e.resource == "persistentvolumeclaims"
                    && e.namespace.as_deref() == Some(v.namespace.as_str())
                    && e.name == v.pvc
            })
        })
        .map(|v| (v.namespace.clone(), v.pvc.clone()))
        .collect();

    // What each restored claim gets as its volume, and which PVs are restored.
    let volumes = plan_volumes(client, &source, &all, &candidates, &data_claims, opts, &rw).await?;

    // 2. Phase by phase.
    let mut target = discover_target(client).await?;
    let mut items: Vec<Item> = Vec::new();
    let mut dry_new_namespaces: BTreeSet<String> = BTreeSet::new();
    let mut dry_new_types: BTreeSet<(String, String)> = BTreeSet::new(); // (group, kind) of CRDs created in dry run
    // (namespace, claim) of the claims whose data could not be filled: what mounts them is
    // not created (it would start on partial data).
    let mut unfilled: BTreeSet<(String, String)> = BTreeSet::new();
    let uids = std::sync::Mutex::new(HashMap::new());
    let links = std::sync::Mutex::new(Vec::new());
    let mut phases: BTreeMap<u8, Vec<(usize, TreeEntry)>> = BTreeMap::new();
    for c in candidates {
        phases
            .entry(rules::phase(&c.1.group, &c.1.resource))
            .or_default()
            .push(c);
    }
    for (phase, batch) in phases {
        let ctx = Ctx {
            client,
            source: &source,
            data_claims: &data_claims,
            volumes: &volumes,
            unfilled: &unfilled,
            uids: &uids,
            links: &links,
            opts,
            rw: &rw,
            selector: selector.as_ref(),
            target: &target,
            dry_new_namespaces: &dry_new_namespaces,
            dry_new_types: &dry_new_types,
        };
        // Bounded memory: objects are loaded a chunk at a time (each chunk reads its packs once).
        let mut results: Vec<Option<(Item, Option<Value>)>> = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(2000) {
            let pre = source.preload(chunk).await;
            let part: Vec<Option<(Item, Option<Value>)>> = futures::stream::iter(chunk.iter())
                .map(|(idx, e)| ctx.one(*idx, e, &pre))
                .buffered(opts.concurrency.max(1))
                .collect()
                .await;
            results.extend(part);
        }
        let mut created_crds = Vec::new();
        for r in results.into_iter().flatten() {
            let (item, obj) = r;
            if opts.dry_run && item.outcome == Outcome::Created {
                if item.kind == "Namespace" && item.api_version == "v1" {
                    dry_new_namespaces.insert(item.name.clone());
                }
                if item.kind == "CustomResourceDefinition" {
                    if let Some(o) = &obj {
                        dry_new_types.insert((
                            o["spec"]["group"].as_str().unwrap_or_default().into(),
                            o["spec"]["names"]["kind"]
                                .as_str()
                                .unwrap_or_default()
                                .into(),
                        ));
                    }
                }
            }
            if phase == 0
                && !opts.dry_run
                && matches!(
                    item.outcome,
                    Outcome::Created | Outcome::Updated | Outcome::Skipped
                )
            {
                created_crds.push(item.name.clone());
            }
            items.push(item);
        }
        if phase == 0 && !created_crds.is_empty() {
            wait_established(client, &created_crds, opts.crd_timeout, &mut items).await;
            target = discover_target(client).await?;
        }
        // Claims are created; their data goes in before any workload that mounts them.
        if phase == rules::phase("", "persistentvolumeclaims") && !data_claims.is_empty() {
            fill_volumes(client, &source, opts, &rw, &data_claims, &mut items).await;
            unfilled = items
                .iter()
                .filter(|i| i.kind == "VolumeData" && i.outcome == Outcome::Failed)
                .filter_map(|i| Some((i.namespace.clone()?, i.name.clone())))
                .collect();
        }
    }

    if !opts.dry_run {
        let links = links.into_inner().expect("not poisoned");
        let uids = uids.into_inner().expect("not poisoned");
        relink_owners(client, &target, &uids, links, &mut items).await;
    }
    if !opts.dry_run && !opts.bind_timeout.is_zero() {
        wait_bound(client, &volumes, &rw, opts.bind_timeout, &mut items).await;
    }
    if !opts.dry_run && opts.run_hooks {
        hooks::run(client, &mut items).await;
        if let Source::Repository { repo, dumps, .. } = &source {
            dumps::run(
                client,
                repo.clone(),
                dumps,
                &|n| rw.map_ns(n).to_string(),
                &mut items,
            )
            .await;
        }
    }

    // Restore hooks are items of the report, not restored objects: only a failed one counts.
    let count = |o: Outcome| {
        items
            .iter()
            .filter(|i| {
                i.outcome == o
                    && (!matches!(i.kind.as_str(), "RestoreHook" | "RestoreDump")
                        || o == Outcome::Failed)
            })
            .count()
    };
    Ok(RestoreReport {
        id: restore_id,
        backup: source.name(),
        dry_run: opts.dry_run,
        created: count(Outcome::Created),
        updated: count(Outcome::Updated),
        skipped: count(Outcome::Skipped),
        failed: count(Outcome::Failed),
        unvalidated: count(Outcome::Unvalidated),
        duration_seconds: start.elapsed().as_secs_f64(),
        items,
        dependencies,
    })
}

/// How a referenced object of a `--name` restore is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DependencyStatus {
    /// Restored too (it matched the filters, or `--with-dependencies`).
    Restored,
    /// In the backup, not restored: add it with `--name` or `--with-dependencies`.
    NotRestored,
    /// Not in the backup: the target must already have it.
    NotInBackup,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub kind: String,
    /// Namespace in the backup.
    pub namespace: Option<String>,
    /// A name, or `PREFIX*` for a StatefulSet's claims.
    pub name: String,
    /// `Kind/name` of the object that refers to it.
    pub required_by: String,
    pub status: DependencyStatus,
}

/// The objects the `--name` candidates refer to (rules::references), looked up in the backup;
/// with `--with-dependencies` they join the candidates.
async fn resolve_dependencies(
    source: &Source,
    all: &[TreeEntry],
    candidates: &mut Vec<(usize, TreeEntry)>,
    opts: &RestoreOptions,
) -> Result<Vec<Dependency>, Error> {
    let mut chosen: BTreeSet<usize> = candidates.iter().map(|(i, _)| *i).collect();
    let mut out = Vec::new();
    let mut queue: Vec<(usize, TreeEntry)> = candidates.clone();
    while let Some((idx, e)) = queue.pop() {
        let Some(ns) = &e.namespace else { continue };
        let obj = source.load(&e, idx).await?;
        for r in rules::references(&e.group, &e.resource, &obj) {
            let found: Vec<usize> = all
                .iter()
                .enumerate()
                .filter(|(_, x)| {
                    x.group == r.group
                        && x.resource == r.resource
                        && x.namespace.as_deref() == Some(ns.as_str())
                        && if r.prefix {
                            x.name.strip_prefix(r.name.as_str()).is_some_and(|i| {
                                !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit())
                            })
                        } else {
                            x.name == r.name
                        }
                })
                .map(|(i, _)| i)
                .collect();
            let required_by = format!("{}/{}", e.kind, e.name);
            if found.is_empty() {
                out.push(Dependency {
                    kind: r.kind.into(),
                    namespace: Some(ns.clone()),
                    name: if r.prefix {
                        format!("{}*", r.name)
                    } else {
                        r.name.clone()
                    },
                    required_by,
                    status: DependencyStatus::NotInBackup,
                });
                continue;
            }
            for i in found {
                let status = if chosen.contains(&i) {
                    DependencyStatus::Restored
                } else if opts.with_dependencies {
                    chosen.insert(i);
                    candidates.push((i, all[i].clone()));
                    queue.push((i, all[i].clone()));
                    DependencyStatus::Restored
                } else {
                    DependencyStatus::NotRestored
                };
                out.push(Dependency {
                    kind: r.kind.into(),
                    namespace: Some(ns.clone()),
                    name: all[i].name.clone(),
                    required_by: required_by.clone(),
                    status,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    out.dedup_by(|a, b| a.namespace == b.namespace && a.kind == b.kind && a.name == b.name);
    Ok(out)
}

/// Wait until every claim this restore created or found, and that was Bound in the backup, is
/// Bound; each one still Pending at the deadline becomes a failed item with the reason.
async fn wait_bound(
    client: &kube::Client,
    volumes: &VolumePlan,
    rw: &RewriteOptions,
    timeout: Duration,
    items: &mut [Item],
) {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let targets: BTreeSet<(String, String)> = volumes
        .was_bound
        .iter()
        .map(|(ns, n)| (rw.map_ns(ns).to_string(), n.clone()))
        .collect();
    let mut waiting: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            i.kind == "PersistentVolumeClaim"
                && i.outcome != Outcome::Failed
                && i.namespace
                    .as_ref()
                    .is_some_and(|ns| targets.contains(&(ns.clone(), i.name.clone())))
        })
        .map(|(idx, _)| idx)
        .collect();
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last: HashMap<usize, PersistentVolumeClaim> = HashMap::new();
    let mut verdicts: HashMap<usize, rules::Pending> = HashMap::new();
    let mut round = 0u32;
    loop {
        round += 1;
        let mut still = Vec::new();
        for idx in waiting {
            let i = &items[idx];
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(client.clone(), i.namespace.as_deref().unwrap_or_default());
            match api.get_opt(&i.name).await {
                Ok(Some(c))
                    if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") => {}
                Ok(Some(c)) => {
                    last.insert(idx, c);
                    still.push(idx);
                }
                // Gone, or unreadable: kept waiting; reported at the deadline.
                _ => still.push(idx),
            }
        }
        waiting = still;
        // Claims that bind only once a pod uses them, and that no pod uses (after a grace
        // period for controllers to create their pods), are not waited for.
        if start.elapsed() > Duration::from_secs(10) && round % 5 == 0 {
            let mut still = Vec::new();
            for idx in waiting {
                match last.get(&idx) {
                    Some(c) => match pending_verdict(client, c).await {
                        rules::Pending::WaitsForConsumer => {
                            verdicts.insert(idx, rules::Pending::WaitsForConsumer);
                        }
                        rules::Pending::Stuck(_) => still.push(idx),
                    },
                    None => still.push(idx),
                }
            }
            waiting = still;
        }
        if waiting.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for idx in waiting {
        let verdict = match last.get(&idx) {
            Some(c) => pending_verdict(client, c).await,
            None => rules::Pending::Stuck("it cannot be read back".into()),
        };
        verdicts.insert(idx, verdict);
    }
    for (idx, verdict) in verdicts {
        let i = &mut items[idx];
        match verdict {
            rules::Pending::WaitsForConsumer => {
                let note = "Pending: its StorageClass binds it once a pod uses it";
                i.message = Some(match i.message.take() {
                    Some(m) => format!("{m}; {note}"),
                    None => note.into(),
                });
            }
            rules::Pending::Stuck(why) => {
                let was = match (i.outcome, i.message.take()) {
                    (Outcome::Created, Some(m)) => format!(" (created: {m})"),
                    (Outcome::Created, None) => " (created)".into(),
                    (_, Some(m)) => format!(" ({m})"),
                    (_, None) => String::new(),
                };
                i.outcome = Outcome::Failed;
                i.message = Some(format!(
                    "still Pending after {}s: {why}{was}",
                    timeout.as_secs()
                ));
            }
        }
    }
}

/// Read what `rules::pending_reason` needs about a Pending claim.
async fn pending_verdict(
    client: &kube::Client,
    c: &k8s_openapi::api::core::v1::PersistentVolumeClaim,
) -> rules::Pending {
    use k8s_openapi::api::core::v1::{Event, Pod};
    use k8s_openapi::api::storage::v1::StorageClass;
    let ns = c.metadata.namespace.clone().unwrap_or_default();
    let name = c.metadata.name.clone().unwrap_or_default();
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let default_class = classes
        .iter()
        .find(|sc| {
            sc.metadata.annotations.as_ref().is_some_and(|a| {
                a.get("storageclass.kubernetes.io/is-default-class")
                    .is_some_and(|v| v == "true")
            })
        })
        .and_then(|sc| sc.metadata.name.clone());
    let wanted = c
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .or(default_class.clone());
    let class = classes
        .iter()
        .find(|sc| sc.metadata.name == wanted)
        .map(|sc| serde_json::to_value(sc).unwrap_or_default());
    let events: Vec<Value> = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&kube::api::ListParams::default().fields(&format!(
            "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}"
        )))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.involved_object.uid == c.metadata.uid)
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect();
    let has_consumer = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .filter(|p| {
            !p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(crate::volume::mover::LABEL))
        })
        .any(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_some_and(|vs| {
                    vs.iter().any(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|pvc| pvc.claim_name == name)
                    })
                })
        });
    let claim = serde_json::to_value(c).unwrap_or_default();
    rules::pending_reason(&rules::PendingFacts {
        claim: &claim,
        class: class.as_ref(),
        default_class: default_class.as_deref(),
        events: &events,
        has_consumer,
    })
}

async fn wait_established(
    client: &kube::Client,
    names: &[String],
    timeout: Duration,
    items: &mut [Item],
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    for name in names {
        loop {
            let ok = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if ok {
                break;
            }
            if Instant::now() > deadline {
                if let Some(i) = items
                    .iter_mut()
                    .find(|i| i.kind == "CustomResourceDefinition" && &i.name == name)
                {
                    i.outcome = Outcome::Failed;
                    i.message = Some(format!("not Established within {}s", timeout.as_secs()));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What each restored claim gets as its volume and why PVs are not restored.
#[derive(Debug, Default)]
struct VolumePlan {
    /// (original namespace, claim) -> its volume.
    claims: HashMap<(String, String), rules::ClaimVolume>,
    /// PV name -> why it is not restored (absent: restore it).
    pv_skip: HashMap<String, String>,
    /// (original namespace, claim) of the claims that were Bound in the backup, or named their
    /// volume.
    was_bound: BTreeSet<(String, String)>,
}

async fn target_pv(client: &kube::Client, name: &str) -> rules::TargetPv {
    use k8s_openapi::api::core::v1::PersistentVolume;
    match Api::<PersistentVolume>::all(client.clone())
        .get_opt(name)
        .await
    {
        Ok(None) => rules::TargetPv::Absent,
        Ok(Some(pv)) => rules::TargetPv::Present {
            phase: pv
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "Pending".into()),
            claim_ref: pv
                .spec
                .and_then(|s| s.claim_ref)
                .and_then(|r| Some((r.namespace?, r.name?))),
        },
        Err(kube::Error::Api(s)) => rules::TargetPv::Unknown(format!("{} ({})", s.message, s.code)),
        Err(e) => rules::TargetPv::Unknown(crate::error::display_chain(&e)),
    }
}

async fn plan_volumes(
    client: &kube::Client,
    source: &Source,
    all: &[TreeEntry],
    candidates: &[(usize, TreeEntry)],
    data_claims: &BTreeSet<(String, String)>,
    opts: &RestoreOptions,
    rw: &RewriteOptions,
) -> Result<VolumePlan, Error> {
    let is = |e: &TreeEntry, r: &str| e.group.is_empty() && e.resource == r;
    let selected_pvs: BTreeSet<&str> = candidates
        .iter()
        .filter(|(_, e)| is(e, "persistentvolumes"))
        .map(|(_, e)| e.name.as_str())
        .collect();
    let mut plan = VolumePlan::default();
    // PV name -> (target namespace, claim) of the restored claim that decided about it.
    let mut decided: HashMap<String, (String, String, rules::ClaimVolume)> = HashMap::new();
    for (idx, e) in candidates
        .iter()
        .filter(|(_, e)| is(e, "persistentvolumeclaims"))
    {
        let Some(ns) = &e.namespace else { continue };
        let claim = source.load(e, *idx).await?;
        // Bound, or bound-to-be (it names its volume): expected to bind in the target too.
        if claim["status"]["phase"] == "Bound" || claim["spec"]["volumeName"].is_string() {
            plan.was_bound.insert((ns.clone(), e.name.clone()));
        }
        let pv_name = claim["spec"]["volumeName"].as_str().unwrap_or_default();
        let pv = match all
            .iter()
            .position(|p| is(p, "persistentvolumes") && p.name == pv_name && !pv_name.is_empty())
        {
            Some(i) => Some(source.load(&all[i], i).await?),
            None => None,
        };
        let target_ns = rw.map_ns(ns).to_string();
        let facts = rules::ClaimFacts {
            claim: &claim,
            pv: pv.as_ref(),
            pv_selected: selected_pvs.contains(pv_name),
            has_data: data_claims.contains(&(ns.clone(), e.name.clone())),
            mapped: target_ns != *ns,
            pvs_as_is: opts.pvs_as_is,
        };
        let v = match rules::claim_volume_from_backup(&facts) {
            rules::ClaimPlan::Decided(v) => v,
            rules::ClaimPlan::CheckTarget { pv, restore_pv } => rules::claim_volume_in_target(
                &pv,
                restore_pv,
                &target_pv(client, &pv).await,
                (&target_ns, &e.name),
            ),
        };
        if !pv_name.is_empty() {
            decided.insert(pv_name.to_string(), (target_ns, e.name.clone(), v.clone()));
        }
        plan.claims.insert((ns.clone(), e.name.clone()), v);
    }
    for (idx, e) in candidates
        .iter()
        .filter(|(_, e)| is(e, "persistentvolumes"))
    {
        let reason = match decided.get(&e.name) {
            Some((_, _, rules::ClaimVolume::Keep { restore_pv: true })) => None,
            Some((ns, n, rules::ClaimVolume::Keep { restore_pv: false })) => Some(format!(
                "its claim {ns}/{n} uses the PV already in the target cluster"
            )),
            Some((ns, n, rules::ClaimVolume::NewWithData)) => Some(format!(
                "its claim {ns}/{n} is restored into a new volume with the backed-up data"
            )),
            Some((ns, n, rules::ClaimVolume::NewEmpty { reason })) => Some(format!(
                "its claim {ns}/{n} gets a new empty volume: {reason}"
            )),
            None => rules::unclaimed_pv_skip_reason(&source.load(e, *idx).await?, opts.pvs_as_is),
        };
        if let Some(r) = reason {
            plan.pv_skip.insert(e.name.clone(), r);
        }
    }
    Ok(plan)
}

/// A created object whose backed-up `ownerReferences` are re-linked at the end.
struct Link {
    group: String,
    version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    owners: Vec<Value>,
}

/// Give each created object its owners' new UIDs (rules::relink_owner_refs), once every object
/// exists (owners may come in a later phase). An owner not created by this restore is looked up
/// in the target (same namespace, or cluster-scoped).
async fn relink_owners(
    client: &kube::Client,
    target: &Target,
    uids: &HashMap<(String, String, Option<String>, String), String>,
    links: Vec<Link>,
    items: &mut [Item],
) {
    for l in links {
        let mut found: HashMap<(String, String, String), String> = HashMap::new();
        for r in &l.owners {
            let (Some(av), Some(kind), Some(name)) = (
                r["apiVersion"].as_str(),
                r["kind"].as_str(),
                r["name"].as_str(),
            ) else {
                continue;
            };
            let (group, version) = match av.rsplit_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), av.to_string()),
            };
            let mut uid = uids
                .get(&(
                    group.clone(),
                    kind.to_string(),
                    l.namespace.clone(),
                    name.to_string(),
                ))
                .or_else(|| uids.get(&(group.clone(), kind.to_string(), None, name.to_string())))
                .cloned();
            if uid.is_none()
                && let Some((ar, caps)) = target.by_gvk.get(&(group, version, kind.to_string()))
            {
                let api: Api<DynamicObject> = match (caps.scope == Scope::Namespaced, &l.namespace)
                {
                    (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
                    _ => Api::all_with(client.clone(), ar),
                };
                uid = api
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|o| o.metadata.uid);
            }
            if let Some(uid) = uid {
                found.insert((av.to_string(), kind.to_string(), name.to_string()), uid);
            }
        }
        let (kept, dropped) = rules::relink_owner_refs(&l.owners, |av, k, n| {
            found
                .get(&(av.to_string(), k.to_string(), n.to_string()))
                .cloned()
        });
        let mut notes = vec![];
        if !kept.is_empty()
            && let Some((ar, caps)) =
                target
                    .by_gvk
                    .get(&(l.group.clone(), l.version.clone(), l.kind.clone()))
        {
            let api: Api<DynamicObject> = match (caps.scope == Scope::Namespaced, &l.namespace) {
                (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
                _ => Api::all_with(client.clone(), ar),
            };
            let patch = serde_json::json!({"metadata": {"ownerReferences": kept}});
            if let Err(err) = api
                .patch(&l.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                notes.push(format!(
                    "its owners could not be re-linked: {}",
                    crate::error::display_chain(&err)
                ));
            }
        }
        if !dropped.is_empty() {
            notes.push(format!(
                "ownerReferences dropped (owner not in the target): {}",
                dropped.join(", ")
            ));
        }
        if notes.is_empty() {
            continue;
        }
        if let Some(i) = items.iter_mut().find(|i| {
            i.kind == l.kind
                && i.namespace == l.namespace
                && i.name == l.name
                && i.outcome == Outcome::Created
        }) {
            let note = notes.join("; ");
            i.message = Some(match i.message.take() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
    }
}

struct Ctx<'a> {
    client: &'a kube::Client,
    source: &'a Source,
    /// (original namespace, claim) of the volumes restored with their data.
    data_claims: &'a BTreeSet<(String, String)>,
    volumes: &'a VolumePlan,
    unfilled: &'a BTreeSet<(String, String)>,
    /// Objects created by this restore: (group, kind, namespace, name) -> new UID.
    uids: &'a std::sync::Mutex<HashMap<(String, String, Option<String>, String), String>>,
    /// Created objects whose backup had ownerReferences, re-linked once everything exists.
    links: &'a std::sync::Mutex<Vec<Link>>,
    opts: &'a RestoreOptions,
    rw: &'a RewriteOptions,
    selector: Option<&'a Selector>,
    target: &'a Target,
    dry_new_namespaces: &'a BTreeSet<String>,
    dry_new_types: &'a BTreeSet<(String, String)>,
}

impl Ctx<'_> {
    /// The cluster made the namespace's `default` ServiceAccount: the backup's settings are
    /// merged into it (rules::merge_default_service_account).
    async fn merge_default_sa(&self, api: &Api<DynamicObject>, obj: &Value, item: &mut Item) {
        let existing = match api.get("default").await {
            Ok(d) => serde_json::to_value(d).unwrap_or_default(),
            Err(err) => {
                item.message = Some(format!("read: {}", crate::error::display_chain(&err)));
                return;
            }
        };
        let Some(patch) = rules::merge_default_service_account(&existing, obj) else {
            item.outcome = Outcome::Skipped;
            item.message = Some("already exists with the backed-up settings".into());
            return;
        };
        let pp = PatchParams {
            dry_run: self.opts.dry_run,
            field_manager: Some("lifeboat".into()),
            ..Default::default()
        };
        match api.patch("default", &pp, &Patch::Merge(&patch)).await {
            Ok(_) => {
                item.outcome = Outcome::Updated;
                item.message = Some(
                    "merged into the existing default ServiceAccount (imagePullSecrets, labels, annotations, automountServiceAccountToken)"
                        .into(),
                );
            }
            Err(err) => {
                item.message = Some(format!("merge: {}", crate::error::display_chain(&err)))
            }
        }
    }

    /// Restore one object. `None`: filtered out by the label selector.
    async fn one(
        &self,
        idx: usize,
        e: &TreeEntry,
        pre: &HashMap<usize, Result<Value, String>>,
    ) -> Option<(Item, Option<Value>)> {
        let mut item = Item {
            kind: e.kind.clone(),
            api_version: e.api_version(),
            namespace: e.namespace.as_ref().map(|n| self.rw.map_ns(n).to_string()),
            name: if e.group.is_empty() && e.resource == "namespaces" {
                self.rw.map_ns(&e.name).to_string()
            } else {
                e.name.clone()
            },
            outcome: Outcome::Failed,
            message: None,
        };
        let obj = match pre.get(&idx) {
            Some(Ok(o)) => o.clone(),
            Some(Err(err)) => {
                item.message = Some(format!("cannot read from the backup: {err}"));
                return Some((item, None));
            }
            None => match self.source.load(e, idx).await {
                Ok(o) => o,
                Err(err) => {
                    item.message = Some(format!(
                        "cannot read from the backup: {}",
                        crate::error::display_chain(&err)
                    ));
                    return Some((item, None));
                }
            },
        };
        if let Some(sel) = self.selector {
            // Namespaces selected by -n are restored whatever their labels.
            let is_selected_ns = e.group.is_empty()
                && e.resource == "namespaces"
                && self.opts.namespaces.contains(&e.name);
            if !is_selected_ns && !sel.matches_object(&obj) {
                return None;
            }
        }
        if let Some(reason) = rules::skip_reason(&e.group, &e.resource, &obj, self.rw) {
            item.outcome = Outcome::Skipped;
            item.message = Some(reason);
            return Some((item, None));
        }
        // Volumes are never shared or taken over (rules::claim_volume_from_backup): a PV is
        // restored only when the plan says so.
        let is_pv = e.group.is_empty() && e.resource == "persistentvolumes";
        if is_pv && let Some(reason) = self.volumes.pv_skip.get(&e.name) {
            item.outcome = Outcome::Skipped;
            item.message = Some(reason.clone());
            return Some((item, None));
        }
        let owners: Vec<Value> = obj["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut obj = rules::rewrite(&e.group, &e.resource, obj, self.rw);
        if let Some(ns) = &item.namespace
            && let Some((_, claim)) = self
                .unfilled
                .iter()
                .find(|(n, c)| n == ns && rules::uses_claim(&e.group, &e.resource, &obj, c))
        {
            item.message = Some(format!(
                "not created: it mounts claim {claim}, whose data was not restored (see its VolumeData item); restore again once that is fixed"
            ));
            return Some((item, None));
        }
        let claim_volume = match (
            &e.namespace,
            e.group.is_empty() && e.resource == "persistentvolumeclaims",
        ) {
            (Some(ns), true) => self.volumes.claims.get(&(ns.clone(), e.name.clone())),
            _ => None,
        };
        let mut created_note = None;
        if let Some(rules::ClaimVolume::NewEmpty { reason }) = claim_volume
            && let Some(spec) = obj["spec"].as_object_mut()
        {
            spec.remove("volumeName");
            created_note = Some(format!("new empty volume: {reason}"));
        }
        if e.group.is_empty()
            && e.resource == "persistentvolumeclaims"
            && let Some(ns) = &e.namespace
            && self.data_claims.contains(&(ns.clone(), e.name.clone()))
            && let Some(spec) = obj["spec"].as_object_mut()
        {
            spec.remove("volumeName");
            spec.remove("dataSource");
            spec.remove("dataSourceRef");
            if self.opts.from_snapshot
                && let Some(v) = self
                    .source
                    .volumes()
                    .iter()
                    .find(|v| &v.namespace == ns && v.pvc == e.name)
                && v.snapshot_kept
                && self.rw.map_ns(ns) == ns.as_str()
                && snapshot_exists(self.client, ns, &v.snapshot).await
            {
                spec.insert(
                    "dataSource".into(),
                    serde_json::json!({"apiGroup": "snapshot.storage.k8s.io",
                                       "kind": "VolumeSnapshot", "name": v.snapshot}),
                );
            }
        }
        // Restoring into a newer Kubernetes: convert what the target no longer serves.
        let mut gvk = (e.group.clone(), e.version.clone(), e.kind.clone());
        let mut notes: Vec<String> = Vec::new();
        if !self.target.by_gvk.contains_key(&gvk)
            && rules::is_builtin_group(&e.group)
            && !(self.opts.dry_run
                && self
                    .dry_new_types
                    .contains(&(e.group.clone(), e.kind.clone())))
        {
            let served = |g: &str, v: &str, k: &str| {
                self.target
                    .by_gvk
                    .contains_key(&(g.to_string(), v.to_string(), k.to_string()))
            };
            match convert::convert(&mut obj, deprecation_db(), served) {
                Ok(Some(c)) => {
                    let (g, v) = match c.api_version.split_once('/') {
                        Some((g, v)) => (g.to_string(), v.to_string()),
                        None => (String::new(), c.api_version.clone()),
                    };
                    gvk = (g, v, e.kind.clone());
                    item.api_version = c.api_version.clone();
                    notes.push(c.describe());
                }
                Ok(None) => {}
                Err(msg) => {
                    item.message = Some(msg);
                    return Some((item, Some(obj)));
                }
            }
        }
        if let Some(t) = &self.opts.transforms {
            let groups = [e.group.as_str(), gvk.0.as_str()];
            let target = transform::Target {
                kind: &e.kind,
                resource: &e.resource,
                groups: &groups,
                backup_namespace: e.namespace.as_deref(),
            };
            match t.apply(&target, &mut obj) {
                Ok(transform::Applied::Changed(names)) if !names.is_empty() => {
                    notes.push(format!("transformed by {}", names.join(", ")));
                }
                Ok(transform::Applied::Changed(_)) => {}
                Ok(transform::Applied::Dropped(rule)) => {
                    item.outcome = Outcome::Skipped;
                    item.message = Some(format!("dropped by transform {rule}"));
                    return Some((item, None));
                }
                Err(msg) => {
                    item.message = Some(msg);
                    return Some((item, Some(obj)));
                }
            }
        }
        if let Some(n) = created_note.take() {
            notes.insert(0, n);
        }
        let created_note = (!notes.is_empty()).then(|| notes.join("; "));
        let Some((ar, caps)) = self.target.by_gvk.get(&gvk) else {
            if self.opts.dry_run
                && self
                    .dry_new_types
                    .contains(&(e.group.clone(), e.kind.clone()))
            {
                item.outcome = Outcome::Unvalidated;
                item.message = Some("dry run: its CRD is only created by this restore".into());
            } else {
                item.message = Some(format!(
                    "{} {} is not served by the target cluster",
                    e.api_version(),
                    e.kind
                ));
            }
            return Some((item, Some(obj)));
        };
        let api: Api<DynamicObject> = match (caps.scope == Scope::Namespaced, &item.namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, ar),
            _ => Api::all_with(self.client.clone(), ar),
        };
        let dobj: DynamicObject = match serde_json::from_value(obj.clone()) {
            Ok(d) => d,
            Err(err) => {
                item.message = Some(format!("not a valid object: {err}"));
                return Some((item, Some(obj)));
            }
        };
        let pp = PostParams {
            dry_run: self.opts.dry_run,
            field_manager: Some("lifeboat".into()),
        };
        match api.create(&pp, &dobj).await {
            Ok(created) => {
                item.outcome = Outcome::Created;
                item.message = created_note.clone();
                if !self.opts.dry_run
                    && let Some(uid) = created.metadata.uid
                {
                    let key = (
                        gvk.0.clone(),
                        e.kind.clone(),
                        item.namespace.clone(),
                        item.name.clone(),
                    );
                    self.uids.lock().expect("not poisoned").insert(key, uid);
                    if !owners.is_empty() {
                        self.links.lock().expect("not poisoned").push(Link {
                            group: gvk.0.clone(),
                            version: gvk.1.clone(),
                            kind: e.kind.clone(),
                            namespace: item.namespace.clone(),
                            name: item.name.clone(),
                            owners: owners.clone(),
                        });
                    }
                }
            }
            Err(kube::Error::Api(s))
                if s.code == 409
                    && s.reason == "AlreadyExists"
                    && is_pv
                    && self.opts.existing != Existing::Fail =>
            {
                // Never updated: a changed claimRef or reclaim policy makes the PV controller
                // release (and, with reclaim policy Delete, delete) the volume of its claim.
                item.outcome = Outcome::Skipped;
                item.message =
                    Some("already exists; restore never changes a PersistentVolume".into());
            }
            Err(kube::Error::Api(s))
                if s.code == 409
                    && s.reason == "AlreadyExists"
                    && e.group.is_empty()
                    && e.resource == "serviceaccounts"
                    && e.name == "default"
                    && self.opts.existing != Existing::Fail =>
            {
                self.merge_default_sa(&api, &obj, &mut item).await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => match self
                .opts
                .existing
            {
                Existing::Skip => {
                    item.outcome = Outcome::Skipped;
                    item.message = Some("already exists".into());
                }
                Existing::Fail => item.message = Some("already exists (--existing fail)".into()),
                Existing::Update => {
                    let mut pp = PatchParams::apply("lifeboat").force();
                    pp.dry_run = self.opts.dry_run;
                    match api.patch(&item.name, &pp, &Patch::Apply(&dobj)).await {
                        Ok(_) => item.outcome = Outcome::Updated,
                        Err(kube::Error::Api(s)) => {
                            item.message = Some(format!("update: {} ({})", s.message, s.code))
                        }
                        Err(err) => {
                            item.message =
                                Some(format!("update: {}", crate::error::display_chain(&err)))
                        }
                    }
                }
            },
            Err(kube::Error::Api(s))
                if self.opts.dry_run
                    && is_not_found_namespace(&s)
                    && item
                        .namespace
                        .as_ref()
                        .is_some_and(|n| self.dry_new_namespaces.contains(n)) =>
            {
                item.outcome = Outcome::Unvalidated;
                item.message = Some(format!(
                    "dry run: namespace {} is only created by this restore",
                    item.namespace.clone().unwrap_or_default()
                ));
            }
            Err(kube::Error::Api(s)) => item.message = Some(format!("{} ({})", s.message, s.code)),
            Err(err) => item.message = Some(crate::error::display_chain(&err)),
        }
        // Conversions and transforms are reported whatever the outcome.
        if let Some(n) = created_note
            && item.message.as_deref() != Some(n.as_str())
        {
            item.message = Some(match item.message.take() {
                Some(m) => format!("{m} ({n})"),
                None => n,
            });
        }
        Some((item, Some(obj)))
    }
}

/// Entries of a repository backup, for `Source::Repository`.
pub async fn repository_source(repo: Arc<Repository>, spec: &str) -> Result<Source, Error> {
    let (id, snap) = repo.find_snapshot(spec).await?;
    let entries = repo.snapshot_entries(&snap).await?;
    Ok(Source::Repository {
        repo,
        backup_id: id,
        entries,
        volumes: snap.volumes,
        dumps: snap.dumps,
    })
}

impl crate::output::Render for RestoreReport {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let verb = if self.dry_run {
            "dry-run restore"
        } else {
            "restore"
        };
        let created = if self.dry_run {
            "would be created"
        } else {
            "created"
        };
        let updated = if self.dry_run {
            "would be updated"
        } else {
            "updated"
        };
        let from = if self.backup.len() == 64 && self.backup.bytes().all(|b| b.is_ascii_hexdigit())
        {
            format!("backup {}", &self.backup[..8])
        } else {
            self.backup.clone()
        };
        for i in &self.items {
            if matches!(i.outcome, Outcome::Created | Outcome::Updated) && i.message.is_none() {
                continue;
            }
            let what = match &i.namespace {
                Some(ns) => format!("{}/{}/{}", i.kind, ns, i.name),
                None => format!("{}/{}", i.kind, i.name),
            };
            let outcome = serde_json::to_value(i.outcome)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            writeln!(
                w,
                "{outcome:<11} {what}: {}",
                i.message.as_deref().unwrap_or("")
            )?;
        }
        for d in &self.dependencies {
            let what = match &d.namespace {
                Some(ns) => format!("{}/{}/{}", d.kind, ns, d.name),
                None => format!("{}/{}", d.kind, d.name),
            };
            let status = match d.status {
                DependencyStatus::Restored => "restored too",
                DependencyStatus::NotRestored => {
                    "in the backup, not restored (--with-dependencies restores it)"
                }
                DependencyStatus::NotInBackup => "not in the backup: the target must have it",
            };
            writeln!(w, "depends on  {what} (by {}): {status}", d.required_by)?;
        }
        writeln!(
            w,
            "{verb} {} of {from}: {} {created}, {} {updated}, {} skipped, {} failed{} in {:.1}s",
            self.id,
            self.created,
            self.updated,
            self.skipped,
            self.failed,
            if self.unvalidated > 0 {
                format!(", {} unvalidated", self.unvalidated)
            } else {
                String::new()
            },
            self.duration_seconds
        )
    }
}
