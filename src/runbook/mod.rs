//! Runbooks and plans (docs/runbooks.md): validate, plan, run, resume, roll back, report.
//!
//! - [`spec`]: the runbook format and its checks;
//! - [`template`]: parameters and step outputs in templates, secret redaction;
//! - [`plan`]: plans with previews and a content hash;
//! - [`actions`]: what each action does, its prior state and its undo;
//! - [`engine`]: execution, approvals, failures, rollback;
//! - [`journal`]: the crash-safe JSONL journal and its replay;
//! - [`lease`]: one run per change (runbook + parameters) at a time.
use std::path::{Path, PathBuf};

use serde::Serialize;

pub mod actions;
pub mod engine;
pub mod journal;
pub mod lease;
pub mod plan;
pub mod shared;
pub mod spec;
pub mod template;

use crate::cluster::{Cluster, ClusterOptions};
use crate::error::Error;
use crate::repo::access::RepoOptions;
use engine::{FailureChoice, InDoubt, Progress, Prompter, RunStatus, Runner};
use journal::{Actor, Event, Journal, Record, StepStatus};
use spec::Step;
use template::Redactor;

/// Options shared by run, resume and rollback.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub yes: bool,
    pub approve: Vec<String>,
    pub force: bool,
    pub lease_namespace: String,
    pub dry_run: bool,
    pub in_doubt: Option<InDoubt>,
    pub quiet: bool,
    /// Override of the state directory (tests); default `$LIFEBOAT_STATE_DIR` / XDG state.
    pub state_dir: Option<PathBuf>,
    /// Keep a shared copy of the journal in the cluster (shared.rs), in `lease_namespace`.
    pub shared_journal: bool,
    /// Webhooks told about the run besides the runbook's `notify:` (`--notify`).
    pub notify: Vec<crate::notify::Target>,
}

/// What `validate` found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    pub file: String,
    pub name: String,
    pub params: usize,
    pub steps: usize,
    pub finally: usize,
    pub checkpoints: Vec<String>,
}

impl crate::output::Render for Validation {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(
            w,
            "{}: runbook {} is valid ({} parameters, {} steps, {} finally steps, checkpoints: {})",
            self.file,
            self.name,
            self.params,
            self.steps,
            self.finally,
            if self.checkpoints.is_empty() {
                "none".to_string()
            } else {
                self.checkpoints.join(", ")
            }
        )
    }
}

pub fn validate(file: &Path, set: &[(String, String)]) -> Result<Validation, Error> {
    let l = spec::load(file)?;
    // Required parameters are only checked when some are given (a runbook on its own is valid
    // without values).
    if !set.is_empty() {
        spec::resolve_params(&l, set)?;
    }
    Ok(Validation {
        file: file.display().to_string(),
        name: l.runbook.metadata.name.clone(),
        params: l.runbook.params.len(),
        steps: l.steps.len(),
        finally: l.runbook.finally.len(),
        checkpoints: l
            .steps
            .iter()
            .filter(|s| s.checkpoint)
            .map(|s| s.id.clone())
            .collect(),
    })
}

async fn actor(client: &kube::Client) -> Actor {
    Actor {
        user: engine::os_user(),
        kubernetes: engine::kubernetes_identity(client).await,
    }
}

/// The result of `plan`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    pub file: String,
    pub content_hash: String,
    pub plan: plan::Plan,
    pub warnings: Vec<String>,
}

impl crate::output::Render for Planned {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let p = &self.plan;
        writeln!(
            w,
            "Plan for runbook {} on {} ({}{})",
            p.runbook.name,
            p.cluster.server,
            p.cluster.server_version,
            p.cluster
                .context
                .as_deref()
                .map(|c| format!(", context {c}"))
                .unwrap_or_default()
        )?;
        if !p.params.is_empty() {
            let ps: Vec<String> = p.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(w, "Parameters: {}", ps.join(" "))?;
        }
        writeln!(w)?;
        let idw = p
            .preview
            .iter()
            .map(|s| s.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            w,
            "  {:<3} {:<idw$}  {:<14} {:<6} PREVIEW",
            "#", "STEP", "ACTION", "UNDO"
        )?;
        for (i, s) in p.preview.iter().enumerate() {
            let mark = if s.checkpoint { " ⚑" } else { "" };
            let n = if s.finally {
                "f".to_string()
            } else {
                format!("{}", i + 1)
            };
            writeln!(
                w,
                "  {:<3} {:<idw$}  {:<14} {:<6} {}{mark}",
                n, s.id, s.action, s.undo, s.preview
            )?;
        }
        for warn in &self.warnings {
            writeln!(w, "warning: {warn}")?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "Wrote {} ({})",
            self.file,
            &self.content_hash[..19.min(self.content_hash.len())]
        )?;
        writeln!(w, "Run it with: lifeboat runbook run {}", self.file)
    }
}

pub async fn plan_command(
    runbook: &Path,
    set: &[(String, String)],
    file: Option<PathBuf>,
    cluster: &Cluster,
    cluster_options: &ClusterOptions,
    repo: &RepoOptions,
) -> Result<Planned, Error> {
    let actor = actor(&cluster.client).await;
    let (p, warnings) = plan::make(plan::PlanInput {
        runbook,
        set,
        cluster,
        cluster_options,
        repo,
        actor,
    })
    .await?;
    let file =
        file.unwrap_or_else(|| PathBuf::from("plans").join(format!("{}.yaml", p.runbook.name)));
    plan::write(&p, &file)?;
    Ok(Planned {
        file: file.display().to_string(),
        content_hash: p.content_hash.clone(),
        plan: p,
        warnings,
    })
}

/// A run as reported by run / resume / rollback / status.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub run: String,
    pub runbook: String,
    pub plan: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub journal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    pub dry_run: bool,
    pub steps: Vec<StepReport>,
    #[serde(skip)]
    pub exit: Option<RunStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    pub id: String,
    pub action: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub finally: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub checkpoint: bool,
    #[serde(flatten)]
    pub state: journal::StepState,
}

