//! `repo check` and `repo repair index|snapshots`: the whole repository, not one backup.
//!
//! check: config and keys (damaged key files), every index file, every snapshot file, every
//! snapshot's references (trees, objects, volume files: indexed and in an existing pack of
//! sufficient size), every pack's header against the index, unindexed packs; with `--read-data`
//! (or a subset) every pack is read whole, its SHA-256 must be its name and every blob its
//! header lists must open and hash to its id. Each damaged object is named.
//!
//! repair index: a new index from the headers of the packs in the store (packs whose header
//! cannot be read are named and left out), then the old index files are removed.
//! repair snapshots: each backup that references lost data is rewritten without it, and what
//! was lost is listed by name (objects as Kind/namespace/name, volume files by path); a snapshot
//! file that cannot be read at all is removed and named. Nothing is dropped silently.
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;

use crate::error::Error;
use crate::repo::crypto::BlobId;
use crate::repo::lock::Lock;
use crate::repo::pack::PackEntry;
use crate::repo::snapshot::{Snapshot, Tree, TreeEntry};
use crate::repo::{BlobType, IndexFile, IndexPack, PackId, Packer, Repository, sha2_256};
use crate::store::layout;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The damaged object: a repository file (`index/…`), a pack, or a backup's object.
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub ok: bool,
    pub snapshots: usize,
    pub index_files: usize,
    pub packs: usize,
    pub packs_read: usize,
    /// Packs no index lists (left by interrupted backups; prune removes them after its margin).
    pub unindexed_packs: usize,
    pub read_data: bool,
    pub damaged: Vec<Problem>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// Read only this share of the packs (0 < p ≤ 100), chosen at random.
    pub read_data_subset: Option<f64>,
}

fn problem(object: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        object: object.into(),
        message: message.into(),
    }
}

/// The header of a pack, read with two range reads (its length, then the header).
pub async fn read_pack_header(
    repo: &Repository,
    pack: &str,
    size: u64,
) -> Result<Vec<PackEntry>, String> {
    let key = layout::pack(pack);
    if size < 4 {
        return Err("pack file is too short for a header".into());
    }
    let tail = repo
        .store()
        .get_range(&key, size - 4, 4)
        .await
        .map_err(|e| e.to_string())?;
    let n = u32::from_le_bytes(tail[..].try_into().map_err(|_| "short read")?) as u64;
    if n + 4 > size {
        return Err("pack header length points outside the pack".into());
    }
    let sealed = repo
        .store()
        .get_range(&key, size - 4 - n, n)
        .await
        .map_err(|e| e.to_string())?;
    crate::repo::pack::parse_header(repo, &sealed)
        .ok_or_else(|| "pack header does not decrypt (corrupt or tampered)".into())
}

/// Every blob a snapshot references, each with a name for messages.
async fn references(
    repo: &Repository,
    id: &str,
    snap: &Snapshot,
    damaged: &mut Vec<Problem>,
) -> Vec<(BlobId, String)> {
    let short = &id[..8.min(id.len())];
    let mut out = Vec::new();
    for t in &snap.trees {
        out.push((*t, format!("backup {short}: (tree of object references)")));
        match repo.read_blob_json::<Tree>(t).await {
            Ok(tree) => out.extend(
                tree.entries
                    .iter()
                    .map(|e| (e.blob, format!("backup {short}: {}", e.display()))),
            ),
            Err(e) => damaged.push(problem(
                format!("backup {short}: (tree of object references {})", t.to_hex()),
                crate::error::display_chain(&e),
            )),
        }
    }
    for (what, trees) in snap.data_trees() {
        let label = format!("backup {short}: {what}");
        for t in trees {
            out.push((*t, format!("{label}: (file tree)")));
        }
        match crate::volume::load_tree(repo, trees).await {
            Ok(files) => {
                for f in files {
                    for c in &f.chunks {
                        out.push((*c, format!("{label}: file {}", f.path)));
                    }
                }
            }
            Err(e) => damaged.push(problem(
                format!("{label}: (file tree)"),
                crate::error::display_chain(&e),
            )),
        }
    }
    out
}

