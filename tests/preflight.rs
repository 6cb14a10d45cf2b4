//! `lifeboat preflight` against the real control plane and against manifests.
mod common;

use std::io::Write;
use std::time::Duration;

use common::{Lifeboat, TestNs, env, eventually, unique};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn helm_payload(name: &str, ns: &str, version: u32, manifest: &str) -> String {
    use base64::Engine;
    let release = json!({
        "name": name, "namespace": ns, "version": version, "manifest": manifest,
        "chart": {"metadata": {"name": name, "version": "1.0.0"}},
        "info": {"status": "deployed"}
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(release.to_string().as_bytes()).unwrap();
    base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())
}

async fn helm_secret(ns: &TestNs, release: &str, rev: u32, status: &str, manifest: &str) {
    let s: Secret = obj(json!({
        "metadata": {
            "name": format!("sh.helm.release.v1.{release}.v{rev}"),
            "labels": {"owner": "helm", "name": release, "status": status, "version": rev.to_string()}
        },
        "type": "helm.sh/release.v1",
        "stringData": {"release": helm_payload(release, &ns.name, rev, manifest)}
    }));
    ns.api::<Secret>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

fn findings<'a>(report: &'a Value, pred: impl Fn(&Value) -> bool + 'a) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| pred(f))
        .collect()
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

#[tokio::test]
async fn cluster_sources_and_checks_each_reported_once() {
    let ns = TestNs::new("preflight").await;
    let client = ns.client.clone();
    let pp = PostParams::default();
    let n = &ns.name;

    // 1. A live object last applied (and managed) with a removed apiVersion.
    let last_applied = json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "legacy", "namespace": n}});
    let legacy: Deployment = obj(json!({
        "metadata": {
            "name": "legacy",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied.to_string()},
            "managedFields": [{
                "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "extensions/v1beta1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {}}}
            }]
        },
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "legacy"}},
                 "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
    }));
    ns.api::<Deployment>().create(&pp, &legacy).await.unwrap();

    // 2. A PDB that allows zero disruptions, over a one-replica Deployment.
    let solo: Deployment = obj(json!({
        "metadata": {"name": "solo"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "solo"}},
                 "template": {"metadata": {"labels": {"app": "solo"}}, "spec": {
                     "containers": [{"name": "c", "image": "x"}],
                     "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]}}}
    }));
    ns.api::<Deployment>().create(&pp, &solo).await.unwrap();
    let pdb: PodDisruptionBudget = obj(
        json!({"metadata": {"name": "zero"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "solo"}}}}),
    );
    ns.api::<PodDisruptionBudget>()
        .create(&pp, &pdb)
        .await
        .unwrap();

    // 3. Helm: the latest deployed revision uses a removed API; an older superseded revision
    //    and a newer failed one use other removed APIs and must not be reported.
    helm_secret(
        &ns,
        "shop",
        1,
        "superseded",
        "apiVersion: batch/v1beta1\nkind: CronJob\nmetadata:\n  name: old\n",
    )
    .await;
    helm_secret(
        &ns,
        "shop",
        2,
        "deployed",
        "---\n# Source: shop/templates/deploy.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\n---\n# Source: shop/templates/pdb.yaml\napiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: shop-pdb\n",
    )
    .await;
    helm_secret(
        &ns,
        "shop",
        3,
        "failed",
        "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: x\n",
    )
    .await;

    // 4. A CRD with a deprecated served version and a leftover stored version; a client that
    //    really uses the deprecated version (seen through the apiserver's metrics).
    let group = format!("{}.example.com", unique("lbt"));
    let crd_name = format!("widgets.{group}");
    let schema = json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
    let crd: CustomResourceDefinition = obj(json!({
        "metadata": {"name": crd_name},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [
                     {"name": "v1alpha1", "served": false, "storage": false, "schema": schema},
                     {"name": "v1beta1", "served": true, "storage": false, "deprecated": true, "deprecationWarning": "widgets v1beta1 is going away", "schema": schema},
                     {"name": "v1", "served": true, "storage": true, "schema": schema}]}
    }));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&pp, &crd).await.unwrap();
    crds.patch_status(
        &crd_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"storedVersions": ["v1alpha1", "v1"]}})),
    )
    .await
    .unwrap();
    let gvk = kube::api::GroupVersionKind::gvk(&group, "v1beta1", "Widget");
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), n, &ar);
    eventually(
        "deprecated CRD version served",
        Duration::from_secs(30),
        || async { widgets.list(&Default::default()).await.ok() },
    )
    .await;

    // 5. A kwok node whose kubelet is too old for the target (local environment only: we do not
    //    register fake nodes in someone's real cluster).
    let node_name = unique("old-kubelet");
    if !env().external {
        let node: Node = obj(json!({
            "metadata": {"name": node_name, "annotations": {"kwok.x-k8s.io/node": "fake"}},
            "spec": {"taints": [{"key": "lifeboat.io/test-only", "effect": "NoSchedule"}]},
            "status": {"nodeInfo": {"kubeletVersion": "v1.31.0", "kubeProxyVersion": "v1.31.0", "architecture": "amd64",
                       "operatingSystem": "linux", "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "", "machineID": "", "osImage": "", "systemUUID": ""}}
        }));
        Api::<Node>::all(client.clone())
            .create(&pp, &node)
            .await
            .unwrap();
    }

    // 6. A fail-closed webhook whose service has no endpoints (its rules match nothing real).
    let svc: Service = obj(
        json!({"metadata": {"name": "hook"}, "spec": {"selector": {"app": "no-such-pod"}, "ports": [{"port": 443}]}}),
    );
    ns.api::<Service>().create(&pp, &svc).await.unwrap();
    let hook_name = unique("lbt-hook");
    let vwc: ValidatingWebhookConfiguration = obj(json!({
        "metadata": {"name": hook_name},
        "webhooks": [{
            "name": "check.lifeboat.test", "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"namespace": n, "name": "hook", "path": "/validate"}},
            "rules": [{"apiGroups": ["lifeboat.invalid"], "apiVersions": ["v1"], "resources": ["nothings"], "operations": ["CREATE"]}]
        }]
    }));
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    vwcs.create(&pp, &vwc).await.unwrap();

    // Wait until the disruption controller has computed the PDB's status.
    let pdbs = ns.api::<PodDisruptionBudget>();
    eventually(
        "PDB status with 1 expected pod",
        Duration::from_secs(90),
        || async {
            let st = pdbs.get("zero").await.ok()?.status?;
            (st.expected_pods == 1 && st.disruptions_allowed == 0).then_some(())
        },
    )
    .await;

    let r = Lifeboat::new().run(&["preflight", "--target", "1.35", "-o", "json"]);
    r.code_is(3);
    let report = r.json();
    assert_eq!(report["target"], "1.35");
    assert!(
        report["serverVersion"].as_str().unwrap().starts_with("v1."),
        "{}",
        r.describe()
    );

    let in_ns = |f: &Value| f["namespace"] == n.as_str();
    let live = findings(&report, |f| f["source"] == "live" && in_ns(f));
    assert_eq!(
        live.len(),
        1,
        "the legacy Deployment once, although annotation and managedFields both name it: {live:#?}"
    );
    assert_eq!(live[0]["name"], "legacy");
    assert_eq!(live[0]["apiVersion"], "extensions/v1beta1");
    // The test cluster no longer serves extensions/v1beta1: nobody can be writing with it today,
    // so its last-applied annotation is history (info), with the evidence.
    assert_eq!(live[0]["severity"], "info");
    assert_eq!(live[0]["usage"], "historical");
    // (The API server drops a created object's managedFields entry for a version it no longer
    // serves, so the annotation is the evidence here.)
    assert!(
        live[0]["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"] == "lastApplied" && e["usage"] == "historical"),
        "{}",
        live[0]
    );
    assert_eq!(live[0]["replacement"], "apps/v1");

    let helm = findings(&report, |f| f["source"] == "helm" && in_ns(f));
    assert_eq!(helm.len(), 1, "{helm:#?}");
    assert_eq!(helm[0]["release"], "shop");
    assert_eq!(helm[0]["chart"], "shop-1.0.0");
    assert_eq!(helm[0]["kind"], "PodDisruptionBudget");
    assert_eq!(helm[0]["apiVersion"], "policy/v1beta1");
    assert_eq!(helm[0]["severity"], "error");

    let crd_f = findings(&report, |f| {
        f["source"] == "crd" && f["name"] == crd_name.as_str()
    });
    assert_eq!(crd_f.len(), 2, "{crd_f:#?}");
    assert!(
        crd_f
            .iter()
            .any(|f| f["apiVersion"] == format!("{group}/v1beta1")
                && f["severity"] == "warning"
                && f["message"].as_str().unwrap().contains("going away"))
    );
    assert!(
        crd_f
            .iter()
            .any(|f| f["apiVersion"] == format!("{group}/v1alpha1")
                && f["message"].as_str().unwrap().contains("storedVersions"))
    );

    let metrics = findings(&report, |f| {
        f["source"] == "metrics" && f["apiVersion"] == format!("{group}/v1beta1")
    });
    assert_eq!(
        metrics.len(),
        1,
        "real client usage of the deprecated CRD version: {metrics:#?}\n{}",
        r.describe()
    );
    assert!(
        !report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("metrics")),
        "{}",
        r.describe()
    );

    let pdb_check = check(&report, "pdb-disruptions");
    assert_eq!(pdb_check["status"], "warn");
    let objs: Vec<&str> = pdb_check["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    let mine: Vec<&&str> = objs
        .iter()
        .filter(|o| o.contains(&format!("poddisruptionbudget/{n}/")))
        .collect();
    assert_eq!(mine.len(), 1, "{objs:?}");
    assert!(
        mine[0].contains(&format!("Deployment {n}/solo")),
        "names the workload: {}",
        mine[0]
    );

    let hook = check(&report, "webhook-endpoints");
    assert_eq!(hook["status"], "fail");
    let hooks: Vec<&Value> = hook["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o.as_str().unwrap().contains(&hook_name))
        .collect();
    assert_eq!(hooks.len(), 1, "{hook}");

    if !env().external {
        let skew = check(&report, "kubelet-skew");
        assert_eq!(skew["status"], "fail", "{skew}");
        let nodes: Vec<&Value> = skew["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o.as_str().unwrap().contains(&node_name))
            .collect();
        assert_eq!(nodes.len(), 1, "{skew}");
        Api::<Node>::all(client.clone())
            .delete(&node_name, &DeleteParams::default())
            .await
            .unwrap();
    } else {
        eprintln!("NOT APPLICABLE on an external cluster: the kubelet-skew node part of this test");
    }
    assert_eq!(check(&report, "control-plane-version")["status"], "pass");

    // The same report as a table and as Markdown.
    let t = Lifeboat::new().run(&["preflight", "--target", "1.35"]);
    t.code_is(3);
    assert!(
        t.stdout().contains("ERRORS: removed in 1.35 or earlier") && t.stdout().contains("CHECKS"),
        "{}",
        t.describe()
    );
    let md = Lifeboat::new().run(&[
        "preflight",
        "--target",
        "1.35",
        "-o",
        "markdown",
        "--fail-on",
        "none",
    ]);
    md.code_is(0);
    assert!(
        md.stdout().contains("| Source | Where |"),
        "{}",
        md.describe()
    );

    vwcs.delete(&hook_name, &DeleteParams::default())
        .await
        .unwrap();
    crds.delete(&crd_name, &DeleteParams::default())
        .await
        .unwrap();
    ns.cleanup().await;
}

#[tokio::test]
async fn default_target_is_the_next_minor_and_limited_rbac_gives_notes_not_failures() {
    let ns = TestNs::new("pfrbac").await;
    // Only what a namespace viewer has: no nodes, no CRDs, no /metrics.
    let kc = common::limited_identity(
        &ns,
        "viewer",
        json!([{"apiGroups": ["", "apps", "policy"], "resources": ["*"], "verbs": ["get", "list"]}]),
    )
    .await;
    let r = Lifeboat::new().run(&[
        "preflight",
        "-o",
        "json",
        "--kubeconfig",
        kc.to_str().unwrap(),
    ]);
    let report = r.json();
    assert!(
        r.code() == 0 || r.code() == 2 || r.code() == 3,
        "{}",
        r.describe()
    );
    let server: lifeboat::preflight::version::Minor =
        report["serverVersion"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        report["target"],
        server.next().to_string(),
        "default target = next minor"
    );
    let notes: Vec<&str> = report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("metrics") && n.contains("not available")),
        "{notes:?}"
    );
    assert_eq!(check(&report, "kubelet-skew")["status"], "skipped");
    ns.cleanup().await;
}

