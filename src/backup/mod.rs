//! `lifeboat backup create`: discover every served resource type (preferred version), LIST them
//! page by page with bounded concurrency, and stream each object into the repository as it
//! arrives. Memory holds one page per concurrent LIST plus the pack being built, not the cluster.
//!
//! Object rules (docs/backup.md): `metadata.managedFields` is dropped (noise; restore strips it
//! anyway); `apiVersion`/`kind` are set from discovery; everything else is kept as the server
//! returned it. Skipped by default (`--no-default-excludes` keeps them): events, nodes, leases,
//! endpoints, endpointslices, csinodes, volumeattachments, and pods / replicasets owned by a
//! controller.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::error::Error;
use crate::repo::snapshot::{ClusterInfo, Selectors, Snapshot, TREE_ENTRIES, Tree, TreeEntry};
use crate::repo::{BlobType, Packer, Repository, lock::Lock, new_id};
use crate::store::layout;

pub mod check;
pub mod cronjob;
pub mod diff;
pub mod dumps;
pub mod hooks;
pub mod manage;
pub mod report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterResources {
    Auto,
    True,
    False,
}

#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    pub selector: Option<String>,
    pub include_resources: Vec<String>,
    pub exclude_resources: Vec<String>,
    pub include_cluster_resources: ClusterResources,
    pub default_excludes: bool,
    pub tags: BTreeMap<String, String>,
    pub context: Option<String>,
    pub concurrency: usize,
    pub page_size: u32,
    /// `--snapshot-volumes`: back up PVC contents too.
    pub volumes: Option<crate::volume::snapshots::VolumeOptions>,
    pub hooks: HookOptions,
}

/// Hooks of the backed-up pods (docs/backup.md#hooks): pre/post hooks bracket the volume
/// snapshots (they run only when volume data is backed up); dump hooks run in every backup.
#[derive(Debug, Clone)]
pub struct HookOptions {
    /// False: `--no-hooks`.
    pub enabled: bool,
    /// `--hooks FILE`: hooks for pods that do not declare their own.
    pub rules: hooks::Rules,
    /// Post hooks owed (run on Ctrl-C by whoever cancels the backup).
    pub pending: hooks::Pending,
    /// A line per dump on stderr (off with -q).
    pub progress: bool,
}

