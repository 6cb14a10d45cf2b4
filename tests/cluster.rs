//! The test environment itself, through the same client library lifeboat uses: a real
//! apiserver with RBAC, controllers, a scheduler and kwok-simulated kubelets.
mod common;

use std::time::Duration;

use common::{Lifeboat, TestNs, env, eventually, limited_identity};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, PostParams};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn version_reports_the_real_server_version() {
    let r = Lifeboat::new().run(&["version", "-o", "json"]);
    r.success();
    let v = r.json();
    let git = v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", r.describe()))
        .to_string();
    assert!(!git.contains("v0.0.0"), "unstamped build: {git}");
    let minor: u32 = v["serverVersion"]["minor"]
        .as_str()
        .unwrap()
        .trim_end_matches('+')
        .parse()
        .unwrap();
    assert!(minor >= 34, "want 1.34+, got {git}");
    if !env().external {
        assert_eq!(git, common::Env::pinned_k8s_version());
    }
    assert!(r.stderr().is_empty(), "{}", r.describe());
    let table = Lifeboat::new().run(&["version"]);
    table.success();
    assert!(
        table.stdout().contains(&format!("Server Version: {git}")),
        "{}",
        table.describe()
    );
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "web", "image": "registry.invalid/web:1"}],
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
                }
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn deployment_becomes_available_via_kwok() {
    let ns = TestNs::new("deploy").await;
    let api = ns.api::<Deployment>();
    api.create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    eventually(
        "Deployment web Available with 2 ready replicas",
        WAIT,
        || async {
            let d = api.get("web").await.ok()?;
            let st = d.status?;
            let available = st
                .conditions?
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            (available && st.ready_replicas == Some(2)).then_some(())
        },
    )
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn job_completes_via_kwok() {
    let ns = TestNs::new("job").await;
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "once"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "registry.invalid/job:1"}],
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
        }}}
    }))
    .unwrap();
    let api = ns.api::<Job>();
    api.create(&PostParams::default(), &job).await.unwrap();
    eventually("Job once Complete", WAIT, || async {
        let j = api.get("once").await.ok()?;
        j.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(())
    })
    .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn namespace_deletion_finishes() {
    let ns = TestNs::new("nsdel").await;
    // Content the namespace controller has to delete first, including pods kwok must finalize.
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment("d", 1))
        .await
        .unwrap();
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}, "data": {"k": "v"}}))
            .unwrap();
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let pods = ns.api::<k8s_openapi::api::core::v1::Pod>();
    eventually("pod running", WAIT, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .then_some(())
    })
    .await;
    let name = ns.name.clone();
    let client = ns.client.clone();
    ns.cleanup().await;
    let nss = Api::<Namespace>::all(client);
    eventually("namespace deleted", WAIT, || async {
        match nss.get_opt(&name).await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
}

#[tokio::test]
async fn rejected_credentials_are_not_called_unreachable() {
    let admin = kube::config::Kubeconfig::read_from(&env().kubeconfig).unwrap();
    let cluster = admin.clusters[0].clone();
    let lb = Lifeboat::new();
    let kc = lb.home.path().join("bad-token.kubeconfig");
    std::fs::write(&kc, serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": "u", "user": {"token": "not-a-valid-token"}}],
        "contexts": [{"name": "x", "context": {"cluster": cluster.name, "user": "u"}}], "current-context": "x"
    })).unwrap()).unwrap();
    let r = lb.run(&["--kubeconfig", kc.to_str().unwrap(), "version"]);
    r.success();
    assert!(
        r.stderr().contains("refused the credentials") && r.stderr().contains("401"),
        "{}",
        r.describe()
    );
    assert!(
        !r.stderr().contains("not-a-valid-token"),
        "no secret in messages"
    );
    let r = lb.run(&["--kubeconfig", kc.to_str().unwrap(), "backup", "create"]);
    r.code_is(1);
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.describe());
    assert!(
        r.stderr().contains("refused the credentials"),
        "{}",
        r.describe()
    );
}

#[tokio::test]
async fn rbac_limited_identity_is_refused_what_its_role_does_not_allow() {
    let ns = TestNs::new("rbac").await;
    let kc = limited_identity(
        &ns,
        "cm-reader",
        serde_json::json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]),
    )
    .await;
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}, "data": {"k": "v"}}))
            .unwrap();
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let s: Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}),
    )
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();

    let limited = common::client_for(&kc).await;
    let cms: Api<ConfigMap> = Api::namespaced(limited.clone(), &ns.name);
    // Allowed: what the Role grants.
    let names: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(names.contains(&"c".to_string()), "{names:?}");
    assert!(cms.get("c").await.is_ok());
    // Refused: writes, other resources, other namespaces.
    let forbidden = |r: Result<_, kube::Error>| match r {
        Err(kube::Error::Api(s)) => s.code == 403,
        _ => false,
    };
    let cm2: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "c2"}})).unwrap();
    assert!(forbidden(
        cms.create(&PostParams::default(), &cm2).await.map(|_| ())
    ));
    assert!(forbidden(
        Api::<Secret>::namespaced(limited.clone(), &ns.name)
            .get("s")
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<ConfigMap>::namespaced(limited.clone(), "default")
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Namespace>::all(limited)
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    ns.cleanup().await;
}
