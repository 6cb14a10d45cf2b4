//! `lifeboat backup …` and `lifeboat restore` flags.
use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::backup::{BackupOptions, ClusterResources};

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Selection flags shared by backup and restore.
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Only these namespaces (repeatable); default: all namespaces
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,

    /// All namespaces (the default when no -n is given)
    #[arg(short = 'A', long, conflicts_with = "namespaces")]
    pub all_namespaces: bool,

    /// Only objects matching this label selector (e.g. app=web,tier!=cache)
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Only these resources: resource[.group], comma-separated or repeated (e.g. deployments.apps,configmaps)
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    pub include_resources: Vec<String>,

    /// Never these resources: resource[.group], comma-separated or repeated
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    pub exclude_resources: Vec<String>,

    /// Cluster-scoped objects: auto = with -n only those the namespaces use (their PVs, storage
    /// classes, CRDs, ClusterRoles bound in them), without -n all
    #[arg(long, value_enum, default_value = "auto")]
    pub include_cluster_resources: ClusterResources,
}

/// Where a backup or prune reports its outcome (docs/backup.md#monitoring).
#[derive(Debug, Args, Default)]
pub struct ReportArgs {
    /// Write Prometheus metrics to this file (atomically; for the node exporter's textfile
    /// collector), also when the run fails
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Push the same metrics to this Pushgateway (http://host:port)
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
    /// Post the outcome (succeeded or failed) to this webhook (repeatable)
    #[arg(long = "notify", value_name = "URL")]
    pub notify: Vec<String>,
    /// Body of --notify webhooks: lifeboat's JSON, or `{"text": ...}` for Slack-compatible ones
    #[arg(long, value_enum, default_value = "json", value_name = "FORMAT")]
    pub notify_format: crate::notify::Format,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub report: ReportArgs,

    /// Also back up what is skipped by default (events, nodes, leases, endpoints,
    /// endpointslices, csinodes, volumeattachments, componentstatuses, ipaddresses, and pods,
    /// replicasets and controllerrevisions owned by controllers)
    #[arg(long)]
    pub no_default_excludes: bool,

    /// Tag the backup (repeatable): --tag env=prod
    #[arg(long = "tag", value_parser = parse_kv, value_name = "KEY=VALUE")]
    pub tags: Vec<(String, String)>,

    /// Resource types listed at the same time
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Also back up the data of every bound PersistentVolumeClaim selected: a CSI VolumeSnapshot,
    /// a temporary claim from it and a mover pod stream the files into the repository through
    /// the API server (docs/backup.md)
    #[arg(long)]
    pub snapshot_volumes: bool,

    /// How claims are read: `snapshot` (a CSI VolumeSnapshot), `live` (the claim itself,
    /// read-only, between the pre and post hooks: for storage without snapshots), `auto`
    /// (snapshot where the claim's driver has a VolumeSnapshotClass, live otherwise)
    #[arg(
        long,
        value_enum,
        default_value = "snapshot",
        requires = "snapshot_volumes"
    )]
    pub volume_mode: crate::volume::snapshots::VolumeMode,

    /// VolumeSnapshotClass to use (default: the default class of each claim's CSI driver)
    #[arg(long, value_name = "CLASS", requires = "snapshot_volumes")]
    pub snapshot_class: Option<String>,

    /// Keep the VolumeSnapshots in the cluster after their data is in the repository
    #[arg(long, requires = "snapshot_volumes")]
    pub keep_snapshots: bool,

    /// How long to wait for a VolumeSnapshot to be ready to use
    #[arg(long, default_value = "10m", value_parser = crate::cli::drill::parse_duration, requires = "snapshot_volumes")]
    pub snapshot_timeout: std::time::Duration,

    /// Pre/post and dump hooks for pods selected by namespace and labels, besides those the
    /// pods declare by annotations (docs/backup.md#hooks)
    #[arg(long, value_name = "FILE", conflicts_with = "no_hooks")]
    pub hooks: Option<PathBuf>,

    /// Run no hooks: neither the pre/post hooks around volume snapshots nor dump hooks
    #[arg(long)]
    pub no_hooks: bool,

    /// Image of the mover pods (needs `sleep` and `tar`)
    #[arg(long, default_value = crate::volume::mover::DEFAULT_IMAGE, value_name = "IMAGE")]
    pub mover_image: String,
}

