//! Runbooks and plans on the real control plane: rollback restores exactly, kill -9 and resume,
//! approvals, drain against a PodDisruptionBudget, an interactive run in a pseudo-terminal,
//! refused plans, the shipped runbooks, and file:line:col errors for malformed runbooks.
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Lifeboat, Run, TestNs, eventually, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const PASSWORD: &str = "runbook-test-password";

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// A temp dir for runbooks, plans and the run state, and a lifeboat that uses it.
struct Work {
    dir: tempfile::TempDir,
    lb: Lifeboat,
}

impl Work {
    fn new() -> Work {
        Work::with_env(&[])
    }

    /// With more environment variables for lifeboat.
    fn with_env(extra: &[(&str, &str)]) -> Work {
        let dir = tempfile::tempdir().unwrap();
        let lb = Work::lifeboat(dir.path(), extra);
        Work { dir, lb }
    }

    /// A lifeboat with this work's state and repository, plus `extra` variables.
    fn lifeboat(dir: &Path, extra: &[(&str, &str)]) -> Lifeboat {
        let state = dir.join("state");
        let repo = dir.join("repo");
        let lb = Lifeboat::new()
            .env("LIFEBOAT_STATE_DIR", state.to_str().unwrap())
            .env("LIFEBOAT_REPO", &format!("file://{}", repo.display()))
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("USER", "test-operator");
        extra.iter().fold(lb, |lb, (k, v)| lb.env(k, v))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Plan `runbook` with `sets`; returns the plan file.
    fn plan(&self, runbook: &Path, sets: &[&str]) -> PathBuf {
        let plan = self.path(&format!("{}.plan.yaml", unique("p")));
        let mut args = vec![
            "runbook",
            "plan",
            runbook.to_str().unwrap(),
            "-f",
            plan.to_str().unwrap(),
        ];
        for s in sets {
            args.push("--set");
            args.push(s);
        }
        self.lb.run(&args).success();
        plan
    }

    fn run(&self, args: &[&str]) -> Run {
        self.lb.run(args)
    }

    fn journal(&self, run: &str) -> Vec<Value> {
        let p = self.path("state").join("runs").join(format!("{run}.jsonl"));
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn journal_text(&self, run: &str) -> String {
        std::fs::read_to_string(self.path("state").join("runs").join(format!("{run}.jsonl")))
            .unwrap()
    }
}

/// The run id printed on stderr ("run ID (journal …)") or in `-o json` output.
/// Wait until `path` exists (a step's marker), or panic with `what` after `timeout`.
fn wait_for_file(path: &Path, timeout: Duration, what: &str) {
    let deadline = std::time::Instant::now() + timeout;
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The id of this machine's newest run.
fn newest_run(w: &Work) -> String {
    let list = w.run(&["runbook", "list", "-o", "json"]);
    list.json()["runs"][0]["run"].as_str().unwrap().to_string()
}

fn run_id(r: &Run) -> String {
    let out = r.stdout();
    if let Ok(v) = serde_json::from_str::<Value>(&out) {
        return v["run"].as_str().unwrap().to_string();
    }
    let err = r.stderr();
    err.lines()
        .find_map(|l| {
            l.strip_prefix("run ")
                .and_then(|r| r.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("no run id in\n{}", r.describe()))
        .to_string()
}

fn events<'a>(j: &'a [Value], event: &str, step: &str) -> Vec<&'a Value> {
    j.iter()
        .filter(|r| r["event"] == event && r["step"] == step)
        .collect()
}

async fn deployment(ns: &TestNs, name: &str, replicas: i32, image: &str, extra_spec: Value) {
    let mut spec = json!({"containers": [{"name": "app", "image": image}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    let d: Deployment = obj(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}
    }));
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

async fn available(ns: &TestNs, name: &str) {
    let api = ns.api::<Deployment>();
    eventually(
        &format!("deployment {name} available"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let d = api.get(name).await.ok()?;
                let want = d.spec.as_ref()?.replicas.unwrap_or(1);
                let st = d.status?;
                (st.available_replicas.unwrap_or(0) == want
                    && st.updated_replicas.unwrap_or(0) == want)
                    .then_some(())
            }
        },
    )
    .await;
}

fn replicas_and_image(d: &Deployment) -> (i32, String) {
    let spec = d.spec.as_ref().unwrap();
    (
        spec.replicas.unwrap(),
        spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap(),
    )
}

#[tokio::test]
async fn failure_rolls_back_replicas_and_image_exactly_and_journals_the_undo() {
    let ns = TestNs::new("rb-rollback").await;
    deployment(&ns, "web", 2, "nginx:1.26", json!({})).await;
    available(&ns, "web").await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {name: scale-image-fail}
params:
  namespace: {type: string, required: true}
steps:
  - id: scale
    scale: {kind: Deployment, name: web, namespace: "{{ params.namespace }}", replicas: 4}
  - id: image
    setImage: {kind: Deployment, name: web, namespace: "{{ params.namespace }}", container: app, image: "nginx:1.27"}
  - id: rollout
    wait: {apiVersion: apps/v1, kind: Deployment, name: web, namespace: "{{ params.namespace }}", rollout: true}
    timeout: 90s
  - id: smoke-test
    run: {command: "echo 'smoke test failed' >&2; exit 7"}
"#,
    );
    let plan = w.plan(&rb, &[&format!("namespace={}", ns.name)]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    r.code_is(2);
    let report = r.json();
    assert_eq!(report["status"], "rolled-back", "{}", r.describe());
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(replicas_and_image(&d), (2, "nginx:1.26".to_string()));

    let run = report["run"].as_str().unwrap();
    let j = w.journal(run);
    let before = &events(&j, "intent", "scale")[0]["before"];
    assert_eq!(before["replicas"], 2);
    assert_eq!(before["name"], "web");
    let before = &events(&j, "intent", "image")[0]["before"];
    assert_eq!(
        (&before["container"], &before["image"]),
        (&json!("app"), &json!("nginx:1.26"))
    );
    for step in ["scale", "image"] {
        let undo = events(&j, "undo-result", step);
        assert_eq!(undo.len(), 1, "{step}: {j:#?}");
        assert_eq!(undo[0]["status"], "undone");
    }
    let failed = events(&j, "result", "smoke-test");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .contains("status 7: smoke test failed")
    );
    // The undo happened in reverse order: image before scale.
    let pos = |step: &str| {
        j.iter()
            .position(|r| r["event"] == "undo-result" && r["step"] == step)
            .unwrap()
    };
    assert!(pos("image") < pos("scale"));
    // status reads the same journal
    let s = w.run(&["runbook", "status", run, "-o", "json"]);
    s.success();
    assert_eq!(s.json()["status"], "rolled-back");
    ns.cleanup().await;
}

#[tokio::test]
async fn kill_dash_nine_in_step_three_then_resume_does_not_repeat_steps_one_and_two() {
    let ns = TestNs::new("rb-resume").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let cm: ConfigMap = obj(json!({"metadata": {"name": "settings"}, "data": {"mode": "a"}}));
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let w = Work::new();
    let marker = w.path("step3-started");
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: five-steps}}
steps:
  - id: one
    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 2}}
  - id: two
    patch: {{apiVersion: v1, kind: ConfigMap, name: settings, namespace: {ns}, patch: {{data: {{mode: b}}}}}}
  - id: three
    run: {{command: "echo started > {marker}; sleep 30"}}
  - id: four
    run: {{command: "echo four"}}
  - id: five
    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 3}}
"#,
            ns = ns.name,
            marker = marker.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let mut child =
        w.lb.spawn(&["runbook", "run", plan.to_str().unwrap(), "--yes"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "step three never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "lifeboat exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let list = w.run(&["runbook", "list", "-o", "json"]);
    list.success();
    let runs = list.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    let run = runs[0]["run"].as_str().unwrap().to_string();
    assert_eq!(runs[0]["status"], "incomplete");

    // Unattended, a half-run command needs a decision.
    let r = w.run(&["runbook", "resume", &run, "--yes"]);
    r.code_is(64);
    assert!(r.stderr().contains("--in-doubt"), "{}", r.describe());

    // The crashed run's lease belongs to this run id: resume takes it at once.
    let r = w.run(&[
        "runbook",
        "resume",
        &run,
        "--yes",
        "--in-doubt",
        "skip",
        "-o",
        "json",
    ]);
    r.success();
    assert_eq!(r.json()["status"], "succeeded");
    let j = w.journal(&run);
    assert_eq!(events(&j, "intent", "one").len(), 1, "step one repeated");
    assert_eq!(events(&j, "intent", "two").len(), 1, "step two repeated");
    assert_eq!(events(&j, "result", "three")[0]["status"], "skipped");
    assert_eq!(events(&j, "result", "four")[0]["status"], "succeeded");
    assert_eq!(events(&j, "result", "five")[0]["status"], "succeeded");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    ns.cleanup().await;
}

#[tokio::test]
async fn approve_under_yes_exits_3_and_resume_with_approve_records_who() {
    let ns = TestNs::new("rb-approve").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: approve-then-scale}}
steps:
  - id: check
    run: {{command: "echo ok"}}
    undo: skip
  - id: go
    approve: {{message: "Scale web to 3?"}}
  - id: scale
    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 3}}
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&["runbook", "run", plan.to_str().unwrap(), "--yes"]);
    r.code_is(3);
    let run = run_id(&r);
    assert!(
        r.stderr()
            .contains(&format!("lifeboat runbook resume {run} --approve go")),
        "{}",
        r.describe()
    );
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(
        d.spec.unwrap().replicas,
        Some(1),
        "nothing ran past approve"
    );

    let r = w.run(&[
        "runbook",
        "resume",
        &run,
        "--yes",
        "--approve",
        "go",
        "-o",
        "json",
    ]);
    r.success();
    let j = w.journal(&run);
    let approval = events(&j, "approval", "go");
    assert_eq!(approval.len(), 1);
    assert_eq!(approval[0]["actor"]["user"], "test-operator");
    assert!(
        approval[0]["actor"]["kubernetes"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "{:?}",
        approval[0]
    );
    assert_eq!(approval[0]["details"]["via"], "--approve");
    assert_eq!(events(&j, "intent", "check").len(), 1, "check not repeated");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    let s = w.run(&["runbook", "status", &run, "-o", "json"]);
    let steps = s.json()["steps"].as_array().unwrap().clone();
    let go = steps.iter().find(|s| s["id"] == "go").unwrap();
    assert_eq!(go["approvedBy"]["user"], "test-operator");
    ns.cleanup().await;
}

/// A kwok node of the test's own: tainted so only the test's pods land on it.
async fn own_node(client: &kube::Client, name: &str) {
    own_node_at(client, name, &common::Env::pinned_k8s_version()).await
}

/// A kwok Node of our own whose kubelet reports `kubelet`.
async fn own_node_at(client: &kube::Client, name: &str, kubelet: &str) {
    let n: Node = obj(json!({
        "metadata": {"name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"}},
        "spec": {"taints": [{"key": "lifeboat.io/test-node", "value": name, "effect": "NoSchedule"}]},
        "status": {"nodeInfo": {"kubeletVersion": kubelet, "kubeProxyVersion": kubelet,
                                "architecture": "amd64", "operatingSystem": "linux"},
                   "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                   "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}
    }));
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await
        .unwrap();
}

