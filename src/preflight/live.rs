//! Live objects: which apiVersion did clients actually use? Read from the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation and from
//! `metadata.managedFields[].apiVersion` — not from the version the server converts to when we
//! read (that is where other tools get false positives and negatives). Only the resource types
//! whose kind appears in the database are listed, metadata-only and paginated.
use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiResource, Discovery, verbs};

use super::db::{self, Database};
use super::version::Minor;
use super::{Finding, Source, api_message};
use crate::error::Error;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const PAGE: u32 = 500;

#[derive(serde::Deserialize)]
struct LastApplied {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
}

/// Served, listable resource types whose kind has database entries.
pub async fn resources_for_kinds(
    client: &kube::Client,
    kinds: &BTreeSet<&str>,
) -> Result<Vec<ApiResource>, Error> {
    let discovery = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .map_err(|source| Error::Discovery { source })?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if kinds.contains(ar.kind.as_str()) && caps.supports_operation(verbs::LIST) {
                out.push(ar);
            }
        }
    }
    Ok(out)
}

/// Returns (findings, objects scanned, notes).
pub async fn scan(
    client: &kube::Client,
    db: &Database,
    target: Minor,
) -> Result<(Vec<Finding>, usize, Vec<String>), Error> {
    let kinds = db.kinds();
    let resources = resources_for_kinds(client, &kinds).await?;
    let mut notes = Vec::new();
    let results: Vec<_> = futures::stream::iter(resources)
        .map(|ar| async move {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let mut found = Vec::new();
            let mut scanned = 0usize;
            let mut lp = ListParams::default().limit(PAGE);
            loop {
                let page = match api.list_metadata(&lp).await {
                    Ok(p) => p,
                    // Deleted between discovery and this LIST: nothing left to scan.
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        return Ok::<_, Error>((found, scanned, None));
                    }
                    Err(kube::Error::Api(s)) if s.code == 403 => {
                        return Ok::<_, Error>((
                            found,
                            scanned,
                            Some(format!("live {}: not listed ({})", ar.plural, s.message)),
                        ));
                    }
                    Err(source) => {
                        return Err(Error::Kube {
                            action: format!("list {}", ar.plural),
                            source,
                        });
                    }
                };
                for obj in &page.items {
                    scanned += 1;
                    found.extend(object_findings(db, target, &ar.kind, &obj.metadata));
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => lp = lp.continue_token(&c),
                    None => break,
                }
            }
            Ok((found, scanned, None))
        })
        .buffer_unordered(4)
        .try_collect()
        .await?;
    let mut findings = Vec::new();
    let mut total = 0;
    for (f, n, note) in results {
        findings.extend(f);
        total += n;
        notes.extend(note);
    }
    Ok((findings, total, notes))
}

/// The findings for one object: one per old apiVersion it was written with.
pub fn object_findings(
    db: &Database,
    target: Minor,
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<Finding> {
    // apiVersion -> how we know it was used
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(la) = meta.annotations.as_ref().and_then(|a| a.get(LAST_APPLIED)) {
        if let Ok(LastApplied {
            api_version: Some(v),
        }) = serde_json::from_str::<LastApplied>(la)
        {
            used.entry(v)
                .or_default()
                .push("last-applied-configuration".into());
        }
    }
    for mf in meta.managed_fields.iter().flatten() {
        if let Some(v) = &mf.api_version {
            let by = format!(
                "managedFields (manager {})",
                mf.manager.as_deref().unwrap_or("?")
            );
            let e = used.entry(v.clone()).or_default();
            if !e.contains(&by) {
                e.push(by);
            }
        }
    }
    let mut out = Vec::new();
    for (api_version, how) in used {
        let Some(e) = db.lookup(&api_version, kind) else {
            continue;
        };
        let Some(sev) = db::classify(e, target) else {
            continue;
        };
        let mut f = Finding::for_entry(
            Source::Live,
            e,
            sev,
            format!(
                "{} (written as {api_version}: {})",
                api_message(e, sev, target),
                how.join(", ")
            ),
        );
        f.namespace = meta.namespace.clone();
        f.name = meta.name.clone();
        out.push(f);
    }
    out
}
