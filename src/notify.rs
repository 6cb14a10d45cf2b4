//! Notifications: outcomes of runbook runs (and other operations) posted to webhooks, as
//! lifeboat's JSON body or a Slack-compatible one (docs/notifications.md).
//!
//! A notification never decides an outcome: a webhook that is down or refuses is a warning,
//! retried a little, then given up. Webhook URLs are secrets (a Slack incoming-webhook URL is a
//! credential): messages name only the host.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// lifeboat's own JSON object (docs/notifications.md).
    #[default]
    Json,
    /// `{"text": "..."}`, which Slack, Mattermost and Rocket.Chat incoming webhooks take.
    Slack,
}

/// The events a runbook run sends.
pub const RUNBOOK_EVENTS: &[&str] = &[
    "awaitingApproval",
    "failed",
    "rolledBack",
    "finished",
    "item",
];

/// One webhook target: where, which body, which events (none listed: all).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    pub url: String,
    #[serde(default)]
    pub format: Format,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// What happened, as a notification carries it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Always "lifeboat".
    pub source: &'static str,
    /// runbook | backup | prune | drill
    pub kind: String,
    /// The event (for runbooks: awaitingApproval, failed, rolledBack, finished, item).
    pub event: String,
    /// The run, backup or drill id.
    pub id: String,
    /// The runbook, or what was operated on.
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub message: String,
    pub time: String,
    /// Event-specific fields (the forEach item, counts).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl Notification {
    pub fn new(kind: &str, event: &str, id: &str, name: &str, status: &str) -> Notification {
        Notification {
            source: "lifeboat",
            kind: kind.into(),
            event: event.into(),
            id: id.into(),
            name: name.into(),
            status: status.into(),
            step: None,
            message: String::new(),
            time: jiff::Timestamp::now().to_string(),
            details: Value::Null,
        }
    }

    /// The body for a format.
    pub fn body(&self, format: Format) -> Value {
        match format {
            Format::Json => serde_json::to_value(self).expect("serializes"),
            Format::Slack => {
                let icon = match self.status.as_str() {
                    "succeeded" | "passed" => ":white_check_mark:",
                    "awaiting-approval" => ":raised_hand:",
                    "rolled-back" => ":leftwards_arrow_with_hook:",
                    _ => ":x:",
                };
                let step = self
                    .step
                    .as_ref()
                    .map(|s| format!(" at step `{s}`"))
                    .unwrap_or_default();
                json!({"text": format!(
                    "{icon} lifeboat {} `{}` ({}): {}{step}{}",
                    self.kind,
                    self.name,
                    self.id,
                    self.event,
                    if self.message.is_empty() { String::new() } else { format!(" — {}", self.message) }
                )})
            }
        }
    }
}

/// Delivers one body to one URL. Contract: returns once the receiver answered 2xx (Ok) or the
/// attempt failed (Err: a message that does not contain the URL's path or query, which may
/// hold a token); never panics; bounded in time by the implementation.
pub trait Transport: Send + Sync {
    fn post(
        &self,
        url: &str,
        body: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>;
}

/// HTTP(S) POST with a 10-second limit per attempt.
pub struct Http;

/// The host of a URL, for messages (the rest may be a credential).
pub fn host_of(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .unwrap_or_else(|| "(an invalid URL)".into())
}

impl Transport for Http {
    fn post(
        &self,
        url: &str,
        body: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        let url = url.to_string();
        Box::pin(async move {
            crate::cluster::install_crypto_provider();
            let host = host_of(&url);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| format!("no TLS root certificates: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(https);
            let req = http::Request::post(&url)
                .header("content-type", "application/json")
                .header(
                    "user-agent",
                    concat!("lifeboat/", env!("CARGO_PKG_VERSION")),
                )
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .map_err(|_| format!("webhook at {host}: not a valid URL"))?;
            let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .map_err(|_| format!("webhook at {host}: no answer within 10s"))?
                .map_err(|e| {
                    // The error's text can quote the URL; say only what kind of failure.
                    let kind = if e.is_connect() {
                        "cannot connect"
                    } else {
                        "request failed"
                    };
                    format!("webhook at {host}: {kind}")
                })?;
            let s = resp.status();
            if s.is_success() {
                Ok(())
            } else {
                Err(format!("webhook at {host} answered {s}"))
            }
        })
    }
}

/// Sends notifications in the background while the operation goes on; `flush` waits for them
/// at the end (bounded), returning the warnings. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    targets: Arc<Vec<Target>>,
    transport: Arc<dyn Transport>,
    pending: Arc<Mutex<Vec<tokio::task::JoinHandle<Option<String>>>>>,
    redact: Arc<dyn Fn(&str) -> String + Send + Sync>,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox::new(
            Vec::new(),
            Arc::new(Http),
            Arc::new(|s: &str| s.to_string()),
        )
    }
}