impl Default for HookOptions {
    fn default() -> Self {
        HookOptions {
            enabled: true,
            rules: Default::default(),
            pending: Default::default(),
            progress: false,
        }
    }
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            namespaces: vec![],
            selector: None,
            include_resources: vec![],
            exclude_resources: vec![],
            include_cluster_resources: ClusterResources::Auto,
            default_excludes: true,
            tags: BTreeMap::new(),
            context: None,
            concurrency: 4,
            page_size: 500,
            volumes: None,
            hooks: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    pub id: String,
    pub repository: String,
    pub objects: u64,
    pub resources: BTreeMap<String, u64>,
    pub bytes_added: u64,
    pub bytes_total: u64,
    pub duration_seconds: f64,
    pub warnings: Vec<String>,
    /// True when this run created the (default) repository.
    pub repository_created: bool,
    /// Volume data stored (`--snapshot-volumes`): one entry per claim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSummary>,
    /// When each claim's snapshot was taken (the storage's time, as the snapshot controller
    /// reports it): all are asked for together, between the pre and post hooks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotTime>,
    /// Seconds between the first and the last snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_spread_seconds: Option<f64>,
    /// The hooks that ran, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<hooks::HookOutcome>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotTime {
    pub namespace: String,
    pub pvc: String,
    pub snapshot: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The VolumeGroupSnapshot it is a member of (taken at one point in time with the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSummary {
    pub namespace: String,
    pub pvc: String,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// `snapshot` or `live`.
    pub mode: crate::volume::snapshots::VolumeMode,
    /// Live reads: whether a pre hook ran on a pod that mounts the claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiesced: Option<bool>,
}

/// Progress callbacks (a progress bar on a TTY; nothing otherwise).
pub type DynProgress = Arc<dyn Progress>;

pub trait Progress: Send + Sync {
    fn types(&self, _total: usize) {}
    fn type_done(&self, _name: &str) {}
    fn objects(&self, _n: u64) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// `resource[.group]` patterns as kubectl and Velero take them; `*` matches everything.
#[derive(Debug, Clone)]
pub struct ResourcePattern {
    name: String,
    group: Option<String>,
}

impl ResourcePattern {
    pub fn parse(s: &str) -> ResourcePattern {
        let s = s.trim().to_ascii_lowercase();
        match s.split_once('.') {
            Some((n, g)) => ResourcePattern {
                name: n.to_string(),
                group: Some(g.to_string()),
            },
            None => ResourcePattern {
                name: s,
                group: None,
            },
        }
    }
    pub fn matches(&self, ar: &ApiResource) -> bool {
        if self.name == "*" {
            return true;
        }
        let names = [ar.plural.to_ascii_lowercase(), ar.kind.to_ascii_lowercase()];
        names.contains(&self.name)
            && self
                .group
                .as_ref()
                .is_none_or(|g| *g == ar.group || (g == "core" && ar.group.is_empty()))
    }
}

/// Resource types skipped by default: they are recreated by the cluster or must not be
/// restored.
pub fn default_excluded(ar: &ApiResource) -> bool {
    matches!(
        (ar.group.as_str(), ar.plural.as_str()),
        ("", "events")
            | ("events.k8s.io", "events")
            | ("", "nodes")
            | ("coordination.k8s.io", "leases")
            | ("", "endpoints")
            | ("discovery.k8s.io", "endpointslices")
            | ("storage.k8s.io", "csinodes")
            | ("storage.k8s.io", "volumeattachments")
            | ("", "componentstatuses")
            | ("networking.k8s.io", "ipaddresses")
    )
}

/// Objects skipped by default even when their type is backed up: pods, replicasets and
/// controllerrevisions owned by a controller (their owner recreates them).
pub fn owned_by_controller(ar: &ApiResource, obj: &Value) -> bool {
    let candidate = matches!(
        (ar.group.as_str(), ar.plural.as_str()),
        ("", "pods") | ("apps", "replicasets" | "controllerrevisions")
    );
    candidate
        && obj["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| refs.iter().any(|r| r["controller"].as_bool() == Some(true)))
}

pub fn group_resource(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}/{}", ar.group, ar.plural)
    }
}

/// Prepare an object for storage: set apiVersion/kind, drop managedFields.
pub fn prepare(ar: &ApiResource, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
        m.insert("kind".into(), Value::String(ar.kind.clone()));
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    obj
}

#[derive(serde::Deserialize)]
struct OwnerRef {
    #[serde(default)]
    controller: Option<bool>,
}

/// What the backup needs from an object's metadata.
#[derive(Debug, Default)]
pub struct MetaLite {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub controlled: bool,
}

/// `prepare` over the server's raw JSON: set apiVersion/kind, drop managedFields, without
/// building a JSON tree (top-level and metadata keys are re-emitted in sorted order, the values
/// byte for byte).
pub fn prepare_raw(
    ar: &ApiResource,
    item: &RawValue,
) -> Result<(Vec<u8>, MetaLite), serde_json::Error> {
    let mut top: BTreeMap<&str, &RawValue> = serde_json::from_str(item.get())?;
    let mut meta: BTreeMap<&str, &RawValue> = match top.get("metadata") {
        Some(m) => serde_json::from_str(m.get())?,
        None => BTreeMap::new(),
    };
    meta.remove("managedFields");
    let mut lite = MetaLite {
        name: meta
            .get("name")
            .map(|r| serde_json::from_str(r.get()))
            .transpose()?,
        namespace: meta
            .get("namespace")
            .map(|r| serde_json::from_str(r.get()))
            .transpose()?,
        controlled: false,
    };
    if let Some(refs) = meta.get("ownerReferences") {
        let refs: Vec<OwnerRef> = serde_json::from_str(refs.get())?;
        lite.controlled = refs.iter().any(|r| r.controller == Some(true));
    }
    let meta_raw = serde_json::value::to_raw_value(&meta)?;
    let api_version = serde_json::value::to_raw_value(&ar.api_version)?;
    let kind = serde_json::value::to_raw_value(&ar.kind)?;
    top.insert("metadata", &meta_raw);
    top.insert("apiVersion", &api_version);
    top.insert("kind", &kind);
    Ok((serde_json::to_vec(&top)?, lite))
}

/// Cluster-scoped objects that the selected namespaces use (for `--include-cluster-resources
/// auto` with a namespace filter).
#[derive(Debug, Default)]
struct References {
    persistent_volumes: BTreeSet<String>,
    storage_classes: BTreeSet<String>,
    cluster_roles: BTreeSet<String>,
    /// `plural.group` of namespaced types that had objects
    crds: BTreeSet<String>,
}

impl References {
    /// Types whose objects can reference cluster-scoped objects (or are custom resources).
    fn interesting(ar: &ApiResource) -> bool {
        matches!(
            (ar.group.as_str(), ar.plural.as_str()),
            ("", "persistentvolumeclaims") | ("rbac.authorization.k8s.io", "rolebindings")
        ) || (ar.group.contains('.') && !ar.group.ends_with(".k8s.io"))
    }

    fn note(&mut self, ar: &ApiResource, obj: &Value) {
        match (ar.group.as_str(), ar.plural.as_str()) {
            ("", "persistentvolumeclaims") => {
                if let Some(v) = obj["spec"]["volumeName"].as_str().filter(|s| !s.is_empty()) {
                    self.persistent_volumes.insert(v.to_string());
                }
                if let Some(c) = obj["spec"]["storageClassName"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                {
                    self.storage_classes.insert(c.to_string());
                }
            }
            ("rbac.authorization.k8s.io", "rolebindings") => {
                if obj["roleRef"]["kind"] == "ClusterRole" {
                    if let Some(n) = obj["roleRef"]["name"].as_str() {
                        self.cluster_roles.insert(n.to_string());
                    }
                }
            }
            _ => {}
        }
        if ar.group.contains('.') && !ar.group.ends_with(".k8s.io") {
            self.crds.insert(format!("{}.{}", ar.plural, ar.group));
        }
    }
}

struct Shared {
    /// Set once the repository is open and locked; listing starts before that (the passphrase
    /// KDF takes a moment) and waits here before its first write.
    ready: tokio::sync::watch::Receiver<Option<Arc<Packer>>>,
    refs: Mutex<References>,
    counts: Mutex<BTreeMap<String, u64>>,
    /// (type key, chunk number, tree blob)
    trees: Mutex<Vec<(String, usize, crate::repo::crypto::BlobId)>>,
    bytes_total: std::sync::atomic::AtomicU64,
    objects: std::sync::atomic::AtomicU64,
    warnings: Mutex<Vec<String>>,
}

impl Shared {
    async fn packer(&self) -> Result<Arc<Packer>, Error> {
        let mut rx = self.ready.clone();
        let r = rx
            .wait_for(|p| p.is_some())
            .await
            .map(|v| v.clone().expect("checked"));
        r.map_err(|_| Error::Aborted)
    }
}

/// Streams one resource type's objects into the repository.
struct TypeWriter {
    shared: Arc<Shared>,
    key: String,
    ar: ApiResource,
    entries: Vec<TreeEntry>,
    chunk: usize,
    count: u64,
}

impl TypeWriter {
    fn new(shared: Arc<Shared>, ar: &ApiResource) -> TypeWriter {
        TypeWriter {
            shared,
            key: group_resource(ar),
            ar: ar.clone(),
            entries: vec![],
            chunk: 0,
            count: 0,
        }
    }

    async fn add(&mut self, obj: Value, progress: &dyn Progress) -> Result<(), Error> {
        let obj = prepare(&self.ar, obj);
        let bytes = serde_json::to_vec(&obj).expect("JSON value serializes");
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = obj["metadata"]["namespace"].as_str().map(str::to_string);
        if References::interesting(&self.ar) {
            self.shared.refs.lock().await.note(&self.ar, &obj);
        }
        self.record(bytes, name, namespace, progress).await
    }

    /// Store an object given as the server's raw JSON (the fast path: no JSON tree is built).
    async fn add_raw(&mut self, item: &RawValue, progress: &dyn Progress) -> Result<(), Error> {
        if References::interesting(&self.ar) {
            let v: Value = serde_json::from_str(item.get()).map_err(|e| self.bad(e))?;
            return self.add(v, progress).await;
        }
        let (bytes, meta) = prepare_raw(&self.ar, item).map_err(|e| self.bad(e))?;
        self.record(
            bytes,
            meta.name.unwrap_or_default(),
            meta.namespace,
            progress,
        )
        .await
    }

    fn bad(&self, e: serde_json::Error) -> Error {
        Error::Usage(format!(
            "{}: the server returned an object that is not valid JSON: {e}",
            group_resource(&self.ar)
        ))
    }

    async fn record(
        &mut self,
        bytes: Vec<u8>,
        name: String,
        namespace: Option<String>,
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        let blob = self
            .shared
            .packer()
            .await?
            .add(BlobType::Object, &bytes)
            .await?;
        self.entries.push(TreeEntry {
            group: self.ar.group.clone(),
            version: self.ar.version.clone(),
            resource: self.ar.plural.clone(),
            kind: self.ar.kind.clone(),
            namespace,
            name,
            blob,
            size: bytes.len() as u64,
        });
        self.count += 1;
        self.shared
            .bytes_total
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let n = self
            .shared
            .objects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        progress.objects(n);
        if self.entries.len() >= TREE_ENTRIES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Error> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let tree = Tree {
            entries: std::mem::take(&mut self.entries),
        };
        let blob = self
            .shared
            .packer()
            .await?
            .add(
                BlobType::Tree,
                &serde_json::to_vec(&tree).expect("serializes"),
            )
            .await?;
        self.shared
            .trees
            .lock()
            .await
            .push((self.key.clone(), self.chunk, blob));
        self.chunk += 1;
        Ok(())
    }

    async fn finish(mut self) -> Result<(), Error> {
        self.flush().await?;
        if self.count > 0 {
            *self
                .shared
                .counts
                .lock()
                .await
                .entry(group_resource(&self.ar))
                .or_default() += self.count;
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct RawPage<'a> {
    #[serde(default)]
    metadata: PageMeta,
    #[serde(borrow, default)]
    items: Vec<&'a RawValue>,
}

#[derive(serde::Deserialize, Default)]
struct PageMeta {
    #[serde(rename = "continue", default)]
    continue_: Option<String>,
}

/// One LIST page as text (parsed without building JSON trees).
async fn fetch_page(
    client: &kube::Client,
    url: &str,
    lp: &ListParams,
) -> Result<String, kube::Error> {
    let req = kube::core::Request::new(url)
        .list(lp)
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(req).await
}

/// LIST one type (in one namespace, or everywhere) page by page into `writer`. The next page is
/// fetched while the current one is being stored.
async fn list_into(
    client: &kube::Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    selector: Option<&str>,
    page_size: u32,
    default_excludes: bool,
    writer: &mut TypeWriter,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    };
    let url = api.resource_url().to_string();
    let mut lp = ListParams::default().limit(page_size);
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let mut next = Some({
        let (client, url, lp) = (client.clone(), url.clone(), lp.clone());
        tokio::spawn(async move { fetch_page(&client, &url, &lp).await })
    });
    while let Some(handle) = next.take() {
        let text = match handle.await.expect("list task") {
            Ok(p) => p,
            // The type went away between discovery and this LIST (a CRD deleted meanwhile):
            // nothing of it to back up.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                tracing::debug!(resource = %group_resource(ar), "type no longer served; skipped");
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 405 => {
                writer.shared.warnings.lock().await.push(format!(
                    "{}: not backed up: {} ({})",
                    group_resource(ar),
                    s.message,
                    s.code
                ));
                return Ok(());
            }
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("list {}", group_resource(ar)),
                    source,
                });
            }
        };
        let page: RawPage = serde_json::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "list {}: the server's answer is not a list: {e}",
                group_resource(ar)
            ))
        })?;
        let more = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        if let Some(c) = &more {
            let (client, url, lp) = (client.clone(), url.clone(), lp.clone().continue_token(c));
            next = Some(tokio::spawn(
                async move { fetch_page(&client, &url, &lp).await },
            ));
        }
        let may_be_owned = default_excludes
            && matches!(
                (ar.group.as_str(), ar.plural.as_str()),
                ("", "pods") | ("apps", "replicasets" | "controllerrevisions")
            );
        for item in page.items {
            if may_be_owned {
                let v: Value = serde_json::from_str(item.get()).map_err(|e| writer.bad(e))?;
                if owned_by_controller(ar, &v) {
                    continue;
                }
            }
            writer.add_raw(item, progress).await?;
        }
    }
    Ok(())
}

