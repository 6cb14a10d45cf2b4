//! Backup hooks: commands run in a pod's container through the API server (exec) before the
//! volume snapshots are taken (pre: quiesce, flush) and after (post: resume). Declared on pods
//! by annotations, lifeboat's own or Velero's (so a cluster that migrates keeps its hooks):
//!
//! - `pre.hook.backup.lifeboat.io/command` (a JSON list, or a string run with `/bin/sh -c`),
//!   `…/container` (default: the pod's first), `…/timeout` (default 30s), `…/on-error`
//!   (`Fail`, the default, or `Continue`); the same with `post.`.
//! - `pre.hook.backup.velero.io/command` (a JSON list), `…/container`, `…/timeout`,
//!   `…/on-error`, the same with `post.`. Where a pod has both, lifeboat's are used.
//!
//! Rule: a pod's post hook runs whenever its pre hook ran (also when the backup fails after it
//! or is interrupted): see [`Pending`].
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, ListParams};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pre,
    Post,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    Fail,
    Continue,
}

/// One hook of one pod.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    pub phase: Phase,
    pub command: Vec<String>,
    #[serde(skip)]
    pub timeout: Duration,
    pub on_error: OnError,
    /// `lifeboat.io` or `velero.io`: whose annotations declared it.
    pub declared_by: String,
}

/// What a hook did, for the backup report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookOutcome {
    pub namespace: String,
    pub pod: String,
    pub phase: Phase,
    pub ok: bool,
    pub message: String,
    pub time: String,
}

/// The pod's first container: the default of a hook that names none (exec needs one when the
/// pod has sidecars).
fn first_container(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .first()
        .map(|c| c.name.clone())
}

/// The hooks of a pod from its annotations; a malformed annotation is an error naming it.
pub fn from_pod(pod: &Pod) -> Result<Vec<Hook>, String> {
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    for phase in [Phase::Pre, Phase::Post] {
        let p = match phase {
            Phase::Pre => "pre",
            Phase::Post => "post",
        };
        for domain in ["lifeboat.io", "velero.io"] {
            let key = |k: &str| format!("{p}.hook.backup.{domain}/{k}");
            let Some(cmd) = ann.get(&key("command")) else {
                continue;
            };
            let at = |what: &str| format!("pod {ns}/{name}: annotation {}: {what}", key("command"));
            let command: Vec<String> = if cmd.trim_start().starts_with('[') {
                serde_json::from_str(cmd)
                    .map_err(|e| at(&format!("not a JSON list of strings ({e})")))?
            } else if domain == "lifeboat.io" {
                vec!["/bin/sh".into(), "-c".into(), cmd.clone()]
            } else {
                vec![cmd.clone()]
            };
            if command.is_empty() {
                return Err(at("an empty command"));
            }
            let timeout = match ann.get(&key("timeout")) {
                Some(t) => crate::duration::parse(t)
                    .map_err(|e| format!("pod {ns}/{name}: annotation {}: {e}", key("timeout")))?,
                None => Duration::from_secs(30),
            };
            let on_error = match ann.get(&key("on-error")).map(|s| s.to_ascii_lowercase()) {
                None => OnError::Fail,
                Some(s) if s == "fail" => OnError::Fail,
                Some(s) if s == "continue" => OnError::Continue,
                Some(s) => {
                    return Err(format!(
                        "pod {ns}/{name}: annotation {}: {s:?} is not Fail or Continue",
                        key("on-error")
                    ));
                }
            };
            out.push(Hook {
                namespace: ns.clone(),
                pod: name.clone(),
                container: ann
                    .get(&key("container"))
                    .cloned()
                    .or_else(|| first_container(pod)),
                phase,
                command,
                timeout,
                on_error,
                declared_by: domain.into(),
            });
            break; // lifeboat's own win over Velero's for the same phase
        }
    }
    Ok(out)
}