fn pinned_to(node: &str) -> Value {
    json!({"nodeSelector": {"kubernetes.io/hostname": node},
           "tolerations": [{"key": "lifeboat.io/test-node", "operator": "Exists", "effect": "NoSchedule"}]})
}

async fn unschedulable(client: &kube::Client, node: &str) -> bool {
    Api::<Node>::all(client.clone())
        .get(node)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

#[tokio::test]
async fn drain_against_a_pdb_allowing_no_disruption_times_out_naming_it_and_uncordons() {
    let ns = TestNs::new("rb-drain").await;
    let node = unique("lbt-node");
    own_node(&ns.client, &node).await;
    deployment(&ns, "db", 1, "postgres:16", pinned_to(&node)).await;
    available(&ns, "db").await;
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = obj(json!({
        "metadata": {"name": "db-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}
    }));
    let pdbs = ns.api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    eventually("the PDB to count the pod", Duration::from_secs(60), || {
        let pdbs = pdbs.clone();
        async move {
            let st = pdbs.get("db-pdb").await.ok()?.status?;
            (st.current_healthy == 1 && st.disruptions_allowed == 0).then_some(())
        }
    })
    .await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: drain-one}}
steps:
  - id: drain
    drain: {{node: {node}}}
    timeout: 6s
"#
        ),
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    r.code_is(2);
    let report = r.json();
    let step = &report["steps"][0];
    let msg = w
        .journal(report["run"].as_str().unwrap())
        .into_iter()
        .find(|r| r["event"] == "result" && r["step"] == "drain")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("timed out after 6s"), "{msg}");
    assert!(
        msg.contains(&format!(
            "PodDisruptionBudget {}/db-pdb allows 0 disruptions",
            ns.name
        )),
        "{msg}"
    );
    assert_eq!(step["status"], "rolled-back", "{report:#}");
    assert!(
        !unschedulable(&ns.client, &node).await,
        "the undo uncordons"
    );
    let _ = Api::<Node>::all(ns.client.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn interactive_run_in_a_pseudo_terminal_asks_and_the_answers_take_effect() {
    let ns = TestNs::new("rb-pty").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: interactive}}
steps:
  - id: scale
    description: Scale web up
    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 5}}
  - id: go
    approve: {{message: "Really run the flaky step?"}}
  - id: flaky
    run: {{command: "exit 1"}}
    undo: skip
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let mut cmd = w.lb.command(&["runbook", "run", plan.to_str().unwrap()]);
    cmd.env("TERM", "xterm")
        .stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit());
    let mut p = rexpect::session::spawn_with_options(
        cmd,
        rexpect::reader::Options::new()
            .timeout_ms(Some(60_000))
            .strip_ansi_escape_codes(true),
    )
    .unwrap();
    // (rexpect reads bytes as Latin-1: match ASCII fragments only)
    p.exp_string("Step 1/3: scale (scale)").unwrap();
    p.exp_string("Scale web up").unwrap();
    p.exp_string(&format!("Deployment {}/web replicas 1 ", ns.name))
        .unwrap();
    p.exp_string("Run this step?").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("Approval needed (go): Really run the flaky step?")
        .unwrap();
    p.exp_string("flaky (run)").unwrap(); // the prompt shows what comes next
    p.exp_string("Approve?").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("Run this step?").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("Step flaky failed").unwrap();
    p.exp_string("roll back to start").unwrap();
    p.exp_string("abort (the run stays resumable)").unwrap();
    // The default choice is the rollback: Enter picks it.
    p.send("\r").unwrap();
    p.flush().unwrap();
    p.exp_string("rolled-back").unwrap();
    p.exp_eof().unwrap();
    match p.process().wait().unwrap() {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 2),
        other => panic!("lifeboat ended with {other:?}"),
    }
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1), "rolled back to 1");
    let run = newest_run(&w);
    let j = w.journal(&run);
    assert_eq!(events(&j, "approval", "go")[0]["details"]["via"], "prompt");
    ns.cleanup().await;
}

#[tokio::test]
async fn edited_plans_wrong_clusters_and_busy_plans_are_refused() {
    let ns = TestNs::new("rb-refuse").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: refused}}
steps:
  - id: scale
    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 2}}
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let text = std::fs::read_to_string(&plan).unwrap();

    let edited = w.write("edited.yaml", &text.replace("replicas: 2", "replicas: 20"));
    let r = w.run(&["runbook", "run", edited.to_str().unwrap(), "--yes"]);
    r.code_is(1);
    assert!(
        r.stderr().contains("was changed after it was planned"),
        "{}",
        r.describe()
    );

    // Someone else holds this change's lease and renewed it just now.
    let (planned, _) = lifeboat::runbook::plan::load(&plan).unwrap();
    let lease_name =
        lifeboat::runbook::lease::lease_name(&lifeboat::runbook::plan::change_key(&planned));
    let now = jiff::Timestamp::now();
    let micro = format!(
        "{}.{:06}Z",
        now.strftime("%Y-%m-%dT%H:%M:%S"),
        now.subsec_microsecond()
    );
    let lease: k8s_openapi::api::coordination::v1::Lease = obj(json!({
        "metadata": {"name": lease_name},
        "spec": {"holderIdentity": "run=someone-else user=alice", "leaseDurationSeconds": 60, "renewTime": micro}
    }));
    ns.api::<k8s_openapi::api::coordination::v1::Lease>()
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    r.code_is(1);
    assert!(
        r.stderr().contains(
            "this change (runbook and parameters) is being run by run=someone-else user=alice"
        ),
        "{}",
        r.describe()
    );
    let runs = w.run(&["runbook", "list", "-o", "json"]).json();
    assert_eq!(runs["runs"], json!([]), "a refused run leaves no journal");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(
        d.spec.unwrap().replicas,
        Some(1),
        "a refused run changes nothing"
    );

    // The lease released, the same plan runs, and gives its lease back at the end.
    ns.api::<k8s_openapi::api::coordination::v1::Lease>()
        .delete(&lease_name, &DeleteParams::default())
        .await
        .unwrap();
    w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ])
    .success();
    assert!(
        ns.api::<k8s_openapi::api::coordination::v1::Lease>()
            .get_opt(&lease_name)
            .await
            .unwrap()
            .is_none()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn shipped_rotate_secret_rolls_back_to_the_old_value_and_never_journals_secrets() {
    let ns = TestNs::new("rb-rotate").await;
    let old = "original-database-password-4711";
    let s: Secret = obj(json!({"metadata": {"name": "db"}, "stringData": {"password": old}}));
    ns.api::<Secret>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    deployment(&ns, "api", 1, "example/api:1", json!({})).await;
    available(&ns, "api").await;
    let w = Work::new();
    let rb = common::repo_root().join("runbooks/rotate-secret.yaml");
    let nsv = format!("namespace={}", ns.name);
    let value =
        |s: &Secret| String::from_utf8(s.data.as_ref().unwrap()["password"].0.clone()).unwrap();

    // The application check fails: the old value comes back, the pods are restarted again.
    let plan = w.plan(&rb, &[&nsv, "secret=db", "deployment=api", "check=exit 1"]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    r.code_is(2);
    let report = r.json();
    let run = report["run"].as_str().unwrap();
    assert_eq!(value(&ns.api::<Secret>().get("db").await.unwrap()), old);
    let steps = report["steps"].as_array().unwrap();
    let restart_again = steps
        .iter()
        .find(|s| s["id"] == "restart-after-rollback")
        .unwrap();
    assert_eq!(restart_again["status"], "succeeded", "{report:#}");
    let text = w.journal_text(run);
    use base64::Engine as _;
    let old_b64 = base64::engine::general_purpose::STANDARD.encode(old);
    assert!(!text.contains(old) && !text.contains(&old_b64), "{text}");
    // The in-cluster copy of the old value is removed once it has been restored.
    let copies = ns
        .api::<Secret>()
        .list(&kube::api::ListParams::default().labels("lifeboat.io/undo=true"))
        .await
        .unwrap();
    assert!(copies.items.is_empty());

    // The check passes: a new value stays, and neither value is in the journal.
    let plan = w.plan(&rb, &[&nsv, "secret=db", "deployment=api"]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    r.success();
    let new = value(&ns.api::<Secret>().get("db").await.unwrap());
    assert_ne!(new, old);
    assert_eq!(new.len(), 48, "24 random bytes, hex");
    let text = w.journal_text(r.json()["run"].as_str().unwrap());
    let new_b64 = base64::engine::general_purpose::STANDARD.encode(&new);
    for (what, t) in [
        ("journal", &text),
        ("stdout", &r.stdout()),
        ("stderr", &r.stderr()),
    ] {
        assert!(
            !t.contains(&new) && !t.contains(&new_b64) && !t.contains(old),
            "{what} shows a secret:\n{t}"
        );
    }
    let plan_text = std::fs::read_to_string(&plan).unwrap();
    assert!(!plan_text.contains(old));
    ns.cleanup().await;
}

#[tokio::test]
async fn shipped_namespace_restore_restores_after_approval_and_verifies_workloads() {
    let ns = TestNs::new("rb-nsrestore").await;
    deployment(&ns, "shop", 2, "example/shop:2", json!({})).await;
    let cm: ConfigMap = obj(json!({"metadata": {"name": "settings"}, "data": {"currency": "EUR"}}));
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    available(&ns, "shop").await;
    let w = Work::new();
    w.run(&["repo", "init"]).success();
    let good = w
        .run(&["backup", "create", "-n", &ns.name, "-o", "json"])
        .success()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The incident: the namespace is gone.
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone());
    let gone = || async {
        namespaces
            .delete(&ns.name, &DeleteParams::default())
            .await
            .unwrap();
        eventually("the namespace to be gone", Duration::from_secs(90), || {
            let namespaces = namespaces.clone();
            let name = ns.name.clone();
            async move {
                namespaces
                    .get_opt(&name)
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    };
    gone().await;

    let rb = common::repo_root().join("runbooks/namespace-restore.yaml");
    let plan = w.plan(&rb, &[&format!("namespace={}", ns.name)]);
    let r = w.run(&["runbook", "run", plan.to_str().unwrap(), "--yes"]);
    r.code_is(3);
    let run = run_id(&r);
    assert!(
        format!("{}{}", r.stdout(), r.stderr()).contains(&good),
        "the approval names the backup the dry run checked: {}",
        r.describe()
    );
    assert!(
        namespaces.get_opt(&ns.name).await.unwrap().is_none(),
        "the dry run wrote nothing"
    );
    // While the run waits for approval, someone backs up a broken copy of the namespace: it is
    // now `latest`, but the approved restore restores the backup the dry run checked.
    let bad_ns: k8s_openapi::api::core::v1::Namespace =
        obj(json!({"metadata": {"name": ns.name, "labels": {"lifeboat.io/test": "true"}}}));
    namespaces
        .create(&PostParams::default(), &bad_ns)
        .await
        .unwrap();
    let bad: ConfigMap =
        obj(json!({"metadata": {"name": "settings"}, "data": {"currency": "broken"}}));
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &bad)
        .await
        .unwrap();
    w.run(&["backup", "create", "-n", &ns.name]).success();
    gone().await;
    let r = w.run(&[
        "runbook",
        "resume",
        &run,
        "--yes",
        "--approve",
        "approve-restore",
        "-o",
        "json",
    ]);
    r.success();
    let report = r.json();
    let verify = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "verify")
        .unwrap()
        .clone();
    assert_eq!(verify["status"], "succeeded", "{report:#}");
    let d = ns.api::<Deployment>().get("shop").await.unwrap();
    assert_eq!(replicas_and_image(&d), (2, "example/shop:2".to_string()));
    let cm = ns.api::<ConfigMap>().get("settings").await.unwrap();
    assert_eq!(cm.data.unwrap()["currency"], "EUR");
    ns.cleanup().await;
}

#[tokio::test]
async fn shipped_cluster_upgrade_gates_backs_up_and_upgrades_node_by_node() {
    let ns = TestNs::new("rb-upgrade").await;
    let pinned = common::Env::pinned_k8s_version();
    let minor: u32 = pinned
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // A node one minor behind the control plane.
    let node = unique("lbt-node");
    own_node_at(&ns.client, &node, &format!("v1.{}.3", minor - 1)).await;
    deployment(&ns, "worker", 1, "example/worker:1", pinned_to(&node)).await;
    available(&ns, "worker").await;
    let w = Work::new();
    w.run(&["repo", "init"]).success();
    let hook = w.path("hook.log");
    let upgrade = format!("echo \"$NODE $TARGET\" >> {}", hook.display());
    let rb = common::repo_root().join("runbooks/cluster-upgrade.yaml");
    // Other tests run in the same cluster at the same time (their PDBs and webhooks would be
    // blockers here): failOn=none. The API server version and the kubelet skew are gates anyway.
    let plan_for = |target: &str| {
        w.plan(
            &rb,
            &[
                &format!("target={target}"),
                &format!("nodes={node}"),
                &format!("upgradeCommand={upgrade}"),
                &format!("checkNamespace={}", ns.name),
                "failOn=none",
            ],
        )
    };

    // Nodes to a minor the API server does not run yet: refused before anything changes.
    let ahead = plan_for(&format!("1.{}", minor + 1));
    let r = w.run(&[
        "runbook",
        "run",
        ahead.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    r.code_is(2);
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("step gate failed") || msg.contains("rolled back"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout().contains("upgrade the control plane to"),
        "{}",
        r.describe()
    );
    assert!(
        !hook.exists(),
        "the hook ran before the control plane was at the target"
    );
    assert!(!unschedulable(&ns.client, &node).await);

    let target = format!("1.{minor}");
    let plan = plan_for(&target);
    let plan_text = std::fs::read_to_string(&plan).unwrap();
    assert!(
        plan_text.contains(&format!("node-{node}-drain")),
        "{plan_text}"
    );
    // The dry run walks the whole plan (outputs of steps it only simulates are unknown) and
    // changes nothing.
    let dry = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--dry-run",
        "--yes",
        "-o",
        "json",
    ]);
    dry.success();
    assert_eq!(dry.json()["status"], "succeeded", "{}", dry.describe());
    assert!(!hook.exists() && !unschedulable(&ns.client, &node).await);
    let r = w.run(&["runbook", "run", plan.to_str().unwrap(), "--yes"]);
    r.code_is(3);
    let run = run_id(&r);
    let mut resume =
        w.lb.spawn(&["runbook", "resume", &run, "--yes", "--approve", "go"]);
    wait_for_file(&hook, Duration::from_secs(120), "the hook never ran");
    // The hook ran, the kubelet still reports the old version: the run waits, cordoned.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        resume.try_wait().unwrap().is_none(),
        "the run did not wait for the new kubelet"
    );
    assert!(
        unschedulable(&ns.client, &node).await,
        "uncordoned before the upgrade showed"
    );
    // "The new kubelet" reports its version; kwok's next heartbeat makes it fresh.
    Api::<Node>::all(ns.client.clone())
        .patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nodeInfo": {"kubeletVersion": pinned}}})),
        )
        .await
        .unwrap();
    let status = common::wait_bounded(&mut resume, "runbook resume (cluster-upgrade)");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        w.run(&["runbook", "status", &run]).stdout()
    );
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap().trim(),
        format!("{node} {target}")
    );
    let j = w.journal(&run);
    for s in [
        "cordon", "drain", "upgrade", "upgraded", "uncordon", "healthy",
    ] {
        let id = format!("node-{node}-{s}");
        assert_eq!(
            events(&j, "result", &id).last().unwrap()["status"],
            "succeeded",
            "{id}"
        );
    }
    assert_eq!(
        events(&j, "result", &format!("node-{node}-upgraded"))[0]["outputs"]["kubeletVersion"],
        json!(pinned)
    );
    let backup_id = events(&j, "result", "backup")[0]["outputs"]["backupId"]
        .as_str()
        .unwrap()
        .to_string();
    w.run(&["backup", "describe", &backup_id]).success();
    assert!(!unschedulable(&ns.client, &node).await);
    let _ = Api::<Node>::all(ns.client.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    ns.cleanup().await;
}

