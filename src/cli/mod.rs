//! Command-line definitions (clap). This layer only parses; each command builds an options struct
//! and calls one operation of the library.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod backup;
pub mod drill;
pub mod preflight;
pub mod runbook;

#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Kubernetes upgrades and disaster recovery: backups, restore drills, preflight checks, runbooks",
    long_about = None,
    propagate_version = true,
    after_help = "Configuration precedence: flag > environment variable > config file \
                  ($XDG_CONFIG_HOME/lifeboat/config.yaml, or LIFEBOAT_CONFIG) > default.\n\
                  Exit codes: 0 ok, 1 could not run, 2 findings/checks failed, 3 needs approval, \
                  4 runbook rollback failed, 64 usage error, 130 interrupted."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, defined once.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)
    #[arg(long, global = true, env = "LIFEBOAT_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: the current context)
    #[arg(long, global = true, env = "LIFEBOAT_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,

    /// Output format
    #[arg(short = 'o', long, global = true, env = "LIFEBOAT_OUTPUT", value_enum)]
    pub output: Option<OutputFormat>,

    /// More log output (-v info, -vv debug, -vvv trace); logs go to stderr
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr; no progress bars
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,

    /// Log line format on stderr
    #[arg(long, global = true, env = "LIFEBOAT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Backup repository: file:///path or s3://bucket/prefix (default: a local repository in the
    /// user's data directory)
    #[arg(long, global = true, env = "LIFEBOAT_REPO", value_name = "URL")]
    pub repo: Option<String>,

    /// Read the repository password from this file
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,

    /// Run this shell command and read the repository password from its output
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_PASSWORD_COMMAND",
        value_name = "COMMAND"
    )]
    pub password_command: Option<String>,

    /// S3 endpoint URL for s3:// repositories (S3-compatible servers); path-style addressing
    /// is used with a custom endpoint
    #[arg(long, global = true, env = "LIFEBOAT_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// Configuration file (default: $XDG_CONFIG_HOME/lifeboat/config.yaml)
    #[arg(long, global = true, env = "LIFEBOAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
    /// Markdown (preflight reports, for change tickets)
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the client version and, when the cluster is reachable, the server version
    Version,

    /// Print a shell completion script
    Completions {
        /// The shell to generate completions for
        shell: clap_complete::Shell,
    },

    /// Show the effective configuration and where each value came from
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },

    /// Back up cluster manifests into the repository; list, verify, prune, export backups
    #[command(subcommand)]
    Backup(backup::BackupCommand),

    /// Restore a backup (or an exported archive) into the cluster
    Restore(backup::RestoreArgs),

    /// Check an upgrade before doing it: removed/deprecated APIs, version skew, blockers
    Preflight(preflight::PreflightArgs),

    /// Plan and run runbooks with rollback points, approvals and a crash-safe journal
    #[command(
        subcommand,
        after_help = "Run exit codes: 0 done, 1 failed, 2 rolled back, 3 awaiting approval, \
                      4 rollback failed, 130 interrupted. Runbook format, plans and the journal: \
                      docs/runbooks.md; shipped runbooks: runbooks/."
    )]
    Runbook(runbook::RunbookCommand),

    /// Restore drills: prove backups restore, on a schedule
    #[command(subcommand)]
    Drill(drill::DrillCommand),

    /// Manage the backup repository
    #[command(subcommand)]
    Repo(RepoCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting, its effective value and its source (flag, env, file, default)
    View,
    /// Print the path of the configuration file that is read
    Path,
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a new, encrypted repository at --repo (password from LIFEBOAT_PASSWORD,
    /// --password-file, --password-command or a prompt)
    Init,
    /// Check the whole repository: keys, index, every backup's references, pack headers; with
    /// --read-data every pack is re-hashed. Exit 2 names each damaged object.
    Check {
        /// Read and re-hash every pack
        #[arg(long)]
        read_data: bool,
        /// Read and re-hash this share of the packs, chosen at random (e.g. 10%)
        #[arg(long, value_name = "N%", value_parser = parse_percent, conflicts_with = "read_data")]
        read_data_subset: Option<f64>,
    },
    /// Passwords of the repository: several keys open it; add, rotate or remove one without
    /// re-encrypting anything
    Key {
        #[command(subcommand)]
        cmd: KeyCommand,
    },
    /// Repair the repository: `index` rebuilds the index from the pack headers; `snapshots`
    /// rewrites backups that reference lost data without it, naming what was lost
    Repair {
        #[arg(value_enum)]
        what: RepairTarget,
        /// Say what would change, change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// The repository's keys (no password is shown: only when and where each was made)
    List,
    /// Add a password (the new one from --new-password-file, LIFEBOAT_NEW_PASSWORD or a prompt)
    Add {
        /// File holding the new password
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<std::path::PathBuf>,
    },
    /// Remove a key by id (a unique prefix is enough); never the one this password opened
    Remove {
        /// Key id (see `repo key list`)
        id: String,
    },
    /// Replace this password with a new one (the new key is written and checked before the old
    /// one is removed)
    Passwd {
        /// File holding the new password
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RepairTarget {
    Index,
    Snapshots,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 10%)"))?;
    if !(n > 0.0 && n <= 100.0) {
        return Err(format!("{s:?}: give a share between 0% and 100%"));
    }
    Ok(n)
}
