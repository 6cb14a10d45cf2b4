//! `lifeboat drill …` flags.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

/// "90s", "10m", "1h", "600" (seconds).
pub use crate::duration::parse as parse_duration;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Backup to drill: id (or unique prefix) or `latest`
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Namespaces of the backup to restore (repeatable); default: every non-system namespace in it
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Drill spec: budgets and extra checks (docs/drill.md)
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// How long to wait for the restored workloads to become ready
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Keep the scratch namespaces (for debugging); `drill gc` removes them after they expire
    #[arg(long)]
    pub keep: bool,
    /// Also write the JSON report to this file
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a JUnit XML report (one test case per check)
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write Prometheus metrics for the node-exporter textfile collector (atomically)
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Push the metrics to this Pushgateway (http://host:port)
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
    /// The `cluster` label of the metrics (default: the API server URL)
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Post the outcome (passed or failed) to this webhook (repeatable)
    #[arg(long = "notify", value_name = "URL")]
    pub notify: Vec<String>,
    /// Body of --notify webhooks: lifeboat's JSON, or `{"text": ...}` for Slack-compatible ones
    #[arg(long, value_enum, default_value = "json", value_name = "FORMAT")]
    pub notify_format: crate::notify::Format,
}

#[derive(Debug, Args)]
pub struct CronJobArgs {
    /// Cron schedule of the drills
    #[arg(long)]
    pub schedule: String,
    /// Namespace for the CronJob and its ServiceAccount
    #[arg(long, default_value = "lifeboat-system")]
    pub namespace: String,
    /// Container image with the lifeboat binary (see Dockerfile)
    #[arg(long, default_value = concat!("ghcr.io/lifeboat-dev/lifeboat:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Secret with LIFEBOAT_PASSWORD (and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3)
    #[arg(long, default_value = "lifeboat-repository")]
    pub secret: String,
    /// Namespaces of the backup to drill (repeatable; default: all in the backup)
    #[arg(long = "drill-namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Push metrics to this Pushgateway from the drill
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
    /// Readiness timeout of each drill
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Restore a backup into scratch namespaces, verify it, report, clean up
    Run(RunArgs),
    /// Print manifests for a CronJob that runs drills in the cluster with least privilege
    Cronjob(CronJobArgs),
    /// Delete expired scratch namespaces left by crashed or killed drills
    Gc {
        /// Delete every drill namespace, expired or not
        #[arg(long)]
        all: bool,
        /// Show what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(super::parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(super::parse_duration("1h").unwrap().as_secs(), 3600);
        assert_eq!(super::parse_duration("45").unwrap().as_secs(), 45);
        assert!(super::parse_duration("10d").is_err());
        assert!(super::parse_duration("soon").is_err());
        assert!(super::parse_duration("99999999999999999999s").is_err());
    }
}
