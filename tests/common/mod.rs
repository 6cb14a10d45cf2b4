//! Integration-test harness.
//!
//! * [`env()`] gives the test environment, started once per test binary:
//!   - `LIFEBOAT_TEST_KUBECONFIG` set: that cluster is used (kind, minikube, a real cluster); an
//!     S3 server is still started locally (`scripts/testenv up --s3-only`) unless
//!     `LIFEBOAT_TEST_S3_ENDPOINT` (+ `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`) names one;
//!   - `LIFEBOAT_TESTENV_DIR` set to a running `scripts/testenv` environment (what `scripts/test`
//!     does, so all test binaries share one control plane): that one is used;
//!   - otherwise `scripts/testenv up` starts a private environment that tears itself down when
//!     the test binary exits (`--owner-pid`).
//!   If the environment cannot start, the test fails: nothing is skipped.
//! * [`TestNs`]: a fresh namespace per test.
//! * [`Lifeboat`]: runs the real binary with an isolated HOME/XDG dirs; on failure the assertion
//!   prints the command, its directory, stdout, stderr and the tail of the server logs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};

pub mod standin;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug, Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

#[derive(Debug)]
pub struct Env {
    pub kubeconfig: PathBuf,
    pub s3: S3Env,
    /// The scripts/testenv directory when the control plane is ours (not an external cluster).
    pub testenv_dir: Option<PathBuf>,
    /// The S3-only testenv directory when running against an external cluster.
    pub s3_dir: Option<PathBuf>,
    pub external: bool,
    _tmp: Option<tempfile::TempDir>,
}

static ENV: OnceLock<Env> = OnceLock::new();
static PLAIN: OnceLock<Env> = OnceLock::new();
static SECOND: OnceLock<Env> = OnceLock::new();

/// Another cluster: a control plane of this test binary's own (another `kube-system` UID, its
/// own CA and credentials), for tests about telling clusters apart.
#[allow(dead_code)]
pub fn second_env() -> &'static Env {
    SECOND.get_or_init(|| {
        let tmp = tempfile::Builder::new()
            .prefix("lifeboat-second-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("env");
        eprintln!("harness: a second cluster in {}", dir.display());
        private_env(tmp, dir, &[])
    })
}

/// Whether the shared environment has the real node (and with it the real snapshot-controller).
pub fn has_real_node() -> bool {
    env()
        .testenv_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join("real-node")).ok())
        .is_some_and(|s| s.trim() == "1")
}

/// The environment for tests of the storage stand-in (tests/common/standin.rs): the shared one,
/// unless that runs the real node, whose real snapshot-controller would also act on the
/// stand-in's VolumeSnapshots; then a private control plane without it (started once per test
/// binary, torn down when the binary exits).
pub fn plain_env() -> &'static Env {
    if !has_real_node() {
        return env();
    }
    PLAIN.get_or_init(|| {
        let tmp = tempfile::Builder::new()
            .prefix("lifeboat-plain-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("env");
        eprintln!(
            "harness: the shared environment has a real node; the stand-in's tests get their own in {}",
            dir.display()
        );
        private_env(tmp, dir, &[])
    })
}

/// Start an environment of our own in `dir` (inside `tmp`, kept alive with it) and describe it.
fn private_env(tmp: tempfile::TempDir, dir: PathBuf, extra: &[&str]) -> Env {
    let vars = testenv_up(&dir, extra);
    Env {
        kubeconfig: vars["KUBECONFIG"].clone().into(),
        s3: s3_from(&vars),
        testenv_dir: Some(dir),
        s3_dir: None,
        external: false,
        _tmp: Some(tmp),
    }
}

fn testenv_script() -> PathBuf {
    repo_root().join("scripts/testenv")
}

