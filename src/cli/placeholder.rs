//! Command groups whose operations are not built yet. They are listed in `--help` so the
//! interface is visible, and every one of them exits 1 with "not implemented yet": none of them
//! pretends to succeed.
use clap::{Args, Subcommand};

/// Arguments of a command that is not implemented yet; accepted so the message is the same
/// whatever flags are passed.
#[derive(Debug, Args)]
pub struct Rest {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RunbookCommand {
    /// Check a runbook file without a cluster
    Validate(Rest),
    /// Render a runbook into a plan file
    Plan(Rest),
    /// Execute a plan
    Run(Rest),
    /// Roll a run back to a checkpoint
    Rollback(Rest),
    /// Show the state of runs
    Status(Rest),
}

impl RunbookCommand {
    pub fn name(&self) -> &'static str {
        match self {
            RunbookCommand::Validate(_) => "runbook validate",
            RunbookCommand::Plan(_) => "runbook plan",
            RunbookCommand::Run(_) => "runbook run",
            RunbookCommand::Rollback(_) => "runbook rollback",
            RunbookCommand::Status(_) => "runbook status",
        }
    }
}
