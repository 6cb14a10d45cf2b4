//! Volume data over the real API server: a mover pod's `tar -c` streamed into the repository
//! through `pods/exec`, and a stored tree streamed back into another volume with `tar -x`.
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

use common::{TestNs, unique};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use lifeboat::volume::{Counters, mover};
use serde_json::json;

fn exec_resource() -> ApiResource {
    ApiResource {
        group: "kwok.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "kwok.x-k8s.io/v1alpha1".into(),
        kind: "Exec".into(),
        plural: "execs".into(),
    }
}

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

/// The stand-in's kubelet part: an Exec object for every mover pod, running in its volume's
/// host directory.
fn exec_mapper(client: kube::Client, ns: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let pvs: Api<PersistentVolume> = Api::all(client.clone());
        let execs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &exec_resource());
        loop {
            let lp = ListParams::default().labels(&format!("{}=true", mover::LABEL));
            for p in pods.list(&lp).await.map(|l| l.items).unwrap_or_default() {
                let name = p.metadata.name.clone().unwrap_or_default();
                if execs.get_opt(&name).await.ok().flatten().is_some() {
                    continue;
                }
                let Some(claim) = p
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("lifeboat.io/pvc").cloned())
                else {
                    continue;
                };
                let Ok(pvc) = pvcs.get(&claim).await else {
                    continue;
                };
                let Some(pv_name) = pvc.spec.and_then(|s| s.volume_name) else {
                    continue;
                };
                let Ok(pv) = pvs.get(&pv_name).await else {
                    continue;
                };
                let Some(dir) = pv.spec.and_then(|s| s.host_path).map(|h| h.path) else {
                    continue;
                };
                let exec: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Exec",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"execs": [{"local": {"workDir": dir}}]}
                }))
                .unwrap();
                let _ = execs.create(&PostParams::default(), &exec).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
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
    let ns = TestNs::new("vol-mover").await;
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
    let mapper = exec_mapper(ns.client.clone(), ns.name.clone());

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