pub async fn check(repo: &Repository, opts: CheckOptions) -> Result<CheckReport, Error> {
    let mut damaged = Vec::new();
    for k in &repo.damaged_keys {
        damaged.push(problem(k.key.clone(), k.message.clone()));
    }
    repo.load_index().await?;
    for d in repo.damaged_index() {
        damaged.push(problem(d.key, d.message));
    }
    for l in repo.list(layout::LOCKS).await? {
        match repo
            .read_json::<crate::repo::lock::LockFile>(&l.key, "lock file")
            .await
        {
            Ok(_) => {}
            Err(crate::repo::RepoError::Store { source, .. }) if source.is_not_found() => {}
            Err(e) => damaged.push(problem(
                l.key.clone(),
                format!(
                    "{} (remove it once no lifeboat runs)",
                    crate::error::display_chain(&e)
                ),
            )),
        }
    }
    let (snaps, bad_snaps) = repo.snapshots_checked().await?;
    for d in bad_snaps {
        damaged.push(problem(d.key, d.message));
    }
    let index = repo.index_snapshot().await;
    let index_files = repo.index_files().await;
    let stored: HashMap<String, u64> = repo.pack_sizes().await?;
    // Every backup's references.
    for (id, snap) in &snaps {
        for (blob, label) in references(repo, id, snap, &mut damaged).await {
            match index.get(&blob) {
                None => damaged.push(problem(
                    label,
                    format!("blob {} is not in the index", blob.to_hex()),
                )),
                Some(l) => match stored.get(&l.pack.to_hex()) {
                    None => damaged.push(problem(
                        label,
                        format!("pack file {} is missing", l.pack.to_hex()),
                    )),
                    Some(&size) if l.offset as u64 + l.length as u64 > size => damaged.push(
                        problem(label, format!("pack file {} is truncated", l.pack.to_hex())),
                    ),
                    Some(_) => {}
                },
            }
        }
    }
    // Index against pack headers.
    let mut by_pack: BTreeMap<PackId, Vec<(BlobId, crate::repo::Location)>> = BTreeMap::new();
    for (b, l) in &index {
        by_pack.entry(l.pack).or_default().push((*b, *l));
    }
    for (pack, blobs) in &by_pack {
        let hex = pack.to_hex();
        let Some(&size) = stored.get(&hex) else {
            damaged.push(problem(
                format!("pack {hex}"),
                format!(
                    "listed in the index ({} blobs) but missing from the store",
                    blobs.len()
                ),
            ));
            continue;
        };
        match read_pack_header(repo, &hex, size).await {
            Err(e) => damaged.push(problem(format!("pack {hex}"), e)),
            Ok(header) => {
                let h: HashMap<BlobId, (u32, u32)> = header
                    .iter()
                    .map(|e| (e.id, (e.offset, e.length)))
                    .collect();
                let wrong = blobs
                    .iter()
                    .filter(|(b, l)| h.get(b) != Some(&(l.offset, l.length)))
                    .count();
                if wrong > 0 {
                    damaged.push(problem(
                        format!("pack {hex}"),
                        format!("{wrong} index entries do not match the pack's header"),
                    ));
                }
            }
        }
    }
    let unindexed = stored
        .keys()
        .filter(|p| PackId::from_hex(p).is_none_or(|id| !by_pack.contains_key(&id)))
        .count();
    // Data.
    let mut packs_read = 0;
    let read_data = opts.read_data || opts.read_data_subset.is_some();
    if read_data {
        let share = opts.read_data_subset.unwrap_or(100.0).clamp(0.0, 100.0) / 100.0;
        for (hex, &size) in &stored {
            if share < 1.0 {
                let r =
                    u32::from_le_bytes(crate::repo::crypto::random::<4>()) as f64 / u32::MAX as f64;
                if r >= share {
                    continue;
                }
            }
            let key = layout::pack(hex);
            let bytes = match repo.store().get(&key).await {
                Ok(b) => b,
                Err(e) => {
                    damaged.push(problem(format!("pack {hex}"), e.to_string()));
                    continue;
                }
            };
            packs_read += 1;
            if bytes.len() as u64 != size
                || PackId::from_hex(hex).is_none_or(|id| sha2_256(&bytes) != id.0)
            {
                damaged.push(problem(
                    format!("pack {hex}"),
                    "content does not match its name (corrupt or tampered)",
                ));
            }
            let Some(header) = crate::repo::pack::read_header_with(repo, &bytes) else {
                damaged.push(problem(format!("pack {hex}"), "header does not decrypt"));
                continue;
            };
            for e in header {
                let loc = crate::repo::Location {
                    pack: PackId::from_hex(hex).unwrap_or(PackId([0; 32])),
                    kind: e.kind,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                };
                let range = e.offset as usize..(e.offset as usize + e.length as usize);
                let ok = bytes
                    .get(range)
                    .is_some_and(|sealed| repo.decode_blob(&e.id, &loc, sealed, &key).is_ok());
                if !ok {
                    damaged.push(problem(
                        format!("pack {hex}: blob {}", e.id.to_hex()),
                        "content does not match its hash (corrupt or tampered)",
                    ));
                }
            }
        }
    }
    Ok(CheckReport {
        ok: damaged.is_empty(),
        snapshots: snaps.len(),
        index_files: index_files.len(),
        packs: stored.len(),
        packs_read,
        unindexed_packs: unindexed,
        read_data,
        damaged,
    })
}

