//! Snapshots (one per backup) and the trees of object references they point to.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::crypto::BlobId;
use super::{RepoError, Repository};
use crate::store::layout;

/// What was selected for the backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selectors {
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
    pub include_resources: Vec<String>,
    pub exclude_resources: Vec<String>,
    pub include_cluster_resources: String,
    pub default_excludes: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterInfo {
    pub server: String,
    pub context: Option<String>,
    pub server_version: String,
    /// The UID of the cluster's `kube-system` namespace: which cluster this is, whatever
    /// address it was reached at (a CronJob in the cluster sees `kubernetes.default.svc`, a
    /// laptop a load balancer, a tunnel `127.0.0.1`). Absent in older backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Which cluster a backup must come from: the same `kube-system` UID when both sides know it,
/// else the same API server address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterRef {
    pub server: String,
    pub uid: Option<String>,
}

impl ClusterRef {
    pub fn matches(&self, c: &ClusterInfo) -> bool {
        match (&self.uid, &c.uid) {
            (Some(a), Some(b)) => a == b,
            _ => self.server == c.server,
        }
    }
}

/// A snapshot manifest: written last, so a backup is visible only when complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Snapshot {
    pub version: u32,
    pub time: String,
    pub hostname: String,
    pub tool_version: String,
    pub cluster: ClusterInfo,
    pub selectors: Selectors,
    pub tags: BTreeMap<String, String>,
    /// Objects per `group/resource` (core group: `resource`).
    pub resources: BTreeMap<String, u64>,
    pub objects: u64,
    /// Plaintext bytes of all objects in this backup.
    pub bytes_total: u64,
    /// Bytes this backup added to the repository (packs and index).
    pub bytes_added: u64,
    pub duration_seconds: f64,
    pub warnings: Vec<String>,
    /// Tree blobs listing every object (in backup order).
    pub trees: Vec<BlobId>,
    /// Volume data (`backup create --snapshot-volumes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeRecord>,
    /// Application dumps (`dump` hooks: a command's stdout, e.g. `pg_dump -Fc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dumps: Vec<DumpRecord>,
}

impl Snapshot {
    /// Every set of file trees this backup holds data in (volumes and dumps), each with a
    /// label naming it: what prune keeps, check reads and repair inspects.
    pub fn data_trees(&self) -> Vec<(String, &[BlobId])> {
        let mut out: Vec<(String, &[BlobId])> = self
            .volumes
            .iter()
            .map(|v| {
                (
                    format!("volume {}/{}", v.namespace, v.pvc),
                    v.trees.as_slice(),
                )
            })
            .collect();
        out.extend(self.dumps.iter().map(|d| (d.label(), d.trees.as_slice())));
        out
    }
}

/// One dump hook's output in a backup: a single file (chunked, deduplicated, encrypted) of
/// `bytes` bytes, its tree in `trees`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DumpRecord {
    pub namespace: String,
    /// The pod the command ran in.
    pub pod: String,
    pub container: Option<String>,
    /// The dump's name (unique per pod), e.g. `db.pgdump`.
    pub name: String,
    /// The pod's controller at backup time (`StatefulSet/db`), used to find the restored pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The command whose stdout this is.
    pub command: Vec<String>,
    /// The command a restore feeds the dump to on stdin (`pg_restore …`), if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_command: Option<Vec<String>>,
    pub bytes: u64,
    /// BLAKE3 of the content, hex.
    pub hash: String,
    pub time: String,
    pub seconds: f64,
    /// One tree blob holding the dump as one file entry.
    pub trees: Vec<BlobId>,
}

impl DumpRecord {
    pub fn label(&self) -> String {
        format!("dump {}/{}:{}", self.namespace, self.pod, self.name)
    }
}

/// One PersistentVolumeClaim's data in a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeRecord {
    pub namespace: String,
    pub pvc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Requested size of the claim (a quantity, e.g. "10Gi").
    pub capacity: String,
    pub driver: String,
    pub snapshot_class: String,
    /// The VolumeSnapshot the data was read from, and whether it was kept in the cluster.
    pub snapshot: String,
    pub snapshot_kept: bool,
    pub files: u64,
    pub bytes: u64,
    /// Tree blobs of the volume's files (`volume::TreeBlob`).
    pub trees: Vec<BlobId>,
    /// `live`: read from the claim itself, not a snapshot (`--volume-mode live|auto`); absent:
    /// from a VolumeSnapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// One object reference in a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TreeEntry {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub blob: BlobId,
    pub size: u64,
}

impl TreeEntry {
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.group, self.resource)
        }
    }
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// kind/namespace/name (or kind/name), for messages.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{}/{}", self.kind, ns, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    pub entries: Vec<TreeEntry>,
}

pub const TREE_ENTRIES: usize = 1000;

/// Which backups `latest` may mean: same cluster (when given) and a selection that contains
/// the requested namespaces (a backup of all namespaces contains every namespace).
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub cluster: Option<ClusterRef>,
    pub namespaces: Vec<String>,
    pub tags: Vec<(String, String)>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        if let Some(c) = &self.cluster {
            if !c.matches(&s.cluster) {
                return false;
            }
        }
        let all = s.selectors.namespaces.is_empty();
        self.namespaces
            .iter()
            .all(|n| all || s.selectors.namespaces.contains(n))
            && self.tags.iter().all(|(k, v)| s.tags.get(k) == Some(v))
    }
}