#[test]
fn malformed_runbooks_get_one_error_with_file_line_col() {
    let w = Work::new();
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "unknown-action",
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: x}\nsteps:\n  - id: a\n    scael: {kind: Deployment, name: w, namespace: n, replicas: 1}\n",
            ":6:",
            &["unknown step field or action `scael`"],
        ),
        (
            "bad-duration",
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: x}\nsteps:\n  - id: a\n    run: {command: 'true'}\n    timeout: 10 minutes\n",
            ":7:5:",
            &["invalid duration"],
        ),
        (
            "rollback-to-non-checkpoint",
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: x}\nsteps:\n  - id: a\n    run: {command: 'true'}\n  - id: b\n    run: {command: 'true'}\n    rollbackTo: a\n",
            ":9:5:",
            &["rollbackTo \"a\" is not a checkpoint"],
        ),
        (
            "duplicate-ids",
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: x}\nsteps:\n  - id: a\n    run: {command: 'true'}\n  - id: a\n    run: {command: 'true'}\n",
            ":7:5:",
            &["duplicate step id \"a\""],
        ),
        (
            "undeclared-param",
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: x}\nsteps:\n  - id: a\n    run: {command: 'echo {{ params.nope }}'}\n",
            ":6:5:",
            &["params.nope, which is not declared"],
        ),
        (
            "unknown-field",
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: x}\nsteps:\n  - id: a\n    scale: {kind: Deployment, name: w, namespace: n, replicas: 1, replica: 2}\n",
            ":6:",
            &["unknown field `replica`"],
        ),
    ];
    for (name, text, location, needles) in cases {
        let f = w.write(&format!("{name}.yaml"), text);
        let r = Lifeboat::offline().run(&["runbook", "validate", f.to_str().unwrap()]);
        r.code_is(1);
        let err = r.stderr();
        assert_eq!(err.trim().lines().count(), 1, "{name}: one line\n{err}");
        assert!(
            err.contains(&format!("{}{location}", f.display())),
            "{name}: want {location}\n{err}"
        );
        for n in *needles {
            assert!(err.contains(n), "{name}: want {n:?}\n{err}");
        }
    }
    // A required parameter without a value: located at its declaration.
    let f = w.write(
        "required.yaml",
        "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: x}\nparams:\n  namespace: {type: string, required: true}\n  replicas: {type: int, default: 1}\nsteps:\n  - id: a\n    run: {command: 'echo {{ params.namespace }}'}\n",
    );
    let r = Lifeboat::offline().run(&[
        "runbook",
        "validate",
        f.to_str().unwrap(),
        "--set",
        "replicas=2",
    ]);
    r.code_is(1);
    assert!(
        r.stderr().contains(&format!(
            "{}:5:3: required parameter namespace is missing",
            f.display()
        )),
        "{}",
        r.describe()
    );
    let r = Lifeboat::offline().run(&[
        "runbook",
        "validate",
        f.to_str().unwrap(),
        "--set",
        "replicas=many",
    ]);
    r.code_is(64);
    assert!(r.stderr().contains("\"many\" is not an integer"));
}

#[test]
fn shipped_runbooks_validate_and_example_plans_keep_their_hash() {
    let root = common::repo_root();
    let mut runbooks = 0;
    for e in std::fs::read_dir(root.join("runbooks")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            Lifeboat::offline()
                .run(&["runbook", "validate", p.to_str().unwrap()])
                .success();
            runbooks += 1;
        }
    }
    assert_eq!(runbooks, 3);
    let mut plans = 0;
    for e in std::fs::read_dir(root.join("plans")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let (plan, loaded) = lifeboat::runbook::plan::load(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(
                plan.preview.len(),
                loaded.steps.len() + loaded.runbook.finally.len()
            );
            plans += 1;
        }
    }
    assert_eq!(plans, 3, "one example plan per shipped runbook");
}

#[tokio::test]
async fn ctrl_c_mid_step_records_interrupted_releases_the_lease_and_resumes() {
    let ns = TestNs::new("rb-ctrlc").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let w = Work::new();
    let marker = w.path("started");
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: ctrl-c}}
steps:
  - id: scale
    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 2}}
  - id: slow
    run: {{command: "touch {marker}; sleep 30"}}
