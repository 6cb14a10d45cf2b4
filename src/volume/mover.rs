//! Mover pods: a short-lived pod that mounts a PVC, through which lifeboat streams a volume's
//! files as tar over the API server's `pods/exec` (the repository's credentials never enter the
//! cluster). The pod runs `sleep` until lifeboat execs `tar` in it, then is deleted.
//!
//! Security: no service-account token, no privilege escalation, read-only root filesystem, all
//! capabilities dropped except what tar needs (reading any file for a backup; writing owners and
//! modes for a restore), resource limits, and an `activeDeadlineSeconds`.
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DeleteParams, PostParams};
use serde_json::json;

use super::snapshots::{Cleanup, Temp};
use super::{Counters, FileEntry, IngestStats, VolumeError};
use crate::repo::{Packer, Repository};

/// The image the mover pods run (anything with `sleep` and a POSIX `tar`).
pub const DEFAULT_IMAGE: &str = "busybox:1.37";
/// Where the PVC is mounted in the mover pod (its working directory).
pub const MOUNT: &str = "/data";
pub const LABEL: &str = "lifeboat.io/mover";

#[derive(Debug, Clone)]
pub struct MoverOptions {
    pub image: String,
    /// The pod is killed by Kubernetes after this long, whatever happens to lifeboat.
    pub deadline: Duration,
    /// How long to wait for the pod to run.
    pub start_timeout: Duration,
    pub run_as: RunAs,
    /// Run on this node (`spec.nodeName`): a live read of a claim mounted there.
    pub node: Option<String>,
}

/// The user a mover's process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RunAs {
    /// uid 0 with only the capabilities its direction needs: reading files of any owner
    /// (backup), or writing them back with their owners and modes (restore).
    #[default]
    Root,
    /// A non-root user and no capabilities at all: the identity of the workload that uses the
    /// volume, which can read what that workload wrote.
    User {
        uid: i64,
        gid: Option<i64>,
        fs_group: Option<i64>,
        supplemental_groups: Vec<i64>,
    },
}

impl Default for MoverOptions {
    fn default() -> Self {
        MoverOptions {
            image: DEFAULT_IMAGE.into(),
            deadline: Duration::from_secs(6 * 3600),
            start_timeout: Duration::from_secs(120),
            run_as: RunAs::Root,
            node: None,
        }
    }
}

/// What a mover does with its volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Read the volume (mounted read-only).
    Backup,
    /// Fill the volume.
    Restore,
}

fn kerr(action: String) -> impl FnOnce(kube::Error) -> VolumeError {
    move |e| VolumeError::Pipeline(format!("{action}: {}", crate::error::display_chain(&e)))
}

/// The pod manifest of a mover for `pvc` in `ns`.
pub fn pod_manifest(
    name: &str,
    ns: &str,
    pvc: &str,
    dir: Direction,
    opts: &MoverOptions,
) -> serde_json::Value {
    let read_only = dir == Direction::Backup;
    let caps: &[&str] = match dir {
        Direction::Backup => &["DAC_READ_SEARCH"],
        Direction::Restore => &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"],
    };
    let mut pod = pod_spec(name, ns, pvc, dir, opts, read_only, caps);
    if let Some(n) = &opts.node {
        pod["spec"]["nodeName"] = json!(n);
    }
    pod
}

fn pod_spec(
    name: &str,
    ns: &str,
    pvc: &str,
    dir: Direction,
    opts: &MoverOptions,
    read_only: bool,
    caps: &[&str],
) -> serde_json::Value {
    let _ = dir;
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "lifeboat", LABEL: "true"},
            "annotations": {"lifeboat.io/pvc": pvc,
                            "lifeboat.io/direction": if read_only { "backup" } else { "restore" }},
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": opts.deadline.as_secs().max(60),
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "mover",
                "image": opts.image,
                "command": ["sleep", opts.deadline.as_secs().max(60).to_string()],
                "workingDir": MOUNT,
                "volumeMounts": [{"name": "data", "mountPath": MOUNT, "readOnly": read_only}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                              "limits": {"cpu": "1", "memory": "256Mi"}},
                "securityContext": container_security(&opts.run_as, caps),
            }],
            "securityContext": pod_security(&opts.run_as),
            "volumes": [{"name": "data",
                         "persistentVolumeClaim": {"claimName": pvc, "readOnly": read_only}}],
        }
    })
}

fn container_security(run_as: &RunAs, root_caps: &[&str]) -> serde_json::Value {
    match run_as {
        RunAs::Root => json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsUser": 0,
            "capabilities": {"drop": ["ALL"], "add": root_caps},
        }),
        RunAs::User { uid, gid, .. } => {
            let mut c = json!({
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "runAsUser": uid,
                "capabilities": {"drop": ["ALL"]},
            });
            if let Some(g) = gid {
                c["runAsGroup"] = json!(g);
            }
            c
        }
    }
}

