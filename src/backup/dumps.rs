//! Dump hooks: a command run in a pod's container through the API server (exec) whose stdout
//! (`pg_dump -Fc`, `mysqldump`, `redis-cli --rdb -`) is streamed straight into the repository as
//! one file of the backup: chunked, deduplicated, compressed and encrypted as it arrives, never
//! written to a local disk. A restore streams it back into the declared restore command's stdin
//! in the restored pod ([`restore_into`]).
//!
//! The command runs under a small `sh` wrapper that reports, on stderr after the command ended,
//! its exit status and how many bytes it wrote: an exec stream the API server cuts short
//! (kubernetes/kubernetes#124571) is detected by the count and read again, and a failing command
//! never yields a dump. The container needs `sh`, `tee` and `wc` (any image with a shell, busybox
//! included) and `/dev/fd`.
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};

use super::hooks::{Hook, Phase};
use crate::repo::snapshot::DumpRecord;
use crate::repo::{Packer, Repository};
use crate::volume::{Counters, VolumeError};

/// Runs `"$@"` with stdout going out through `tee` and counted by `wc -c`; afterwards reports
/// `lifeboat-dump-bytes N` and `lifeboat-dump-exit RC` on stderr and exits with RC.
const WRAPPER: &str = r#"exec 4>&1
rc=$( { { "$@"; echo "$?" >&3; } | tee /dev/fd/4 | { n=$(wc -c); echo "lifeboat-dump-bytes $n" >&2; }; } 3>&1 >/dev/null )
echo "lifeboat-dump-exit ${rc:-unknown}" >&2
case "$rc" in ''|*[!0-9]*) exit 125;; esac
exit "$rc""#;

/// How many times a dump whose stream was cut short is taken again.
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The repository failed: the whole backup fails.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The command, the exec or the stream failed: this dump is not in the backup.
    #[error("{0}")]
    Failed(String),
}

/// The dump hooks to run: one per dump name and workload (a Deployment of three replicas is
/// dumped once, from its first ready pod by name; a StatefulSet's pods likewise), each with
/// the pod's controller (`Kind/name`, a ReplicaSet's Deployment).
pub async fn select(client: &kube::Client, hooks: &[Hook]) -> Vec<(Hook, Option<String>)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut dumps: Vec<&Hook> = hooks.iter().filter(|h| h.phase == Phase::Dump).collect();
    dumps.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    let mut out = Vec::new();
    for h in dumps {
        let owner = owner_of(client, &h.namespace, &h.pod).await;
        let name = h.dump.as_ref().map(|d| d.name.clone()).unwrap_or_default();
        let who = owner.clone().unwrap_or_else(|| format!("Pod/{}", h.pod));
        if seen.insert((h.namespace.clone(), who, name)) {
            out.push((h.clone(), owner));
        }
    }
    out
}

/// The pod's controller: `Kind/name`, following a ReplicaSet to its Deployment.
async fn owner_of(client: &kube::Client, ns: &str, pod: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let p = pods.get(pod).await.ok()?;
    let c = p
        .metadata
        .owner_references?
        .into_iter()
        .find(|o| o.controller == Some(true))?;
    if c.kind == "ReplicaSet" {
        let rs: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), ns);
        if let Ok(r) = rs.get(&c.name).await
            && let Some(d) = r
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .find(|o| o.controller == Some(true))
        {
            return Some(format!("{}/{}", d.kind, d.name));
        }
    }
    Some(format!("{}/{}", c.kind, c.name))
}

/// Run one dump hook and store its output. A cut-short stream is taken again (what the first
/// attempt stored is deduplicated).
pub async fn run(
    client: &kube::Client,
    repo: Arc<Repository>,
    packer: Arc<Packer>,
    hook: &Hook,
    owner: Option<String>,
    workers: usize,
) -> Result<DumpRecord, DumpError> {
    let spec = hook.dump.clone().expect("a dump hook");
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        let r = tokio::time::timeout(
            hook.timeout,
            once(
                client,
                repo.clone(),
                packer.clone(),
                hook,
                &spec.name,
                workers,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(DumpError::Failed(format!(
                "no end within {}s",
                hook.timeout.as_secs()
            )))
        });
        match r {
            Ok((entry, None)) => {
                let trees = crate::volume::store_tree(&packer, std::slice::from_ref(&entry))
                    .await
                    .map_err(VolumeError::Repo)?;
                return Ok(DumpRecord {
                    namespace: hook.namespace.clone(),
                    pod: hook.pod.clone(),
                    container: hook.container.clone(),
                    name: spec.name.clone(),
                    owner,
                    command: hook.command.clone(),
                    restore_command: spec.restore_command.clone(),
                    bytes: entry.size,
                    hash: entry.hash.clone().unwrap_or_default(),
                    time: crate::faults::now().to_string(),
                    seconds: started.elapsed().as_secs_f64(),
                    trees,
                });
            }
            Ok((_, Some(why))) if attempt < ATTEMPTS => {
                tracing::warn!(pod = %hook.pod, attempt, %why, "a dump stream was cut short; taking the dump again");
                attempt += 1;
            }
            Ok((_, Some(why))) => return Err(DumpError::Failed(why)),
            Err(e) => return Err(e),
        }
    }
}

