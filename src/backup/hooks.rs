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
//! - `dump.hook.backup.lifeboat.io/command`: a dump (its stdout, e.g. `pg_dump -Fc`, goes into
//!   the repository as a file of the backup, see [`super::dumps`]), with `…/name` (default
//!   `dump`), `…/restore-command` (fed the dump on stdin by a restore), `…/container`,
//!   `…/timeout` (default 1h), `…/on-error`.
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
    Dump,
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
    /// A dump hook's name and restore command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpSpec>,
}

/// What a dump hook adds to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpSpec {
    /// The file's name in the backup (unique per pod).
    pub name: String,
    pub restore_command: Option<Vec<String>>,
}

/// A dump name: a file name, no path.
fn check_dump_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 128
        && n != "."
        && n != ".."
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{n:?} is not a dump name (letters, digits, '.', '_', '-'; at most 128)"
        ))
    }
}

/// A command from an annotation: a JSON list, or a string run with `/bin/sh -c` (lifeboat's)
/// or as one program (Velero's, for images without a shell).
fn annotation_command(cmd: &str, shell: bool) -> Result<Vec<String>, String> {
    let command: Vec<String> = if cmd.trim_start().starts_with('[') {
        serde_json::from_str(cmd).map_err(|e| format!("not a JSON list of strings ({e})"))?
    } else if shell {
        vec!["/bin/sh".into(), "-c".into(), cmd.to_string()]
    } else {
        vec![cmd.to_string()]
    };
    if command.is_empty() {
        return Err("an empty command".into());
    }
    Ok(command)
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
    for phase in [Phase::Pre, Phase::Post, Phase::Dump] {
        let p = match phase {
            Phase::Pre => "pre",
            Phase::Post => "post",
            Phase::Dump => "dump",
        };
        let domains: &[&str] = match phase {
            Phase::Dump => &["lifeboat.io"],
            _ => &["lifeboat.io", "velero.io"],
        };
        for domain in domains {
            let key = |k: &str| format!("{p}.hook.backup.{domain}/{k}");
            let Some(cmd) = ann.get(&key("command")) else {
                continue;
            };
            let bad =
                |k: &str, what: String| format!("pod {ns}/{name}: annotation {}: {what}", key(k));
            let command =
                annotation_command(cmd, *domain == "lifeboat.io").map_err(|e| bad("command", e))?;
            let timeout = match ann.get(&key("timeout")) {
                Some(t) => crate::duration::parse(t).map_err(|e| bad("timeout", e))?,
                None if phase == Phase::Dump => Duration::from_secs(3600),
                None => Duration::from_secs(30),
            };
            let dump = if phase == Phase::Dump {
                let dname = ann
                    .get(&key("name"))
                    .cloned()
                    .unwrap_or_else(|| "dump".into());
                check_dump_name(&dname).map_err(|e| bad("name", e))?;
                let restore_command = match ann.get(&key("restore-command")) {
                    Some(c) => {
                        Some(annotation_command(c, true).map_err(|e| bad("restore-command", e))?)
                    }
                    None => None,
                };
                Some(DumpSpec {
                    name: dname,
                    restore_command,
                })
            } else {
                None
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
                declared_by: domain.to_string(),
                dump,
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
    fn dump_hooks_from_annotations_and_files() {
        let h = from_pod(&pod(&[
            ("dump.hook.backup.lifeboat.io/command", "pg_dump -Fc shop"),
            ("dump.hook.backup.lifeboat.io/name", "shop.pgdump"),
            (
                "dump.hook.backup.lifeboat.io/restore-command",
                "[\"pg_restore\", \"-d\", \"shop\"]",
            ),
            // Velero has no dump hooks: not read from its domain.
            ("dump.hook.backup.velero.io/command", "x"),
        ]))
        .unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].phase, Phase::Dump);
        assert_eq!(h[0].timeout, Duration::from_secs(3600));
        let d = h[0].dump.as_ref().unwrap();
        assert_eq!(d.name, "shop.pgdump");
        assert_eq!(
            d.restore_command.as_deref().unwrap(),
            ["pg_restore", "-d", "shop"]
        );
        let bad = from_pod(&pod(&[
            ("dump.hook.backup.lifeboat.io/command", "x"),
            ("dump.hook.backup.lifeboat.io/name", "../etc/passwd"),
        ]));
        assert!(bad.unwrap_err().contains("not a dump name"));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hooks.yaml");
        std::fs::write(
            &f,
            "apiVersion: lifeboat.io/v1\nkind: BackupHooks\nhooks:\n  - name: pg\n    dump:\n      name: a.dump\n      command: [pg_dump, -Fc]\n      restoreCommand: pg_restore -d x\n",
        )
        .unwrap();
        let rules = load(&f).unwrap();
        let mut extra = rules.for_pod(&pod(&[]), &[]);
        assert_eq!(extra.len(), 1);
        let d = extra.pop().unwrap();
        assert_eq!(d.command, ["pg_dump", "-Fc"]);
        assert_eq!(
            d.dump.unwrap().restore_command.unwrap(),
            ["/bin/sh", "-c", "pg_restore -d x"]
        );
        std::fs::write(
            &f,
            "apiVersion: lifeboat.io/v1\nkind: BackupHooks\nhooks:\n  - name: pg\n    dump:\n      name: a/b\n      command: x\n",
        )
        .unwrap();
        let e = load(&f).unwrap_err().to_string();
        assert!(
            e.contains("hooks.yaml:6:") && e.contains("not a dump name"),
            "{e}"
        );
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
    /// A dump: the command's stdout becomes a file of the backup.
    #[serde(default)]
    pub dump: Option<DumpCommand>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DumpCommand {
    /// The file's name in the backup (default `dump`).
    #[serde(default)]
    pub name: Option<String>,
    pub command: serde_json::Value,
    /// Fed the dump on stdin in the restored pod.
    #[serde(default)]
    pub restore_command: Option<serde_json::Value>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub on_error: Option<String>,
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
pub struct Rules(Vec<(HookRule, Option<crate::selector::Selector>, Vec<RuleHook>)>);

/// One command of a rule.
#[derive(Debug, Clone)]
struct RuleHook {
    phase: Phase,
    command: Vec<String>,
    timeout: Duration,
    on_error: OnError,
    dump: Option<DumpSpec>,
}

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
        let dump_cmd = r.dump.as_ref().map(|d| HookCommand {
            command: d.command.clone(),
            timeout: d.timeout.clone(),
            on_error: d.on_error.clone(),
        });
        for (phase, key, c) in [
            (Phase::Pre, "pre", &r.pre),
            (Phase::Post, "post", &r.post),
            (Phase::Dump, "dump", &dump_cmd),
        ] {
            let Some(c) = c else { continue };
            let here = |k: &str| {
                let mut p = base();
                p.push(PathElem::Key(key.into()));
                p.push(PathElem::Key(k.into()));
                p
            };
            let file_command = |v: &serde_json::Value,
                                k: &str|
             -> Result<Vec<String>, crate::error::Error> {
                let command: Vec<String> = match v {
                    serde_json::Value::String(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
                    v => serde_json::from_value(v.clone()).map_err(|_| {
                        at(here(k), format!("{k}: a list of strings or one string"))
                    })?,
                };
                if command.is_empty() {
                    return Err(at(here(k), format!("{k} is empty")));
                }
                Ok(command)
            };
            let command = file_command(&c.command, "command")?;
            let timeout = match &c.timeout {
                Some(t) => crate::duration::parse(t).map_err(|e| at(here("timeout"), e))?,
                None if phase == Phase::Dump => Duration::from_secs(3600),
                None => Duration::from_secs(30),
            };
            let dump = match (phase, &r.dump) {
                (Phase::Dump, Some(d)) => {
                    let name = d.name.clone().unwrap_or_else(|| "dump".into());
                    check_dump_name(&name).map_err(|e| at(here("name"), e))?;
                    let restore_command = match &d.restore_command {
                        Some(v) => Some(file_command(v, "restoreCommand")?),
                        None => None,
                    };
                    Some(DumpSpec {
                        name,
                        restore_command,
                    })
                }
                _ => None,
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
            cmds.push(RuleHook {
                phase,
                command,
                timeout,
                on_error,
                dump,
            });
        }
        if cmds.is_empty() {
            return Err(at(
                base(),
                format!("hook {} has none of pre, post and dump", r.name),
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
            for c in cmds {
                // A pod's own hooks win; dumps of other names add to them.
                let taken = declared.iter().chain(out.iter()).any(|h| {
                    h.phase == c.phase
                        && h.dump.as_ref().map(|d| &d.name) == c.dump.as_ref().map(|d| &d.name)
                });
                if taken {
                    continue;
                }
                out.push(Hook {
                    namespace: ns.clone(),
                    pod: name.clone(),
                    container: r.container.clone().or_else(|| first_container(pod)),
                    phase: c.phase,
                    command: c.command.clone(),
                    timeout: c.timeout,
                    on_error: c.on_error,
                    declared_by: format!("hooks file ({})", r.name),
                    dump: c.dump.clone(),
                });
            }
        }
        out
    }
}