impl crate::output::Render for RunReport {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(
            w,
            "Run {}{}: {}",
            self.run,
            if self.dry_run { " (dry run)" } else { "" },
            self.status
        )?;
        if let Some(m) = &self.message {
            writeln!(w, "  {m}")?;
        }
        let idw = self
            .steps
            .iter()
            .map(|s| s.id.len() + if s.finally { 10 } else { 0 })
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            w,
            "  {:<idw$}  {:<14} {:<12} {:<3} MESSAGE",
            "STEP", "ACTION", "STATUS", "TRY"
        )?;
        for s in &self.steps {
            let status = serde_json::to_value(s.state.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let mut msg = s.state.message.clone().unwrap_or_default();
            if let Some(u) = &s.state.undo {
                msg = format!("{msg} [undo: {u}]");
            }
            if let Some(a) = &s.state.approved_by {
                msg = format!(
                    "approved by {}{}",
                    a.user,
                    a.kubernetes
                        .as_deref()
                        .map(|k| format!(" ({k})"))
                        .unwrap_or_default()
                );
            }
            let id = if s.finally {
                format!("{} (finally)", s.id)
            } else {
                s.id.clone()
            };
            writeln!(
                w,
                "  {:<idw$}  {:<14} {:<12} {:<3} {}{}",
                id,
                s.action,
                status,
                s.state.attempts,
                msg.lines().next().unwrap_or(""),
                if s.checkpoint { " ⚑" } else { "" }
            )?;
        }
        if self.dry_run {
            return writeln!(
                w,
                "(dry run: nothing was changed and no journal was written)"
            );
        }
        writeln!(w, "Journal: {}", self.journal)?;
        match self.status.as_str() {
            "awaiting-approval" | "stopped" | "interrupted" | "incomplete" | "failed" => {
                writeln!(w, "Continue with: lifeboat runbook resume {}", self.run)
            }
            _ => Ok(()),
        }
    }
}

fn report(
    run: &str,
    plan_file: &str,
    journal_path: &Path,
    loaded: &spec::Loaded,
    records: &[Record],
    dry_run: bool,
    exit: Option<RunStatus>,
) -> RunReport {
    let r = journal::replay(records);
    let steps = |list: &[Step], finally: bool| -> Vec<StepReport> {
        list.iter()
            .map(|s| StepReport {
                id: s.id.clone(),
                action: s.action.name().to_string(),
                finally,
                checkpoint: s.checkpoint,
                state: r.steps.get(&s.id).cloned().unwrap_or_default(),
            })
            .collect()
    };
    let expanded = spec::expand_runtime(loaded, |id| r.steps.get(id).map(|s| &s.outputs));
    let mut all = steps(&expanded, false);
    all.extend(steps(&loaded.runbook.finally, true));
    RunReport {
        run: run.to_string(),
        runbook: loaded.runbook.metadata.name.clone(),
        plan: plan_file.to_string(),
        status: r.finished.clone().unwrap_or_else(|| "incomplete".into()),
        message: r.finished_message.clone(),
        journal: journal_path.display().to_string(),
        started: r.started.as_ref().map(|s| s.time.clone()),
        updated: r.last_time.clone(),
        dry_run,
        steps: all,
        exit,
    }
}

impl RunReport {
    pub fn exit_code(&self) -> crate::error::Exit {
        match self.exit {
            Some(s) => s.exit(),
            None => crate::error::Exit::Success,
        }
    }

    /// For `runbook rollback`: the rollback was what was asked for, so one that completes is a
    /// success (0); 2 stays for a run that failed and was rolled back by itself.
    pub fn rollback_exit_code(&self) -> crate::error::Exit {
        match self.exit {
            Some(RunStatus::RolledBack) => crate::error::Exit::Success,
            _ => self.exit_code(),
        }
    }
}

/// Asks on the terminal (dialoguer).
pub struct TerminalPrompter {
    pub pre_approved: Vec<String>,
}