#[test]
fn unreachable_cluster_needs_a_target_then_scans_manifests_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lb = Lifeboat::offline();
    let kc = lb.home.path().join("kc.yaml");
    std::fs::write(
        &kc,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"),
    )
    .unwrap();
    let kcs = kc.to_str().unwrap();
    let r = lb.run(&["preflight", "--kubeconfig", kcs]);
    r.code_is(1);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
    assert!(
        r.stderr().contains("--target") && r.stderr().contains(&port.to_string()),
        "{}",
        r.describe()
    );

    let dir = lb.home.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cj.yaml"),
        "apiVersion: batch/v1beta1\nkind: CronJob\nmetadata:\n  name: nightly\n",
    )
    .unwrap();
    let r = lb.run(&[
        "preflight",
        "--kubeconfig",
        kcs,
        "--target",
        "1.25",
        "--manifests",
        dir.to_str().unwrap(),
        "-o",
        "json",
    ]);
    r.code_is(3);
    let report = r.json();
    assert_eq!(report["findings"].as_array().unwrap().len(), 1);
    assert!(
        report["notes"][0]
            .as_str()
            .unwrap()
            .contains("only manifests were scanned"),
        "{}",
        r.describe()
    );
    assert!(report["checks"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn works_with_exactly_the_documented_cluster_role() {
    let ns = TestNs::new("pfrole").await;
    let doc: Value = serde_norway::from_str(
        &std::fs::read_to_string(common::repo_root().join("docs/rbac/preflight-clusterrole.yaml"))
            .unwrap(),
    )
    .unwrap();
    let (kc, role) = common::cluster_identity(&ns, "preflight", doc["rules"].clone()).await;
    // RBAC bindings take effect asynchronously in the authorizer cache.
    let client = common::client_for(&kc).await;
    eventually("role effective", Duration::from_secs(30), || async {
        Api::<Node>::all(client.clone())
            .list(&Default::default())
            .await
            .ok()
    })
    .await;
    let r = Lifeboat::new().run(&[
        "preflight",
        "--target",
        "1.35",
        "-o",
        "json",
        "--fail-on",
        "none",
        "--kubeconfig",
        kc.to_str().unwrap(),
    ]);
    r.code_is(0);
    let report = r.json();
    let notes = report["notes"].as_array().unwrap();
    assert!(
        notes.is_empty(),
        "with the documented role every source is readable: {notes:#?}"
    );
    for c in report["checks"].as_array().unwrap() {
        if c["name"] != "control-plane-components" && c["name"] != "kube-proxy-skew" {
            assert_ne!(c["status"], "skipped", "{c}");
        }
    }
    // And without the role (same identity, role removed) the sources turn into notes, not errors.
    common::delete_cluster_identity(&ns.client, &role).await;
    eventually("role revoked", Duration::from_secs(30), || async {
        Api::<Node>::all(client.clone())
            .list(&Default::default())
            .await
            .err()
    })
    .await;
    let r = Lifeboat::new().run(&[
        "preflight",
        "--target",
        "1.35",
        "-o",
        "json",
        "--fail-on",
        "none",
        "--kubeconfig",
        kc.to_str().unwrap(),
    ]);
    let report = r.json();
    assert!(
        report["notes"].as_array().unwrap().len() >= 3,
        "{}",
        r.describe()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn node_upgrade_mode_needs_the_api_server_at_the_target_first() {
    let _ = env();
    let lb = Lifeboat::new();
    let server: lifeboat::preflight::version::Minor =
        common::Env::pinned_k8s_version().parse().unwrap();
    // Nodes ahead of the control plane: refused (exit 3), whatever else is found.
    let ahead = server.next().to_string();
    let r = lb.run(&["preflight", "--nodes-to", &ahead, "-o", "json"]);
    r.code_is(3);
    let report = r.json();
    assert_eq!(report["nodeUpgrade"], true);
    let c = check(&report, "apiserver-at-target");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("upgrade the control plane"),
        "{c}"
    );
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "control-plane-version"),
        "node mode replaces the control-plane hop check"
    );
    // Nodes to the API server's own minor: that gate passes; kubelets are measured against it.
    let here = server.to_string();
    let r = lb.run(&[
        "preflight",
        "--nodes-to",
        &here,
        "--fail-on",
        "none",
        "-o",
        "json",
    ]);
    r.success();
    let report = r.json();
    assert_eq!(check(&report, "apiserver-at-target")["status"], "pass");
    assert!(
        check(&report, "kubelet-skew")["message"]
            .as_str()
            .unwrap()
            .contains(&format!("apiserver at {here}")),
        "{report:#}"
    );
    // --nodes-to and --target are two different questions.
    lb.run(&["preflight", "--nodes-to", &here, "--target", &ahead])
        .code_is(64);
}
