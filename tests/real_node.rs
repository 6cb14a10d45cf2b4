//! Volume data, drills and the drill CronJob on a real kubelet with real CSI storage: no stand-in.
//!
//! In the local test environment (`scripts/testenv up --real-node`) the node runs containerd and
//! runc, the storage is the test CSI driver behind the real external-provisioner,
//! snapshot-controller and csi-snapshotter, and every pod (the mover included) runs the image
//! users would run (`busybox:1.37`, the lifeboat image). The test data is written and read by
//! pods through `exec`, so the same tests run against any cluster:
//!
//! `LIFEBOAT_TEST_KUBECONFIG=… LIFEBOAT_TEST_STORAGE_CLASS=<class with a VolumeSnapshotClass of
//! the same driver> scripts/test -- --test real_node`
//!
//! A test that cannot run on the cluster it is given prints NOT APPLICABLE with the reason; on
//! the local environment started with `--real-node` that is a failure instead.
mod common;

use std::time::Duration;

use common::{Lifeboat, TestNs, env, eventually, unique};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    Api, AttachParams, DeleteParams, DynamicObject, ListParams, LogParams, PostParams,
};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const BUSYBOX: &str = "busybox:1.37";
const HTTP_APP: &str = "lifeboat.test/http-app:1";

/// What a real-node test needs from the cluster.
struct RealCluster {
    class: String,
    /// Where pods without a volume must run (the local environment's other nodes are kwok's).
    node_selector: Value,
    node: Option<Node>,
}

fn local_real_node_expected() -> bool {
    common::has_real_node()
}

/// The storage class and node the tests use, or why they cannot run here.
async fn real_cluster(client: &kube::Client) -> Result<RealCluster, String> {
    let class =
        std::env::var("LIFEBOAT_TEST_STORAGE_CLASS").unwrap_or_else(|_| "lifeboat-csi".into());
    let sc = Api::<StorageClass>::all(client.clone())
        .get_opt(&class)
        .await
        .map_err(|e| format!("cannot read StorageClass {class}: {e}"))?
        .ok_or_else(|| {
            format!("no StorageClass {class} (set LIFEBOAT_TEST_STORAGE_CLASS to a CSI class with snapshots)")
        })?;
    let vsc = ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshotClass".into(),
        plural: "volumesnapshotclasses".into(),
    };
    let classes = Api::<DynamicObject>::all_with(client.clone(), &vsc)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("the cluster serves no VolumeSnapshotClass API: {e}"))?;
    if !classes
        .items
        .iter()
        .any(|c| c.data["driver"].as_str() == Some(sc.provisioner.as_str()))
    {
        return Err(format!(
            "no VolumeSnapshotClass for the driver {} of StorageClass {class}",
            sc.provisioner
        ));
    }
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels("lifeboat.test/real-node=true"))
        .await
        .map_err(|e| e.to_string())?;
    let node = nodes.items.into_iter().next();
    let node_selector = if node.is_some() {
        json!({"lifeboat.test/real-node": "true"})
    } else {
        json!({})
    };
    Ok(RealCluster {
        class,
        node_selector,
        node,
    })
}

/// The cluster for a real-node test, or `None` after printing NOT APPLICABLE.
async fn applicable(test: &str) -> Option<(kube::Client, RealCluster)> {
    let client = env().client().await;
    match real_cluster(&client).await {
        Ok(c) => Some((client, c)),
        Err(why) if local_real_node_expected() => {
            panic!("{test}: the local environment has a real node, but: {why}")
        }
        Err(why) => {
            eprintln!("NOT APPLICABLE {test}: {why}");
            None
        }
    }
}

/// `sh -c script` in a pod's first container; (stdout, stderr, exit code).
async fn sh(client: &kube::Client, ns: &str, pod: &str, script: &str) -> (String, String, i32) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let mut p = pods
        .exec(
            pod,
            ["sh", "-c", script],
            &AttachParams::default()
                .stdin(false)
                .stdout(true)
                .stderr(true),
        )
        .await
        .unwrap_or_else(|e| panic!("exec in {ns}/{pod}: {e}"));
    let mut out = p.stdout().unwrap();
    let mut err = p.stderr().unwrap();
    let status = p.take_status().unwrap();
    let (mut o, mut e) = (String::new(), String::new());
    let (r1, r2) = tokio::join!(out.read_to_string(&mut o), err.read_to_string(&mut e));
    r1.unwrap();
    r2.unwrap();
    let st = status.await;
    let code = match st {
        Some(s) if s.status.as_deref() == Some("Success") => 0,
        Some(s) => s
            .details
            .and_then(|d| d.causes)
            .and_then(|c| {
                c.into_iter()
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
            })
            .and_then(|c| c.message)
            .and_then(|m| m.parse().ok())
            .unwrap_or(-1),
        None => -1,
    };
    p.join().await.ok();
    (o, e, code)
}

async fn sh_ok(client: &kube::Client, ns: &str, pod: &str, script: &str) -> String {
    let (o, e, code) = sh(client, ns, pod, script).await;
    assert_eq!(code, 0, "script in {ns}/{pod} failed ({code}): {e}\n{o}");
    o
}

async fn pod_ready(client: &kube::Client, ns: &str, name: &str, timeout: Duration) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    eventually(&format!("pod {ns}/{name} ready"), timeout, || async {
        let p = pods.get_opt(name).await.ok()??;
        let ready = p
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
}

async fn first_pod(client: &kube::Client, ns: &str, selector: &str, timeout: Duration) -> String {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let name = eventually(&format!("a pod {selector} in {ns}"), timeout, || async {
        pods.list(&ListParams::default().labels(selector))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none())
            .and_then(|p| p.metadata.name)
    })
    .await;
    pod_ready(client, ns, &name, timeout).await;
    name
}

/// Files of every kind a volume holds: a big random file, many small ones, modes (setuid,
/// setgid, sticky, 0600), owners, symlinks (one dangling), hard links, and names longer than
/// the 100 bytes of a plain tar header. Written by busybox in the pod, as root.
const FILL: &str = r#"set -e
cd "$1"
mkdir -p nested/deeper/deepest 'dir with spaces'
i=0
while [ $i -lt 120 ]; do d=nested/d$((i % 7)); mkdir -p $d; printf 'row %s\n' $i > $d/f$i.txt; i=$((i + 1)); done
: > nested/deeper/deepest/empty
printf 'key\n' > private.key; chmod 600 private.key
printf '#!/bin/sh\nexec db\n' > start.sh; chmod 755 start.sh
printf 'x' > 'dir with spaces/a file'
ln -s nested/deeper shortcut
ln -s /nowhere/at/all dangling
long=$(printf 'long-directory-name-%03d/' 1 2 3 4 5 6)
mkdir -p "$long"
name=$(printf 'n%.0s' $(seq 1 180))
printf 'deep\n' > "$long$name"
printf 'shared\n' > hard1; ln hard1 hard2; ln hard1 "$long/hard3"
printf 'suid\n' > suid; chmod 4755 suid
mkdir setgid; chmod 2770 setgid
mkdir sticky; chmod 1777 sticky
printf 'owned\n' > owned; chown 1000:2000 owned; chown 123:456 sticky
dd if=/dev/urandom of=big.bin bs=1048576 count=48 2>/dev/null
"#;

/// A listing of everything under a directory: path, type, mode, owner, link count, size, MD5
/// of the content or the link target; and whether the hard links still share one inode.
const LIST: &str = r#"cd "$1" || exit 1
find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r f; do
  if [ -L "$f" ]; then echo "$f link $(readlink "$f") $(stat -c '%u:%g' "$f")"
  elif [ -d "$f" ]; then echo "$f dir $(stat -c '%a %u:%g' "$f")"
  else echo "$f file $(stat -c '%a %u:%g %h %s' "$f") $(md5sum < "$f" | cut -c1-32)"; fi
