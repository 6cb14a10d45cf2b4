//! Executing a plan: steps in order, each journaled (intent, then result), approvals, retries,
//! failure handling, rollback to checkpoints, `finally` steps, resume from the journal.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use super::actions::{self, Ctx};
use super::journal::{self, Actor, Event, Journal, Record, Replay, StepStatus};
use super::plan::{self, Plan};
use super::spec::{self, Action, Loaded, Step, Undo};
use super::template::{self, Redactor};
use crate::cluster::{Cluster, ClusterOptions};
use crate::error::Error;
use crate::repo::access::RepoOptions;

/// How a run ended (or paused). Decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    RolledBack,
    AwaitingApproval,
    RollbackFailed,
    /// Every step ran, but forEach items failed within their group's `maxFailures`.
    PartlySucceeded,
    /// Stopped by the operator at a prompt; resumable.
    Stopped,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::RolledBack => "rolled-back",
            RunStatus::AwaitingApproval => "awaiting-approval",
            RunStatus::RollbackFailed => "rollback-failed",
            RunStatus::PartlySucceeded => "partly-succeeded",
            RunStatus::Stopped => "stopped",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn exit(self) -> crate::error::Exit {
        use crate::error::Exit;
        match self {
            RunStatus::Succeeded => Exit::Success,
            RunStatus::Failed | RunStatus::Stopped | RunStatus::PartlySucceeded => Exit::Failure,
            RunStatus::RolledBack => Exit::Findings,
            RunStatus::AwaitingApproval => Exit::Blocked,
            RunStatus::RollbackFailed => Exit::RollbackFailed,
            RunStatus::Interrupted => Exit::Interrupted,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InDoubt {
    /// Run the step again
    Rerun,
    /// Treat the step as done and go on
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureChoice {
    Retry,
    Skip,
    Rollback,
    Abort,
}

/// The person at the keyboard (or the flags standing in for them). One implementation asks on
/// the terminal, the other answers from the command line; the engine does not know which.
pub trait Prompter: Send + Sync {
    /// Before a step that changes the cluster. `false` stops the run (resumable).
    fn confirm_step(
        &self,
        index: usize,
        total: usize,
        step: &Step,
        preview: &str,
    ) -> Result<bool, Error>;
    /// An `approve` step: `Some(true)` approved, `Some(false)` declined, `None` nobody can
    /// answer (unattended without a pre-approval).
    fn approve(&self, step: &Step, message: &str, next: &[String]) -> Result<Option<bool>, Error>;
    /// A step failed after its retries. `None`: decide without asking (roll back).
    fn on_failure(
        &self,
        step: &Step,
        error: &str,
        rollback_to: &str,
    ) -> Result<Option<FailureChoice>, Error>;
    /// A step was started by a run that died before recording its result.
    fn in_doubt(&self, step: &Step) -> Result<Option<InDoubt>, Error>;
}

/// Everything fixed for one execution.
pub struct Runner<'a> {
    pub plan: &'a Plan,
    pub loaded: &'a Loaded,
    pub cluster: &'a Cluster,
    pub cluster_options: &'a ClusterOptions,
    pub repo: &'a RepoOptions,
    pub redactor: Redactor,
    pub actor: Actor,
    pub prompter: &'a dyn Prompter,
    pub pre_approved: Vec<String>,
    /// The Kubernetes user and groups of whoever runs this (for steps that name approvers).
    pub approver: Option<(String, Vec<String>)>,
    pub in_doubt: Option<InDoubt>,
    pub force: bool,
    pub dry_run: bool,
    pub quiet: bool,
    /// Temporary volume objects of a `backup` step in flight, deleted when the run is
    /// interrupted.
    pub cleanup: crate::volume::snapshots::Cleanup,
    /// Post hooks of a `backup` step in flight, run when the run is interrupted.
    pub hooks: crate::backup::hooks::Pending,
    /// Where `run` steps write their output (`runbook logs`); None in dry runs.
    pub log_dir: Option<std::path::PathBuf>,
    /// Webhooks told about the run (empty in dry runs).
    pub notify: crate::notify::Outbox,
}

pub struct Progress<'a> {
    pub journal: Option<&'a mut Journal>,
    /// Every record of the run so far (read from the journal on resume).
    pub records: Vec<Record>,
    pub replay: Replay,
    pub run_id: String,
    /// Dry runs keep their own step states (nothing is journaled).
    pub outputs: BTreeMap<String, BTreeMap<String, Value>>,
}

/// The step's `timeout`, else its action's default (1 hour for backup, restore and drill: they
/// move data; 30 minutes for job; 5 minutes for the others).
fn step_timeout(s: &Step) -> Duration {
    let default = s.action.default_timeout();
    s.timeout
        .as_deref()
        .and_then(|t| spec::duration(t).ok())
        .unwrap_or(default)
}

impl Runner<'_> {
    fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("{}", self.redactor.redact(line));
        }
    }

    fn ctx<'b>(&'b self, run_id: &'b str, step_id: &'b str, dry_run: bool) -> Ctx<'b> {
        Ctx {
            cluster: self.cluster,
            cluster_options: self.cluster_options,
            repo: self.repo,
            run_id,
            step_id,
            files: &self.plan.runbook.files,
            redactor: &self.redactor,
            dry_run,
            cleanup: &self.cleanup,
            hooks: &self.hooks,
            log_dir: self.log_dir.as_deref(),
            live: !self.quiet,
            instance: String::new(),
            eval: None,
        }
    }

    fn template_ctx(&self, p: &Progress) -> Value {
        let mut steps = BTreeMap::new();
        for (id, st) in &p.replay.steps {
            // Outputs produced by this process are used as they are; those read back from the
            // journal have their secrets redacted.
            let outputs = p.outputs.get(id).unwrap_or(&st.outputs);
            steps.insert(id.clone(), json!({"outputs": outputs, "status": st.status}));
        }
        plan::template_context(&self.plan.params, &steps, &p.run_id, self.dry_run)
    }

    fn record(&self, p: &mut Progress, rec: Record) -> Result<(), Error> {
        let rec = journal::redact(&self.redactor, rec);
        if let Some(j) = p.journal.as_deref_mut() {
            j.append(rec.clone())?;
        }
        // Keep the in-memory state in step with the file.
        p.records.push(rec.clone());
        p.replay = journal::replay(&p.records);
        if !self.dry_run && !self.notify.is_empty() {
            self.notify_about(p, &rec);
        }
        Ok(())
    }

    /// The notification a journal record means, if any: awaiting approval, the end of a run
    /// (finished, failed, rolled back), the last step of a forEach item.
    fn notify_about(&self, p: &Progress, rec: &Record) {
        let name = &self.plan.runbook.name;
        let status = rec.status.as_deref().unwrap_or_default();
        let event = match rec.event {
            Event::AwaitingApproval => "awaitingApproval",
            Event::RunFinished => match status {
                "succeeded" | "partly-succeeded" => "finished",
                "rolled-back" | "rollback-failed" => "rolledBack",
                "failed" => "failed",
                _ => return,
            },
            Event::Result if status == "succeeded" => {
                let Some(step) = rec.step.as_deref() else {
                    return;
                };
                let Some(item) = self.item_ends(p, step) else {
                    return;
                };
                let mut n =
                    crate::notify::Notification::new("runbook", "item", &rec.run, name, status);
                n.step = Some(step.to_string());
                n.message = format!(
                    "forEach item {} done",
                    crate::runbook::spec::item_label(&item)
                );
                n.details = json!({"item": item});
                self.notify.send(&n);
                return;
            }
            _ => return,
        };
        let mut n = crate::notify::Notification::new(
            "runbook",
            event,
            &rec.run,
            name,
            if event == "awaitingApproval" {
                "awaiting-approval"
            } else {
                status
            },
        );
        n.step = rec.step.clone();
        n.message = rec.message.clone().unwrap_or_default();
        self.notify.send(&n);
    }

    /// The forEach item whose last step is `step` (None: not the end of an item).
    fn item_ends(&self, p: &Progress, step: &str) -> Option<Value> {
        let steps = self.steps(p);
        let i = steps.iter().position(|s| s.id == step)?;
        let group = steps[i].group_item.as_ref()?;
        let later_same = steps[i + 1..]
            .iter()
            .any(|n| n.group_item.as_ref() == Some(group));
        (!later_same).then(|| steps[i].vars.get("item").cloned().unwrap_or_default())
    }

    /// The run's steps as far as known: run-time groups expanded once their items are.
    pub fn steps(&self, p: &Progress) -> Vec<Step> {
        spec::expand_runtime(self.loaded, |id| {
            p.outputs
                .get(id)
                .or_else(|| p.replay.steps.get(id).map(|s| &s.outputs))
        })
    }

    pub fn finish(
        &self,
        p: &mut Progress,
        status: RunStatus,
        message: Option<String>,
    ) -> Result<RunStatus, Error> {
        let mut rec = Record::new(&p.run_id, Event::RunFinished).status(status.as_str());
        rec.message = message;
        self.record(p, rec)?;
        Ok(status)
    }

    /// Run (or continue) the main steps, then the `finally` steps.
    pub async fn execute(&self, p: &mut Progress<'_>) -> Result<RunStatus, Error> {
        let (status, message) = self.main_steps(p).await?;
        if matches!(status, RunStatus::AwaitingApproval | RunStatus::Stopped) {
            return self.finish(p, status, message);
        }
        let fin_ok = self.finally_steps(p).await?;
        let (status, message) = if !fin_ok && status == RunStatus::Succeeded {
            (RunStatus::Failed, Some("a finally step failed".to_string()))
        } else {
            (status, message)
        };
        self.finish(p, status, message)
    }

    async fn main_steps(&self, p: &mut Progress<'_>) -> Result<(RunStatus, Option<String>), Error> {
        let mut i = 0;
        loop {
            // Again at every step: a run-time group grows the list once its items are known.
            let steps = self.steps(p);
            let total = steps.len();
            if i >= total {
                break;
            }
            let step = &steps[i];
            let state = p.replay.steps.get(&step.id).map(|s| s.status);
            if matches!(state, Some(StepStatus::Succeeded | StepStatus::Skipped)) {
                i += 1;
                continue;
            }
            // The failed step of an item given up under maxFailures (its later steps were
            // skipped for it): it stays failed, also after a resume.
            if state == Some(StepStatus::Failed)
                && p.replay.steps.get(&step.id).is_some_and(|x| x.abandoned)
            {
                i += 1;
                continue;
            }
            if state == Some(StepStatus::InDoubt) && !self.dry_run {
                if !step.action.safe_to_repeat() {
                    let choice = match self.in_doubt {
                        Some(c) => c,
                        None => match self.prompter.in_doubt(step)? {
                            Some(c) => c,
                            None => {
                                return Err(Error::Usage(format!(
                                    "step {} (a `{}` step, not safe to repeat) may have run already: a run stopped before it finished, \
                                     or a forced rollback passed over it without undoing it. Give --in-doubt rerun or --in-doubt skip",
                                    step.id,
                                    step.action.name()
                                )));
                            }
                        },
                    };
                    if choice == InDoubt::Skip {
                        self.record(p, {
                            let mut r = Record::new(&p.run_id, Event::Result)
                                .step(&step.id)
                                .status("skipped")
                                .message(
                                    "in doubt after an interrupted run; skipped (--in-doubt skip)",
                                );
                            r.details = Some(json!({"inDoubt": true}));
                            r
                        })?;
                        self.say(&format!("  - {}: skipped (in doubt)", step.id));
                        i += 1;
                        continue;
                    }
                } else {
                    self.say(&format!(
                        "  {} was interrupted last time; running it again ({} is safe to repeat)",
                        step.id,
                        step.action.name()
                    ));
                }
            }
            match self.run_step(p, step, i, total, false).await? {
                StepEnd::Done => i += 1,
                StepEnd::Paused(s, m) => return Ok((s, Some(m))),
                StepEnd::Failed(err) => {
                    if let Some(allowed) = step.max_failures
                        && let Some(prefix) = &step.group_item
                        && failed_items(&steps, &p.replay, step.group_id.as_deref()).len()
                            <= allowed
                    {
                        let label =
                            spec::item_label(&step.vars.get("item").cloned().unwrap_or_default());
                        let why = format!(
                            "item {label} failed at step {}; its remaining steps are skipped (maxFailures {allowed})",
                            step.id
                        );
                        let mut r = Record::new(&p.run_id, Event::Result)
                            .step(&step.id)
                            .status("failed")
                            .message(format!("{err} (item given up: maxFailures {allowed})"));
                        r.details = Some(json!({"abandoned": true}));
                        self.record(p, r)?;
                        for s in steps[i + 1..]
                            .iter()
                            .filter(|s| s.group_item.as_ref() == Some(prefix))
                        {
                            let mut r = Record::new(&p.run_id, Event::Result)
                                .step(&s.id)
                                .status("skipped")
                                .message(&why);
                            r.details = Some(json!({"abandoned": true}));
                            self.record(p, r)?;
                        }
                        self.say(&format!("  ⚠ {why}; going on with the next item"));
                        i += 1;
                        continue;
                    }
                    let target = self.rollback_target(p, step);
                    let target_label = target.clone().unwrap_or_else(|| "start".into());
                    let choice = if self.dry_run {
                        Some(FailureChoice::Abort)
                    } else {
                        self.prompter.on_failure(
                            step,
                            &self.redactor.redact(&err),
                            &target_label,
                        )?
                    };
                    match choice {
                        Some(FailureChoice::Retry) => continue,
                        Some(FailureChoice::Skip) => {
                            self.record(
                                p,
                                Record::new(&p.run_id, Event::Result)
                                    .step(&step.id)
                                    .status("skipped")
                                    .message(format!(
                                        "skipped by {} after it failed: {err}",
                                        self.actor.user
                                    )),
                            )?;
                            i += 1;
                        }
                        Some(FailureChoice::Abort) => {
                            return Ok((
                                RunStatus::Failed,
                                Some(format!("step {} failed: {err}", step.id)),
                            ));
                        }
                        Some(FailureChoice::Rollback) | None => {
                            return self.rollback(p, target.as_deref(), Some(step)).await;
                        }
                    }
                }
            }
        }
        let steps = self.steps(p);
        let failed: Vec<String> = steps
            .iter()
            .filter(|s| s.max_failures.is_some())
            .filter(|s| p.replay.steps.get(&s.id).map(|x| x.status) == Some(StepStatus::Failed))
            .map(|s| {
                format!(
                    "{} (at {})",
                    spec::item_label(&s.vars.get("item").cloned().unwrap_or_default()),
                    s.id
                )
            })
            .collect();
        if !failed.is_empty() {
            return Ok((
                RunStatus::PartlySucceeded,
                Some(format!(
                    "every step ran, but {} item(s) failed within maxFailures: {}",
                    failed.len(),
                    failed.join(", ")
                )),
            ));
        }
        Ok((RunStatus::Succeeded, None))
    }

    pub async fn finally_steps(&self, p: &mut Progress<'_>) -> Result<bool, Error> {
        let steps = &self.loaded.runbook.finally;
        let mut ok = true;
        // Every execution that ends runs them (again): after a resume, a rollback, …
        for (i, step) in steps.iter().enumerate() {
            match self.run_step(p, step, i, steps.len(), true).await? {
                StepEnd::Done => {}
                StepEnd::Failed(_) | StepEnd::Paused(..) => ok = false,
            }
        }
        Ok(ok)
    }

    /// Stop at an `approve` step: journaled as awaiting approval, `how` says how to go on.
    fn await_approval(
        &self,
        p: &mut Progress,
        step: &Step,
        message: &str,
        how: &str,
    ) -> Result<StepEnd, Error> {
        self.record(
            p,
            Record::new(&p.run_id, Event::AwaitingApproval)
                .step(&step.id)
                .message(message),
        )?;
        self.say(how);
        Ok(StepEnd::Paused(
            RunStatus::AwaitingApproval,
            format!("step {} needs approval: {message}", step.id),
        ))
    }

    /// The checkpoint a failure of `step` rolls back to (None: the start).
    fn rollback_target(&self, p: &Progress, step: &Step) -> Option<String> {
        if let Some(t) = &step.rollback_to {
            return Some(t.clone());
        }
        let steps = self.steps(p);
        let idx = steps.iter().position(|s| s.id == step.id).unwrap_or(0);
        steps[..idx]
            .iter()
            .rev()
            .find(|s| {
                s.checkpoint
                    && p.replay.steps.get(&s.id).map(|x| x.status) == Some(StepStatus::Succeeded)
            })
            .map(|s| s.id.clone())
    }

    async fn run_step(
        &self,
        p: &mut Progress<'_>,
        step: &Step,
        index: usize,
        total: usize,
        is_finally: bool,
    ) -> Result<StepEnd, Error> {
        let label = if is_finally {
            format!("finally {}/{}", index + 1, total)
        } else {
            format!("{}/{}", index + 1, total)
        };
        let tctx = plan::with_vars(self.template_ctx(p), step);
        let engine = template::Engine::with_redactor(self.redactor.clone());
        let engine = if self.dry_run {
            engine.lenient()
        } else {
            engine
        };
        if let Some(w) = &step.when {
            match engine.condition(w, &tctx) {
                Ok(true) => {}
                Ok(false) => {
                    self.record(
                        p,
                        Record::new(&p.run_id, Event::Result)
                            .step(&step.id)
                            .status("skipped")
                            .message(format!("when: {w} is false")),
                    )?;
                    self.say(&format!(
                        "[{label}] {}: skipped (when {w} is false)",
                        step.id
                    ));
                    return Ok(StepEnd::Done);
                }
                Err(e) => return self.fail_without_intent(p, step, e),
            }
        }
        let action = match plan::render_action(&engine, &step.action, &tctx) {
            Ok(a) => a,
            Err(e) => return self.fail_without_intent(p, step, e),
        };
        if serde_json::to_string(&action)
            .map(|t| t.contains("[REDACTED]"))
            .unwrap_or(false)
        {
            return self.fail_without_intent(
                p,
                step,
                "this step uses a secret output of a step that ran before the run was resumed; \
                 secrets are not kept in the journal, so it cannot be rendered now"
                    .into(),
            );
        }
        let headline = match &step.description {
            Some(d) => format!("[{label}] {}: {d}", step.id),
            None => format!("[{label}] {} ({})", step.id, action.name()),
        };

        if let Action::Approve(a) = &action {
            self.say(&headline);
            if self.dry_run {
                self.say("  would ask for approval");
                return Ok(StepEnd::Done);
            }
            let pre = self.pre_approved.iter().any(|s| s == &step.id);
            // An approval in the journal counts only for this plan (its content hash).
            let already = p.records.iter().any(|r| {
                r.event == journal::Event::Approval
                    && r.step.as_deref() == Some(step.id.as_str())
                    && r.details
                        .as_ref()
                        .and_then(|d| d["planHash"].as_str())
                        .is_none_or(|h| h == self.plan.content_hash)
            }) && p
                .replay
                .steps
                .get(&step.id)
                .and_then(|s| s.approved_by.clone())
                .is_some();
            // Approvers named by the step: checked for whoever approves here (the journal's
            // approvals were checked by `runbook approve`).
            if let Some(rules) = &a.approvers
                && !already
            {
                let starter = p
                    .replay
                    .started
                    .as_ref()
                    .and_then(|r| r.actor.as_ref())
                    .and_then(|a| a.kubernetes.clone());
                if let Some(why) =
                    approval_refusal(rules, self.approver.as_ref(), starter.as_deref())
                {
                    if pre {
                        return Err(Error::Runbook(format!("--approve {}: {why}", step.id)));
                    }
                    let how = format!(
                        "  ⏸ needs approval by an approver of this step ({why}): lifeboat runbook approve {} {}",
                        p.run_id, step.id
                    );
                    return self.await_approval(p, step, &a.message, &how);
                }
            }
            let verdict = if pre || already {
                Some(true)
            } else {
                let next = self.next_steps(p, &step.id);
                self.prompter
                    .approve(step, &self.redactor.redact(&a.message), &next)?
            };
            match verdict {
                Some(true) => {
                    if !already {
                        let mut rec = Record::new(&p.run_id, Event::Approval).step(&step.id);
                        rec.actor = Some(self.actor.clone());
                        rec.details = Some(json!({
                            "via": if pre { "--approve" } else { "prompt" },
                            "message": a.message,
                            "planHash": self.plan.content_hash,
                        }));
                        self.record(p, rec)?;
                    }
                    self.record(
                        p,
                        Record::new(&p.run_id, Event::Result)
                            .step(&step.id)
                            .status("succeeded")
                            .message(format!("approved by {}", self.actor.user)),
                    )?;
                    self.say(&format!("  ✓ approved by {}", describe_actor(&self.actor)));
                    return Ok(StepEnd::Done);
                }
                Some(false) => {
                    let msg = format!("approval declined by {}", self.actor.user);
                    self.record(
                        p,
                        Record::new(&p.run_id, Event::Result)
                            .step(&step.id)
                            .status("failed")
                            .message(&msg),
                    )?;
                    self.say(&format!("  ✗ {msg}"));
                    return Ok(StepEnd::Failed(msg));
                }
                None => {
                    let how = format!(
                        "  ⏸ needs approval: {}\n  continue with: lifeboat runbook resume {} --approve {}",
                        a.message, p.run_id, step.id
                    );
                    return self.await_approval(p, step, &a.message, &how);
                }
            }
        }

        let run_id = p.run_id.clone();
        let eval = |expr: &str| engine.condition(expr, &tctx);
        let mut ctx = self.ctx(&run_id, &step.id, self.dry_run);
        ctx.eval = Some(&eval);
        ctx.instance = instance_of(p, &step.id, false);

        if action.mutates() && !self.dry_run {
            let preview = actions::preview(&ctx, &action)
                .await
                .unwrap_or_else(|e| format!("(no preview: {e})"));
            if !self
                .prompter
                .confirm_step(index, total, step, &self.redactor.redact(&preview))?
            {
                self.say(&headline);
                return Ok(StepEnd::Paused(
                    RunStatus::Stopped,
                    format!("stopped by {} before step {}", self.actor.user, step.id),
                ));
            }
        }
        self.say(&headline);
        let attempts = step.retry.as_ref().map(|r| r.attempts).unwrap_or(1).max(1);
        let mut backoff = step
            .retry
            .as_ref()
            .and_then(|r| spec::duration(&r.backoff).ok())
            .unwrap_or(Duration::from_secs(5));
        let timeout = step_timeout(step);
        let prior_attempts = p
            .replay
            .steps
            .get(&step.id)
            .map(|s| s.attempts)
            .unwrap_or(0);
        let mut last_err = String::new();
        for attempt in 1..=attempts {
            let n = prior_attempts + attempt;
            ctx.instance = instance_of(p, &step.id, false);
            let before = if self.dry_run {
                None
            } else {
                match actions::capture_before(&ctx, &action).await {
                    Ok(b) => b,
                    Err(e) => {
                        last_err = format!("cannot record the state before the step: {e}");
                        self.failed_attempt(p, step, n, &last_err, (attempt, attempts))?;
                        if attempt < attempts {
                            tokio::time::sleep(backoff).await;
                            backoff *= 2;
                        }
                        continue;
                    }
                }
            };
            let mut intent = Record::new(&p.run_id, Event::Intent).step(&step.id);
            intent.attempt = Some(n);
            intent.action = Some(action.name().into());
            intent.actor = Some(self.actor.clone());
            intent.before = before;
            self.record(p, intent)?;
            let res = tokio::time::timeout(
                timeout + Duration::from_secs(5),
                actions::execute(&ctx, &action, timeout),
            )
            .await;
            let res = match res {
                Ok(r) => r,
                Err(_) => {
                    // The action was abandoned mid-way: its temporary objects (a backup's
                    // snapshot, claim and mover pod) are deleted now, not left behind.
                    for o in self.hooks.run_all(&self.cluster.client).await {
                        self.say(&format!(
                            "  post hook {}/{}: {}",
                            o.namespace,
                            o.pod,
                            if o.ok { "ok" } else { o.message.as_str() }
                        ));
                    }
                    for f in self.cleanup.run(&self.cluster.client).await {
                        self.say(&format!("  warning: could not delete {f}"));
                    }
                    Err(format!("step timed out after {}s", timeout.as_secs()))
                }
            };
            match res {
                Ok(out) => {
                    let mut rec = Record::new(&p.run_id, Event::Result)
                        .step(&step.id)
                        .status("succeeded")
                        .message(&out.summary);
                    rec.attempt = Some(n);
                    rec.outputs = Some(out.outputs.clone());
                    self.record(p, rec)?;
                    p.outputs.insert(step.id.clone(), out.outputs);
                    self.say(&format!("  ✓ {}", out.summary));
                    return Ok(StepEnd::Done);
                }
                Err(e) => {
                    last_err = e;
                    self.failed_attempt(p, step, n, &last_err, (attempt, attempts))?;
                    if attempt < attempts {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
        Ok(StepEnd::Failed(last_err))
    }

    /// Journal and show a failed attempt (`of`: this attempt and how many there are).
    fn failed_attempt(
        &self,
        p: &mut Progress,
        step: &Step,
        n: u32,
        msg: &str,
        of: (u32, u32),
    ) -> Result<(), Error> {
        let mut rec = Record::new(&p.run_id, Event::Result)
            .step(&step.id)
            .status("failed")
            .message(msg);
        rec.attempt = Some(n);
        self.record(p, rec)?;
        self.say(&format!("  ✗ attempt {}/{}: {msg}", of.0, of.1));
        Ok(())
    }

    fn fail_without_intent(
        &self,
        p: &mut Progress,
        step: &Step,
        e: String,
    ) -> Result<StepEnd, Error> {
        self.record(
            p,
            Record::new(&p.run_id, Event::Result)
                .step(&step.id)
                .status("failed")
                .message(&e),
        )?;
        self.say(&format!("  ✗ {}: {e}", step.id));
        Ok(StepEnd::Failed(e))
    }

    fn next_steps(&self, p: &Progress, after: &str) -> Vec<String> {
        let steps = self.steps(p);
        let idx = steps
            .iter()
            .position(|s| s.id == after)
            .map(|i| i + 1)
            .unwrap_or(0);
        steps[idx..]
            .iter()
            .map(|s| {
                let preview = self
                    .plan
                    .preview
                    .iter()
                    .find(|x| x.id == s.id)
                    .map(|x| x.preview.clone())
                    .unwrap_or_default();
                format!("{} ({}): {}", s.id, s.action.name(), preview)
            })
            .collect()
    }

    /// Undo completed steps in reverse order back to `to` (a checkpoint; None: the start).
    /// `failed` is the step whose failure triggered this (it is undone too when its action
    /// records its prior state).
    pub async fn rollback(
        &self,
        p: &mut Progress<'_>,
        to: Option<&str>,
        failed: Option<&Step>,
    ) -> Result<(RunStatus, Option<String>), Error> {
        let steps = &self.steps(p);
        let start = match to {
            Some(cp) => {
                let i = steps
                    .iter()
                    .position(|s| s.id == cp)
                    .ok_or_else(|| Error::Usage(format!("{cp} is not a step of this runbook")))?;
                if !steps[i].checkpoint {
                    return Err(Error::Usage(format!("step {cp} is not a checkpoint")));
                }
                i + 1
            }
            None => 0,
        };
        let mut rec = Record::new(&p.run_id, Event::RollbackStarted)
            .message(format!("rolling back to {}", to.unwrap_or("start")));
        rec.actor = Some(self.actor.clone());
        rec.step = failed.map(|s| s.id.clone());
        rec.details = Some(json!({"to": to}));
        self.record(p, rec)?;
        self.say(&format!("↩ rolling back to {}", to.unwrap_or("the start")));
        let todo: Vec<&Step> = steps[start..]
            .iter()
            .filter(|s| match p.replay.steps.get(&s.id) {
                Some(x) => match x.status {
                    // Skipped steps too: behind the rollback point they are evaluated again.
                    StepStatus::Succeeded | StepStatus::UndoFailed | StepStatus::Skipped => true,
                    // Started but not completed: undone only if it got as far as its intent.
                    StepStatus::Failed | StepStatus::InDoubt => x.attempts > 0,
                    _ => false,
                },
                None => false,
            })
            .collect();
        // Irreversible steps that started and failed: they may have changed something part-way
        // (id, whether the runbook declared `undo: none` itself).
        let mut unfinished: Vec<(String, bool)> = Vec::new();
        for (k, s) in todo.iter().enumerate().rev() {
            let st = p.replay.steps.get(&s.id).cloned().unwrap_or_default();
            let completed = matches!(st.status, StepStatus::Succeeded | StepStatus::UndoFailed);
            let left =
                || -> Vec<String> { todo[..=k].iter().rev().map(|s| s.id.clone()).collect() };
            let undo = s.effective_undo();
            let skip = |p: &mut Progress, why: String| -> Result<(), Error> {
                self.record(
                    p,
                    Record::new(&p.run_id, Event::UndoResult)
                        .step(&s.id)
                        .status("skipped")
                        .message(&why),
                )?;
                self.say(&format!("  - {}: {why}", s.id));
                Ok(())
            };
            match undo {
                _ if st.in_doubt_skipped => {
                    skip(
                        p,
                        "was skipped while in doubt (it may have half-run) and cannot be undone automatically; check it by hand"
                            .into(),
                    )?;
                    unfinished.push((s.id.clone(), true));
                    continue;
                }
                _ if st.status == StepStatus::Skipped && st.before.is_none() => {
                    skip(p, "was skipped; nothing to undo".into())?;
                    continue;
                }
                Undo::Skip => {
                    skip(p, "nothing to undo".into())?;
                    continue;
                }
                Undo::None if !completed => {
                    skip(
                        p,
                        "did not complete and cannot be undone automatically; check it by hand"
                            .into(),
                    )?;
                    unfinished.push((s.id.clone(), matches!(s.undo, Some(Undo::None))));
                    continue;
                }
                Undo::None if self.force => {
                    let why = "irreversible (undo: none); passed over because of --force: it is not undone, and a resume asks before running it again";
                    self.record(
                        p,
                        Record::new(&p.run_id, Event::UndoResult)
                            .step(&s.id)
                            .status("passed-over")
                            .message(why),
                    )?;
                    self.say(&format!("  - {}: {why}", s.id));
                    continue;
                }
                Undo::None => {
                    let msg = format!(
                        "step {} cannot be undone (undo: none); the rollback stopped there. Left to undo by hand: {}. \
                         Or run `lifeboat runbook rollback {} --to {} --force` to pass over it",
                        s.id,
                        left().join(", "),
                        p.run_id,
                        to.unwrap_or("start")
                    );
                    self.say(&format!("  ✗ {msg}"));
                    return Ok((RunStatus::RollbackFailed, Some(msg)));
                }
                Undo::Auto if st.before.is_none() => {
                    skip(
                        p,
                        "nothing was changed (no prior state was recorded)".into(),
                    )?;
                    continue;
                }
                _ => {}
            }
            if st.undo_in_flight {
                // The last process stopped during this undo: it may have happened. Auto undos
                // read the current state first (a repeat finds it done); an undo action is
                // repeated only when it is safe to repeat.
                let repeatable = match &undo {
                    Undo::Action(a) => a.safe_to_repeat(),
                    _ => true,
                };
                if !repeatable && self.force {
                    let why = format!(
                        "its undo ({}) was in flight when the last run stopped and is not safe to repeat; passed over because of --force: check by hand whether it happened",
                        undo_name(&undo)
                    );
                    skip(p, why)?;
                    unfinished.push((s.id.clone(), false));
                    continue;
                }
                if !repeatable {
                    let msg = format!(
                        "the undo of step {} ({}) was in flight when the last run stopped and is not safe to repeat; check whether it happened, then `lifeboat runbook rollback {} --to {} --force` to pass over it. Left to undo: {}",
                        s.id,
                        undo_name(&undo),
                        p.run_id,
                        to.unwrap_or("start"),
                        left().join(", ")
                    );
                    self.say(&format!("  ✗ {msg}"));
                    return Ok((RunStatus::RollbackFailed, Some(msg)));
                }
                self.say(&format!(
                    "  … {}: its undo was in flight when the last run stopped; repeating it (it checks the current state first)",
                    s.id
                ));
            }
            let mut intent = Record::new(&p.run_id, Event::UndoIntent).step(&s.id);
            intent.actor = Some(self.actor.clone());
            self.record(p, intent)?;
            let run_id = p.run_id.clone();
            let mut ctx = self.ctx(&run_id, &s.id, false);
            ctx.instance = instance_of(p, &s.id, true);
            let result = match &undo {
                // The prior state names what to restore: nothing is rendered again (a template
                // may need what is gone now, such as an env() value).
                Undo::Auto => {
                    actions::undo_auto(&ctx, &s.action, st.before.as_ref().expect("checked")).await
                }
                Undo::Action(a) => {
                    let engine = template::Engine::with_redactor(self.redactor.clone());
                    match plan::render_action(&engine, a, &plan::with_vars(self.template_ctx(p), s))
                    {
                        Ok(a) => actions::execute(&ctx, &a, step_timeout(s))
                            .await
                            .map(|o| o.summary),
                        Err(e) => Err(e),
                    }
                }
                _ => unreachable!("handled above"),
            };
            crate::faults::point("runbook.undo.before-result");
            match result {
                Ok(summary) => {
                    self.record(
                        p,
                        Record::new(&p.run_id, Event::UndoResult)
                            .step(&s.id)
                            .status("undone")
                            .message(&summary),
                    )?;
                    // Only now that the undo is journaled: what the capture kept for it (a
                    // Secret's prior state) is deleted. A repeat after a crash before this
                    // point still has it.
                    if let (Undo::Auto, Some(before)) = (&undo, st.before.as_ref()) {
                        actions::forget_capture(&ctx, &s.action, before).await;
                    }
                    self.say(&format!("  ↩ {}: {summary}", s.id));
                }
                Err(e) => {
                    self.record(
                        p,
                        Record::new(&p.run_id, Event::UndoResult)
                            .step(&s.id)
                            .status("failed")
                            .message(&e),
                    )?;
                    let msg = format!(
                        "undoing step {} failed: {e}. Left to undo by hand: {}",
                        s.id,
                        left().join(", ")
                    );
                    self.say(&format!("  ✗ {msg}"));
                    return Ok((RunStatus::RollbackFailed, Some(msg)));
                }
            }
        }
        let target = to.unwrap_or("start");
        if unfinished.iter().any(|(_, declared)| *declared) {
            // The runbook said this step cannot be undone, and it stopped part-way: not a clean
            // rollback.
            let ids: Vec<&str> = unfinished.iter().map(|(id, _)| id.as_str()).collect();
            let msg = format!(
                "rolled back to {target}, except step {} (undo: none), which failed part-way and cannot be undone; check it by hand",
                ids.join(", ")
            );
            self.say(&format!("  ✗ {msg}"));
            return Ok((RunStatus::RollbackFailed, Some(msg)));
        }
        if !unfinished.is_empty() {
            let ids: Vec<&str> = unfinished.iter().map(|(id, _)| id.as_str()).collect();
            return Ok((
                RunStatus::RolledBack,
                Some(format!(
                    "rolled back to {target}; step {} failed and has no undo: check what it did by hand",
                    ids.join(", ")
                )),
            ));
        }
        Ok((
            RunStatus::RolledBack,
            Some(format!("rolled back to {target}")),
        ))
    }
}

/// See [`Ctx::instance`]: counts of the step's failed attempts and of its undos so far (an
/// attempt that crashed has no result, so its resume gets the same instance).
fn instance_of(p: &Progress, step: &str, undo: bool) -> String {
    let count = |ev: Event, status: Option<&str>| {
        p.records
            .iter()
            .filter(|r| {
                r.event == ev
                    && r.step.as_deref() == Some(step)
                    && status.is_none_or(|s| r.status.as_deref() == Some(s))
            })
            .count()
    };
    let undos = count(Event::UndoResult, None);
    if undo {
        format!("undo{undos}")
    } else {
        format!("{}.{undos}", count(Event::Result, Some("failed")))
    }
}

/// The items of group `group` with a failed step.
fn failed_items<'a>(
    steps: &'a [Step],
    replay: &journal::Replay,
    group: Option<&str>,
) -> BTreeSet<&'a str> {
    steps
        .iter()
        .filter(|s| s.group_id.as_deref() == group && group.is_some())
        .filter(|s| replay.steps.get(&s.id).map(|x| x.status) == Some(StepStatus::Failed))
        .filter_map(|s| s.group_item.as_deref())
        .collect()
}

fn undo_name(u: &Undo) -> &'static str {
    match u {
        Undo::Action(a) => a.name(),
        Undo::Auto => "auto",
        Undo::None => "none",
        Undo::Skip => "skip",
    }
}

