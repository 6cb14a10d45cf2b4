//! scripts/testenv's helpers: minted client-certificate identities, kwok nodes with chosen
//! kubelet versions, and teardown that leaves no process behind. These exercise the local
//! environment's script, so against an external cluster (LIFEBOAT_TEST_KUBECONFIG) they report
//! "not applicable" loudly instead of passing silently.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestNs, env, eventually, repo_root};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams};

fn testenv(args: &[&str]) -> String {
    let out = Command::new(repo_root().join("scripts/testenv"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/testenv {args:?} failed\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn local_dir() -> Option<&'static Path> {
    match &env().testenv_dir {
        Some(d) => Some(d.as_path()),
        None => {
            eprintln!(
                "NOT APPLICABLE: external cluster (LIFEBOAT_TEST_KUBECONFIG); scripts/testenv helpers not tested"
            );
            None
        }
    }
}

#[tokio::test]
async fn minted_certificate_identity_gets_only_its_rbac() {
    let Some(dir) = local_dir() else { return };
    let ns = TestNs::new("certid").await;
    let user = common::unique("alice");
    let kc = testenv(&[
        "identity",
        &user,
        "--group",
        "lifeboat-testers",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let kc = kc.trim();
    let client = common::client_for(Path::new(kc)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    match cms.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert!(
                s.message.contains(&user),
                "the apiserver names the certificate's user: {}",
                s.message
            )
        }
        other => panic!("a fresh identity must be refused, got {other:?}"),
    }
    // Grant the group list on configmaps in this namespace only.
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]
    }))
    .unwrap();
    ns.api::<k8s_openapi::api::rbac::v1::Role>()
        .create(&Default::default(), &role)
        .await
        .unwrap();
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "r"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "Group", "name": "lifeboat-testers", "apiGroup": "rbac.authorization.k8s.io"}]
    }))
    .unwrap();
    ns.api::<k8s_openapi::api::rbac::v1::RoleBinding>()
        .create(&Default::default(), &rb)
        .await
        .unwrap();
    eventually(
        "group binding effective",
        Duration::from_secs(30),
        || async { cms.list(&ListParams::default()).await.ok() },
    )
    .await;
    let other: Api<ConfigMap> = Api::namespaced(client, "default");
    assert!(
        matches!(other.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn kwok_node_with_a_chosen_kubelet_version_becomes_ready() {
    let Some(dir) = local_dir() else { return };
    let name = common::unique("old-node");
    testenv(&[
        "node",
        "add",
        &name,
        "--kubelet-version",
        "v1.31.7",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let nodes: Api<Node> = Api::all(env().client().await);
    let node = eventually("node Ready", Duration::from_secs(60), || async {
        let n = nodes.get(&name).await.ok()?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(n)
    })
    .await;
    assert_eq!(
        node.status.unwrap().node_info.unwrap().kubelet_version,
        "v1.31.7"
    );
    nodes.delete(&name, &Default::default()).await.unwrap();
}

fn pids_of(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir.join("pids"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_second_environment_coexists_and_down_leaves_no_process() {
    if local_dir().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("second");
    let d = dir.to_str().unwrap();
    testenv(&["up", "--dir", d, "--nodes", "1"]);
    let status = testenv(&["status", "--dir", d]);
    assert!(status.contains("apiserver: ready"), "{status}");
    let pids = pids_of(&dir);
    assert!(
        pids.len() >= 6,
        "etcd, apiserver, controller-manager, scheduler, kwok, s3s-fs: {pids:?}"
    );
    // Both environments answer at the same time on different ports.
    let first =
        std::fs::read_to_string(env().testenv_dir.as_ref().unwrap().join("ports/apiserver"))
            .unwrap();
    let second = std::fs::read_to_string(dir.join("ports/apiserver")).unwrap();
    assert_ne!(first, second);
    testenv(&["down", "--dir", d]);
    for pid in pids {
        // Gone, or a zombie waiting for init to reap it: either way not running.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().chars().next())
            .flatten();
        assert!(
            matches!(state, None | Some('Z') | Some('X')),
            "process {pid} survived `down`: {stat}"
        );
    }
    assert!(!dir.exists(), "down removes the environment's directory");
}
