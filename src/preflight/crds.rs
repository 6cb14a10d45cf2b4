//! CRDs: versions that are served but marked `deprecated: true` (their custom resources must move
//! to another version), and `status.storedVersions` that still list a deprecated or unserved
//! version (objects must be migrated before that version can be dropped from the CRD).
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};

use super::db::Severity;
use super::{Finding, Source};
use crate::error::Error;

pub async fn scan(client: &kube::Client) -> Result<(Vec<Finding>, Vec<String>), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crds = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Ok((vec![], vec![format!("crds: not readable ({})", s.message)]));
        }
        Err(source) => {
            return Err(Error::Kube {
                action: "list CRDs".into(),
                source,
            });
        }
    };
    Ok((crds.iter().flat_map(crd_findings).collect(), vec![]))
}

fn finding(
    crd: &CustomResourceDefinition,
    version: &str,
    severity: Severity,
    message: String,
) -> Finding {
    let spec = &crd.spec;
    Finding {
        name: crd.metadata.name.clone(),
        replacement: spec
            .versions
            .iter()
            .find(|v| v.storage)
            .filter(|v| v.name != version)
            .map(|v| format!("{}/{}", spec.group, v.name)),
        message,
        ..Finding::new(
            Source::Crd,
            spec.names.kind.clone(),
            format!("{}/{}", spec.group, version),
            severity,
        )
    }
}

pub fn crd_findings(crd: &CustomResourceDefinition) -> Vec<Finding> {
    let mut out = Vec::new();
    let name = crd.metadata.name.clone().unwrap_or_default();
    for v in &crd.spec.versions {
        if v.served && v.deprecated == Some(true) {
            let warning = v
                .deprecation_warning
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            out.push(finding(
                crd,
                &v.name,
                Severity::Warning,
                format!("CRD {name} still serves deprecated version {}{warning}; move its custom resources and clients to another version", v.name),
            ));
        }
    }
    let stored = crd
        .status
        .as_ref()
        .and_then(|s| s.stored_versions.clone())
        .unwrap_or_default();
    for s in stored {
        let v = crd.spec.versions.iter().find(|v| v.name == s);
        let problem = match v {
            None => Some("is no longer defined"),
            Some(v) if !v.served => Some("is no longer served"),
            Some(v) if v.deprecated == Some(true) => Some("is deprecated"),
            _ => None,
        };
        if let Some(problem) = problem {
            out.push(finding(
                crd,
                &s,
                Severity::Warning,
                format!(
                    "CRD {name} lists {s} in status.storedVersions but {s} {problem}; objects may still be stored as {s}: migrate them (rewrite every object) and remove {s} from storedVersions before dropping it"
                ),
            ));
        }
    }
    out
}
