//! Backup and restore against the real control plane, with the repository in a local directory
//! and on the local S3 server.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{Lifeboat, TestNs, env, eventually, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use serde_json::{Value, json};

const SECRET_VALUE: &str = "s3cr3t-P4ssw0rd-that-must-never-leak";
const PASSWORD: &str = "correct horse battery staple";

/// A repository (local or S3) and a lifeboat runner configured for it.
struct Repo {
    url: String,
    dir: Option<std::path::PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Repo {
    fn local() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        Repo {
            url: format!("file://{}", dir.display()),
            dir: Some(dir),
            _tmp: tmp,
        }
    }

    async fn s3() -> Repo {
        let bucket = unique("lbt-backup");
        common::s3_client_with(None)
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        Repo {
            url: format!("s3://{bucket}/cluster-a"),
            dir: None,
            _tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn lb(&self) -> Lifeboat {
        let s3 = &env().s3;
        Lifeboat::new()
            .env("LIFEBOAT_REPO", &self.url)
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("LIFEBOAT_S3_ENDPOINT", &s3.endpoint)
            .env("AWS_ACCESS_KEY_ID", &s3.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
            .env("AWS_REGION", &s3.region)
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

async fn create_dyn(client: &kube::Client, ns: Option<&str>, v: Value) {
    let api_version = v["apiVersion"].as_str().unwrap().to_string();
    let kind = v["kind"].as_str().unwrap().to_string();
    let (group, version) = api_version
        .rsplit_once('/')
        .map(|(g, v)| (g.to_string(), v.to_string()))
        .unwrap_or((String::new(), api_version.clone()));
    let gvk = GroupVersionKind::gvk(&group, &version, &kind);
    let (ar, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{gvk:?}: {e}"));
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.create(&PostParams::default(), &obj(v))
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

/// Every kind of the round-trip list, in namespace `ns`. Returns the CRD name.
async fn populate(ns: &TestNs) -> String {
    let c = &ns.client;
    let n = Some(ns.name.as_str());
    let tol = json!([{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]);
    let group = format!("{}.example.com", unique("lbtb"));
    let crd_name = format!("gadgets.{group}");
    let crd: CustomResourceDefinition = obj(json!({
        "metadata": {"name": crd_name},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }));
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    eventually("CRD established", Duration::from_secs(30), || async {
        let c = crds.get(&crd_name).await.ok()?;
        c.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;

    for v in [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "labels": {"app": "web"}}, "data": {"mode": "prod", "big": "x".repeat(2000)}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "type": "Opaque", "stringData": {"password": SECRET_VALUE}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "web-reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": ns.name}]}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-np"}, "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db-headless"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"serviceAccountName": "web", "tolerations": tol,
                            "containers": [{"name": "web", "image": "nginx:1.27", "envFrom": [{"configMapRef": {"name": "settings"}}]}]}}}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
               "spec": {"serviceName": "db-headless", "replicas": 1, "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"tolerations": tol, "containers": [{"name": "db", "image": "postgres:16"}]}}}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny-all"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
               "spec": {"rules": [{"host": "web.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 5,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": format!("{group}/v1"), "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"size": 3}, "status": {"phase": "Ready"}}),
    ] {
        create_dyn(c, n, v).await;
    }
    // Some bulk, as in a real namespace (the snapshot's own metadata is then a small part).
    for i in 0..40 {
        create_dyn(c, n, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("bulk-{i:02}")},
            "data": {"config.yaml": format!("# generated {i}\n{}", "key: value\n".repeat(60 + i))}})).await;
    }
    // Let the controllers settle, so a second backup sees an unchanged namespace.
    let deps: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    eventually("Deployment Available", Duration::from_secs(90), || async {
        let d = deps.get("web").await.ok()?;
        d.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
            .then_some(())
    })
    .await;
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(c.clone(), &ns.name);
    eventually("StatefulSet ready", Duration::from_secs(90), || async {
        (sts.get("db").await.ok()?.status?.ready_replicas == Some(1)).then_some(())
    })
    .await;
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(c.clone(), &ns.name);
    eventually("PDB status", Duration::from_secs(90), || async {
        (pdbs.get("web").await.ok()?.status?.current_healthy == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    crd_name
}

/// The objects of a namespace that a backup covers, by "kind/name" (kinds with group).
async fn snapshot_of(
    client: &kube::Client,
    ns: &str,
    crd_group: &str,
) -> BTreeMap<String, (String, String, Value)> {
    let mut out = BTreeMap::new();
    let kinds: Vec<(&str, &str, &str, &str)> = vec![
        ("", "v1", "ConfigMap", "configmaps"),
        ("", "v1", "Secret", "secrets"),
        ("", "v1", "ServiceAccount", "serviceaccounts"),
        ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
        ),
        ("", "v1", "Service", "services"),
        ("apps", "v1", "Deployment", "deployments"),
        ("apps", "v1", "StatefulSet", "statefulsets"),
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
        ),
        ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
        ),
        (
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
        ),
        ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        (crd_group, "v1", "Gadget", "gadgets"),
    ];
    for (g, ver, k, plural) in kinds {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, ver, k), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        for o in api.list(&ListParams::default()).await.unwrap().items {
            let name = o.metadata.name.clone().unwrap();
            if name == "kube-root-ca.crt" || (k == "ServiceAccount" && name == "default") {
                continue;
            }
            let mut v = serde_json::to_value(&o).unwrap();
            v["apiVersion"] = json!(if g.is_empty() {
                ver.to_string()
            } else {
                format!("{g}/{ver}")
            });
            v["kind"] = json!(k);
            out.insert(
                format!("{k}/{name}"),
                (g.to_string(), plural.to_string(), v),
            );
        }
    }
    out
}

fn normalised(group: &str, resource: &str, v: &Value, map: &BTreeMap<String, String>) -> Value {
    let rw = lifeboat::restore::rules::RewriteOptions {
        namespace_map: map.clone(),
        preserve_nodeports: false,
        restore_id: "x".into(),
        ..Default::default()
    };
    let mapped = lifeboat::restore::rules::rewrite(group, resource, v.clone(), &rw);
    let mut n = lifeboat::restore::rules::normalise(group, resource, &mapped);
    if let Some(m) = n["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    n
}

fn grep_repo(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if std::fs::read(e.path())
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(e.path().display().to_string());
            }
        }
    }
    hits
}

async fn round_trip(repo: Repo) {
    let src = TestNs::new("rt-src").await;
    let crd_name = populate(&src).await;
    let group = crd_name.trim_start_matches("gadgets.").to_string();
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();

    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &src.name,
        "--tag",
        "purpose=test",
        "-o",
        "json",
    ]);
    r.success();
    let first = r.json();
    assert!(first["objects"].as_u64().unwrap() >= 17, "{}", r.describe());
    assert_eq!(first["resources"]["apps/deployments"], 1);
    assert_eq!(
        first["resources"][format!("{group}/gadgets")],
        1,
        "custom resources are backed up: {first}"
    );
    assert_eq!(
        first["resources"]["apiextensions.k8s.io/customresourcedefinitions"], 1,
        "auto: the CRD of its custom resources: {first}"
    );
    assert_eq!(first["resources"]["namespaces"], 1);
    assert!(
        first["resources"].get("pods").is_none(),
        "controller-owned pods are skipped: {first}"
    );
    assert!(
        first["resources"].get("apps/replicasets").is_none(),
        "{first}"
    );
    for k in [
        "id",
        "bytesAdded",
        "bytesTotal",
        "durationSeconds",
        "warnings",
    ] {
        assert!(first.get(k).is_some(), "summary lacks {k}");
    }

    // A second backup of the unchanged namespace adds < 5% of the first's bytes.
    let second = lb
        .run(&["backup", "create", "-n", &src.name, "-o", "json"])
        .success()
        .json();
    let (a, b) = (
        first["bytesAdded"].as_u64().unwrap(),
        second["bytesAdded"].as_u64().unwrap(),
    );
    assert!(
        b * 20 < a,
        "second backup added {b} bytes, first {a}\n{first:#}\n{second:#}"
    );

    // No plaintext secret anywhere in the repository files.
    if let Some(dir) = &repo.dir {
        assert!(
            grep_repo(dir, SECRET_VALUE.as_bytes()).is_empty(),
            "plaintext secret in the repository"
        );
        assert!(
            grep_repo(dir, b"settings").is_empty(),
            "plaintext object names in the repository"
        );
    }

    // Restore into another namespace.
    let dst = unique("lbt-rt-dst");
    let before = snapshot_of(&src.client, &src.name, &group).await;
    let map = format!("{}={dst}", src.name);
    let r = lb.run(&["restore", "latest", "--namespace-map", &map, "-o", "json"]);
    r.success();
    let report = r.json();
    assert_eq!(report["failed"], 0, "{}", r.describe());
    let restore_id = report["id"].as_str().unwrap().to_string();
    let after = snapshot_of(&src.client, &dst, &group).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "every object is restored"
    );
    let nsmap: BTreeMap<String, String> = [(src.name.clone(), dst.clone())].into();
    for (k, (g, res, orig)) in &before {
        let restored = &after[k].2;
        assert_eq!(
            restored["metadata"]["labels"]["lifeboat.io/restore"],
            restore_id.as_str(),
            "{k} carries the restore label"
        );
        assert_eq!(
            normalised(g, res, orig, &nsmap),
            normalised(g, res, restored, &BTreeMap::new()),
            "{k} differs after normalisation"
        );
    }
    let rb = &after["RoleBinding/web-reader"].2;
    assert_eq!(
        rb["subjects"][0]["namespace"],
        dst.as_str(),
        "binding subjects follow the namespace map"
    );
    let np = &after["Service/web-np"].2;
    assert_ne!(
        np["spec"]["clusterIP"], before["Service/web-np"].2["spec"]["clusterIP"],
        "a new cluster IP"
    );
    assert_eq!(after["Service/db-headless"].2["spec"]["clusterIP"], "None");
    let deps: Api<Deployment> = Api::namespaced(src.client.clone(), &dst);
    eventually(
        "restored Deployment Available",
        Duration::from_secs(90),
        || async {
            let d = deps.get("web").await.ok()?;
            d.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
                .then_some(())
        },
    )
    .await;

    // Restoring again: everything exists → skipped (default), or failed with --existing fail.
    let again = lb.run(&["restore", "latest", "--namespace-map", &map, "-o", "json"]);
    again.success();
    assert_eq!(again.json()["created"], 0);
    let fail = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &map,
        "--existing",
        "fail",
        "-o",
        "json",
    ]);
    fail.code_is(2);
    assert!(fail.json()["failed"].as_u64().unwrap() > 0);
    // --existing update applies the backup over a changed object.
    let cms: Api<ConfigMap> = Api::namespaced(src.client.clone(), &dst);
    cms.patch(
        "settings",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"data": {"mode": "changed"}})),
    )
    .await
    .unwrap();
    let upd = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &map,
        "--existing",
        "update",
        "--include-resources",
        "configmaps",
        "-o",
        "json",
    ]);
    upd.success();
    assert!(
        upd.json()["updated"].as_u64().unwrap() >= 1,
        "{}",
        upd.describe()
    );
    assert_eq!(
        cms.get("settings").await.unwrap().data.unwrap()["mode"],
        "prod"
    );

    let _ = Api::<Namespace>::all(src.client.clone())
        .delete(&dst, &DeleteParams::default())
        .await;
    let _ = Api::<CustomResourceDefinition>::all(src.client.clone())
        .delete(&crd_name, &DeleteParams::default())
        .await;
    src.cleanup().await;
}

