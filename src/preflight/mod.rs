//! `lifeboat preflight`: "if I upgrade to 1.N, what breaks?" in one report.
//!
//! Sources of findings (each finding names its source): manifests on disk or stdin, live objects
//! (the apiVersion clients actually used: last-applied annotation and managedFields), Helm
//! release secrets, the apiserver's `apiserver_requested_deprecated_apis` metric, and CRDs.
//! Checks: control-plane upgrade path, component and node version skew, PDBs that block drains,
//! fail-closed webhooks without endpoints, NotReady or cordoned nodes. Output schema:
//! docs/preflight.md.
use std::path::PathBuf;

use serde::Serialize;

pub mod checks;
pub mod crds;
pub mod db;
pub mod fastpath;
pub mod helm;
pub mod live;
pub mod manifests;
pub mod metrics;
mod render;
pub mod version;

use crate::cluster::{self, ClusterOptions};
use crate::error::{Error, Exit};
use db::{Database, Entry, Severity};
use version::Minor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    Removed,
    Deprecated,
    None,
}

#[derive(Debug, Clone)]
pub struct PreflightOptions {
    pub target: Option<Minor>,
    /// Node-upgrade mode (`--nodes-to 1.N`): the control plane must already be at N (kubelets
    /// may never be newer than the API server); skew is checked against the API server now.
    pub nodes_to: Option<Minor>,
    pub manifests: Vec<PathBuf>,
    /// `None`: on when a cluster is used.
    pub helm: Option<bool>,
    pub no_cluster: bool,
    pub fail_on: FailOn,
    pub api_data: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Manifest,
    Live,
    Helm,
    Metrics,
    Crd,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub source: Source,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub release: Option<String>,
    pub chart: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub kind: String,
    pub api_version: String,
    pub deprecated_in: Option<Minor>,
    pub removed_in: Option<Minor>,
    pub replacement: Option<String>,
    pub replacement_available_in: Option<Minor>,
    pub severity: Severity,
    pub message: String,
    /// Live and metrics findings: is the old apiVersion in use today (`current`) or only a trace
    /// of the past (`historical`, reported as `info`)? `None` for the other sources.
    pub usage: Option<Usage>,
    /// How the use of the apiVersion was seen (live and metrics findings).
    pub evidence: Vec<Evidence>,
}

/// Whether evidence shows use of an apiVersion today or only in the past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    Historical,
    Current,
}

/// Where a use of an apiVersion was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EvidenceSource {
    /// The object's `kubectl.kubernetes.io/last-applied-configuration` annotation.
    LastApplied,
    /// One `metadata.managedFields` entry.
    ManagedFields,
    /// The apiserver's `apiserver_requested_deprecated_apis` metric.
    Metrics,
}

/// One piece of evidence that an apiVersion was used, and how it was classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub source: EvidenceSource,
    /// managedFields: the field manager, its operation (`Update`/`Apply`) and its timestamp.
    pub manager: Option<String>,
    pub operation: Option<String>,
    pub time: Option<String>,
    pub usage: Usage,
    /// Why it is `current` or `historical`.
    pub reason: String,
}

impl Finding {
    /// A finding with only its source, type and severity set; callers fill in the rest.
    pub fn new(source: Source, kind: String, api_version: String, severity: Severity) -> Finding {
        Finding {
            source,
            file: None,
            line: None,
            release: None,
            chart: None,
            namespace: None,
            name: None,
            kind,
            api_version,
            deprecated_in: None,
            removed_in: None,
            replacement: None,
            replacement_available_in: None,
            severity,
            message: String::new(),
            usage: None,
            evidence: Vec::new(),
        }
    }

    /// A finding for an object that uses a database entry's API version.
    pub fn for_entry(source: Source, e: &Entry, severity: Severity, message: String) -> Finding {
        Finding {
            deprecated_in: Some(e.deprecated_in),
            removed_in: e.removed_in,
            replacement: e.replacement.clone(),
            replacement_available_in: e.replacement_available_in,
            message,
            ..Finding::new(source, e.kind.clone(), e.api_version(), severity)
        }
    }
}