done
if [ -f hard1 ]; then
  [ "$(stat -c %i hard1)" = "$(stat -c %i hard2)" ] && echo "hard1=hard2"
  for h in long-directory-name-*/*/*/*/*/*/hard3; do [ "$(stat -c %i hard1)" = "$(stat -c %i "$h")" ] && echo "hard1=hard3"; done
fi
"#;

async fn fill(client: &kube::Client, ns: &str, pod: &str, dir: &str) {
    sh_ok(client, ns, pod, &format!("set -- {dir}\n{FILL}")).await;
}

async fn list(client: &kube::Client, ns: &str, pod: &str, dir: &str) -> String {
    sh_ok(client, ns, pod, &format!("set -- {dir}\n{LIST}")).await
}

fn lifeboat_local_repo(dir: &std::path::Path) -> Lifeboat {
    let lb = Lifeboat::new()
        .env(
            "LIFEBOAT_REPO",
            &format!("file://{}", dir.join("repo").display()),
        )
        .env("LIFEBOAT_PASSWORD", "real-node-test");
    lb.run(&["repo", "init"]).success();
    lb
}

async fn delete_namespace(client: &kube::Client, ns: &str) {
    let nss = Api::<Namespace>::all(client.clone());
    nss.delete(ns, &DeleteParams::default()).await.unwrap();
    eventually(
        &format!("namespace {ns} gone"),
        Duration::from_secs(180),
        || async { nss.get_opt(ns).await.unwrap().is_none().then_some(()) },
    )
    .await;
}

async fn create<K>(api: &Api<K>, v: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let o: K = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &o).await.unwrap();
}

/// A one-replica StatefulSet `name` of busybox (`sleep`), with `security` as its pod security
/// context and one claim of `class` per (claim, mount path, size).
async fn busybox_statefulset(
    ns: &TestNs,
    name: &str,
    security: Value,
    claims: &[(&str, &str, &str)],
    class: &str,
) {
    let mounts: Vec<Value> = claims
        .iter()
        .map(|(c, path, _)| json!({"name": c, "mountPath": path}))
        .collect();
    let templates: Vec<Value> = claims
        .iter()
        .map(|(c, _, size)| {
            json!({"metadata": {"name": c}, "spec": {"accessModes": ["ReadWriteOnce"],
                   "storageClassName": class, "resources": {"requests": {"storage": size}}}})
        })
        .collect();
    create(
        &ns.api::<StatefulSet>(),
        json!({
            "metadata": {"name": name},
            "spec": {"replicas": 1, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "securityContext": security,
                    "containers": [{"name": name, "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "36000"], "volumeMounts": mounts}]}},
                "volumeClaimTemplates": templates}
        }),
    )
    .await;
}

fn mover_pods_left(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("lifeboat.io/mover"))
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// The whole volume path on a real kubelet: a StatefulSet with two claims of real CSI storage,
/// written by busybox; backup with CSI snapshots (the mover runs busybox tar); the namespace is
/// deleted; restore; every file comes back identical (content, modes, owners, links, long
/// names); a drill with the data check passes; nothing of lifeboat's is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_volumes_back_up_and_restore_byte_identical_through_busybox_tar() {
    let Some((client, rc)) = applicable("real_volumes_back_up_and_restore").await else {
        return;
    };
    let ns = TestNs::new("rn-vol").await;
    busybox_statefulset(
        &ns,
        "db",
        json!({}),
        &[
            ("data", "/var/lib/db", "1Gi"),
            ("logs", "/var/log/db", "1Gi"),
        ],
        &rc.class,
    )
    .await;
    pod_ready(&client, &ns.name, "db-0", Duration::from_secs(180)).await;
    fill(&client, &ns.name, "db-0", "/var/lib/db").await;
    sh_ok(
        &client,
        &ns.name,
        "db-0",
        "i=0; while [ $i -lt 500 ]; do echo \"line $i\"; i=$((i+1)); done > /var/log/db/db.log",
    )
    .await;
    let want_data = list(&client, &ns.name, "db-0", "/var/lib/db").await;
    let want_logs = list(&client, &ns.name, "db-0", "/var/log/db").await;
    assert!(
        want_data.contains("hard1=hard2") && want_data.contains("hard1=hard3"),
        "{want_data}"
    );
    assert!(
        want_data.lines().any(|l| l.len() > 250),
        "a path longer than 250 bytes"
    );

    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_local_repo(tmp.path());
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
    let rep = r.json();
    assert_eq!(rep["warnings"], json!([]), "{rep:#}");
    let pods = ns.api::<Pod>().list(&ListParams::default()).await.unwrap();
    assert!(
        mover_pods_left(&pods.items).is_empty(),
        "{:?}",
        mover_pods_left(&pods.items)
    );
    lb.run(&["backup", "verify", "latest", "--read-data"])
        .success();

    delete_namespace(&client, &ns.name).await;
    let r = lb.run(&["restore", "latest", "-n", &ns.name, "-o", "json"]);
    r.success();
    let rep = r.json();
    let filled: Vec<&Value> = rep["items"]
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
    pod_ready(&client, &ns.name, "db-0", Duration::from_secs(180)).await;
    let got_data = list(&client, &ns.name, "db-0", "/var/lib/db").await;
    let got_logs = list(&client, &ns.name, "db-0", "/var/log/db").await;
    assert_eq!(got_data, want_data, "the data volume came back different");
    assert_eq!(got_logs, want_logs, "the logs volume came back different");

    // A drill restores it again into scratch namespaces and compares every file.
    let d = lb.run(&[
        "drill",
        "run",
        "-n",
        &ns.name,
        "--timeout",
        "4m",
        "-o",
        "json",
    ]);
    let rep = d.json();
    let vol: Vec<&Value> = rep["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("volume-data/"))
        .collect();
    assert_eq!(vol.len(), 2, "{rep:#}");
    assert!(vol.iter().all(|c| c["status"] == "pass"), "{rep:#}");
    d.success();
    let _ = rc.node;
    ns.cleanup().await;
}

/// The HTTP test app on a real node, serving a file from its volume; the drill's HTTP and
/// command checks reach the restored pod for real: they pass on the good backup, and fail on a
/// backup of the app after its data went bad.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_http_and_command_checks_reach_a_real_pod_and_catch_bad_data() {
    let Some((client, rc)) = applicable("drill_http_and_command_checks").await else {
        return;
    };
    let ns = TestNs::new("rn-web").await;
    create(
        &ns.api::<PersistentVolumeClaim>(),
        json!({"metadata": {"name": "content"}, "spec": {"accessModes": ["ReadWriteOnce"],
               "storageClassName": rc.class, "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    create(
        &ns.api::<Deployment>(),
        json!({"metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": HTTP_APP, "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                        "volumeMounts": [{"name": "content", "mountPath": "/data"}]}],
                    "volumes": [{"name": "content", "persistentVolumeClaim": {"claimName": "content"}}]}}}}),
    )
    .await;
    create(
        &ns.api::<k8s_openapi::api::core::v1::Service>(),
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
               "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    let pod = first_pod(&client, &ns.name, "app=web", Duration::from_secs(180)).await;
    sh_ok(
        &client,
        &ns.name,
        &pod,
        "echo 'release 42: all good' > /data/index.html",
    )
    .await;

    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("drill.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: lifeboat.io/v1\nkind: DrillSpec\nhttp:\n  - name: homepage\n    namespace: {ns}\n    service: web\n    port: 80\n    path: /index.html\n    bodyContains: \"release 42: all good\"\ncommands:\n  - name: content\n    namespace: {ns}\n    selector: app=web\n    command: [\"grep\", \"-q\", \"all good\", \"/data/index.html\"]\n",
            ns = ns.name
        ),
    )
    .unwrap();
    let lb = lifeboat_local_repo(tmp.path());
    lb.run(&["backup", "create", "-n", &ns.name, "--snapshot-volumes"])
        .success();
    let spec_s = spec.to_str().unwrap();
    let d = lb.run(&[
        "drill",
        "run",
        "-n",
        &ns.name,
        "--spec",
        spec_s,
        "--timeout",
        "4m",
        "-o",
        "json",
    ]);
    let rep = d.json();
    let check = |rep: &Value, name: &str| -> Value {
        rep["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no check {name}: {rep:#}"))
    };
    assert_eq!(check(&rep, "homepage")["status"], "pass", "{rep:#}");
    assert_eq!(check(&rep, "content")["status"], "pass", "{rep:#}");
    d.success();

    // The data goes bad; tonight's backup has it; the drill of that backup fails on both checks.
    sh_ok(
        &client,
        &ns.name,
        &pod,
        "echo 'release 42: CORRUPTED' > /data/index.html",
    )
    .await;
    lb.run(&["backup", "create", "-n", &ns.name, "--snapshot-volumes"])
        .success();
    let d = lb.run(&[
        "drill",
        "run",
        "-n",
        &ns.name,
        "--spec",
        spec_s,
        "--timeout",
        "4m",
        "-o",
        "json",
    ]);
    d.code_is(2);
    let rep = d.json();
    assert_eq!(check(&rep, "homepage")["status"], "fail", "{rep:#}");
    assert_eq!(check(&rep, "content")["status"], "fail", "{rep:#}");

    // The good backup's page is damaged in the repository: the drill of it fails and names it.
    let good = lb.run(&["backup", "list", "-o", "json"]).json();
    let good_id = good.as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    damage_file_chunk(tmp.path(), "real-node-test", &good_id, "index.html").await;
    let d = lb.run(&[
        "drill",
        "run",
        "--backup",
        &good_id,
        "-n",
        &ns.name,
        "--spec",
        spec_s,
        "--timeout",
        "4m",
        "-o",
        "json",
    ]);
    d.code_is(2);
    assert!(
        d.stdout().contains("index.html"),
        "the drill names the damaged file:\n{}",
        d.stdout()
    );
    ns.cleanup().await;
}