"#,
            ns = ns.name,
            marker = marker.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let mut child = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    wait_for_file(&marker, Duration::from_secs(60), "step slow never started");
    let started = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = common::wait_bounded(&mut child, "runbook run (SIGINT)");
    assert_eq!(status.code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "Ctrl-C did not stop the step"
    );
    let run = newest_run(&w);
    let j = w.journal(&run);
    let last = j.last().unwrap();
    assert_eq!(last["event"], "run-finished");
    assert_eq!(last["status"], "interrupted");
    let leases = ns
        .api::<k8s_openapi::api::coordination::v1::Lease>()
        .list(&Default::default())
        .await
        .unwrap();
    assert!(leases.items.is_empty(), "the lease is released");
    let r = w.run(&[
        "runbook",
        "resume",
        &run,
        "--yes",
        "--in-doubt",
        "skip",
        "--lease-namespace",
        &ns.name,
    ]);
    r.success();
    assert_eq!(events(&w.journal(&run), "intent", "scale").len(), 1);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_second_plan_of_the_same_change_is_refused_while_the_first_runs() {
    let ns = TestNs::new("rb-lease").await;
    let w = Work::new();
    let marker = w.path("first-started");
    let rb = w.write(
        "rb.yaml",
        &format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: long}}\nsteps:\n  - id: long\n    run: {{command: \"touch {}; sleep 20\"}}\n",
            marker.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    // A second responder's own plan of the same change (another creation time, another hash).
    let plan2 = w.plan(&rb, &[]);
    let args = [
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ];
    let mut first = w.lb.spawn(&args);
    wait_for_file(&marker, Duration::from_secs(60), "first run never started");
    let mut args2 = args;
    args2[2] = plan2.to_str().unwrap();
    let second = w.run(&args2);
    second.code_is(1);
    assert!(
        second
            .stderr()
            .contains("this change (runbook and parameters) is being run by run=long-")
            && second.stderr().contains("user=test-operator"),
        "{}",
        second.describe()
    );
    let runs = w.run(&["runbook", "list", "-o", "json"]).json();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs:#}");
    std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        common::wait_bounded(&mut first, "runbook run (SIGTERM)").code(),
        Some(130)
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn undo_none_stops_the_rollback_with_exit_4_and_force_passes_over_it() {
    let ns = TestNs::new("rb-undonone").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let cm: ConfigMap = obj(json!({"metadata": {"name": "flag"}, "data": {"v": "0"}}));
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: irreversible}}
steps:
  - id: scale
    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 3}}
  - id: migrate
    description: a schema migration nobody can undo
    run: {{command: "echo migrated"}}
  - id: flag
    patch: {{apiVersion: v1, kind: ConfigMap, name: flag, namespace: {ns}, patch: {{data: {{v: "1"}}}}}}
  - id: verify
    run: {{command: "exit 1"}}
    undo: skip
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    r.code_is(4);
    let report = r.json();
    assert_eq!(report["status"], "rollback-failed");
    let msg = report["message"].as_str().unwrap();
    assert!(
        msg.contains("step migrate cannot be undone")
            && msg.contains("Left to undo by hand: migrate, scale"),
        "{msg}"
    );
    // The rollback undid what came after the irreversible step, and stopped there.
    let cm = ns.api::<ConfigMap>().get("flag").await.unwrap();
    assert_eq!(cm.data.unwrap()["v"], "0");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));

    let run = report["run"].as_str().unwrap();
    let r = w.run(&[
        "runbook", "rollback", run, "--to", "start", "--force", "--yes", "-o", "json",
    ]);
    // A requested rollback that completes is a success (issue 15 item 11).
    r.code_is(0);
    assert_eq!(r.json()["status"], "rolled-back");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1));
    let j = w.journal(run);
    let migrate = events(&j, "undo-result", "migrate");
    assert!(
        migrate.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("--force"),
        "{migrate:?}"
    );
    // The migration ran and was not undone: a resume does not run it a second time blindly.
    let again = w.run(&["runbook", "resume", run, "--yes"]);
    again.code_is(64);
    assert!(
        again.stderr().contains("migrate") && again.stderr().contains("--in-doubt"),
        "{}",
        again.describe()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn dry_run_changes_nothing_and_writes_no_journal() {
    let ns = TestNs::new("rb-dry").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let w = Work::new();
    let marker = w.path("ran");
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: dry}}
steps:
  - id: scale
    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 4}}
  - id: image
    setImage: {{kind: Deployment, name: web, namespace: {ns}, image: "nginx:1.27"}}
  - id: go
    approve: {{message: "go?"}}
  - id: cmd
    run: {{command: "touch {marker}"}}
  - id: cm
    apply:
      manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: new-cm, namespace: {ns}}}, data: {{a: b}}}}
"#,
            ns = ns.name,
            marker = marker.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--dry-run",
        "-o",
        "json",
    ]);
    r.success();
    let report = r.json();
    assert_eq!(report["dryRun"], true);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(replicas_and_image(&d), (1, "nginx:1.26".to_string()));
    assert!(!marker.exists(), "run steps do not run in a dry run");
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("new-cm")
            .await
            .unwrap()
            .is_none()
    );
    let runs = w.run(&["runbook", "list", "-o", "json"]).json();
    assert_eq!(runs["runs"], json!([]));
    ns.cleanup().await;
}

/// A one-request HTTP server on a free port answering `status` with `body`.
async fn http_once(status: u16, body: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    port
}

// Multi-threaded: the test's HTTP server must answer while the test waits for lifeboat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_delete_and_http_steps_run_and_apply_is_undone_exactly() {
    let ns = TestNs::new("rb-apply").await;
    let cm: ConfigMap = obj(json!({"metadata": {"name": "existing"}, "data": {"v": "old"}}));
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let doomed: ConfigMap = obj(json!({"metadata": {"name": "doomed"}, "data": {"v": "x"}}));
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &doomed)
        .await
        .unwrap();
    let ok_port = http_once(200, "healthy: yes").await;
    let bad_port = http_once(503, "down").await;
    let w = Work::new();
    w.write(
        "objects.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: existing, namespace: {ns}}}\ndata: {{v: new}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: created, namespace: {ns}}}\ndata: {{v: fresh}}\n",
            ns = ns.name
        ),
    );
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: apply-delete-http}}
steps:
  - id: apply
    apply: {{file: objects.yaml}}
  - id: health
    http: {{url: "http://127.0.0.1:{ok_port}/healthz", bodyContains: "healthy"}}
    timeout: 20s
  - id: remove
    delete: {{apiVersion: v1, kind: ConfigMap, name: doomed, namespace: {ns}}}
    undo: skip
  - id: after
    http: {{url: "http://127.0.0.1:{bad_port}/healthz"}}
    timeout: 20s
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let plan_text = std::fs::read_to_string(&plan).unwrap();
    assert!(plan_text.contains("changes data.v"), "{plan_text}");
    assert!(plan_text.contains("create ConfigMap"), "{plan_text}");
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    r.code_is(2);
    let report = r.json();
    let step = |id: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(step("health")["outputs"]["status"], 200, "{report:#}");
    assert!(
        step("after")["message"]
            .as_str()
            .unwrap()
            .contains("answered 503, expected 200"),
        "{report:#}"
    );
    // The apply was undone exactly: the existing ConfigMap has its old data back, the created
    // one is gone; the delete (undo: skip) stays done.
    let api = ns.api::<ConfigMap>();
    assert_eq!(api.get("existing").await.unwrap().data.unwrap()["v"], "old");
    assert!(api.get_opt("created").await.unwrap().is_none());
    assert!(api.get_opt("doomed").await.unwrap().is_none());
    ns.cleanup().await;
}

/// A TCP relay on 127.0.0.1 whose destination can be switched: an access proxy or tunnel in
/// front of "the cluster" that may lead to another one.
struct Relay {
    url: String,
    to: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Relay {
    async fn start(to: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let dest = std::sync::Arc::new(std::sync::Mutex::new(to));
        let d = dest.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = d.lock().unwrap().clone();
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Relay { url, to: dest }
    }

    fn point_at(&self, to: String) {
        *self.to.lock().unwrap() = to;
    }
}

/// The first cluster, user and server of a kubeconfig file.
fn kubeconfig_parts(path: &Path) -> (Value, Value, String) {
    let kc: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cluster = kc["clusters"][0]["cluster"].clone();
    let server = cluster["server"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .to_string();
    (cluster, kc["users"][0]["user"].clone(), server)
}

// Multi-threaded: the relay's tasks run while the test thread waits for lifeboat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_refused_on_another_cluster_behind_the_same_url() {
    let (cluster_a, user_a, addr_a) = kubeconfig_parts(&common::env().kubeconfig);
    let (cluster_b, user_b, addr_b) = kubeconfig_parts(&common::second_env().kubeconfig);
    let relay = Relay::start(addr_a.clone()).await;
    // One URL, two clusters behind it (as in a pod, behind a proxy or a tunnel).
    let with_server = |mut c: Value| {
        c["server"] = json!(relay.url);
        c
    };
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "a", "cluster": with_server(cluster_a)},
                     {"name": "b", "cluster": with_server(cluster_b)}],
        "users": [{"name": "a", "user": user_a}, {"name": "b", "user": user_b}],
        "contexts": [{"name": "a", "context": {"cluster": "a", "user": "a"}},
                     {"name": "b", "context": {"cluster": "b", "user": "b"}}],
        "current-context": "a"
    });
    let w = Work::new();
    let kc_path = w.write("relay.kubeconfig", &serde_norway::to_string(&kc).unwrap());
    let rb = w.write(
        "identity.yaml",
        "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: identity}\nsteps:\n  - id: hello\n    run: {command: \"echo hello\"}\n",
    );
    let via_relay = |args: &[&str]| {
        let mut cmd_args = vec!["--kubeconfig", kc_path.to_str().unwrap()];
        cmd_args.extend_from_slice(args);
        w.run(&cmd_args)
    };
    let plan = w.path("identity.plan.yaml");
    via_relay(&[
        "--context",
        "a",
        "runbook",
        "plan",
        rb.to_str().unwrap(),
        "-f",
        plan.to_str().unwrap(),
    ])
    .success();
    let plan_text = std::fs::read_to_string(&plan).unwrap();
    assert!(plan_text.contains("uid:"), "{plan_text}");

    // The relay now leads to the other cluster: same URL, refused before any step runs.
    relay.point_at(addr_b);
    let r = via_relay(&[
        "--context",
        "b",
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
    ]);
    r.code_is(1);
    assert!(
        r.stderr().contains("was planned for cluster") && r.stderr().contains("reaches cluster"),
        "{}",
        r.describe()
    );
    assert!(!r.stdout().contains("hello"), "{}", r.describe());

    // The planned cluster reached at another address (no relay) is the same cluster: it runs.
    relay.point_at(addr_a);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    r.success();
    assert_eq!(r.json()["status"], "succeeded");
}

#[tokio::test]
async fn a_run_awaiting_approval_keeps_the_change_locked_until_it_is_resumed() {
    let ns = TestNs::new("rb-park").await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: parked}\nsteps:\n  - id: first\n    run: {command: \"echo first\"}\n  - id: ok\n    approve: {message: go on?}\n  - id: second\n    run: {command: \"echo second\"}\n",
    );
    let plan = w.plan(&rb, &[]);
    let plan2 = w.plan(&rb, &[]);
    let lease_ns = ["--lease-namespace", ns.name.as_str()];
    let run = |plan: &Path, extra: &[&str]| {
        let mut a = vec!["runbook", "run", plan.to_str().unwrap(), "--yes"];
        a.extend_from_slice(&lease_ns);
        a.extend_from_slice(extra);
        w.run(&a)
    };
    let r = run(&plan, &[]);
    r.code_is(3);
    let id = run_id(&r);
    let leases = ns.api::<k8s_openapi::api::coordination::v1::Lease>();
    let held = leases.list(&Default::default()).await.unwrap().items;
    assert_eq!(held.len(), 1, "the lease is kept while awaiting approval");
    let holder = held[0]
        .spec
        .as_ref()
        .unwrap()
        .holder_identity
        .clone()
        .unwrap();
    assert!(holder.starts_with(&format!("run={id} ")), "{holder}");

    // Another responder's plan of the same change is refused meanwhile.
    let r = run(&plan2, &[]);
    r.code_is(1);
    assert!(
        r.stderr().contains("waits for approval"),
        "{}",
        r.describe()
    );

    // The waiting run itself resumes, finishes and gives the lock back.
    let mut a = vec!["runbook", "resume", id.as_str(), "--yes", "--approve", "ok"];
    a.extend_from_slice(&lease_ns);
    w.run(&a).success();
    assert!(
        leases
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    run(&plan2, &["--approve", "ok"]).success();
    ns.cleanup().await;
}

#[tokio::test]
async fn a_declared_irreversible_step_that_failed_part_way_is_no_clean_rollback() {
    let ns = TestNs::new("rb-partway").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: partway}}
steps:
  - id: scale
    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 3}}
  - id: migrate
    description: a migration that dies half-way
    run: {{command: "echo half; exit 1"}}
    undo: none
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    r.code_is(4);
    let report = r.json();
    assert_eq!(report["status"], "rollback-failed", "{report:#}");
    let msg = report["message"].as_str().unwrap();
    assert!(msg.contains("migrate") && msg.contains("by hand"), "{msg}");
    // What could be undone was undone.
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1));
    ns.cleanup().await;
}

