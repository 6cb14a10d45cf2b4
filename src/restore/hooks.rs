//! Restore hooks: commands run in the restored pods once they are ready (migrations, cache
//! warm-up), declared in the pod template by `post.hook.restore.lifeboat.io/*` or Velero's
//! `post.hook.restore.velero.io/*` annotations (`command`, `container`, `exec-timeout`,
//! `wait-timeout`, `on-error`). Each outcome is an item of the restore report (kind
//! `RestoreHook`); a failing hook with `on-error: Fail` (the default) is a failed item.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::Value;

use super::{Item, Outcome};
use crate::backup::hooks::{Hook, OnError, Phase};

struct RestoreHook {
    hook: Hook,
    wait: Duration,
}

/// The restore hook a pod template declares (lifeboat's own win over Velero's).
fn declared(ann: &BTreeMap<String, String>) -> Result<Option<RestoreHook>, String> {
    for domain in ["lifeboat.io", "velero.io"] {
        let key = |k: &str| format!("post.hook.restore.{domain}/{k}");
        let Some(cmd) = ann.get(&key("command")) else {
            continue;
        };
        let command: Vec<String> = if cmd.trim_start().starts_with('[') {
            serde_json::from_str(cmd).map_err(|e| {
                format!(
                    "annotation {}: not a JSON list of strings ({e})",
                    key("command")
                )
            })?
        } else if domain == "lifeboat.io" {
            vec!["/bin/sh".into(), "-c".into(), cmd.clone()]
        } else {
            // Velero runs a plain string as one program (images without a shell).
            vec![cmd.clone()]
        };
        let dur = |k: &str, d: u64| -> Result<Duration, String> {
            match ann.get(&key(k)) {
                Some(t) => {
                    crate::duration::parse(t).map_err(|e| format!("annotation {}: {e}", key(k)))
                }
                None => Ok(Duration::from_secs(d)),
            }
        };
        let on_error = match ann
            .get(&key("on-error"))
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("fail") => OnError::Fail,
            Some("continue") => OnError::Continue,
            Some(o) => {
                return Err(format!(
                    "annotation {}: {o:?} is not Fail or Continue",
                    key("on-error")
                ));
            }
        };
        return Ok(Some(RestoreHook {
            hook: Hook {
                namespace: String::new(),
                pod: String::new(),
                container: ann.get(&key("container")).cloned(),
                phase: Phase::Post,
                command,
                timeout: dur("exec-timeout", 30)?,
                on_error,
                declared_by: domain.into(),
                dump: None,
            },
            wait: dur("wait-timeout", 300)?,
        }));
    }
    Ok(None)
}

/// A label selector (matchLabels and matchExpressions) as `kubectl -l` writes it.
pub(super) fn selector_terms(sel: Option<&Value>) -> Option<Vec<String>> {
    let sel = sel?;
    let mut out: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str()?;
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push(match e["operator"].as_str()? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    Some(out)
}

pub(super) fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub(super) fn api_of(kind: &str) -> Option<ApiResource> {
    let (group, version, plural) = match kind {
        "Deployment" => ("apps", "v1", "deployments"),
        "StatefulSet" => ("apps", "v1", "statefulsets"),
        "DaemonSet" => ("apps", "v1", "daemonsets"),
        "Pod" => ("", "v1", "pods"),
        _ => return None,
    };
    Some(ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    })
}

