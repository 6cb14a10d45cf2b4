//! What backups and prunes tell monitoring: a Prometheus textfile (`--metrics-file`, for the
//! node exporter's textfile collector), a Pushgateway (`--pushgateway`), and webhooks
//! (`--notify`). The same outputs drills have (docs/backup.md#monitoring). They are written for
//! failures too: a failed backup is exactly what monitoring must see.
use std::path::Path;

use crate::drill::report::{label, sample_labels};
use crate::notify::Notification;

use super::BackupSummary;
use super::manage::PruneReport;

/// A gauge with one sample per label set.
struct Gauge<'a> {
    name: &'a str,
    help: &'a str,
    samples: Vec<(Vec<(&'a str, String)>, String)>,
}

fn render(gauges: &[Gauge]) -> String {
    let mut s = String::new();
    for g in gauges {
        if g.samples.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "# HELP {} {}\n# TYPE {} gauge\n",
            g.name, g.help, g.name
        ));
        for (labels, v) in &g.samples {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            s.push_str(&format!("{}{{{}}} {v}\n", g.name, l.join(",")));
        }
    }
    s
}

/// The value of `name` with exactly these labels in a previous metrics file.
fn previous(path: Option<&Path>, name: &str, labels: &[(&str, String)]) -> Option<f64> {
    let text = std::fs::read_to_string(path?).ok()?;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            let got = sample_labels(l);
            got.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| got.get(*k).map(String::as_str) == Some(v.as_str()))
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

fn unix_now() -> f64 {
    crate::faults::now().as_millisecond() as f64 / 1000.0
}

/// What a backup run was about: the cluster and the namespaces asked for ("" for all).
pub struct Scope<'a> {
    pub cluster: &'a str,
    pub namespaces: &'a [String],
}

impl Scope<'_> {
    fn labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cluster", self.cluster.to_string()),
            (
                "namespaces",
                if self.namespaces.is_empty() {
                    "*".to_string()
                } else {
                    let mut n = self.namespaces.to_vec();
                    n.sort();
                    n.join(",")
                },
            ),
        ]
    }
}

/// The textfile of a backup run: success, last success (carried over from `previous_file`
/// when this one failed), duration, objects, bytes added and total, warnings, and per claim
/// bytes, files and seconds.
pub fn backup_metrics(
    scope: &Scope,
    result: Result<&BackupSummary, &str>,
    duration_seconds: f64,
    previous_file: Option<&Path>,
) -> String {
    let base = scope.labels();
    let one = |v: String| vec![(base.clone(), v)];
    let last = match result {
        Ok(_) => Some(unix_now()),
        Err(_) => previous(
            previous_file,
            "lifeboat_backup_last_success_timestamp_seconds",
            &base,
        ),
    };
    let mut gauges = vec![
        Gauge {
            name: "lifeboat_backup_success",
            help: "1 if the last backup succeeded, else 0.",
            samples: one(if result.is_ok() { "1" } else { "0" }.into()),
        },
        Gauge {
            name: "lifeboat_backup_last_success_timestamp_seconds",
            help: "Unix time of the last successful backup.",
            samples: last.map(|t| one(format!("{t:.0}"))).unwrap_or_default(),
        },
        Gauge {
            name: "lifeboat_backup_duration_seconds",
            help: "Duration of the last backup run.",
            samples: one(format!("{duration_seconds:.3}")),
        },
    ];
    if let Ok(s) = result {
        gauges.push(Gauge {
            name: "lifeboat_backup_objects",
            help: "Objects in the last backup.",
            samples: one(s.objects.to_string()),
        });
        gauges.push(Gauge {
            name: "lifeboat_backup_bytes_added",
            help: "Bytes the last backup added to the repository (after deduplication).",
            samples: one(s.bytes_added.to_string()),
        });
        gauges.push(Gauge {
            name: "lifeboat_backup_bytes_total",
            help: "Bytes the last backup refers to.",
            samples: one(s.bytes_total.to_string()),
        });
        gauges.push(Gauge {
            name: "lifeboat_backup_warnings",
            help: "Warnings of the last backup (types it could not read).",
            samples: one(s.warnings.len().to_string()),
        });
        let per_volume = |f: &dyn Fn(&super::VolumeSummary) -> String| {
            s.volumes
                .iter()
                .map(|v| {
                    let mut l = base.clone();
                    l.push(("namespace", v.namespace.clone()));
                    l.push(("pvc", v.pvc.clone()));
                    (l, f(v))
                })
                .collect::<Vec<_>>()
        };
        gauges.push(Gauge {
            name: "lifeboat_backup_volume_bytes",
            help: "Bytes of each claim's data in the last backup.",
            samples: per_volume(&|v| v.bytes.to_string()),
        });
        gauges.push(Gauge {
            name: "lifeboat_backup_volume_files",
            help: "Files of each claim in the last backup.",
            samples: per_volume(&|v| v.files.to_string()),
        });
        gauges.push(Gauge {
            name: "lifeboat_backup_volume_seconds",
            help: "Seconds each claim's data took in the last backup.",
            samples: per_volume(&|v| format!("{:.3}", v.seconds)),
        });
    }
    render(&gauges)
}

