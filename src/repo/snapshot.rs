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

impl Repository {
    /// All snapshots, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<(String, Snapshot)>, RepoError> {
        use futures::{StreamExt, TryStreamExt};
        let files = self.list(layout::SNAPSHOTS).await?;
        let mut all: Vec<(String, Snapshot)> = futures::stream::iter(files)
            .map(|f| async move {
                let id = layout::id_of(layout::SNAPSHOTS, &f.key)
                    .unwrap_or_default()
                    .to_string();
                let s: Snapshot = self.read_json(&f.key, "snapshot").await?;
                Ok::<_, RepoError>((id, s))
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(all)
    }

    /// `latest`, a full id, or a unique prefix of one.
    pub async fn find_snapshot(&self, spec: &str) -> Result<(String, Snapshot), RepoError> {
        let all = self.snapshots().await?;
        if spec == "latest" {
            return all
                .into_iter()
                .last()
                .ok_or_else(|| RepoError::NoSuchSnapshot(spec.into()));
        }
        let mut m: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.starts_with(spec))
            .collect();
        match m.len() {
            0 => Err(RepoError::NoSuchSnapshot(spec.into())),
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
