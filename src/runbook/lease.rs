//! One run of a change at a time: a `coordination.k8s.io/v1` Lease per change (named after
//! [`super::plan::change_key`]: the runbook and its parameters, so two responders' plans of the
//! same change share it) held while a run, resume or rollback executes, renewed in the
//! background. A crashed run's lease expires after [`LEASE_SECONDS`]; a run that waits for
//! approval keeps it for [`PARKED_SECONDS`] (see [`LeaseGuard::park`]); the same run may take its
//! own lease back at once (resume after kill -9 or after approval).
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::error::Error;

pub const LEASE_SECONDS: i64 = 60;
/// How long a run awaiting approval keeps the change locked without renewing.
pub const PARKED_SECONDS: i64 = 24 * 3600;
const RENEW_EVERY: Duration = Duration::from_secs(15);

pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    holder: String,
    renew: tokio::task::JoinHandle<()>,
}

fn micro_time(t: jiff::Timestamp) -> String {
    format!(
        "{}.{:06}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S"),
        t.subsec_microsecond()
    )
}

/// The API server's clock now: the creation time of a Lease created in a dry run (nothing is
/// stored). None when the server does not answer that.
async fn server_now(api: &Api<Lease>) -> Option<jiff::Timestamp> {
    let probe: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"generateName": "lifeboat-clock-"}
    }))
    .expect("a valid Lease");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let made = api.create(&pp, &probe).await.ok()?;
    made.metadata.creation_timestamp.map(|t| t.0)
}

/// When the Lease was last written, by the API server's clock (its managed fields' times).
fn last_write(l: &Lease) -> Option<jiff::Timestamp> {
    l.metadata
        .managed_fields
        .as_ref()?
        .iter()
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()
}

pub fn lease_name(plan_hash: &str) -> String {
    let hex: String = plan_hash
        .trim_start_matches("sha256:")
        .chars()
        .take(16)
        .collect();
    format!("lifeboat-change-{hex}")
}

fn busy(msg: String) -> Error {
    Error::Runbook(msg)
}

