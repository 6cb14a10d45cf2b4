//! Restore never harms the source (issue 12): volumes are never shared or taken over, claims
//! that cannot bind are named with exit 2, a partly filled volume is never accepted.
//!
//! Storage here is the test-only stand-in (tests/common/standin.rs): claims of its class in the
//! namespaces it serves get a fresh hostPath volume; nothing else provisions volumes, and the
//! real kube-controller-manager binds claims to existing PersistentVolumes.
mod common;

use std::path::Path;
use std::time::Duration;

use common::{Lifeboat, TestNs, eventually, unique};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

/// lifeboat with a new local repository in `dir`.
fn lifeboat_with_repo(dir: &Path) -> Lifeboat {
    let lb = Lifeboat::new()
        .env(
            "LIFEBOAT_REPO",
            &format!("file://{}", dir.join("repo").display()),
        )
        .env("LIFEBOAT_PASSWORD", "restore-safety-test");
    lb.run(&["repo", "init"]).success();
    lb
}

/// A pre-provisioned PersistentVolume (hostPath on `dir`, reclaim policy `reclaim`, class
/// `class`) and the claim `name` of `ns` bound to it; waits until both are Bound. Returns the
/// PV's name.
async fn bound_static_volume(
    ns: &TestNs,
    name: &str,
    dir: &Path,
    reclaim: &str,
    class: &str,
) -> String {
    let pv_name = unique("lbt-rs-pv");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name, "labels": {"lifeboat.io/test": "true"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": reclaim, "storageClassName": class,
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
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "volumeName": pv_name, "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    ns.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    let pvs: Api<PersistentVolume> = Api::all(ns.client.clone());
    eventually(
        &format!("claim {name} and PV {pv_name} Bound"),
        Duration::from_secs(60),
        || async {
            let c = ns.api::<PersistentVolumeClaim>().get(name).await.ok()?;
            let v = pvs.get(&pv_name).await.ok()?;
            (c.status?.phase.as_deref() == Some("Bound")
                && v.status?.phase.as_deref() == Some("Bound"))
            .then_some(())
        },
    )
    .await;
    pv_name
}

/// What must not change on the source: (claim uid, claim volumeName, claim phase, PV uid,
/// PV claimRef namespace/name/uid, PV phase).
async fn source_state(client: &kube::Client, ns: &str, claim: &str, pv: &str) -> Value {
    let c = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .unwrap();
    let v = Api::<PersistentVolume>::all(client.clone())
        .get_opt(pv)
        .await
        .unwrap();
    json!({
        "claim": c.map(|c| json!({
            "uid": c.metadata.uid,
            "volumeName": c.spec.and_then(|s| s.volume_name),
            "phase": c.status.and_then(|s| s.phase),
        })),
        "pv": v.map(|v| {
            let spec = v.spec.unwrap_or_default();
            json!({
                "uid": v.metadata.uid,
                "claimRef": spec.claim_ref.map(|r| json!([r.namespace, r.name, r.uid])),
                "reclaim": spec.persistent_volume_reclaim_policy,
                "phase": v.status.and_then(|s| s.phase),
            })
        }),
    })
}

fn items<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == kind)
        .collect()
}

