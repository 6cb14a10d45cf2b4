//! Volume data over the real API server: a mover pod's `tar -c` streamed into the repository
//! through `pods/exec`, and a stored tree streamed back into another volume with `tar -x`.
//!
//! These tests cover what tests/real_node.rs (the real kubelet and CSI storage) does not yet:
//! Ctrl-C during data movement, interrupted fills, the root fallback, deduplication of a
//! changed volume, damage in the repository. They run on a control plane without the real
//! snapshot-controller (common::plain_env), which would also act on the stand-in's snapshots.
//!
//! Test-only stand-in (there is no storage or kubelet here): PVCs are bound to hostPath
//! PersistentVolumes on temp directories, and a background task gives every mover pod a kwok
//! `Exec` object whose working directory is its volume's directory, so kwok runs the exec'd tar
//! there (docs/dev/kwok-exec.md). The product code only talks to the API server.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Lifeboat, TestNs, eventually, unique};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use lifeboat::volume::{Counters, mover};
use serde_json::json;

/// A PVC bound to a hostPath PV on `dir`.
async fn volume(ns: &TestNs, name: &str, dir: &Path) {
    let pv_name = unique("lbt-pv");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name, "labels": {"lifeboat.io/test": "true"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "lifeboat-test-hostpath",
                 "hostPath": {"path": dir.to_str().unwrap()},
                 "claimRef": {"namespace": ns.name, "name": name}}
    }))
    .unwrap();
    Api::<PersistentVolume>::all(ns.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "lifeboat-test-hostpath",
                 "volumeName": pv_name, "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    ns.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_streams_out_of_a_mover_pod_and_back_into_another() {
    let ns = TestNs::new_plain("vol-mover").await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("a/secret"), b"s3cret\n").unwrap();
    std::fs::set_permissions(src.join("a/secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(src.join("a/b/run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        src.join("a/b/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("b/run.sh", src.join("a/link")).unwrap();
    let big = noise(64 << 20, 3);
    std::fs::write(src.join("a/b/big.bin"), &big).unwrap();
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    volume(&ns, "data", &src).await;
    volume(&ns, "restored", &dst).await;
    let mapper = common::standin::run(
        ns.client.clone(),
        ns.name.clone(),
        tmp.path().join("standin"),
    );

    let store: lifeboat::store::DynStore = Arc::new(lifeboat::store::local::LocalStore::new(
        tmp.path().join("repo"),
    ));
    let repo = Arc::new(
        lifeboat::repo::Repository::init(
            store,
            b"pw",
            lifeboat::repo::crypto::KdfParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
        )
        .await
        .unwrap(),
    );
    let opts = mover::MoverOptions::default();
    let pod = mover::start(
        &ns.client,
        &ns.name,
        "data",
        mover::Direction::Backup,
        &opts,
        &Default::default(),
    )
    .await
    .unwrap();
    let packer = Arc::new(lifeboat::repo::Packer::with_pack_size(
        repo.clone(),
        lifeboat::volume::PACK_SIZE,
    ));
    let started = Instant::now();
    let (entries, stats) = mover::backup(
        &ns.client,
        &ns.name,
        &pod,
        repo.clone(),
        packer.clone(),
        2,
        Arc::new(Counters::default()),
    )
    .await
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "tar over exec into the repository: {} bytes in {secs:.2}s = {:.1} MB/s",
        stats.bytes,
        stats.bytes as f64 / secs / 1e6
    );
    mover::stop(&ns.client, &ns.name, &pod).await;
    assert_eq!(stats.bytes, big.len() as u64 + 7 + 10);
    assert!(
        entries
            .iter()
            .any(|e| e.path == "a/link" && e.target.as_deref() == Some("b/run.sh"))
    );
    lifeboat::volume::store_tree(&packer, &entries)
        .await
        .unwrap();
    packer.finish().await.unwrap();

    let pod = mover::start(
        &ns.client,
        &ns.name,
        "restored",
        mover::Direction::Restore,
        &opts,
        &Default::default(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    mover::restore(
        &ns.client,
        &ns.name,
        &pod,
        repo.clone(),
        &entries,
        Arc::new(Counters::default()),
    )
    .await
    .unwrap();
    eprintln!(
        "repository into tar -x over exec: {:.1} MB/s",
        stats.bytes as f64 / started.elapsed().as_secs_f64() / 1e6
    );
    mover::stop(&ns.client, &ns.name, &pod).await;
    assert_eq!(std::fs::read(dst.join("a/b/big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(dst.join("a/secret")).unwrap(), b"s3cret\n");
    assert_eq!(
        std::fs::metadata(dst.join("a/secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dst.join("a/b/run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(dst.join("a/link")).unwrap(),
        Path::new("b/run.sh")
    );
    assert_eq!(std::fs::read(dst.join("empty")).unwrap(), b"");
    mapper.abort();
    // The movers are gone.
    let left = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("{}=true", mover::LABEL)))
        .await
        .unwrap();
    assert!(
        left.items
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some()),
        "mover pods left behind"
    );
    let pvs = Api::<PersistentVolume>::all(ns.client.clone());
    for pv in pvs
        .list(&ListParams::default().labels("lifeboat.io/test=true"))
        .await
        .unwrap()
        .items
    {
        if pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| c.namespace.clone())
            == Some(ns.name.clone())
        {
            let _ = pvs
                .delete(&pv.metadata.name.unwrap(), &DeleteParams::default())
                .await;
        }
    }
    ns.cleanup().await;
}

/// Files of every kind the issue names, under `dir`; returns the big file's path.
fn fill(dir: &Path, big: &[u8]) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("nested/deeper/deepest")).unwrap();
    for i in 0..150 {
        let sub = dir.join(format!("nested/d{}", i % 7));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i}.txt")),
            format!("row {i}\n").repeat(i % 13),
        )
        .unwrap();
    }
    std::fs::write(dir.join("nested/deeper/deepest/empty"), b"").unwrap();
    std::fs::write(dir.join("private.key"), b"-----BEGIN KEY-----\n").unwrap();
    std::fs::set_permissions(
        dir.join("private.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(dir.join("start.sh"), b"#!/bin/sh\nexec db\n").unwrap();
    std::fs::set_permissions(dir.join("start.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("nested/deeper", dir.join("shortcut")).unwrap();
    let p = dir.join("big.bin");
    std::fs::write(&p, big).unwrap();
    p
}

/// Every file under `dir`: relative path -> (kind, mode, content hash or link target).
fn snapshot_of(dir: &Path) -> std::collections::BTreeMap<String, (String, u32, String)> {
    fn walk(
        root: &Path,
        d: &Path,
        out: &mut std::collections::BTreeMap<String, (String, u32, String)>,
    ) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    (
                        "link".into(),
                        0,
                        std::fs::read_link(&p).unwrap().display().to_string(),
                    ),
                );
            } else if m.is_dir() {
                out.insert(rel, ("dir".into(), mode, String::new()));
                walk(root, &p, out);
            } else {
                let h = blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string();
                out.insert(rel, ("file".into(), mode, h));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

async fn leftovers(client: &kube::Client, ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("lifeboat.io/mover=true"))
        .await
        .unwrap()
        .items
    {
        if p.metadata.deletion_timestamp.is_none() {
            out.push(format!("pod {}", p.metadata.name.unwrap()));
        }
    }
    for c in Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let n = c.metadata.name.unwrap();
        if n.starts_with("lifeboat-tmp-") && c.metadata.deletion_timestamp.is_none() {
            out.push(format!("pvc {n}"));
        }
    }
    let snaps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &lifeboat::volume::snapshots::snapshot_resource(),
    );
    for s in snaps.list(&ListParams::default()).await.unwrap().items {
        out.push(format!("volumesnapshot {}", s.metadata.name.unwrap()));
    }
    out
}

/// Once `child` moves volume data (a mover pod exists), SIGINT it: it must exit 130 and leave no
/// temporary object behind.
async fn interrupt_during_data_movement(ns: &TestNs, child: &mut std::process::Child, what: &str) {
    eventually("a mover pod", Duration::from_secs(60), || async {
        let pods = Api::<Pod>::namespaced(ns.client.clone(), &ns.name)
            .list(&ListParams::default().labels("lifeboat.io/mover=true"))
            .await
            .ok()?;
        (!pods.items.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "`{what}` finished before the signal"
    );
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        common::wait_bounded(child, &format!("{what} (SIGINT)")).code(),
        Some(130)
    );
    assert!(
        leftovers(&ns.client, &ns.name).await.is_empty(),
        "{:?}",
        leftovers(&ns.client, &ns.name).await
    );
}

/// A namespace served by the storage stand-in (running under the returned temporary directory)
/// with the `db` StatefulSet, its data volume filled with `size` bytes of noise and the usual
/// small files.
async fn noisy_statefulset(
    prefix: &str,
    size: usize,
    seed: u64,
) -> (TestNs, tempfile::TempDir, tokio::task::JoinHandle<()>) {
    let ns = TestNs::new_plain(prefix).await;
    common::standin::install(&ns.client).await;
    let tmp = tempfile::tempdir().unwrap();
    let standin = common::standin::run(
        ns.client.clone(),
        ns.name.clone(),
        tmp.path().join("standin"),
    );
    statefulset(&ns).await;
    let data = dir_of(&ns, "data-db-0").await;
    fill(&data, &noise(size, seed));
    (ns, tmp, standin)
}

/// lifeboat with a new local repository in `dir`.
fn lifeboat_with_repo(dir: &Path) -> Lifeboat {
    let lb = Lifeboat::plain()
        .env(
            "LIFEBOAT_REPO",
            &format!("file://{}", dir.join("repo").display()),
        )
        .env("LIFEBOAT_PASSWORD", "volume-test");
    lb.run(&["repo", "init"]).success();
    lb
}

async fn statefulset(ns: &TestNs) {
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "db", "image": "postgres:16",
                                  "volumeMounts": [{"name": "data", "mountPath": "/var/lib/db"},
                                                   {"name": "logs", "mountPath": "/var/log/db"}]}]}},
                 "volumeClaimTemplates": [
                     {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                      "storageClassName": common::standin::CLASS, "resources": {"requests": {"storage": "2Gi"}}}},
                     {"metadata": {"name": "logs"}, "spec": {"accessModes": ["ReadWriteOnce"],
                      "storageClassName": common::standin::CLASS, "resources": {"requests": {"storage": "1Gi"}}}}]}
    }))
    .unwrap();
    ns.api::<k8s_openapi::api::apps::v1::StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
}

