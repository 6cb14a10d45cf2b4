//! Backup maintenance: list, describe, verify, delete, prune (retention), export.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::error::Error;
use crate::repo::crypto::BlobId;
use crate::repo::lock::Lock;
use crate::repo::snapshot::{Snapshot, TreeEntry};
use crate::repo::{IndexFile, IndexPack, PackId, Repository, sha2_256};
use crate::store::layout;

use super::human_bytes;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    pub id: String,
    pub time: String,
    pub cluster: String,
    pub server_version: String,
    pub namespaces: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub objects: u64,
    pub bytes_total: u64,
    pub bytes_added: u64,
    /// The latest drill of this backup: `passed` or `failed` (absent: never drilled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill_time: Option<String>,
}

impl BackupInfo {
    fn from(id: &str, s: &Snapshot) -> BackupInfo {
        BackupInfo {
            id: id.to_string(),
            time: s.time.clone(),
            cluster: s.cluster.server.clone(),
            server_version: s.cluster.server_version.clone(),
            namespaces: s.selectors.namespaces.clone(),
            tags: s.tags.clone(),
            objects: s.objects,
            bytes_total: s.bytes_total,
            bytes_added: s.bytes_added,
            drill: None,
            drill_time: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupList(pub Vec<BackupInfo>);

pub async fn list(repo: &Repository, tags: &[(String, String)]) -> Result<BackupList, Error> {
    let all = repo.snapshots().await?;
    let verdicts = crate::drill::verdicts(repo).await.unwrap_or_default();
    Ok(BackupList(
        all.iter()
            .filter(|(_, s)| tags.iter().all(|(k, v)| s.tags.get(k) == Some(v)))
            .map(|(id, s)| {
                let mut b = BackupInfo::from(id, s);
                // Verdicts are sorted oldest first: the last one for this backup wins.
                if let Some(v) = verdicts.iter().rev().find(|v| &v.backup == id) {
                    b.drill = Some(if v.ok { "passed" } else { "failed" }.into());
                    b.drill_time = Some(v.time.clone());
                }
                b
            })
            .collect(),
    ))
}

fn short_time(t: &str) -> String {
    t.parse::<jiff::Timestamp>()
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| t.to_string())
}

impl crate::output::Render for BackupList {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        if self.0.is_empty() {
            return writeln!(w, "no backups");
        }
        writeln!(
            w,
            "{:<10} {:<20} {:>8} {:>10} {:>10}  {:<7} {:<20} TAGS",
            "ID", "TIME (UTC)", "OBJECTS", "SIZE", "ADDED", "DRILL", "NAMESPACES"
        )?;
        for b in &self.0 {
            let ns = if b.namespaces.is_empty() {
                "(all)".to_string()
            } else {
                b.namespaces.join(",")
            };
            let tags: Vec<String> = b.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(
                w,
                "{:<10} {:<20} {:>8} {:>10} {:>10}  {:<7} {:<20} {}",
                &b.id[..8],
                short_time(&b.time),
                b.objects,
                human_bytes(b.bytes_total),
                human_bytes(b.bytes_added),
                b.drill.as_deref().unwrap_or("-"),
                ns,
                tags.join(",")
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupDetail {
    pub id: String,
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

pub async fn describe(repo: &Repository, spec: &str) -> Result<BackupDetail, Error> {
    let (id, snapshot) = repo.find_snapshot(spec).await?;
    Ok(BackupDetail { id, snapshot })
}

impl crate::output::Render for BackupDetail {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let s = &self.snapshot;
        writeln!(w, "Backup:      {}", self.id)?;
        writeln!(w, "Time:        {}", s.time)?;
        writeln!(
            w,
            "Cluster:     {} ({}){}",
            s.cluster.server,
            s.cluster.server_version,
            s.cluster
                .context
                .as_ref()
                .map(|c| format!(", context {c}"))
                .unwrap_or_default()
        )?;
        writeln!(
            w,
            "Host:        {} (lifeboat {})",
            s.hostname, s.tool_version
        )?;
        let ns = if s.selectors.namespaces.is_empty() {
            "(all)".to_string()
        } else {
            s.selectors.namespaces.join(", ")
        };
        writeln!(w, "Namespaces:  {ns}")?;
        if let Some(l) = &s.selectors.label_selector {
            writeln!(w, "Selector:    {l}")?;
        }
        writeln!(
            w,
            "Cluster-scoped: {}",
            s.selectors.include_cluster_resources
        )?;
        if !s.tags.is_empty() {
            let t: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(w, "Tags:        {}", t.join(", "))?;
        }
        writeln!(
            w,
            "Objects:     {} ({}; {} added to the repository)",
            s.objects,
            human_bytes(s.bytes_total),
            human_bytes(s.bytes_added)
        )?;
        writeln!(w, "Duration:    {:.1}s", s.duration_seconds)?;
        writeln!(w, "\nRESOURCE{:<40} COUNT", "")?;
        for (r, n) in &s.resources {
            writeln!(w, "{r:<48} {n}")?;
        }
        if !s.volumes.is_empty() {
            writeln!(w, "\nVOLUME{:<42} FILES {:>10}", "", "BYTES")?;
            for v in &s.volumes {
                let name = format!("{}/{}", v.namespace, v.pvc);
                writeln!(w, "{name:<48} {:>5} {:>10}", v.files, human_bytes(v.bytes))?;
            }
        }
        if !s.dumps.is_empty() {
            writeln!(w, "\nDUMP{:<44} {:>10}  RESTORE COMMAND", "", "BYTES")?;
            for d in &s.dumps {
                let name = format!("{}/{}:{}", d.namespace, d.pod, d.name);
                let rc = d
                    .restore_command
                    .as_ref()
                    .map(|c| c.join(" "))
                    .unwrap_or_else(|| "-".into());
                writeln!(w, "{name:<48} {:>10}  {rc}", human_bytes(d.bytes))?;
            }
        }
        for warn in &s.warnings {
            writeln!(w, "warning: {warn}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Damage {
    /// kind/namespace/name of the object, or what else is damaged.
    pub object: String,
    pub blob: Option<String>,
    pub pack: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub ok: bool,
    pub backup: String,
    pub objects: usize,
    /// Files of the backup's volumes whose chunks were checked.
    pub volume_files: usize,
    pub packs_read: usize,
    pub read_data: bool,
    pub damaged: Vec<Damage>,
}

/// Verify a backup. Structure: the snapshot and its trees decode, every object blob is indexed
/// and its pack exists and is large enough. With `read_data`: every pack is read whole, its
/// SHA-256 must equal its name, and every object blob is opened, decompressed and re-hashed.
pub async fn verify(repo: &Repository, spec: &str, read_data: bool) -> Result<VerifyReport, Error> {
    let (id, snap) = repo.find_snapshot(spec).await?;
    let mut damaged = Vec::new();
    let index = repo.index_snapshot().await;
    let packs: HashMap<String, u64> = repo
        .list(layout::DATA)
        .await?
        .into_iter()
        .filter_map(|o| Some((layout::id_of(layout::DATA, &o.key)?.to_string(), o.size)))
        .collect();
    let mut entries: Vec<TreeEntry> = Vec::new();
    for t in &snap.trees {
        match repo.read_blob_json::<crate::repo::snapshot::Tree>(t).await {
            Ok(tree) => entries.extend(tree.entries),
            Err(e) => damaged.push(Damage {
                object: "(tree of object references)".into(),
                blob: Some(t.to_hex()),
                pack: index.get(t).map(|l| l.pack.to_hex()),
                message: crate::error::display_chain(&e),
            }),
        }
    }
    // Structure.
    let mut by_pack: BTreeMap<PackId, Vec<(BlobId, Option<String>)>> = BTreeMap::new();
    for t in &snap.trees {
        if let Some(l) = index.get(t) {
            by_pack.entry(l.pack).or_default().push((*t, None));
        }
    }
    // Volume data: each chunk is checked like an object, named by its volume and file.
    let mut volume_blobs: Vec<(BlobId, String)> = Vec::new();
    let mut volume_files = 0;
    for (label, trees) in snap.data_trees() {
        for t in trees {
            volume_blobs.push((*t, format!("{label}: (file tree)")));
        }
        match crate::volume::load_tree(repo, trees).await {
            Ok(files) => {
                for f in files {
                    volume_files += 1;
                    for c in &f.chunks {
                        volume_blobs.push((*c, format!("{label}: file {}", f.path)));
                    }
                }
            }
            Err(e) => damaged.push(Damage {
                object: format!("{label}: (file tree)"),
                blob: None,
                pack: None,
                message: crate::error::display_chain(&e),
            }),
        }
    }
    for (blob, label) in volume_blobs {
        match index.get(&blob) {
            None => damaged.push(Damage {
                object: label,
                blob: Some(blob.to_hex()),
                pack: None,
                message: "blob is not in the index".into(),
            }),
            Some(l) => {
                let pack = l.pack.to_hex();
                match packs.get(&pack) {
                    None => damaged.push(Damage {
                        object: label,
                        blob: Some(blob.to_hex()),
                        pack: Some(pack),
                        message: "pack file is missing".into(),
                    }),
                    Some(&size) if (l.offset as u64 + l.length as u64) > size => {
                        damaged.push(Damage {
                            object: label,
                            blob: Some(blob.to_hex()),
                            pack: Some(pack),
                            message: "pack file is truncated".into(),
                        })
                    }
                    Some(_) => by_pack.entry(l.pack).or_default().push((blob, Some(label))),
                }
            }
        }
    }
    for e in &entries {
        match index.get(&e.blob) {
            None => damaged.push(Damage {
                object: e.display(),
                blob: Some(e.blob.to_hex()),
                pack: None,
                message: "blob is not in the index".into(),
            }),
            Some(l) => {
                let pack = l.pack.to_hex();
                match packs.get(&pack) {
                    None => damaged.push(Damage {
                        object: e.display(),
                        blob: Some(e.blob.to_hex()),
                        pack: Some(pack),
                        message: "pack file is missing".into(),
                    }),
                    Some(&size) if (l.offset as u64 + l.length as u64) > size => {
                        damaged.push(Damage {
                            object: e.display(),
                            blob: Some(e.blob.to_hex()),
                            pack: Some(pack),
                            message: "pack file is truncated".into(),
                        })
                    }
                    Some(_) => by_pack
                        .entry(l.pack)
                        .or_default()
                        .push((e.blob, Some(e.display()))),
                }
            }
        }
    }
    let mut packs_read = 0;
    if read_data {
        for (pack, blobs) in &by_pack {
            let key = layout::pack(&pack.to_hex());
            let bytes = match repo.store().get(&key).await {
                Ok(b) => b,
                Err(e) => {
                    damaged.push(Damage {
                        object: format!("pack {}", pack.to_hex()),
                        blob: None,
                        pack: Some(pack.to_hex()),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            packs_read += 1;
            let mut any_blob_damaged = false;
            for (blob, object) in blobs {
                let l = index[blob];
                let range = l.offset as usize..(l.offset as usize + l.length as usize);
                let result = bytes
                    .get(range)
                    .ok_or(())
                    .and_then(|sealed| repo.decode_blob(blob, &l, sealed, &key).map_err(|_| ()));
                if result.is_err() {
                    any_blob_damaged = true;
                    damaged.push(Damage {
                        object: object
                            .clone()
                            .unwrap_or_else(|| "(tree of object references)".into()),
                        blob: Some(blob.to_hex()),
                        pack: Some(pack.to_hex()),
                        message: "content does not match its hash (corrupt or tampered)".into(),
                    });
                }
            }
            if sha2_256(&bytes) != pack.0 && !any_blob_damaged {
                damaged.push(Damage {
                    object: format!("pack {}", pack.to_hex()),
                    blob: None,
                    pack: Some(pack.to_hex()),
                    message: "pack content does not match its name: damage outside this backup's objects (pack header or other backups' blobs)".into(),
                });
            }
        }
    }
    Ok(VerifyReport {
        ok: damaged.is_empty(),
        backup: id,
        volume_files,
        objects: entries.len(),
        packs_read,
        read_data,
        damaged,
    })
}

impl crate::output::Render for VerifyReport {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        for d in &self.damaged {
            writeln!(w, "DAMAGED {}: {}", d.object, d.message)?;
        }
        writeln!(
            w,
            "backup {}: {} ({} objects checked{})",
            &self.backup[..8],
            if self.ok { "ok" } else { "DAMAGED" },
            self.objects,
            if self.read_data {
                format!(", {} packs read and re-hashed", self.packs_read)
            } else {
                ", structure only; --read-data re-hashes all data".into()
            }
        )
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteReport {
    pub deleted: Vec<String>,
}

pub async fn delete(repo: Arc<Repository>, specs: &[String]) -> Result<DeleteReport, Error> {
    let mut ids = Vec::new();
    for s in specs {
        ids.push(repo.find_snapshot(s).await?.0);
    }
    let lock = Lock::acquire(repo.clone(), true, "delete").await?;
    let mut deleted = Vec::new();
    for id in ids {
        repo.delete(&layout::snapshot(&id)).await?;
        deleted.push(id);
    }
    lock.release().await?;
    Ok(DeleteReport { deleted })
}

impl crate::output::Render for DeleteReport {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        for id in &self.deleted {
            writeln!(w, "deleted backup {}", &id[..8])?;
        }
        writeln!(w, "run `lifeboat backup prune` to free the space")
    }
}

#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub last: Option<usize>,
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
    /// Backups carrying any of these tags are always kept.
    pub keep_tags: Vec<(String, String)>,
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
    }
}

/// What makes two backups "the same series" for retention (restic's host + paths): the policy
/// is applied within each group, and each group keeps its own newest backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub cluster: bool,
    pub namespaces: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            cluster: true,
            namespaces: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// `cluster,namespaces,tags` (any subset; `none` for one group).
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy {
            cluster: false,
            namespaces: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "cluster" => g.cluster = true,
                "namespaces" => g.namespaces = true,
                "tags" => g.tags = true,
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown --group-by field {other:?} (use cluster, namespaces, tags or none)"
                    ));
                }
            }
        }
        Ok(g)
    }

    pub fn key(&self, s: &Snapshot) -> String {
        let mut parts = Vec::new();
        if self.cluster {
            // The cluster's identity (kube-system UID) when the backup has it, else its address.
            parts.push(match &s.cluster.uid {
                Some(uid) => format!("cluster={uid}"),
                None => format!("cluster={}", s.cluster.server),
            });
        }
        if self.namespaces {
            let mut ns = s.selectors.namespaces.clone();
            ns.sort();
            parts.push(format!(
                "namespaces={}",
                if ns.is_empty() {
                    "(all)".to_string()
                } else {
                    ns.join(",")
                }
            ));
        }
        if self.tags {
            let t: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("tags={}", t.join(",")));
        }
        parts.join(" ")
    }
}

/// Which snapshots (given newest first as (id, time)) a retention policy keeps: the `last` N,
/// and for each period the newest snapshot of each of the N most recent periods that have one.
pub fn keep_set(
    snaps_newest_first: &[(String, jiff::Timestamp)],
    r: &Retention,
) -> BTreeSet<String> {
    let mut keep = BTreeSet::new();
    if let Some(n) = r.last {
        keep.extend(snaps_newest_first.iter().take(n).map(|(id, _)| id.clone()));
    }
    let buckets: [(Option<usize>, fn(&jiff::Timestamp) -> String); 4] = [
        (r.hourly, |t| t.strftime("%Y-%m-%d %H").to_string()),
        (r.daily, |t| t.strftime("%Y-%m-%d").to_string()),
        (r.weekly, |t| {
            let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
            let w = d.iso_week_date();
            format!("{}-W{}", w.year(), w.week())
        }),
        (r.monthly, |t| t.strftime("%Y-%m").to_string()),
    ];
    for (n, bucket) in buckets {
        let Some(n) = n else { continue };
        let mut seen = HashSet::new();
        for (id, t) in snaps_newest_first {
            if seen.len() >= n {
                break;
            }
            if seen.insert(bucket(t)) {
                keep.insert(id.clone());
            }
        }
    }
    keep
}

/// The backups a policy removes, group by group (`snaps` newest first). In every group the
/// newest backup and the newest one a drill verified are kept, whatever the policy.
pub fn removals(
    snaps_newest_first: &[(String, Snapshot)],
    r: &Retention,
    group_by: GroupBy,
    verified: &HashSet<String>,
) -> Vec<String> {
    if r.is_empty() {
        return Vec::new();
    }
    let mut groups: BTreeMap<String, Vec<(String, jiff::Timestamp)>> = BTreeMap::new();
    let mut keep = BTreeSet::new();
    for (id, s) in snaps_newest_first {
        groups.entry(group_by.key(s)).or_default().push((
            id.clone(),
            s.time.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        ));
        if r.keep_tags.iter().any(|(k, v)| s.tags.get(k) == Some(v)) {
            keep.insert(id.clone());
        }
    }
    for members in groups.values() {
        keep.extend(keep_set(members, r));
        if let Some((newest, _)) = members.first() {
            keep.insert(newest.clone());
        }
        if let Some((v, _)) = members.iter().find(|(id, _)| verified.contains(id)) {
            keep.insert(v.clone());
        }
    }
    snaps_newest_first
        .iter()
        .filter(|(id, _)| !keep.contains(id))
        .map(|(id, _)| id.clone())
        .collect()
}

/// Default safety margin of prune: packs younger than this (by the store's clock) are never
/// deleted, referenced or not.
pub const DEFAULT_SAFETY_MARGIN: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub retention: Retention,
    pub group_by: GroupBy,
    pub dry_run: bool,
    pub safety_margin: std::time::Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            retention: Retention::default(),
            group_by: GroupBy::default(),
            dry_run: false,
            safety_margin: DEFAULT_SAFETY_MARGIN,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub dry_run: bool,
    pub removed_backups: Vec<String>,
    pub kept_backups: usize,
    pub packs_deleted: usize,
    pub packs_kept: usize,
    /// Unreferenced packs kept because they are younger than the safety margin (a running or
    /// interrupted backup may still reference them).
    pub packs_kept_young: usize,
    pub safety_margin_seconds: u64,
    pub bytes_freed: u64,
}

/// Apply the retention policy (when given), then delete packs no remaining backup references
/// and rewrite the index. Packs that are partly referenced are kept whole. Holds an exclusive
/// lock; independently of it, no pack younger than the safety margin is deleted (ages by the
/// store's clock: our own lock file's time is "now"), so a clock or lock mistake cannot take
/// a running backup's data. Refuses to run while any snapshot or index file is damaged (what
/// they reference is unknown).
pub async fn prune(repo: Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport, Error> {
    let lock = Lock::acquire(repo.clone(), true, "prune").await?;
    let result = prune_locked(&repo, &lock, opts).await;
    let _ = lock.release().await;
    result
}

/// Ids of backups a drill verified (`drills/` records with a passing verdict).
pub async fn verified_backups(repo: &Repository) -> HashSet<String> {
    match crate::drill::verdicts(repo).await {
        Ok(v) => v.into_iter().filter(|v| v.ok).map(|v| v.backup).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read drill verdicts");
            HashSet::new()
        }
    }
}

async fn prune_locked(
    repo: &Repository,
    lock: &Lock,
    opts: &PruneOptions,
) -> Result<PruneReport, Error> {
    repo.load_index().await?;
    let (mut snaps, damaged_snaps) = repo.snapshots_checked().await?;
    let damaged_index = repo.damaged_index();
    if !damaged_snaps.is_empty() || !damaged_index.is_empty() {
        let names: Vec<String> = damaged_snaps
            .iter()
            .chain(damaged_index.iter())
            .map(|d| d.key.clone())
            .collect();
        return Err(crate::repo::RepoError::Damaged(names.join(", ")).into());
    }
    snaps.reverse(); // newest first
    let verified = verified_backups(repo).await;
    let removed = removals(&snaps, &opts.retention, opts.group_by, &verified);
    let remaining: Vec<&(String, Snapshot)> = snaps
        .iter()
        .filter(|(id, _)| !removed.contains(id))
        .collect();
    // Every blob still referenced.
    let mut used: HashSet<BlobId> = HashSet::new();
    for (_, s) in &remaining {
        for t in &s.trees {
            used.insert(*t);
            let tree: crate::repo::snapshot::Tree = repo.read_blob_json(t).await?;
            used.extend(tree.entries.iter().map(|e| e.blob));
        }
        // Volume data: the file trees and every chunk they list.
        for (_, trees) in s.data_trees() {
            used.extend(trees.iter().copied());
            for f in crate::volume::load_tree(repo, trees).await? {
                used.extend(f.chunks);
            }
        }
    }
    let index = repo.index_snapshot().await;
    let mut pack_blobs: BTreeMap<PackId, Vec<(BlobId, crate::repo::Location)>> = BTreeMap::new();
    for (b, l) in &index {
        pack_blobs.entry(l.pack).or_default().push((*b, *l));
    }
    let stored: HashMap<String, crate::store::ObjectInfo> = repo
        .list(layout::DATA)
        .await?
        .into_iter()
        .filter_map(|o| Some((layout::id_of(layout::DATA, &o.key)?.to_string(), o)))
        .collect();
    // "Now" by the store's clock: the time it gave our own lock file.
    let store_now = repo
        .list(layout::LOCKS)
        .await?
        .into_iter()
        .find(|o| o.key == lock.key())
        .and_then(|o| o.modified);
    let young = |pack: &str| -> bool {
        let (Some(now), Some(m)) = (store_now, stored.get(pack).and_then(|o| o.modified)) else {
            return true; // unknown age: never delete
        };
        let age = now.duration_since(m);
        !age.is_positive() || age.unsigned_abs() < opts.safety_margin
    };
    let mut keep_packs = Vec::new();
    let mut delete_packs: Vec<String> = Vec::new();
    let mut kept_young = 0;
    for (pack, blobs) in &pack_blobs {
        let hex = pack.to_hex();
        if blobs.iter().any(|(b, _)| used.contains(b)) {
            keep_packs.push((pack, blobs));
        } else if !stored.contains_key(&hex) {
            // Indexed, unreferenced and gone: drop it from the index.
        } else if young(&hex) {
            kept_young += 1;
            keep_packs.push((pack, blobs));
        } else {
            delete_packs.push(hex);
        }
    }
    // Packs on storage that no index lists: left by interrupted backups, or being written by a
    // running one. Only old ones go.
    let indexed: HashSet<String> = pack_blobs.keys().map(|p| p.to_hex()).collect();
    for p in stored.keys() {
        if !indexed.contains(p) {
            if young(p) {
                kept_young += 1;
            } else {
                delete_packs.push(p.clone());
            }
        }
    }
    let bytes_freed: u64 = delete_packs
        .iter()
        .filter_map(|p| stored.get(p).map(|o| o.size))
        .sum();
    let report = PruneReport {
        dry_run: opts.dry_run,
        removed_backups: removed.clone(),
        kept_backups: remaining.len(),
        packs_deleted: delete_packs.len(),
        packs_kept: keep_packs.len(),
        packs_kept_young: kept_young,
        safety_margin_seconds: opts.safety_margin.as_secs(),
        bytes_freed,
    };
    if opts.dry_run {
        return Ok(report);
    }
    // 1. Forget snapshots. 2. Write the new index, then drop the old index files. 3. Delete packs.
    lock.ensure_held().await?;
    for id in &removed {
        repo.delete(&layout::snapshot(id)).await?;
    }
    let old_index_files = repo.index_files().await;
    let new_index = IndexFile {
        packs: keep_packs
            .iter()
            .map(|(p, blobs)| {
                let mut bl: Vec<crate::repo::pack::PackEntry> = blobs
                    .iter()
                    .map(|(b, l)| crate::repo::pack::PackEntry {
                        kind: l.kind,
                        id: *b,
                        offset: l.offset,
                        length: l.length,
                        raw_length: l.raw_length,
                    })
                    .collect();
                bl.sort_by_key(|e| e.offset);
                IndexPack {
                    id: p.to_hex(),
                    blobs: bl,
                }
            })
            .collect(),
    };
    if !delete_packs.is_empty() || !removed.is_empty() || old_index_files.len() > 1 {
        let new_id = crate::repo::new_id();
        repo.write_json(&layout::index(&new_id), &new_index).await?;
        crate::faults::point("prune.after-index");
        for id in old_index_files.keys() {
            repo.delete(&layout::index(id)).await?;
        }
        lock.ensure_held().await?;
        crate::faults::point("prune.before-delete");
        for p in &delete_packs {
            repo.delete(&layout::pack(p)).await?;
        }
        repo.load_index().await?;
    }
    Ok(report)
}

impl crate::output::Render for PruneReport {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let would = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for id in &self.removed_backups {
            writeln!(w, "{would} backup {}", &id[..8])?;
        }
        writeln!(
            w,
            "{} {} {} backup(s), kept {}; {} {} pack(s) ({}), kept {}",
            if self.dry_run { "dry run:" } else { "prune:" },
            would,
            self.removed_backups.len(),
            self.kept_backups,
            if self.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            self.packs_deleted,
            human_bytes(self.bytes_freed),
            self.packs_kept
        )?;
        if self.packs_kept_young > 0 {
            writeln!(
                w,
                "kept {} unreferenced pack(s) younger than the safety margin ({}s): a running or interrupted backup may still need them",
                self.packs_kept_young, self.safety_margin_seconds
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportReport {
    pub backup: String,
    pub file: String,
    pub objects: u64,
    /// Objects that could not be read from the backup (Kind/namespace/name): left out.
    pub damaged: Vec<String>,
}

pub async fn export(repo: &Repository, spec: &str, file: &Path) -> Result<ExportReport, Error> {
    let (id, snap) = repo.find_snapshot(spec).await?;
    let entries = repo.snapshot_entries(&snap).await?;
    // Best effort: in a disaster every readable object counts; damaged ones are named.
    let mut readable = Vec::with_capacity(entries.len());
    let mut damaged = Vec::new();
    for e in &entries {
        match repo.read_blob_json::<serde_json::Value>(&e.blob).await {
            Ok(o) => readable.push((e, o)),
            Err(_) => damaged.push(e.display()),
        }
    }
    let tmp = file.with_extension("partial");
    let n = crate::restore::archive::write(&tmp, readable.into_iter())?;
    std::fs::rename(&tmp, file).map_err(|source| Error::ReadFile {
        path: file.to_owned(),
        source,
    })?;
    Ok(ExportReport {
        backup: id,
        file: file.display().to_string(),
        objects: n,
        damaged,
    })
}

impl crate::output::Render for ExportReport {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        for d in &self.damaged {
            writeln!(
                w,
                "DAMAGED {d}: not exported (cannot be read from the backup)"
            )?;
        }
        writeln!(
            w,
            "exported {} objects of backup {} to {} (NOT encrypted: it contains the backup's Secrets)",
            self.objects,
            &self.backup[..8],
            self.file
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn retention_policies() {
        // newest first
        let snaps: Vec<(String, jiff::Timestamp)> = [
            ("a", "2026-11-27T10:30:00Z"),
            ("b", "2026-11-27T10:10:00Z"),
            ("c", "2026-11-27T09:00:00Z"),
            ("d", "2026-11-26T23:00:00Z"),
            ("e", "2026-11-20T12:00:00Z"),
            ("f", "2026-10-01T12:00:00Z"),
        ]
        .iter()
        .map(|(i, s)| (i.to_string(), t(s)))
        .collect();
        let k = |r: Retention| keep_set(&snaps, &r).into_iter().collect::<Vec<_>>();
        assert_eq!(
            k(Retention {
                last: Some(2),
                ..Default::default()
            }),
            ["a", "b"]
        );
        assert_eq!(
            k(Retention {
                hourly: Some(2),
                ..Default::default()
            }),
            ["a", "c"]
        );
        assert_eq!(
            k(Retention {
                daily: Some(3),
                ..Default::default()
            }),
            ["a", "d", "e"]
        );
        assert_eq!(
            k(Retention {
                weekly: Some(2),
                ..Default::default()
            }),
            ["a", "e"]
        );
        assert_eq!(
            k(Retention {
                monthly: Some(5),
                ..Default::default()
            }),
            ["a", "f"]
        );
        assert_eq!(
            k(Retention {
                last: Some(1),
                monthly: Some(2),
                ..Default::default()
            }),
            ["a", "f"]
        );
        assert!(k(Retention::default()).is_empty());
    }

    fn snap(ns: &str, time: &str, tags: &[(&str, &str)]) -> Snapshot {
        let mut s: Snapshot = serde_json::from_value(serde_json::json!({
            "version": 1, "time": time, "hostname": "h", "toolVersion": "0",
            "cluster": {"server": "https://a", "context": null, "serverVersion": "v1.34.4"},
            "selectors": {"namespaces": [ns], "labelSelector": null, "includeResources": [],
                          "excludeResources": [], "includeClusterResources": "auto", "defaultExcludes": true},
            "tags": {}, "resources": {}, "objects": 1, "bytesTotal": 1, "bytesAdded": 1,
            "durationSeconds": 0.0, "warnings": [], "trees": []
        }))
        .unwrap();
        for (k, v) in tags {
            s.tags.insert(k.to_string(), v.to_string());
        }
        s
    }

    #[test]
    fn retention_is_per_group_and_keeps_verified_and_tagged_backups() {
        // Nightly shop and billing backups, newest first; billing always ran last.
        let snaps = vec![
            (
                "b3".to_string(),
                snap("billing", "2026-12-03T02:30:00Z", &[]),
            ),
            ("s3".to_string(), snap("shop", "2026-12-03T02:00:00Z", &[])),
            (
                "b2".to_string(),
                snap("billing", "2026-12-02T02:30:00Z", &[]),
            ),
            (
                "s2".to_string(),
                snap("shop", "2026-12-02T02:00:00Z", &[("keep", "yes")]),
            ),
            (
                "b1".to_string(),
                snap("billing", "2026-12-01T02:30:00Z", &[]),
            ),
            ("s1".to_string(), snap("shop", "2026-12-01T02:00:00Z", &[])),
        ];
        let daily = Retention {
            daily: Some(7),
            ..Default::default()
        };
        assert!(
            removals(&snaps, &daily, GroupBy::default(), &HashSet::new()).is_empty(),
            "each series keeps its own daily backups"
        );
        // One group: the old behaviour lost one series' backups every day.
        let one = GroupBy::parse("none").unwrap();
        assert_eq!(
            removals(&snaps, &daily, one, &HashSet::new()),
            ["s3", "s2", "s1"]
        );
        let last = Retention {
            last: Some(1),
            keep_tags: vec![("keep".into(), "yes".into())],
            ..Default::default()
        };
        let verified: HashSet<String> = ["b1".to_string()].into();
        assert_eq!(
            removals(&snaps, &last, GroupBy::default(), &verified),
            ["b2", "s1"],
            "newest per group, the newest verified (b1) and the tagged (s2) stay"
        );
        assert!(GroupBy::parse("cluster,hosts").is_err());
    }
}