async fn delete_namespace(client: &kube::Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// The scenario: a claim bound to a pre-provisioned PV with reclaim policy Delete, no
/// volume data in the backup, restored into another namespace of the same cluster, then again
/// with `--existing update`. The copy gets a new empty volume; the source's PV and claim stay
/// exactly as they were (and the PV's disk is not deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_restore_gives_a_new_empty_volume_and_never_touches_the_source_volume() {
    let src = TestNs::new("rs-src").await;
    common::standin::install(&src.client).await;
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("production-disk");
    std::fs::create_dir_all(&disk).unwrap();
    std::fs::write(disk.join("orders.db"), b"production data").unwrap();
    let pv = bound_static_volume(&src, "data", &disk, "Delete", common::standin::CLASS).await;
    let before = source_state(&src.client, &src.name, "data", &pv).await;
    assert_eq!(before["pv"]["phase"], "Bound", "{before:#}");

    let dst = unique("lbt-rs-dst");
    // The copy's claim (class of the stand-in) is provisioned by the stand-in in `dst`.
    let standin = common::standin::run(src.client.clone(), dst.clone(), tmp.path().join("standin"));
    let lb = lifeboat_with_repo(tmp.path());
    lb.run(&["backup", "create", "-n", &src.name]).success();

    let map = format!("{}={dst}", src.name);
    let r = lb.run(&["restore", "latest", "--namespace-map", &map, "-o", "json"]);
    r.success();
    let rep = r.json();
    let claims = items(&rep, "PersistentVolumeClaim");
    assert_eq!(claims.len(), 1, "{rep:#}");
    assert_eq!(claims[0]["outcome"], "created", "{rep:#}");
    assert!(
        claims[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("new empty volume")),
        "the report says the copy gets a new empty volume: {rep:#}"
    );
    for p in items(&rep, "PersistentVolume") {
        assert_eq!(
            p["outcome"], "skipped",
            "the source's PV is not restored: {rep:#}"
        );
    }
    let copy = Api::<PersistentVolumeClaim>::namespaced(src.client.clone(), &dst);
    let bound_to = eventually(
        "the copy's claim Bound",
        Duration::from_secs(60),
        || async {
            let c = copy.get("data").await.ok()?;
            (c.status?.phase.as_deref() == Some("Bound")).then_some(())?;
            c.spec?.volume_name
        },
    )
    .await;
    assert_ne!(bound_to, pv, "the copy never shares the source's volume");
    assert_eq!(
        source_state(&src.client, &src.name, "data", &pv).await,
        before,
        "the source's claim and PV are untouched"
    );

    // Again with --existing update: the PV is never changed (claimRef included), never deleted.
    let r = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &map,
        "--existing",
        "update",
        "-o",
        "json",
    ]);
    r.success();
    let rep = r.json();
    for p in items(&rep, "PersistentVolume") {
        assert_ne!(p["outcome"], "updated", "{rep:#}");
    }
    // Give the PV controller time to act on anything that was changed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        source_state(&src.client, &src.name, "data", &pv).await,
        before,
        "the source's claim and PV are untouched after --existing update"
    );
    assert_eq!(
        std::fs::read(disk.join("orders.db")).unwrap(),
        b"production data",
        "the source's disk is intact"
    );
    standin.abort();
    delete_namespace(&src.client, &dst).await;
    let _ = Api::<PersistentVolume>::all(src.client.clone())
        .delete(&pv, &DeleteParams::default())
        .await;
    src.cleanup().await;
}

/// A restored claim that cannot bind (its StorageClass does not exist in the target) is named,
/// with the reason, and the restore exits 2 once the bind timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_cannot_bind_is_named_with_its_reason_and_exit_2() {
    let src = TestNs::new("rs-nobind").await;
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let class = unique("lbt-rs-missing");
    let pv = bound_static_volume(&src, "data", &disk, "Retain", &class).await;
    let before = source_state(&src.client, &src.name, "data", &pv).await;
    let lb = lifeboat_with_repo(tmp.path());
    lb.run(&["backup", "create", "-n", &src.name]).success();

    let dst = unique("lbt-rs-nobind-dst");
    let map = format!("{}={dst}", src.name);
    let r = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &map,
        "--bind-timeout",
        "10",
        "-o",
        "json",
    ]);
    r.code_is(2);
    let rep = r.json();
    let claims = items(&rep, "PersistentVolumeClaim");
    assert_eq!(claims.len(), 1, "{rep:#}");
    assert_eq!(claims[0]["outcome"], "failed", "{rep:#}");
    let msg = claims[0]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("still Pending")
            && msg.contains(&format!("StorageClass {class} does not exist")),
        "{rep:#}"
    );
    // The table says the same.
    let r = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &map,
        "--bind-timeout",
        "3",
    ]);
    r.code_is(2);
    assert!(
        r.stdout()
            .contains(&format!("PersistentVolumeClaim/{dst}/data"))
            && r.stdout().contains("still Pending"),
        "{}",
        r.describe()
    );
    assert_eq!(
        source_state(&src.client, &src.name, "data", &pv).await,
        before,
        "the source's claim and PV are untouched"
    );
    delete_namespace(&src.client, &dst).await;
    let _ = Api::<PersistentVolume>::all(src.client.clone())
        .delete(&pv, &DeleteParams::default())
        .await;
    src.cleanup().await;
}