impl Repository {
    /// All readable snapshots, oldest first. Damaged snapshot files are skipped (and logged):
    /// one damaged file does not hide the other backups. See [`Repository::snapshots_checked`].
    pub async fn snapshots(&self) -> Result<Vec<(String, Snapshot)>, RepoError> {
        Ok(self.snapshots_checked().await?.0)
    }

    /// Readable snapshots (oldest first) and the snapshot files that could not be read.
    pub async fn snapshots_checked(
        &self,
    ) -> Result<(Vec<(String, Snapshot)>, Vec<super::DamagedFile>), RepoError> {
        use futures::{StreamExt, TryStreamExt};
        let files = self.list(layout::SNAPSHOTS).await?;
        let loaded: Vec<(String, String, Result<Snapshot, RepoError>)> =
            futures::stream::iter(files)
                .map(|f| async move {
                    let id = layout::id_of(layout::SNAPSHOTS, &f.key)
                        .unwrap_or_default()
                        .to_string();
                    let s = self.read_json::<Snapshot>(&f.key, "snapshot").await;
                    if let Err(RepoError::Store { source, .. }) = &s {
                        if !source.is_not_found() {
                            return Err(s.expect_err("checked"));
                        }
                    }
                    Ok::<_, RepoError>((id, f.key, s))
                })
                .buffer_unordered(8)
                .try_collect()
                .await?;
        let mut all = Vec::new();
        let mut damaged = Vec::new();
        for (id, key, s) in loaded {
            match s {
                Ok(s) => all.push((id, s)),
                Err(RepoError::Store { .. }) => {} // deleted meanwhile
                Err(e) => {
                    tracing::warn!(%key, error = %e, "damaged snapshot file skipped");
                    damaged.push(super::DamagedFile {
                        key,
                        message: e.to_string(),
                    })
                }
            }
        }
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((all, damaged))
    }

    /// `latest`, a full id, or a unique prefix of one.
    pub async fn find_snapshot(&self, spec: &str) -> Result<(String, Snapshot), RepoError> {
        self.find_snapshot_in(spec, &SnapshotFilter::default())
            .await
    }

    /// Like [`Repository::find_snapshot`], with `latest` resolved among the backups `filter`
    /// matches (an id is taken as given).
    pub async fn find_snapshot_in(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<(String, Snapshot), RepoError> {
        let (all, damaged) = self.snapshots_checked().await?;
        if spec == "latest" {
            if !damaged.is_empty() {
                tracing::warn!(
                    damaged = damaged.len(),
                    "some snapshot files are damaged; `latest` is the newest readable backup"
                );
            }
            return all
                .into_iter()
                .filter(|(_, s)| filter.matches(s))
                .next_back()
                .ok_or_else(|| {
                    RepoError::NoSuchSnapshot(if filter.namespaces.is_empty() {
                        spec.into()
                    } else {
                        format!(
                            "latest (containing namespace {})",
                            filter.namespaces.join(", ")
                        )
                    })
                });
        }
        let mut m: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.starts_with(spec))
            .collect();
        match m.len() {
            0 => match damaged.iter().find(|d| {
                layout::id_of(layout::SNAPSHOTS, &d.key).is_some_and(|i| i.starts_with(spec))
            }) {
                Some(d) => Err(RepoError::Corrupt {
                    what: "snapshot".into(),
                    key: d.key.clone(),
                }),
                None => Err(RepoError::NoSuchSnapshot(spec.into())),
            },
            1 => Ok(m.remove(0)),
            _ => Err(RepoError::AmbiguousSnapshot(spec.into())),
        }
    }

    /// Every object entry of a snapshot, in order.
    pub async fn snapshot_entries(&self, snap: &Snapshot) -> Result<Vec<TreeEntry>, RepoError> {
        let mut out = Vec::new();
        for t in &snap.trees {
            let tree: Tree = self.read_blob_json(t).await?;
            out.extend(tree.entries);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_matched_by_its_kube_system_uid_whatever_its_address() {
        let info = |server: &str, uid: Option<&str>| ClusterInfo {
            server: server.into(),
            context: None,
            server_version: "v1.34.4".into(),
            uid: uid.map(Into::into),
        };
        let inside = ClusterRef {
            server: "https://10.0.0.1:443".into(),
            uid: Some("u-1".into()),
        };
        // A backup taken from a laptop through a load balancer, drilled from a CronJob.
        assert!(inside.matches(&info("https://k8s.example:6443", Some("u-1"))));
        // Another cluster behind the same address (a tunnel, a proxy) is not this one.
        assert!(!inside.matches(&info("https://10.0.0.1:443", Some("u-2"))));
        // Older backups (no UID) and a reader that cannot see kube-system: by address.
        assert!(inside.matches(&info("https://10.0.0.1:443", None)));
        assert!(!inside.matches(&info("https://k8s.example:6443", None)));
        let blind = ClusterRef {
            server: "https://k8s.example:6443".into(),
            uid: None,
        };
        assert!(blind.matches(&info("https://k8s.example:6443", Some("u-1"))));
    }
}