impl Outbox {
    /// `redact` is applied to every body before it leaves (secrets in step messages).
    pub fn new(
        targets: Vec<Target>,
        transport: Arc<dyn Transport>,
        redact: Arc<dyn Fn(&str) -> String + Send + Sync>,
    ) -> Outbox {
        Outbox {
            targets: Arc::new(targets),
            transport,
            pending: Default::default(),
            redact,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Queue a notification for every target that wants its event. Needs a Tokio runtime.
    pub fn send(&self, n: &Notification) {
        for t in self.targets.iter() {
            if !t.events.is_empty() && !t.events.iter().any(|e| e == &n.event) {
                continue;
            }
            let body = (self.redact)(&n.body(t.format).to_string()).into_bytes();
            let (transport, url) = (self.transport.clone(), t.url.clone());
            let h = tokio::spawn(async move {
                let mut last = String::new();
                // Three tries, 1 s and 3 s apart: a receiver restarting is not a lost message.
                for (i, pause) in [0u64, 1, 3].into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_secs(pause)).await;
                    }
                    match transport.post(&url, body.clone()).await {
                        Ok(()) => return None,
                        Err(e) => last = e,
                    }
                }
                Some(format!("notification not delivered: {last}"))
            });
            self.pending.lock().expect("outbox").push(h);
        }
    }

    /// Wait (at most `limit`) for what was queued; the warnings of those that failed or did
    /// not finish in time.
    pub async fn flush(&self, limit: Duration) -> Vec<String> {
        let handles: Vec<_> = std::mem::take(&mut *self.pending.lock().expect("outbox"));
        let deadline = tokio::time::Instant::now() + limit;
        let mut warnings = Vec::new();
        for h in handles {
            match tokio::time::timeout_at(deadline, h).await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(w))) => warnings.push(w),
                Ok(Err(_)) => warnings.push("notification not delivered: the sender failed".into()),
                Err(_) => warnings.push("notification not delivered in time".into()),
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Record(Mutex<Vec<(String, Value)>>, bool);
    impl Transport for Record {
        fn post(
            &self,
            url: &str,
            body: Vec<u8>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>
        {
            self.0
                .lock()
                .unwrap()
                .push((url.into(), serde_json::from_slice(&body).unwrap()));
            let fail = self.1;
            Box::pin(async move { if fail { Err("refused".into()) } else { Ok(()) } })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_filter_formats_and_redaction() {
        let rec = Arc::new(Record(Mutex::new(Vec::new()), false));
        let out = Outbox::new(
            vec![
                Target {
                    url: "http://a/hook".into(),
                    format: Format::Json,
                    events: vec![],
                },
                Target {
                    url: "http://b/hook".into(),
                    format: Format::Slack,
                    events: vec!["failed".into()],
                },
            ],
            rec.clone(),
            Arc::new(|s: &str| s.replace("hunter2", "[REDACTED]")),
        );
        let mut n = Notification::new("runbook", "finished", "r1", "restore", "succeeded");
        n.message = "password hunter2 used".into();
        out.send(&n);
        let mut f = Notification::new("runbook", "failed", "r1", "restore", "failed");
        f.step = Some("scale".into());
        out.send(&f);
        assert!(out.flush(Duration::from_secs(5)).await.is_empty());
        let got = rec.0.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].1["event"], "finished");
        assert_eq!(got[0].1["message"], "password [REDACTED] used");
        assert!(got.iter().all(|(_, b)| !b.to_string().contains("hunter2")));
        let slack: Vec<_> = got.iter().filter(|(u, _)| u == "http://b/hook").collect();
        assert_eq!(slack.len(), 1);
        let text = slack[0].1["text"].as_str().unwrap();
        assert!(
            text.contains("failed") && text.contains("`scale`"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_webhook_is_a_warning_after_three_tries() {
        let rec = Arc::new(Record(Mutex::new(Vec::new()), true));
        let out = Outbox::new(
            vec![Target {
                url: "http://a/hook?token=s3cr3t".into(),
                format: Format::Json,
                events: vec![],
            }],
            rec.clone(),
            Arc::new(|s: &str| s.to_string()),
        );
        out.send(&Notification::new(
            "backup",
            "finished",
            "b1",
            "all",
            "succeeded",
        ));
        let w = out.flush(Duration::from_secs(60)).await;
        assert_eq!(w.len(), 1);
        assert_eq!(rec.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn host_only_in_messages() {
        assert_eq!(
            host_of("https://hooks.slack.com/services/T0/B0/XXXX"),
            "hooks.slack.com"
        );
        assert_eq!(host_of("not a url"), "(an invalid URL)");
    }
}