fn term_err(e: dialoguer::Error) -> Error {
    match e {
        dialoguer::Error::IO(e) if e.kind() == std::io::ErrorKind::Interrupted => {
            Error::Interrupted
        }
        dialoguer::Error::IO(source) => Error::Output { source },
    }
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl Prompter for TerminalPrompter {
    fn confirm_step(
        &self,
        index: usize,
        total: usize,
        step: &Step,
        preview: &str,
    ) -> Result<bool, Error> {
        blocking(|| {
            eprintln!();
            eprintln!(
                "Step {}/{}: {} ({}){}",
                index + 1,
                total,
                step.id,
                step.action.name(),
                step.description
                    .as_deref()
                    .map(|d| format!(" — {d}"))
                    .unwrap_or_default()
            );
            eprintln!("  {preview}");
            dialoguer::Confirm::new()
                .with_prompt("Run this step?")
                .default(true)
                .wait_for_newline(true)
                .interact()
                .map_err(term_err)
        })
    }

    fn approve(&self, step: &Step, message: &str, next: &[String]) -> Result<Option<bool>, Error> {
        blocking(|| {
            eprintln!();
            eprintln!("Approval needed ({}): {message}", step.id);
            if !next.is_empty() {
                eprintln!("Next steps:");
                for n in next.iter().take(8) {
                    eprintln!("  - {n}");
                }
                if next.len() > 8 {
                    eprintln!("  … and {} more", next.len() - 8);
                }
            }
            dialoguer::Confirm::new()
                .with_prompt("Approve?")
                .default(false)
                .wait_for_newline(true)
                .interact()
                .map(Some)
                .map_err(term_err)
        })
    }

    fn on_failure(
        &self,
        step: &Step,
        error: &str,
        rollback_to: &str,
    ) -> Result<Option<FailureChoice>, Error> {
        blocking(|| {
            eprintln!();
            eprintln!("Step {} failed: {error}", step.id);
            let items = [
                "retry the step".to_string(),
                "skip it and go on".to_string(),
                format!("roll back to {rollback_to}"),
                "abort (the run stays resumable)".to_string(),
            ];
            let i = dialoguer::Select::new()
                .with_prompt("What now?")
                .items(&items)
                .default(2)
                .interact()
                .map_err(term_err)?;
            Ok(Some(match i {
                0 => FailureChoice::Retry,
                1 => FailureChoice::Skip,
                2 => FailureChoice::Rollback,
                _ => FailureChoice::Abort,
            }))
        })
    }

    fn in_doubt(&self, step: &Step) -> Result<Option<InDoubt>, Error> {
        blocking(|| {
            eprintln!();
            eprintln!(
                "Step {} was started by a run that stopped before it finished; the command may have half-run.",
                step.id
            );
            let i = dialoguer::Select::new()
                .with_prompt("What now?")
                .items(["run it again", "treat it as done and go on"])
                .default(0)
                .interact()
                .map_err(term_err)?;
            Ok(Some(if i == 0 {
                InDoubt::Rerun
            } else {
                InDoubt::Skip
            }))
        })
    }
}

/// Answers from the command line (`--yes`, `--approve`).
pub struct Unattended {
    pub pre_approved: Vec<String>,
}

impl Prompter for Unattended {
    fn confirm_step(&self, _: usize, _: usize, _: &Step, _: &str) -> Result<bool, Error> {
        Ok(true)
    }
    fn approve(&self, step: &Step, _: &str, _: &[String]) -> Result<Option<bool>, Error> {
        Ok(self
            .pre_approved
            .iter()
            .any(|s| s == &step.id)
            .then_some(true))
    }
    fn on_failure(&self, _: &Step, _: &str, _: &str) -> Result<Option<FailureChoice>, Error> {
        Ok(None)
    }
    fn in_doubt(&self, _: &Step) -> Result<Option<InDoubt>, Error> {
        Ok(None)
    }
}

fn interactive(yes: bool) -> bool {
    use std::io::IsTerminal;
    !yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn new_run_id(name: &str) -> String {
    let now = jiff::Timestamp::now();
    let mut b = [0u8; 2];
    getrandom::getrandom(&mut b).expect("system random source");
    let short: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!(
        "{short}-{}-{}",
        now.strftime("%Y%m%d-%H%M%S"),
        hex::encode(b)
    )
}

/// Everything a run needs from the command line and settings.
pub struct Env<'a> {
    pub cluster: &'a Cluster,
    pub cluster_options: &'a ClusterOptions,
    pub repo: &'a RepoOptions,
}

/// The plan must run on the cluster it was made for: the same `kube-system` UID when the plan
/// has one (the URL may differ: another address of the same cluster), else the same server URL.
/// A different context or server version is only reported.
async fn check_cluster(
    p: &plan::Plan,
    plan_file: &str,
    cluster: &Cluster,
    context: Option<String>,
) -> Result<(), Error> {
    // Reachable at all? (Else "cannot confirm the cluster" would hide "cannot reach it".)
    let info = cluster
        .client
        .apiserver_version()
        .await
        .map_err(|source| crate::error::cluster_error(&cluster.server, source))?;
    match &p.cluster.uid {
        Some(want) => match crate::cluster::cluster_uid(&cluster.client).await {
            Some(got) if &got == want => {
                if p.cluster.server != cluster.server {
                    tracing::info!(
                        "{plan_file}: the same cluster (kube-system {want}) at another address: {} (planned at {})",
                        cluster.server,
                        p.cluster.server
                    );
                }
            }
            Some(got) => {
                return Err(Error::Runbook(format!(
                    "{plan_file} was planned for cluster {want} (kube-system namespace UID, at {}) but the current context reaches cluster {got} at {}; \
                     switch context (--context) or make a new plan",
                    p.cluster.server, cluster.server
                )));
            }
            None => {
                return Err(Error::Runbook(format!(
                    "{plan_file} was planned for cluster {want} (kube-system namespace UID) but the namespace kube-system cannot be read at {} to confirm it is the same cluster; \
                     run with an identity that may get namespace kube-system",
                    cluster.server
                )));
            }
        },
        None if p.cluster.server != cluster.server => {
            return Err(Error::Runbook(format!(
                "{plan_file} was planned for the cluster at {} but the current context points at {}; \
                 switch context (--context) or make a new plan",
                p.cluster.server, cluster.server
            )));
        }
        None => {}
    }
    if let (Some(planned), Some(now)) = (&p.cluster.context, &context)
        && planned != now
    {
        eprintln!(
            "note: {plan_file} was planned with kubeconfig context {planned}; this run uses {now} (the same cluster)"
        );
    }
    if info.git_version != p.cluster.server_version {
        eprintln!(
            "note: {plan_file} was planned on Kubernetes {}; the cluster now runs {}",
            p.cluster.server_version, info.git_version
        );
    }
    Ok(())
}

/// The run's webhooks: the runbook's `notify:` (URLs rendered: they may come from `env()`)
/// and `--notify`. Every URL is a secret for the redactor (webhook URLs carry tokens).
fn outbox(
    plan: &plan::Plan,
    loaded: &spec::Loaded,
    opts: &ExecOptions,
    redactor: &Redactor,
) -> crate::notify::Outbox {
    let engine = template::Engine::with_redactor(redactor.clone());
    let ctx = plan::template_context(&plan.params, &Default::default(), "", false);
    let mut targets = Vec::new();
    for (i, t) in loaded.runbook.notify.iter().enumerate() {
        // A webhook this machine cannot address (an env() it lacks) is a warning: a
        // notification never decides whether a run, resume or rollback goes ahead.
        match engine.render_value(&serde_json::Value::String(t.url.clone()), &ctx) {
            Ok(serde_json::Value::String(url)) if !url.is_empty() => {
                targets.push(crate::notify::Target { url, ..t.clone() })
            }
            Ok(_) => eprintln!("warning: notify[{i}]: the url renders empty; not notified"),
            Err(e) => eprintln!(
                "warning: notify[{i}]: {}; not notified",
                redactor.redact(&e)
            ),
        }
    }
    targets.extend(opts.notify.iter().cloned());
    for t in &targets {
        redactor.add(&t.url);
    }
    let r = redactor.clone();
    crate::notify::Outbox::new(
        targets,
        std::sync::Arc::new(crate::notify::Http),
        std::sync::Arc::new(move |s: &str| r.redact(s)),
    )
}

async fn exec_with_lease(
    env: &Env<'_>,
    opts: &ExecOptions,
    plan: &plan::Plan,
    loaded: &spec::Loaded,
    run: &str,
    plan_file: &str,
    journal_path: &Path,
    mut journal: Option<Journal>,
    records: Vec<Record>,
    actor: Actor,
    redactor: Redactor,
    lease: Option<lease::LeaseGuard>,
    what: Work<'_>,
) -> Result<RunReport, Error> {
    let prompter: Box<dyn Prompter> = if interactive(opts.yes) {
        Box::new(TerminalPrompter {
            pre_approved: opts.approve.clone(),
        })
    } else {
        Box::new(Unattended {
            pre_approved: opts.approve.clone(),
        })
    };
    let runner = Runner {
        plan,
        loaded,
        cluster: env.cluster,
        cluster_options: env.cluster_options,
        repo: env.repo,
        redactor: redactor.clone(),
        actor,
        prompter: prompter.as_ref(),
        pre_approved: opts.approve.clone(),
        approver: engine::kubernetes_user(&env.cluster.client).await,
        in_doubt: opts.in_doubt,
        force: opts.force,
        dry_run: opts.dry_run,
        quiet: opts.quiet,
        cleanup: Default::default(),
        hooks: Default::default(),
        log_dir: (!opts.dry_run).then(|| run_logs_dir(journal_path, run)),
        notify: if opts.dry_run {
            Default::default()
        } else {
            outbox(plan, loaded, opts, &redactor)
        },
    };
    let volume_cleanup = runner.cleanup.clone();
    let owed_hooks = runner.hooks.clone();
    let replay = journal::replay(&records);
    let mut progress = Progress {
        journal: journal.as_mut(),
        records,
        replay,
        run_id: run.to_string(),
        outputs: Default::default(),
    };
    let work = async {
        match what {
            Work::Execute => runner.execute(&mut progress).await,
            Work::Rollback(to) => {
                let (st, msg) = runner.rollback(&mut progress, to, None).await?;
                let fin_ok = runner.finally_steps(&mut progress).await?;
                let (st, msg) = if fin_ok || st != RunStatus::RolledBack {
                    (st, msg)
                } else {
                    (
                        RunStatus::Failed,
                        Some("rolled back, but a finally step failed".into()),
                    )
                };
                runner.finish(&mut progress, st, msg)
            }
        }
    };
    let result = tokio::select! {
        r = work => r,
        _ = crate::wait_for_signal() => Err(Error::Interrupted),
    };
    let status = match result {
        Ok(s) => s,
        Err(Error::Interrupted) => {
            // A backup step's temporary snapshot, claim and mover pod.
            for o in owed_hooks.run_all(&env.cluster.client).await {
                eprintln!(
                    "post hook {}/{}: {}",
                    o.namespace,
                    o.pod,
                    if o.ok { "ok" } else { o.message.as_str() }
                );
            }
            for f in volume_cleanup.run(&env.cluster.client).await {
                eprintln!("warning: could not delete {f}");
            }
            // The step in flight has an intent and no result: `resume` treats it as in doubt.
            if let Some(j) = journal.as_mut() {
                let _ = j.append(
                    Record::new(run, Event::RunFinished)
                        .status(RunStatus::Interrupted.as_str())
                        .message("interrupted (Ctrl-C / SIGTERM)"),
                );
            }
            if let Some(l) = lease {
                l.release().await;
            }
            for w in runner.notify.flush(std::time::Duration::from_secs(5)).await {
                eprintln!("warning: {w}");
            }
            eprintln!("interrupted; continue with: lifeboat runbook resume {run}");
            return Err(Error::Interrupted);
        }
        Err(e) => {
            for w in runner
                .notify
                .flush(std::time::Duration::from_secs(20))
                .await
            {
                eprintln!("warning: {w}");
            }
            if let Some(l) = lease {
                l.release().await;
            }
            return Err(e);
        }
    };
    for w in runner
        .notify
        .flush(std::time::Duration::from_secs(20))
        .await
    {
        eprintln!("warning: {w}");
    }
    if let Some(l) = lease {
        if status == RunStatus::AwaitingApproval {
            // A run waiting for approval may have a node half-drained: the change stays locked
            // until it is resumed (by this run only) or finished.
            l.park().await;
        } else {
            l.release().await;
        }
    }
    let records = if opts.dry_run {
        progress.records
    } else {
        journal::read(journal_path)?
    };
    let _ = redactor;
    Ok(report(
        run,
        plan_file,
        journal_path,
        loaded,
        &records,
        opts.dry_run,
        Some(status),
    ))
}

enum Work<'a> {
    Execute,
    Rollback(Option<&'a str>),
}

fn run_files(dir: &Path, run: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{run}.jsonl")),
        dir.join(format!("{run}.plan.yaml")),
    )
}