/// One attempt: the stored entry and, when the stream was cut short, why.
async fn once(
    client: &kube::Client,
    repo: Arc<Repository>,
    packer: Arc<Packer>,
    hook: &Hook,
    name: &str,
    workers: usize,
) -> Result<(crate::volume::FileEntry, Option<String>), DumpError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &hook.namespace);
    let mut ap = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true)
        .max_stdout_buf_size(4 << 20);
    if let Some(c) = &hook.container {
        ap = ap.container(c);
    }
    let mut command = vec![
        "sh".to_string(),
        "-c".into(),
        WRAPPER.into(),
        "lifeboat-dump".into(),
    ];
    command.extend(hook.command.iter().cloned());
    let mut proc = pods.exec(&hook.pod, command, &ap).await.map_err(|e| {
        DumpError::Failed(format!("cannot exec: {}", crate::error::display_chain(&e)))
    })?;
    let stdout = proc.stdout().expect("stdout was requested");
    let stderr = proc.stderr().expect("stderr was requested");
    let status = proc.take_status().expect("status is taken once");
    let errors = tokio::spawn(tail(stderr));
    let (entry, _) = crate::volume::ingest_stream(
        repo,
        packer,
        stdout,
        name,
        workers,
        Arc::new(Counters::default()),
    )
    .await
    .map_err(|e| match e {
        VolumeError::Repo(_) => DumpError::Volume(e),
        other => DumpError::Failed(format!("reading the dump: {other}")),
    })?;
    let status = tokio::time::timeout(Duration::from_secs(120), status)
        .await
        .ok()
        .flatten();
    let stderr = tokio::time::timeout(Duration::from_secs(30), errors)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let _ = tokio::time::timeout(Duration::from_secs(30), proc.join()).await;
    let report = parse_report(&stderr);
    let rest = report.rest.trim();
    let rest = if rest.is_empty() {
        String::new()
    } else {
        format!(": {rest}")
    };
    match report.exit.as_deref() {
        Some("0") => {}
        Some(rc) => {
            return Err(DumpError::Failed(format!(
                "the dump command exited with status {rc}{rest}"
            )));
        }
        None => {
            let why = status
                .and_then(|s| s.message)
                .unwrap_or_else(|| "ended without an exit status".into());
            return Err(DumpError::Failed(format!(
                "the dump command did not report its end ({why}; the container needs sh, tee and wc){rest}"
            )));
        }
    }
    let cut_short = match report.bytes {
        Some(n) if n == entry.size => None,
        Some(n) => Some(format!(
            "the dump stream was cut short: {} of {n} bytes arrived",
            entry.size
        )),
        None => Some("the dump command did not report how many bytes it wrote".into()),
    };
    Ok((entry, cut_short))
}

struct Report {
    bytes: Option<u64>,
    exit: Option<String>,
    /// The command's own stderr (its last lines).
    rest: String,
}

fn parse_report(stderr: &str) -> Report {
    let mut r = Report {
        bytes: None,
        exit: None,
        rest: String::new(),
    };
    let mut rest = Vec::new();
    for line in stderr.lines() {
        if let Some(n) = line.strip_prefix("lifeboat-dump-bytes ") {
            r.bytes = n.trim().parse().ok();
        } else if let Some(rc) = line.strip_prefix("lifeboat-dump-exit ") {
            r.exit = Some(rc.trim().to_string());
        } else {
            rest.push(line);
        }
    }
    r.rest = rest[rest.len().saturating_sub(3)..].join(" | ");
    r
}

/// The last 64 KiB of a stream, read to its end.
async fn tail(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    const KEEP: usize = 64 * 1024;
    let mut keep: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        keep.extend_from_slice(&buf[..n]);
        if keep.len() > 2 * KEEP {
            keep.drain(..keep.len() - KEEP);
        }
    }
    String::from_utf8_lossy(&keep).into_owned()
}

