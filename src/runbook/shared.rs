//! The shared copy of a run's journal: a Secret `lifeboat-run-<run>` in the runbook namespace
//! (`--lease-namespace`) holding the journal and the plan copy, so any machine with access to
//! the cluster can list, resume and roll back the run. The local file stays the first copy
//! (written and fsync'd first); every record is then written to the Secret with its
//! resourceVersion as precondition. A conflict means another machine wrote the run meanwhile:
//! this process stops (fencing) instead of going on with a stale view.
//!
//! A Secret, not a ConfigMap: the journal holds prior states used by undo (redacted, but
//! operators grant Secret access more carefully than ConfigMap access). Limit: 1 MiB per run.
use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};

use crate::error::Error;

const JOURNAL_KEY: &str = "journal.jsonl";
const PLAN_KEY: &str = "plan.yaml";
const RUN_LABEL: &str = "lifeboat.io/run";
const RUNBOOK_LABEL: &str = "lifeboat.io/runbook";
/// Secrets are limited to 1 MiB; leave room for metadata.
const MAX_BYTES: usize = 900 * 1024;

/// A run's shared journal (the handle knows the last resourceVersion it wrote or read).
pub struct Shared {
    api: Api<Secret>,
    namespace: String,
    name: String,
    resource_version: Option<String>,
}

/// What a shared journal holds.
pub struct Fetched {
    pub journal: Vec<u8>,
    pub plan: Vec<u8>,
    pub handle: Shared,
}

pub fn secret_name(run: &str) -> String {
    let mut n = format!("lifeboat-run-{}", run.to_ascii_lowercase());
    n.truncate(253);
    n
}

fn kube_err(action: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

impl Shared {
    /// Create the shared journal of a new run (or one that has none yet).
    pub async fn create(
        client: &kube::Client,
        namespace: &str,
        run: &str,
        runbook: &str,
        plan: &[u8],
        journal: &[u8],
    ) -> Result<Shared, Error> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let name = secret_name(run);
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "lifeboat".to_string(),
                    ),
                    (RUN_LABEL.to_string(), label_value(run)),
                    (RUNBOOK_LABEL.to_string(), label_value(runbook)),
                ])),
                annotations: Some(BTreeMap::from([(RUN_LABEL.to_string(), run.to_string())])),
                ..Default::default()
            },
            type_: Some("lifeboat.io/run-journal".into()),
            data: Some(BTreeMap::from([
                (JOURNAL_KEY.to_string(), ByteString(journal.to_vec())),
                (PLAN_KEY.to_string(), ByteString(plan.to_vec())),
            ])),
            ..Default::default()
        };
        check_size(run, journal.len() + plan.len())?;
        let created = api
            .create(&PostParams::default(), &secret)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 403 => Error::Runbook(format!(
                    "cannot write the shared journal of run {run} (Secret {namespace}/{name}): {}; \
                     grant create/get/update/list on secrets in {namespace}, or give --no-shared-journal to keep the journal on this machine only",
                    s.message
                )),
                e => Error::Kube {
                    action: format!("create the shared journal {namespace}/{name}"),
                    source: e,
                },
            })?;
        Ok(Shared {
            api,
            namespace: namespace.into(),
            name,
            resource_version: created.metadata.resource_version,
        })
    }

    /// The shared journal of `run`, if there is one.
    pub async fn fetch(
        client: &kube::Client,
        namespace: &str,
        run: &str,
    ) -> Result<Option<Fetched>, Error> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let name = secret_name(run);
        let Some(s) = api.get_opt(&name).await.map_err(kube_err(format!(
            "read the shared journal {namespace}/{name}"
        )))?
        else {
            return Ok(None);
        };
        Ok(Some(Self::from_secret(api, namespace, s)))
    }

    fn from_secret(api: Api<Secret>, namespace: &str, s: Secret) -> Fetched {
        let data = s.data.unwrap_or_default();
        let get = |k: &str| data.get(k).map(|b| b.0.clone()).unwrap_or_default();
        Fetched {
            journal: get(JOURNAL_KEY),
            plan: get(PLAN_KEY),
            handle: Shared {
                api,
                namespace: namespace.into(),
                name: s.metadata.name.unwrap_or_default(),
                resource_version: s.metadata.resource_version,
            },
        }
    }

    /// Every shared run journal in `namespace`: (run id, journal, plan).
    pub async fn list(
        client: &kube::Client,
        namespace: &str,
    ) -> Result<Vec<(String, Fetched)>, Error> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let l = api
            .list(&ListParams::default().labels(RUN_LABEL))
            .await
            .map_err(kube_err(format!("list shared run journals in {namespace}")))?;
        Ok(l.items
            .into_iter()
            .filter_map(|s| {
                let run = s.metadata.annotations.as_ref()?.get(RUN_LABEL)?.clone();
                Some((run, Self::from_secret(api.clone(), namespace, s)))
            })
            .collect())
    }

    /// Write the whole journal (after the local file got the new record). A conflict is
    /// fencing: someone else wrote this run's journal since we last did.
    pub async fn push(&mut self, journal: &[u8]) -> Result<(), Error> {
        check_size(&self.name, journal.len())?;
        let body = serde_json::json!({
            "metadata": {"resourceVersion": self.resource_version},
            "data": {JOURNAL_KEY: ByteString(journal.to_vec())},
        });
        let mut delay = std::time::Duration::from_millis(200);
        for attempt in 0..4 {
            match self
                .api
                .patch(
                    &self.name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&body),
                )
                .await
            {
                Ok(s) => {
                    self.resource_version = s.metadata.resource_version;
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Err(Error::Runbook(format!(
                        "the shared journal {}/{} was changed by another lifeboat process since this one last wrote it: \
                         another machine is working on this run; stopping here (the local journal has every record)",
                        self.namespace, self.name
                    )));
                }
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %crate::error::display_chain(&e), "cannot write the shared journal; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    return Err(Error::Kube {
                        action: format!(
                            "write the shared journal {}/{} (the local journal has the record)",
                            self.namespace, self.name
                        ),
                        source: e,
                    });
                }
            }
        }
        unreachable!("the loop returns")
    }
}

