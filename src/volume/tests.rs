use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::repo::crypto::KdfParams;

const FAST: KdfParams = KdfParams {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

async fn repo(dir: &Path) -> Arc<Repository> {
    let store: crate::store::DynStore =
        Arc::new(crate::store::local::LocalStore::new(dir.to_path_buf()));
    Arc::new(Repository::init(store, b"pw", FAST).await.unwrap())
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sample_tree(root: &Path, big: &[u8]) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("a/secret.txt"), b"top secret\n").unwrap();
    std::fs::set_permissions(
        root.join("a/secret.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(root.join("a/b/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        root.join("a/b/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(root.join("a/b/c/big.bin"), big).unwrap();
    std::os::unix::fs::symlink("b/run.sh", root.join("a/link")).unwrap();
    let long = "x".repeat(120);
    std::fs::write(root.join(format!("a/{long}.txt")), b"long name").unwrap();
    for i in 0..50 {
        std::fs::write(
            root.join(format!("a/b/small-{i:03}")),
            format!("file {i}\n"),
        )
        .unwrap();
    }
}

fn tar_of(root: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", root).unwrap();
    b.into_inner().unwrap()
}

fn assert_same_tree(a: &Path, b: &Path) {
    let mut seen = 0;
    for e in walk(a) {
        let rel = e.strip_prefix(a).unwrap();
        let other = b.join(rel);
        let ma = std::fs::symlink_metadata(&e).unwrap();
        let mb = std::fs::symlink_metadata(&other)
            .unwrap_or_else(|_| panic!("{} missing", rel.display()));
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&e).unwrap(),
                std::fs::read_link(&other).unwrap()
            );
        } else {
            assert_eq!(
                ma.permissions().mode() & 0o7777,
                mb.permissions().mode() & 0o7777,
                "{}",
                rel.display()
            );
        }
        if ma.is_file() {
            assert_eq!(std::fs::read(&e).unwrap(), std::fs::read(&other).unwrap());
        }
        seen += 1;
    }
    assert!(seen > 50);
    assert_eq!(walk(a).len(), walk(b).len());
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
        if ft.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tar_stream_round_trips_through_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src, &noise(5 << 20, 1));
    let r = repo(&tmp.path().join("repo")).await;
    let packer = Arc::new(Packer::new(r.clone()));
    let (entries, stats) = ingest_tar(
        r.clone(),
        packer.clone(),
        std::io::Cursor::new(tar_of(&src)),
        2,
        Arc::new(Counters::default()),
    )
    .await
    .unwrap();
    let on_disk: u64 = walk(&src)
        .iter()
        .map(|p| std::fs::symlink_metadata(p).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert_eq!(stats.bytes, on_disk);
    assert_eq!(stats.files, 55);
    let big = entries.iter().find(|e| e.path == "a/b/c/big.bin").unwrap();
    assert!(
        big.chunks.len() >= 3,
        "content-defined chunks: {}",
        big.chunks.len()
    );
    let link = entries.iter().find(|e| e.path == "a/link").unwrap();
    assert_eq!(
        (link.kind, link.target.as_deref()),
        (EntryType::Symlink, Some("b/run.sh"))
    );
    let trees = store_tree(&packer, &entries).await.unwrap();
    packer.finish().await.unwrap();

    // Read back through a fresh handle, as a restore would.
    let r2 = Arc::new(
        Repository::open(
            Arc::new(crate::store::local::LocalStore::new(
                tmp.path().join("repo"),
            )),
            b"pw",
        )
        .await
        .unwrap(),
    );
    r2.load_index().await.unwrap();
    let back = load_tree(&r2, &trees).await.unwrap();
    assert_eq!(back, entries);
    let mut out = Vec::new();
    write_tar(r2, &back, &mut out, 4, Arc::new(Counters::default()))
        .await
        .unwrap();
    assert_eq!(out.len() % 10240, 0, "whole tar records");
    assert_eq!(
        out.len() as u64,
        tar_stream_len(&back),
        "the announced length is exact"
    );
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let mut a = tar::Archive::new(std::io::Cursor::new(out));
    a.set_preserve_permissions(true);
    a.unpack(&dst).unwrap();
    assert_same_tree(&src, &dst);
    assert!(compare_trees(&entries, &back).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_region_of_a_large_file_adds_only_nearby_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut big = noise(24 << 20, 2);
    sample_tree(&src, &big);
    let r = repo(&tmp.path().join("repo")).await;
    let ingest = |r: Arc<Repository>, data: Vec<u8>| async move {
        let packer = Arc::new(Packer::new(r.clone()));
        let (entries, _) = ingest_tar(
            r,
            packer.clone(),
            std::io::Cursor::new(data),
            2,
            Arc::new(Counters::default()),
        )
        .await
        .unwrap();
        store_tree(&packer, &entries).await.unwrap();
        (entries, packer.finish().await.unwrap())
    };
    let (first, s1) = ingest(r.clone(), tar_of(&src)).await;
    // One MiB in the middle changes.
    let mid = 12 << 20;
    for b in &mut big[mid..mid + (1 << 20)] {
        *b = b.wrapping_add(1);
    }
    std::fs::write(src.join("a/b/c/big.bin"), &big).unwrap();
    let (second, s2) = ingest(r.clone(), tar_of(&src)).await;
    let chunks = |v: &[FileEntry]| -> std::collections::HashSet<BlobId> {
        v.iter().flat_map(|e| e.chunks.iter().copied()).collect()
    };
    let new_chunks = chunks(&second).difference(&chunks(&first)).count();
    assert!(
        new_chunks <= 4,
        "{new_chunks} new chunks for a 1 MiB change"
    );
    assert!(
        s2.pack_bytes * 4 < s1.pack_bytes,
        "second backup added {} bytes, first {}",
        s2.pack_bytes,
        s1.pack_bytes
    );
    let diff = compare_trees(&first, &second);
    assert_eq!(diff, ["a/b/c/big.bin: content differs"]);
}

#[test]
fn tree_comparison_names_each_difference() {
    let f = |path: &str, hash: &str, mode: u32| FileEntry {
        path: path.into(),
        kind: EntryType::File,
        mode,
        uid: 0,
        gid: 0,
        size: 1,
        mtime: 0,
        target: None,
        chunks: vec![],
        hash: Some(hash.into()),
    };
    let want = vec![f("a", "1", 0o644), f("b", "2", 0o600), f("c", "3", 0o644)];
    let got = vec![f("a", "1", 0o644), f("b", "2", 0o644), f("d", "4", 0o644)];
    assert_eq!(
        compare_trees(&want, &got),
        ["b: mode 644, was 600", "c: missing", "d: not in the backup"]
    );
}

#[test]
fn hard_link_groups_compare_equal_whichever_name_tar_stored_as_the_file() {
    let file = |path: &str, hash: &str| FileEntry {
        path: path.into(),
        kind: EntryType::File,
        mode: 0o644,
        uid: 7,
        gid: 8,
        size: 1,
        mtime: 0,
        target: None,
        chunks: vec![],
        hash: Some(hash.into()),
    };
    let link = |path: &str, to: &str| FileEntry {
        path: path.into(),
        kind: EntryType::Hardlink,
        mode: 0o644,
        uid: 7,
        gid: 8,
        size: 0,
        mtime: 0,
        target: Some(to.into()),
        chunks: vec![],
        hash: None,
    };
    // ext4 listed h1 first, tmpfs h2: the same files.
    let ext4 = vec![
        file("h1", "x"),
        link("h2", "h1"),
        link("d/h3", "h1"),
        file("solo", "y"),
    ];
    let tmpfs = vec![
        link("h1", "h2"),
        file("h2", "x"),
        link("d/h3", "h2"),
        file("solo", "y"),
    ];
    assert!(
        compare_trees(&ext4, &tmpfs).is_empty(),
        "{:?}",
        compare_trees(&ext4, &tmpfs)
    );
    // A group that lost a member is a difference, and so is a changed owner.
    let split = vec![
        file("h1", "x"),
        link("h2", "h1"),
        file("d/h3", "x"),
        file("solo", "y"),
    ];
    assert_eq!(
        compare_trees(&ext4, &split),
        [
            "d/h3: hard links differ (none, was d/h3, h1, h2)",
            "h1: hard links differ (h1, h2, was d/h3, h1, h2)",
            "h2: hard links differ (h1, h2, was d/h3, h1, h2)"
        ]
    );
    let mut chowned = ext4.clone();
    chowned[3].uid = 0;
    assert_eq!(compare_trees(&ext4, &chowned), ["solo: owner 0:8, was 7:8"]);
}

fn pod(v: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(v).unwrap()
}

#[test]
fn the_mover_runs_as_the_workloads_non_root_user_when_every_mounting_container_agrees() {
    use super::mover::RunAs;
    use super::snapshots::identity_in_pod;
    let base = |pod_sc: serde_json::Value, containers: serde_json::Value| {
        pod(serde_json::json!({
            "metadata": {"name": "db-0"},
            "spec": {
                "securityContext": pod_sc,
                "containers": containers,
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}],
            }
        }))
    };
    let mounting = |sc: serde_json::Value| {
        serde_json::json!({"name": "c", "securityContext": sc,
                           "volumeMounts": [{"name": "data", "mountPath": "/d"}]})
    };
    // Pod-level user, group, fsGroup and supplemental groups.
    let p = base(
        serde_json::json!({"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                           "supplementalGroups": [4000]}),
        serde_json::json!([mounting(serde_json::json!({}))]),
    );
    assert_eq!(
        identity_in_pod(&p, "data-db-0"),
        Some(RunAs::User {
            uid: 1000,
            gid: Some(3000),
            fs_group: Some(2000),
            supplemental_groups: vec![4000]
        })
    );
    // Not this claim: no answer at all.
    assert_eq!(identity_in_pod(&p, "other"), None);
    // The container's own user wins over the pod's.
    let p = base(
        serde_json::json!({"runAsUser": 1000}),
        serde_json::json!([mounting(serde_json::json!({"runAsUser": 1001}))]),
    );
    assert!(matches!(
        identity_in_pod(&p, "data-db-0"),
        Some(RunAs::User {
            uid: 1001,
            gid: None,
            ..
        })
    ));
    // Root, unknown (the image's USER is invisible), or containers that disagree: root.
    for (psc, containers) in [
        (
            serde_json::json!({"runAsUser": 0}),
            serde_json::json!([mounting(serde_json::json!({}))]),
        ),
        (
            serde_json::json!({}),
            serde_json::json!([mounting(serde_json::json!({}))]),
        ),
        (
            serde_json::json!({"runAsUser": 1000}),
            serde_json::json!([
                mounting(serde_json::json!({})),
                mounting(serde_json::json!({"runAsUser": 0}))
            ]),
        ),
    ] {
        assert_eq!(
            identity_in_pod(&base(psc.clone(), containers), "data-db-0"),
            Some(RunAs::Root),
            "{psc}"
        );
    }
    // A container that does not mount the volume does not count.
    let p = base(
        serde_json::json!({"runAsUser": 1000}),
        serde_json::json!([mounting(serde_json::json!({})),
                           {"name": "sidecar", "securityContext": {"runAsUser": 0}}]),
    );
    assert!(matches!(
        identity_in_pod(&p, "data-db-0"),
        Some(RunAs::User { uid: 1000, .. })
    ));
}

#[test]
fn a_non_root_mover_has_no_capabilities_and_a_root_mover_only_what_its_direction_needs() {
    use super::mover::{Direction, MoverOptions, RunAs, pod_manifest};
    let user = MoverOptions {
        run_as: RunAs::User {
            uid: 1000,
            gid: Some(1000),
            fs_group: Some(2000),
            supplemental_groups: vec![],
        },
        ..Default::default()
    };
    let m = pod_manifest("m", "ns", "pvc", Direction::Backup, &user);
    let sc = &m["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["runAsUser"], 1000);
    assert_eq!(sc["runAsGroup"], 1000);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"], serde_json::json!({"drop": ["ALL"]}));
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(m["spec"]["securityContext"]["fsGroup"], 2000);
    assert_eq!(
        m["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"],
        true
    );
    let root = MoverOptions::default();
    for (dir, caps) in [
        (Direction::Backup, serde_json::json!(["DAC_READ_SEARCH"])),
        (
            Direction::Restore,
            serde_json::json!(["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]),
        ),
    ] {
        let m = pod_manifest("m", "ns", "pvc", dir, &root);
        let sc = &m["spec"]["containers"][0]["securityContext"];
        assert_eq!(sc["runAsUser"], 0);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(sc["capabilities"]["add"], caps);
    }
}

#[tokio::test]
async fn a_stream_cut_short_is_an_error_even_at_an_entry_boundary() {
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in [("a.txt", &b"alpha\n"[..]), ("b.bin", &noise(5000, 1)[..])] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, body).unwrap();
    }
    // `into_inner` writes the end-of-archive marker: two zero blocks.
    let whole = b.into_inner().unwrap();
    let got = tree_of(std::io::Cursor::new(whole.clone())).await.unwrap();
    assert_eq!(got.len(), 2);
    // GNU tar pads to a 10240-byte record: padding after the marker is read and ignored.
    let mut padded = whole.clone();
    padded.resize(10240, 0);
    assert_eq!(tree_of(std::io::Cursor::new(padded)).await.unwrap(), got);
    for (cut, what) in [
        (whole.len() - 1024, "at the boundary before the marker"),
        (whole.len() - 1024 - 512 - 100, "inside the second file"),
        (512 + 512, "after the first file"),
    ] {
        let r = tree_of(std::io::Cursor::new(whole[..cut].to_vec())).await;
        assert!(matches!(r, Err(VolumeError::Truncated(_))), "{what}: {r:?}");
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path()).await;
        let packer = Arc::new(crate::repo::Packer::new(repo.clone()));
        let r = ingest_tar(
            repo,
            packer,
            std::io::Cursor::new(whole[..cut].to_vec()),
            2,
            Arc::new(Counters::default()),
        )
        .await;
        assert!(matches!(r, Err(VolumeError::Truncated(_))), "{what}: {r:?}");
    }
}

#[test]
fn the_kubelets_fs_group_changes_are_modelled_exactly() {
    let e = |path: &str, kind: EntryType, mode: u32| FileEntry {
        path: path.into(),
        kind,
        mode,
        uid: 1000,
        gid: 1000,
        size: 0,
        mtime: 0,
        target: (kind == EntryType::Symlink).then(|| "x".into()),
        chunks: vec![],
        hash: None,
    };
    let tree = vec![
        e("db", EntryType::Dir, 0o755),
        e("db/key", EntryType::File, 0o600),
        e("link", EntryType::Symlink, 0o777),
    ];
    let after = as_after_fs_group(&tree, 2000);
    assert_eq!(
        after.iter().map(|e| (e.mode, e.gid)).collect::<Vec<_>>(),
        [(0o2775, 2000), (0o660, 2000), (0o777, 1000)]
    );
    // Exactly those changes, nothing else: another mode is still a difference.
    let mut other = after.clone();
    other[1].mode = 0o664;
    assert_eq!(compare_trees(&after, &other), ["db/key: mode 664, was 660"]);
}