fn describe_actor(a: &Actor) -> String {
    match &a.kubernetes {
        Some(k) => format!("{} (Kubernetes: {k})", a.user),
        None => a.user.clone(),
    }
}

enum StepEnd {
    Done,
    Failed(String),
    Paused(RunStatus, String),
}

/// The OS user running lifeboat.
pub fn os_user() -> String {
    if let Ok(u) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"))
        && !u.is_empty()
    {
        return u;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata("/proc/self") {
            let uid = m.uid();
            let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|t| {
                t.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
                })
            });
            return name.unwrap_or_else(|| format!("uid:{uid}"));
        }
    }
    "unknown".into()
}

/// Who the cluster says we are (SelfSubjectReview); None when the API is not allowed.
pub async fn kubernetes_identity(client: &kube::Client) -> Option<String> {
    kubernetes_user(client).await.map(|(u, _)| u)
}

/// The Kubernetes user name and groups lifeboat acts as (SelfSubjectReview).
pub async fn kubernetes_user(client: &kube::Client) -> Option<(String, Vec<String>)> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    let review: SelfSubjectReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}
    }))
    .ok()?;
    let r = api
        .create(&kube::api::PostParams::default(), &review)
        .await
        .ok()?;
    let ui = r.status?.user_info?;
    Some((ui.username?, ui.groups.unwrap_or_default()))
}