impl CreateArgs {
    pub fn options(&self, context: Option<String>) -> BackupOptions {
        BackupOptions {
            namespaces: self.select.namespaces.clone(),
            selector: self.select.selector.clone(),
            include_resources: self.select.include_resources.clone(),
            exclude_resources: self.select.exclude_resources.clone(),
            include_cluster_resources: self.select.include_cluster_resources,
            default_excludes: !self.no_default_excludes,
            tags: self.tags.iter().cloned().collect::<BTreeMap<_, _>>(),
            context,
            concurrency: self.concurrency.max(1),
            page_size: 500,
            volumes: self
                .snapshot_volumes
                .then(|| crate::volume::snapshots::VolumeOptions {
                    snapshot_class: self.snapshot_class.clone(),
                    keep_snapshots: self.keep_snapshots,
                    snapshot_timeout: self.snapshot_timeout,
                    mover: crate::volume::mover::MoverOptions {
                        image: self.mover_image.clone(),
                        ..Default::default()
                    },
                    cleanup: Default::default(),
                    counters: Default::default(),
                    progress: true,
                    mode: self.volume_mode,
                }),
            hooks: crate::backup::HookOptions {
                enabled: !self.no_hooks,
                ..Default::default()
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct CronJobArgs {
    /// Cron schedule of the backups ("30 1 * * *", "@daily")
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
    /// Namespaces to back up (repeatable; default: the whole cluster)
    #[arg(long = "backup-namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Back up volume data too (the role then may create lifeboat's temporary snapshots,
    /// claims and mover pods)
    #[arg(long)]
    pub snapshot_volumes: bool,
    /// How claims are read (see `backup create --volume-mode`)
    #[arg(
        long,
        value_enum,
        default_value = "snapshot",
        requires = "snapshot_volumes"
    )]
    pub volume_mode: crate::volume::snapshots::VolumeMode,
    /// Run no hooks (the role then has no exec into application pods)
    #[arg(long)]
    pub no_hooks: bool,
    /// Retention after each backup: keep the N most recent
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_last: Option<u32>,
    /// … the last backup of each of the last N days
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_daily: Option<u32>,
    /// … weeks
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_weekly: Option<u32>,
    /// … months
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_monthly: Option<u32>,
    /// Drill the new backup after it is taken (restored into drill-* scratch namespaces)
    #[arg(long)]
    pub drill: bool,
    /// Readiness timeout of the drill
    #[arg(long, default_value = "10m", value_parser = parse_duration, requires = "drill")]
    pub drill_timeout: std::time::Duration,
    /// Push metrics of every step to this Pushgateway
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
}

impl CronJobArgs {
    pub fn retention(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (flag, v) in [
            ("--keep-last", self.keep_last),
            ("--keep-daily", self.keep_daily),
            ("--keep-weekly", self.keep_weekly),
            ("--keep-monthly", self.keep_monthly),
        ] {
            if let Some(n) = v {
                out.push(flag.to_string());
                out.push(n.to_string());
            }
        }
        out
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only backups with this tag (repeatable, all must match)
    #[arg(long = "tag", value_parser = parse_kv, value_name = "KEY=VALUE")]
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub report: ReportArgs,

    /// Keep the N most recent backups
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_last: Option<u32>,
    /// Keep the most recent backup of each of the last N hours
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_hourly: Option<u32>,
    /// … days
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_daily: Option<u32>,
    /// … weeks
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_weekly: Option<u32>,
    /// … months
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_monthly: Option<u32>,
    /// Always keep backups with this tag (repeatable)
    #[arg(long = "keep-tag", value_parser = parse_kv, value_name = "KEY=VALUE")]
    pub keep_tags: Vec<(String, String)>,
    /// Apply the policy within groups of backups: any of cluster, namespaces, tags (or none)
    #[arg(long, default_value = "cluster,namespaces", value_name = "FIELDS")]
    pub group_by: String,
    /// Never delete packs younger than this (by the store's clock), referenced or not: a
    /// running or interrupted backup may still need them (e.g. 6h, 30m, 0s)
    #[arg(long, default_value = "6h", value_parser = parse_duration, value_name = "DURATION")]
    pub safety_margin: std::time::Duration,
    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `90s`, `30m`, `6h`, `2d` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 30m, 6h, 2d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    Ok(std::time::Duration::from_secs(n * mult))
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up the cluster's manifests into the repository
    Create(CreateArgs),
    /// List the backups in the repository
    List(ListArgs),
    /// Show one backup: selectors, tags, per-resource counts
    Describe {
        /// Backup id (or unique prefix) or `latest`
        id: String,
    },
    /// Check a backup's integrity (structure; with --read-data every blob is re-hashed)
    Verify {
        /// Backup id (or unique prefix) or `latest`
        id: String,
        /// Read and re-hash every blob; name each damaged object
        #[arg(long)]
        read_data: bool,
    },
    /// Delete backups (their data is removed by `prune`)
    Delete {
        /// Backup ids (or unique prefixes) or `latest`
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Apply a retention policy and remove data no backup references
    Prune(PruneArgs),
    /// Print manifests for a CronJob that backs up in the cluster on a schedule (then prunes
    /// and, with --drill, drills the new backup) with least privilege (docs/backup.md#cronjob)
    Cronjob(CronJobArgs),
    /// What changed between two backups, or between a backup and the cluster now (--live):
    /// objects added, removed and changed, with the changed fields (exit 2 when anything differs)
    Diff(DiffArgs),
    /// Write a backup as a plain (unencrypted) tar.gz of YAML files
    Export {
        /// Backup id (or unique prefix) or `latest`
        id: String,
        /// Output file (.tar.gz)
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older backup: id, unique prefix or `latest`
    pub from: String,
    /// The newer backup (or give --live)
    #[arg(required_unless_present = "live", conflicts_with = "live")]
    pub to: Option<String>,
    /// Compare with the cluster as it is now (the backup's types, namespaces and selector)
    #[arg(long)]
    pub live: bool,
    /// Only these namespaces (repeatable)
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Only these resources: resource[.group], comma-separated or repeated
    #[arg(long, value_delimiter = ',', value_name = "RESOURCES")]
    pub include_resources: Vec<String>,
    /// Show the old and new values of changed fields (never of Secrets)
    #[arg(long)]
    pub values: bool,
    /// Compare `status` too (ignored by default: it changes without anyone changing the object)
    #[arg(long)]
    pub status: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup id (or unique prefix) or `latest`; or give --from-archive instead
    #[arg(required_unless_present = "from_archive")]
    pub backup: Option<String>,

    /// Restore from an archive written by `backup export` instead of the repository
    #[arg(long, value_name = "FILE", conflicts_with = "backup")]
    pub from_archive: Option<PathBuf>,

    #[command(flatten)]
    pub select: SelectArgs,

    /// Restore namespace OLD as NEW (repeatable); also rewrites RoleBinding/ClusterRoleBinding
    /// subjects and PV claimRefs
    #[arg(long = "namespace-map", value_parser = parse_kv, value_name = "OLD=NEW")]
    pub namespace_map: Vec<(String, String)>,

    /// Restore claims, StatefulSet claim templates and PVs of StorageClass OLD with class NEW
    /// (repeatable), for a target cluster with other storage
    #[arg(long = "storage-class-map", value_parser = parse_kv, value_name = "OLD=NEW")]
    pub storage_class_map: Vec<(String, String)>,

    /// Only objects with this name (a glob: `web`, `web-*`; repeatable), plus the namespaces
    /// they need; what they refer to (ConfigMaps, Secrets, claims, ServiceAccount, Services) is
    /// listed in the report
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,

    /// With --name: also restore the objects the named ones refer to (when in the backup)
    #[arg(long, requires = "names")]
    pub with_dependencies: bool,

    /// Do not run the restore hooks the restored pods declare
    /// (`post.hook.restore.lifeboat.io/*`, Velero's `post.hook.restore.velero.io/*`), nor pour
    /// the backup's dumps back through their restore commands
    #[arg(long)]
    pub no_hooks: bool,

    /// Rules that change or drop objects before they are created (repeatable; applied in
    /// order): docs/restore.md#transforms
    #[arg(long = "transform", value_name = "FILE")]
    pub transforms: Vec<PathBuf>,

    /// What to do with objects that already exist
    #[arg(long, value_enum, default_value = "skip")]
    pub existing: crate::restore::Existing,

    /// Server-side dry run: validation and admission run, nothing is persisted
    #[arg(long)]
    pub dry_run: bool,

    /// Keep Services' nodePorts
    #[arg(long)]
    pub preserve_nodeports: bool,

    /// Seconds to wait for restored CRDs to become Established
    #[arg(long, default_value_t = 60)]
    pub crd_timeout: u64,

    /// For claims whose backup kept its VolumeSnapshot (--keep-snapshots): create the claim
    /// from that snapshot when it still exists in the same namespace, instead of streaming the
    /// data from the repository
    #[arg(long)]
    pub from_snapshot: bool,

    /// Seconds to wait, once everything is created, for restored claims to bind; each claim
    /// that was Bound in the backup (or named its volume) and is still Pending fails the
    /// restore (exit 2) with the reason. 0: do not wait
    #[arg(long, default_value_t = 180, value_name = "SECONDS")]
    pub bind_timeout: u64,

    /// Also restore Jobs that had finished (Complete or Failed) and Jobs created by CronJobs;
    /// they run again
    #[arg(long)]
    pub restore_finished_jobs: bool,

    /// Restore PersistentVolumes as they are and keep claims bound to them, whatever their
    /// reclaim policy, provisioner or namespace map. Only for a cluster that cannot reach the
    /// source's storage: the PVs point at the source's disks. A PV that exists in the target is
    /// still never changed or taken over
    #[arg(long)]
    pub restore_pvs_as_is: bool,

    /// Image of the mover pods that fill restored claims (needs `sleep` and `tar`)
    #[arg(long, default_value = crate::volume::mover::DEFAULT_IMAGE, value_name = "IMAGE")]
    pub mover_image: String,
}