/// The `default` ServiceAccount's settings come back (merged into the one the cluster made), and
/// a Job a CronJob created is not restored (the CronJob is, and makes its Jobs again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_service_account_is_merged_and_cronjob_jobs_are_not_restored() {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let src = TestNs::new("rs-merge").await;
    let sas = src.api::<ServiceAccount>();
    eventually(
        "default ServiceAccount",
        Duration::from_secs(30),
        || async { sas.get_opt("default").await.ok().flatten() },
    )
    .await;
    sas.patch(
        "default",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            json!({"metadata": {"annotations": {"example.com/role": "shop"}},
                                        "imagePullSecrets": [{"name": "registry"}]}),
        ),
    )
    .await
    .unwrap();
    let tmpl = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "suspend": true,
                 "jobTemplate": {"spec": {"template": tmpl}}}
    }))
    .unwrap();
    let cj = src
        .api::<CronJob>()
        .create(&PostParams::default(), &cj)
        .await
        .unwrap();
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "nightly-29000000", "ownerReferences": [{"apiVersion": "batch/v1",
            "kind": "CronJob", "name": "nightly", "uid": cj.metadata.uid, "controller": true}]},
        "spec": {"suspend": true, "template": tmpl}
    }))
    .unwrap();
    src.api::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_with_repo(tmp.path());
    lb.run(&["backup", "create", "-n", &src.name]).success();
    let dst = unique("lbt-rs-merge-dst");
    let map = format!("{}={dst}", src.name);
    let r = lb.run(&["restore", "latest", "--namespace-map", &map, "-o", "json"]);
    r.success();
    let rep = r.json();
    let sa = Api::<ServiceAccount>::namespaced(src.client.clone(), &dst)
        .get("default")
        .await
        .unwrap();
    assert_eq!(
        sa.image_pull_secrets
            .unwrap_or_default()
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>(),
        ["registry"],
        "{rep:#}"
    );
    assert_eq!(
        sa.metadata.annotations.unwrap_or_default()["example.com/role"],
        "shop"
    );
    let jobs = Api::<Job>::namespaced(src.client.clone(), &dst);
    assert!(
        jobs.get_opt("nightly-29000000").await.unwrap().is_none(),
        "the CronJob's Job is not restored: {rep:#}"
    );
    let item = items(&rep, "Job")
        .into_iter()
        .find(|i| i["name"] == "nightly-29000000")
        .cloned()
        .unwrap_or_else(|| panic!("{rep:#}"));
    assert_eq!(item["outcome"], "skipped");
    assert!(
        Api::<CronJob>::namespaced(src.client.clone(), &dst)
            .get_opt("nightly")
            .await
            .unwrap()
            .is_some()
    );
    delete_namespace(&src.client, &dst).await;
    src.cleanup().await;
}