/// The hooks of the running pods in `namespaces` (all when empty) matching `selector`.
pub async fn discover(
    client: &kube::Client,
    namespaces: &[String],
    selector: Option<&str>,
    rules: &Rules,
) -> Result<Vec<Hook>, String> {
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    let mut pods = Vec::new();
    if namespaces.is_empty() {
        let api: Api<Pod> = Api::all(client.clone());
        pods.extend(
            api.list(&lp)
                .await
                .map_err(|e| crate::error::display_chain(&e))?
                .items,
        );
    } else {
        for ns in namespaces {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            pods.extend(
                api.list(&lp)
                    .await
                    .map_err(|e| crate::error::display_chain(&e))?
                    .items,
            );
        }
    }
    let mut hooks = Vec::new();
    for p in &pods {
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            && p.metadata.deletion_timestamp.is_none();
        if running {
            let declared = from_pod(p)?;
            let extra = rules.for_pod(p, &declared);
            hooks.extend(declared);
            hooks.extend(extra);
        }
    }
    Ok(hooks)
}

/// Run one hook; Err is the failure message (exit code and the end of stderr).
pub async fn run(client: &kube::Client, h: &Hook) -> Result<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &h.namespace);
    let mut ap = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true);
    if let Some(c) = &h.container {
        ap = ap.container(c);
    }
    let work = async {
        let mut proc = pods
            .exec(&h.pod, h.command.clone(), &ap)
            .await
            .map_err(|e| format!("cannot exec: {}", crate::error::display_chain(&e)))?;
        let (mut so, mut se) = (proc.stdout(), proc.stderr());
        let status = proc.take_status();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        use tokio::io::AsyncReadExt;
        // Read to the end (the exec's status comes only after its output is taken), keeping
        // the first 64 KiB.
        async fn drain<S: tokio::io::AsyncRead + Unpin>(s: &mut S, keep: &mut Vec<u8>) {
            let mut buf = [0u8; 8192];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = (64 * 1024usize).saturating_sub(keep.len());
                keep.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        let read_out = async {
            if let Some(s) = so.as_mut() {
                drain(s, &mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = se.as_mut() {
                drain(s, &mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let st = match status {
            Some(s) => s.await,
            None => None,
        };
        let _ = proc.join().await;
        Ok::<_, String>((st, out, err))
    };
    let (st, out, err) = tokio::time::timeout(h.timeout, work)
        .await
        .map_err(|_| format!("no end within {}s", h.timeout.as_secs()))??;
    let ok = st.as_ref().and_then(|s| s.status.as_deref()) == Some("Success");
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let lines: Vec<&str> = s.trim_end().lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    };
    if ok {
        Ok(tail(&out))
    } else {
        let why = st
            .and_then(|s| s.message)
            .unwrap_or_else(|| "ended without an exit status".into());
        let e = tail(&err);
        Err(if e.is_empty() {
            why
        } else {
            format!("{why}: {e}")
        })
    }
}

/// Post hooks owed: those of pods whose pre hook ran (and pods with only a post hook). Shared
/// with whoever handles Ctrl-C, so an interrupted backup still resumes the application.
#[derive(Debug, Clone, Default)]
pub struct Pending(Arc<Mutex<Vec<Hook>>>);

impl Pending {
    pub fn push(&self, h: Hook) {
        self.0.lock().expect("hooks").push(h);
    }

    fn first(&self) -> Option<Hook> {
        self.0.lock().expect("hooks").first().cloned()
    }

    fn done(&self) {
        let mut v = self.0.lock().expect("hooks");
        if !v.is_empty() {
            v.remove(0);
        }
    }

    /// Run every owed post hook (each once), returning their outcomes. One at a time, each
    /// staying owed until it has run: interrupted here (Ctrl-C), the rest still run.
    pub async fn run_all(&self, client: &kube::Client) -> Vec<HookOutcome> {
        let mut out = Vec::new();
        while let Some(h) = self.first() {
            let r = run(client, &h).await;
            self.done();
            out.push(outcome(&h, r));
        }
        out
    }
}

pub fn outcome(h: &Hook, r: Result<String, String>) -> HookOutcome {
    let (ok, message) = match r {
        Ok(m) => (true, m),
        Err(m) => (false, m),
    };
    HookOutcome {
        namespace: h.namespace.clone(),
        pod: h.pod.clone(),
        phase: h.phase,
        ok,
        message,
        time: crate::faults::now().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ann: &[(&str, &str)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "shop",
                "annotations": ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>()},
        }))
        .unwrap()
    }

    #[test]
    fn hooks_files_select_pods_and_name_file_line_col() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hooks.yaml");
        std::fs::write(
            &f,
            "apiVersion: lifeboat.io/v1\nkind: BackupHooks\nhooks:\n  - name: pg\n    namespaces: [shop]\n    labelSelector: app=db\n    pre: {command: \"psql -c checkpoint\"}\n    post: {command: [/bin/true], onError: Continue}\n",
        )
        .unwrap();
        let rules = load(&f).unwrap();
        let mut p = pod(&[("post.hook.backup.velero.io/command", "[\"/bin/echo\"]")]);
        p.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let declared = from_pod(&p).unwrap();
        let extra = rules.for_pod(&p, &declared);
        assert_eq!(extra.len(), 1, "the pod's own post hook wins: {extra:?}");
        assert_eq!(extra[0].phase, Phase::Pre);
        assert_eq!(extra[0].command, ["/bin/sh", "-c", "psql -c checkpoint"]);
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        assert!(rules.for_pod(&p, &[]).is_empty());
        std::fs::write(
            &f,
            "apiVersion: lifeboat.io/v1\nkind: BackupHooks\nhooks:\n  - name: pg\n    pre:\n      command: x\n      onError: maybe\n",
        )
        .unwrap();
        let e = load(&f).unwrap_err().to_string();
        assert!(
            e.contains("hooks.yaml:7:7") && e.contains("not Fail or Continue"),
            "{e}"
        );
        std::fs::write(&f, "apiVersion: lifeboat.io/v1\nkind: BackupHooks\nhooks:\n  - name: pg\n    pree: {command: x}\n").unwrap();
        let e = load(&f).unwrap_err().to_string();
        assert!(e.contains("hooks.yaml:5:"), "{e}");
    }

    #[test]
    fn lifeboat_and_velero_annotations() {
        let h = from_pod(&pod(&[
            (
                "pre.hook.backup.lifeboat.io/command",
                "sync; touch /data/frozen",
            ),
            ("pre.hook.backup.velero.io/command", "[\"/bin/true\"]"),
            (
                "post.hook.backup.velero.io/command",
                "[\"/bin/rm\", \"/data/frozen\"]",
            ),
            ("post.hook.backup.velero.io/on-error", "Continue"),
            ("post.hook.backup.velero.io/timeout", "2m"),
        ]))
        .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].phase, Phase::Pre);
        assert_eq!(h[0].declared_by, "lifeboat.io", "lifeboat's own win");
        assert_eq!(h[0].command, ["/bin/sh", "-c", "sync; touch /data/frozen"]);
        assert_eq!(h[1].declared_by, "velero.io");
        assert_eq!(h[1].on_error, OnError::Continue);
        assert_eq!(h[1].timeout, Duration::from_secs(120));
        let bad = from_pod(&pod(&[(
            "pre.hook.backup.velero.io/command",
            "[\"unterminated",
        )]));
        assert!(
            bad.unwrap_err()
                .contains("pre.hook.backup.velero.io/command")
        );
        let bad = from_pod(&pod(&[
            ("pre.hook.backup.lifeboat.io/command", "x"),
            ("pre.hook.backup.lifeboat.io/on-error", "maybe"),
        ]));
        assert!(bad.unwrap_err().contains("not Fail or Continue"));
    }
}