fn check_size(what: &str, n: usize) -> Result<(), Error> {
    if n > MAX_BYTES {
        return Err(Error::Runbook(format!(
            "the journal of {what} is {n} bytes, more than a Secret can hold ({MAX_BYTES}); run with --no-shared-journal"
        )));
    }
    Ok(())
}

/// How the local journal and the shared one relate.
#[derive(Debug, PartialEq, Eq)]
pub enum Relation {
    Same,
    /// The shared copy has more records (another machine went on): take it.
    SharedAhead,
    /// The local copy has more (this machine wrote after the last successful push): push it.
    LocalAhead,
    /// This machine's last record never reached the cluster (the process stopped between its
    /// local write and the shared one), and another machine went on from the shared copy. The
    /// unshared record is safe to drop: records are shared before anything is acted on (an
    /// intent whose step never ran), or the shared copy lacks a result whose intent it has, so
    /// whoever went on treated the step as in doubt.
    SharedWon,
    Diverged,
}

/// Compare by whole lines (a torn last local line does not count).
pub fn relate(local: &[u8], shared: &[u8]) -> Relation {
    let lines = |b: &[u8]| -> Vec<Vec<u8>> {
        let keep = b.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
        b[..keep]
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (l, s) = (lines(local), lines(shared));
    let common = l.iter().zip(&s).take_while(|(a, b)| a == b).count();
    match (common == l.len(), common == s.len()) {
        (true, true) => Relation::Same,
        (true, false) => Relation::SharedAhead,
        (false, true) => Relation::LocalAhead,
        (false, false) if l.len() == common + 1 => Relation::SharedWon,
        (false, false) => Relation::Diverged,
    }
}

/// The time of a journal's last record (what a fetched copy's file time is set to, so "newest
/// first" stays the runs' order, not the order they were fetched in).
fn last_record_time(journal: &[u8]) -> Option<std::time::SystemTime> {
    let text = String::from_utf8_lossy(journal);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let t: jiff::Timestamp = v["time"].as_str()?.parse().ok()?;
    Some(std::time::SystemTime::from(t))
}

/// Write `bytes` to `path` atomically (temp file + rename), private to the owner.
pub fn write_local(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| Error::WriteFile {
        path: dir.to_owned(),
        source,
    })?;
    let tmp = path.with_extension("tmp-shared");
    let io = |source| Error::WriteFile {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    f.write_all(bytes).map_err(io)?;
    if let Some(t) = last_record_time(bytes) {
        let _ = f.set_modified(t);
    }
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_by_whole_lines() {
        assert_eq!(relate(b"a\nb\n", b"a\nb\n"), Relation::Same);
        assert_eq!(relate(b"a\n", b"a\nb\n"), Relation::SharedAhead);
        assert_eq!(relate(b"a\nb\n", b"a\n"), Relation::LocalAhead);
        assert_eq!(
            relate(b"a\nb\nc", b"a\nb\n"),
            Relation::Same,
            "torn last line"
        );
        assert_eq!(relate(b"a\nx\n", b"a\ny\n"), Relation::SharedWon);
        assert_eq!(relate(b"a\nx\nz\n", b"a\ny\n"), Relation::Diverged);
        assert_eq!(relate(b"", b"a\n"), Relation::SharedAhead);
    }

    #[test]
    fn names_and_labels_are_valid() {
        assert_eq!(
            secret_name("Cluster-Upgrade-20261203-070000-ab12"),
            "lifeboat-run-cluster-upgrade-20261203-070000-ab12"
        );
        assert_eq!(label_value("a/b c"), "a-b-c");
        assert!(label_value(&"x".repeat(100)).len() <= 63);
    }
}