/// `drill cronjob` output applied as it is; a Job made from its template runs the lifeboat image
/// in a pod on the real node under the CronJob's ServiceAccount, drills a backup in an S3
/// repository, and the test reads the outcome from the Job's status and the pod's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_cronjob_runs_the_lifeboat_image_in_a_pod() {
    let Some((client, rc)) = applicable("the_drill_cronjob_runs_the_lifeboat_image").await else {
        return;
    };
    let Some(node) = rc.node.as_ref() else {
        eprintln!(
            "NOT APPLICABLE the_drill_cronjob_runs_the_lifeboat_image: needs the local environment's real node (the lifeboat image is imported there)"
        );
        return;
    };
    let testenv = env().testenv_dir.clone().expect("local environment");
    let node_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .expect("the real node's InternalIP");
    let api_port = std::fs::read_to_string(testenv.join("ports/apiserver")).unwrap();
    let s3_port = std::fs::read_to_string(testenv.join("ports/s3")).unwrap();

    // The app to drill and a backup of it in S3.
    let app = TestNs::new("rn-cron-app").await;
    create(
        &app.api::<k8s_openapi::api::core::v1::ConfigMap>(),
        json!({"metadata": {"name": "settings"}, "data": {"mode": "production"}}),
    )
    .await;
    // A volume with data: the drill in the pod restores it with its own identity (claims and
    // mover pods in the scratch namespace) and compares every file.
    create(
        &app.api::<PersistentVolumeClaim>(),
        json!({"metadata": {"name": "files"}, "spec": {"accessModes": ["ReadWriteOnce"],
               "storageClassName": rc.class, "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    create(
        &app.api::<Pod>(),
        json!({"metadata": {"name": "writer"}, "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "w", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "36000"], "volumeMounts": [{"name": "f", "mountPath": "/files"}]}],
            "volumes": [{"name": "f", "persistentVolumeClaim": {"claimName": "files"}}]}}),
    )
    .await;
    pod_ready(&client, &app.name, "writer", Duration::from_secs(180)).await;
    sh_ok(
        &client,
        &app.name,
        "writer",
        "mkdir -p /files/a/b && printf 'x,y\n1,2\n' > /files/a/b/report.csv",
    )
    .await;
    let s3 = common::s3_client_with(None);
    let bucket = unique("lbt-cron");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let repo = format!("s3://{bucket}/drills");
    let e = &env().s3;
    let lb = Lifeboat::new()
        .env("LIFEBOAT_REPO", &repo)
        .env("LIFEBOAT_S3_ENDPOINT", &e.endpoint)
        .env("AWS_ACCESS_KEY_ID", &e.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &e.secret_key)
        .env("AWS_REGION", &e.region)
        .env("LIFEBOAT_PASSWORD", "cron-drill-pw");
    lb.run(&["repo", "init"]).success();
    lb.run(&["backup", "create", "-n", &app.name, "--snapshot-volumes"])
        .success();

    // The manifests, applied as printed.
    let sys = unique("lbt-cron-sys");
    let endpoint = format!("http://{node_ip}:{}", s3_port.trim());
    let r = lb.run(&[
        "drill",
        "cronjob",
        "--schedule",
        "0 3 * * *",
        "--namespace",
        &sys,
        "--drill-namespace",
        &app.name,
        "--repo",
        &repo,
        "--s3-endpoint",
        &endpoint,
        "--timeout",
        "3m",
    ]);
    r.success();
    let docs: Vec<Value> = r
        .stdout()
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    for d in &docs {
        apply(&client, d).await;
    }
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &sys);
    create(
        &secrets,
        json!({"metadata": {"name": "lifeboat-repository"}, "stringData": {
            "LIFEBOAT_PASSWORD": "cron-drill-pw", "AWS_ACCESS_KEY_ID": e.access_key,
            "AWS_SECRET_ACCESS_KEY": e.secret_key, "AWS_REGION": e.region}}),
    )
    .await;

    // "kubectl create job --from=cronjob/lifeboat-drill", with two facts of this test cluster:
    // its other nodes are kwok's (the pod must run on the real node), and it has no Service
    // proxy (kube-proxy), so the in-cluster API address is the node's.
    let cj = docs
        .iter()
        .find(|d| d["kind"] == "CronJob")
        .expect("a CronJob");
    let mut tpl = cj["spec"]["jobTemplate"]["spec"].clone();
    tpl["template"]["spec"]["nodeSelector"] = rc.node_selector.clone();
    let c0 = &mut tpl["template"]["spec"]["containers"][0];
    assert_eq!(
        c0["image"].as_str().unwrap(),
        concat!("ghcr.io/lifeboat-dev/lifeboat:", env!("CARGO_PKG_VERSION"))
    );
    c0["imagePullPolicy"] = json!("IfNotPresent");
    c0["env"].as_array_mut().unwrap().extend([
        json!({"name": "KUBERNETES_SERVICE_HOST", "value": node_ip}),
        json!({"name": "KUBERNETES_SERVICE_PORT", "value": api_port.trim()}),
    ]);
    let jobs = Api::<Job>::namespaced(client.clone(), &sys);
    create(
        &jobs,
        json!({"metadata": {"name": "drill-now"}, "spec": tpl}),
    )
    .await;
    let job = eventually(
        "the drill Job to finish",
        Duration::from_secs(300),
        || async {
            let j = jobs.get("drill-now").await.ok()?;
            let st = j.status.clone()?;
            (st.succeeded.unwrap_or(0) > 0 || st.failed.unwrap_or(0) > 0).then_some(j)
        },
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &sys);
    let pod = pods
        .list(&ListParams::default().labels("job-name=drill-now"))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the Job's pod");
    let log = pods
        .logs(pod.metadata.name.as_deref().unwrap(), &LogParams::default())
        .await
        .unwrap_or_default();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("lifeboat-drill"));
    assert_eq!(
        spec.node_name.as_deref(),
        node.metadata.name.as_deref(),
        "ran on the real node"
    );
    assert_eq!(
        job.status.as_ref().unwrap().succeeded.unwrap_or(0),
        1,
        "the drill Job failed; its log:\n{log}"
    );
    assert!(
        log.contains("restore-succeeded"),
        "the drill's report is in the log:\n{log}"
    );
    // The pod's stdout is the drill's JSON report (after any log lines on stderr).
    let report: Value = log
        .find("\n{")
        .map(|i| &log[i + 1..])
        .or_else(|| log.starts_with('{').then_some(log.as_str()))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no JSON report in the log:\n{log}"));
    assert_eq!(report["passed"], true, "{report:#}");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "volume-data/files" && c["status"] == "pass"),
        "the volume was drilled in the pod: {report:#}"
    );
    assert!(
        !log.contains("cannot delete a mover pod"),
        "the drill's identity cleans up its movers:\n{log}"
    );

    // Clean up what is cluster-wide.
    for d in docs.iter().rev() {
        delete(&client, d).await;
    }
    Api::<Namespace>::all(client.clone())
        .delete(&sys, &DeleteParams::default())
        .await
        .ok();
    app.cleanup().await;
}