/// A hooks file (`backup create --hooks FILE`, docs/backup.md#hooks): hooks for the pods a
/// rule selects, for workloads whose pods cannot be annotated.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HooksFile {
    pub api_version: String,
    pub kind: String,
    pub hooks: Vec<HookRule>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HookRule {
    pub name: String,
    /// Namespaces of the pods (none: every backed-up namespace).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// A label selector of the pods (`app=db,tier in (primary)`).
    #[serde(default)]
    pub label_selector: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub pre: Option<HookCommand>,
    #[serde(default)]
    pub post: Option<HookCommand>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HookCommand {
    /// A list (`[/bin/sh, -c, "…"]`) or a string run with `/bin/sh -c`.
    pub command: serde_json::Value,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub on_error: Option<String>,
}

/// A checked hooks file: rules with their selectors parsed.
#[derive(Debug, Clone, Default)]
pub struct Rules(
    Vec<(
        HookRule,
        Option<crate::selector::Selector>,
        Vec<(Phase, Vec<String>, Duration, OnError)>,
    )>,
);

/// Read and check a hooks file; errors name file:line:col.
pub fn load(path: &std::path::Path) -> Result<Rules, crate::error::Error> {
    use crate::yaml::{PathElem, locate};
    let text = std::fs::read_to_string(path).map_err(|source| crate::error::Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let f: HooksFile = crate::yaml::parse(path, &text)?;
    let at = |p: Vec<PathElem>, m: String| crate::error::Error::DataFile {
        path: path.to_owned(),
        location: locate(&text, &p),
        message: m,
    };
    if f.api_version != "lifeboat.io/v1" || f.kind != "BackupHooks" {
        return Err(at(
            vec![PathElem::Key("kind".into())],
            format!(
                "expected apiVersion lifeboat.io/v1 and kind BackupHooks, got {} {}",
                f.api_version, f.kind
            ),
        ));
    }
    let mut out = Vec::new();
    for (i, r) in f.hooks.into_iter().enumerate() {
        let base = || vec![PathElem::Key("hooks".into()), PathElem::Index(i)];
        let sel = match &r.label_selector {
            Some(s) => Some(crate::selector::Selector::parse(s).map_err(|e| {
                let mut p = base();
                p.push(PathElem::Key("labelSelector".into()));
                at(p, format!("labelSelector: {e}"))
            })?),
            None => None,
        };
        let mut cmds = Vec::new();
        for (phase, key, c) in [(Phase::Pre, "pre", &r.pre), (Phase::Post, "post", &r.post)] {
            let Some(c) = c else { continue };
            let here = |k: &str| {
                let mut p = base();
                p.push(PathElem::Key(key.into()));
                p.push(PathElem::Key(k.into()));
                p
            };
            let command: Vec<String> = match &c.command {
                serde_json::Value::String(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
                v => serde_json::from_value(v.clone()).map_err(|_| {
                    at(
                        here("command"),
                        "command: a list of strings or one string".into(),
                    )
                })?,
            };
            if command.is_empty() {
                return Err(at(here("command"), "command is empty".into()));
            }
            let timeout = match &c.timeout {
                Some(t) => crate::duration::parse(t).map_err(|e| at(here("timeout"), e))?,
                None => Duration::from_secs(30),
            };
            let on_error = match c
                .on_error
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("fail") => OnError::Fail,
                Some("continue") => OnError::Continue,
                Some(o) => {
                    return Err(at(
                        here("onError"),
                        format!("onError {o:?} is not Fail or Continue"),
                    ));
                }
            };
            cmds.push((phase, command, timeout, on_error));
        }
        if cmds.is_empty() {
            return Err(at(
                base(),
                format!("hook {} has neither pre nor post", r.name),
            ));
        }
        out.push((r, sel, cmds));
    }
    Ok(Rules(out))
}

impl Rules {
    /// The file's hooks for a pod, for the phases its annotations do not already declare.
    pub fn for_pod(&self, pod: &Pod, declared: &[Hook]) -> Vec<Hook> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut out: Vec<Hook> = Vec::new();
        for (r, sel, cmds) in &self.0 {
            if !r.namespaces.is_empty() && !r.namespaces.contains(&ns) {
                continue;
            }
            if sel.as_ref().is_some_and(|s| !s.matches(&labels)) {
                continue;
            }
            for (phase, command, timeout, on_error) in cmds {
                let taken = declared.iter().chain(out.iter()).any(|h| h.phase == *phase);
                if taken {
                    continue;
                }
                out.push(Hook {
                    namespace: ns.clone(),
                    pod: name.clone(),
                    container: r.container.clone().or_else(|| first_container(pod)),
                    phase: *phase,
                    command: command.clone(),
                    timeout: *timeout,
                    on_error: *on_error,
                    declared_by: format!("hooks file ({})", r.name),
                });
            }
        }
        out
    }
}
