//! Dumps back into restored applications: for each dump of the backup that declares a restore
//! command, once the workload it was taken from has been *created* by this restore and one of
//! its pods is ready, the dump is streamed from the repository into the command's stdin in that
//! pod (`pg_restore`). Each outcome is an item of the report (kind `RestoreDump`). A workload
//! that already existed (skipped or updated) never gets a dump poured into it.
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};

use super::hooks::{api_of, ready, selector_terms};
use super::{Item, Outcome};
use crate::repo::snapshot::DumpRecord;

/// How long to wait for a ready pod of the restored workload.
const WAIT: Duration = Duration::from_secs(300);
/// How long one restore command may run.
const RUN: Duration = Duration::from_secs(3600);

pub async fn run(
    client: &kube::Client,
    repo: std::sync::Arc<crate::repo::Repository>,
    dumps: &[DumpRecord],
    map_ns: &dyn Fn(&str) -> String,
    items: &mut Vec<Item>,
) {
    for d in dumps {
        let Some(command) = &d.restore_command else {
            continue;
        };
        let ns = map_ns(&d.namespace);
        let owner = d.owner.clone().unwrap_or_else(|| format!("Pod/{}", d.pod));
        let (kind, name) = owner.split_once('/').unwrap_or(("Pod", &d.pod));
        let (kind, name) = (kind.to_string(), name.to_string());
        let item = |outcome: Outcome, message: String| Item {
            kind: "RestoreDump".into(),
            api_version: "v1".into(),
            namespace: Some(ns.clone()),
            name: format!("{}:{}", d.pod, d.name),
            outcome,
            message: Some(message),
        };
        let restored = items
            .iter()
            .find(|i| i.kind == kind && i.name == name && i.namespace.as_deref() == Some(&ns))
            .map(|i| i.outcome);
        match restored {
            // Not part of this restore: not ours to touch.
            None => continue,
            Some(Outcome::Created) => {}
            Some(o) => {
                items.push(item(
                    Outcome::Skipped,
                    format!(
                        "{owner} was not created by this restore ({o:?}): its dump was not restored into it"
                    ),
                ));
                continue;
            }
        }
        let pod = match ready_pod(client, &ns, &kind, &name, &d.pod).await {
            Ok(p) => p,
            Err(e) => {
                items.push(item(Outcome::Failed, e));
                continue;
            }
        };
        let r = super::super::backup::dumps::restore_into(
            client,
            repo.clone(),
            d,
            &ns,
            &pod,
            command,
            RUN,
        )
        .await;
        items.push(match r {
            Ok(out) => item(
                Outcome::Created,
                format!("{} bytes restored into pod {pod}: {out}", d.bytes),
            ),
            Err(e) => item(
                Outcome::Failed,
                format!("restoring the dump into pod {pod} failed: {e}"),
            ),
        });
    }
}

/// A ready pod of the workload: a StatefulSet's (or a bare pod's) pod of the dumped pod's name,
/// else the first ready pod of the workload's selector.
async fn ready_pod(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
    dumped_pod: &str,
) -> Result<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let by_name = matches!(kind, "StatefulSet" | "Pod");
    let selector = if by_name {
        None
    } else {
        let ar = api_of(kind).ok_or_else(|| {
            format!("{kind}/{name}: dumps are restored into Deployments, StatefulSets, DaemonSets and pods")
        })?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let obj = api
            .get(name)
            .await
            .map_err(|e| format!("{kind}/{name}: {}", crate::error::display_chain(&e)))?;
        Some(
            selector_terms(obj.data.pointer("/spec/selector"))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{kind}/{name}: its selector cannot be read"))?
                .join(","),
        )
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<Pod> = match &selector {
            None => pods
                .get_opt(dumped_pod)
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
        let mut r: Vec<String> = found
            .iter()
            .filter(|p| ready(p))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        r.sort();
        if let Some(p) = r.into_iter().next() {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no ready pod of {kind}/{name} after {}s; the dump was not restored",
                WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