/// The textfile of a prune: success, last success, duration, backups removed and kept, packs
/// deleted, bytes freed.
pub fn prune_metrics(
    repository: &str,
    result: Result<&PruneReport, &str>,
    duration_seconds: f64,
    previous_file: Option<&Path>,
) -> String {
    let base = vec![("repository", repository.to_string())];
    let one = |v: String| vec![(base.clone(), v)];
    let last = match result {
        Ok(_) => Some(unix_now()),
        Err(_) => previous(
            previous_file,
            "lifeboat_prune_last_success_timestamp_seconds",
            &base,
        ),
    };
    let mut gauges = vec![
        Gauge {
            name: "lifeboat_prune_success",
            help: "1 if the last prune succeeded, else 0.",
            samples: one(if result.is_ok() { "1" } else { "0" }.into()),
        },
        Gauge {
            name: "lifeboat_prune_last_success_timestamp_seconds",
            help: "Unix time of the last successful prune.",
            samples: last.map(|t| one(format!("{t:.0}"))).unwrap_or_default(),
        },
        Gauge {
            name: "lifeboat_prune_duration_seconds",
            help: "Duration of the last prune.",
            samples: one(format!("{duration_seconds:.3}")),
        },
    ];
    if let Ok(r) = result {
        for (name, help, v) in [
            (
                "lifeboat_prune_backups_removed",
                "Backups the last prune removed.",
                r.removed_backups.len() as u64,
            ),
            (
                "lifeboat_prune_backups_kept",
                "Backups kept by the last prune.",
                r.kept_backups as u64,
            ),
            (
                "lifeboat_prune_packs_deleted",
                "Packs the last prune deleted.",
                r.packs_deleted as u64,
            ),
            (
                "lifeboat_prune_bytes_freed",
                "Bytes the last prune freed.",
                r.bytes_freed,
            ),
        ] {
            gauges.push(Gauge {
                name,
                help,
                samples: one(v.to_string()),
            });
        }
    }
    render(&gauges)
}

/// The webhook notification of a backup or prune: `Ok((id, summary))` or `Err(error line)`.
pub fn note(kind: &str, name: &str, result: Result<(&str, String), String>) -> Notification {
    let (event, status, id, message) = match result {
        Ok((id, m)) => ("finished", "succeeded", id.to_string(), m),
        Err(e) => ("failed", "failed", String::new(), e),
    };
    let mut n = Notification::new(kind, event, &id, name, status);
    n.message = message;
    n
}

impl BackupSummary {
    /// One line: objects, bytes added, warnings.
    pub fn describe(&self) -> String {
        format!(
            "{} objects, {} bytes added{}",
            self.objects,
            self.bytes_added,
            if self.warnings.is_empty() {
                String::new()
            } else {
                format!("; warnings: {}", self.warnings.join("; "))
            }
        )
    }
}

impl PruneReport {
    /// One line: backups removed, packs deleted, bytes freed.
    pub fn describe(&self) -> String {
        format!(
            "{} backup(s) removed, {} pack(s) deleted, {} bytes freed",
            self.removed_backups.len(),
            self.packs_deleted,
            self.bytes_freed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> BackupSummary {
        BackupSummary {
            id: "abc".into(),
            repository: "file:///r".into(),
            objects: 12,
            resources: Default::default(),
            bytes_added: 100,
            bytes_total: 400,
            duration_seconds: 1.5,
            warnings: vec![],
            repository_created: false,
            volumes: vec![super::super::VolumeSummary {
                namespace: "shop".into(),
                pvc: "data \"x\"".into(),
                files: 3,
                bytes: 42,
                seconds: 0.5,
                mode: crate::volume::snapshots::VolumeMode::Snapshot,
                quiesced: None,
            }],
            snapshots: vec![],
            snapshot_spread_seconds: None,
            hooks: vec![],
        }
    }

    #[test]
    fn a_failed_backup_keeps_the_last_success_of_the_same_scope() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.prom");
        let ns = vec!["shop".to_string()];
        let scope = Scope {
            cluster: "https://c",
            namespaces: &ns,
        };
        let ok = backup_metrics(&scope, Ok(&summary()), 1.5, None);
        assert!(
            ok.contains("lifeboat_backup_success{cluster=\"https://c\",namespaces=\"shop\"} 1")
        );
        assert!(ok.contains("pvc=\"data \\\"x\\\"\"} 42"), "{ok}");
        std::fs::write(&f, &ok).unwrap();
        let last = previous(
            Some(&f),
            "lifeboat_backup_last_success_timestamp_seconds",
            &scope.labels(),
        )
        .unwrap();
        let failed = backup_metrics(&scope, Err("boom"), 0.2, Some(&f));
        assert!(
            failed.contains("lifeboat_backup_success{cluster=\"https://c\",namespaces=\"shop\"} 0")
        );
        assert!(failed.contains(&format!("{last:.0}")), "{failed}");
        assert!(!failed.contains("lifeboat_backup_objects"));
        // Another scope does not inherit it.
        let other = Scope {
            cluster: "https://c",
            namespaces: &[],
        };
        let f2 = backup_metrics(&other, Err("boom"), 0.2, Some(&f));
        assert!(!f2.contains("last_success_timestamp"), "{f2}");
    }
}