fn parse_exports(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

fn testenv_up(dir: &Path, extra: &[&str]) -> HashMap<String, String> {
    let pid = std::process::id().to_string();
    let mut args = vec![
        "up",
        "--dir",
        dir.to_str().unwrap(),
        "--owner-pid",
        pid.as_str(),
    ];
    args.extend_from_slice(extra);
    let status = Command::new(testenv_script())
        .args(&args)
        .stdin(Stdio::null())
        .status()
        .expect("cannot run scripts/testenv");
    assert!(
        status.success(),
        "scripts/testenv {args:?} failed ({status}); see its output above"
    );
    testenv_env(dir)
}

fn testenv_env(dir: &Path) -> HashMap<String, String> {
    let out = Command::new(testenv_script())
        .args(["env", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/testenv env failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_exports(&String::from_utf8_lossy(&out.stdout))
}

fn s3_from(vars: &HashMap<String, String>) -> S3Env {
    S3Env {
        endpoint: vars["LIFEBOAT_S3_ENDPOINT"].clone(),
        access_key: vars["AWS_ACCESS_KEY_ID"].clone(),
        secret_key: vars["AWS_SECRET_ACCESS_KEY"].clone(),
        region: vars
            .get("AWS_REGION")
            .cloned()
            .unwrap_or_else(|| "us-east-1".into()),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

pub fn env() -> &'static Env {
    ENV.get_or_init(|| {
        if let Ok(kc) = std::env::var("LIFEBOAT_TEST_KUBECONFIG") {
            let (s3, s3_dir, tmp) = match std::env::var("LIFEBOAT_TEST_S3_ENDPOINT") {
                Ok(endpoint) => (
                    S3Env {
                        endpoint,
                        access_key: std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID"),
                        secret_key: std::env::var("AWS_SECRET_ACCESS_KEY")
                            .expect("AWS_SECRET_ACCESS_KEY"),
                        region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
                    },
                    None,
                    None,
                ),
                Err(_) => {
                    let tmp = tempfile::Builder::new()
                        .prefix("lifeboat-s3-")
                        .tempdir()
                        .unwrap();
                    let dir = tmp.path().join("env");
                    let vars = testenv_up(&dir, &["--s3-only"]);
                    (s3_from(&vars), Some(dir), Some(tmp))
                }
            };
            eprintln!("harness: using external cluster from LIFEBOAT_TEST_KUBECONFIG={kc}");
            return Env {
                kubeconfig: kc.into(),
                s3,
                testenv_dir: None,
                s3_dir,
                external: true,
                _tmp: tmp,
            };
        }
        if let Ok(dir) = std::env::var("LIFEBOAT_TESTENV_DIR") {
            let dir = PathBuf::from(dir);
            let vars = testenv_env(&dir);
            return Env {
                kubeconfig: vars["KUBECONFIG"].clone().into(),
                s3: s3_from(&vars),
                testenv_dir: Some(dir),
                s3_dir: None,
                external: false,
                _tmp: None,
            };
        }
        let tmp = tempfile::Builder::new()
            .prefix("lifeboat-testenv-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("env");
        eprintln!(
            "harness: starting a private test environment in {}",
            dir.display()
        );
        // A real kubelet node too, where it can run (root; LIFEBOAT_TEST_REAL_NODE=0 opts out).
        let real = std::env::var("LIFEBOAT_TEST_REAL_NODE").as_deref() != Ok("0") && is_root();
        let bin = env!("CARGO_BIN_EXE_lifeboat");
        let extra: Vec<&str> = if real {
            vec!["--real-node", "--lifeboat-binary", bin]
        } else {
            vec![]
        };
        private_env(tmp, dir, &extra)
    })
}

impl Env {
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig).await
    }

    /// The last lines of every control-plane log (for failure messages).
    pub fn server_logs(&self) -> String {
        let Some(dir) = &self.testenv_dir else {
            return "(external cluster: no server logs)".into();
        };
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(dir.join("logs")) {
            for e in rd.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                out.push_str(&format!(
                    "--- {} (last {} lines)\n{}\n",
                    e.path().display(),
                    tail.len(),
                    tail.join("\n")
                ));
            }
        }
        out
    }

    /// The Kubernetes version pinned for the local environment.
    pub fn pinned_k8s_version() -> String {
        let text =
            std::fs::read_to_string(repo_root().join("scripts/testenv-go/versions.env")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("K8S_VERSION="))
            .unwrap()
            .trim()
            .to_string()
    }
}

pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    lifeboat::cluster::install_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{:x}{:x}",
        std::process::id() % 4096,
        (nanos ^ N.fetch_add(1, Ordering::Relaxed)) % 65536
    )
}

/// A namespace of the test's own, labelled `lifeboat.io/test=true`.
pub struct TestNs {
    pub name: String,
    pub client: kube::Client,
}

impl TestNs {
    pub async fn new(prefix: &str) -> TestNs {
        Self::new_in(env(), prefix).await
    }

    /// A namespace in [`plain_env`] (for the storage stand-in's tests).
    #[allow(dead_code)]
    pub async fn new_plain(prefix: &str) -> TestNs {
        Self::new_in(plain_env(), prefix).await
    }