/// `runbook run PLAN`.
pub async fn run_plan(
    env: &Env<'_>,
    plan_path: &Path,
    opts: &ExecOptions,
) -> Result<RunReport, Error> {
    let (plan, loaded) = plan::load(plan_path)?;
    let plan_file = plan_path.display().to_string();
    if !opts.approve.is_empty() {
        // The one who starts the run is who `notStarter` means.
        let me = engine::kubernetes_identity(&env.cluster.client).await;
        check_pre_approvals(env, opts, &loaded, me.as_deref()).await?;
    }
    check_cluster(
        &plan,
        &plan_file,
        env.cluster,
        plan::context_name(env.cluster_options),
    )
    .await?;
    let actor = actor(&env.cluster.client).await;
    let redactor = Redactor::default();
    let run = new_run_id(&plan.runbook.name);
    let dir = journal::runs_dir(opts.state_dir.as_deref())?;
    let (journal_path, plan_copy) = run_files(&dir, &run);
    let mut journal = None;
    let mut records = Vec::new();
    let lease = take_lease(env, opts, &plan, &run, &actor).await?;
    if !opts.dry_run {
        let plan_text = std::fs::read(plan_path).map_err(|source| Error::ReadFile {
            path: plan_path.to_owned(),
            source,
        });
        // The shared copy first: when the cluster refuses it, nothing is left behind here.
        let mirror = match plan_text {
            Ok(text) if opts.shared_journal => Some(
                shared::Shared::create(
                    &env.cluster.client,
                    &opts.lease_namespace,
                    &run,
                    &plan.runbook.name,
                    &text,
                    b"",
                )
                .await,
            ),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
        .transpose();
        let mirror = match mirror {
            Ok(m) => m,
            Err(e) => {
                if let Some(l) = lease {
                    l.release().await;
                }
                return Err(e);
            }
        };
        let mut j = match Journal::create(&dir, &run, redactor.clone()) {
            Ok(j) => j,
            Err(e) => {
                if let Some(l) = lease {
                    l.release().await;
                }
                return Err(e);
            }
        };
        if let Some(m) = mirror {
            j.attach(m);
        }
        crate::drill::report::write_atomic(
            &plan_copy,
            &std::fs::read_to_string(plan_path).map_err(|source| Error::ReadFile {
                path: plan_path.to_owned(),
                source,
            })?,
        )?;
        let mut rec = Record::new(&run, Event::RunStarted);
        rec.actor = Some(actor.clone());
        rec.details = Some(serde_json::json!({
            "plan": plan_file, "planHash": plan.content_hash, "runbook": plan.runbook.name,
            "server": env.cluster.server, "context": plan.cluster.context,
        }));
        j.append(rec.clone())?;
        records.push(rec);
        journal = Some(j);
        if !opts.quiet {
            eprintln!("run {run} (journal {})", journal_path.display());
        }
    }
    exec_with_lease(
        env,
        opts,
        &plan,
        &loaded,
        &run,
        &plan_file,
        &journal_path,
        journal,
        records,
        actor,
        redactor,
        lease,
        Work::Execute,
    )
    .await
}

enum SharedState {
    /// The local journal equals the shared one (taken from it if the shared one was ahead).
    Attached(shared::Shared),
    /// The local journal is ahead (a crash between the local write and the shared one).
    PushLocal(shared::Shared),
    /// No shared copy yet (an older run, or one made with --no-shared-journal).
    Missing,
}

/// Bring the local copy of `run` in line with the shared one: fetched when this machine has
/// none or an older one. Diverged copies are refused.
async fn sync_shared(
    client: &kube::Client,
    opts: &ExecOptions,
    run: &str,
) -> Result<Option<SharedState>, Error> {
    let dir = journal::runs_dir(opts.state_dir.as_deref())?;
    let (journal_path, plan_copy) = run_files(&dir, run);
    let local = std::fs::read(&journal_path).ok();
    let Some(f) = shared::Shared::fetch(client, &opts.lease_namespace, run).await? else {
        return Ok(local.map(|_| SharedState::Missing));
    };
    let take = |f: &shared::Fetched| -> Result<(), Error> {
        shared::write_local(&plan_copy, &f.plan)?;
        shared::write_local(&journal_path, &f.journal)
    };
    match local {
        None => {
            take(&f)?;
            eprintln!(
                "run {run}: journal taken from the cluster ({}/{})",
                opts.lease_namespace,
                shared::secret_name(run)
            );
            Ok(Some(SharedState::Attached(f.handle)))
        }
        Some(l) => match shared::relate(&l, &f.journal) {
            shared::Relation::Same => Ok(Some(SharedState::Attached(f.handle))),
            shared::Relation::SharedAhead => {
                // Only while nobody holds the local journal (a lock taken and released).
                drop(Journal::open(&dir, run, Redactor::default())?);
                take(&f)?;
                eprintln!(
                    "run {run}: the cluster's journal is newer than this machine's; continuing from it"
                );
                Ok(Some(SharedState::Attached(f.handle)))
            }
            shared::Relation::LocalAhead => Ok(Some(SharedState::PushLocal(f.handle))),
            shared::Relation::SharedWon => {
                drop(Journal::open(&dir, run, Redactor::default())?);
                take(&f)?;
                eprintln!(
                    "run {run}: this machine's last journal record never reached the cluster, and another machine went on from the cluster's copy; continuing from it"
                );
                Ok(Some(SharedState::Attached(f.handle)))
            }
            shared::Relation::Diverged => Err(Error::Runbook(format!(
                "the journal of run {run} on this machine ({}) and the one in the cluster ({}/{}) differ: two machines worked on it; \
                 compare them and keep one before going on",
                journal_path.display(),
                opts.lease_namespace,
                shared::secret_name(run)
            ))),
        },
    }
}

/// Fetch the shared journals this machine does not have (or has older copies of) into the
/// local state directory; returns how many were taken. Runs in progress here are left alone.
pub async fn pull_shared(
    client: &kube::Client,
    namespace: &str,
    state_dir: Option<&Path>,
) -> Result<usize, Error> {
    let dir = journal::runs_dir(state_dir)?;
    let mut n = 0;
    for (run, f) in shared::Shared::list(client, namespace).await? {
        if !journal::valid_run_id(&run) {
            continue;
        }
        let (journal_path, plan_copy) = run_files(&dir, &run);
        let take = match std::fs::read(&journal_path) {
            Err(_) => true,
            Ok(l) => match shared::relate(&l, &f.journal) {
                shared::Relation::SharedAhead => {
                    Journal::open(&dir, &run, Redactor::default()).is_ok()
                }
                shared::Relation::SharedWon => {
                    let ok = Journal::open(&dir, &run, Redactor::default()).is_ok();
                    if ok {
                        eprintln!(
                            "run {run}: this machine's last journal record never reached the cluster, and another machine went on from the cluster's copy; showing that"
                        );
                    }
                    ok
                }
                _ => false,
            },
        };
        if take {
            shared::write_local(&plan_copy, &f.plan)?;
            shared::write_local(&journal_path, &f.journal)?;
            n += 1;
        }
    }
    Ok(n)
}

/// `<runs dir>/<run>.logs/`: the output of the run's `run` steps, one `<step>.log` each.
fn run_logs_dir(journal_path: &Path, run: &str) -> PathBuf {
    journal_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{run}.logs"))
}

async fn take_lease(
    env: &Env<'_>,
    opts: &ExecOptions,
    plan: &plan::Plan,
    run: &str,
    actor: &Actor,
) -> Result<Option<lease::LeaseGuard>, Error> {
    if opts.dry_run {
        return Ok(None);
    }
    lease::acquire(
        &env.cluster.client,
        &opts.lease_namespace,
        &plan::change_key(plan),
        run,
        &actor.user,
    )
    .await
    .map(Some)
}

fn open_run(opts: &ExecOptions, run: &str) -> Result<(PathBuf, PathBuf, PathBuf), Error> {
    let dir = journal::runs_dir(opts.state_dir.as_deref())?;
    let (journal_path, plan_copy) = run_files(&dir, run);
    if !journal_path.exists() {
        return Err(Error::Usage(format!(
            "no run {run} in {} (see `lifeboat runbook list`)",
            dir.display()
        )));
    }
    Ok((dir, journal_path, plan_copy))
}

/// Open a run's journal (locked), in step with its shared copy in the cluster: fetched when
/// this machine has none or an older one, pushed when this one is ahead, created when missing.
async fn open_synced(
    env: &Env<'_>,
    opts: &ExecOptions,
    run: &str,
    redactor: &Redactor,
) -> Result<(PathBuf, PathBuf, PathBuf, Journal), Error> {
    // The shared copy: another machine may have started or continued this run.
    let mirror = if opts.shared_journal {
        sync_shared(&env.cluster.client, opts, run).await?
    } else {
        None
    };
    let (dir, journal_path, plan_copy) = open_run(opts, run)?;
    // First the journal's lock: another process working on this run stops us here.
    let mut j = Journal::open(&dir, run, redactor.clone())?;
    match mirror {
        Some(SharedState::Attached(m)) => j.attach(m),
        Some(SharedState::PushLocal(mut m)) => {
            m.push(j.bytes()).await?;
            j.attach(m);
        }
        Some(SharedState::Missing) => {
            let plan_text = std::fs::read(&plan_copy).map_err(|source| Error::ReadFile {
                path: plan_copy.clone(),
                source,
            })?;
            let runbook = plan::load(&plan_copy)
                .map(|(p, _)| p.runbook.name)
                .unwrap_or_default();
            let m = shared::Shared::create(
                &env.cluster.client,
                &opts.lease_namespace,
                run,
                &runbook,
                &plan_text,
                j.bytes(),
            )
            .await?;
            j.attach(m);
        }
        None => {}
    }
    Ok((dir, journal_path, plan_copy, j))
}

/// [`open_synced`], then the plan copy, checked (hash, and that this is its cluster).
async fn open_checked(
    env: &Env<'_>,
    opts: &ExecOptions,
    run: &str,
    redactor: &Redactor,
) -> Result<(PathBuf, PathBuf, plan::Plan, spec::Loaded, Journal), Error> {
    let (_dir, journal_path, plan_copy, j) = open_synced(env, opts, run, redactor).await?;
    let (plan, loaded) = plan::load(&plan_copy)?;
    check_cluster(
        &plan,
        &plan_copy.display().to_string(),
        env.cluster,
        plan::context_name(env.cluster_options),
    )
    .await?;
    Ok((journal_path, plan_copy, plan, loaded, j))
}

/// `runbook approve RUN STEP`: record an approval of a run that waits for it, from any machine
/// (the shared journal), checked against the step's approvers; the run goes on at its next
/// `resume` (by anyone).
pub async fn approve(
    env: &Env<'_>,
    run: &str,
    step: &str,
    opts: &ExecOptions,
) -> Result<String, Error> {
    let redactor = Redactor::default();
    let (journal_path, _plan_copy, plan, loaded, mut j) =
        open_checked(env, opts, run, &redactor).await?;
    let records = journal::read(&journal_path)?;
    let state = journal::replay(&records);
    let waiting = records
        .iter()
        .rev()
        .find(|r| r.event == Event::AwaitingApproval)
        .and_then(|r| r.step.clone());
    let decided = state
        .steps
        .get(step)
        .is_some_and(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Failed));
    let over = matches!(
        state.finished.as_deref(),
        Some("succeeded" | "partly-succeeded" | "rolled-back" | "rollback-failed")
    );
    if decided || over || waiting.as_deref() != Some(step) {
        return Err(Error::Usage(format!(
            "run {run} is not waiting for the approval of step {step} (status: {}{})",
            state.finished.as_deref().unwrap_or("incomplete"),
            waiting
                .map(|w| format!("; last asked for: {w}"))
                .unwrap_or_default()
        )));
    }
    let expanded = spec::expand_runtime(&loaded, |id| state.steps.get(id).map(|s| &s.outputs));
    let Some(spec::Action::Approve(a)) = expanded.iter().find(|s| s.id == step).map(|s| &s.action)
    else {
        return Err(Error::Usage(format!(
            "{step} is not an approve step of run {run}"
        )));
    };
    let me = actor(&env.cluster.client).await;
    if let Some(rules) = &a.approvers {
        let who = engine::kubernetes_user(&env.cluster.client).await;
        let starter = state
            .started
            .as_ref()
            .and_then(|r| r.actor.as_ref())
            .and_then(|a| a.kubernetes.clone());
        if let Some(why) = engine::approval_refusal(rules, who.as_ref(), starter.as_deref()) {
            return Err(Error::Runbook(format!(
                "cannot approve step {step} of run {run}: {why}"
            )));
        }
    }
    let mut rec = Record::new(run, Event::Approval).step(step);
    rec.actor = Some(me.clone());
    rec.details = Some(serde_json::json!({
        "via": "runbook approve", "message": a.message, "planHash": plan.content_hash,
    }));
    j.append(rec)?;
    Ok(format!(
        "approved step {step} of run {run} as {}{}; continue with: lifeboat runbook resume {run}",
        me.user,
        me.kubernetes
            .map(|k| format!(" (Kubernetes: {k})"))
            .unwrap_or_default()
    ))
}