/// Why `who` (Kubernetes user, groups) may not approve under `rules`; `starter` is the
/// Kubernetes identity that started the run.
pub fn approval_refusal(
    rules: &crate::runbook::spec::Approvers,
    who: Option<&(String, Vec<String>)>,
    starter: Option<&str>,
) -> Option<String> {
    let Some((user, groups)) = who else {
        return Some(
            "this step names approvers, and the Kubernetes identity of whoever approves could not be read (SelfSubjectReview)"
                .into(),
        );
    };
    if rules.not_starter && starter == Some(user.as_str()) {
        return Some(format!(
            "{user} started this run; this step needs another person's approval"
        ));
    }
    let listed = !rules.users.is_empty() || !rules.groups.is_empty();
    if listed
        && !rules.users.iter().any(|u| u == user)
        && !rules.groups.iter().any(|g| groups.contains(g))
    {
        return Some(format!(
            "{user} is not an approver of this step (users: {}; groups: {})",
            if rules.users.is_empty() {
                "-".to_string()
            } else {
                rules.users.join(", ")
            },
            if rules.groups.is_empty() {
                "-".to_string()
            } else {
                rules.groups.join(", ")
            }
        ));
    }
    None
}

#[cfg(test)]
mod approver_tests {
    use super::approval_refusal;
    use crate::runbook::spec::Approvers;

    #[test]
    fn approvers_by_user_group_and_four_eyes() {
        let rules = Approvers {
            users: vec!["alice".into()],
            groups: vec!["ops-leads".into()],
            not_starter: true,
        };
        let who =
            |u: &str, g: &[&str]| Some((u.to_string(), g.iter().map(|s| s.to_string()).collect()));
        assert!(approval_refusal(&rules, who("alice", &[]).as_ref(), Some("bob")).is_none());
        assert!(
            approval_refusal(&rules, who("carol", &["ops-leads"]).as_ref(), Some("bob")).is_none()
        );
        assert!(
            approval_refusal(&rules, who("dave", &["dev"]).as_ref(), Some("bob"))
                .unwrap()
                .contains("not an approver")
        );
        assert!(
            approval_refusal(&rules, who("alice", &[]).as_ref(), Some("alice"))
                .unwrap()
                .contains("started this run")
        );
        assert!(
            approval_refusal(&rules, None, Some("bob")).is_some(),
            "unknown identity: refused"
        );
        let anyone_else = Approvers {
            not_starter: true,
            ..Default::default()
        };
        assert!(approval_refusal(&anyone_else, who("dave", &[]).as_ref(), Some("bob")).is_none());
    }
}
