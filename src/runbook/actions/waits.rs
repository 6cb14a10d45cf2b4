//! Waiting actions: wait, waitWorkloads, sleep.
use super::*;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaitAction {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// A condition type that must have `status` (default "True").
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// A JSONPath-style path (`.status.readyReplicas`) that must equal `value` (or exist).
    #[serde(default)]
    pub json_path: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// Wait until a Deployment/StatefulSet/DaemonSet rollout has completed.
    #[serde(default)]
    pub rollout: bool,
}

/// Wait until every Deployment, StatefulSet, DaemonSet, Job and PVC in a namespace is ready.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaitWorkloadsAction {
    pub namespace: String,
}

/// `sleep`: wait a fixed time (`duration: 30s`), e.g. for caches to settle between batches.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SleepAction {
    pub duration: String,
}

pub(super) fn condition_status(obj: &Value, ty: &str) -> Option<String> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

pub(super) fn rollout_done(kind: &str, o: &Value) -> (bool, String) {
    let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let gen_ok = n("/status/observedGeneration") >= n("/metadata/generation");
    match kind {
        "Deployment" => {
            let want = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (upd, total, avail) = (
                n("/status/updatedReplicas"),
                n("/status/replicas"),
                n("/status/availableReplicas"),
            );
            (
                gen_ok && upd == want && total == want && avail == want,
                format!("{upd}/{want} updated, {avail} available, {total} total"),
            )
        }
        "StatefulSet" => {
            let want = o
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (upd, ready) = (n("/status/updatedReplicas"), n("/status/readyReplicas"));
            let same_rev =
                o.pointer("/status/updateRevision") == o.pointer("/status/currentRevision");
            (
                gen_ok && ready == want && (upd == want || same_rev),
                format!("{upd}/{want} updated, {ready} ready"),
            )
        }
        "DaemonSet" => {
            let want = n("/status/desiredNumberScheduled");
            let (upd, avail) = (
                n("/status/updatedNumberScheduled"),
                n("/status/numberAvailable"),
            );
            (
                gen_ok && upd == want && avail == want,
                format!("{upd}/{want} updated, {avail} available"),
            )
        }
        other => (
            false,
            format!("rollout waits work for Deployment, StatefulSet and DaemonSet, not {other}"),
        ),
    }
}

pub(super) async fn wait(ctx: &Ctx<'_>, w: &WaitAction, timeout: Duration) -> R<String> {
    let what = describe_ref(&w.kind, w.namespace.as_deref(), &w.name);
    let api = dyn_api(
        &ctx.cluster.client,
        &w.api_version,
        &w.kind,
        w.namespace.as_deref(),
    )
    .await?;
    let deadline = Instant::now() + timeout;
    let goal = if let Some(c) = &w.condition {
        format!("condition {c}={}", w.status.as_deref().unwrap_or("True"))
    } else if let Some(p) = &w.json_path {
        match &w.value {
            Some(v) => format!("{p} = {v}"),
            None => format!("{p} to exist"),
        }
    } else {
        "rollout to complete".to_string()
    };
    let mut last = String::from("not found yet");
    loop {
        let got = match api.get_opt(&w.name).await {
            Ok(o) => o,
            // A restarting API server is not the answer: keep waiting until the timeout.
            Err(e) if transient(&e) && !ctx.dry_run && Instant::now() < deadline => {
                last = format!("cannot read it: {}", kerr(e));
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(format!("{what}: {}", kerr(e))),
        };
        if let Some(obj) = got {
            let o = serde_json::to_value(obj).expect("serializes");
            let (ok, now) = if let Some(c) = &w.condition {
                let want = w.status.as_deref().unwrap_or("True");
                let got = condition_status(&o, c);
                (
                    got.as_deref() == Some(want),
                    format!("{c} is {}", got.as_deref().unwrap_or("absent")),
                )
            } else if let Some(p) = &w.json_path {
                let got = crate::drill::spec::json_path(&o, p).map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                });
                let ok = match (&got, &w.value) {
                    (Some(g), Some(want)) => g == want,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                (ok, format!("{p} is {}", got.as_deref().unwrap_or("absent")))
            } else {
                rollout_done(&w.kind, &o)
            };
            if ok {
                return Ok(format!("{what}: {goal}"));
            }
            last = now;
        }
        if ctx.dry_run {
            return Ok(format!("{what}: would wait for {goal} (now: {last})"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {}s waiting for {what}: {goal} (last seen: {last})",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

pub(super) async fn wait_workloads(ctx: &Ctx<'_>, ns: &str, timeout: Duration) -> R<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let unready = crate::drill::readiness(&ctx.cluster.client, ns)
            .await
            .map_err(|e| crate::error::display_chain(&e))?;
        if unready.is_empty() {
            return Ok(format!("every workload in namespace {ns} is ready"));
        }
        if ctx.dry_run {
            return Ok(format!("would wait for {}", unready.join(", ")));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {}s; not ready in {ns}: {}",
                timeout.as_secs(),
                unready.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

impl Act for WaitAction {
    fn validate(&self) -> R<()> {
        let n =
            self.condition.is_some() as u8 + self.json_path.is_some() as u8 + self.rollout as u8;
        if n != 1 {
            return Err(
                "wait needs exactly one of `condition`, `jsonPath` and `rollout: true`".into(),
            );
        }
        Ok(())
    }
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        let w = self;
        Ok(format!(
            "wait for {} {}",
            describe_ref(&w.kind, w.namespace.as_deref(), &w.name),
            if w.rollout {
                "rollout".to_string()
            } else if let Some(c) = &w.condition {
                format!("condition {c}")
            } else {
                w.json_path.clone().unwrap_or_default()
            }
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome> {
        Ok(Outcome {
            summary: wait(ctx, self, timeout).await?,
            ..Default::default()
        })
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("wait")
    }
}

impl Act for WaitWorkloadsAction {
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!(
            "wait until every workload in namespace {} is ready",
            self.namespace
        ))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome> {
        Ok(Outcome {
            summary: wait_workloads(ctx, &self.namespace, timeout).await?,
            ..Default::default()
        })
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("waitWorkloads")
    }
}

impl Act for SleepAction {
    fn validate(&self) -> R<()> {
        if crate::runbook::template::is_template(&self.duration) {
            return Ok(());
        }
        crate::duration::parse(&self.duration).map(|_| ())
    }
    fn reversibility(&self) -> Reversibility {
        Reversibility::ReadOnly
    }
    fn safe_to_repeat(&self) -> bool {
        true
    }
    async fn preview(&self, _ctx: &Ctx<'_>) -> R<String> {
        Ok(format!("sleep {}", self.duration))
    }
    async fn capture_before(&self, _ctx: &Ctx<'_>) -> R<Option<Value>> {
        Ok(None)
    }
    async fn execute(&self, ctx: &Ctx<'_>, timeout: Duration) -> R<Outcome> {
        let d = crate::duration::parse(&self.duration)?;
        if d > timeout {
            return Err(format!(
                "sleep {} is longer than the step timeout ({}s); raise `timeout`",
                self.duration,
                timeout.as_secs()
            ));
        }
        if ctx.dry_run {
            return Ok(Outcome {
                summary: format!("would sleep {}", self.duration),
                ..Default::default()
            });
        }
        tokio::time::sleep(d).await;
        Ok(Outcome {
            summary: format!("slept {}", self.duration),
            ..Default::default()
        })
    }
    async fn undo(_ctx: &Ctx<'_>, _before: &Value) -> R<String> {
        not_undoable("sleep")
    }
}