/// `--approve STEP` for a step that names approvers: refused before anything is written when
/// whoever runs this may not approve it.
async fn check_pre_approvals(
    env: &Env<'_>,
    opts: &ExecOptions,
    loaded: &spec::Loaded,
    starter: Option<&str>,
) -> Result<(), Error> {
    let mut who: Option<Option<(String, Vec<String>)>> = None;
    for id in &opts.approve {
        let Some(spec::Action::Approve(a)) =
            loaded.steps.iter().find(|s| &s.id == id).map(|s| &s.action)
        else {
            continue;
        };
        let Some(rules) = &a.approvers else { continue };
        if who.is_none() {
            who = Some(engine::kubernetes_user(&env.cluster.client).await);
        }
        let me = who.as_ref().and_then(|w| w.as_ref());
        if let Some(why) = engine::approval_refusal(rules, me, starter) {
            return Err(Error::Runbook(format!("--approve {id}: {why}")));
        }
    }
    Ok(())
}

/// `runbook resume RUN` and `runbook rollback RUN --to …`.
pub async fn continue_run(
    env: &Env<'_>,
    run: &str,
    opts: &ExecOptions,
    rollback_to: Option<&str>,
) -> Result<RunReport, Error> {
    let redactor = Redactor::default();
    let (journal_path, plan_copy, plan, loaded, mut j) =
        open_checked(env, opts, run, &redactor).await?;
    let records = journal::read(&journal_path)?;
    let state = journal::replay(&records);
    let starter = state
        .started
        .as_ref()
        .and_then(|r| r.actor.as_ref())
        .and_then(|a| a.kubernetes.clone());
    check_pre_approvals(env, opts, &loaded, starter.as_deref()).await?;
    let plan_file = state
        .started
        .as_ref()
        .and_then(|r| r.details.as_ref())
        .and_then(|d| d["plan"].as_str().map(str::to_string))
        .unwrap_or_else(|| plan_copy.display().to_string());
    if rollback_to.is_none() && state.finished.as_deref() == Some("succeeded") {
        return Err(Error::Usage(format!(
            "run {run} already succeeded; nothing to resume"
        )));
    }
    if rollback_to.is_none() && state.finished.as_deref() == Some("partly-succeeded") {
        return Err(Error::Usage(format!(
            "run {run} ran every step (some forEach items failed within maxFailures: see `runbook status {run}`);              nothing to resume: plan the failed items again, or `runbook rollback {run} --to start`"
        )));
    }
    let to = match rollback_to {
        Some("start") => Some(None),
        Some(cp) => {
            let expanded =
                spec::expand_runtime(&loaded, |id| state.steps.get(id).map(|s| &s.outputs));
            let Some(s) = expanded.iter().find(|s| s.id == cp) else {
                return Err(Error::Usage(format!(
                    "--to {cp}: no such step in runbook {} (checkpoints: {})",
                    loaded.runbook.metadata.name,
                    checkpoints(&loaded)
                )));
            };
            if !s.checkpoint {
                return Err(Error::Usage(format!(
                    "--to {cp}: step {cp} is not a checkpoint (checkpoints: {})",
                    checkpoints(&loaded)
                )));
            }
            if state.steps.get(cp).map(|x| x.status) != Some(StepStatus::Succeeded) {
                return Err(Error::Usage(format!(
                    "--to {cp}: the run never reached checkpoint {cp}; use --to start or an earlier checkpoint"
                )));
            }
            Some(Some(cp))
        }
        // A rollback that was interrupted is finished before anything else.
        None => state.pending_rollback.as_ref().map(|t| t.as_deref()),
    };
    if rollback_to.is_none()
        && let Some(t) = to
        && !opts.quiet
    {
        eprintln!(
            "run {run} was interrupted while rolling back to {}; finishing the rollback",
            t.unwrap_or("start")
        );
    }
    env.cluster
        .client
        .apiserver_version()
        .await
        .map_err(|source| crate::error::cluster_error(&env.cluster.server, source))?;
    let actor = actor(&env.cluster.client).await;
    if let Some(target) = to
        && interactive(opts.yes)
    {
        let n = loaded
            .steps
            .iter()
            .filter(|s| state.steps.get(&s.id).map(|x| x.status) == Some(StepStatus::Succeeded))
            .count();
        let ok = blocking(|| {
            dialoguer::Confirm::new()
                .with_prompt(format!(
                    "Roll run {run} back to {} (up to {n} completed steps are undone)?",
                    target.unwrap_or("the start")
                ))
                .default(false)
                .wait_for_newline(true)
                .interact()
                .map_err(term_err)
        })?;
        if !ok {
            return Err(Error::Runbook(
                "rollback not confirmed; nothing was changed".into(),
            ));
        }
    }
    let lease = take_lease(env, opts, &plan, run, &actor).await?;
    let mut rec = Record::new(run, Event::RunResumed);
    rec.actor = Some(actor.clone());
    rec.message = Some(match to {
        Some(t) => format!("rollback to {}", t.unwrap_or("start")),
        None => "resume".into(),
    });
    if let Err(e) = j.append(rec.clone()) {
        if let Some(l) = lease {
            l.release().await;
        }
        return Err(e);
    }
    let mut records = records;
    records.push(rec);
    if !opts.quiet {
        eprintln!(
            "{} run {run} (journal {})",
            if to.is_some() {
                "rolling back"
            } else {
                "resuming"
            },
            journal_path.display()
        );
    }
    exec_with_lease(
        env,
        opts,
        &plan,
        &loaded,
        run,
        &plan_file,
        &journal_path,
        Some(j),
        records,
        actor,
        redactor,
        lease,
        match to {
            Some(t) => Work::Rollback(t),
            None => Work::Execute,
        },
    )
    .await
}