async fn dynamic_api(client: &kube::Client, d: &Value) -> Api<DynamicObject> {
    let (group, version) = d["apiVersion"]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .map(|(g, v)| (g.to_string(), v.to_string()))
        .unwrap_or((String::new(), "v1".into()));
    let gvk = kube::api::GroupVersionKind::gvk(&group, &version, d["kind"].as_str().unwrap());
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    match (
        caps.scope == kube::discovery::Scope::Namespaced,
        d["metadata"]["namespace"].as_str(),
    ) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

async fn apply(client: &kube::Client, d: &Value) {
    let api = dynamic_api(client, d).await;
    // kubectl apply --server-side: also over what an earlier, interrupted run left.
    let name = d["metadata"]["name"].as_str().unwrap();
    let pp = kube::api::PatchParams::apply("lifeboat-test").force();
    if let Err(e) = api.patch(name, &pp, &kube::api::Patch::Apply(d)).await {
        panic!("{} {}: {e}", d["kind"], d["metadata"]["name"]);
    }
}

async fn delete(client: &kube::Client, d: &Value) {
    let api = dynamic_api(client, d).await;
    let _ = api
        .delete(
            d["metadata"]["name"].as_str().unwrap(),
            &DeleteParams::default(),
        )
        .await;
}

/// Every mover pod seen in `ns` until the task is aborted: (name, runAsUser, fsGroup).
fn watch_movers(
    client: kube::Client,
    ns: String,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<
        std::sync::Mutex<std::collections::BTreeMap<String, (Option<i64>, Option<i64>)>>,
    >,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let out = seen.clone();
    let pods = Api::<Pod>::namespaced(client, &ns);
    let task = tokio::spawn(async move {
        loop {
            if let Ok(l) = pods
                .list(&ListParams::default().labels("lifeboat.io/mover"))
                .await
            {
                for p in l.items {
                    let sc = p.spec.as_ref().and_then(|s| s.security_context.clone());
                    let c = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.first())
                        .and_then(|c| c.security_context.clone());
                    let user = c
                        .as_ref()
                        .and_then(|c| c.run_as_user)
                        .or(sc.as_ref().and_then(|s| s.run_as_user));
                    let fs_group = sc.as_ref().and_then(|s| s.fs_group);
                    seen.lock()
                        .unwrap()
                        .insert(p.metadata.name.unwrap_or_default(), (user, fs_group));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (task, out)
}

/// A workload running as a non-root user with an fsGroup: its volume is read by a mover running
/// as that user (on a real kubelet, which applies the fsGroup to the CSI volume), the backup
/// needs no root, and the restore brings back the owners and modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_workloads_fsgroup_volume_is_read_as_that_user() {
    let Some((client, rc)) = applicable("a_non_root_workloads_fsgroup_volume").await else {
        return;
    };
    let ns = TestNs::new("rn-user").await;
    busybox_statefulset(
        &ns,
        "app",
        json!({"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000}),
        &[("data", "/data", "1Gi")],
        &rc.class,
    )
    .await;
    pod_ready(&client, &ns.name, "app-0", Duration::from_secs(180)).await;
    // Written by the app itself: uid 1000, group 2000 from the fsGroup (setgid volume root).
    sh_ok(
        &client,
        &ns.name,
        "app-0",
        "set -e; cd /data; id -u; mkdir -p db; i=0; while [ $i -lt 20 ]; do echo row $i > db/t$i; i=$((i+1)); done; \
         echo secret > db/key; chmod 600 db/key; echo shared > db/shared; chmod 640 db/shared",
    )
    .await;
    let want = list(&client, &ns.name, "app-0", "/data").await;
    assert!(
        want.contains("./db/key file 600 1000:2000"),
        "fsGroup applied by the kubelet:\n{want}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_local_repo(tmp.path());
    let (watch, seen) = watch_movers(client.clone(), ns.name.clone());
    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--snapshot-volumes",
        "-o",
        "json",
    ]);
    watch.abort();
    r.success();
    assert!(!r.stderr().contains("reading as root"), "{}", r.stderr());
    let movers = seen.lock().unwrap().clone();
    assert!(!movers.is_empty(), "the mover pod was seen");
    assert!(
        movers
            .values()
            .all(|(u, g)| *u == Some(1000) && *g == Some(2000)),
        "movers ran as the workload's user: {movers:?}"
    );

    delete_namespace(&client, &ns.name).await;
    lb.run(&["restore", "latest", "-n", &ns.name]).success();
    pod_ready(&client, &ns.name, "app-0", Duration::from_secs(180)).await;
    // The restore wrote the files back as they were; mounting them into the fsGroup pod, the
    // kubelet (fsGroupChangePolicy Always, the default) then set the group and added g+rw to
    // files and ug+rwx + setgid to directories: what any restored fsGroup volume looks like.
    let kubelet_view: String = want
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            match f.get(1) {
                Some(&"file") | Some(&"dir") => {
                    let add = if f[1] == "file" { 0o660 } else { 0o2770 };
                    let mode = u32::from_str_radix(f[2], 8).unwrap() | add;
                    let owner = format!("{}:2000", f[3].split(':').next().unwrap());
                    let mut out = vec![
                        f[0].to_string(),
                        f[1].to_string(),
                        format!("{mode:o}"),
                        owner,
                    ];
                    out.extend(f[4..].iter().map(|s| s.to_string()));
                    out.join(" ") + "\n"
                }
                _ => format!("{l}\n"),
            }
        })
        .collect();
    assert_eq!(
        list(&client, &ns.name, "app-0", "/data").await,
        kubelet_view
    );
    // A drill of it passes: the kubelet's fsGroup changes are not a difference.
    let d = lb.run(&[
        "drill",
        "run",
        "-n",
        &ns.name,
        "--timeout",
        "4m",
        "-o",
        "json",
    ]);
    let rep = d.json();
    let vol = rep["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "volume-data/data-app-0")
        .cloned()
        .unwrap_or_else(|| panic!("{rep:#}"));
    assert_eq!(vol["status"], "pass", "{rep:#}");
    assert!(
        vol["message"].as_str().unwrap().contains("fsGroup 2000"),
        "{vol}"
    );
    d.success();
    ns.cleanup().await;
}

/// Flip a byte of the first chunk of `file` (in any volume of backup `id`) inside its pack.
async fn damage_file_chunk(dir: &std::path::Path, password: &str, id: &str, file: &str) {
    use std::sync::Arc;
    let store = Arc::new(lifeboat::store::local::LocalStore::new(dir.join("repo")));
    let repo = Arc::new(
        lifeboat::repo::Repository::open(store, password.as_bytes())
            .await
            .unwrap(),
    );
    repo.load_index().await.unwrap();
    let (_, snap) = repo.find_snapshot(id).await.unwrap();
    let mut chunk = None;
    for v in &snap.volumes {
        let tree = lifeboat::volume::load_tree(&repo, &v.trees).await.unwrap();
        if let Some(f) = tree.iter().find(|f| f.path == file) {
            chunk = f.chunks.first().copied();
        }
    }
    let chunk = chunk.unwrap_or_else(|| panic!("{file} is in backup {id}"));
    let loc = repo.index_snapshot().await[&chunk];
    let pack = dir
        .join("repo/data")
        .join(&loc.pack.to_hex()[..2])
        .join(loc.pack.to_hex());
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[loc.offset as usize + 5] ^= 0x55;
    std::fs::write(&pack, bytes).unwrap();
}

/// lifeboat's temporary objects left in `ns`: mover pods, temporary claims, VolumeSnapshots.
async fn leftovers(client: &kube::Client, ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("lifeboat.io/mover"))
        .await
        .unwrap()
        .items
    {
        out.push(format!("pod {}", p.metadata.name.unwrap_or_default()));
    }
    for c in Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let n = c.metadata.name.unwrap_or_default();
        if n.starts_with("lifeboat-tmp-") {
            out.push(format!("pvc {n}"));
        }
    }
    let snaps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &lifeboat::volume::snapshots::snapshot_resource(),
    );
    for s in snaps.list(&ListParams::default()).await.unwrap().items {
        out.push(format!(
            "volumesnapshot {}",
            s.metadata.name.unwrap_or_default()
        ));
    }
    let groups: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &lifeboat::volume::snapshots::group_snapshot_resource(),
    );
    // A cluster without the group snapshot API has none.
    if let Ok(l) = groups.list(&ListParams::default()).await {
        for g in l.items {
            out.push(format!(
                "volumegroupsnapshot {}",
                g.metadata.name.unwrap_or_default()
            ));
        }
    }
    out
}