/// Stream a stored dump into `command`'s stdin in `pod` (`sh -c 'head -c N | "$@"'`: the
/// command sees end-of-file after exactly the dump, whether or not the exec's stdin close
/// reaches the container). Ok is the command's last output lines.
pub async fn restore_into(
    client: &kube::Client,
    repo: Arc<Repository>,
    dump: &DumpRecord,
    ns: &str,
    pod: &str,
    command: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let files = crate::volume::load_tree(&repo, &dump.trees)
        .await
        .map_err(|e| format!("the dump's tree: {}", crate::error::display_chain(&e)))?;
    let entry = files.into_iter().next().ok_or("the dump's tree is empty")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut ap = AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .max_stdin_buf_size(4 << 20);
    if let Some(c) = &dump.container {
        ap = ap.container(c);
    }
    let mut cmd = vec![
        "sh".to_string(),
        "-c".into(),
        "n=$1; shift; head -c \"$n\" | \"$@\"".into(),
        "lifeboat-restore".into(),
        entry.size.to_string(),
    ];
    cmd.extend(command.iter().cloned());
    let work = async {
        let mut proc = pods
            .exec(pod, cmd, &ap)
            .await
            .map_err(|e| format!("cannot exec: {}", crate::error::display_chain(&e)))?;
        let stdin = proc.stdin().expect("stdin was requested");
        let out = tokio::spawn(tail(proc.stdout().expect("stdout was requested")));
        let err = tokio::spawn(tail(proc.stderr().expect("stderr was requested")));
        let status = proc.take_status().expect("status is taken once");
        let written = crate::volume::write_file(repo.clone(), &entry, stdin, 4).await;
        let status = tokio::time::timeout(Duration::from_secs(120), status)
            .await
            .ok()
            .flatten();
        let out = out.await.unwrap_or_default();
        let err = err.await.unwrap_or_default();
        let _ = tokio::time::timeout(Duration::from_secs(30), proc.join()).await;
        written.map_err(|e| e.to_string())?;
        let last = |s: &str| {
            let l: Vec<&str> = s.trim_end().lines().collect();
            l[l.len().saturating_sub(3)..].join(" | ")
        };
        match status {
            Some(s) if s.status.as_deref() == Some("Success") => Ok(last(&out)),
            s => {
                let why = s
                    .and_then(|s| s.message)
                    .unwrap_or_else(|| "ended without an exit status".into());
                let e = last(&err);
                Err(if e.is_empty() {
                    why
                } else {
                    format!("{why}: {e}")
                })
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no end within {}s", timeout.as_secs()))?
}

/// Read a stored dump back whole and check its size and hash (what a drill does with it).
pub async fn verify(repo: Arc<Repository>, dump: &DumpRecord) -> Result<(), String> {
    let files = crate::volume::load_tree(&repo, &dump.trees)
        .await
        .map_err(|e| format!("the dump's tree: {}", crate::error::display_chain(&e)))?;
    let entry = files.into_iter().next().ok_or("the dump's tree is empty")?;
    if entry.size != dump.bytes || entry.hash.as_deref() != Some(dump.hash.as_str()) {
        return Err("the dump's tree does not match its record".into());
    }
    crate::volume::write_file(repo, &entry, tokio::io::sink(), 4)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_reports_count_and_status_and_passes_stdout_through() {
        // The wrapper itself, run by the local sh (dash or busybox on these machines).
        let run = |args: &[&str]| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(WRAPPER)
                .arg("lifeboat-dump")
                .args(args)
                .output()
                .unwrap()
        };
        let o = run(&["sh", "-c", "printf 'hello\\nworld'; echo oops >&2"]);
        assert_eq!(o.stdout, b"hello\nworld");
        let r = parse_report(&String::from_utf8_lossy(&o.stderr));
        assert_eq!(r.bytes, Some(11));
        assert_eq!(r.exit.as_deref(), Some("0"));
        assert_eq!(r.rest, "oops");
        assert!(o.status.success());
        let o = run(&["sh", "-c", "printf partial; exit 3"]);
        let r = parse_report(&String::from_utf8_lossy(&o.stderr));
        assert_eq!((r.bytes, r.exit.as_deref()), (Some(7), Some("3")));
        assert_eq!(o.status.code(), Some(3));
        let o = run(&["/no/such/program"]);
        let r = parse_report(&String::from_utf8_lossy(&o.stderr));
        assert_eq!(r.exit.as_deref(), Some("127"));
        assert!(!o.status.success());
    }
}