/// `--storage-class-map`: a claim of a class the target does not have is restored with the
/// target's class, and binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_class_map_restores_claims_into_the_targets_storage() {
    let src = TestNs::new("rs-scmap").await;
    common::standin::install(&src.client).await;
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let class = unique("lbt-rs-old-class");
    let pv = bound_static_volume(&src, "data", &disk, "Retain", &class).await;
    let lb = lifeboat_with_repo(tmp.path());
    lb.run(&["backup", "create", "-n", &src.name]).success();
    let dst = unique("lbt-rs-scmap-dst");
    let standin = common::standin::run(src.client.clone(), dst.clone(), tmp.path().join("standin"));
    let r = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &format!("{}={dst}", src.name),
        "--storage-class-map",
        &format!("{class}={}", common::standin::CLASS),
        "--bind-timeout",
        "60",
        "-o",
        "json",
    ]);
    r.success();
    let c = Api::<PersistentVolumeClaim>::namespaced(src.client.clone(), &dst)
        .get("data")
        .await
        .unwrap();
    let spec = c.spec.unwrap();
    assert_eq!(
        spec.storage_class_name.as_deref(),
        Some(common::standin::CLASS)
    );
    assert_ne!(spec.volume_name.as_deref(), Some(pv.as_str()));
    assert_eq!(
        c.status.unwrap().phase.as_deref(),
        Some("Bound"),
        "{}",
        r.describe()
    );
    standin.abort();
    delete_namespace(&src.client, &dst).await;
    let _ = Api::<PersistentVolume>::all(src.client.clone())
        .delete(&pv, &DeleteParams::default())
        .await;
    src.cleanup().await;
}

/// ownerReferences point at the restored owners' new UIDs, also when the owner is restored in a
/// later phase than the object it owns (a Secret owned by a Service); a reference to an owner
/// that is not restored is dropped and said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_references_are_relinked_to_the_restored_owners() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
    let src = TestNs::new("rs-owners").await;
    let pp = PostParams::default();
    let parent: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "parent"}, "data": {"a": "b"}}))
            .unwrap();
    let parent = src.api::<ConfigMap>().create(&pp, &parent).await.unwrap();
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}}))
    .unwrap();
    let svc = src.api::<Service>().create(&pp, &svc).await.unwrap();
    let child: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "child",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": parent.metadata.uid}]}}))
    .unwrap();
    src.api::<ConfigMap>().create(&pp, &child).await.unwrap();
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "web-cert",
        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": svc.metadata.uid}]},
        "stringData": {"k": "v"}}))
    .unwrap();
    src.api::<Secret>().create(&pp, &secret).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_with_repo(tmp.path());
    lb.run(&["backup", "create", "-n", &src.name]).success();
    let dst = unique("lbt-rs-owners-dst");
    let r = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &format!("{}={dst}", src.name),
        "--exclude-resources",
        "services",
        "-o",
        "json",
    ]);
    r.success();
    let cms = Api::<ConfigMap>::namespaced(src.client.clone(), &dst);
    let new_parent = cms.get("parent").await.unwrap();
    let refs = cms
        .get("child")
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap_or_default();
    assert_eq!(refs.len(), 1, "{}", r.describe());
    assert_eq!(refs[0].uid, new_parent.metadata.uid.unwrap());
    assert_ne!(Some(refs[0].uid.clone()), parent.metadata.uid);
    // The Service was not restored: the Secret's reference is dropped, and the report says so.
    let s = Api::<Secret>::namespaced(src.client.clone(), &dst)
        .get("web-cert")
        .await
        .unwrap();
    assert!(s.metadata.owner_references.unwrap_or_default().is_empty());
    let rep = r.json();
    let item = items(&rep, "Secret")
        .into_iter()
        .find(|i| i["name"] == "web-cert")
        .cloned()
        .unwrap();
    assert!(
        item["message"]
            .as_str()
            .is_some_and(|m| m.contains("Service/web")),
        "{item}"
    );
    // Now with the Service (phase 7, after the Secret's phase 5).
    delete_namespace(&src.client, &dst).await;
    let dst2 = unique("lbt-rs-owners-dst2");
    lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &format!("{}={dst2}", src.name),
    ])
    .success();
    let new_svc = Api::<Service>::namespaced(src.client.clone(), &dst2)
        .get("web")
        .await
        .unwrap();
    let refs = Api::<Secret>::namespaced(src.client.clone(), &dst2)
        .get("web-cert")
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap_or_default();
    assert_eq!(refs.len(), 1);
    assert_eq!(Some(refs[0].uid.clone()), new_svc.metadata.uid);
    delete_namespace(&src.client, &dst2).await;
    src.cleanup().await;
}
