//! Restore into the cluster you actually have (issue 12): an archive holding API versions the
//! target no longer serves is converted on restore; transforms; single objects with their
//! dependencies; `backup diff`.
mod common;

use std::path::Path;

use common::{Lifeboat, TestNs, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

const PASSWORD: &str = "restore-convert-test";

fn lifeboat_with_repo(dir: &Path) -> Lifeboat {
    let lb = Lifeboat::new()
        .env(
            "LIFEBOAT_REPO",
            &format!("file://{}", dir.join("repo").display()),
        )
        .env("LIFEBOAT_PASSWORD", PASSWORD);
    lb.run(&["repo", "init"]).success();
    lb
}

/// Write `files` (path in the archive → object) as a `backup export`-style tar.gz.
fn write_archive(dir: &Path, files: &[(String, Value)]) -> std::path::PathBuf {
    let tree = dir.join("tree");
    for (path, obj) in files {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, serde_norway::to_string(obj).unwrap()).unwrap();
    }
    let out = dir.join("old.tar.gz");
    let st = std::process::Command::new("tar")
        .args([
            "czf",
            out.to_str().unwrap(),
            "-C",
            tree.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    out
}

/// The object as the target serves it now (`None`: not there).
async fn get_dynamic(
    client: &kube::Client,
    (group, version, kind, plural): (&str, &str, &str, &str),
    ns: Option<&str>,
    name: &str,
) -> Option<Value> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

async fn delete_dynamic(
    client: &kube::Client,
    (group, version, kind, plural): (&str, &str, &str, &str),
    name: &str,
) {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let _ = api.delete(name, &DeleteParams::default()).await;
}

fn item<'a>(report: &'a Value, kind: &str, name: &str) -> &'a Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == kind && i["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {report:#}"))
}

const FLOWSCHEMA: (&str, &str, &str, &str) = (
    "flowcontrol.apiserver.k8s.io",
    "v1",
    "FlowSchema",
    "flowschemas",
);
const PLC: (&str, &str, &str, &str) = (
    "flowcontrol.apiserver.k8s.io",
    "v1",
    "PriorityLevelConfiguration",
    "prioritylevelconfigurations",
);