/// Ctrl-C while a real mover streams a volume out: lifeboat exits 130, lists no backup, and its
/// snapshot, temporary claim and mover pod are gone (the real snapshot-controller and
/// provisioner delete them for real).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_real_data_movement_cleans_up_and_lists_no_backup() {
    let Some((client, rc)) = applicable("ctrl_c_during_real_data_movement").await else {
        return;
    };
    let ns = TestNs::new("rn-ctrlc").await;
    busybox_statefulset(&ns, "db", json!({}), &[("data", "/data", "2Gi")], &rc.class).await;
    pod_ready(&client, &ns.name, "db-0", Duration::from_secs(180)).await;
    sh_ok(
        &client,
        &ns.name,
        "db-0",
        "dd if=/dev/urandom of=/data/big.bin bs=1048576 count=400 2>/dev/null",
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_local_repo(tmp.path());
    let mut child = lb.spawn(&["backup", "create", "-n", &ns.name, "--snapshot-volumes"]);
    let pods = ns.api::<Pod>();
    eventually("a running mover pod", Duration::from_secs(120), || async {
        let l = pods
            .list(&ListParams::default().labels("lifeboat.io/mover"))
            .await
            .ok()?;
        l.items
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup finished before the signal"
    );
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        common::wait_bounded(&mut child, "backup create (SIGINT)").code(),
        Some(130)
    );
    eventually(
        "no temporary objects left",
        Duration::from_secs(90),
        || async { leftovers(&client, &ns.name).await.is_empty().then_some(()) },
    )
    .await;
    let list = lb.run(&["backup", "list", "-o", "json"]);
    list.success();
    assert_eq!(
        list.json().as_array().map(|a| a.len()).unwrap_or(0),
        0,
        "{}",
        list.stdout()
    );
    ns.cleanup().await;
}