async fn dir_of(ns: &TestNs, claim: &str) -> std::path::PathBuf {
    eventually(
        &format!("claim {claim} bound"),
        Duration::from_secs(60),
        || async { common::standin::claim_dir(&ns.client, &ns.name, claim).await },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_back_up_restore_byte_identical_deduplicate_and_drills_catch_damage() {
    let ns = TestNs::new_plain("vol-e2e").await;
    common::standin::install(&ns.client).await;
    let tmp = tempfile::tempdir().unwrap();
    let standin = common::standin::run(
        ns.client.clone(),
        ns.name.clone(),
        tmp.path().join("standin"),
    );
    statefulset(&ns).await;
    let data = dir_of(&ns, "data-db-0").await;
    let logs = dir_of(&ns, "logs-db-0").await;
    let mut big = noise(200 << 20, 9);
    let big_path = fill(&data, &big);
    std::fs::write(logs.join("db.log"), "started\n".repeat(1000)).unwrap();
    let want_data = snapshot_of(&data);
    let want_logs = snapshot_of(&logs);

    let lb = lifeboat_with_repo(tmp.path());
    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--snapshot-volumes",
        "-o",
        "json",
    ]);
    r.success();
    let first = r.json();
    assert_eq!(first["warnings"], json!([]), "{first:#}");
    assert!(
        leftovers(&ns.client, &ns.name).await.is_empty(),
        "{:?}",
        leftovers(&ns.client, &ns.name).await
    );
    let volume_bytes = big.len() as u64;
    let desc = lb.run(&["backup", "describe", "latest", "-o", "json"]);
    desc.success();
    lb.run(&["backup", "verify", "latest", "--read-data"])
        .success();

    // The namespace is lost; the restore brings back the claims with their data, then the
    // StatefulSet.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone())
        .delete(&ns.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the namespace to be gone",
        Duration::from_secs(90),
        || async {
            Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone())
                .get_opt(&ns.name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let r = lb.run(&["restore", "latest", "-n", &ns.name, "-o", "json"]);
    r.success();
    let rep = r.json();
    let filled: Vec<&serde_json::Value> = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "VolumeData")
        .collect();
    assert_eq!(filled.len(), 2, "{rep:#}");
    assert!(
        filled.iter().all(|i| i["outcome"] == "created"),
        "{filled:?}"
    );
    let data2 = dir_of(&ns, "data-db-0").await;
    let logs2 = dir_of(&ns, "logs-db-0").await;
    assert_ne!(data2, data, "a new volume");
    assert_eq!(snapshot_of(&data2), want_data);
    assert_eq!(snapshot_of(&logs2), want_logs);
    assert!(leftovers(&ns.client, &ns.name).await.is_empty());

    // One MiB of the big file changes: the next backup adds a small fraction.
    let mid = 100 << 20;
    for b in &mut big[mid..mid + (1 << 20)] {
        *b = b.wrapping_add(1);
    }
    std::fs::write(data2.join(big_path.file_name().unwrap()), &big).unwrap();
    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--snapshot-volumes",
        "-o",
        "json",
    ]);
    r.success();
    let added = r.json()["bytesAdded"].as_u64().unwrap();
    assert!(
        added * 10 < volume_bytes,
        "second backup added {added} bytes of {volume_bytes}"
    );

    // A drill of it passes, volume data included.
    let d = lb.run(&[
        "drill",
        "run",
        "-n",
        &ns.name,
        "--timeout",
        "2m",
        "-o",
        "json",
    ]);
    d.success();
    let checks = d.json()["checks"].as_array().unwrap().clone();
    let vol: Vec<&serde_json::Value> = checks
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("volume-data/"))
        .collect();
    assert_eq!(vol.len(), 2, "{checks:#?}");
    assert!(vol.iter().all(|c| c["status"] == "pass"), "{vol:?}");

    // One chunk of the big file is damaged in the repository.
    let repo = Arc::new(
        lifeboat::repo::Repository::open(
            Arc::new(lifeboat::store::local::LocalStore::new(
                tmp.path().join("repo"),
            )),
            b"volume-test",
        )
        .await
        .unwrap(),
    );
    repo.load_index().await.unwrap();
    let (_, snap) = repo.find_snapshot("latest").await.unwrap();
    let v = snap.volumes.iter().find(|v| v.pvc == "data-db-0").unwrap();
    let tree = lifeboat::volume::load_tree(&repo, &v.trees).await.unwrap();
    let chunk = tree.iter().find(|f| f.path == "big.bin").unwrap().chunks[3];
    let loc = repo.index_snapshot().await[&chunk];
    let pack = tmp
        .path()
        .join("repo/data")
        .join(&loc.pack.to_hex()[..2])
        .join(loc.pack.to_hex());
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[loc.offset as usize + 100] ^= 0x55;
    std::fs::write(&pack, bytes).unwrap();
    let d = lb.run(&[
        "drill",
        "run",
        "-n",
        &ns.name,
        "--timeout",
        "2m",
        "-o",
        "json",
    ]);
    d.code_is(2);
    let text = d.stdout();
    assert!(
        text.contains("big.bin"),
        "the drill names the file:\n{text}"
    );
    let vr = lb.run(&["backup", "verify", "latest", "--read-data", "-o", "json"]);
    vr.code_is(2);
    let damaged = vr.json()["damaged"].clone();
    assert!(
        damaged
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["object"] == format!("volume {}/data-db-0: file big.bin", ns.name)),
        "{damaged:#}"
    );
    standin.abort();
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_data_movement_cleans_up_and_lists_no_backup() {
    let (ns, tmp, standin) = noisy_statefulset("vol-ctrlc", 300 << 20, 11).await;
    let lb = lifeboat_with_repo(tmp.path());
    let mut child = lb.spawn(&["backup", "create", "-n", &ns.name, "--snapshot-volumes"]);
    interrupt_during_data_movement(&ns, &mut child, "backup create --snapshot-volumes").await;
    let list = lb.run(&["backup", "list", "-o", "json"]);
    list.success();
    assert_eq!(
        list.json().as_array().map(|a| a.len()).unwrap_or(0),
        0,
        "{}",
        list.stdout()
    );
    standin.abort();
    ns.cleanup().await;
}