impl crate::output::Render for CheckReport {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        for d in &self.damaged {
            writeln!(w, "DAMAGED {}: {}", d.object, d.message)?;
        }
        writeln!(
            w,
            "repository {}: {} backups, {} index files, {} packs ({} unindexed){}",
            if self.ok { "ok" } else { "DAMAGED" },
            self.snapshots,
            self.index_files,
            self.packs,
            self.unindexed_packs,
            if self.read_data {
                format!(", {} packs read and re-hashed", self.packs_read)
            } else {
                "; --read-data re-hashes all data".into()
            }
        )?;
        if !self.ok {
            writeln!(
                w,
                "`lifeboat repo repair index` rebuilds a lost or damaged index from the packs; `lifeboat repo repair snapshots` removes what is lost from the backups (listing it)"
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairIndexReport {
    pub dry_run: bool,
    pub packs_indexed: usize,
    pub blobs: usize,
    pub damaged_packs: Vec<Problem>,
    pub old_index_files_removed: usize,
}

/// Rebuild the index from the pack headers.
pub async fn repair_index(
    repo: Arc<Repository>,
    dry_run: bool,
) -> Result<RepairIndexReport, Error> {
    let lock = Lock::acquire(repo.clone(), true, "repair index").await?;
    let result = async {
        let old: Vec<String> = repo
            .list(layout::INDEX)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let mut packs = Vec::new();
        let mut damaged = Vec::new();
        let mut blobs = 0;
        for o in repo.list(layout::DATA).await? {
            let Some(hex) = layout::id_of(layout::DATA, &o.key) else {
                continue;
            };
            match read_pack_header(&repo, hex, o.size).await {
                Ok(entries) => {
                    blobs += entries.len();
                    packs.push(IndexPack {
                        id: hex.to_string(),
                        blobs: entries,
                    });
                }
                Err(e) => damaged.push(problem(format!("pack {hex}"), e)),
            }
        }
        let report = RepairIndexReport {
            dry_run,
            packs_indexed: packs.len(),
            blobs,
            damaged_packs: damaged,
            old_index_files_removed: old.len(),
        };
        if dry_run {
            return Ok(report);
        }
        lock.ensure_held().await?;
        repo.write_json(&layout::index(&crate::repo::new_id()), &IndexFile { packs })
            .await?;
        for k in &old {
            repo.delete(k).await?;
        }
        repo.load_index().await?;
        Ok::<_, Error>(report)
    }
    .await;
    let _ = lock.release().await;
    result
}

impl crate::output::Render for RepairIndexReport {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        for d in &self.damaged_packs {
            writeln!(
                w,
                "DAMAGED {}: {} (left out of the index)",
                d.object, d.message
            )?;
        }
        writeln!(
            w,
            "{}index rebuilt from {} pack headers ({} blobs); {} old index file(s) {}",
            if self.dry_run { "dry run: " } else { "" },
            self.packs_indexed,
            self.blobs,
            self.old_index_files_removed,
            if self.dry_run {
                "would be removed"
            } else {
                "removed"
            }
        )
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairedBackup {
    pub old_id: String,
    /// None: nothing of it could be kept (or a dry run).
    pub new_id: Option<String>,
    /// What this backup lost, by name.
    pub lost: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairSnapshotsReport {
    pub dry_run: bool,
    pub checked: usize,
    pub repaired: Vec<RepairedBackup>,
    /// Snapshot files that could not be read at all: removed (or would be), by name.
    pub unreadable: Vec<Problem>,
}

/// Rewrite every backup that references lost data without it.
pub async fn repair_snapshots(
    repo: Arc<Repository>,
    dry_run: bool,
) -> Result<RepairSnapshotsReport, Error> {
    let lock = Lock::acquire(repo.clone(), true, "repair snapshots").await?;
    let result = repair_snapshots_locked(&repo, &lock, dry_run).await;
    let _ = lock.release().await;
    result
}

async fn repair_snapshots_locked(
    repo: &Arc<Repository>,
    lock: &Lock,
    dry_run: bool,
) -> Result<RepairSnapshotsReport, Error> {
    repo.load_index().await?;
    let (snaps, bad) = repo.snapshots_checked().await?;
    let index = repo.index_snapshot().await;
    let stored: HashMap<String, u64> = repo.pack_sizes().await?;
    let readable = |b: &BlobId| {
        index.get(b).is_some_and(|l| {
            stored
                .get(&l.pack.to_hex())
                .is_some_and(|&s| l.offset as u64 + l.length as u64 <= s)
        })
    };
    let packer = Arc::new(Packer::new(repo.clone()));
    let mut repaired = Vec::new();
    let mut pending: Vec<(String, Snapshot, Vec<String>)> = Vec::new();
    for (id, snap) in &snaps {
        let mut lost = Vec::new();
        // Objects.
        let mut entries: Vec<TreeEntry> = Vec::new();
        let mut trees_ok = true;
        for t in &snap.trees {
            match repo.read_blob_json::<Tree>(t).await {
                Ok(tree) if readable(t) => entries.extend(tree.entries),
                _ => {
                    trees_ok = false;
                    lost.push(format!(
                        "a list of object references (tree {}): the objects it listed are lost",
                        &t.to_hex()[..12]
                    ));
                }
            }
        }
        let before = entries.len();
        entries.retain(|e| {
            let ok = readable(&e.blob);
            if !ok {
                lost.push(e.display());
            }
            ok
        });
        // Volumes: files whose chunks are lost.
        let mut volumes = Vec::new();
        let mut volumes_changed = false;
        for v in &snap.volumes {
            let label = format!("volume {}/{}", v.namespace, v.pvc);
            let files = if v.trees.iter().all(readable) {
                crate::volume::load_tree(repo, &v.trees).await.ok()
            } else {
                None
            };
            let Some(files) = files else {
                lost.push(format!("{label}: all files (its file tree is lost)"));
                volumes_changed = true;
                continue;
            };
            let n = files.len();
            let kept: Vec<_> = files
                .into_iter()
                .filter(|f| {
                    let ok = f.chunks.iter().all(readable);
                    if !ok {
                        lost.push(format!("{label}: file {}", f.path));
                    }
                    ok
                })
                .collect();
            if kept.len() == n {
                volumes.push(v.clone());
                continue;
            }
            volumes_changed = true;
            if dry_run {
                continue;
            }
            let mut nv = v.clone();
            nv.files = kept.len() as u64;
            nv.bytes = kept.iter().map(|f| f.size).sum();
            nv.trees = crate::volume::store_tree(&packer, &kept).await?;
            volumes.push(nv);
        }
        // Dumps: a dump is one file, useless in part: one lost chunk removes it whole.
        let mut dumps = Vec::new();
        for d in &snap.dumps {
            let whole = d.trees.iter().all(readable)
                && match crate::volume::load_tree(repo, &d.trees).await {
                    Ok(files) => files.iter().all(|f| f.chunks.iter().all(readable)),
                    Err(_) => false,
                };
            if whole {
                dumps.push(d.clone());
            } else {
                lost.push(format!("{}: the whole dump", d.label()));
            }
        }
        if lost.is_empty() {
            continue;
        }
        let mut ns = snap.clone();
        ns.dumps = dumps;
        if !dry_run && (!trees_ok || entries.len() != before) {
            let mut trees = Vec::new();
            for part in entries.chunks(crate::repo::snapshot::TREE_ENTRIES) {
                let blob = serde_json::to_vec(&Tree {
                    entries: part.to_vec(),
                })
                .expect("serializes");
                trees.push(packer.add(BlobType::Tree, &blob).await?);
            }
            ns.trees = trees;
            ns.objects = entries.len() as u64;
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for e in &entries {
                *counts.entry(e.group_resource()).or_default() += 1;
            }
            ns.resources = counts;
        }
        if volumes_changed {
            ns.volumes = volumes;
        }
        ns.warnings.push(format!(
            "repaired on {}: {} item(s) lost and removed from this backup (see `repo repair snapshots` output)",
            crate::repo::now(),
            lost.len()
        ));
        pending.push((id.clone(), ns, lost));
    }
    let mut unreadable = Vec::new();
    for d in bad {
        unreadable.push(problem(d.key, d.message));
    }
    if dry_run {
        for (id, _, lost) in pending {
            repaired.push(RepairedBackup {
                old_id: id,
                new_id: None,
                lost,
            });
        }
        return Ok(RepairSnapshotsReport {
            dry_run,
            checked: snaps.len(),
            repaired,
            unreadable,
        });
    }
    packer.finish_locked(Some(lock)).await?;
    let mut referenced = packer.referenced().await;
    for (_, s, _) in &pending {
        referenced.extend(s.trees.iter().copied());
        for (_, trees) in s.data_trees() {
            referenced.extend(trees.iter().copied());
        }
    }
    repo.check_references(referenced).await?;
    lock.ensure_held().await?;
    for (id, snap, lost) in pending {
        let new_id = crate::repo::new_id();
        repo.write_json(&layout::snapshot(&new_id), &snap).await?;
        repo.delete(&layout::snapshot(&id)).await?;
        repaired.push(RepairedBackup {
            old_id: id,
            new_id: Some(new_id),
            lost,
        });
    }
    for u in &unreadable {
        repo.delete(&u.object).await?;
    }
    // The index forgets locations in packs that are gone (what made the backups lose data).
    rewrite_index_valid(repo, lock).await?;
    Ok(RepairSnapshotsReport {
        dry_run,
        checked: snaps.len(),
        repaired,
        unreadable,
    })
}

/// One new index file with every location whose pack exists and is long enough; the old index
/// files are removed.
async fn rewrite_index_valid(repo: &Repository, lock: &Lock) -> Result<(), Error> {
    let old: Vec<String> = repo
        .list(layout::INDEX)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    repo.load_index_valid().await?;
    let mut by_pack: BTreeMap<PackId, Vec<PackEntry>> = BTreeMap::new();
    for (b, l) in repo.index_snapshot().await {
        by_pack.entry(l.pack).or_default().push(PackEntry {
            kind: l.kind,
            id: b,
            offset: l.offset,
            length: l.length,
            raw_length: l.raw_length,
        });
    }
    let packs = by_pack
        .into_iter()
        .map(|(p, mut blobs)| {
            blobs.sort_by_key(|e| e.offset);
            IndexPack {
                id: p.to_hex(),
                blobs,
            }
        })
        .collect();
    lock.ensure_held().await?;
    repo.write_json(&layout::index(&crate::repo::new_id()), &IndexFile { packs })
        .await?;
    for k in &old {
        repo.delete(k).await?;
    }
    repo.load_index().await?;
    Ok(())
}

impl crate::output::Render for RepairSnapshotsReport {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let verb = if self.dry_run { "would lose" } else { "lost" };
        for r in &self.repaired {
            for l in &r.lost {
                writeln!(w, "backup {} {verb}: {l}", &r.old_id[..8])?;
            }
            match &r.new_id {
                Some(n) => writeln!(
                    w,
                    "backup {} rewritten as {} without what was lost",
                    &r.old_id[..8],
                    &n[..8]
                )?,
                None => {}
            }
        }
        for u in &self.unreadable {
            writeln!(
                w,
                "snapshot file {} cannot be read ({}): {}",
                u.object,
                u.message,
                if self.dry_run {
                    "would be removed"
                } else {
                    "removed; that backup cannot be restored"
                }
            )?;
        }
        writeln!(
            w,
            "{}{} backups checked, {} with lost data, {} unreadable",
            if self.dry_run { "dry run: " } else { "" },
            self.checked,
            self.repaired.len(),
            self.unreadable.len()
        )
    }
}