fn alive(pid: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-0", pid])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn ctrl_c_kills_what_a_run_step_started_and_its_output_is_in_the_logs() {
    let ns = TestNs::new("rb-logs").await;
    let w = Work::new();
    let pidfile = w.path("child.pid");
    let rb = w.write(
        "rb.yaml",
        &format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: logs}}\nsteps:\n  - id: hello\n    run: {{command: \"echo hello from the step; echo to stderr >&2\"}}\n  - id: slow\n    run: {{command: \"echo slow started; sleep 300 & echo $! > {}; wait\"}}\n",
            pidfile.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let mut child = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let grandchild = loop {
        if let Ok(p) = std::fs::read_to_string(&pidfile)
            && !p.trim().is_empty()
        {
            break p.trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "step slow never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(alive(&grandchild));
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        common::wait_bounded(&mut child, "runbook run (SIGINT)").code(),
        Some(130)
    );
    // The command's own children die with it (not only `sh`).
    let gone = std::time::Instant::now() + Duration::from_secs(10);
    while alive(&grandchild) {
        assert!(
            std::time::Instant::now() < gone,
            "the step's `sleep 300` (pid {grandchild}) outlived Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let run = newest_run(&w);
    let one = w.run(&["runbook", "logs", &run, "hello"]);
    one.success();
    assert!(
        one.stdout().contains("hello from the step") && one.stdout().contains("to stderr"),
        "{}",
        one.describe()
    );
    // Following a run that has stopped prints what there is and returns.
    let all = w.run(&["runbook", "logs", &run, "-f"]);
    all.success();
    assert!(
        all.stdout().contains("hello │ hello from the step")
            && all.stdout().contains("slow │ slow started"),
        "{}",
        all.describe()
    );
    let bad = w.run(&["runbook", "logs", &run, "no-such-step"]);
    bad.code_is(64);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_run_is_resumed_and_rolled_back_from_another_machine_through_the_shared_journal() {
    let ns = TestNs::new("rb-shared").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let a = Work::new();
    let b = Work::new(); // another machine: its own state directory, nothing of A's
    let rb = a.write(
        "rb.yaml",
        &format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: shared}}\nsteps:\n  - id: scale\n    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 3}}\n    checkpoint: true\n  - id: ok\n    approve: {{message: go on?}}\n  - id: image\n    setImage: {{kind: Deployment, name: web, namespace: {ns}, container: app, image: \"nginx:1.27\"}}\n",
            ns = ns.name
        ),
    );
    let plan = a.plan(&rb, &[]);
    let lease_ns = ["--lease-namespace", ns.name.as_str()];
    let with_ns = |w: &Work, args: &[&str]| {
        let mut v = args.to_vec();
        v.extend_from_slice(&lease_ns);
        w.run(&v)
    };
    let r = with_ns(&a, &["runbook", "run", plan.to_str().unwrap(), "--yes"]);
    r.code_is(3);
    let run = run_id(&r);
    let secrets = ns.api::<k8s_openapi::api::core::v1::Secret>();
    assert!(
        secrets
            .get_opt(&format!("lifeboat-run-{run}"))
            .await
            .unwrap()
            .is_some(),
        "the journal is shared in the cluster"
    );

    // Machine B sees the run, resumes it with the approval, and finishes it.
    assert_eq!(
        with_ns(&b, &["runbook", "list", "-o", "json"])
            .success()
            .json()["runs"],
        json!([]),
        "without --shared: this machine's runs only"
    );
    let list = with_ns(&b, &["runbook", "list", "--shared", "-o", "json"]);
    list.success();
    assert_eq!(
        list.json()["runs"][0]["run"],
        run.as_str(),
        "{}",
        list.describe()
    );
    let st = with_ns(&b, &["runbook", "status", &run, "-o", "json"]);
    assert_eq!(st.success().json()["status"], "awaiting-approval");
    let r = with_ns(
        &b,
        &[
            "runbook",
            "resume",
            &run,
            "--yes",
            "--approve",
            "ok",
            "-o",
            "json",
        ],
    );
    r.success();
    assert_eq!(r.json()["status"], "succeeded");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(replicas_and_image(&d), (3, "nginx:1.27".to_string()));

    // B rolls it back to the start: the undo data came with the journal.
    let r = with_ns(
        &b,
        &[
            "runbook", "rollback", &run, "--to", "start", "--yes", "-o", "json",
        ],
    );
    r.success();
    assert_eq!(r.json()["status"], "rolled-back");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(replicas_and_image(&d), (1, "nginx:1.26".to_string()));

    // Machine A, whose copy is behind, shows what B did.
    let st = with_ns(&a, &["runbook", "status", &run, "-o", "json"]);
    assert_eq!(
        st.success().json()["status"],
        "rolled-back",
        "{}",
        st.describe()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn drain_refuses_to_lose_a_bare_pod_before_cordoning_unless_forced() {
    let ns = TestNs::new("rb-bare").await;
    let node = unique("lbt-node");
    own_node(&ns.client, &node).await;
    let mut spec = json!({"containers": [{"name": "app", "image": "example/one-off:1"}]});
    spec.as_object_mut()
        .unwrap()
        .extend(pinned_to(&node).as_object().unwrap().clone());
    let p: k8s_openapi::api::core::v1::Pod =
        obj(json!({"metadata": {"name": "one-off"}, "spec": spec}));
    let pods = ns.api::<k8s_openapi::api::core::v1::Pod>();
    pods.create(&PostParams::default(), &p).await.unwrap();
    // Bound first: a drain lists the node's pods by spec.nodeName.
    eventually(
        "the pod to be scheduled",
        Duration::from_secs(60),
        || async { pods.get("one-off").await.ok()?.spec?.node_name.map(|_| ()) },
    )
    .await;
    let w = Work::new();
    let rb = |force: bool| {
        w.write(
            &format!("drain-{force}.yaml"),
            &format!(
                "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: drain-bare}}\nsteps:\n  - id: drain\n    drain: {{node: {node}, force: {force}}}\n    timeout: 60s\n"
            ),
        )
    };
    let plan = w.plan(&rb(false), &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    r.code_is(2);
    assert!(
        r.stdout().contains(&format!("{}/one-off", ns.name)) && r.stdout().contains("force: true"),
        "{}",
        r.describe()
    );
    assert!(
        !unschedulable(&ns.client, &node).await,
        "a refused drain cordoned the node"
    );
    assert!(
        ns.api::<k8s_openapi::api::core::v1::Pod>()
            .get_opt("one-off")
            .await
            .unwrap()
            .is_some()
    );

    let plan = w.plan(&rb(true), &[]);
    w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ])
    .success();
    assert!(unschedulable(&ns.client, &node).await);
    let _ = Api::<Node>::all(ns.client.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn a_four_eyes_approval_comes_from_another_identity_on_another_machine() {
    let ns = TestNs::new("rb-4eyes").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    // The second person: their own Kubernetes identity, just enough rights to approve.
    let (approver_kc, role) = common::cluster_identity(
        &ns,
        "approver",
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
               {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "create", "patch"]}]),
    )
    .await;
    let starter = Work::new();
    let second = Work::new();
    let rb = starter.write(
        "rb.yaml",
        &format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: four-eyes}}\nsteps:\n  - id: ok\n    approve: {{message: scale web to 3?, approvers: {{notStarter: true}}}}\n  - id: scale\n    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 3}}\n",
            ns = ns.name
        ),
    );
    let plan = starter.plan(&rb, &[]);
    let ln = ["--lease-namespace", ns.name.as_str()];
    let run_with = |w: &Work, kc: Option<&Path>, args: &[&str]| {
        let mut v: Vec<&str> = Vec::new();
        if let Some(k) = kc {
            v.extend(["--kubeconfig", k.to_str().unwrap()]);
        }
        v.extend_from_slice(args);
        v.extend_from_slice(&ln);
        w.run(&v)
    };
    let r = run_with(
        &starter,
        None,
        &["runbook", "run", plan.to_str().unwrap(), "--yes"],
    );
    r.code_is(3);
    let run = run_id(&r);
    // The one who started it cannot approve it, neither way.
    let r = run_with(&starter, None, &["runbook", "approve", &run, "ok"]);
    r.code_is(1);
    assert!(r.stderr().contains("started this run"), "{}", r.describe());
    let r = run_with(
        &starter,
        None,
        &["runbook", "resume", &run, "--yes", "--approve", "ok"],
    );
    r.code_is(1);
    assert!(r.stderr().contains("started this run"), "{}", r.describe());
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1));

    // Another person, on another machine, approves; the starter's resume goes on.
    let r = run_with(
        &second,
        Some(&approver_kc),
        &["runbook", "approve", &run, "ok"],
    );
    r.success();
    assert!(
        r.stdout()
            .contains(&format!("system:serviceaccount:{}:approver", ns.name)),
        "{}",
        r.describe()
    );
    let r = run_with(
        &starter,
        None,
        &["runbook", "resume", &run, "--yes", "-o", "json"],
    );
    r.success();
    assert_eq!(r.json()["status"], "succeeded");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    let j = starter.journal(&run);
    let approval = j.iter().find(|r| r["event"] == "approval").unwrap();
    assert_eq!(
        approval["actor"]["kubernetes"],
        format!("system:serviceaccount:{}:approver", ns.name)
    );
    assert!(
        approval["details"]["planHash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    common::delete_cluster_identity(&ns.client, &role).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn an_undo_never_overwrites_what_someone_changed_after_the_step() {
    let ns = TestNs::new("rb-conflict").await;
    deployment(&ns, "web", 1, "nginx:1.26", json!({})).await;
    let w = Work::new();
    let marker = w.path("scaled");
    let rb = w.write(
        "rb.yaml",
        &format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: conflict}}\nsteps:\n  - id: scale\n    scale: {{kind: Deployment, name: web, namespace: {ns}, replicas: 3}}\n  - id: check\n    run: {{command: \"touch {m}; sleep 4; exit 1\"}}\n    undo: skip\n",
            ns = ns.name,
            m = marker.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let mut child = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    wait_for_file(&marker, Duration::from_secs(60), "step check never started");
    // Someone else scales the Deployment while the run goes on.
    ns.api::<Deployment>()
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    let status = common::wait_bounded(&mut child, "runbook run (conflict)");
    assert_eq!(status.code(), Some(4), "the rollback cannot be clean");
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(7), "their change was kept");
    let run = newest_run(&w);
    let st = w.run(&["runbook", "status", &run, "-o", "json"]).json();
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("changed by someone else"),
        "{st:#}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_restore_step_applies_transform_files_embedded_in_the_plan() {
    let ns = TestNs::new("rb-xform").await;
    let cm: ConfigMap = obj(json!({"metadata": {"name": "settings"}, "data": {"mode": "prod"}}));
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let w = Work::new();
    w.run(&["repo", "init"]).success();
    w.run(&["backup", "create", "-n", &ns.name]).success();
    let dst = unique("lbt-rb-xform-dst");
    let t = w.write(
        "scratch.yaml",
        "apiVersion: lifeboat.io/v1\nkind: RestoreTransform\nrules:\n  - match: {kinds: [ConfigMap]}\n    mergePatch: {data: {mode: staging}}\n",
    );
    let rb = w.write(
        "rb.yaml",
        &format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: xform}}\nsteps:\n  - id: restore\n    restore:\n      backup: latest\n      namespaces: [{src}]\n      namespaceMap: {{{src}: {dst}}}\n      transforms: [scratch.yaml]\n",
            src = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    // Embedded: the file may be gone when the plan runs.
    std::fs::remove_file(&t).unwrap();
    w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ])
    .success();
    let got = Api::<ConfigMap>::namespaced(ns.client.clone(), &dst)
        .get("settings")
        .await
        .unwrap();
    assert_eq!(got.data.unwrap()["mode"], "staging");

    // A bad rule fails the plan (file:line:col), not the incident.
    w.write(
        "scratch.yaml",
        "apiVersion: lifeboat.io/v1\nkind: RestoreTransform\nrules:\n  - match: {kinds: [ConfigMap]}\n",
    );
    let r = w.run(&[
        "runbook",
        "plan",
        rb.to_str().unwrap(),
        "-f",
        w.path("bad.plan.yaml").to_str().unwrap(),
    ]);
    r.code_is(1);
    assert!(r.stderr().contains("scratch.yaml:4:"), "{}", r.describe());
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone())
        .delete(&dst, &DeleteParams::default())
        .await;
    ns.cleanup().await;
}