#[tokio::test]
async fn an_archive_with_removed_api_versions_is_converted_into_the_current_cluster() {
    let client = common::env().client().await;
    let tmp = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new().env("LIFEBOAT_PASSWORD", PASSWORD);
    let ns = unique("lbt-conv");
    let fs_name = unique("lbt-conv-fs");
    let plc_name = unique("lbt-conv-plc");
    let psp_name = unique("lbt-conv-psp");
    let at = |dir: &str, name: &str| format!("{ns}/{dir}/{name}.yaml");
    let meta = |name: &str| json!({"name": name, "namespace": ns, "labels": {"app": "web"}});
    let template = json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "example/web:1"}]}});
    let files = vec![
        (
            format!("_cluster/namespaces.core/{ns}.yaml"),
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": ns, "labels": {"lifeboat.io/test": "true"}}}),
        ),
        (
            at("deployments.extensions", "web"),
            json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": meta("web"),
                   "spec": {"replicas": 0, "template": template, "rollbackTo": {"revision": 1}}}),
        ),
        (
            at("ingresses.extensions", "web"),
            json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": meta("web"),
                   "spec": {"backend": {"serviceName": "web", "servicePort": 80},
                            "rules": [{"host": "web.example", "http": {"paths": [
                                {"path": "/api", "backend": {"serviceName": "api", "servicePort": "http"}}]}}]}}),
        ),
        (
            at("ingresses.networking.k8s.io", "beta"),
            json!({"apiVersion": "networking.k8s.io/v1beta1", "kind": "Ingress", "metadata": meta("beta"),
                   "spec": {"rules": [{"http": {"paths": [
                       {"path": "/", "pathType": "Prefix", "backend": {"serviceName": "web", "servicePort": 8080}}]}}]}}),
        ),
        (
            at("cronjobs.batch", "nightly"),
            json!({"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": meta("nightly"),
                   "spec": {"schedule": "0 3 * * *", "suspend": true, "jobTemplate": {"spec": {"template": {
                       "spec": {"restartPolicy": "Never", "containers": [{"name": "j", "image": "example/job:1"}]}}}}}}),
        ),
        (
            at("poddisruptionbudgets.policy", "web"),
            json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": meta("web"),
                   "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        ),
        (
            at("poddisruptionbudgets.policy", "all"),
            json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": meta("all"),
                   "spec": {"maxUnavailable": 0, "selector": {}}}),
        ),
        (
            at("horizontalpodautoscalers.autoscaling", "web"),
            json!({"apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler", "metadata": meta("web"),
                   "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                            "minReplicas": 1, "maxReplicas": 4,
                            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 70}}]}}),
        ),
        (
            at("horizontalpodautoscalers.autoscaling", "web2"),
            json!({"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "metadata": meta("web2"),
                   "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                            "maxReplicas": 3,
                            "metrics": [{"type": "Resource", "resource": {"name": "memory",
                                "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]}}),
        ),
        (
            at("csistoragecapacities.storage.k8s.io", "cap"),
            json!({"apiVersion": "storage.k8s.io/v1beta1", "kind": "CSIStorageCapacity", "metadata": meta("cap"),
                   "storageClassName": "fast", "capacity": "10Gi"}),
        ),
        (
            format!(
                "_cluster/prioritylevelconfigurations.flowcontrol.apiserver.k8s.io/{plc_name}.yaml"
            ),
            json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1beta2", "kind": "PriorityLevelConfiguration",
                   "metadata": {"name": plc_name},
                   "spec": {"type": "Limited", "limited": {"assuredConcurrencyShares": 5,
                            "limitResponse": {"type": "Reject"}}}}),
        ),
        (
            format!("_cluster/flowschemas.flowcontrol.apiserver.k8s.io/{fs_name}.yaml"),
            json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1beta2", "kind": "FlowSchema",
                   "metadata": {"name": fs_name},
                   "spec": {"priorityLevelConfiguration": {"name": plc_name}, "matchingPrecedence": 9000,
                            "rules": [{"subjects": [{"kind": "User", "user": {"name": "lbt-nobody"}}],
                                       "resourceRules": [{"verbs": ["get"], "apiGroups": [""],
                                                          "resources": ["configmaps"], "namespaces": ["*"]}]}]}}),
        ),
        (
            format!("_cluster/podsecuritypolicies.policy/{psp_name}.yaml"),
            json!({"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "metadata": {"name": psp_name},
                   "spec": {"privileged": false, "seLinux": {"rule": "RunAsAny"},
                            "runAsUser": {"rule": "RunAsAny"}, "supplementalGroups": {"rule": "RunAsAny"},
                            "fsGroup": {"rule": "RunAsAny"}}}),
        ),
    ];
    let archive = write_archive(tmp.path(), &files);
    let archive = archive.to_str().unwrap();

    // The dry run lists every conversion and creates nothing.
    let dry = lb.run(&[
        "restore",
        "--from-archive",
        archive,
        "--dry-run",
        "-o",
        "json",
    ]);
    dry.code_is(2);
    let d = dry.json();
    let msg = |r: &Value, kind: &str, name: &str| {
        item(r, kind, name)["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // (Unvalidated: its namespace only exists once the restore creates it.)
    assert_eq!(
        item(&d, "Ingress", "web")["outcome"],
        "unvalidated",
        "{d:#}"
    );
    assert_eq!(
        item(&d, "FlowSchema", &fs_name)["outcome"],
        "created",
        "{d:#}"
    );
    assert!(
        msg(&d, "Ingress", "web")
            .contains("converted from extensions/v1beta1 to networking.k8s.io/v1"),
        "{d:#}"
    );
    assert!(
        msg(&d, "CronJob", "nightly").contains("converted from batch/v1beta1 to batch/v1"),
        "{d:#}"
    );
    assert!(
        msg(&d, "FlowSchema", &fs_name).contains("to flowcontrol.apiserver.k8s.io/v1"),
        "{d:#}"
    );
    assert_eq!(
        item(&d, "PodSecurityPolicy", &psp_name)["outcome"],
        "failed"
    );
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(&ns)
            .await
            .unwrap()
            .is_none(),
        "the dry run created the namespace"
    );

    // The real restore: exit 2 (the PSP and the selector-less PDB are not restored, by name, with
    // what to do), everything else converted.
    let r = lb.run(&["restore", "--from-archive", archive, "-o", "json"]);
    r.code_is(2);
    let v = r.json();
    assert_eq!(v["failed"], 2, "{v:#}");
    let psp = msg(&v, "PodSecurityPolicy", &psp_name);
    assert!(
        psp.contains("Pod Security") && psp.contains("not restored"),
        "{psp}"
    );
    let pdb = msg(&v, "PodDisruptionBudget", "all");
    assert!(pdb.contains("empty selector"), "{pdb}");
    assert_eq!(
        item(&v, "Ingress", "web")["apiVersion"],
        "networking.k8s.io/v1"
    );

    let ing = get_dynamic(
        &client,
        ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        Some(&ns),
        "web",
    )
    .await
    .expect("Ingress web restored");
    assert_eq!(
        ing["spec"]["defaultBackend"],
        json!({"service": {"name": "web", "port": {"number": 80}}})
    );
    let path = &ing["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(
        path["backend"],
        json!({"service": {"name": "api", "port": {"name": "http"}}})
    );
    assert_eq!(path["pathType"], "ImplementationSpecific");
    let beta = get_dynamic(
        &client,
        ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        Some(&ns),
        "beta",
    )
    .await
    .expect("Ingress beta restored");
    assert_eq!(
        beta["spec"]["rules"][0]["http"]["paths"][0]["pathType"],
        "Prefix"
    );

    let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    let sel = dep.spec.unwrap().selector.match_labels.unwrap();
    assert_eq!(sel["app"], "web", "selector from the template's labels");

    assert!(
        get_dynamic(
            &client,
            ("batch", "v1", "CronJob", "cronjobs"),
            Some(&ns),
            "nightly"
        )
        .await
        .is_some()
    );
    let pdb = get_dynamic(
        &client,
        (
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
        ),
        Some(&ns),
        "web",
    )
    .await
    .expect("PDB web restored");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(
        get_dynamic(
            &client,
            (
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets"
            ),
            Some(&ns),
            "all"
        )
        .await
        .is_none(),
        "an empty-selector PDB would select every pod in policy/v1"
    );
    let hpa = get_dynamic(
        &client,
        (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
        ),
        Some(&ns),
        "web",
    )
    .await
    .expect("HPA web restored");
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"],
        json!({"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}})
    );
    let hpa2 = get_dynamic(
        &client,
        (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
        ),
        Some(&ns),
        "web2",
    )
    .await
    .expect("HPA web2 restored");
    assert_eq!(
        hpa2["spec"]["metrics"][0]["resource"]["target"]["averageValue"],
        "100Mi"
    );
    let cap = get_dynamic(
        &client,
        (
            "storage.k8s.io",
            "v1",
            "CSIStorageCapacity",
            "csistoragecapacities",
        ),
        Some(&ns),
        "cap",
    )
    .await
    .expect("CSIStorageCapacity restored");
    assert_eq!(cap["storageClassName"], "fast");
    let plc = get_dynamic(&client, PLC, None, &plc_name)
        .await
        .expect("PLC restored");
    assert_eq!(plc["spec"]["limited"]["nominalConcurrencyShares"], 5);
    let fs = get_dynamic(&client, FLOWSCHEMA, None, &fs_name)
        .await
        .expect("FlowSchema restored");
    assert_eq!(fs["spec"]["matchingPrecedence"], 9000);

    delete_dynamic(&client, FLOWSCHEMA, &fs_name).await;
    delete_dynamic(&client, PLC, &plc_name).await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

async fn create_cm(ns: &TestNs, name: &str, data: Value) {
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap();
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

async fn create_secret(ns: &TestNs, name: &str, value: &str) {
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": name}, "stringData": {"password": value}}),
    )
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

async fn create_web(ns: &TestNs, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"tier": "web"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                   "spec": {"serviceAccountName": "web-sa",
                            "containers": [{"name": "web", "image": "example/web:1",
                              "envFrom": [{"configMapRef": {"name": "web-config"}}],
                              "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "password"}}}]}]}}}
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

async fn delete_ns(client: &kube::Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn transforms_patch_and_drop_and_a_bad_file_changes_nothing() {
    let ns = TestNs::new("xform").await;
    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_with_repo(tmp.path());
    create_web(&ns, 3).await;
    create_cm(
        &ns,
        "web-config",
        json!({"MODE": "prod", "URL": "https://prod"}),
    )
    .await;
    create_secret(&ns, "legacy-token", "s3cret-legacy").await;
    create_secret(&ns, "web-secret", "s3cret-web").await;
    lb.run(&["backup", "create", "-n", &ns.name]).success();

    let t = tmp.path().join("scratch.yaml");
    std::fs::write(
        &t,
        "apiVersion: lifeboat.io/v1
kind: RestoreTransform
rules:
  - name: one-replica
    match: {kinds: [deployments.apps], labelSelector: 'tier=web'}
    jsonPatch:
      - {op: replace, path: /spec/replicas, value: 1}
  - name: no-legacy
    match: {kinds: [Secret], names: ['legacy-*']}
    drop: true
  - name: staging-config
    match: {kinds: [ConfigMap], names: [web-config]}
    mergePatch: {data: {MODE: staging, URL: null}}
",
    )
    .unwrap();

    // A bad file: one line naming file:line:col, exit 1, and nothing is restored.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: lifeboat.io/v1\nkind: RestoreTransform\nrules:\n  - match: {kinds: [Secret]}\n    jsonPatch:\n      - {op: frobnicate, path: /a}\n",
    )
    .unwrap();
    let dst_bad = unique("lbt-xform-bad");
    let r = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &format!("{}={dst_bad}", ns.name),
        "--transform",
        t.to_str().unwrap(),
        "--transform",
        bad.to_str().unwrap(),
    ]);
    r.code_is(1);
    assert!(
        r.stderr().contains(&format!("{}:6:", bad.display())),
        "{}",
        r.describe()
    );
    assert!(
        Api::<Namespace>::all(ns.client.clone())
            .get_opt(&dst_bad)
            .await
            .unwrap()
            .is_none(),
        "a bad transform file restored something"
    );

    let dst = unique("lbt-xform");
    let r = lb.run(&[
        "restore",
        "latest",
        "--namespace-map",
        &format!("{}={dst}", ns.name),
        "--transform",
        t.to_str().unwrap(),
        "-o",
        "json",
    ]);
    r.success();
    let v = r.json();
    assert!(
        item(&v, "Deployment", "web")["message"]
            .as_str()
            .unwrap()
            .contains("transformed by one-replica"),
        "{v:#}"
    );
    let legacy = item(&v, "Secret", "legacy-token");
    assert_eq!(legacy["outcome"], "skipped");
    assert!(legacy["message"].as_str().unwrap().contains("no-legacy"));
    assert!(
        !r.stdout().contains("s3cret"),
        "a secret value in the report"
    );

    let d = Api::<Deployment>::namespaced(ns.client.clone(), &dst)
        .get("web")
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1));
    assert!(
        Api::<Secret>::namespaced(ns.client.clone(), &dst)
            .get_opt("legacy-token")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Secret>::namespaced(ns.client.clone(), &dst)
            .get_opt("web-secret")
            .await
            .unwrap()
            .is_some()
    );
    let cm = Api::<ConfigMap>::namespaced(ns.client.clone(), &dst)
        .get("web-config")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(cm.get("MODE").map(String::as_str), Some("staging"));
    assert!(!cm.contains_key("URL"));
    // The source is untouched.
    let src = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(src.spec.unwrap().replicas, Some(3));
    delete_ns(&ns.client, &dst).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn a_single_object_is_restored_with_its_dependencies_listed() {
    let ns = TestNs::new("single").await;
    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_with_repo(tmp.path());
    create_web(&ns, 0).await;
    create_cm(&ns, "web-config", json!({"A": "1"})).await;
    create_cm(&ns, "unrelated", json!({"B": "2"})).await;
    create_secret(&ns, "web-secret", "pw").await;
    lb.run(&["backup", "create", "-n", &ns.name]).success();

    // Only the named Deployment; what it refers to is listed.
    let dst = unique("lbt-single");
    let r = lb.run(&[
        "restore",
        "latest",
        "--include-resources",
        "deployments",
        "--name",
        "we*",
        "--namespace-map",
        &format!("{}={dst}", ns.name),
        "-o",
        "json",
    ]);
    r.success();
    let v = r.json();
    let kinds: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["outcome"] == "created")
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"Deployment"), "{v:#}");
    assert!(!kinds.contains(&"ConfigMap"), "{v:#}");
    let dep = |kind: &str, name: &str| {
        v["dependencies"]
            .as_array()
            .unwrap_or_else(|| panic!("no dependencies in {v:#}"))
            .iter()
            .find(|d| d["kind"] == kind && d["name"] == name)
            .unwrap_or_else(|| panic!("no dependency {kind}/{name} in {v:#}"))
            .clone()
    };
    assert_eq!(dep("ConfigMap", "web-config")["status"], "notRestored");
    assert_eq!(dep("Secret", "web-secret")["status"], "notRestored");
    assert_eq!(
        dep("ConfigMap", "web-config")["requiredBy"],
        "Deployment/web"
    );
    assert_eq!(dep("ServiceAccount", "web-sa")["status"], "notInBackup");
    let table = lb.run(&[
        "restore",
        "latest",
        "--include-resources",
        "deployments",
        "--name",
        "web",
        "--namespace-map",
        &format!("{}={}", ns.name, unique("lbt-single-dry")),
        "--dry-run",
    ]);
    table.success();
    assert!(
        table.stdout().contains("depends on"),
        "{}",
        table.describe()
    );
    assert!(
        Api::<ConfigMap>::namespaced(ns.client.clone(), &dst)
            .get_opt("web-config")
            .await
            .unwrap()
            .is_none()
    );

    // --with-dependencies restores them too, and nothing unrelated.
    let dst2 = unique("lbt-single-deps");
    let r = lb.run(&[
        "restore",
        "latest",
        "--include-resources",
        "deployments",
        "--name",
        "web",
        "--with-dependencies",
        "--namespace-map",
        &format!("{}={dst2}", ns.name),
        "-o",
        "json",
    ]);
    r.success();
    let v2 = r.json();
    assert!(
        v2["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "web-config" && d["status"] == "restored"),
        "{v2:#}"
    );
    let cms = Api::<ConfigMap>::namespaced(ns.client.clone(), &dst2);
    assert!(cms.get_opt("web-config").await.unwrap().is_some());
    assert!(cms.get_opt("unrelated").await.unwrap().is_none());
    assert!(
        Api::<Secret>::namespaced(ns.client.clone(), &dst2)
            .get_opt("web-secret")
            .await
            .unwrap()
            .is_some()
    );

    // A name that matches nothing: a clear error, exit 1.
    let r = lb.run(&["restore", "latest", "--name", "nothing-like-this"]);
    r.code_is(64);
    assert!(r.stderr().contains("matches --name"), "{}", r.describe());

    delete_ns(&ns.client, &dst).await;
    delete_ns(&ns.client, &dst2).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn backup_diff_names_what_changed_and_never_shows_secret_values() {
    let ns = TestNs::new("diff").await;
    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_with_repo(tmp.path());
    create_web(&ns, 2).await;
    create_cm(&ns, "keep", json!({"A": "1"})).await;
    create_cm(&ns, "gone", json!({"A": "1"})).await;
    create_secret(&ns, "web-secret", "old-s3cret-value").await;
    let a = lb
        .run(&["backup", "create", "-n", &ns.name, "-o", "json"])
        .success()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Nothing changed yet: exit 0 against the live cluster.
    let same = lb.run(&["backup", "diff", &a, "--live", "-o", "json"]);
    same.code_is(0);
    assert!(
        same.json()["changed"].as_array().unwrap().is_empty(),
        "{}",
        same.describe()
    );

    let deps = ns.api::<Deployment>();
    let mut d = deps.get("web").await.unwrap();
    d.spec.as_mut().unwrap().replicas = Some(5);
    d.metadata.managed_fields = None;
    deps.replace("web", &PostParams::default(), &d)
        .await
        .unwrap();
    ns.api::<ConfigMap>()
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    create_cm(&ns, "new", json!({"B": "2"})).await;
    ns.api::<Secret>()
        .delete("web-secret", &DeleteParams::default())
        .await
        .unwrap();
    create_secret(&ns, "web-secret", "new-s3cret-value").await;
    let b = lb
        .run(&["backup", "create", "-n", &ns.name, "-o", "json"])
        .success()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = lb.run(&["backup", "diff", &a, &b, "--values", "-o", "json"]);
    r.code_is(2);
    let v = r.json();
    let names = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(names("added"), vec!["ConfigMap/new"], "{v:#}");
    assert_eq!(names("removed"), vec!["ConfigMap/gone"], "{v:#}");
    let changed = names("changed");
    assert!(changed.contains(&"Deployment/web".to_string()), "{v:#}");
    assert!(changed.contains(&"Secret/web-secret".to_string()), "{v:#}");
    assert!(!changed.contains(&"ConfigMap/keep".to_string()), "{v:#}");
    let web = v["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .unwrap();
    let replicas = web["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == ".spec.replicas")
        .unwrap_or_else(|| panic!("{web:#}"));
    assert_eq!(
        (replicas["from"].clone(), replicas["to"].clone()),
        (json!(2), json!(5))
    );
    let secret = v["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "Secret")
        .unwrap();
    assert!(
        secret["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == ".data.password"
                && f.get("from").is_none()
                && f.get("to").is_none()),
        "{secret:#}"
    );
    let all = r.stdout();
    for value in ["old-s3cret-value", "new-s3cret-value"] {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        assert!(
            !all.contains(value) && !all.contains(&b64),
            "a Secret value in the diff"
        );
    }
    let table = lb.run(&["backup", "diff", &a, &b]);
    table.code_is(2);
    assert!(
        table.stdout().contains(".spec.replicas"),
        "{}",
        table.describe()
    );

    // B against the live cluster, after one more change.
    let mut d = deps.get("web").await.unwrap();
    d.spec.as_mut().unwrap().replicas = Some(1);
    d.metadata.managed_fields = None;
    deps.replace("web", &PostParams::default(), &d)
        .await
        .unwrap();
    let live = lb.run(&["backup", "diff", &b, "--live", "-o", "json"]);
    live.code_is(2);
    let lv = live.json();
    assert_eq!(lv["to"], "live");
    let changed: Vec<&str> = lv["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(changed, vec!["web"], "{lv:#}");
    assert!(lv["added"].as_array().unwrap().is_empty(), "{lv:#}");
    ns.cleanup().await;
}