/// Run the restore hooks of the workloads and pods this restore created or updated.
pub async fn run(client: &kube::Client, items: &mut Vec<Item>) {
    let targets: Vec<(String, String, String)> = items
        .iter()
        .filter(|i| matches!(i.outcome, Outcome::Created | Outcome::Updated))
        .filter(|i| api_of(&i.kind).is_some())
        .filter_map(|i| Some((i.kind.clone(), i.namespace.clone()?, i.name.clone())))
        .collect();
    for (kind, ns, name) in targets {
        let ar = api_of(&kind).expect("filtered");
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        let Ok(obj) = api.get(&name).await else {
            continue;
        };
        let (ann_path, selector, want) = if kind == "Pod" {
            ("/metadata/annotations", None, 1)
        } else {
            let Some(sel) =
                selector_terms(obj.data.pointer("/spec/selector")).filter(|s| !s.is_empty())
            else {
                items.push(Item {
                    kind: "RestoreHook".into(),
                    api_version: "v1".into(),
                    namespace: Some(ns.clone()),
                    name: name.clone(),
                    outcome: Outcome::Failed,
                    message: Some(format!(
                        "{kind} {ns}/{name}: its selector cannot be read; the restore hook was not run"
                    )),
                });
                continue;
            };
            let replicas = obj
                .data
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            (
                "/spec/template/metadata/annotations",
                Some(sel.join(",")),
                replicas.max(0) as usize,
            )
        };
        let ann: BTreeMap<String, String> = if kind == "Pod" {
            obj.metadata.annotations.clone().unwrap_or_default()
        } else {
            obj.data
                .pointer(ann_path)
                .and_then(|a| serde_json::from_value(a.clone()).ok())
                .unwrap_or_default()
        };
        let mut push = |pod: &str, outcome: Outcome, message: String| {
            items.push(Item {
                kind: "RestoreHook".into(),
                api_version: "v1".into(),
                namespace: Some(ns.clone()),
                name: pod.to_string(),
                outcome,
                message: Some(message),
            })
        };
        let h = match declared(&ann) {
            Ok(Some(h)) => h,
            Ok(None) => continue,
            Err(e) => {
                push(&name, Outcome::Failed, format!("{kind} {ns}/{name}: {e}"));
                continue;
            }
        };
        if want == 0 {
            continue;
        }
        // Wait until the workload's pods are ready (all of its replicas).
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let deadline = Instant::now() + h.wait;
        let ready_pods: Vec<String> = loop {
            let found: Vec<Pod> = match &selector {
                None => pods
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .into_iter()
                    .collect(),
                Some(s) => pods
                    .list(&ListParams::default().labels(s))
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default(),
            };
            let r: Vec<String> = found
                .iter()
                .filter(|p| ready(p))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            if r.len() >= want || Instant::now() >= deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        if ready_pods.len() < want {
            let outcome = match h.hook.on_error {
                OnError::Fail => Outcome::Failed,
                OnError::Continue => Outcome::Skipped,
            };
            push(
                &name,
                outcome,
                format!(
                    "{kind} {ns}/{name}: {} of {want} pod(s) ready after {}s; the restore hook was not run",
                    ready_pods.len(),
                    h.wait.as_secs()
                ),
            );
            continue;
        }
        for pod in ready_pods {
            let mut hook = h.hook.clone();
            hook.namespace = ns.clone();
            hook.pod = pod.clone();
            match crate::backup::hooks::run(client, &hook).await {
                Ok(out) => push(&pod, Outcome::Created, format!("restore hook ran: {out}")),
                Err(e) => push(
                    &pod,
                    match hook.on_error {
                        OnError::Fail => Outcome::Failed,
                        OnError::Continue => Outcome::Skipped,
                    },
                    format!("restore hook failed: {e}"),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_keep_their_expressions_and_velero_strings_run_without_a_shell() {
        let sel = serde_json::json!({"matchLabels": {"app": "db"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]});
        assert_eq!(
            selector_terms(Some(&sel)).unwrap(),
            ["app=db", "tier in (a,b)", "!canary"]
        );
        let only_expr =
            serde_json::json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]});
        assert_eq!(selector_terms(Some(&only_expr)).unwrap(), ["app"]);
        let mut ann = BTreeMap::new();
        ann.insert(
            "post.hook.restore.velero.io/command".to_string(),
            "/migrate".to_string(),
        );
        let h = declared(&ann).unwrap().unwrap();
        assert_eq!(h.hook.command, ["/migrate"]);
        ann.insert(
            "post.hook.restore.lifeboat.io/command".to_string(),
            "echo hi".to_string(),
        );
        let h = declared(&ann).unwrap().unwrap();
        assert_eq!(h.hook.command, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(h.wait, Duration::from_secs(300));
    }
}