/// Take the plan's lease for `run` (holder identity `run=<id> user=<who>`).
pub async fn acquire(
    client: &kube::Client,
    namespace: &str,
    plan_hash: &str,
    run: &str,
    who: &str,
) -> Result<LeaseGuard, Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = lease_name(plan_hash);
    let holder = format!("run={run} user={who}");
    let now = crate::faults::now();
    let body = |rv: Option<String>| -> Lease {
        serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv,
                "labels": {"app.kubernetes.io/managed-by": "lifeboat"}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": LEASE_SECONDS,
                "acquireTime": micro_time(now), "renewTime": micro_time(now)}
        }))
        .expect("a valid Lease")
    };
    let ctx = |e: kube::Error| Error::Kube {
        action: format!("take the lease {namespace}/{name} for this plan"),
        source: e,
    };
    match api.get_opt(&name).await.map_err(ctx)? {
        None => {
            api.create(&PostParams::default(), &body(None))
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) if s.code == 409 => busy(format!(
                        "another run of this plan started just now (lease {namespace}/{name})"
                    )),
                    e => ctx(e),
                })?;
        }
        Some(l) => {
            let v: Value = serde_json::to_value(&l).expect("serializes");
            let cur = v["spec"]["holderIdentity"].as_str().unwrap_or_default();
            let renewed = v["spec"]["renewTime"]
                .as_str()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok());
            let dur = v["spec"]["leaseDurationSeconds"]
                .as_i64()
                .unwrap_or(LEASE_SECONDS);
            let ours = cur.split_whitespace().next() == Some(&format!("run={run}"));
            // How long ago the holder last renewed, by the API server's clock when it can be
            // read (the renewTime in the Lease is the holder's own clock, which may be minutes
            // off this machine's: a lease still renewed must never look expired here).
            let age = match (server_now(&api).await, last_write(&l)) {
                (Some(server), Some(written)) => Some(server.duration_since(written).as_secs()),
                _ => renewed.map(|r| now.duration_since(r).as_secs()),
            };
            let expired = age.is_none_or(|a| a > dur);
            if !(cur.is_empty() || expired || ours) {
                let ago = age
                    .map(|a| format!("{a}s ago"))
                    .unwrap_or_else(|| "at an unknown time".into());
                let waiting = if dur > LEASE_SECONDS {
                    " and waits for approval: resume or roll back that run, or delete the lease by hand once it is abandoned"
                } else {
                    ""
                };
                return Err(busy(format!(
                    "this change (runbook and parameters) is being run by {cur}{waiting} (lease {namespace}/{name}, renewed {ago}); \
                     wait for it to finish, or for the lease to expire {dur}s after its holder stopped"
                )));
            }
            api.replace(
                &name,
                &PostParams::default(),
                &body(l.metadata.resource_version),
            )
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 409 => busy(format!(
                    "another run of this plan took the lease {namespace}/{name} just now"
                )),
                e => ctx(e),
            })?;
        }
    }
    let renew_api = api.clone();
    let renew_name = name.clone();
    let renew_holder = holder.clone();
    let renew = tokio::spawn(async move {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            // Renew only while the lease is still ours (resourceVersion as precondition).
            let cur = match renew_api.get(&renew_name).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %crate::error::display_chain(&e), "cannot read the plan lease");
                    continue;
                }
            };
            let holder_now = cur.spec.as_ref().and_then(|s| s.holder_identity.clone());
            if holder_now.as_deref() != Some(renew_holder.as_str()) {
                tracing::warn!(holder = ?holder_now, "the plan lease was taken over; no longer renewing it");
                return;
            }
            let patch = json!({"metadata": {"resourceVersion": cur.metadata.resource_version},
                               "spec": {"renewTime": micro_time(crate::faults::now())}});
            if let Err(e) = renew_api
                .patch(&renew_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(error = %crate::error::display_chain(&e), "cannot renew the plan lease");
            }
        }
    });
    Ok(LeaseGuard {
        api,
        name,
        holder,
        renew,
    })
}

impl LeaseGuard {
    /// Stop the background renewal; the lease as it is now, if this run still holds it.
    async fn stop_renewing(&self) -> Option<Lease> {
        self.renew.abort();
        let cur = self.api.get(&self.name).await.ok()?;
        (cur.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.holder.as_str()))
            .then_some(cur)
    }

    /// Keep the lease while the run waits for approval: renewed now for [`PARKED_SECONDS`], so
    /// no other run of the change starts; `resume` of this run takes it back.
    pub async fn park(self) {
        let Some(cur) = self.stop_renewing().await else {
            return;
        };
        let patch = json!({"metadata": {"resourceVersion": cur.metadata.resource_version},
                           "spec": {"renewTime": micro_time(crate::faults::now()),
                                    "leaseDurationSeconds": PARKED_SECONDS}});
        if let Err(e) = self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(error = %crate::error::display_chain(&e), "cannot keep the change lease while awaiting approval");
        }
    }

    /// Give the lease up (best effort: an unreleased lease expires by itself).
    /// Only a lease this run still holds is deleted (with its resourceVersion as precondition).
    pub async fn release(self) {
        let Some(cur) = self.stop_renewing().await else {
            return;
        };
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: cur.metadata.resource_version,
                uid: None,
            }),
            ..Default::default()
        };
        if let Err(e) = self.api.delete(&self.name, &dp).await {
            tracing::warn!(error = %crate::error::display_chain(&e), "cannot release the plan lease");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn micro_time_has_six_digits() {
        let t: jiff::Timestamp = "2026-11-27T04:05:06.123456789Z".parse().unwrap();
        assert_eq!(super::micro_time(t), "2026-11-27T04:05:06.123456Z");
        assert_eq!(
            super::lease_name("sha256:0123456789abcdef0123"),
            "lifeboat-change-0123456789abcdef"
        );
    }
}