fn checkpoints(l: &spec::Loaded) -> String {
    let c: Vec<&str> = l
        .steps
        .iter()
        .filter(|s| s.checkpoint)
        .map(|s| s.id.as_str())
        .collect();
    if c.is_empty() {
        "none".into()
    } else {
        c.join(", ")
    }
}

/// `runbook status [RUN]`.
/// `runbook logs RUN [STEP] [-f]`: the run's step logs (`<run>.logs/<step>.log`, redacted when
/// written) to `w`, in runbook order; with `follow`, new output until the journal's last record
/// says the run stopped.
pub async fn logs(
    run: &str,
    step: Option<&str>,
    follow: bool,
    state_dir: Option<&Path>,
    w: &mut dyn std::io::Write,
) -> Result<(), Error> {
    use std::io::{Read, Seek};
    let opts = ExecOptions {
        state_dir: state_dir.map(Path::to_path_buf),
        ..Default::default()
    };
    let (_, journal_path, plan_copy) = open_run(&opts, run)?;
    let (_, loaded) = plan::load(&plan_copy)?;
    let dir = run_logs_dir(&journal_path, run);
    let state = journal::replay(&journal::read(&journal_path)?);
    let all: Vec<String> =
        spec::expand_runtime(&loaded, |id| state.steps.get(id).map(|s| &s.outputs))
            .iter()
            .chain(loaded.runbook.finally.iter())
            .map(|s| s.id.clone())
            .collect();
    let ids: Vec<String> = match step {
        Some(s) if !all.iter().any(|id| id == s) => {
            return Err(Error::Usage(format!("{s} is not a step of run {run}")));
        }
        Some(s) => vec![s.to_string()],
        None => all,
    };
    let out_err = |source| Error::Output { source };
    let mut offsets: std::collections::BTreeMap<String, u64> = Default::default();
    let mut printed_any = false;
    loop {
        // Read the journal first: output written before it says "stopped" is still printed.
        let stopped = journal::read(&journal_path)?
            .last()
            .is_some_and(|r| r.event == journal::Event::RunFinished);
        for id in &ids {
            let path = dir.join(format!("{id}.log"));
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            let off = offsets.entry(id.clone()).or_insert(0);
            f.seek(std::io::SeekFrom::Start(*off))
                .map_err(|source| Error::ReadFile {
                    path: path.clone(),
                    source,
                })?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            // Whole lines only (a line being written is printed once complete).
            let upto = match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if stopped => buf.len(),
                None => 0,
            };
            if upto == 0 {
                continue;
            }
            *off += upto as u64;
            printed_any = true;
            if ids.len() > 1 {
                for line in String::from_utf8_lossy(&buf[..upto]).lines() {
                    writeln!(w, "{id} │ {line}").map_err(out_err)?;
                }
            } else {
                w.write_all(&buf[..upto]).map_err(out_err)?;
            }
            w.flush().map_err(out_err)?;
        }
        if !follow || stopped {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = crate::wait_for_signal() => return Err(Error::Interrupted),
        }
    }
    if !printed_any && !follow {
        eprintln!(
            "no output recorded for {} of run {run} (only `run` steps record output)",
            step.map(|s| format!("step {s}"))
                .unwrap_or_else(|| "any step".into())
        );
    }
    Ok(())
}