#[tokio::test]
async fn round_trip_local_directory() {
    round_trip(Repo::local()).await;
}

#[tokio::test]
async fn round_trip_s3() {
    round_trip(Repo::s3().await).await;
}

fn first_pack(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let sub = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::read_dir(sub)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
}

#[tokio::test]
async fn verify_read_data_names_damaged_objects_and_bad_input_is_one_clear_error() {
    let ns = TestNs::new("verify").await;
    for i in 0..5 {
        let cm: ConfigMap = obj(
            json!({"metadata": {"name": format!("cm-{i}")}, "data": {"v": format!("value-{i}")}}),
        );
        ns.api::<ConfigMap>()
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    let repo = Repo::local();
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    lb.run(&["backup", "create", "-n", &ns.name]).success();
    let v = lb.run(&["backup", "verify", "latest", "--read-data", "-o", "json"]);
    v.success();
    assert_eq!(v.json()["ok"], true);
    assert_eq!(v.json()["damaged"].as_array().unwrap().len(), 0);

    // Flip one byte inside the first blob of the pack: the object it belongs to is named.
    let dir = repo.dir.clone().unwrap();
    let pack = first_pack(&dir);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[30] ^= 0x40;
    std::fs::write(&pack, &bytes).unwrap();
    let structure = lb.run(&["backup", "verify", "latest"]);
    structure.success(); // structure only: the damage is inside the data
    let v = lb.run(&["backup", "verify", "latest", "--read-data", "-o", "json"]);
    v.code_is(2);
    let report = v.json();
    assert_eq!(report["ok"], false);
    let damaged = report["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{report:#}");
    let what = damaged[0]["object"].as_str().unwrap();
    assert!(
        what.contains('/'),
        "names kind/namespace/name or the tree: {what}"
    );
    // Restore refuses the damaged object with a reason, and the rest still restores.
    let dst = unique("lbt-vdst");
    let r = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &format!("{}={dst}", ns.name),
        "-o",
        "json",
    ]);
    if r.code() == 2 {
        let rj = r.json();
        let failed: Vec<&Value> = rj["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["outcome"] == "failed")
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0]["message"].as_str().unwrap().contains("corrupt"),
            "{failed:?}"
        );
    } else {
        // The flipped byte hit the tree blob: restore cannot even list the objects.
        r.code_is(1);
        assert!(r.stderr().contains("corrupt"), "{}", r.describe());
    }
    bytes[30] ^= 0x40;
    std::fs::write(&pack, &bytes).unwrap();

    // Damage in the pack header (the end of the file) is found too.
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    std::fs::write(&pack, &bytes).unwrap();
    let v = lb.run(&["backup", "verify", "latest", "--read-data", "-o", "json"]);
    v.code_is(2);
    assert!(
        v.json()["damaged"][0]["message"]
            .as_str()
            .unwrap()
            .contains("pack"),
        "{}",
        v.describe()
    );
    bytes[last] ^= 1;
    std::fs::write(&pack, &bytes).unwrap();

    // Wrong password: one clear line, exit 1, nothing changed.
    let listing = |d: &Path| {
        let mut v: Vec<String> = walk(d);
        v.sort();
        v
    };
    let before = listing(&dir);
    let wrong = repo.lb().env("LIFEBOAT_PASSWORD", "nope");
    for args in [
        &["backup", "list"][..],
        &["backup", "create", "-n", &ns.name],
        &["restore", "latest"],
        &["backup", "prune"],
    ] {
        let r = wrong.run(args);
        r.code_is(1);
        assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
        assert!(r.stderr().contains("wrong password"), "{}", r.describe());
        assert!(!r.stderr().contains("nope"));
    }
    assert_eq!(before, listing(&dir), "a wrong password changes nothing");

    // Missing backup id, unknown scheme, missing repository, unreachable S3: one line each.
    let r = lb.run(&["backup", "describe", "deadbeef"]);
    r.code_is(1);
    assert!(
        r.stderr().contains("deadbeef") && r.stderr().lines().count() == 1,
        "{}",
        r.describe()
    );
    let r = repo
        .lb()
        .env("LIFEBOAT_REPO", "gs://bucket/x")
        .run(&["backup", "list"]);
    r.code_is(1);
    assert!(
        r.stderr().contains("unsupported repository URL scheme"),
        "{}",
        r.describe()
    );
    let r = repo
        .lb()
        .env("LIFEBOAT_REPO", "file:///nonexistent/lifeboat-repo")
        .run(&["backup", "list"]);
    r.code_is(1);
    assert!(
        r.stderr().contains("lifeboat repo init"),
        "{}",
        r.describe()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = repo
        .lb()
        .env("LIFEBOAT_REPO", "s3://b/p")
        .env("LIFEBOAT_S3_ENDPOINT", &format!("http://127.0.0.1:{port}"))
        .run(&["backup", "list"]);
    r.code_is(1);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
    assert!(
        r.stderr().contains(&port.to_string()) || r.stderr().contains("s3://b/p"),
        "{}",
        r.describe()
    );
    ns.cleanup().await;
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(d).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(format!(
                "{} {}",
                e.path().display(),
                e.metadata().unwrap().len()
            ));
        }
    }
    out
}