/// The users the stand-in's kubelet ran mover execs as (one per mover pod, sorted), from its
/// Exec objects.
async fn mover_users(ns: &TestNs) -> Vec<i64> {
    let execs: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kube::discovery::ApiResource {
            group: "kwok.x-k8s.io".into(),
            version: "v1alpha1".into(),
            api_version: "kwok.x-k8s.io/v1alpha1".into(),
            kind: "Exec".into(),
            plural: "execs".into(),
        },
    );
    let mut users: Vec<i64> = execs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            e.data["spec"]["execs"][0]["local"]["securityContext"]["runAsUser"]
                .as_i64()
                .expect("every mover says which user it runs as")
        })
        .collect();
    users.sort();
    users
}

/// A workload running as a non-root user has its volume read by a mover running as that user
/// with no capabilities. A file that user cannot read (left by a root init step) makes lifeboat
/// read the volume again as root, and nothing is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_read_as_the_workloads_user_and_as_root_only_when_it_must() {
    use std::os::unix::fs::chown;
    const NOBODY: u32 = 65534;
    let ns = TestNs::new_plain("vol-user").await;
    common::standin::install(&ns.client).await;
    let tmp = tempfile::tempdir().unwrap();
    // The stand-in's kubelet runs the mover as that user: it must reach the volume directories.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let standin = common::standin::run(
        ns.client.clone(),
        ns.name.clone(),
        tmp.path().join("standin"),
    );
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"replicas": 1, "serviceName": "app", "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"securityContext": {"runAsUser": NOBODY, "runAsGroup": NOBODY,
                                                           "fsGroup": NOBODY},
                                       "containers": [{"name": "app", "image": "app:1",
                                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                 "volumeClaimTemplates": [
                     {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                      "storageClassName": common::standin::CLASS, "resources": {"requests": {"storage": "1Gi"}}}}]}
    }))
    .unwrap();
    ns.api::<k8s_openapi::api::apps::v1::StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    // The pod must exist for lifeboat to see who uses the claim.
    eventually("pod app-0", Duration::from_secs(60), || async {
        ns.api::<Pod>().get_opt("app-0").await.ok().flatten()
    })
    .await;
    let data = dir_of(&ns, "data-app-0").await;
    std::fs::create_dir_all(data.join("db")).unwrap();
    for i in 0..20 {
        std::fs::write(data.join(format!("db/t{i}")), format!("row {i}\n")).unwrap();
    }
    std::fs::write(data.join("db/key"), b"only the app reads this").unwrap();
    std::fs::set_permissions(data.join("db/key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    for p in std::iter::once(data.clone())
        .chain(std::iter::once(data.join("db")))
        .chain(
            std::fs::read_dir(data.join("db"))
                .unwrap()
                .map(|e| e.unwrap().path()),
        )
    {
        chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let lb = lifeboat_with_repo(tmp.path());
    let backup = || {
        let r = lb.run(&[
            "backup",
            "create",
            "-n",
            &ns.name,
            "--snapshot-volumes",
            "-o",
            "json",
        ]);
        r.success();
        let j = r.json();
        assert_eq!(j["volumes"].as_array().map(Vec::len), Some(1), "{j:#}");
        (j["volumes"][0]["files"].as_u64().unwrap(), r)
    };
    let (files, _) = backup();
    assert_eq!(files, 21);
    assert_eq!(mover_users(&ns).await, vec![NOBODY as i64]);

    // A root-only file: the non-root read fails, the root read gets everything.
    std::fs::write(data.join("db/root-only"), b"written by a root init step").unwrap();
    std::fs::set_permissions(
        data.join("db/root-only"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let (files, r) = backup();
    assert_eq!(files, 22);
    assert!(r.stderr().contains("reading as root"), "{}", r.stderr());
    assert_eq!(
        mover_users(&ns).await,
        vec![0, NOBODY as i64, NOBODY as i64]
    );
    assert!(
        leftovers(&ns.client, &ns.name).await.is_empty(),
        "{:?}",
        leftovers(&ns.client, &ns.name).await
    );
    standin.abort();
    ns.cleanup().await;
}

/// Ctrl-C while a runbook's `backup` step moves volume data: the run stops with 130 and the
/// step's temporary snapshot, claim and mover pod are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_a_runbook_backup_step_cleans_up_its_volume_objects() {
    let (ns, tmp, standin) = noisy_statefulset("vol-rb", 300 << 20, 12).await;
    let lb = lifeboat_with_repo(tmp.path());
    let rb = tmp.path().join("rb.yaml");
    std::fs::write(
        &rb,
        format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: vol-backup}}\nsteps:\n  - id: backup\n    backup: {{namespaces: [{}], snapshotVolumes: true}}\n",
            ns.name
        ),
    )
    .unwrap();
    let plan = tmp.path().join("plan.yaml");
    lb.run(&[
        "runbook",
        "plan",
        rb.to_str().unwrap(),
        "-f",
        plan.to_str().unwrap(),
    ])
    .success();
    let mut child = lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    interrupt_during_data_movement(&ns, &mut child, "runbook run").await;
    standin.abort();
    ns.cleanup().await;
}

