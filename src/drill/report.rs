//! Drill reports: terminal summary, JUnit XML (one test case per check), Prometheus text format
//! (node-exporter textfile collector, written atomically; or pushed to a Pushgateway).
use std::io::Write;
use std::path::Path;

use super::{CheckResult, DrillReport, Status, check, spec::CommandCheck};
use crate::error::Error;

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

pub fn junit(r: &DrillReport) -> String {
    let failures = r.failed_checks();
    let skipped = r
        .checks
        .iter()
        .filter(|c| c.status == Status::Skipped)
        .count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(&format!(
        "<testsuites name=\"lifeboat drill\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
        r.checks.len(),
        r.duration_seconds
    ));
    s.push_str(&format!(
        "  <testsuite name=\"drill {} of backup {}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" errors=\"0\" timestamp=\"{}\" time=\"{:.3}\">\n",
        xml_escape(&r.drill_id),
        xml_escape(&r.backup_id[..r.backup_id.len().min(8)]),
        r.checks.len(),
        xml_escape(&r.started),
        r.duration_seconds
    ));
    for c in &r.checks {
        // The source namespace, not the scratch one: CI test history matches across runs.
        let class = match &c.namespace {
            Some(ns) => format!(
                "drill.{}",
                r.namespaces
                    .iter()
                    .find(|m| &m.scratch == ns)
                    .map(|m| m.source.as_str())
                    .unwrap_or(ns)
            ),
            None => "drill".into(),
        };
        s.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"0\">",
            xml_escape(&class),
            xml_escape(&c.name)
        ));
        match c.status {
            Status::Pass => s.push_str(&format!(
                "<system-out>{}</system-out>",
                xml_escape(&c.message)
            )),
            Status::Fail => s.push_str(&format!(
                "<failure message=\"{}\" type=\"check\">{}</failure>",
                xml_escape(&c.message),
                xml_escape(&c.message)
            )),
            Status::Skipped => s.push_str(&format!(
                "<skipped message=\"{}\"/>",
                xml_escape(&c.message)
            )),
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format. `last_success` holds, per source namespace, the time of
/// the newest passed drill (now if this one passed, else the value carried over from the
/// previous file for the same cluster and namespace).
pub fn metrics(r: &DrillReport, last_success: &std::collections::BTreeMap<String, f64>) -> String {
    let mut s = String::new();
    let ns_labels: Vec<String> = r.namespaces.iter().map(|m| m.source.clone()).collect();
    let series = |name: &str, help: &str, value: String, s: &mut String| {
        s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for ns in &ns_labels {
            s.push_str(&format!(
                "{name}{{cluster=\"{}\",namespace=\"{}\"}} {value}\n",
                label(&r.cluster),
                label(ns)
            ));
        }
    };
    series(
        "lifeboat_drill_success",
        "1 if the last restore drill passed, else 0.",
        if r.passed { "1".into() } else { "0".into() },
        &mut s,
    );
    series(
        "lifeboat_drill_duration_seconds",
        "Duration of the last restore drill.",
        format!("{:.3}", r.duration_seconds),
        &mut s,
    );
    if !last_success.is_empty() {
        let name = "lifeboat_drill_last_success_timestamp_seconds";
        s.push_str(&format!(
            "# HELP {name} Unix time of the last passed restore drill.\n# TYPE {name} gauge\n"
        ));
        for ns in &ns_labels {
            if let Some(t) = last_success.get(ns) {
                s.push_str(&format!(
                    "{name}{{cluster=\"{}\",namespace=\"{}\"}} {t:.0}\n",
                    label(&r.cluster),
                    label(ns)
                ));
            }
        }
    }
    series(
        "lifeboat_drill_checks_failed",
        "Checks that failed in the last restore drill.",
        r.failed_checks().to_string(),
        &mut s,
    );
    series(
        "lifeboat_drill_rto_seconds",
        "Seconds from restore start until all restored workloads were ready (NaN: never).",
        r.rto_seconds
            .map(|v| format!("{v:.3}"))
            .unwrap_or_else(|| "NaN".into()),
        &mut s,
    );
    series(
        "lifeboat_backup_age_seconds",
        "Age of the backup the last drill restored.",
        format!("{:.0}", r.backup_age_seconds),
        &mut s,
    );
    s
}

/// The labels of one sample line `name{a="x",b="y"} value`.
pub(crate) fn sample_labels(line: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Some(inner) = line
        .split_once('{')
        .and_then(|(_, r)| r.rsplit_once('}'))
        .map(|(l, _)| l)
    else {
        return out;
    };
    for pair in inner.split("\",") {
        if let Some((k, v)) = pair.split_once("=\"") {
            out.insert(
                k.trim_start_matches(',').trim().to_string(),
                v.trim_end_matches('"')
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\"),
            );
        }
    }
    out
}

/// The previous file's last-success timestamp of (cluster, namespace).
fn previous_last_success(path: &Path, cluster: &str, ns: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter(|l| l.starts_with("lifeboat_drill_last_success_timestamp_seconds{"))
        .find(|l| {
            let labels = sample_labels(l);
            labels.get("cluster").map(String::as_str) == Some(cluster)
                && labels.get("namespace").map(String::as_str) == Some(ns)
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Per source namespace: now when this drill passed, else what the previous file said.
pub fn last_success(
    r: &DrillReport,
    metrics_file: Option<&Path>,
) -> std::collections::BTreeMap<String, f64> {
    let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    r.namespaces
        .iter()
        .filter_map(|m| {
            let t = if r.passed {
                Some(now)
            } else {
                metrics_file.and_then(|p| previous_last_success(p, &r.cluster, &m.source))
            };
            t.map(|t| (m.source.clone(), t))
        })
        .collect()
}

/// Write atomically: a temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, content: &str) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("lifeboat"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::ReadFile {
            path: path.to_owned(),
            source,
        }
    })
}

