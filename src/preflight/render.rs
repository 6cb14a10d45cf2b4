//! Human output of a preflight report: a table grouped by severity, and Markdown for tickets.
use std::io::{self, Write};

use super::db::Severity;
use super::{CheckStatus, Finding, Report};
use crate::output::Render;

fn location(f: &Finding) -> String {
    if f.source == super::Source::Metrics {
        return "apiserver metrics".into();
    }
    if let Some(file) = &f.file {
        return match f.line {
            Some(l) => format!("{file}:{l}"),
            None => file.clone(),
        };
    }
    let obj = match (&f.namespace, &f.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        _ => String::new(),
    };
    match &f.release {
        Some(r) => format!("release {r}: {obj}"),
        None => obj,
    }
}

fn heading(sev: Severity, target: &str) -> String {
    match sev {
        Severity::Error => format!("ERRORS: removed in {target} or earlier"),
        Severity::Warning => format!("WARNINGS: deprecated by {target}"),
        Severity::Info => "INFO".into(),
    }
}

fn source(f: &Finding) -> String {
    serde_json::to_value(f.source)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn status(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Pass => "PASS",
        CheckStatus::Warn => "WARN",
        CheckStatus::Fail => "FAIL",
        CheckStatus::Skipped => "SKIP",
    }
}

impl Render for Report {
    fn table(&self, w: &mut dyn Write) -> io::Result<()> {
        let target = self.target.to_string();
        match &self.server_version {
            Some(s) if self.node_upgrade => writeln!(
                w,
                "Preflight for upgrading the nodes to {target} (API server at {s})"
            )?,
            Some(s) => writeln!(w, "Preflight for an upgrade to {target} (cluster at {s})")?,
            None => writeln!(w, "Preflight for {target} (no cluster: manifests only)")?,
        }
        for sev in [Severity::Error, Severity::Warning, Severity::Info] {
            let rows: Vec<&Finding> = self.findings.iter().filter(|f| f.severity == sev).collect();
            if rows.is_empty() {
                continue;
            }
            writeln!(w, "\n{}", heading(sev, &target))?;
            let loc_w = rows
                .iter()
                .map(|f| location(f).len())
                .max()
                .unwrap_or(0)
                .clamp(5, 60);
            let kind_w = rows.iter().map(|f| f.kind.len()).max().unwrap_or(0).max(4);
            let api_w = rows
                .iter()
                .map(|f| f.api_version.len())
                .max()
                .unwrap_or(0)
                .max(11);
            writeln!(
                w,
                "{:<8} {:<loc_w$} {:<kind_w$} {:<api_w$} {:<7} REPLACEMENT",
                "SOURCE", "WHERE", "KIND", "API VERSION", "REMOVED"
            )?;
            for f in rows {
                writeln!(
                    w,
                    "{:<8} {:<loc_w$} {:<kind_w$} {:<api_w$} {:<7} {}",
                    source(f),
                    location(f),
                    f.kind,
                    f.api_version,
                    f.removed_in
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "-".into()),
                    f.replacement.clone().unwrap_or_else(|| "(none)".into()),
                )?;
            }
        }
        if !self.checks.is_empty() {
            writeln!(w, "\nCHECKS")?;
            for c in &self.checks {
                writeln!(w, "{:<5} {:<24} {}", status(c.status), c.name, c.message)?;
                for o in &c.objects {
                    if c.status != CheckStatus::Pass {
                        writeln!(w, "{:<30}- {o}", "")?;
                    }
                }
            }
        }
        if !self.notes.is_empty() {
            writeln!(w, "\nNOTES")?;
            for n in &self.notes {
                writeln!(w, "- {n}")?;
            }
        }
        let s = &self.summary;
        writeln!(
            w,
            "\n{} error(s), {} warning(s); {} check(s) failed, {} warned; {} object(s) in {} file(s) scanned",
            s.errors,
            s.warnings,
            s.checks_failed,
            s.checks_warned,
            s.objects_scanned,
            s.files_scanned
        )
    }

    fn markdown(&self, w: &mut dyn Write) -> io::Result<()> {
        let target = self.target.to_string();
        writeln!(w, "## Preflight: upgrade to Kubernetes {target}\n")?;
        if let Some(s) = &self.server_version {
            writeln!(w, "Cluster version: `{s}`\n")?;
        }
        let s = &self.summary;
        writeln!(
            w,
            "**{} error(s), {} warning(s), {} failed check(s).**\n",
            s.errors, s.warnings, s.checks_failed
        )?;
        for sev in [Severity::Error, Severity::Warning, Severity::Info] {
            let rows: Vec<&Finding> = self.findings.iter().filter(|f| f.severity == sev).collect();
            if rows.is_empty() {
                continue;
            }
            writeln!(w, "### {}\n", heading(sev, &target))?;
            writeln!(
                w,
                "| Source | Where | Kind | API version | Removed in | Replacement |"
            )?;
            writeln!(w, "|---|---|---|---|---|---|")?;
            for f in rows {
                writeln!(
                    w,
                    "| {} | `{}` | {} | `{}` | {} | {} |",
                    source(f),
                    location(f).replace('|', "\\|"),
                    f.kind,
                    f.api_version,
                    f.removed_in
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "–".into()),
                    f.replacement
                        .as_ref()
                        .map(|r| format!("`{r}`"))
                        .unwrap_or_else(|| "none".into()),
                )?;
            }
            writeln!(w)?;
        }
        if !self.checks.is_empty() {
            writeln!(
                w,
                "### Checks\n\n| Status | Check | Result |\n|---|---|---|"
            )?;
            for c in &self.checks {
                let mut msg = c.message.replace('|', "\\|");
                if c.status != CheckStatus::Pass && !c.objects.is_empty() {
                    msg.push_str("<br>");
                    msg.push_str(
                        &c.objects
                            .iter()
                            .map(|o| o.replace('|', "\\|"))
                            .collect::<Vec<_>>()
                            .join("<br>"),
                    );
                }
                writeln!(w, "| {} | {} | {} |", status(c.status), c.name, msg)?;
            }
            writeln!(w)?;
        }
        if !self.notes.is_empty() {
            writeln!(w, "### Notes\n")?;
            for n in &self.notes {
                writeln!(w, "- {n}")?;
            }
        }
        Ok(())
    }
}