/// List `types` (each in every scope: a namespace, or `None` for all / cluster-scoped), up to
/// `opts.concurrency` types at a time, each in its own task so the CPU work (serialising,
/// hashing, compressing, sealing) spreads over all cores.
async fn list_types(
    client: &kube::Client,
    shared: &Arc<Shared>,
    types: &[&ApiResource],
    scopes: &[Option<&str>],
    opts: &BackupOptions,
    progress: &DynProgress,
) -> Result<(), Error> {
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let scopes: Vec<Option<String>> = scopes.iter().map(|s| s.map(str::to_string)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for ar in types {
        let (client, shared, ar, scopes, progress, permits) = (
            client.clone(),
            shared.clone(),
            (*ar).clone(),
            scopes.clone(),
            progress.clone(),
            permits.clone(),
        );
        let (selector, page_size, default_excludes) =
            (opts.selector.clone(), opts.page_size, opts.default_excludes);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            let mut w = TypeWriter::new(shared, &ar);
            for scope in &scopes {
                list_into(
                    &client,
                    &ar,
                    scope.as_deref(),
                    selector.as_deref(),
                    page_size,
                    default_excludes,
                    &mut w,
                    progress.as_ref(),
                )
                .await?;
            }
            w.finish().await?;
            progress.type_done(&group_resource(&ar));
            Ok::<_, Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("backup task")?;
    }
    Ok(())
}

/// Every served, listable resource type at its preferred version.
pub async fn discover(client: &kube::Client) -> Result<Vec<(ApiResource, ApiCapabilities)>, Error> {
    let discovery = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .map_err(|source| Error::Discovery { source })?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::GET)
                && !ar.plural.contains('/')
            {
                out.push((ar, caps));
            }
        }
    }
    out.sort_by(|a, b| {
        (a.0.group.as_str(), a.0.plural.as_str()).cmp(&(b.0.group.as_str(), b.0.plural.as_str()))
    });
    Ok(out)
}

