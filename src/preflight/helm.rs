//! Helm 3 releases: Secrets of type `helm.sh/release.v1` named `sh.helm.release.v1.<name>.v<rev>`
//! with labels owner=helm, name, status, version. Only the latest *deployed* revision of each
//! release is scanned. `data.release` is base64 (Helm's own, inside the Secret's) of gzip of JSON.
//! Listing is metadata-only and paginated; the chosen secrets are fetched concurrently.
use std::collections::HashMap;
use std::io::Read;

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};

use super::db::Database;
use super::manifests;
use super::version::Minor;
use super::{Finding, Source, manifest_findings};
use crate::error::Error;

#[derive(serde::Deserialize)]
struct Release {
    name: String,
    namespace: Option<String>,
    #[serde(default)]
    manifest: String,
    chart: Option<Chart>,
}

#[derive(serde::Deserialize)]
struct Chart {
    metadata: Option<ChartMeta>,
}

#[derive(serde::Deserialize)]
struct ChartMeta {
    name: Option<String>,
    version: Option<String>,
}

/// Decode a release payload (the bytes of `data.release` after the Secret's own base64).
pub fn decode_release(
    data: &[u8],
) -> Result<(String, Option<String>, Option<String>, String), String> {
    let gz = base64::engine::general_purpose::STANDARD
        .decode(data.trim_ascii())
        .map_err(|e| format!("base64: {e}"))?;
    let mut json = Vec::new();
    if gz.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut json)
            .map_err(|e| format!("gzip: {e}"))?;
    } else {
        json = gz; // very old Helm 3 releases were not compressed
    }
    let r: Release = serde_json::from_slice(&json).map_err(|e| format!("json: {e}"))?;
    let chart = r
        .chart
        .and_then(|c| c.metadata)
        .map(|m| match (m.name, m.version) {
            (Some(n), Some(v)) => format!("{n}-{v}"),
            (Some(n), None) => n,
            _ => String::new(),
        });
    Ok((r.name, r.namespace, chart, r.manifest))
}

/// Returns (findings, notes).
pub async fn scan(
    client: &kube::Client,
    db: &Database,
    target: Minor,
) -> Result<(Vec<Finding>, Vec<String>), Error> {
    let api: Api<Secret> = Api::all(client.clone());
    let mut lp = ListParams::default()
        .labels("owner=helm")
        .fields("type=helm.sh/release.v1")
        .limit(500);
    // (namespace, release) -> (revision, secret name) of the newest deployed revision
    let mut latest: HashMap<(String, String), (u64, String)> = HashMap::new();
    loop {
        let page = match api.list_metadata(&lp).await {
            Ok(p) => p,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Ok((
                    vec![],
                    vec![format!(
                        "helm: release secrets not readable ({})",
                        s.message
                    )],
                ));
            }
            Err(source) => {
                return Err(Error::Kube {
                    action: "list Helm release secrets".into(),
                    source,
                });
            }
        };
        for s in page.items {
            let labels = s.metadata.labels.unwrap_or_default();
            if labels.get("status").map(String::as_str) != Some("deployed") {
                continue;
            }
            let (Some(name), Some(rev), Some(ns), Some(secret)) = (
                labels.get("name"),
                labels.get("version").and_then(|v| v.parse::<u64>().ok()),
                s.metadata.namespace,
                s.metadata.name,
            ) else {
                continue;
            };
            let e = latest
                .entry((ns, name.clone()))
                .or_insert((rev, secret.clone()));
            if rev > e.0 {
                *e = (rev, secret);
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    let mut wanted: Vec<_> = latest.into_iter().collect();
    wanted.sort();
    let results: Vec<(Vec<Finding>, Vec<String>)> = futures::stream::iter(wanted)
        .map(|((ns, release), (_, secret))| {
            let client = client.clone();
            async move {
                let api: Api<Secret> = Api::namespaced(client, &ns);
                let s = match api.get(&secret).await {
                    Ok(s) => s,
                    Err(kube::Error::Api(e)) if e.code == 404 => return Ok((vec![], vec![])),
                    Err(source) => {
                        return Err(Error::Kube {
                            action: format!("get secret {ns}/{secret}"),
                            source,
                        });
                    }
                };
                let Some(data) = s.data.as_ref().and_then(|d| d.get("release")) else {
                    return Ok((
                        vec![],
                        vec![format!(
                            "helm release {ns}/{release}: secret has no release data"
                        )],
                    ));
                };
                let decoded = decode_release(&data.0);
                let (_, _, chart, manifest) = match decoded {
                    Ok(d) => d,
                    Err(e) => {
                        return Ok((
                            vec![],
                            vec![format!("helm release {ns}/{release}: cannot decode: {e}")],
                        ));
                    }
                };
                let scanned = manifests::ScannedFile {
                    path: format!("helm:{ns}/{release}").into(),
                    scanned: manifests::scan_text(&manifest, false),
                    read_error: None,
                };
                let mut notes = Vec::new();
                let (mut findings, _) = manifest_findings(
                    db,
                    target,
                    std::slice::from_ref(&scanned),
                    Source::Helm,
                    &mut notes,
                );
                for f in &mut findings {
                    f.file = None;
                    f.release = Some(release.clone());
                    f.chart = chart.clone();
                    // Objects without a namespace in the manifest are installed into the release's.
                    f.namespace.get_or_insert_with(|| ns.clone());
                    f.message = format!(
                        "{} (Helm release {ns}/{release}, line {} of its manifest)",
                        f.message,
                        f.line.unwrap_or(0)
                    );
                }
                Ok::<_, Error>((findings, notes))
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    for (f, n) in results {
        findings.extend(f);
        notes.extend(n);
    }
    Ok((findings, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decodes_a_helm_release_payload() {
        let json = br#"{"name":"web","namespace":"shop","manifest":"---\napiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: web\n","chart":{"metadata":{"name":"webapp","version":"1.2.3"}}}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        let (name, ns, chart, manifest) = decode_release(b64.as_bytes()).unwrap();
        assert_eq!(
            (name.as_str(), ns.as_deref(), chart.as_deref()),
            ("web", Some("shop"), Some("webapp-1.2.3"))
        );
        assert!(manifest.contains("kind: Ingress"));
        assert!(decode_release(b"!!!").is_err());
    }
}