#[tokio::test]
async fn killed_backup_is_never_listed_and_the_next_backup_and_prune_work() {
    let ns = TestNs::new("kill").await;
    // Enough objects that the backup takes a moment.
    let cms = ns.api::<ConfigMap>();
    let payload = "y".repeat(3000);
    futures::future::join_all((0..600).map(|i| {
        let cms = cms.clone();
        let payload = payload.clone();
        async move {
            let cm: ConfigMap = obj(json!({"metadata": {"name": format!("cm-{i:04}")}, "data": {"v": format!("{i}-{payload}")}}));
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
    }))
    .await;
    let repo = Repo::local();
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--include-resources",
        "serviceaccounts",
    ])
    .success();
    let listed = |lb: &Lifeboat| {
        lb.run(&["backup", "list", "-o", "json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(listed(&lb), 1);

    // Start a backup and kill -9 it once it holds its lock.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    child
        .args(["backup", "create", "-n", &ns.name, "--concurrency", "1"])
        .env("KUBECONFIG", &env().kubeconfig)
        .env("LIFEBOAT_REPO", &repo.url)
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("HOME", lb.home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = child.spawn().unwrap();
    let locks = repo.dir.clone().unwrap().join("locks");
    let start = std::time::Instant::now();
    while !locks.exists() || std::fs::read_dir(&locks).unwrap().count() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "backup never took its lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    // If this fails, the fixture is too small for this machine: the test must interrupt a
    // backup that is still running to prove anything.
    assert!(
        !status.success(),
        "the backup finished before it was killed"
    );
    assert_eq!(listed(&lb), 1, "an interrupted backup is never listed");

    // Ctrl-C (SIGINT): exit 130, one line, nothing listed, its lock removed by the next prune.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    cmd.args(["backup", "create", "-n", &ns.name, "--concurrency", "1"])
        .env("KUBECONFIG", &env().kubeconfig)
        .env("LIFEBOAT_REPO", &repo.url)
        .env("LIFEBOAT_PASSWORD", PASSWORD)
        .env("HOME", lb.home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let before = listed(&lb);
    let child = cmd.spawn().unwrap();
    let pid = child.id().to_string();
    let start = std::time::Instant::now();
    // Wait for a lock other than the stale one of the killed run.
    let stale: Vec<_> = std::fs::read_dir(&locks)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    while std::fs::read_dir(&locks)
        .unwrap()
        .flatten()
        .all(|e| stale.contains(&e.file_name()))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "backup never took its lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let out = common::output_bounded(child, "backup create (SIGINT)");
    // Must interrupt a running backup (see above).
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: interrupted"
    );
    assert_eq!(listed(&lb), before, "an interrupted backup is never listed");
    // The dead backup's lock is stale (its process is gone): backups and prune proceed.
    let r = lb.run(&["backup", "create", "-n", &ns.name, "-o", "json"]);
    r.success();
    let p = lb.run(&["backup", "prune", "-o", "json"]);
    p.success();
    let v = lb.run(&["backup", "verify", "latest", "--read-data", "-o", "json"]);
    v.success();
    assert_eq!(
        v.json()["objects"].as_u64().unwrap(),
        r.json()["objects"].as_u64().unwrap()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn retention_prune_export_and_archive_restore() {
    let ns = TestNs::new("prune").await;
    let cms = ns.api::<ConfigMap>();
    let repo = Repo::local();
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    for i in 0..3 {
        let cm: ConfigMap = obj(
            json!({"metadata": {"name": format!("gen-{i}")}, "data": {"v": "x".repeat(5000 + i)}}),
        );
        cms.create(&PostParams::default(), &cm).await.unwrap();
        lb.run(&["backup", "create", "-n", &ns.name]).success();
    }
    let all = lb.run(&["backup", "list", "-o", "json"]).success().json();
    assert_eq!(all.as_array().unwrap().len(), 3);
    // A policy that would keep nothing is refused.
    let zero = lb.run(&["backup", "prune", "--keep-daily", "0"]);
    zero.code_is(64);
    let dry = lb
        .run(&[
            "backup",
            "prune",
            "--keep-last",
            "1",
            "--dry-run",
            "-o",
            "json",
        ])
        .success()
        .json();
    assert_eq!(dry["removedBackups"].as_array().unwrap().len(), 2);
    assert_eq!(
        lb.run(&["backup", "list", "-o", "json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len(),
        3,
        "dry run removes nothing"
    );
    let p = lb
        .run(&["backup", "prune", "--keep-last", "1", "-o", "json"])
        .success()
        .json();
    assert_eq!(p["keptBackups"], 1);
    let v = lb.run(&["backup", "verify", "latest", "--read-data", "-o", "json"]);
    v.success();
    assert_eq!(
        v.json()["ok"],
        true,
        "prune kept every blob the remaining backup needs"
    );

    // Export as plain YAML files and restore from the archive.
    let file = lb.home.path().join("export.tar.gz");
    lb.run(&["backup", "export", "latest", "-f", file.to_str().unwrap()])
        .success();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "unencrypted Secrets: owner only"
    );
    let listing = std::process::Command::new("tar")
        .args(["tzf", file.to_str().unwrap()])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        names.contains(&format!("{}/configmaps.core/gen-2.yaml", ns.name)),
        "{names}"
    );
    assert!(
        names.contains(&format!("_cluster/namespaces.core/{}.yaml", ns.name)),
        "{names}"
    );
    let dst = unique("lbt-arch");
    let r = lb.run(&[
        "restore",
        "--from-archive",
        file.to_str().unwrap(),
        "--namespace-map",
        &format!("{}={dst}", ns.name),
        "-o",
        "json",
    ]);
    r.success();
    assert_eq!(r.json()["failed"], 0);
    let got: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &dst);
    assert_eq!(
        got.get("gen-2").await.unwrap().data.unwrap()["v"].len(),
        5002
    );

    // Dry run persists nothing.
    let dst2 = unique("lbt-dry");
    let r = lb.run(&[
        "restore",
        "latest",
        "--dry-run",
        "--namespace-map",
        &format!("{}={dst2}", ns.name),
        "-o",
        "json",
    ]);
    r.success();
    assert!(
        Api::<Namespace>::all(ns.client.clone())
            .get_opt(&dst2)
            .await
            .unwrap()
            .is_none()
    );
    let _ = Api::<Namespace>::all(ns.client.clone())
        .delete(&dst, &DeleteParams::default())
        .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn zero_configuration_uses_a_default_local_repository() {
    let ns = TestNs::new("zero").await;
    let lb = Lifeboat::new().env("LIFEBOAT_PASSWORD", PASSWORD);
    let r = lb.run(&["backup", "create", "-n", &ns.name, "-o", "json"]);
    r.success();
    let v = r.json();
    assert_eq!(v["repositoryCreated"], true);
    let repo = v["repository"].as_str().unwrap();
    let data_home = lb.home.path().join(".local/share");
    assert!(
        repo.starts_with(&format!("file://{}", data_home.display())),
        "{repo}"
    );
    assert!(
        r.stderr().contains("created the default repository"),
        "{}",
        r.describe()
    );
    let again = lb.run(&["backup", "create", "-n", &ns.name, "-o", "json"]);
    assert_eq!(again.success().json()["repositoryCreated"], false);
    assert_eq!(
        lb.run(&["backup", "list", "-o", "json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // An unreachable cluster: one line, exit 1, and no default repository is created.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fresh = Lifeboat::offline().env("LIFEBOAT_PASSWORD", PASSWORD);
    let kc = fresh.home.path().join("kc.yaml");
    std::fs::write(&kc, format!("apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\"}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n")).unwrap();
    let r = fresh.run(&["--kubeconfig", kc.to_str().unwrap(), "backup", "create"]);
    r.code_is(1);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
    assert!(
        r.stderr().contains("cannot reach the cluster"),
        "{}",
        r.describe()
    );
    assert!(
        !fresh.home.path().join(".local/share/lifeboat").exists(),
        "nothing created"
    );

    // A backup that reads nothing is an error, not an empty snapshot.
    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--include-resources",
        "nosuchresources",
    ]);
    r.code_is(1);
    assert!(
        r.stderr().contains("nothing was backed up"),
        "{}",
        r.describe()
    );
    assert_eq!(
        lb.run(&["backup", "list", "-o", "json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Restoring a namespace the backup does not hold is an error.
    let r = lb.run(&["restore", "latest", "-n", "no-such-namespace"]);
    r.code_is(64);
    assert!(r.stderr().contains("not in backup"), "{}", r.describe());

    // Without any password source (and no terminal) it says how to give one.
    let r = Lifeboat::new().run(&["backup", "list"]);
    r.code_is(1);
    assert!(r.stderr().contains("LIFEBOAT_PASSWORD"), "{}", r.describe());
    ns.cleanup().await;
}