    pub async fn new_in(e: &Env, prefix: &str) -> TestNs {
        let client = e.client().await;
        let name = unique(&format!("lbt-{prefix}"));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"lifeboat.io/test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        TestNs { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Delete the namespace (call at the end of a passing test; a failing test leaves it for
    /// inspection, and the environment is thrown away anyway).
    pub async fn cleanup(self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                env().server_logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The lifeboat binary with an isolated home; no LIFEBOAT_* variables leak in from the caller.
pub struct Lifeboat {
    pub home: tempfile::TempDir,
    pub envs: Vec<(String, String)>,
    pub kubeconfig: Option<PathBuf>,
}

pub struct Run {
    pub cmd: String,
    pub dir: PathBuf,
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    pub fn describe(&self) -> String {
        let logs = ENV.get().map(|e| e.server_logs()).unwrap_or_default();
        format!(
            "command: {}\ndir: {}\nexit: {:?}\n--- stdout\n{}\n--- stderr\n{}\n{}",
            self.cmd,
            self.dir.display(),
            self.output.status.code(),
            self.stdout(),
            self.stderr(),
            logs
        )
    }
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert!(
            self.output.status.success(),
            "command failed\n{}",
            self.describe()
        );
        self
    }
    #[track_caller]
    pub fn code_is(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\n{}",
            self.describe()
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.describe()))
    }
}

impl Lifeboat {
    /// Without a cluster: KUBECONFIG points nowhere.
    pub fn offline() -> Lifeboat {
        Lifeboat {
            home: tempfile::Builder::new()
                .prefix("lifeboat-home-")
                .tempdir()
                .unwrap(),
            envs: vec![],
            kubeconfig: None,
        }
    }

    /// Against the test environment's cluster.
    pub fn new() -> Lifeboat {
        let mut lb = Lifeboat::offline();
        lb.kubeconfig = Some(env().kubeconfig.clone());
        lb
    }

    /// lifeboat against [`plain_env`].
    #[allow(dead_code)]
    pub fn plain() -> Lifeboat {
        let mut lb = Lifeboat::offline();
        lb.kubeconfig = Some(plain_env().kubeconfig.clone());
        lb
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// The same lifeboat (its own home) with one more variable.
    #[allow(dead_code)]
    pub fn clone_with(&self, k: &str, v: &str) -> Lifeboat {
        let mut lb = Lifeboat::offline();
        lb.envs = self.envs.clone();
        lb.kubeconfig = self.kubeconfig.clone();
        lb.env(k, v)
    }

    /// The command `run` runs (for spawning it yourself: a PTY, a kill -9).
    pub fn command(&self, args: &[&str]) -> Command {
        let bin = env!("CARGO_BIN_EXE_lifeboat");
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("LIFEBOAT_") || k == "KUBECONFIG" || k == "RUST_LOG" {
                cmd.env_remove(&k);
            }
        }
        let h = self.home.path();
        cmd.env("HOME", h)
            .env("XDG_CONFIG_HOME", h.join(".config"))
            .env("XDG_DATA_HOME", h.join(".local/share"))
            .env("XDG_STATE_HOME", h.join(".local/state"))
            .env("XDG_CACHE_HOME", h.join(".cache"))
            .env("NO_COLOR", "1")
            .current_dir(h)
            .stdin(Stdio::null());
        match &self.kubeconfig {
            Some(kc) => cmd.env("KUBECONFIG", kc),
            None => cmd.env("KUBECONFIG", h.join("no-such-kubeconfig")),
        };
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run lifeboat");
        let output = output_bounded(child, &format!("lifeboat {}", args.join(" ")));
        Run {
            cmd: format!("lifeboat {}", args.join(" ")),
            dir: self.home.path().to_owned(),
            output,
        }
    }

    /// Start lifeboat in the background (output discarded).
    #[allow(dead_code)]
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start lifeboat")
    }
}

/// A kubeconfig for a ServiceAccount of `ns` bound to a new ClusterRole with exactly `rules`
/// (cluster-wide). Returns the kubeconfig and the ClusterRole's name (delete it when done).
pub async fn cluster_identity(
    ns: &TestNs,
    name: &str,
    rules: serde_json::Value,
) -> (PathBuf, String) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let role_name = unique(&format!("lbt-{name}"));
    let pp = PostParams::default();
    let cr: ClusterRole = serde_json::from_value(
        serde_json::json!({"metadata": {"name": role_name}, "rules": rules}),
    )
    .unwrap();
    Api::<ClusterRole>::all(ns.client.clone())
        .create(&pp, &cr)
        .await
        .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns.name}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(ns.client.clone())
        .create(&pp, &crb)
        .await
        .unwrap();
    (
        limited_identity(ns, name, serde_json::json!([])).await,
        role_name,
    )
}