/// The report entry of one step.
fn report_step(report: &Value, id: &str) -> Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report:#}"))
        .clone()
}

fn image_of(d: &Deployment) -> String {
    replicas_and_image(d).1
}

#[tokio::test]
async fn get_assert_sleep_and_rollout_undo_run_and_undo_puts_back_only_the_patched_fields() {
    let ns = TestNs::new("rb-new").await;
    deployment(&ns, "web", 0, "busybox:1.37", json!({})).await;
    let cm: ConfigMap = obj(json!({"metadata": {"name": "settings"}, "data": {"mode": "normal"}}));
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let w = Work::new();
    let marker = w.path("patched");
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: new-actions}}
steps:
  - id: image-b
    setImage: {{kind: Deployment, name: web, namespace: {ns}, image: "busybox:1.36"}}
  - id: revision-two
    wait: {{apiVersion: apps/v1, kind: Deployment, name: web, namespace: {ns}, jsonPath: ".metadata.annotations['deployment.kubernetes.io/revision']", value: "2"}}
    timeout: 60s
  - id: back
    rolloutUndo: {{kind: Deployment, name: web, namespace: {ns}}}
  - id: read
    get: {{apiVersion: apps/v1, kind: Deployment, name: web, namespace: {ns}, outputs: {{image: ".spec.template.spec.containers[0].image"}}}}
  - id: is-back
    assert: {{that: 'steps.read.outputs.image == "busybox:1.37"'}}
  - id: pause
    sleep: {{duration: 1s}}
  - id: maintenance
    patch: {{apiVersion: v1, kind: ConfigMap, name: settings, namespace: {ns}, patch: {{data: {{mode: maintenance}}}}}}
  - id: meanwhile
    run: {{command: "touch {m}; sleep 4"}}
    undo: skip
  - id: must-fail
    assert: {{that: 'steps.read.outputs.image == "nope"', message: "the image is not nope"}}
"#,
            ns = ns.name,
            m = marker.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let plan_text = std::fs::read_to_string(&plan).unwrap();
    assert!(
        plan_text.contains("check that steps.read.outputs.image"),
        "{plan_text}"
    );
    let mut child = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
        "--lease-namespace",
        &ns.name,
    ]);
    wait_for_file(
        &marker,
        Duration::from_secs(120),
        "step meanwhile never started",
    );
    // Someone else changes another key of the ConfigMap the run patched.
    ns.api::<ConfigMap>()
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"owner": "someone-else"}})),
        )
        .await
        .unwrap();
    let status = common::wait_bounded(&mut child, "runbook run (new actions)");
    assert_eq!(status.code(), Some(2), "failed and rolled back");
    let run = newest_run(&w);
    let st = w.run(&["runbook", "status", &run, "-o", "json"]).json();
    assert_eq!(
        report_step(&st, "read")["outputs"]["image"],
        "busybox:1.37",
        "{st:#}"
    );
    assert_eq!(report_step(&st, "back")["outputs"]["revision"], 1, "{st:#}");
    assert!(
        report_step(&st, "must-fail")["message"]
            .as_str()
            .unwrap()
            .contains("assertion failed: the image is not nope"),
        "{st:#}"
    );
    // The patch was undone field by field: mode back, the other key someone set kept.
    let data = ns
        .api::<ConfigMap>()
        .get("settings")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(data["mode"], "normal");
    assert_eq!(
        data["owner"], "someone-else",
        "a concurrent change survives the undo"
    );
    // rolloutUndo undone (template of 1.36 back), then setImage undone (1.37 back).
    let j = w.journal(&run);
    let undo = events(&j, "undo-result", "back");
    assert!(
        undo.iter().any(|r| r["message"]
            .as_str()
            .is_some_and(|m| m.contains("pod template put back"))),
        "{undo:?}"
    );
    let d = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(image_of(&d), "busybox:1.37");
    ns.cleanup().await;
}

#[test]
fn new_actions_are_checked_when_the_runbook_loads() {
    let w = Work::new();
    let cases = [
        (
            "  - id: e\n    exec: {namespace: x, pod: p, selector: a=b, command: [ls]}\n",
            "exactly one of `pod` and `selector`",
            7,
        ),
        (
            "  - id: a\n    assert: {that: 'steps.x.outputs.y == '}\n",
            "assert.that",
            7,
        ),
        (
            "  - id: s\n    sleep: {duration: 5 parsecs}\n",
            "duration",
            7,
        ),
        (
            "  - id: g\n    get: {kind: ConfigMap, name: c, outputs: {}}\n",
            "at least one entry in `outputs`",
            7,
        ),
        (
            "  - id: j\n    job: {namespace: x, spec: {template: {}}}\n",
            "template.spec.containers",
            7,
        ),
    ];
    for (i, (step, want, line)) in cases.iter().enumerate() {
        let rb = w.write(
            &format!("bad{i}.yaml"),
            &format!(
                "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: bad}}\n\nsteps:\n{step}"
            ),
        );
        let r = w.run(&["runbook", "validate", rb.to_str().unwrap()]);
        r.code_is(1);
        assert_eq!(r.stderr().trim().lines().count(), 1, "case {i}: one line");
        let err = r.stderr();
        assert!(err.contains(want), "case {i}: {err}");
        assert!(
            err.contains(&format!("bad{i}.yaml:{line}:")),
            "case {i} names file:line: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_webhooks_for_items_failure_and_rollback_without_secrets() {
    let ns = TestNs::new("rb-notify").await;
    let (port, recorded) = common::http_recorder().await;
    let w = Work::with_env(&[("HOOK_TOKEN", "tok-s3cr3t-99")]);
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: notified}}
notify:
  - url: "http://127.0.0.1:{port}/hook?token={{{{ env('HOOK_TOKEN') }}}}"
steps:
  - id: per-item
    forEach: [a, b]
    steps:
      - id: mark
        apply:
          manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: "mark-{{{{ item }}}}", namespace: {ns}}}, data: {{v: "1"}}}}
  - id: fails
    run: {{command: "exit 3"}}
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
        "--notify",
        &format!("http://127.0.0.1:{port}/slack"),
        "--notify-format",
        "slack",
    ]);
    r.code_is(2);
    let got: Vec<(String, Value)> = recorded
        .lock()
        .unwrap()
        .iter()
        .map(|(line, body)| {
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            (path, serde_json::from_str(body).unwrap_or(Value::Null))
        })
        .collect();
    let json_hook: Vec<&Value> = got
        .iter()
        .filter(|(p, _)| p.starts_with("/hook?token=tok-s3cr3t-99"))
        .map(|(_, b)| b)
        .collect();
    let evs: Vec<&str> = json_hook
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        evs.iter().filter(|e| **e == "item").count(),
        2,
        "one per forEach item: {got:?}"
    );
    assert!(evs.contains(&"rolledBack"), "{got:?}");
    let done = json_hook
        .iter()
        .find(|b| b["event"] == "rolledBack")
        .unwrap();
    assert_eq!(done["name"], "notified");
    assert_eq!(done["kind"], "runbook");
    let items: Vec<&Value> = json_hook
        .iter()
        .filter(|b| b["event"] == "item")
        .copied()
        .collect();
    assert_eq!(items[0]["details"]["item"], "a");
    assert_eq!(items[1]["details"]["item"], "b");
    let slack: Vec<&Value> = got
        .iter()
        .filter(|(p, _)| p == "/slack")
        .map(|(_, b)| b)
        .collect();
    assert!(
        !slack.is_empty() && slack.iter().all(|b| b["text"].is_string()),
        "{got:?}"
    );
    // The webhook URL is a credential: never in the journal or the output.
    let run = newest_run(&w);
    assert!(!w.journal_text(&run).contains("tok-s3cr3t-99"));
    assert!(!r.stderr().contains("tok-s3cr3t-99") && !r.stdout().contains("tok-s3cr3t-99"));
    ns.cleanup().await;
}

#[tokio::test]
async fn exec_and_job_steps_run_in_pods_on_the_real_node_and_keep_their_output() {
    if !common::has_real_node() {
        eprintln!(
            "NOT APPLICABLE: exec and job need a node that runs pods (scripts/testenv up --real-node)"
        );
        return;
    }
    let ns = TestNs::new("rb-exec").await;
    let on_real = json!({"nodeSelector": {"lifeboat.test/real-node": "true"},
        "containers": [{"name": "app", "image": "busybox:1.37", "command": ["sleep", "3600"]}]});
    let d: Deployment = obj(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": on_real}}
    }));
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    available(&ns, "db").await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: in-pods}}
steps:
  - id: migrate
    job:
      namespace: {ns}
      spec:
        template:
          spec:
            nodeSelector: {{lifeboat.test/real-node: "true"}}
            containers: [{{name: m, image: "busybox:1.37", command: [sh, -c, "echo step one; echo migrated 42"]}}]
    timeout: 3m
    undo: skip
  - id: hello
    exec: {{namespace: {ns}, selector: app=db, command: [sh, -c, "echo hello from $(hostname)"]}}
    undo: skip
  - id: check
    assert: {{that: '"migrated 42" in steps.migrate.outputs.logs and steps.hello.outputs.exitCode == 0'}}
  - id: broken
    exec: {{namespace: {ns}, selector: app=db, container: app, command: [sh, -c, "echo oops >&2; exit 3"]}}
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    r.code_is(2);
    let run = newest_run(&w);
    let st = w.run(&["runbook", "status", &run, "-o", "json"]).json();
    assert_eq!(
        report_step(&st, "check")["outputs"]["holds"],
        true,
        "{st:#}"
    );
    assert!(
        report_step(&st, "hello")["outputs"]["stdout"]
            .as_str()
            .unwrap()
            .starts_with("hello from db-"),
        "{st:#}"
    );
    let broken = report_step(&st, "broken");
    let msg = broken["message"].as_str().unwrap();
    assert!(
        msg.contains("exited with status 3") && msg.contains("oops"),
        "{st:#}"
    );
    // The Job is the run's, and its output is in the step log.
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(ns.client.clone(), &ns.name);
    let list = jobs.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let ann = list.items[0].metadata.annotations.clone().unwrap();
    assert_eq!(ann["lifeboat.io/run"], run);
    let logs = w.run(&["runbook", "logs", &run, "migrate"]);
    assert!(logs.stdout().contains("migrated 42"), "{}", logs.describe());
    ns.cleanup().await;
}

