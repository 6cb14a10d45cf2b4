//! Real client usage: the apiserver's `apiserver_requested_deprecated_apis` gauge (one series per
//! deprecated group/version/resource requested since the apiserver started). Needs `get` on the
//! non-resource URL `/metrics`; without it, a note says the source was not available.
use std::collections::BTreeMap;

use super::db::{self, Database, Severity};
use super::version::Minor;
use super::{Evidence, EvidenceSource, Finding, Source, Usage};

const METRIC: &str = "apiserver_requested_deprecated_apis";

/// One series: its labels.
pub fn parse(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        if value
            .trim()
            .parse::<f64>()
            .map(|v| v <= 0.0)
            .unwrap_or(true)
        {
            continue;
        }
        let mut map = BTreeMap::new();
        // label="value" pairs; values may contain escaped quotes.
        let mut s = labels;
        while let Some((k, rest)) = s.split_once("=\"") {
            let mut v = String::new();
            let mut chars = rest.char_indices();
            let mut end = rest.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(if n == 'n' { '\n' } else { n });
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            map.insert(k.trim_start_matches(',').trim().to_string(), v);
            s = &rest[end..];
        }
        out.push(map);
    }
    out
}

/// Returns (findings, notes). Never fails: metrics are a bonus source.
pub async fn scan(
    client: &kube::Client,
    db: &Database,
    target: Minor,
) -> (Vec<Finding>, Vec<String>) {
    let req = match http::Request::get("/metrics").body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return (vec![], vec![format!("metrics: {e}")]),
    };
    let text = match client.request_text(req).await {
        Ok(t) => t,
        Err(kube::Error::Api(s)) => {
            return (
                vec![],
                vec![format!(
                    "metrics: apiserver /metrics not available ({}, HTTP {}); real client usage of deprecated APIs not checked",
                    s.reason, s.code
                )],
            );
        }
        Err(e) => {
            return (
                vec![],
                vec![format!(
                    "metrics: apiserver /metrics not available ({e}); real client usage not checked"
                )],
            );
        }
    };
    let findings = parse(&text)
        .iter()
        .map(|series| series_finding(db, target, series))
        .collect();
    (findings, vec![])
}

/// The finding for one series of the metric: current use (a client requested the version since
/// the apiserver started), with the metric as its evidence.
pub fn series_finding(db: &Database, target: Minor, series: &BTreeMap<String, String>) -> Finding {
    let group = series.get("group").cloned().unwrap_or_default();
    let version = series.get("version").cloned().unwrap_or_default();
    let resource = series.get("resource").cloned().unwrap_or_default();
    let subresource = series.get("subresource").cloned().unwrap_or_default();
    let removed: Option<Minor> = series.get("removed_release").and_then(|r| r.parse().ok());
    let api_version = if group.is_empty() {
        version.clone()
    } else {
        format!("{group}/{version}")
    };
    let entry = db
        .by_group_version(&api_version)
        .find(|e| db::plural(&e.kind) == resource);
    let (severity, mut f) = match entry {
        Some(e) => {
            let sev = db::classify(e, target).unwrap_or(Severity::Info);
            let f = Finding::for_entry(Source::Metrics, e, sev, String::new());
            (sev, f)
        }
        None => {
            let sev = match removed {
                Some(r) if r <= target => Severity::Error,
                _ => Severity::Warning,
            };
            let f = Finding {
                removed_in: removed,
                ..Finding::new(Source::Metrics, resource.clone(), api_version.clone(), sev)
            };
            (sev, f)
        }
    };
    let what = if subresource.is_empty() {
        resource.clone()
    } else {
        format!("{resource}/{subresource}")
    };
    f.message = format!(
        "clients requested deprecated {api_version} {what} since the apiserver started{}",
        match removed {
            Some(r) => format!(" (removed in {r})"),
            None => String::new(),
        }
    );
    if let Some(r) = &f.replacement {
        f.message.push_str(&format!("; use {r}"));
    }
    f.severity = severity;
    f.usage = Some(Usage::Current);
    f.evidence = vec![Evidence {
        source: EvidenceSource::Metrics,
        manager: None,
        operation: None,
        time: None,
        usage: Usage::Current,
        reason: format!(
            "{METRIC} counts requests for {api_version} {what} since the apiserver started"
        ),
    }];
    f
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_series_and_skips_zero_and_other_metrics() {
        let text = "# HELP apiserver_requested_deprecated_apis [STABLE] Gauge\n\
apiserver_requested_deprecated_apis{group=\"stable.example.com\",removed_release=\"\",resource=\"widgets\",subresource=\"\",version=\"v1beta1\"} 1\n\
apiserver_requested_deprecated_apis{group=\"\",removed_release=\"1.99\",resource=\"things\",subresource=\"status\",version=\"v1\"} 0\n\
apiserver_request_total{code=\"200\"} 5\n";
        let s = super::parse(text);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["group"], "stable.example.com");
        assert_eq!(s[0]["resource"], "widgets");
        assert_eq!(s[0]["removed_release"], "");
    }

    /// Metric findings are current use, with the metric as their evidence (in the JSON).
    #[test]
    fn metric_findings_carry_their_evidence() {
        let db = crate::preflight::db::Database::embedded();
        let series = super::parse(
            "apiserver_requested_deprecated_apis{group=\"batch\",removed_release=\"1.25\",resource=\"cronjobs\",subresource=\"\",version=\"v1beta1\"} 1\n",
        );
        let f = super::series_finding(&db, super::Minor::new(1, 25), &series[0]);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["severity"], "error");
        assert_eq!(json["usage"], "current");
        assert_eq!(json["evidence"][0]["source"], "metrics");
        assert_eq!(json["evidence"][0]["usage"], "current");
    }
}