/// A runbook backup step that runs out of its `timeout` while moving volume data: the step
/// fails and its snapshot, claim and mover pod are deleted (the step's future is abandoned, so
/// the engine cleans up for it). 300 MiB take well over the 3 s the step is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_backup_step_that_times_out_leaves_no_volume_objects() {
    let (ns, tmp, standin) = noisy_statefulset("vol-rbto", 300 << 20, 14).await;
    let lb = lifeboat_with_repo(tmp.path());
    let rb = tmp.path().join("rb.yaml");
    std::fs::write(
        &rb,
        format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: vol-backup-timeout}}\nsteps:\n  - id: backup\n    backup: {{namespaces: [{}], snapshotVolumes: true}}\n    timeout: 3s\n",
            ns.name
        ),
    )
    .unwrap();
    let plan = tmp.path().join("plan.yaml");
    lb.run(&[
        "runbook",
        "plan",
        rb.to_str().unwrap(),
        "-f",
        plan.to_str().unwrap(),
    ])
    .success();
    let r = lb.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    r.code_is(2);
    assert!(r.stdout().contains("timed out"), "{}", r.describe());
    assert!(
        leftovers(&ns.client, &ns.name).await.is_empty(),
        "{:?}",
        leftovers(&ns.client, &ns.name).await
    );
    standin.abort();
    ns.cleanup().await;
}