#[tokio::test]
async fn a_job_step_killed_with_kill_9_is_resumed_by_waiting_for_the_same_job() {
    if !common::has_real_node() {
        eprintln!(
            "NOT APPLICABLE: job needs a node that runs pods (scripts/testenv up --real-node)"
        );
        return;
    }
    let ns = TestNs::new("rb-job9").await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: job-kill}}
steps:
  - id: slow
    job:
      namespace: {ns}
      spec:
        template:
          spec:
            nodeSelector: {{lifeboat.test/real-node: "true"}}
            containers: [{{name: m, image: "busybox:1.37", command: [sh, -c, "sleep 6; echo ran once"]}}]
    timeout: 3m
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let mut child = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(ns.client.clone(), &ns.name);
    eventually("the Job to be created", Duration::from_secs(60), || async {
        (!jobs.list(&Default::default()).await.ok()?.items.is_empty()).then_some(())
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let run = newest_run(&w);
    let r = w.run(&[
        "runbook",
        "resume",
        &run,
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    r.success();
    let list = jobs.list(&Default::default()).await.unwrap();
    assert_eq!(
        list.items.len(),
        1,
        "the resume waited for the Job it had started"
    );
    let st = w.run(&["runbook", "status", &run, "-o", "json"]).json();
    assert_eq!(report_step(&st, "slow")["status"], "succeeded", "{st:#}");
    assert_eq!(
        report_step(&st, "slow")["outputs"]["logs"],
        "ran once",
        "{st:#}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_rollback_killed_during_a_secret_undo_is_finished_by_the_next_rollback() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ns = TestNs::new("rb-undo9").await;
    let s: Secret = obj(
        json!({"metadata": {"name": "db"}, "data": {"password": b64("old-pw-1"), "user": b64("app")}}),
    );
    ns.api::<Secret>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: undo-kill}}
steps:
  - id: rotate
    patch: {{apiVersion: v1, kind: Secret, name: db, namespace: {ns}, patch: {{data: {{password: "{new}"}}}}}}
  - id: verify
    run: {{command: "exit 1"}}
    undo: skip
"#,
            ns = ns.name,
            new = b64("new-pw-2")
        ),
    );
    let plan = w.plan(&rb, &[]);
    // The rollback undoes `rotate` and is killed before it can journal that.
    let killer = Work::lifeboat(
        w.dir.path(),
        &[("LIFEBOAT_FAILPOINTS", "runbook.undo.before-result=kill")],
    );
    let r = killer.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    assert_eq!(
        r.output.status.code(),
        None,
        "killed by SIGKILL: {}",
        r.describe()
    );
    let pw =
        |s: &Secret| String::from_utf8(s.data.as_ref().unwrap()["password"].0.clone()).unwrap();
    assert_eq!(
        pw(&ns.api::<Secret>().get("db").await.unwrap()),
        "old-pw-1",
        "the undo itself happened"
    );
    let run = newest_run(&w);
    let copies = || async {
        ns.api::<Secret>()
            .list(&kube::api::ListParams::default().labels("lifeboat.io/undo=true"))
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(
        copies().await,
        1,
        "the prior state is kept until the undo is journaled"
    );
    // The next rollback repeats the undo, finds the Secret already back, and finishes cleanly.
    let r = w.run(&[
        "runbook",
        "rollback",
        &run,
        "--to",
        "start",
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    r.success();
    assert!(r.stderr().contains("in flight"), "{}", r.describe());
    let now = ns.api::<Secret>().get("db").await.unwrap();
    assert_eq!(pw(&now), "old-pw-1");
    assert_eq!(
        String::from_utf8(now.data.unwrap()["user"].0.clone()).unwrap(),
        "app"
    );
    assert_eq!(
        copies().await,
        0,
        "the copy is deleted once the undo is journaled"
    );
    assert!(
        !w.journal_text(&run).contains("old-pw-1")
            && !w.journal_text(&run).contains(&b64("old-pw-1"))
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn an_undo_action_in_flight_at_a_crash_is_not_repeated_blindly() {
    let ns = TestNs::new("rb-undo9b").await;
    let w = Work::new();
    let count = w.path("undo-count");
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: undo-action-kill}}
steps:
  - id: change
    run: {{command: "true"}}
    undo: {{run: {{command: "echo x >> {c}"}}}}
  - id: verify
    run: {{command: "exit 1"}}
    undo: skip
"#,
            c = count.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let killer = Work::lifeboat(
        w.dir.path(),
        &[("LIFEBOAT_FAILPOINTS", "runbook.undo.before-result=kill")],
    );
    let r = killer.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    assert_eq!(r.output.status.code(), None, "killed: {}", r.describe());
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
    let run = newest_run(&w);
    let args = [
        "runbook",
        "rollback",
        &run,
        "--to",
        "start",
        "--yes",
        "--lease-namespace",
        &ns.name,
    ];
    let r = w.run(&args);
    r.code_is(4);
    assert!(
        r.stderr().contains("was in flight") && r.stderr().contains("not safe to repeat"),
        "{}",
        r.describe()
    );
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        1,
        "not run a second time"
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    let r = w.run(&forced);
    r.success();
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        1,
        "--force passes over it"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn run_time_for_each_over_a_selector_and_outputs_in_batches_is_journaled_and_rolled_back() {
    let ns = TestNs::new("rb-foreach").await;
    let mk = |name: &str| -> ConfigMap {
        obj(json!({"metadata": {"name": name, "labels": {"pool": "blue"}}, "data": {"v": "1"}}))
    };
    for n in ["cm-a", "cm-b"] {
        ns.api::<ConfigMap>()
            .create(&PostParams::default(), &mk(n))
            .await
            .unwrap();
    }
    let w = Work::new();
    let order = w.path("order");
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: run-time-loops}}
steps:
  - id: pool
    forEach: {{selector: {{kind: ConfigMap, namespace: {ns}, labelSelector: pool=blue}}}}
    batchSize: 2
    steps:
      - id: mark
        patch: {{apiVersion: v1, kind: ConfigMap, name: "{{{{ item }}}}", namespace: {ns}, patch: {{data: {{state: marked}}}}}}
      - id: note
        run: {{command: "echo {{{{ item }}}} >> {o}"}}
        undo: skip
  - id: names
    run: {{command: "echo names=x,y >> $LIFEBOAT_OUTPUT"}}
    undo: skip
  - id: second
    forEach: {{items: "{{{{ steps.names.outputs.names }}}}"}}
    steps:
      - id: echo
        run: {{command: "echo second-{{{{ item }}}} >> {o}"}}
        undo: skip
  - id: fail
    run: {{command: "exit 1"}}
"#,
            ns = ns.name,
            o = order.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    // Created after planning: the items are found when the run reaches the group.
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &mk("cm-c"))
        .await
        .unwrap();
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    r.code_is(2);
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "cm-a\ncm-b\ncm-c\nsecond-x\nsecond-y\n"
    );
    let run = newest_run(&w);
    let j = w.journal(&run);
    let intents: Vec<&str> = j
        .iter()
        .filter(|r| r["event"] == "intent")
        .map(|r| r["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        intents[..7],
        [
            "pool",
            "pool-cm-a-mark",
            "pool-cm-b-mark",
            "pool-cm-a-note",
            "pool-cm-b-note",
            "pool-cm-c-mark",
            "pool-cm-c-note"
        ],
        "batches of 2, step by step within a batch"
    );
    // The rollback undid the patches of every item, the late one included.
    for n in ["cm-a", "cm-b", "cm-c"] {
        let cm = ns.api::<ConfigMap>().get(n).await.unwrap();
        assert!(!cm.data.unwrap().contains_key("state"), "{n} undone");
    }
    let st = w.run(&["runbook", "status", &run, "-o", "json"]).json();
    assert_eq!(
        report_step(&st, "second-y-echo")["status"],
        "rolled-back",
        "{st:#}"
    );
    assert_eq!(report_step(&st, "pool")["outputs"]["count"], 3, "{st:#}");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_run_time_group_resumed_after_kill_9_keeps_the_items_it_found() {
    let ns = TestNs::new("rb-foreach9").await;
    let mk = |name: &str| -> ConfigMap {
        obj(json!({"metadata": {"name": name, "labels": {"pool": "green"}}}))
    };
    for n in ["cm-a", "cm-b"] {
        ns.api::<ConfigMap>()
            .create(&PostParams::default(), &mk(n))
            .await
            .unwrap();
    }
    let w = Work::new();
    let order = w.path("order");
    let marker = w.path("in-a");
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: run-time-resume}}
steps:
  - id: pool
    forEach: {{selector: {{kind: ConfigMap, namespace: {ns}, labelSelector: pool=green}}}}
    steps:
      - id: work
        run: {{command: "echo {{{{ item }}}} >> {o}; if [ {{{{ item }}}} = cm-a ] && [ ! -e {m}.done ]; then touch {m} {m}.done; sleep 30; fi"}}
"#,
            ns = ns.name,
            o = order.display(),
            m = marker.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let mut child = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    wait_for_file(&marker, Duration::from_secs(60), "item cm-a never started");
    child.kill().unwrap();
    let _ = child.wait();
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &mk("cm-0-late"))
        .await
        .unwrap();
    let run = newest_run(&w);
    let r = w.run(&[
        "runbook",
        "resume",
        &run,
        "--yes",
        "--in-doubt",
        "rerun",
        "--lease-namespace",
        &ns.name,
    ]);
    r.success();
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "cm-a\ncm-a\ncm-b\n",
        "the items found before the crash, not the object created since"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn shipped_cluster_upgrade_follows_a_node_replaced_under_a_new_name() {
    let ns = TestNs::new("rb-replace").await;
    let pinned = common::Env::pinned_k8s_version();
    let minor: u32 = pinned
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let old = unique("lbt-old");
    let new = unique("lbt-new");
    own_node_at(&ns.client, &old, &format!("v1.{}.3", minor - 1)).await;
    let w = Work::new();
    w.run(&["repo", "init"]).success();
    let marker = w.path("replaced");
    // The hook replaces the machine: it says so by naming the new node.
    let upgrade = format!(
        "echo node={new} >> \"$LIFEBOAT_OUTPUT\"; touch {}",
        marker.display()
    );
    let plan = w.plan(
        &common::repo_root().join("runbooks/cluster-upgrade.yaml"),
        &[
            &format!("target=1.{minor}"),
            &format!("nodes={old}"),
            &format!("upgradeCommand={upgrade}"),
            "failOn=none",
        ],
    );
    let mut run = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--approve",
        "go",
    ]);
    wait_for_file(&marker, Duration::from_secs(120), "the hook never ran");
    // The old machine is gone; the new one joins at the target version.
    Api::<Node>::all(ns.client.clone())
        .delete(&old, &DeleteParams::default())
        .await
        .unwrap();
    own_node_at(&ns.client, &new, &pinned).await;
    let status = common::wait_bounded(&mut run, "runbook run (node replacement)");
    let id = newest_run(&w);
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        w.run(&["runbook", "status", &id]).stdout()
    );
    let j = w.journal(&id);
    let upgraded = events(&j, "result", &format!("node-{old}-upgraded"));
    assert!(
        upgraded.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains(&new),
        "{upgraded:?}"
    );
    let uncordon = events(&j, "result", &format!("node-{old}-uncordon"));
    assert!(
        uncordon.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains(&format!("node {new} uncordoned")),
        "{uncordon:?}"
    );
    let _ = Api::<Node>::all(ns.client.clone())
        .delete(&new, &DeleteParams::default())
        .await;
    ns.cleanup().await;
}