/// One point in time with hooks: a StatefulSet with two claims whose pre hook (Velero's
/// annotation for the data volume marker, lifeboat's for the other) writes a marker into both
/// volumes and whose post hook removes it. Both snapshots are taken between the hooks (the
/// marker is in both restored volumes, not in the live ones afterwards), the report gives each
/// snapshot's time and the spread; a failing pre hook fails the backup and its post hook
/// still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_bracket_snapshots_of_every_claim_taken_together() {
    let Some((client, rc)) = applicable("hooks_bracket_snapshots").await else {
        return;
    };
    let ns = TestNs::new("rn-hooks").await;
    let pre = "touch /var/lib/db/FROZEN /var/log/db/FROZEN";
    let post = "rm -f /var/lib/db/FROZEN /var/log/db/FROZEN";
    create(
        &ns.api::<StatefulSet>(),
        json!({
            "metadata": {"name": "db"},
            "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}, "annotations": {
                        "pre.hook.backup.lifeboat.io/command": pre,
                        "post.hook.backup.velero.io/command": serde_json::to_string(&["/bin/sh", "-c", post]).unwrap(),
                        "post.hook.restore.velero.io/command": "[\"/bin/sh\", \"-c\", \"echo migrated > /var/lib/db/MIGRATED\"]",
                    }},
                    "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "db", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "36000"], "volumeMounts": [
                            {"name": "data", "mountPath": "/var/lib/db"}, {"name": "logs", "mountPath": "/var/log/db"}]}]}},
                "volumeClaimTemplates": [
                    {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": rc.class, "resources": {"requests": {"storage": "1Gi"}}}},
                    {"metadata": {"name": "logs"}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": rc.class, "resources": {"requests": {"storage": "1Gi"}}}}]}
        }),
    )
    .await;
    pod_ready(&client, &ns.name, "db-0", Duration::from_secs(180)).await;
    sh_ok(
        &client,
        &ns.name,
        "db-0",
        "echo rows > /var/lib/db/table; echo log > /var/log/db/log",
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_local_repo(tmp.path());
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
    let rep = r.json();
    let hooks = rep["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2, "{rep:#}");
    assert_eq!(
        (hooks[0]["phase"].as_str(), hooks[0]["ok"].as_bool()),
        (Some("pre"), Some(true)),
        "{rep:#}"
    );
    assert_eq!(
        (hooks[1]["phase"].as_str(), hooks[1]["ok"].as_bool()),
        (Some("post"), Some(true)),
        "{rep:#}"
    );
    let snaps = rep["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{rep:#}");
    assert!(snaps.iter().all(|s| s["time"].is_string()), "{rep:#}");
    // The test driver offers volume group snapshots: both claims are one group, one instant.
    assert!(
        snaps[0]["group"].is_string() && snaps[0]["group"] == snaps[1]["group"],
        "one VolumeGroupSnapshot for the StatefulSet's claims: {rep:#}"
    );
    assert_eq!(rep["snapshotSpreadSeconds"].as_f64(), Some(0.0), "{rep:#}");
    // Deleting the group deletes its members (the snapshot controller does, shortly after).
    eventually(
        "the group snapshot and its members to be deleted",
        Duration::from_secs(60),
        || async { leftovers(&client, &ns.name).await.is_empty().then_some(()) },
    )
    .await;
    assert!(
        rep["snapshotSpreadSeconds"].as_f64().unwrap() >= 0.0,
        "{rep:#}"
    );
    let (live, _, _) = sh(&client, &ns.name, "db-0", "ls /var/lib/db /var/log/db").await;
    assert!(!live.contains("FROZEN"), "the post hook ran: {live}");

    delete_namespace(&client, &ns.name).await;
    let r = lb.run(&["restore", "latest", "-n", &ns.name, "-o", "json"]);
    r.success();
    let rep = r.json();
    let hook_items: Vec<&Value> = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "RestoreHook")
        .collect();
    assert!(
        hook_items.len() == 1
            && hook_items[0]["outcome"] == "created"
            && hook_items[0]["name"] == "db-0",
        "the restore hook ran once the pod was ready: {rep:#}"
    );
    pod_ready(&client, &ns.name, "db-0", Duration::from_secs(180)).await;
    let (restored, _, _) = sh(
        &client,
        &ns.name,
        "db-0",
        "ls /var/lib/db/FROZEN /var/log/db/FROZEN && cat /var/lib/db/table /var/lib/db/MIGRATED",
    )
    .await;
    assert!(
        restored.matches("FROZEN").count() == 2
            && restored.contains("rows")
            && restored.contains("migrated"),
        "both snapshots were taken between the hooks: {restored}"
    );
    // A pre hook that fails (on-error Fail, the default): no snapshot, the backup fails, and
    // the post hook still runs.
    sh_ok(
        &client,
        &ns.name,
        "db-0",
        "rm -f /var/lib/db/FROZEN /var/log/db/FROZEN",
    )
    .await;
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .patch(
            "db-0",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                "pre.hook.backup.lifeboat.io/command": format!("{pre}; exit 3")}}})),
        )
        .await
        .unwrap();
    let r = lb.run(&["backup", "create", "-n", &ns.name, "--snapshot-volumes"]);
    r.code_is(1);
    assert!(
        r.stderr().contains("pre hook of pod") && r.stderr().contains("no snapshot was taken"),
        "{}",
        r.describe()
    );
    let (live, _, _) = sh(&client, &ns.name, "db-0", "ls /var/lib/db /var/log/db").await;
    assert!(
        !live.contains("FROZEN"),
        "the post hook ran after the failed pre hook: {live}"
    );
    assert!(
        leftovers(&client, &ns.name).await.is_empty(),
        "{:?}",
        leftovers(&client, &ns.name).await
    );
    // The same from a hooks file, for pods that declare nothing themselves.
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .patch(
            "db-0",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                "pre.hook.backup.lifeboat.io/command": null,
                "post.hook.backup.velero.io/command": null}}})),
        )
        .await
        .unwrap();
    let file = tmp.path().join("hooks.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: lifeboat.io/v1\nkind: BackupHooks\nhooks:\n  - name: db\n    namespaces: [{}]\n    labelSelector: app=db\n    pre: {{command: \"touch /var/lib/db/FILEHOOK\"}}\n    post: {{command: [/bin/rm, -f, /var/lib/db/FILEHOOK]}}\n",
            ns.name
        ),
    )
    .unwrap();
    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--snapshot-volumes",
        "--hooks",
        file.to_str().unwrap(),
        "-o",
        "json",
    ]);
    r.success();
    let rep = r.json();
    let hooks = rep["hooks"].as_array().unwrap();
    assert!(
        hooks.len() == 2 && hooks.iter().all(|h| h["ok"] == true),
        "{rep:#}"
    );
    let (live, _, _) = sh(&client, &ns.name, "db-0", "ls /var/lib/db").await;
    assert!(!live.contains("FILEHOOK"), "{live}");
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_hook_streams_into_the_repository_and_back_byte_identical() {
    let Some((client, rc)) = applicable("dump_hooks").await else {
        return;
    };
    let ns = TestNs::new("rn-dump").await;
    // Two replicas: the StatefulSet is dumped once, from db-0 (only db-0 has the data).
    create(
        &ns.api::<StatefulSet>(),
        json!({
            "metadata": {"name": "db"},
            "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}, "annotations": {
                        "dump.hook.backup.lifeboat.io/command": "cat /work/blob",
                        "dump.hook.backup.lifeboat.io/name": "db.dump",
                        "dump.hook.backup.lifeboat.io/restore-command": "cat > /work/restored",
                    }},
                    "spec": {"terminationGracePeriodSeconds": 1, "nodeSelector": rc.node_selector,
                    "containers": [{"name": "db", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "36000"],
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
                    "volumes": [{"name": "work", "emptyDir": {}}]}}}
        }),
    )
    .await;
    pod_ready(&client, &ns.name, "db-0", Duration::from_secs(180)).await;
    pod_ready(&client, &ns.name, "db-1", Duration::from_secs(180)).await;
    // 5 MB of random data: several chunks, nothing compressible.
    let want = sh_ok(
        &client,
        &ns.name,
        "db-0",
        "head -c 5000000 /dev/urandom > /work/blob && sha256sum /work/blob | cut -d' ' -f1",
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_local_repo(tmp.path());
    let r = lb.run(&["backup", "create", "-n", &ns.name, "-o", "json"]);
    r.success();
    let rep = r.json();
    let hooks = rep["hooks"].as_array().unwrap();
    assert!(
        hooks.len() == 1 && hooks[0]["phase"] == "dump" && hooks[0]["ok"] == true,
        "one dump, of db-0: {rep:#}"
    );
    assert_eq!(hooks[0]["pod"], "db-0", "{rep:#}");
    let d = lb.run(&["backup", "describe", "latest", "-o", "json"]);
    d.success();
    let desc = d.json();
    let dumps = desc["dumps"].as_array().unwrap();
    assert_eq!(dumps.len(), 1, "{desc:#}");
    assert_eq!(dumps[0]["bytes"], 5_000_000, "{desc:#}");
    assert_eq!(dumps[0]["owner"], "StatefulSet/db", "{desc:#}");
    let table = lb.run(&["backup", "describe", "latest"]);
    assert!(table.stdout().contains(":db.dump"), "{}", table.describe());
    // The repository holds it: check reads every chunk.
    lb.run(&["repo", "check", "--read-data"]).success();

    delete_namespace(&client, &ns.name).await;
    let r = lb.run(&["restore", "latest", "-n", &ns.name, "-o", "json"]);
    r.success();
    let rep = r.json();
    let dump_items: Vec<&Value> = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "RestoreDump")
        .collect();
    assert!(
        dump_items.len() == 1 && dump_items[0]["outcome"] == "created",
        "{rep:#}"
    );
    let got = sh_ok(
        &client,
        &ns.name,
        "db-0",
        "sha256sum /work/restored | cut -d' ' -f1",
    )
    .await;
    assert_eq!(got, want, "the dump came back byte-identical");
    sh_ok(&client, &ns.name, "db-0", "cp /work/restored /work/blob").await;

    // Restored again over the existing workload: the dump is not poured into it.
    let r = lb.run(&["restore", "latest", "-n", &ns.name, "-o", "json"]);
    r.success();
    let rep = r.json();
    let again: Vec<&Value> = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "RestoreDump")
        .collect();
    assert!(
        again.len() == 1 && again[0]["outcome"] == "skipped",
        "{rep:#}"
    );

    // Store faults while the dump streams in: throttling is retried (the dump is whole); a
    // permanent failure fails the backup with one line and lists nothing new.
    let before = lb.run(&["backup", "list", "-o", "json"]).json();
    let r = lb
        .clone_with("LIFEBOAT_FAULTS", "put@data/,count=3,fail=throttle")
        .run(&["backup", "create", "-n", &ns.name, "-o", "json"]);
    r.success();
    lb.run(&["repo", "check", "--read-data"]).success();
    let r = lb
        .clone_with("LIFEBOAT_FAULTS", "put@data/,count=0,fail=permanent")
        .run(&["backup", "create", "-q", "-n", &ns.name]);
    r.code_is(1);
    assert_eq!(r.stderr().trim().lines().count(), 1, "{}", r.describe());
    let listed = lb.run(&["backup", "list", "-o", "json"]).json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        before.as_array().unwrap().len() + 1,
        "only the throttled backup was added"
    );
    let before = listed;

    // A failing dump command (on-error Fail): the backup fails, nothing is listed.
    for p in ["db-0", "db-1"] {
        Api::<Pod>::namespaced(client.clone(), &ns.name)
            .patch(
                p,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                    "dump.hook.backup.lifeboat.io/command": "cat /work/no-such-file"}}})),
            )
            .await
            .unwrap();
    }
    let r = lb.run(&["backup", "create", "-n", &ns.name]);
    r.code_is(1);
    assert!(
        r.stderr().contains("the dump") && r.stderr().contains("exited with status 1"),
        "{}",
        r.describe()
    );
    let after = lb.run(&["backup", "list", "-o", "json"]).json();
    assert_eq!(before, after, "a failed dump lists no backup");
    // on-error Continue: the backup is written without the dump, with a warning.
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .patch(
            "db-0",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                "dump.hook.backup.lifeboat.io/on-error": "Continue"}}})),
        )
        .await
        .unwrap();
    let r = lb.run(&["backup", "create", "-n", &ns.name, "-o", "json"]);
    r.code_is(2); // written, with warnings
    let rep = r.json();
    assert!(
        rep["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("is not in this backup")),
        "{rep:#}"
    );
    // --no-hooks: no dump is attempted.
    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--no-hooks",
        "-o",
        "json",
    ]);
    r.success();
    assert!(r.json().get("hooks").is_none(), "{}", r.describe());
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_volume_mode_reads_storage_without_snapshots_live_between_the_hooks() {
    let Some((client, rc)) = applicable("volume_mode_live").await else {
        return;
    };
    let ns = TestNs::new("rn-live").await;
    // A hostPath PersistentVolume (no CSI driver, no snapshots) pre-bound to a claim, and a
    // CSI claim beside it: auto reads the first live and snapshots the second.
    let pv_name = format!("{}-pv", ns.name);
    let host_dir = format!("/tmp/{}", ns.name);
    let pvs = Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone());
    pvs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": pv_name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "lbt-manual",
                     "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"},
                     "claimRef": {"namespace": ns.name, "name": "plain"}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    create(
        &ns.api::<PersistentVolumeClaim>(),
        json!({"metadata": {"name": "plain"},
               "spec": {"storageClassName": "lbt-manual", "volumeName": pv_name,
                        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    create(
        &ns.api::<PersistentVolumeClaim>(),
        json!({"metadata": {"name": "csi"},
               "spec": {"storageClassName": rc.class,
                        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    create(
        &ns.api::<Deployment>(),
        json!({
            "metadata": {"name": "app"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                "template": {"metadata": {"labels": {"app": "app"}, "annotations": {
                        "pre.hook.backup.lifeboat.io/command": "touch /plain/FROZEN /csi/FROZEN",
                        "post.hook.backup.lifeboat.io/command": "rm -f /plain/FROZEN /csi/FROZEN"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "nodeSelector": rc.node_selector,
                        "containers": [{"name": "app", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "36000"],
                            "volumeMounts": [{"name": "plain", "mountPath": "/plain"},
                                             {"name": "csi", "mountPath": "/csi"}]}],
                        "volumes": [{"name": "plain", "persistentVolumeClaim": {"claimName": "plain"}},
                                    {"name": "csi", "persistentVolumeClaim": {"claimName": "csi"}}]}}}
        }),
    )
    .await;
    let pod = first_pod(&client, &ns.name, "app=app", Duration::from_secs(180)).await;
    let want = sh_ok(
        &client,
        &ns.name,
        &pod,
        "mkdir -p /plain/d && echo hello > /plain/a && head -c 300000 /dev/urandom > /plain/d/b && echo csi > /csi/c && sha256sum /plain/a /plain/d/b | cut -d' ' -f1",
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lb = lifeboat_local_repo(tmp.path());
    // Without hooks a live read is a warning (exit 2): nothing quiesced the application.
    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--snapshot-volumes",
        "--volume-mode",
        "live",
        "--no-hooks",
        "-o",
        "json",
    ]);
    r.code_is(2);
    let rep = r.json();
    assert!(
        rep["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("was read live")),
        "{rep:#}"
    );
    assert!(
        rep["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["mode"] == "live" && v["quiesced"] == false),
        "live mode reads every claim live: {rep:#}"
    );
    // The default (snapshot) mode skips the claim that cannot be snapshotted.
    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--snapshot-volumes",
        "-o",
        "json",
    ]);
    r.code_is(2);
    let rep = r.json();
    assert_eq!(rep["volumes"].as_array().unwrap().len(), 1, "{rep:#}");
    // auto: the hostPath claim live, the CSI claim by snapshot, both between the hooks.
    let r = lb.run(&[
        "backup",
        "create",
        "-n",
        &ns.name,
        "--snapshot-volumes",
        "--volume-mode",
        "auto",
        "-o",
        "json",
    ]);
    r.success();
    let rep = r.json();
    let vols = rep["volumes"].as_array().unwrap();
    let mode = |pvc: &str| {
        vols.iter()
            .find(|v| v["pvc"] == pvc)
            .map(|v| (v["mode"].clone(), v["quiesced"].clone()))
    };
    assert_eq!(mode("plain"), Some((json!("live"), json!(true))), "{rep:#}");
    assert_eq!(
        mode("csi"),
        Some((json!("snapshot"), Value::Null)),
        "{rep:#}"
    );
    let (live, _, _) = sh(&client, &ns.name, &pod, "ls /plain /csi").await;
    assert!(!live.contains("FROZEN"), "the post hook ran: {live}");
    assert!(
        leftovers(&client, &ns.name).await.is_empty(),
        "{:?}",
        leftovers(&client, &ns.name).await
    );
    let backup_id = rep["id"].as_str().unwrap().to_string();

    // Restored onto CSI storage: the live-read files and the marker the pre hook wrote.
    delete_namespace(&client, &ns.name).await;
    pvs.delete(&pv_name, &Default::default()).await.ok();
    let r = lb.run(&[
        "restore",
        &backup_id,
        "-n",
        &ns.name,
        "--storage-class-map",
        &format!("lbt-manual={}", rc.class),
        "-o",
        "json",
    ]);
    r.success();
    let pod = first_pod(&client, &ns.name, "app=app", Duration::from_secs(180)).await;
    let got = sh_ok(
        &client,
        &ns.name,
        &pod,
        "ls /plain/FROZEN /csi/FROZEN >/dev/null && cat /csi/c >/dev/null && sha256sum /plain/a /plain/d/b | cut -d' ' -f1",
    )
    .await;
    assert_eq!(got, want, "the live-read volume came back byte-identical");
    ns.cleanup().await;
    pvs.delete(&pv_name, &Default::default()).await.ok();
    // The hostPath directory is on this machine when the real node is the local one.
    let _ = std::fs::remove_dir_all(&host_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_cronjob_backs_up_prunes_and_drills_with_an_identity_that_can_do_nothing_more() {
    let Some((client, rc)) = applicable("the_backup_cronjob").await else {
        return;
    };
    let Some(node) = rc.node.as_ref() else {
        eprintln!(
            "NOT APPLICABLE the_backup_cronjob: needs the local environment's real node (the lifeboat image is imported there)"
        );
        return;
    };
    let testenv = env().testenv_dir.clone().expect("local environment");
    let node_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .expect("the real node's InternalIP");
    let api_port = std::fs::read_to_string(testenv.join("ports/apiserver")).unwrap();
    let s3_port = std::fs::read_to_string(testenv.join("ports/s3")).unwrap();

    // The application: a claim with data, a pod with a pre hook and a dump hook.
    let app = TestNs::new("rn-bcron-app").await;
    create(
        &app.api::<k8s_openapi::api::core::v1::ConfigMap>(),
        json!({"metadata": {"name": "settings"}, "data": {"mode": "production"}}),
    )
    .await;
    create(
        &app.api::<PersistentVolumeClaim>(),
        json!({"metadata": {"name": "files"}, "spec": {"accessModes": ["ReadWriteOnce"],
               "storageClassName": rc.class, "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    create(
        &app.api::<Pod>(),
        json!({"metadata": {"name": "writer", "annotations": {
                "pre.hook.backup.lifeboat.io/command": "sync",
                "dump.hook.backup.lifeboat.io/command": "cat /files/a.csv"}},
            "spec": {"terminationGracePeriodSeconds": 1, "nodeSelector": rc.node_selector,
            "containers": [{"name": "w", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "36000"], "volumeMounts": [{"name": "f", "mountPath": "/files"}]}],
            "volumes": [{"name": "f", "persistentVolumeClaim": {"claimName": "files"}}]}}),
    )
    .await;
    pod_ready(&client, &app.name, "writer", Duration::from_secs(180)).await;
    sh_ok(
        &client,
        &app.name,
        "writer",
        "printf 'x,y\n1,2\n' > /files/a.csv",
    )
    .await;
    let s3 = common::s3_client_with(None);
    let bucket = unique("lbt-bcron");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let repo = format!("s3://{bucket}/backups");
    let e = &env().s3;
    let lb = Lifeboat::new()
        .env("LIFEBOAT_REPO", &repo)
        .env("LIFEBOAT_S3_ENDPOINT", &e.endpoint)
        .env("AWS_ACCESS_KEY_ID", &e.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &e.secret_key)
        .env("AWS_REGION", &e.region)
        .env("LIFEBOAT_PASSWORD", "cron-backup-pw");
    lb.run(&["repo", "init"]).success();

    let sys = unique("lbt-bcron-sys");
    let endpoint = format!("http://{node_ip}:{}", s3_port.trim());
    let r = lb.run(&[
        "backup",
        "cronjob",
        "--schedule",
        "30 1 * * *",
        "--namespace",
        &sys,
        "--backup-namespace",
        &app.name,
        "--snapshot-volumes",
        "--keep-last",
        "2",
        "--drill",
        "--drill-timeout",
        "3m",
        "--repo",
        &repo,
        "--s3-endpoint",
        &endpoint,
    ]);
    r.success();
    let docs: Vec<Value> = r
        .stdout()
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    for d in &docs {
        apply(&client, d).await;
    }
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &sys);
    create(
        &secrets,
        json!({"metadata": {"name": "lifeboat-repository"}, "stringData": {
            "LIFEBOAT_PASSWORD": "cron-backup-pw", "AWS_ACCESS_KEY_ID": e.access_key,
            "AWS_SECRET_ACCESS_KEY": e.secret_key, "AWS_REGION": e.region}}),
    )
    .await;

    // The identity, before anything runs: what it may and may not do (dry runs: admission
    // policies and RBAC answer, nothing is stored).
    let as_sa = common::client_as_service_account(&env().kubeconfig, &sys, "lifeboat-backup").await;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let forbidden = |r: Result<(), kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {}
        other => panic!("{what}: expected a refusal, got {other:?}"),
    };
    let sa_secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(as_sa.clone(), &app.name);
    sa_secrets
        .list(&ListParams::default())
        .await
        .expect("a backup reads Secrets");
    let sa_cms = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(as_sa.clone(), &app.name);
    // An admission policy is enforced once the API server has loaded it (a few seconds).
    eventually(
        "the admission policy to be enforced",
        Duration::from_secs(60),
        || async {
            let cm = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
            let r = sa_cms.create(&dry, &cm).await;
            matches!(r, Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422).then_some(())
        },
    )
    .await;
    forbidden(
        sa_cms
            .create(
                &dry,
                &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
            )
            .await
            .map(|_| ()),
        "create a ConfigMap in the application's namespace",
    );
    forbidden(
        sa_cms
            .patch(
                "settings",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"data": {"mode": "evil"}})),
            )
            .await
            .map(|_| ()),
        "change the application's ConfigMap",
    );
    let sa_pods = Api::<Pod>::namespaced(as_sa.clone(), &app.name);
    forbidden(
        sa_pods
            .delete(
                "writer",
                &DeleteParams {
                    dry_run: true,
                    ..Default::default()
                },
            )
            .await
            .map(|_| ()),
        "delete the application's pod",
    );
    let mover = |volumes: Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "lifeboat-mover-test1", "labels": {
                "app.kubernetes.io/managed-by": "lifeboat", "lifeboat.io/mover": "true"}},
            "spec": {"automountServiceAccountToken": false, "containers": [{"name": "m",
                "image": BUSYBOX, "command": ["sleep", "1"],
                "securityContext": {"allowPrivilegeEscalation": false}}],
                "volumes": volumes}
        }))
        .unwrap()
    };
    sa_pods
        .create(
            &dry,
            &mover(json!([{"name": "d", "persistentVolumeClaim": {"claimName": "files"}}])),
        )
        .await
        .expect("a mover pod of lifeboat's shape may be created");
    forbidden(
        sa_pods
            .create(
                &dry,
                &mover(json!([{"name": "d", "hostPath": {"path": "/"}}])),
            )
            .await
            .map(|_| ()),
        "a 'mover' that mounts the host",
    );
    let sa_ns = Api::<Namespace>::all(as_sa.clone());
    forbidden(
        sa_ns
            .create(
                &dry,
                &serde_json::from_value(json!({"metadata": {"name": "anything"}})).unwrap(),
            )
            .await
            .map(|_| ()),
        "create a namespace not named drill-*",
    );

    // "kubectl create job --from=cronjob/lifeboat-backup" on the real node, with the node's
    // API address (no Service proxy here) in every step.
    let cj = docs
        .iter()
        .find(|d| d["kind"] == "CronJob")
        .expect("a CronJob");
    let mut tpl = cj["spec"]["jobTemplate"]["spec"].clone();
    tpl["template"]["spec"]["nodeSelector"] = rc.node_selector.clone();
    for key in ["initContainers", "containers"] {
        for c in tpl["template"]["spec"][key].as_array_mut().unwrap() {
            c["imagePullPolicy"] = json!("IfNotPresent");
            c["env"].as_array_mut().unwrap().extend([
                json!({"name": "KUBERNETES_SERVICE_HOST", "value": node_ip}),
                json!({"name": "KUBERNETES_SERVICE_PORT", "value": api_port.trim()}),
            ]);
        }
    }
    let jobs = Api::<Job>::namespaced(client.clone(), &sys);
    create(
        &jobs,
        json!({"metadata": {"name": "backup-now"}, "spec": tpl}),
    )
    .await;
    let job = eventually(
        "the backup Job to finish",
        Duration::from_secs(420),
        || async {
            let j = jobs.get("backup-now").await.ok()?;
            let st = j.status.clone()?;
            (st.succeeded.unwrap_or(0) > 0 || st.failed.unwrap_or(0) > 0).then_some(j)
        },
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &sys);
    let pod = pods
        .list(&ListParams::default().labels("job-name=backup-now"))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the Job's pod");
    let pname = pod.metadata.name.clone().unwrap();
    let mut logs = String::new();
    for c in ["backup", "prune", "drill"] {
        let l = pods
            .logs(
                &pname,
                &LogParams {
                    container: Some(c.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_default();
        logs.push_str(&format!("--- {c}\n{l}\n"));
    }
    assert_eq!(
        job.status.as_ref().unwrap().succeeded.unwrap_or(0),
        1,
        "the backup Job failed; its logs:\n{logs}"
    );
    assert!(
        logs.contains("\"passed\": true"),
        "the drill passed:\n{logs}"
    );
    assert!(
        logs.contains("dump-readable"),
        "the drill read the backup's dump back:\n{logs}"
    );
    let listed = lb.run(&["backup", "list", "-o", "json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    let desc = lb
        .run(&["backup", "describe", "latest", "-o", "json"])
        .json();
    assert_eq!(desc["tags"]["lifeboat.io/schedule"], "cronjob", "{desc:#}");
    assert_eq!(desc["volumes"].as_array().unwrap().len(), 1, "{desc:#}");
    assert_eq!(desc["dumps"].as_array().unwrap().len(), 1, "{desc:#}");
    assert!(
        leftovers(&client, &app.name).await.is_empty(),
        "{:?}",
        leftovers(&client, &app.name).await
    );

    for d in docs.iter().rev() {
        delete(&client, d).await;
    }
    Api::<Namespace>::all(client.clone())
        .delete(&sys, &DeleteParams::default())
        .await
        .ok();
    app.cleanup().await;
}
