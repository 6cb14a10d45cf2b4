//! `lifeboat runbook …` flags.
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::runbook::engine::InDoubt;

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Unattended: do not ask. An `approve` step without --approve stops the run (exit 3,
    /// resumable); a failed step rolls back to the last checkpoint
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Approve this `approve` step in advance (repeatable); recorded in the journal with who
    /// you are
    #[arg(long = "approve", value_name = "STEP")]
    pub approve: Vec<String>,
    /// Let a rollback pass over steps that cannot be undone (`undo: none`)
    #[arg(long)]
    pub force: bool,
    /// Namespace of the Lease that keeps two people from running the same plan at once
    #[arg(long, default_value = "default", value_name = "NS")]
    pub lease_namespace: String,
    /// Keep the run's journal on this machine only (default: also a Secret
    /// `lifeboat-run-<run>` in the lease namespace, so other machines can resume or roll back)
    #[arg(long)]
    pub no_shared_journal: bool,
    /// Post the run's events (awaiting approval, failed, rolled back, finished, each forEach
    /// item) to this webhook, besides the runbook's own `notify:` (repeatable)
    #[arg(long = "notify", value_name = "URL")]
    pub notify: Vec<String>,
    /// Body of --notify webhooks: lifeboat's JSON, or `{"text": ...}` for Slack-compatible ones
    #[arg(long, value_enum, default_value = "json", value_name = "FORMAT")]
    pub notify_format: crate::notify::Format,
}

#[derive(Debug, Subcommand)]
pub enum RunbookCommand {
    /// Check a runbook file without a cluster (syntax, actions, ids, templates, parameters)
    Validate {
        /// The runbook file
        file: PathBuf,
        /// Parameter values to check as well (KEY=VALUE, repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
    },
    /// Render a runbook with its parameters into a plan file, previewing each step on the cluster
    Plan {
        /// The runbook file
        runbook: PathBuf,
        /// Parameter value (KEY=VALUE, repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// Where to write the plan (default: plans/<runbook name>.yaml)
        #[arg(short = 'f', long = "file", value_name = "PLAN")]
        file: Option<PathBuf>,
    },
    /// Execute a plan (interactive on a terminal; --yes for unattended runs)
    Run {
        /// The plan file made by `runbook plan`
        plan: PathBuf,
        #[command(flatten)]
        exec: ExecArgs,
        /// Walk the plan without changing anything (server-side dry-run where possible)
        #[arg(long)]
        dry_run: bool,
    },
    /// Continue a run that stopped (crash, Ctrl-C, awaiting approval, stopped at a prompt)
    Resume {
        /// Run id (see `runbook list`)
        run: String,
        #[command(flatten)]
        exec: ExecArgs,
        /// What to do with a `run` step that was started but has no result (it may have half-run)
        #[arg(long, value_enum)]
        in_doubt: Option<InDoubt>,
    },
    /// Approve the step a run waits for, from any machine (recorded in its shared journal and
    /// checked against the step's approvers); the run goes on at its next `resume`
    Approve {
        /// Run id
        run: String,
        /// The approve step
        step: String,
        /// Namespace of the shared journals
        #[arg(long, default_value = "default", value_name = "NS")]
        lease_namespace: String,
        /// Only this machine's journal (the run was made with --no-shared-journal)
        #[arg(long)]
        no_shared_journal: bool,
    },
    /// Undo a run's completed steps back to a checkpoint (or the start)
    Rollback {
        /// Run id
        run: String,
        /// A checkpoint step id, or `start`
        #[arg(long, value_name = "CHECKPOINT|start")]
        to: String,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Show a run: status, each step, who approved what
    Status {
        /// Run id (default: the most recent run); a run this machine does not have is read
        /// from its shared journal in the cluster
        run: Option<String>,
        /// Namespace of the shared journals
        #[arg(long, default_value = "default", value_name = "NS")]
        lease_namespace: String,
    },
    /// List this machine's runs, newest first
    List {
        /// Also the runs other machines shared in the cluster (their journals are fetched)
        #[arg(long)]
        shared: bool,
        /// Namespace of the shared journals
        #[arg(long, default_value = "default", value_name = "NS")]
        lease_namespace: String,
    },
    /// The output of a run's `run` steps (secrets redacted), as recorded in its log files
    Logs {
        /// Run id (see `runbook list`)
        run: String,
        /// Only this step (default: every step that has output, in runbook order)
        step: Option<String>,
        /// Keep printing new output until the run stops (finishes, fails, awaits approval)
        #[arg(short = 'f', long)]
        follow: bool,
    },
}