/// What `create` needs from the cluster before it starts: the server version and the served
/// types. Fetch it concurrently with opening the repository (the passphrase KDF takes a moment).
pub struct ClusterView {
    pub server_version: String,
    /// The `kube-system` namespace's UID (`None` when it cannot be read).
    pub uid: Option<String>,
    pub types: Vec<(ApiResource, ApiCapabilities)>,
}

pub async fn view(cluster: &Cluster) -> Result<ClusterView, Error> {
    let info = cluster
        .client
        .apiserver_version()
        .await
        .map_err(|source| crate::error::cluster_error(&cluster.server, source))?;
    let (types, uid) = tokio::join!(
        discover(&cluster.client),
        crate::cluster::cluster_uid(&cluster.client)
    );
    Ok(ClusterView {
        server_version: info.git_version,
        uid,
        types: types?,
    })
}

/// Back up. `repository` opens (or creates) the repository; it runs while discovery and the
/// first LIST pages are already under way (the passphrase KDF takes a moment), and nothing is
/// written before it has finished and the repository is locked. It yields the repository and
/// whether it was created.
pub async fn create<F>(
    repository: F,
    cluster: &Cluster,
    opts: &BackupOptions,
    progress: DynProgress,
) -> Result<BackupSummary, Error>
where
    F: std::future::Future<Output = Result<(Arc<Repository>, bool), Error>>,
{
    let start = Instant::now();
    let (tx, rx) = tokio::sync::watch::channel::<Option<Arc<Packer>>>(None);
    let opener = async move {
        let (repo, created) = repository.await?;
        let lock = Lock::acquire(repo.clone(), false, "backup").await?;
        // The index as it is now that we hold the lock (a prune may have run since the open):
        // deduplication must only ever point at blobs that are still there.
        repo.load_index_valid().await?;
        let packer = Arc::new(Packer::new(repo.clone()));
        tx.send_replace(Some(packer.clone()));
        Ok::<_, Error>((repo, created, lock, packer))
    };
    let lister = async {
        let view = view(cluster).await?;
        let id = (view.server_version.clone(), view.uid.clone());
        list(cluster, view, opts, progress, start, rx)
            .await
            .map(|shared| (shared, id))
    };
    let (opened, listed) = tokio::join!(opener, lister);
    // A cluster-side failure is reported first (it is about what was to be backed up); then a
    // repository failure.
    let (repo, created, lock, packer) = match (opened, &listed) {
        (Ok(o), _) => o,
        (Err(e), Err(Error::Aborted)) | (Err(e), Ok(_)) => return Err(e),
        (Err(_), Err(_)) => return Err(listed.err().expect("checked")),
    };
    let result = match listed {
        Ok((shared, (server_version, uid))) => {
            finish(
                repo,
                packer,
                &lock,
                shared,
                cluster,
                (&server_version, uid),
                opts,
                start,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let _ = lock.release().await;
    result.map(|mut s| {
        s.repository_created = created;
        s
    })
}

async fn list(
    cluster: &Cluster,
    view: ClusterView,
    opts: &BackupOptions,
    progress: DynProgress,
    start: Instant,
    ready: tokio::sync::watch::Receiver<Option<Arc<Packer>>>,
) -> Result<Arc<Shared>, Error> {
    let client = &cluster.client;
    let includes: Vec<ResourcePattern> = opts
        .include_resources
        .iter()
        .map(|s| ResourcePattern::parse(s))
        .collect();
    let excludes: Vec<ResourcePattern> = opts
        .exclude_resources
        .iter()
        .map(|s| ResourcePattern::parse(s))
        .collect();
    let types: Vec<(ApiResource, ApiCapabilities)> = view
        .types
        .into_iter()
        .filter(|(ar, _)| includes.is_empty() || includes.iter().any(|p| p.matches(ar)))
        .filter(|(ar, _)| !excludes.iter().any(|p| p.matches(ar)))
        .filter(|(ar, _)| {
            !opts.default_excludes
                || !default_excluded(ar)
                || includes.iter().any(|p| p.name != "*" && p.matches(ar))
        })
        .collect();
    let filtered_ns = !opts.namespaces.is_empty();
    let all_cluster = match opts.include_cluster_resources {
        ClusterResources::True => true,
        ClusterResources::False => false,
        ClusterResources::Auto => !filtered_ns,
    };
    let shared = Arc::new(Shared {
        ready,
        refs: Mutex::new(References::default()),
        counts: Mutex::new(BTreeMap::new()),
        trees: Mutex::new(Vec::new()),
        bytes_total: 0.into(),
        objects: 0.into(),
        warnings: Mutex::new(Vec::new()),
    });
    let namespaced: Vec<&ApiResource> = types
        .iter()
        .filter(|(_, c)| c.scope == Scope::Namespaced)
        .map(|(a, _)| a)
        .collect();
    let cluster_scoped: Vec<&ApiResource> = types
        .iter()
        .filter(|(_, c)| c.scope == Scope::Cluster)
        .map(|(a, _)| a)
        .collect();
    progress.types(namespaced.len() + cluster_scoped.len());

    // 1. Namespaced types (all namespaces, or each selected one).
    let scopes: Vec<Option<&str>> = if filtered_ns {
        opts.namespaces.iter().map(|n| Some(n.as_str())).collect()
    } else {
        vec![None]
    };
    tracing::info!(
        types = namespaced.len(),
        elapsed_ms = start.elapsed().as_millis() as u64,
        "listing namespaced types"
    );
    list_types(client, &shared, &namespaced, &scopes, opts, &progress).await?;
    tracing::info!(
        objects = shared.objects.load(std::sync::atomic::Ordering::Relaxed),
        elapsed_ms = start.elapsed().as_millis() as u64,
        "namespaced types done"
    );

    // 2. Cluster-scoped types: all of them, or only what the selected namespaces use.
    if all_cluster {
        list_types(client, &shared, &cluster_scoped, &[None], opts, &progress).await?;
    } else if filtered_ns {
        // The namespaces themselves are always included; in auto mode also what they use.
        let refs = std::mem::take(&mut *shared.refs.lock().await);
        let mut wanted: Vec<(&str, &str, BTreeSet<String>)> =
            vec![("", "namespaces", opts.namespaces.iter().cloned().collect())];
        if opts.include_cluster_resources == ClusterResources::Auto {
            let mut scs = refs.storage_classes.clone();
            // PVs are fetched first below; their storage classes join in.
            wanted.push(("", "persistentvolumes", refs.persistent_volumes.clone()));
            wanted.push((
                "rbac.authorization.k8s.io",
                "clusterroles",
                refs.cluster_roles.clone(),
            ));
            wanted.push((
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                refs.crds.clone(),
            ));
            for pv in &refs.persistent_volumes {
                if let Some(ar) = cluster_scoped
                    .iter()
                    .find(|a| a.group.is_empty() && a.plural == "persistentvolumes")
                {
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), *ar);
                    if let Ok(Some(o)) = api.get_opt(pv).await {
                        if let Some(c) = o.data["spec"]["storageClassName"].as_str() {
                            scs.insert(c.to_string());
                        }
                    }
                }
            }
            wanted.push(("storage.k8s.io", "storageclasses", scs));
        }
        for (group, plural, names) in wanted {
            let Some(ar) = cluster_scoped
                .iter()
                .find(|a| a.group == group && a.plural == plural)
            else {
                continue;
            };
            let mut w = TypeWriter::new(shared.clone(), ar);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), *ar);
            for name in names {
                match api.get_opt(&name).await {
                    Ok(Some(o)) => {
                        w.add(
                            serde_json::to_value(&o).expect("serializes"),
                            progress.as_ref(),
                        )
                        .await?
                    }
                    Ok(None) => {
                        if plural == "namespaces" {
                            shared
                                .warnings
                                .lock()
                                .await
                                .push(format!("namespace {name} does not exist"));
                        }
                    }
                    Err(kube::Error::Api(s)) if s.code == 403 => {
                        shared.warnings.lock().await.push(format!(
                            "{}/{name}: not backed up: {}",
                            group_resource(ar),
                            s.message
                        ));
                    }
                    Err(source) => {
                        return Err(Error::Kube {
                            action: format!("get {}/{name}", group_resource(ar)),
                            source,
                        });
                    }
                }
            }
            w.finish().await?;
        }
    }

    if shared.objects.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        let warnings = shared.warnings.lock().await.clone();
        return Err(Error::NothingBackedUp(if warnings.is_empty() {
            "no object matched the selection".into()
        } else {
            format!(
                "{} resource type(s) could not be read, e.g. {}",
                warnings.len(),
                warnings[0]
            )
        }));
    }
    tracing::info!(
        elapsed_ms = start.elapsed().as_millis() as u64,
        "cluster-scoped types done"
    );
    Ok(shared)
}

