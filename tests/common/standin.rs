//! Test-only stand-in for the storage and kubelet parts of a cluster that cannot run here (no
//! CSI driver, no real kubelet). It is never part of the product: lifeboat only talks to the API
//! server and cannot tell the difference.
//!
//! For one namespace it plays:
//! - a CSI provisioner: a PVC of class [`CLASS`] gets a hostPath PersistentVolume on a fresh
//!   directory (a copy of the snapshot's directory when the PVC's dataSource is a VolumeSnapshot);
//! - snapshot-controller + CSI snapshotter: a VolumeSnapshot of class [`SNAPSHOT_CLASS`] gets its
//!   source volume's directory copied, a VolumeSnapshotContent, `readyToUse` and `restoreSize`;
//! - the kubelet's exec: each mover pod gets a kwok `Exec` object (run as the pod's user and
//!   group, as a kubelet would) whose working directory is its
//!   volume's directory (docs/dev/kwok-exec.md).
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

pub const CLASS: &str = "lifeboat-test-csi";
/// Not the real test CSI driver's name (`csi.lifeboat.test`): where the real external-provisioner
/// runs (`--real-node`), it must not provision the stand-in's claims.
pub const DRIVER: &str = "standin.lifeboat.test";
pub const SNAPSHOT_CLASS: &str = "lifeboat-test-snapshots";

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn snapshots() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}
fn contents() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
    )
}
fn execs() -> ApiResource {
    ar("kwok.x-k8s.io", "v1alpha1", "Exec", "execs")
}

fn crd(kind: &str, plural: &str, scope: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.snapshot.storage.k8s.io"),
                     // *.k8s.io groups need this; the upstream CRDs carry the same.
                     "annotations": {"api-approved.kubernetes.io":
                         "https://github.com/kubernetes-csi/external-snapshotter/pull/814"}},
        "spec": {"group": "snapshot.storage.k8s.io", "scope": scope,
                 "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                           "listKind": format!("{kind}List")},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

/// The snapshot API (minimal CRDs), the StorageClass and the default VolumeSnapshotClass.
/// Idempotent: test binaries share one cluster.
pub async fn install(client: &kube::Client) {
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        ),
    );
    let ssa = PatchParams::apply("lifeboat-test-standin").force();
    // Where the real snapshot CRDs are installed (the real node's snapshot-controller), they
    // stay: the minimal ones would replace their schemas.
    let real = crds
        .get_opt("volumesnapshots.snapshot.storage.k8s.io")
        .await
        .unwrap()
        .is_some_and(|c| {
            c.metadata
                .managed_fields
                .iter()
                .flatten()
                .all(|m| m.manager.as_deref() != Some("lifeboat-test-standin"))
        });
    for (kind, plural, scope) in [
        ("VolumeSnapshot", "volumesnapshots", "Namespaced"),
        ("VolumeSnapshotContent", "volumesnapshotcontents", "Cluster"),
        ("VolumeSnapshotClass", "volumesnapshotclasses", "Cluster"),
    ]
    .into_iter()
    .filter(|_| !real)
    {
        let name = format!("{plural}.snapshot.storage.k8s.io");
        crds.patch(&name, &ssa, &Patch::Apply(crd(kind, plural, scope)))
            .await
            .unwrap();
    }
    // Established?
    for _ in 0..100 {
        if real {
            break;
        }
        let ok = crds
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|c| {
                c.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.ends_with(".snapshot.storage.k8s.io"))
            })
            .filter(|c| {
                c.data["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                })
            })
            .count()
            == 3;
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sc: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar("storage.k8s.io", "v1", "StorageClass", "storageclasses"),
    );
    sc.patch(
        CLASS,
        &ssa,
        &Patch::Apply(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": CLASS}, "provisioner": DRIVER,
            "reclaimPolicy": "Retain", "volumeBindingMode": "Immediate"}),
        ),
    )
    .await
    .unwrap();
    let vsc: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshotClass",
            "volumesnapshotclasses",
        ),
    );
    for _ in 0..50 {
        let r = vsc
            .patch(
                SNAPSHOT_CLASS,
                &ssa,
                &Patch::Apply(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshotClass",
                    "metadata": {"name": SNAPSHOT_CLASS,
                        "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
                    "driver": DRIVER, "deletionPolicy": "Delete"})),
            )
            .await;
        if r.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// The host directory of a bound claim.
pub async fn claim_dir(client: &kube::Client, ns: &str, claim: &str) -> Option<PathBuf> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .ok()??;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pvc.spec?.volume_name?)
        .await
        .ok()?;
    Some(PathBuf::from(pv.spec?.host_path?.path))
}