pub async fn delete_cluster_identity(client: &kube::Client, role_name: &str) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(role_name, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(client.clone())
        .delete(role_name, &DeleteParams::default())
        .await;
}

/// A kubeconfig for a ServiceAccount of `ns` that has exactly the given RBAC rules (a Role in
/// `ns`), authenticated with a bound token from the TokenRequest API. Works on any cluster, so
/// RBAC tests run against external clusters too.
pub async fn limited_identity(ns: &TestNs, name: &str, rules: serde_json::Value) -> PathBuf {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let pp = PostParams::default();
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    ns.api::<ServiceAccount>().create(&pp, &sa).await.unwrap();
    let role: Role =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "rules": rules}))
            .unwrap();
    ns.api::<Role>().create(&pp, &role).await.unwrap();
    let rb: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns.name}]
    }))
    .unwrap();
    ns.api::<RoleBinding>().create(&pp, &rb).await.unwrap();
    let tr: TokenRequest = serde_json::from_value(
        serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 3600}}),
    )
    .unwrap();
    let tr = ns
        .api::<ServiceAccount>()
        .create_token_request(name, &pp, &tr)
        .await
        .unwrap();
    let token = tr.status.unwrap().token;

    let admin = kube::config::Kubeconfig::read_from(&env().kubeconfig).unwrap();
    let ctx_name = admin.current_context.clone().unwrap();
    let ctx = admin
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .unwrap()
        .context
        .clone()
        .unwrap();
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .unwrap()
        .clone();
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [serde_json::to_value(&cluster).unwrap()],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster.name, "user": name, "namespace": ns.name}}],
        "current-context": name,
    });
    let dir = std::env::temp_dir().join(unique("lifeboat-identity"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec_pretty(&kc).unwrap()).unwrap();
    path
}

/// An aws-sdk-s3 client for the test S3 server (path-style, custom endpoint); `secret` overrides
/// the secret key (to test refusals).
pub fn s3_client_with(secret: Option<&str>) -> aws_sdk_s3::Client {
    let s3 = &env().s3;
    let creds = aws_sdk_s3::config::Credentials::new(
        &s3.access_key,
        secret.unwrap_or(&s3.secret_key),
        None,
        None,
        "lifeboat-test",
    );
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(s3.region.clone()))
        .endpoint_url(&s3.endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// How long any one lifeboat command in a test may run. Far above what any needs: this only
/// turns a hang into a failure that names the command instead of a stuck test suite.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(600);

/// Run `f` (which waits for the process `pid`) on a thread; past [`COMMAND_DEADLINE`] kill the
/// process and panic naming `what`.
fn bounded<T: Send + 'static>(pid: u32, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(COMMAND_DEADLINE) {
        Ok(v) => v,
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("`{what}` still running after {COMMAND_DEADLINE:?}: killed");
        }
    }
}

/// `child.wait()`, bounded by [`COMMAND_DEADLINE`].
#[allow(dead_code)]
pub fn wait_bounded(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let pid = child.id();
    let start = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait for lifeboat") {
            return st;
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` (pid {pid}) still running after {COMMAND_DEADLINE:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `child.wait_with_output()`, bounded by [`COMMAND_DEADLINE`].
#[allow(dead_code)]
pub fn output_bounded(child: std::process::Child, what: &str) -> std::process::Output {
    let pid = child.id();
    bounded(pid, what, move || {
        child.wait_with_output().expect("wait for lifeboat")
    })
}

/// A local HTTP server that records every request (its request line and body) and answers
/// 200: a webhook or Pushgateway receiver.
#[allow(dead_code)]
pub async fn http_recorder() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            let line = head.lines().next().unwrap_or("").to_string();
                            g.lock().unwrap().push((line, body.to_string()));
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                            break;
                        }
                    }
                }
            });
        }
    });
    (port, got)
}

/// A client that acts as ServiceAccount `ns/sa`, with a short-lived token the environment's
/// admin identity requests for it (TokenRequest).
#[allow(dead_code)]
pub async fn client_as_service_account(kubeconfig: &Path, ns: &str, sa: &str) -> kube::Client {
    let admin = client_for(kubeconfig).await;
    let tr: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": 3600}})).unwrap();
    let token = kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin, ns)
        .create_token_request(sa, &Default::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    kube::Client::try_from(config).unwrap()
}