#[tokio::test]
async fn max_failures_lets_a_group_go_on_past_a_failed_item_and_one_more_fails_the_run() {
    let ns = TestNs::new("rb-maxfail").await;
    let w = Work::new();
    let log = w.path("log");
    let runbook = |items: &str| {
        format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: max-failures}}
steps:
  - id: each
    forEach: [{items}]
    maxFailures: 1
    steps:
      - id: try
        run: {{command: "echo try-{{{{ item }}}} >> {l}; case {{{{ item }}}} in bad*) exit 1;; esac"}}
        undo: skip
      - id: after
        run: {{command: "echo after-{{{{ item }}}} >> {l}"}}
        undo: skip
"#,
            l = log.display()
        )
    };
    let rb = w.write("one.yaml", &runbook("a, bad1, c"));
    let plan = w.plan(&rb, &[]);
    let args = |plan: &Path| {
        vec![
            "runbook".to_string(),
            "run".into(),
            plan.to_str().unwrap().into(),
            "--yes".into(),
            "-o".into(),
            "json".into(),
            "--lease-namespace".into(),
            ns.name.clone(),
        ]
    };
    let a = args(&plan);
    let r = w.run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    r.code_is(1);
    assert_eq!(r.json()["status"], "partly-succeeded", "{}", r.describe());
    assert!(
        r.json()["message"].as_str().unwrap().contains("bad1"),
        "{}",
        r.describe()
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "try-a\nafter-a\ntry-bad1\ntry-c\nafter-c\n",
        "the failed item's later steps skipped, the next item run"
    );
    let run = run_id(&r);
    let again = w.run(&[
        "runbook",
        "resume",
        &run,
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    again.code_is(64);
    assert!(
        again.stderr().contains("maxFailures"),
        "{}",
        again.describe()
    );
    // Two failed items with maxFailures 1: the second fails the run, which rolls back.
    std::fs::remove_file(&log).unwrap();
    let rb = w.write("two.yaml", &runbook("bad1, bad2, c"));
    let plan = w.plan(&rb, &[]);
    let a = args(&plan);
    let r = w.run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    r.code_is(2);
    assert_eq!(r.json()["status"], "rolled-back", "{}", r.describe());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "try-bad1\ntry-bad2\n"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn killed_between_the_local_and_the_shared_journal_write_another_machine_goes_on_safely() {
    let ns = TestNs::new("rb-shared9").await;
    let a = Work::new();
    let b = Work::new();
    let ran = a.path("ran");
    let rb = a.write(
        "rb.yaml",
        &format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: shared-kill}}\nsteps:\n  - id: change\n    run: {{command: \"echo once >> {}\"}}\n",
            ran.display()
        ),
    );
    let plan = a.plan(&rb, &[]);
    // A writes the intent of `change` to its own journal and dies before the cluster's copy
    // has it (and so before the step runs).
    let killer = Work::lifeboat(
        a.dir.path(),
        &[(
            "LIFEBOAT_FAILPOINTS",
            "journal.before-shared:intent:change=kill",
        )],
    );
    let r = killer.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    assert_eq!(r.output.status.code(), None, "killed: {}", r.describe());
    assert!(!ran.exists());
    let run = newest_run(&a);
    // B goes on from the shared journal: the step was never started there, so it just runs.
    b.run(&[
        "runbook",
        "resume",
        &run,
        "--yes",
        "--lease-namespace",
        &ns.name,
    ])
    .success();
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "once\n");
    // A's extra record never reached the cluster: A takes the cluster's journal.
    let st = a.run(&[
        "runbook",
        "status",
        &run,
        "--lease-namespace",
        &ns.name,
        "-o",
        "json",
    ]);
    st.success();
    assert_eq!(st.json()["status"], "succeeded", "{}", st.describe());
    assert!(
        st.stderr().contains("never reached the cluster"),
        "{}",
        st.describe()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_shared_journal_that_cannot_be_written_stops_the_run_and_resume_recreates_it() {
    let ns = TestNs::new("rb-sharederr").await;
    let w = Work::new();
    let marker = w.path("first");
    let second = w.path("second");
    let rb = w.write(
        "rb.yaml",
        &format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: shared-error}}\nsteps:\n  - id: first\n    run: {{command: \"touch {m}; sleep 3\"}}\n  - id: second\n    run: {{command: \"echo once >> {s}\"}}\n",
            m = marker.display(),
            s = second.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let mut child = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    wait_for_file(&marker, Duration::from_secs(60), "step first never started");
    // The shared copy disappears under the run (a cleanup job, an operator): every write of
    // it fails from now on.
    let run = newest_run(&w);
    ns.api::<Secret>()
        .delete(&format!("lifeboat-run-{run}"), &DeleteParams::default())
        .await
        .unwrap();
    let status = common::wait_bounded(&mut child, "runbook run (shared journal gone)");
    assert_eq!(status.code(), Some(1), "stops instead of going on unshared");
    assert!(!second.exists(), "nothing after the failed write ran");
    let r = w.run(&[
        "runbook",
        "resume",
        &run,
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    r.success();
    assert_eq!(std::fs::read_to_string(&second).unwrap(), "once\n");
    assert!(
        ns.api::<Secret>()
            .get_opt(&format!("lifeboat-run-{run}"))
            .await
            .unwrap()
            .is_some(),
        "the shared journal is there again"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_machine_whose_clock_is_ten_minutes_ahead_still_sees_the_change_locked() {
    let ns = TestNs::new("rb-skew").await;
    let w = Work::new();
    let marker = w.path("first-started");
    let rb = w.write(
        "rb.yaml",
        &format!(
            "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {{name: skewed}}\nsteps:\n  - id: long\n    run: {{command: \"touch {}; sleep 20\"}}\n",
            marker.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let plan2 = w.plan(&rb, &[]);
    let mut first = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    wait_for_file(&marker, Duration::from_secs(60), "first run never started");
    // The other responder's clock runs 10 minutes ahead: the lease's renewTime (written with
    // the first machine's clock) looks 10 minutes old there.
    let skewed = Work::lifeboat(w.dir.path(), &[("LIFEBOAT_CLOCK_SKEW_SECONDS", "600")]);
    let second = skewed.run(&[
        "runbook",
        "run",
        plan2.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    second.code_is(1);
    assert!(
        second.stderr().contains("is being run by run=skewed-"),
        "{}",
        second.describe()
    );
    std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    let _ = common::wait_bounded(&mut first, "runbook run (SIGTERM)");
    ns.cleanup().await;
}

#[tokio::test]
async fn an_object_a_step_created_and_someone_changed_is_not_deleted_by_the_undo() {
    let ns = TestNs::new("rb-created").await;
    let w = Work::new();
    let marker = w.path("applied");
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: created-then-changed}}
steps:
  - id: make
    apply: {{manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: made, namespace: {ns}}}, data: {{mode: ours}}}}}}
  - id: meanwhile
    run: {{command: "touch {m}; sleep 4"}}
    undo: skip
  - id: fail
    run: {{command: "exit 1"}}
"#,
            ns = ns.name,
            m = marker.display()
        ),
    );
    let plan = w.plan(&rb, &[]);
    let mut child = w.lb.spawn(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    wait_for_file(
        &marker,
        Duration::from_secs(60),
        "step meanwhile never started",
    );
    ns.api::<ConfigMap>()
        .patch(
            "made",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"mode": "theirs"}})),
        )
        .await
        .unwrap();
    let status = common::wait_bounded(&mut child, "runbook run (created then changed)");
    assert_eq!(status.code(), Some(4), "the rollback cannot be clean");
    let cm = ns.api::<ConfigMap>().get("made").await.unwrap();
    assert_eq!(
        cm.data.unwrap()["mode"],
        "theirs",
        "kept, with their change"
    );
    let run = newest_run(&w);
    let st = w.run(&["runbook", "status", &run, "-o", "json"]).json();
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("changed by someone else since (data.mode)"),
        "{st:#}"
    );

    // Items that would give the same step ids are refused where they are found.
    let rb = w.write(
        "dup.yaml",
        "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: dup-items}\nsteps:\n  - id: dup\n    forEach: {items: \"x, y, x\"}\n    steps:\n      - id: never\n        run: {command: \"true\"}\n",
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
        "--lease-namespace",
        &ns.name,
    ]);
    r.code_is(2);
    let st = r.json();
    assert!(
        report_step(&st, "dup")["message"]
            .as_str()
            .unwrap()
            .contains("item x is listed twice"),
        "{st:#}"
    );
    let rb = w.write(
        "collide.yaml",
        "apiVersion: lifeboat.io/v1\nkind: Runbook\nmetadata: {name: collide}\nsteps:\n  - id: other\n    forEach: {items: [\"a.b\", \"a/b\"]}\n    steps:\n      - id: never\n        run: {command: \"true\"}\n",
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
        "--lease-namespace",
        &ns.name,
    ]);
    r.code_is(2);
    let st = r.json();
    assert!(
        report_step(&st, "other")["message"]
            .as_str()
            .unwrap()
            .contains("would give the same step ids"),
        "{st:#}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_retried_job_step_runs_a_new_job_for_each_attempt() {
    if !common::has_real_node() {
        eprintln!(
            "NOT APPLICABLE: job needs a node that runs pods (scripts/testenv up --real-node)"
        );
        return;
    }
    let ns = TestNs::new("rb-jobretry").await;
    let w = Work::new();
    let rb = w.write(
        "rb.yaml",
        &format!(
            r#"apiVersion: lifeboat.io/v1
kind: Runbook
metadata: {{name: job-retry}}
steps:
  - id: flaky
    job:
      namespace: {ns}
      name: migrate
      spec:
        template:
          spec:
            nodeSelector: {{lifeboat.test/real-node: "true"}}
            containers: [{{name: m, image: "busybox:1.37", command: [sh, -c, "echo attempt; exit 1"]}}]
    retry: {{attempts: 2, backoff: 1s}}
    timeout: 3m
"#,
            ns = ns.name
        ),
    );
    let plan = w.plan(&rb, &[]);
    let r = w.run(&[
        "runbook",
        "run",
        plan.to_str().unwrap(),
        "--yes",
        "--lease-namespace",
        &ns.name,
    ]);
    r.code_is(2);
    let jobs = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(ns.client.clone(), &ns.name);
    let names: Vec<String> = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|j| j.metadata.name.unwrap())
        .collect();
    assert_eq!(names.len(), 2, "one Job per attempt: {names:?}");
    assert!(names.iter().all(|n| n.starts_with("migrate-")), "{names:?}");
    ns.cleanup().await;
}