/// Whether this machine has `run`'s journal.
pub fn is_local_run(run: &str, state_dir: Option<&Path>) -> bool {
    journal::runs_dir(state_dir)
        .map(|d| run_files(&d, run).0.exists())
        .unwrap_or(false)
}

pub fn status(run: Option<&str>, state_dir: Option<&Path>) -> Result<RunReport, Error> {
    let opts = ExecOptions {
        state_dir: state_dir.map(Path::to_path_buf),
        ..Default::default()
    };
    let run = match run {
        Some(r) => r.to_string(),
        None => {
            let dir = journal::runs_dir(state_dir)?;
            journal::list_runs(&dir)?
                .into_iter()
                .next()
                .map(|(id, _)| id)
                .ok_or_else(|| Error::Usage(format!("no runs in {}", dir.display())))?
        }
    };
    let (_, journal_path, plan_copy) = open_run(&opts, &run)?;
    let (_, loaded) = plan::load(&plan_copy)?;
    let records = journal::read(&journal_path)?;
    let plan_file = journal::replay(&records)
        .started
        .and_then(|r| r.details)
        .and_then(|d| d["plan"].as_str().map(str::to_string))
        .unwrap_or_else(|| plan_copy.display().to_string());
    Ok(report(
        &run,
        &plan_file,
        &journal_path,
        &loaded,
        &records,
        false,
        None,
    ))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunList {
    pub runs: Vec<RunSummary>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub run: String,
    pub runbook: String,
    pub status: String,
    pub started: Option<String>,
    pub updated: Option<String>,
    pub steps_done: usize,
    pub steps: usize,
}

impl crate::output::Render for RunList {
    fn table(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        if self.runs.is_empty() {
            return writeln!(w, "no runs yet");
        }
        let rw = self
            .runs
            .iter()
            .map(|r| r.run.len())
            .max()
            .unwrap_or(3)
            .max(3);
        writeln!(w, "{:<rw$}  {:<18} {:<6} STARTED", "RUN", "STATUS", "STEPS")?;
        for r in &self.runs {
            writeln!(
                w,
                "{:<rw$}  {:<18} {:<6} {}",
                r.run,
                r.status,
                format!("{}/{}", r.steps_done, r.steps),
                r.started.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    }
}

pub fn list(state_dir: Option<&Path>) -> Result<RunList, Error> {
    let dir = journal::runs_dir(state_dir)?;
    let mut runs = Vec::new();
    for (id, path) in journal::list_runs(&dir)? {
        let records = match journal::read(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "unreadable journal");
                continue;
            }
        };
        let r = journal::replay(&records);
        let runbook = r
            .started
            .as_ref()
            .and_then(|s| s.details.as_ref())
            .and_then(|d| d["runbook"].as_str().map(str::to_string))
            .unwrap_or_default();
        let (_, plan_copy) = run_files(&dir, &id);
        let total = plan::load(&plan_copy)
            .map(|(_, l)| l.steps.len() + l.runbook.finally.len())
            .unwrap_or(r.steps.len());
        runs.push(RunSummary {
            run: id,
            runbook,
            status: r.finished.clone().unwrap_or_else(|| "incomplete".into()),
            started: r.started.as_ref().map(|s| s.time.clone()),
            updated: r.last_time.clone(),
            steps_done: r
                .steps
                .values()
                .filter(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped))
                .count(),
            steps: total,
        });
    }
    Ok(RunList { runs })
}