fn pod_security(run_as: &RunAs) -> serde_json::Value {
    match run_as {
        RunAs::Root => json!({}),
        RunAs::User {
            fs_group,
            supplemental_groups,
            ..
        } => {
            let mut p = json!({});
            if let Some(g) = fs_group {
                p["fsGroup"] = json!(g);
                // The temporary claim is a copy: change ownership only when its root differs.
                p["fsGroupChangePolicy"] = json!("OnRootMismatch");
            }
            if !supplemental_groups.is_empty() {
                p["supplementalGroups"] = json!(supplemental_groups);
            }
            p
        }
    }
}

/// Create a mover for `pvc` and wait until it runs. Returns the pod name. The pod is recorded
/// in `cleanup` before it is created (an interrupted start leaves nothing unrecorded).
pub async fn start(
    client: &kube::Client,
    ns: &str,
    pvc: &str,
    dir: Direction,
    opts: &MoverOptions,
    cleanup: &Cleanup,
) -> Result<String, VolumeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = cleanup.name(Temp::Pod, ns, "lifeboat-mover-");
    let pod: Pod =
        serde_json::from_value(pod_manifest(&name, ns, pvc, dir, opts)).expect("a valid Pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(kerr(format!("create a mover pod for {ns}/{pvc}")))?;
    let deadline = Instant::now() + opts.start_timeout;
    loop {
        let p = pods
            .get(&name)
            .await
            .map_err(kerr(format!("read mover pod {ns}/{name}")))?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if phase == "Running" && ready {
            return Ok(name);
        }
        if phase == "Failed" || phase == "Succeeded" || Instant::now() > deadline {
            let why = p
                .status
                .and_then(|s| s.message.or(s.reason))
                .unwrap_or_else(|| {
                    format!(
                        "phase {}",
                        if phase.is_empty() { "Pending" } else { &phase }
                    )
                });
            stop(client, ns, &name).await;
            return Err(VolumeError::Pipeline(format!(
                "mover pod {ns}/{name} for {pvc} did not start: {why}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Delete a mover (best effort; its deadline removes it anyway).
pub async fn stop(client: &kube::Client, ns: &str, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    if let Err(e) = pods.delete(name, &dp).await {
        tracing::warn!(pod = name, error = %crate::error::display_chain(&e), "cannot delete a mover pod");
    }
}

/// The exec's final status: Success, or the failure with its message (kwok reports a non-zero
/// exit as an InternalError whose message holds the exit status).
fn status_error(
    s: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    what: &str,
) -> Result<(), VolumeError> {
    match s {
        Some(s) if s.status.as_deref() == Some("Success") => Ok(()),
        None => Err(VolumeError::Pipeline(format!(
            "{what}: the exec ended without a status"
        ))),
        Some(s) => Err(VolumeError::Pipeline(format!(
            "{what}: {}",
            s.message.unwrap_or_default()
        ))),
    }
}

/// How many times one `tar -c` runs when its stream is cut short ([`VolumeError::Truncated`]).
const TAR_OUT_ATTEMPTS: u32 = 3;

/// Run `tar -c` in the mover and hand its stdout to `consume`; then check the exec's status.
/// A stream cut short is read again from the start, up to [`TAR_OUT_ATTEMPTS`] times (what
/// the first attempt stored is deduplicated by the second).
async fn tar_out<T, F, Fut>(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    mut consume: F,
) -> Result<T, VolumeError>
where
    F: FnMut(tokio::io::ReadHalf<tokio::io::SimplexStream>) -> Fut,
    Fut: std::future::Future<Output = Result<T, VolumeError>>,
{
    let mut attempt = 1;
    loop {
        match tar_out_once(client, ns, pod, &mut consume).await {
            Err(VolumeError::Truncated(why)) if attempt < TAR_OUT_ATTEMPTS => {
                tracing::warn!(pod, attempt, %why, "the tar stream was cut short; reading the volume again");
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// One `tar -c`. When `consume` fails the remote tar may wait forever for a reader: its status
/// is not awaited long (dropping the exec stream ends it; the pod's deadline bounds the rest).
async fn tar_out_once<T, F, Fut>(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    consume: &mut F,
) -> Result<T, VolumeError>
where
    F: FnMut(tokio::io::ReadHalf<tokio::io::SimplexStream>) -> Fut,
    Fut: std::future::Future<Output = Result<T, VolumeError>>,
{
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let ap = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true)
        .max_stdout_buf_size(4 << 20);
    let mut proc = pods
        .exec(pod, ["tar", "-c", "-f", "-", "."], &ap)
        .await
        .map_err(kerr(format!("exec tar -c in {ns}/{pod}")))?;
    let stdout = proc.stdout().expect("stdout was requested");
    let stderr = proc.stderr().expect("stderr was requested");
    let status = proc.take_status().expect("status is taken once");
    let errors = tokio::spawn(read_all(stderr));
    let mut status = Box::pin(status);
    let out = match consume(stdout).await {
        Ok(out) => out,
        Err(e) => {
            // A stream that ended early: the exec's own failure is the better explanation when
            // it already has one (a stream that is still open has none yet: do not wait long).
            let st = tokio::time::timeout(Duration::from_secs(2), status.as_mut())
                .await
                .ok()
                .flatten();
            return Err(match (st, e) {
                (Some(s), VolumeError::Truncated(why))
                    if s.status.as_deref() != Some("Success") =>
                {
                    VolumeError::Truncated(format!(
                        "{why}; tar -c in {ns}/{pod}: {}",
                        s.message.unwrap_or_default()
                    ))
                }
                (Some(s), e) if s.status.as_deref() != Some("Success") => {
                    VolumeError::Pipeline(format!(
                        "tar -c in {ns}/{pod} failed ({e}): {}",
                        s.message.unwrap_or_default()
                    ))
                }
                (_, e) => e,
            });
        }
    };
    let status = final_status(status).await;
    let stderr = tokio::time::timeout(STATUS_WAIT, errors)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let _ = tokio::time::timeout(STATUS_WAIT, proc.join()).await;
    status_error(
        status,
        &format!("tar -c in {ns}/{pod} failed ({})", stderr.trim()),
    )?;
    Ok(out)
}

/// Stream the mover's volume out with `tar -c` and ingest it into the repository.
pub async fn backup(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    repo: Arc<Repository>,
    packer: Arc<Packer>,
    workers: usize,
    counters: Arc<Counters>,
) -> Result<(Vec<FileEntry>, IngestStats), VolumeError> {
    tar_out(client, ns, pod, |stdout| {
        super::ingest_tar(
            repo.clone(),
            packer.clone(),
            stdout,
            workers,
            counters.clone(),
        )
    })
    .await
}

/// The file tree of the mover's volume (`tar -c`, hashed, nothing stored).
pub async fn read_tree(
    client: &kube::Client,
    ns: &str,
    pod: &str,
) -> Result<Vec<FileEntry>, VolumeError> {
    tar_out(client, ns, pod, super::tree_of).await
}

/// Fill the mover's volume from a stored tree with `tar -x`.
pub async fn restore(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    repo: Arc<Repository>,
    entries: &[FileEntry],
    counters: Arc<Counters>,
) -> Result<(), VolumeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let ap = AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .max_stdin_buf_size(4 << 20);
    // tar reads exactly the stream: busybox tar reads to EOF, and stdin EOF does not reach
    // the container everywhere (super::tar_stream_len).
    let len = super::tar_stream_len(entries).to_string();
    let mut proc = pods
        .exec(
            pod,
            [
                "sh",
                "-c",
                "head -c \"$1\" | tar -x -p -f -",
                "sh",
                len.as_str(),
            ],
            &ap,
        )
        .await
        .map_err(kerr(format!("exec tar -x in {ns}/{pod}")))?;
    let stdin = proc.stdin().expect("stdin was requested");
    let stdout = proc.stdout().expect("stdout was requested");
    let stderr = proc.stderr().expect("stderr was requested");
    let status = proc.take_status().expect("status is taken once");
    let drain = tokio::spawn(read_all(stdout));
    let errors = tokio::spawn(read_all(stderr));
    // On an error the remote tar waits for more input (an exec's stdin EOF is not delivered
    // everywhere): do not wait for it.
    super::write_tar(repo, entries, stdin, 4, counters).await?;
    let status = final_status(status).await;
    let stderr = tokio::time::timeout(STATUS_WAIT, errors)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let _ = tokio::time::timeout(STATUS_WAIT, drain).await;
    let _ = tokio::time::timeout(STATUS_WAIT, proc.join()).await;
    status_error(
        status,
        &format!("tar -x in {ns}/{pod} failed ({})", stderr.trim()),
    )
}

/// How long to wait for an exec's final status once its data has been read or written.
const STATUS_WAIT: Duration = Duration::from_secs(120);

async fn final_status(
    status: impl std::future::Future<
        Output = Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    >,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status> {
    tokio::time::timeout(STATUS_WAIT, status)
        .await
        .ok()
        .flatten()
}

async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}