/// Message for an API-version finding.
pub fn api_message(e: &Entry, severity: Severity, target: Minor) -> String {
    let what = match (severity, e.removed_in) {
        (Severity::Error, Some(r)) => format!("{} {} was removed in {r}", e.api_version(), e.kind),
        (_, Some(r)) => format!(
            "{} {} is deprecated since {} and removed in {r}",
            e.api_version(),
            e.kind,
            e.deprecated_in
        ),
        (_, None) => format!(
            "{} {} is deprecated since {}",
            e.api_version(),
            e.kind,
            e.deprecated_in
        ),
    };
    let mut todo = match (&e.replacement, e.replacement_available_in) {
        (Some(r), Some(since)) => format!("; use {r} (available since {since})"),
        (Some(r), None) => format!("; use {r}"),
        (None, _) => "; no replacement API".into(),
    };
    if let Some(n) = &e.note {
        todo.push_str(&format!(" ({n})"));
    }
    let _ = target;
    format!("{what}{todo}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub message: String,
    pub objects: Vec<String>,
}

impl Check {
    pub fn new(
        name: &str,
        status: CheckStatus,
        message: impl Into<String>,
        objects: Vec<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status,
            message: message.into(),
            objects,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub target: Minor,
    /// Node-upgrade mode (`--nodes-to`): `target` is the nodes' target.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub node_upgrade: bool,
    pub server_version: Option<String>,
    pub database_version: Option<String>,
    pub findings: Vec<Finding>,
    pub checks: Vec<Check>,
    /// Things the reader should know: sources that were not available, unparseable documents.
    pub notes: Vec<String>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    pub checks_failed: usize,
    pub checks_warned: usize,
    pub files_scanned: usize,
    pub objects_scanned: usize,
}

impl Summary {
    /// Count the findings by severity and the failed and warned checks.
    pub fn tally(&mut self, findings: &[Finding], checks: &[Check]) {
        for f in findings {
            match f.severity {
                Severity::Error => self.errors += 1,
                Severity::Warning => self.warnings += 1,
                Severity::Info => self.infos += 1,
            }
        }
        self.checks_failed = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .count();
        self.checks_warned = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Warn)
            .count();
    }
}

impl Report {
    /// The exit code (pluto-compatible): 3 removed APIs or failed blocker checks, 2 deprecated
    /// APIs or warned checks with `--fail-on deprecated`, else 0.
    pub fn exit(&self, fail_on: FailOn) -> Exit {
        let blocking = self.summary.errors > 0 || self.summary.checks_failed > 0;
        let warning = self.summary.warnings > 0 || self.summary.checks_warned > 0;
        match fail_on {
            FailOn::None => Exit::Success,
            FailOn::Removed if blocking => Exit::Blocked,
            FailOn::Deprecated if blocking => Exit::Blocked,
            FailOn::Deprecated if warning => Exit::Findings,
            _ => Exit::Success,
        }
    }
}

/// Build the database: embedded + `--api-data` files.
pub fn database(extra: &[PathBuf]) -> Result<Database, Error> {
    let mut db = Database::embedded();
    for p in extra {
        db.load_extra(p)?;
    }
    Ok(db)
}

/// Turn scanned manifest objects into findings.
pub fn manifest_findings(
    db: &Database,
    target: Minor,
    files: &[manifests::ScannedFile],
    source: Source,
    notes: &mut Vec<String>,
) -> (Vec<Finding>, usize) {
    let mut out = Vec::new();
    let mut objects = 0;
    for f in files {
        let shown = if f.path.as_os_str() == "-" {
            "(stdin)".to_string()
        } else {
            f.path.display().to_string()
        };
        if let Some(e) = &f.read_error {
            notes.push(format!("{shown}: cannot read: {e}"));
        }
        for p in &f.scanned.problems {
            notes.push(format!(
                "{shown}:{}:{}: document skipped, does not parse: {}",
                p.line, p.column, p.message
            ));
        }
        for o in &f.scanned.objects {
            objects += 1;
            let Some(e) = db.lookup(&o.api_version, &o.kind) else {
                continue;
            };
            let Some(sev) = db::classify(e, target) else {
                continue;
            };
            let mut finding = Finding::for_entry(source, e, sev, api_message(e, sev, target));
            finding.file = Some(shown.clone());
            finding.line = Some(o.line);
            finding.name = o.name.clone();
            finding.namespace = o.namespace.clone();
            out.push(finding);
        }
    }
    (out, objects)
}

/// Run the preflight. Never prints; `stdin` is read only when a manifest path is "-".
pub async fn preflight(
    opts: &PreflightOptions,
    cluster_opts: &ClusterOptions,
) -> Result<Report, Error> {
    let db = database(&opts.api_data)?;
    let mut notes = Vec::new();
    let mut findings = Vec::new();
    let mut checks = Vec::new();

    // The cluster, unless told not to use one. Unreachable is not fatal when a target is given.
    let mut server: Option<(
        cluster::Cluster,
        k8s_openapi::apimachinery::pkg::version::Info,
    )> = None;
    if !opts.no_cluster {
        let mut copts = cluster_opts.clone();
        copts
            .connect_timeout
            .get_or_insert(std::time::Duration::from_secs(5));
        match cluster::connect(&copts).await {
            Ok(c) => match c.client.apiserver_version().await {
                Ok(info) => server = Some((c, info)),
                Err(source) => {
                    let e = crate::error::cluster_error(&c.server, source);
                    if opts.target.is_none() {
                        return Err(Error::NeedTarget {
                            reason: crate::error::display_chain(&e),
                        });
                    }
                    notes.push(format!(
                        "{}; only manifests were scanned",
                        crate::error::display_chain(&e)
                    ));
                }
            },
            Err(e) => {
                if opts.target.is_none() {
                    return Err(Error::NeedTarget {
                        reason: crate::error::display_chain(&e),
                    });
                }
                notes.push(format!(
                    "{}; only manifests were scanned",
                    crate::error::display_chain(&e)
                ));
            }
        }
    } else if opts.target.is_none() {
        return Err(Error::NeedTarget {
            reason: "no cluster is used (--no-cluster)".into(),
        });
    }

    let current = server.as_ref().and_then(|(_, i)| {
        Minor::from_parts(&i.major, &i.minor).or_else(|| i.git_version.parse().ok())
    });
    if opts.nodes_to.is_some() && server.is_none() {
        return Err(Error::Usage(
            "--nodes-to needs the cluster: it compares the nodes with the API server".into(),
        ));
    }
    let target = match (opts.nodes_to.or(opts.target), current) {
        (Some(t), _) => t,
        (None, Some(c)) => c.next(),
        (None, None) => {
            return Err(Error::NeedTarget {
                reason: "the server version could not be read".into(),
            });
        }
    };

    // Manifests (CPU-bound: off the async threads).
    let mut summary = Summary::default();
    if !opts.manifests.is_empty() {
        let files = manifests::expand(&opts.manifests)
            .map_err(|(path, source)| Error::ReadFile { path, source })?;
        let stdin_text = if files.iter().any(|p| p.as_os_str() == "-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|source| {
                Error::ReadFile {
                    path: "-".into(),
                    source,
                }
            })?;
            Some(s)
        } else {
            None
        };
        summary.files_scanned = files.len();
        let scanned =
            tokio::task::block_in_place(|| manifests::scan_files(&files, stdin_text.as_deref()));
        let (f, n) = manifest_findings(&db, target, &scanned, Source::Manifest, &mut notes);
        summary.objects_scanned += n;
        findings.extend(f);
    }

    if let Some((c, info)) = &server {
        let client = &c.client;
        let helm_on = opts.helm.unwrap_or(true);
        let (live, helm, metrics, crds, chk) = tokio::join!(
            live::scan(client, &db, target),
            async {
                if helm_on {
                    helm::scan(client, &db, target).await
                } else {
                    Ok((vec![], vec![]))
                }
            },
            metrics::scan(client, &db, target),
            crds::scan(client),
            checks::run(
                client,
                current.unwrap_or(target),
                target,
                opts.nodes_to.is_some()
            ),
        );
        let (f, n, nt) = live?;
        findings.extend(f);
        summary.objects_scanned += n;
        notes.extend(nt);
        let (f, nt) = helm?;
        findings.extend(f);
        notes.extend(nt);
        let (f, nt) = metrics;
        findings.extend(f);
        notes.extend(nt);
        let (f, nt) = crds?;
        findings.extend(f);
        notes.extend(nt);
        checks.extend(chk?);
        let _ = info;
    }

    if server.is_none() && summary.objects_scanned == 0 {
        return Err(Error::Usage(if opts.manifests.is_empty() {
            "nothing to scan: no cluster and no --manifests".into()
        } else {
            format!(
                "nothing was scanned: {} file(s), no Kubernetes object in them{}",
                summary.files_scanned,
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes[0])
                }
            )
        }));
    }
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.source.cmp(&b.source))
            .then(a.file.cmp(&b.file))
            .then(a.line.cmp(&b.line))
            .then(a.namespace.cmp(&b.namespace))
            .then(a.name.cmp(&b.name))
            .then(a.api_version.cmp(&b.api_version))
    });
    summary.tally(&findings, &checks);
    Ok(Report {
        target,
        node_upgrade: opts.nodes_to.is_some(),
        server_version: server.as_ref().map(|(_, i)| i.git_version.clone()),
        database_version: db::parse(std::path::Path::new("data/deprecations.yaml"), db::EMBEDDED)
            .ok()
            .and_then(|f| f.data_version),
        findings,
        checks,
        notes,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A StatefulSet last applied as apps/v1beta1 long ago (the cluster no longer serves it) and
    /// its ControllerRevision (which carries a copy of the annotation): no error, exit 0 even
    /// with `--fail-on deprecated`; the history is reported as info.
    #[test]
    fn historical_live_evidence_never_fails_the_exit_code() {
        let db = Database::embedded();
        let la = serde_json::json!({"apiVersion": "apps/v1beta1", "kind": "StatefulSet", "metadata": {"name": "web"}}).to_string();
        let sts: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
            serde_json::from_value(serde_json::json!({
                "name": "web", "namespace": "shop",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": la}
            }))
            .unwrap();
        let mut rev = sts.clone();
        rev.name = Some("web-6d4f7c9b8".into());
        let served: std::collections::BTreeSet<String> =
            ["apps/v1".to_string()].into_iter().collect();
        let target = Minor::new(1, 35);
        let mut findings = live::object_findings(&db, target, "StatefulSet", &sts, &served);
        findings.extend(live::object_findings(
            &db,
            target,
            "ControllerRevision",
            &rev,
            &served,
        ));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].kind, "StatefulSet");
        let mut summary = Summary::default();
        summary.tally(&findings, &[]);
        assert_eq!((summary.errors, summary.warnings, summary.infos), (0, 0, 1));
        let report = Report {
            target,
            node_upgrade: false,
            server_version: None,
            database_version: None,
            findings,
            checks: vec![],
            notes: vec![],
            summary,
        };
        for fail_on in [FailOn::Removed, FailOn::Deprecated] {
            assert_eq!(report.exit(fail_on), Exit::Success, "{fail_on:?}");
        }
    }

    /// Every database entry, in a manifest, for targets before deprecation, between deprecation
    /// and removal, at removal and after it.
    #[test]
    fn every_database_entry_is_found_in_manifests_at_the_right_severity() {
        let db = Database::embedded();
        for e in &db.entries {
            let doc = format!(
                "apiVersion: {}\nkind: {}\nmetadata:\n  name: x\n",
                e.api_version(),
                e.kind
            );
            let scanned = vec![manifests::ScannedFile {
                path: "t.yaml".into(),
                scanned: manifests::scan_text(&doc, false),
                read_error: None,
            }];
            let at = |t: Minor| {
                let mut notes = vec![];
                let (f, n) = manifest_findings(&db, t, &scanned, Source::Manifest, &mut notes);
                assert_eq!(n, 1);
                assert!(notes.is_empty(), "{notes:?}");
                assert!(f.len() <= 1);
                f.first().map(|f| f.severity)
            };
            let removed = e.removed_in.expect("embedded entries all have removedIn");
            let what = format!("{} {}", e.api_version(), e.kind);
            if e.deprecated_in.minor > 0 {
                assert_eq!(
                    at(Minor::new(1, e.deprecated_in.minor - 1)),
                    None,
                    "{what} before deprecation"
                );
            }
            assert_eq!(
                at(e.deprecated_in),
                if e.deprecated_in < removed {
                    Some(Severity::Warning)
                } else {
                    Some(Severity::Error)
                },
                "{what} at deprecation"
            );
            if removed.minor > e.deprecated_in.minor {
                assert_eq!(
                    at(Minor::new(1, removed.minor - 1)),
                    Some(Severity::Warning),
                    "{what} just before removal"
                );
            }
            assert_eq!(at(removed), Some(Severity::Error), "{what} at removal");
            assert_eq!(
                at(removed.next()),
                Some(Severity::Error),
                "{what} after removal"
            );
        }
    }
}