/// Ctrl-C while a restore fills a volume: exit 130 and its mover pod is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_volume_restore_deletes_its_mover() {
    let (ns, tmp, standin) = noisy_statefulset("vol-rctrlc", 200 << 20, 13).await;
    let lb = lifeboat_with_repo(tmp.path());
    lb.run(&["backup", "create", "-n", &ns.name, "--snapshot-volumes"])
        .success();
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the namespace to be gone",
        Duration::from_secs(90),
        || async {
            namespaces
                .get_opt(&ns.name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let mut child = lb.spawn(&["restore", "latest", "-n", &ns.name]);
    interrupt_during_data_movement(&ns, &mut child, "restore").await;
    standin.abort();
    ns.cleanup().await;
}

/// A restore interrupted while it fills a volume leaves a claim carrying the restore label but
/// no completion record (`lifeboat.io/restored-from`). The next run never accepts it as it is:
/// while a pod uses the claim it is a failure (exit 2); otherwise the volume is filled again and
/// ends byte-identical to the backup, and a third run finds the record and skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_volume_fill_is_never_accepted_and_is_filled_again() {
    let (ns, tmp, standin) = noisy_statefulset("vol-refill", 200 << 20, 17).await;
    let want = snapshot_of(&dir_of(&ns, "data-db-0").await);
    let lb = lifeboat_with_repo(tmp.path());
    lb.run(&["backup", "create", "-n", &ns.name, "--snapshot-volumes"])
        .success();
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the namespace to be gone",
        Duration::from_secs(90),
        || async {
            namespaces
                .get_opt(&ns.name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let mut child = lb.spawn(&["restore", "latest", "-n", &ns.name]);
    interrupt_during_data_movement(&ns, &mut child, "restore").await;
    let claims = ns.api::<PersistentVolumeClaim>();
    let annotations =
        |c: &PersistentVolumeClaim| c.metadata.annotations.clone().unwrap_or_default();
    let partial = claims.get("data-db-0").await.unwrap();
    assert!(
        !annotations(&partial).contains_key("lifeboat.io/restored-from"),
        "an interrupted fill is not recorded as complete: {:?}",
        partial.metadata
    );

    // A pod uses the half-filled claim: reported as failed, never skipped.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "user"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data-db-0"}}]}
    }))
    .unwrap();
    ns.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let r = lb.run(&["restore", "latest", "-n", &ns.name, "-o", "json"]);
    r.code_is(2);
    let rep = r.json();
    let item = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "VolumeData" && i["name"] == "data-db-0")
        .cloned()
        .unwrap_or_else(|| panic!("{rep:#}"));
    assert_eq!(item["outcome"], "failed", "{rep:#}");
    assert!(
        item["message"].as_str().unwrap().contains("pod user"),
        "{item}"
    );
    ns.api::<Pod>()
        .delete("user", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("pod user gone", Duration::from_secs(60), || async {
        ns.api::<Pod>()
            .get_opt("user")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    // Nothing uses it now: filled again, identical to the backup, and recorded.
    let r = lb.run(&["restore", "latest", "-n", &ns.name, "-o", "json"]);
    r.success();
    let rep = r.json();
    let item = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "VolumeData" && i["name"] == "data-db-0")
        .cloned()
        .unwrap_or_else(|| panic!("{rep:#}"));
    assert_eq!(item["outcome"], "created", "{rep:#}");
    assert_eq!(snapshot_of(&dir_of(&ns, "data-db-0").await), want);
    let done = claims.get("data-db-0").await.unwrap();
    let record = annotations(&done)
        .get("lifeboat.io/restored-from")
        .cloned()
        .unwrap_or_else(|| panic!("no completion record: {:?}", done.metadata));
    let backup_id = rep["backup"].as_str().unwrap();
    assert!(
        record.starts_with(backup_id),
        "{record} names backup {backup_id}"
    );

    // A third run finds the record: skipped, exit 0.
    let r = lb.run(&["restore", "latest", "-n", &ns.name, "-o", "json"]);
    r.success();
    let rep = r.json();
    assert!(
        rep["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "VolumeData"
                && i["name"] == "data-db-0"
                && i["outcome"] == "skipped"),
        "{rep:#}"
    );
    standin.abort();
    ns.cleanup().await;
}