/// Push the metrics to a Pushgateway (`PUT <url>/metrics/job/lifeboat_drill/cluster/<cluster>`,
/// replacing the group). Plain `http://` only: Pushgateways are usually reached in-cluster.
pub async fn push(url: &str, cluster: &str, body: &str) -> Result<(), Error> {
    push_job(url, "lifeboat_drill", cluster, body).await
}

/// The same for another job (`lifeboat_backup`, `lifeboat_prune`).
pub async fn push_job(url: &str, job: &str, cluster: &str, body: &str) -> Result<(), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad = |m: String| Error::Usage(format!("--pushgateway {url}: {m}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported".into()))?;
    let (hostport, base) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let base = base.trim_end_matches('/');
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let path = format!("{base}/metrics/job/{job}/cluster/{}", urlencode(cluster));
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .map_err(|_| bad("timed out".into()))?
        .map_err(|e| bad(e.to_string()))?;
    let status_line = String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    match status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(c) if (200..300).contains(&c) => Ok(()),
        _ => Err(bad(format!("answered {status_line:?}"))),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Run a command check: exec in the first running pod matching the selector.
pub async fn exec_check(client: &kube::Client, ns: &str, c: &CommandCheck) -> CheckResult {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{AttachParams, ListParams};
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), ns);
    let list = match pods.list(&ListParams::default().labels(&c.selector)).await {
        Ok(l) => l.items,
        Err(e) => {
            return check(
                &c.name,
                Some(ns),
                Status::Fail,
                format!(
                    "list pods {}: {}",
                    c.selector,
                    crate::error::display_chain(&e)
                ),
            );
        }
    };
    let Some(pod) = list
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    else {
        return check(
            &c.name,
            Some(ns),
            Status::Fail,
            format!("no running pod matches {}", c.selector),
        );
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut ap = AttachParams::default().stdout(true).stderr(true);
    if let Some(ct) = &c.container {
        ap = ap.container(ct);
    }
    let run = async {
        let mut proc = pods.exec(&name, c.command.clone(), &ap).await?;
        let status = match proc.take_status() {
            Some(st) => st.await,
            None => None,
        };
        let _ = proc.join().await;
        Ok::<_, kube::Error>(status)
    };
    match tokio::time::timeout(super::spec::CHECK_TIMEOUT, run).await {
        Err(_) => check(
            &c.name,
            Some(ns),
            Status::Skipped,
            format!(
                "not run: no answer from pod {name} within {}s",
                super::spec::CHECK_TIMEOUT.as_secs()
            ),
        ),
        Ok(Err(e)) => check(
            &c.name,
            Some(ns),
            Status::Skipped,
            format!(
                "not run: the cluster cannot exec in pod {name}: {}",
                crate::error::display_chain(&e)
            ),
        ),
        Ok(Ok(Some(s))) if s.status.as_deref() == Some("Success") => check(
            &c.name,
            Some(ns),
            Status::Pass,
            format!("{:?} succeeded in pod {name}", c.command),
        ),
        // The command ran and exited non-zero: a real failure.
        Ok(Ok(Some(s))) if s.reason.as_deref() == Some("NonZeroExitCode") => check(
            &c.name,
            Some(ns),
            Status::Fail,
            format!(
                "{:?} failed in pod {name}: {}",
                c.command,
                s.message.unwrap_or_default()
            ),
        ),
        // Anything else means the command could not be run at all.
        Ok(Ok(Some(s))) => {
            let why = [s.reason.unwrap_or_default(), s.message.unwrap_or_default()]
                .into_iter()
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            check(
                &c.name,
                Some(ns),
                Status::Skipped,
                format!(
                    "not run in pod {name}: {}",
                    if why.is_empty() {
                        "the cluster gave no reason".into()
                    } else {
                        why
                    }
                ),
            )
        }
        Ok(Ok(None)) => check(
            &c.name,
            Some(ns),
            Status::Skipped,
            format!("not run: no exit status from pod {name}"),
        ),
    }
}

impl crate::output::Render for DrillReport {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(
            w,
            "drill {} of backup {} ({:.1} h old): {}",
            self.drill_id,
            &self.backup_id[..8],
            self.backup_age_seconds / 3600.0,
            if self.passed { "PASSED" } else { "FAILED" }
        )?;
        for m in &self.namespaces {
            writeln!(w, "  {} → {}", m.source, m.scratch)?;
        }
        for c in &self.checks {
            let st = match c.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
                Status::Skipped => "SKIP",
            };
            let ns = c
                .namespace
                .as_ref()
                .map(|n| format!(" [{n}]"))
                .unwrap_or_default();
            writeln!(w, "{st:<5} {}{ns}: {}", c.name, c.message)?;
        }
        writeln!(
            w,
            "restore {:.1}s, ready {}, total {:.1}s; {}",
            self.restore_seconds,
            self.rto_seconds
                .map(|r| format!("after {r:.1}s"))
                .unwrap_or_else(|| "never".into()),
            self.duration_seconds,
            self.cleanup
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sample_labels_parse() {
        let l = super::sample_labels(
            r#"lifeboat_drill_success{cluster="https://a:1",namespace="shop"} 1"#,
        );
        assert_eq!(l["cluster"], "https://a:1");
        assert_eq!(l["namespace"], "shop");
    }
}