/// Run the stand-in for `ns` (and the scratch namespaces of drills of `ns`) with its volumes
/// under `base`, until the handle is aborted.
pub fn run(client: kube::Client, ns: String, base: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        loop {
            let mut served = vec![ns.clone()];
            for n in namespaces
                .list(&ListParams::default().labels("lifeboat.io/drill"))
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let source = n
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("lifeboat.io/drill-source-namespace").cloned());
                if source.as_deref() == Some(ns.as_str()) {
                    served.extend(n.metadata.name);
                }
            }
            for n in &served {
                step(&client, n, &base).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn step(client: &kube::Client, ns: &str, base: &Path) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let snaps: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &snapshots());
    let contents_api: Api<DynamicObject> = Api::all_with(client.clone(), &contents());
    // 1. Provisioning.
    for c in pvcs
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let spec = c.spec.clone().unwrap_or_default();
        if spec.storage_class_name.as_deref() != Some(CLASS) || spec.volume_name.is_some() {
            continue;
        }
        let uid = c.metadata.uid.clone().unwrap_or_default();
        let pv_name = format!("pv-{uid}");
        if pvs.get_opt(&pv_name).await.ok().flatten().is_some() {
            continue;
        }
        let dir = base.join("volumes").join(&uid);
        match spec
            .data_source
            .as_ref()
            .filter(|d| d.kind == "VolumeSnapshot")
        {
            Some(d) => {
                let Ok(Some(s)) = snaps.get_opt(&d.name).await else {
                    continue;
                };
                let Some(suid) = s.metadata.uid.clone() else {
                    continue;
                };
                copy_dir(&base.join("snapshots").join(suid), &dir);
            }
            None => std::fs::create_dir_all(&dir).unwrap(),
        }
        let size = spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .map(|q| q.0)
            .unwrap_or_else(|| "1Gi".into());
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": pv_name, "labels": {"lifeboat.io/test": "true"},
                         "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}},
            "spec": {"capacity": {"storage": size}, "accessModes": spec.access_modes,
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": CLASS,
                     "hostPath": {"path": dir.to_str().unwrap()},
                     "claimRef": {"namespace": ns, "name": c.metadata.name, "uid": uid}}
        }))
        .unwrap();
        let _ = pvs.create(&PostParams::default(), &pv).await;
    }
    // 2. Snapshots.
    for s in snaps
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if s.data["status"]["readyToUse"] == true
            || s.data["spec"]["volumeSnapshotClassName"] != SNAPSHOT_CLASS
        {
            continue;
        }
        let Some(claim) = s.data["spec"]["source"]["persistentVolumeClaimName"].as_str() else {
            continue;
        };
        let Some(dir) = claim_dir(client, ns, claim).await else {
            continue;
        };
        let (name, uid) = (
            s.metadata.name.clone().unwrap_or_default(),
            s.metadata.uid.clone().unwrap_or_default(),
        );
        copy_dir(&dir, &base.join("snapshots").join(&uid));
        let size = pvcs
            .get(claim)
            .await
            .ok()
            .and_then(|c| c.status?.capacity?.get("storage").map(|q| q.0.clone()))
            .unwrap_or_else(|| "1Gi".into());
        let content_name = format!("snapcontent-{uid}");
        let content: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": content_name},
            "spec": {"driver": DRIVER, "deletionPolicy": "Delete",
                     "volumeSnapshotClassName": SNAPSHOT_CLASS,
                     "source": {"snapshotHandle": uid},
                     "volumeSnapshotRef": {"namespace": ns, "name": name, "uid": uid}}
        }))
        .unwrap();
        let _ = contents_api.create(&PostParams::default(), &content).await;
        let _ = snaps
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"boundVolumeSnapshotContentName": content_name,
                    "readyToUse": true, "restoreSize": size,
                    "creationTime": jiff::Timestamp::now().to_string()}}),
                ),
            )
            .await;
    }
    // 3. Exec for mover pods.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let execs_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &execs());
    let lp = ListParams::default().labels("lifeboat.io/mover=true");
    for p in pods.list(&lp).await.map(|l| l.items).unwrap_or_default() {
        let name = p.metadata.name.clone().unwrap_or_default();
        let mapped = p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(EXEC_MAPPED));
        if mapped || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if execs_api.get_opt(&name).await.ok().flatten().is_some() {
            mark_mapped(&pods, &name).await;
            continue;
        }
        let Some(claim) = p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|v| v.iter().find_map(|v| v.persistent_volume_claim.clone()))
            .map(|c| c.claim_name)
        else {
            continue;
        };
        let Some(dir) = claim_dir(client, ns, &claim).await else {
            continue;
        };
        // As a kubelet would: the container's process runs as the pod's user and group.
        let spec = p.spec.clone().unwrap_or_default();
        let psc = spec.security_context.unwrap_or_default();
        let csc = spec
            .containers
            .first()
            .and_then(|c| c.security_context.clone())
            .unwrap_or_default();
        let mut local = json!({"workDir": dir});
        if let Some(uid) = csc.run_as_user.or(psc.run_as_user) {
            local["securityContext"] = json!({
                "runAsUser": uid,
                "runAsGroup": csc.run_as_group.or(psc.run_as_group).unwrap_or(uid),
            });
        }
        let exec: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Exec",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"execs": [{"local": local}]}
        }))
        .unwrap();
        if execs_api
            .create(&PostParams::default(), &exec)
            .await
            .is_ok()
        {
            mark_mapped(&pods, &name).await;
        }
    }
}

/// The annotation that lets kwok run a mover pod (scripts/testenv's pod-ready-exec-mapped
/// stage): set once an exec into the pod reaches its Exec mapping, so that the pod is never
/// reported running before its exec works (a kubelet's exec works as soon as the container runs).
const EXEC_MAPPED: &str = "test.lifeboat.io/exec-mapped";

async fn mark_mapped(pods: &Api<Pod>, name: &str) {
    let ap = kube::api::AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true);
    for _ in 0..50 {
        if let Ok(mut p) = pods.exec(name, ["true"], &ap).await
            && let Some(status) = p.take_status()
            && let Some(s) = status.await
            && s.status.as_deref() == Some("Success")
        {
            let _ = pods
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {EXEC_MAPPED: "true"}}})),
                )
                .await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