/// Upload the last pack and the index, then the snapshot: the backup becomes visible.
#[allow(clippy::too_many_arguments)]
async fn finish(
    repo: Arc<Repository>,
    packer: Arc<Packer>,
    lock: &Lock,
    shared: Arc<Shared>,
    cluster: &Cluster,
    (server_version, uid): (&str, Option<String>),
    opts: &BackupOptions,
    start: Instant,
) -> Result<BackupSummary, Error> {
    let mut stats = packer.finish_locked(Some(lock)).await?;
    let mut referenced = packer.referenced().await;
    // Volume data, after the manifests (so their listing is not held up), before the snapshot.
    let mut volumes = Vec::new();
    let mut volume_summaries = Vec::new();
    let mut volume_warnings = Vec::new();
    let mut hook_outcomes = Vec::new();
    let mut snapshot_times = Vec::new();
    let mut snapshot_spread = None;
    let mut dump_records = Vec::new();
    let client = &cluster.client;
    let progress = opts.hooks.progress;
    // The hooks of the selected pods: pre/post bracket the volume snapshots, dumps run in any
    // backup. Without volume data an unreadable pod list costs only the dumps: a warning.
    let all_hooks = if opts.hooks.enabled {
        match hooks::discover(
            client,
            &opts.namespaces,
            opts.selector.as_deref(),
            &opts.hooks.rules,
        )
        .await
        {
            Ok(h) => h,
            Err(e) if opts.volumes.is_some() => {
                return Err(Error::Runbook(format!("backup hooks: {e}")));
            }
            Err(e) => {
                volume_warnings.push(format!("dump hooks not looked for: {e}"));
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let dump_hooks = dumps::select(client, &all_hooks).await;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let vpacker = (opts.volumes.is_some() || !dump_hooks.is_empty()).then(|| {
        Arc::new(Packer::with_pack_size(
            repo.clone(),
            crate::volume::PACK_SIZE,
        ))
    });
    if let (Some(vo), Some(vpacker)) = (&opts.volumes, &vpacker) {
        let claims = crate::volume::snapshots::claims(
            &cluster.client,
            &opts.namespaces,
            opts.selector.as_deref(),
        )
        .await
        .map_err(|e| Error::Runbook(e.to_string()))?;
        let verr = |e: crate::volume::VolumeError| match e {
            crate::volume::VolumeError::Repo(r) => Error::Repo(r),
            other => Error::Runbook(other.to_string()),
        };
        // One point in time: pre hooks → every claim's snapshot asked for together → all
        // ready → post hooks → only then is the data moved out.
        let hooks: Vec<&hooks::Hook> = all_hooks
            .iter()
            .filter(|h| h.phase != hooks::Phase::Dump)
            .collect();
        let pending = opts.hooks.pending.clone();
        let post_of = |h: &hooks::Hook| {
            hooks.iter().find(|p| {
                p.phase == hooks::Phase::Post && p.namespace == h.namespace && p.pod == h.pod
            })
        };
        for h in hooks.iter().filter(|h| h.phase == hooks::Phase::Post) {
            let has_pre = hooks.iter().any(|p| {
                p.phase == hooks::Phase::Pre && p.namespace == h.namespace && p.pod == h.pod
            });
            if !has_pre {
                pending.push((*h).clone());
            }
        }
        let snapshot_phase = async {
            for h in hooks.iter().filter(|h| h.phase == hooks::Phase::Pre) {
                // Owed from the moment the pre hook starts: it may have half-run.
                if let Some(post) = post_of(h) {
                    pending.push((*post).clone());
                }
                let r = hooks::run(client, h).await;
                let failed = r.is_err() && h.on_error == hooks::OnError::Fail;
                let o = hooks::outcome(h, r);
                if vo.progress {
                    eprintln!(
                        "pre hook {}/{}: {}",
                        o.namespace,
                        o.pod,
                        if o.ok { "ok" } else { o.message.as_str() }
                    );
                }
                if !o.ok && !failed {
                    volume_warnings.push(format!(
                        "pre hook of pod {}/{} failed (on-error: Continue): {}",
                        o.namespace, o.pod, o.message
                    ));
                }
                let msg = o.message.clone();
                hook_outcomes.push(o);
                if failed {
                    return Err(Error::Runbook(format!(
                        "the pre hook of pod {}/{} failed: {msg} (on-error: Fail); no snapshot was taken",
                        h.namespace, h.pod
                    )));
                }
            }
            let mut requested = Vec::new();
            let mut live_claims = Vec::new();
            let mut snap_claims: BTreeMap<String, Vec<&k8s_openapi::api::core::v1::PersistentVolumeClaim>> =
                BTreeMap::new();
            for c in &claims {
                use crate::volume::snapshots::VolumeMode;
                let live = match vo.mode {
                    VolumeMode::Snapshot => false,
                    VolumeMode::Live => true,
                    VolumeMode::Auto => crate::volume::snapshots::snapshottable(client, c, vo)
                        .await
                        .map_err(verr)?
                        .is_err(),
                };
                if live {
                    live_claims.push(c);
                    continue;
                }
                snap_claims
                    .entry(c.metadata.namespace.clone().unwrap_or_default())
                    .or_default()
                    .push(c);
            }
            // A namespace's claims as one VolumeGroupSnapshot where the cluster and the driver
            // can; else one VolumeSnapshot each, asked for back to back.
            let mut groups = Vec::new();
            for (ns, cs) in snap_claims {
                if cs.len() >= 2 {
                    match crate::volume::snapshots::request_group(
                        client,
                        &ns,
                        &cs,
                        opts.selector.as_deref(),
                        vo,
                    )
                    .await
                    .map_err(verr)?
                    {
                        Ok((reqs, g)) => {
                            requested.extend(reqs);
                            groups.push((ns, g));
                            continue;
                        }
                        Err(why) => {
                            tracing::info!(namespace = %ns, %why, "no group snapshot; one snapshot per claim");
                        }
                    }
                }
                for c in cs {
                    match crate::volume::snapshots::request_snapshot(client, c, vo)
                        .await
                        .map_err(verr)?
                    {
                        Ok(r) => requested.push(r),
                        Err(why) => volume_warnings.push(why),
                    }
                }
            }
            // One deadline for all of them: the application is quiesced while they are made.
            let deadline = Instant::now() + vo.snapshot_timeout;
            let mut ready = Vec::new();
            for r in requested {
                let left = crate::volume::snapshots::VolumeOptions {
                    snapshot_timeout: deadline.saturating_duration_since(Instant::now()),
                    ..vo.clone()
                };
                match crate::volume::snapshots::wait_snapshot(client, &r, &left).await {
                    Ok(x) => ready.push((r, x)),
                    Err(e) => {
                        volume_warnings.push(format!(
                            "PVC {}/{} not backed up: {e}",
                            r.namespace, r.name
                        ));
                        crate::volume::snapshots::release(client, &r).await;
                    }
                }
            }
            // Claims without snapshots are read now, while the application is quiesced.
            let mut live = Vec::new();
            for c in live_claims {
                let started = Instant::now();
                let label = format!(
                    "{}/{}",
                    c.metadata.namespace.as_deref().unwrap_or_default(),
                    c.metadata.name.as_deref().unwrap_or_default()
                );
                let bar = crate::output::progress::VolumeBar::start(
                    &label,
                    vo.counters.clone(),
                    vo.progress,
                );
                let r = crate::volume::snapshots::read_live(
                    client,
                    repo.clone(),
                    vpacker.clone(),
                    c,
                    vo,
                    workers,
                )
                .await;
                drop(bar);
                match r {
                    Ok(Ok((rec, users))) => live.push((rec, users, started.elapsed())),
                    Ok(Err(why)) => volume_warnings.push(why),
                    Err(e) => {
                        // The repository failed: the snapshots asked for go too.
                        for (r, _) in &ready {
                            crate::volume::snapshots::release(client, r).await;
                        }
                        return Err(verr(e));
                    }
                }
            }
            Ok::<_, Error>((ready, live, groups))
        }
        .await;
        // Post hooks now: after the snapshots, or after whatever failed once a pre hook ran.
        for o in pending.run_all(client).await {
            if vo.progress {
                eprintln!(
                    "post hook {}/{}: {}",
                    o.namespace,
                    o.pod,
                    if o.ok { "ok" } else { o.message.as_str() }
                );
            }
            if !o.ok {
                volume_warnings.push(format!(
                    "post hook of pod {}/{} failed: {}",
                    o.namespace, o.pod, o.message
                ));
            }
            hook_outcomes.push(o);
        }
        let (ready, live, groups) = match snapshot_phase {
            Ok(r) => r,
            Err(e) => {
                for f in vo.cleanup.run(client).await {
                    tracing::warn!("could not delete {f}");
                }
                return Err(e);
            }
        };
        for (rec, users, took) in live {
            // Consistency comes from the hooks: say so when no pre hook ran on a pod using it.
            let quiesced = hook_outcomes.iter().any(|o| {
                o.phase == hooks::Phase::Pre
                    && o.ok
                    && o.namespace == rec.namespace
                    && users.contains(&o.pod)
            });
            if !quiesced {
                volume_warnings.push(format!(
                    "PVC {}/{} was read live (no snapshot) and no pre hook quiesced {}: its files may not be consistent with each other",
                    rec.namespace,
                    rec.pvc,
                    if users.is_empty() {
                        "anything (no running pod mounts it)".to_string()
                    } else {
                        format!("the pods that mount it ({})", users.join(", "))
                    }
                ));
            }
            let secs = took.as_secs_f64();
            if vo.progress {
                eprintln!(
                    "volume {}/{} (live): {} files, {} in {secs:.1}s",
                    rec.namespace,
                    rec.pvc,
                    rec.files,
                    human_bytes(rec.bytes)
                );
            }
            volume_summaries.push(VolumeSummary {
                namespace: rec.namespace.clone(),
                pvc: rec.pvc.clone(),
                files: rec.files,
                bytes: rec.bytes,
                seconds: secs,
                mode: crate::volume::snapshots::VolumeMode::Live,
                quiesced: Some(quiesced),
            });
            volumes.push(rec);
        }
        for (r, x) in &ready {
            snapshot_times.push(SnapshotTime {
                namespace: r.namespace.clone(),
                pvc: r.name.clone(),
                snapshot: r.snapshot.clone(),
                time: x.time.clone(),
                group: r.group.clone(),
            });
        }
        let times: Vec<jiff::Timestamp> = ready
            .iter()
            .filter_map(|(_, x)| x.time.as_deref()?.parse().ok())
            .collect();
        if let (Some(a), Some(b)) = (times.iter().min(), times.iter().max()) {
            snapshot_spread = Some(b.duration_since(*a).as_secs_f64());
        }
        for (r, x) in &ready {
            let started = Instant::now();
            let label = format!("{}/{}", r.namespace, r.name);
            let bar =
                crate::output::progress::VolumeBar::start(&label, vo.counters.clone(), vo.progress);
            let done = crate::volume::snapshots::move_claim(
                client,
                repo.clone(),
                vpacker.clone(),
                r,
                x,
                vo,
                workers,
            )
            .await
            .map_err(verr);
            drop(bar);
            let done = match done {
                Ok(d) => d,
                Err(e) => {
                    // The repository failed: the other claims' snapshots go too.
                    for f in vo.cleanup.run(client).await {
                        tracing::warn!("could not delete {f}");
                    }
                    return Err(e);
                }
            };
            match done {
                Ok(r) => {
                    let secs = started.elapsed().as_secs_f64();
                    if vo.progress {
                        eprintln!(
                            "volume {label}: {} files, {} in {secs:.1}s",
                            r.files,
                            human_bytes(r.bytes)
                        );
                    }
                    volume_summaries.push(VolumeSummary {
                        namespace: r.namespace.clone(),
                        pvc: r.pvc.clone(),
                        files: r.files,
                        bytes: r.bytes,
                        seconds: secs,
                        mode: crate::volume::snapshots::VolumeMode::Snapshot,
                        quiesced: None,
                    });
                    volumes.push(r)
                }
                Err(why) => volume_warnings.push(why),
            }
        }
        // Every member's data is in: the group snapshots go (with their members).
        if !vo.keep_snapshots {
            for (ns, g) in &groups {
                if let Err(e) = crate::volume::snapshots::delete_temp(
                    client,
                    crate::volume::snapshots::Temp::GroupSnapshot,
                    ns,
                    g,
                )
                .await
                {
                    volume_warnings.push(format!(
                        "VolumeGroupSnapshot {ns}/{g} could not be deleted: {e}"
                    ));
                }
            }
        }
    }
    // Dumps: each command's stdout straight into the repository.
    if let Some(vpacker) = &vpacker {
        for (h, owner) in &dump_hooks {
            let label = format!(
                "{}/{}:{}",
                h.namespace,
                h.pod,
                h.dump.as_ref().map(|d| d.name.as_str()).unwrap_or_default()
            );
            let r = dumps::run(
                client,
                repo.clone(),
                vpacker.clone(),
                h,
                owner.clone(),
                workers,
            )
            .await;
            let (ok, message) = match r {
                Ok(d) => {
                    let m = format!("{} bytes in {:.1}s", d.bytes, d.seconds);
                    dump_records.push(d);
                    (true, m)
                }
                Err(dumps::DumpError::Volume(e)) => {
                    if let Some(vo) = &opts.volumes {
                        for f in vo.cleanup.run(client).await {
                            tracing::warn!("could not delete {f}");
                        }
                    }
                    return Err(match e {
                        crate::volume::VolumeError::Repo(r) => Error::Repo(r),
                        other => Error::Runbook(other.to_string()),
                    });
                }
                Err(dumps::DumpError::Failed(why)) => (false, why),
            };
            if progress {
                eprintln!(
                    "dump {label}: {}",
                    if ok { "ok, " } else { "" }.to_string() + &message
                );
            }
            hook_outcomes.push(hooks::outcome(
                h,
                if ok {
                    Ok(message.clone())
                } else {
                    Err(message.clone())
                },
            ));
            if !ok {
                if h.on_error == hooks::OnError::Fail {
                    if let Some(vo) = &opts.volumes {
                        for f in vo.cleanup.run(client).await {
                            tracing::warn!("could not delete {f}");
                        }
                    }
                    return Err(Error::Runbook(format!(
                        "the dump {label} failed: {message} (on-error: Fail); no backup was written"
                    )));
                }
                volume_warnings.push(format!(
                    "dump {label} failed (on-error: Continue); it is not in this backup: {message}"
                ));
            }
        }
        let vs = vpacker.finish_locked(Some(lock)).await?;
        stats.pack_bytes += vs.pack_bytes;
        referenced.extend(vpacker.referenced().await);
    }
    tracing::info!(
        packs = stats.packs,
        new_blobs = stats.blobs_added,
        deduplicated = stats.blobs_deduplicated,
        elapsed_ms = start.elapsed().as_millis() as u64,
        "packs and index written"
    );
    let mut trees = std::mem::take(&mut *shared.trees.lock().await);
    trees.sort();
    let id = new_id();
    let counts = std::mem::take(&mut *shared.counts.lock().await);
    let mut warnings = std::mem::take(&mut *shared.warnings.lock().await);
    warnings.extend(volume_warnings);
    let objects = shared.objects.load(std::sync::atomic::Ordering::Relaxed);
    let bytes_total = shared
        .bytes_total
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut snap = Snapshot {
        version: 1,
        time: crate::repo::now(),
        hostname: crate::repo::hostname(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: ClusterInfo {
            server: cluster.server.clone(),
            context: opts.context.clone(),
            server_version: server_version.to_string(),
            uid,
        },
        selectors: Selectors {
            namespaces: opts.namespaces.clone(),
            label_selector: opts.selector.clone(),
            include_resources: opts.include_resources.clone(),
            exclude_resources: opts.exclude_resources.clone(),
            include_cluster_resources: format!("{:?}", opts.include_cluster_resources)
                .to_lowercase(),
            default_excludes: opts.default_excludes,
        },
        tags: opts.tags.clone(),
        resources: counts.clone(),
        objects,
        bytes_total,
        bytes_added: stats.pack_bytes,
        duration_seconds: 0.0,
        warnings: warnings.clone(),
        trees: trees.into_iter().map(|(_, _, b)| b).collect(),
        volumes,
        dumps: dump_records.clone(),
    };
    snap.duration_seconds = start.elapsed().as_secs_f64();
    snap.bytes_added += snap_size(&snap);
    // Last checks before the backup becomes visible: every blob it references is indexed and
    // its pack exists (as the store says now), and our lock is still ours.
    referenced.extend(snap.trees.iter().copied());
    for (_, trees) in snap.data_trees() {
        referenced.extend(trees.iter().copied());
    }
    repo.check_references(referenced).await?;
    crate::faults::point("backup.before-snapshot");
    lock.ensure_held().await?;
    repo.write_json(&layout::snapshot(&id), &snap).await?;
    crate::faults::point("backup.after-snapshot");
    Ok(BackupSummary {
        id,
        repository: repo.location(),
        objects,
        resources: counts,
        bytes_added: snap.bytes_added,
        bytes_total,
        duration_seconds: snap.duration_seconds,
        warnings,
        repository_created: false,
        volumes: volume_summaries,
        snapshots: snapshot_times,
        snapshot_spread_seconds: snapshot_spread,
        hooks: hook_outcomes,
    })
}

/// Sealed size of the snapshot file itself (counted in bytesAdded).
fn snap_size(snap: &Snapshot) -> u64 {
    (crate::repo::compress_json(snap).len() + crate::repo::crypto::OVERHEAD) as u64
}

impl crate::output::Render for BackupSummary {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(w, "backup {} created in {}", &self.id[..8], self.repository)?;
        writeln!(
            w,
            "{} objects of {} resource types, {} total, {} added, in {:.1}s",
            self.objects,
            self.resources.len(),
            human_bytes(self.bytes_total),
            human_bytes(self.bytes_added),
            self.duration_seconds
        )?;
        for warn in &self.warnings {
            writeln!(w, "warning: {warn}")?;
        }
        Ok(())
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    #[test]
    fn resource_patterns() {
        let d = ar("apps", "v1", "Deployment", "deployments");
        assert!(ResourcePattern::parse("deployments").matches(&d));
        assert!(ResourcePattern::parse("deployments.apps").matches(&d));
        assert!(ResourcePattern::parse("Deployment").matches(&d));
        assert!(!ResourcePattern::parse("deployments.extensions").matches(&d));
        assert!(ResourcePattern::parse("*").matches(&d));
        let cm = ar("", "v1", "ConfigMap", "configmaps");
        assert!(ResourcePattern::parse("configmaps.core").matches(&cm));
        assert!(!ResourcePattern::parse("secrets").matches(&cm));
    }

    #[test]
    fn default_excludes_and_owned_objects() {
        assert!(default_excluded(&ar("", "v1", "Event", "events")));
        assert!(default_excluded(&ar(
            "events.k8s.io",
            "v1",
            "Event",
            "events"
        )));
        assert!(default_excluded(&ar(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases"
        )));
        assert!(!default_excluded(&ar("", "v1", "ConfigMap", "configmaps")));
        let pod = ar("", "v1", "Pod", "pods");
        let owned = serde_json::json!({"metadata": {"ownerReferences": [{"controller": true, "kind": "ReplicaSet"}]}});
        let bare = serde_json::json!({"metadata": {"name": "p"}});
        assert!(owned_by_controller(&pod, &owned));
        assert!(!owned_by_controller(&pod, &bare));
        assert!(
            !owned_by_controller(&ar("batch", "v1", "Job", "jobs"), &owned),
            "only pods and replicasets"
        );
    }

    #[test]
    fn prepare_sets_type_and_drops_managed_fields() {
        let d = ar("apps", "v1", "Deployment", "deployments");
        let o = prepare(
            &d,
            serde_json::json!({"metadata": {"name": "x", "managedFields": [{}]}, "spec": {}}),
        );
        assert_eq!(o["apiVersion"], "apps/v1");
        assert_eq!(o["kind"], "Deployment");
        assert!(o["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn raw_and_tree_preparation_store_the_same_object() {
        let d = ar("apps", "v1", "Deployment", "deployments");
        let text = r#"{"metadata":{"name":"x","namespace":"ns","managedFields":[{"manager":"m"}],"ownerReferences":[{"controller":true,"uid":"u"}],"labels":{"b":"2","a":"1"}},"spec":{"replicas":0,"z":{"y":1,"x":2}},"status":{}}"#;
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        let (bytes, meta) = prepare_raw(&d, &raw).unwrap();
        let via_raw: Value = serde_json::from_slice(&bytes).unwrap();
        let via_tree = prepare(&d, serde_json::from_str(text).unwrap());
        assert_eq!(via_raw, via_tree);
        assert_eq!(
            (
                meta.name.as_deref(),
                meta.namespace.as_deref(),
                meta.controlled
            ),
            (Some("x"), Some("ns"), true)
        );
        assert!(!String::from_utf8(bytes).unwrap().contains("managedFields"));
    }

    #[test]
    fn references_for_auto_cluster_resources() {
        let mut r = References::default();
        r.note(
            &ar("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
            &serde_json::json!({"spec": {"volumeName": "pv-1", "storageClassName": "fast"}}),
        );
        r.note(
            &ar(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
            ),
            &serde_json::json!({"roleRef": {"kind": "ClusterRole", "name": "view"}}),
        );
        r.note(
            &ar(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
            ),
            &serde_json::json!({"roleRef": {"kind": "Role", "name": "local"}}),
        );
        r.note(
            &ar("stable.example.com", "v1", "Widget", "widgets"),
            &serde_json::json!({}),
        );
        assert!(r.persistent_volumes.contains("pv-1"));
        assert!(r.storage_classes.contains("fast"));
        assert_eq!(r.cluster_roles.iter().collect::<Vec<_>>(), ["view"]);
        assert!(r.crds.contains("widgets.stable.example.com"));
    }
}
