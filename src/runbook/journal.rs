//! The run journal: one append-only JSONL file per run (docs/runbooks.md). Every record is
//! written and fsync'd before the program goes on: an *intent* before each action (with the
//! state undo needs), a *result* after it. Replaying the file gives the state of the run, which
//! is all `resume`, `rollback` and `status` need.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::template::Redactor;
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    RunStarted,
    RunResumed,
    Intent,
    Result,
    Approval,
    AwaitingApproval,
    RollbackStarted,
    UndoIntent,
    UndoResult,
    RunFinished,
}

/// Who did something: the OS user and the Kubernetes identity lifeboat used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub time: String,
    pub run: String,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The state before the action, as undo needs it (never Secret data: see docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// run-started: plan file, plan hash, runbook name; approval: how it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl Record {
    pub fn new(run: &str, event: Event) -> Record {
        Record {
            time: jiff::Timestamp::now().to_string(),
            run: run.to_string(),
            event,
            step: None,
            attempt: None,
            action: None,
            actor: None,
            before: None,
            outputs: None,
            status: None,
            message: None,
            details: None,
        }
    }
    pub fn step(mut self, s: &str) -> Self {
        self.step = Some(s.to_string());
        self
    }
    pub fn status(mut self, s: &str) -> Self {
        self.status = Some(s.to_string());
        self
    }
    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }
}

/// Where runs live: `$LIFEBOAT_STATE_DIR`, else `$XDG_STATE_HOME/lifeboat/runs` (Linux), else
/// the platform's data directory.
pub fn runs_dir(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = explicit {
        return Ok(p.join("runs"));
    }
    if let Some(p) = std::env::var_os("LIFEBOAT_STATE_DIR") {
        return Ok(PathBuf::from(p).join("runs"));
    }
    let dirs = directories::ProjectDirs::from("io", "lifeboat", "lifeboat").ok_or_else(|| {
        Error::Usage("no home directory: set LIFEBOAT_STATE_DIR for the run journals".into())
    })?;
    Ok(dirs
        .state_dir()
        .unwrap_or_else(|| dirs.data_dir())
        .join("runs"))
}

pub struct Journal {
    pub run: String,
    pub path: PathBuf,
    file: std::fs::File,
    /// Holds the exclusive lock: one process per run (a killed process releases it).
    _lock: Option<std::fs::File>,
    redactor: Redactor,
    /// The journal as written so far (what the shared copy is given).
    text: Vec<u8>,
    /// The shared copy in the cluster (super::shared), written after each local append.
    mirror: Option<super::shared::Shared>,
}

fn lock(file: &std::fs::File, run: &str, path: &Path) -> Result<(), Error> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Runbook(format!(
            "run {run} is in progress in another lifeboat process (its journal {} is locked)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(path, e)),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::ReadFile {
        path: path.to_owned(),
        source,
    }
}

impl Journal {
    /// Create the journal of a new run (fails if it exists).
    pub fn create(dir: &Path, run: &str, redactor: Redactor) -> Result<Journal, Error> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let path = dir.join(format!("{run}.jsonl"));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        lock(&file, run, &path)?;
        // The new directory entry must survive a crash too.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(Journal {
            run: run.to_string(),
            path,
            file,
            _lock: None,
            redactor,
            text: Vec::new(),
            mirror: None,
        })
    }

    /// Open an existing run's journal for appending.
    pub fn open(dir: &Path, run: &str, redactor: Redactor) -> Result<Journal, Error> {
        let path = dir.join(format!("{run}.jsonl"));
        let locked = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        lock(&locked, run, &path)?;
        // A crash in the middle of a write leaves a torn last line: cut it off, or the next
        // record would be glued to it.
        let text = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if keep < text.len() {
            locked.set_len(keep as u64).map_err(|e| io_err(&path, e))?;
            locked.sync_data().map_err(|e| io_err(&path, e))?;
        }
        let mut text = text;
        text.truncate(keep);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        // The locked handle stays open as long as the journal.
        Ok(Journal {
            run: run.to_string(),
            path,
            file,
            _lock: Some(locked),
            text,
            mirror: None,
            redactor,
        })
    }

    /// Append one record and fsync it. Secrets known to the redactor are replaced first.
    pub fn append(&mut self, rec: Record) -> Result<(), Error> {
        let rec = redact(&self.redactor, rec);
        let mut line = serde_json::to_vec(&rec).expect("records serialize");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| io_err(&self.path, e))?;
        self.text.extend_from_slice(&line);
        crate::faults::point(&format!(
            "journal.before-shared:{}:{}",
            serde_json::to_value(rec.event)
                .expect("serializes")
                .as_str()
                .unwrap_or_default(),
            rec.step.as_deref().unwrap_or_default()
        ));
        // The shared copy before going on: a step's intent must be visible to another machine
        // before the step runs (else a resume there would not know it may have half-run).
        if let Some(m) = self.mirror.as_mut() {
            let text = &self.text;
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(m.push(text))
            })?;
        }
        Ok(())
    }

    /// Keep the shared copy in step from now on.
    pub fn attach(&mut self, mirror: super::shared::Shared) {
        self.mirror = Some(mirror);
    }

    /// Everything written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.text
    }
}

/// The record with every secret the redactor knows replaced.
pub fn redact(r: &Redactor, mut rec: Record) -> Record {
    rec.message = rec.message.map(|m| r.redact(&m));
    rec.outputs = rec.outputs.map(|o| {
        o.into_iter()
            .map(|(k, v)| (k, r.redact_value(&v)))
            .collect()
    });
    rec.before = rec.before.map(|b| r.redact_value(&b));
    rec.details = rec.details.map(|d| r.redact_value(&d));
    rec
}

/// Read every record. A torn last line (a crash in the middle of a write) is ignored; a bad
/// line elsewhere is an error naming it.
pub fn read(path: &Path) -> Result<Vec<Record>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => {
                return Err(Error::DataFile {
                    path: path.to_owned(),
                    location: format!("{}:{}", i + 1, e.column()),
                    message: format!("damaged journal record: {e}"),
                });
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Pending,
    /// Started (intent written) but no result: the process died or was interrupted.
    InDoubt,
    Succeeded,
    Failed,
    Skipped,
    /// Passed by a rollback: undone, or nothing to undo. Runs again on resume.
    RolledBack,
    UndoFailed,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip)]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<Actor>,
    /// What the last rollback did with this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
    /// Skipped with `--in-doubt skip`: it may have half-run, and nothing undoes it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_doubt_skipped: bool,
    /// Its undo was started (an `undo-intent`) and has no result: the process stopped during
    /// the undo, which may or may not have happened.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub undo_in_flight: bool,
    /// Its forEach item failed within the group's `maxFailures` and was given up: the failed
    /// step itself, and the item's later steps (skipped).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
}

impl Default for StepState {
    fn default() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempts: 0,
            before: None,
            outputs: BTreeMap::new(),
            message: None,
            started: None,
            finished: None,
            approved_by: None,
            undo: None,
            in_doubt_skipped: false,
            undo_in_flight: false,
            abandoned: false,
        }
    }
}

/// The state of a run, replayed from its journal.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub steps: BTreeMap<String, StepState>,
    /// Last `run-finished` status, if the run ended (or paused) cleanly.
    pub finished: Option<String>,
    pub finished_message: Option<String>,
    pub started: Option<Record>,
    pub last_time: Option<String>,
    /// A rollback that started and did not finish (the process died): its target
    /// (`Some(None)`: the start).
    pub pending_rollback: Option<Option<String>>,
}

pub fn replay(records: &[Record]) -> Replay {
    let mut r = Replay::default();
    for rec in records {
        r.last_time = Some(rec.time.clone());
        match rec.event {
            Event::RunStarted => {
                r.started = Some(rec.clone());
                r.finished = None;
            }
            Event::RunResumed => r.finished = None,
            Event::RollbackStarted => {
                r.finished = None;
                r.pending_rollback = Some(
                    rec.details
                        .as_ref()
                        .and_then(|d| d["to"].as_str().map(str::to_string)),
                );
            }
            Event::RunFinished => {
                r.finished = rec.status.clone();
                r.finished_message = rec.message.clone();
                r.pending_rollback = None;
            }
            Event::Intent => {
                let s = r
                    .steps
                    .entry(rec.step.clone().unwrap_or_default())
                    .or_default();
                s.status = StepStatus::InDoubt;
                s.attempts = rec.attempt.unwrap_or(s.attempts + 1);
                // The first recorded before-state is the one undo restores: later attempts see
                // what the earlier ones already changed.
                if s.before.is_none() {
                    s.before = rec.before.clone();
                }
                if s.started.is_none() {
                    s.started = Some(rec.time.clone());
                }
            }
            Event::Result => {
                let s = r
                    .steps
                    .entry(rec.step.clone().unwrap_or_default())
                    .or_default();
                s.status = match rec.status.as_deref() {
                    Some("succeeded") => StepStatus::Succeeded,
                    Some("skipped") => StepStatus::Skipped,
                    _ => StepStatus::Failed,
                };
                if let Some(o) = &rec.outputs {
                    s.outputs = o.clone();
                }
                s.message = rec.message.clone();
                s.finished = Some(rec.time.clone());
                s.in_doubt_skipped = s.status == StepStatus::Skipped
                    && rec
                        .details
                        .as_ref()
                        .is_some_and(|d| d["inDoubt"] == Value::Bool(true));
                s.abandoned = rec
                    .details
                    .as_ref()
                    .is_some_and(|d| d["abandoned"] == Value::Bool(true));
            }
            Event::Approval => {
                let s = r
                    .steps
                    .entry(rec.step.clone().unwrap_or_default())
                    .or_default();
                s.approved_by = rec.actor.clone();
            }
            Event::AwaitingApproval => {}
            Event::UndoIntent => {
                r.steps
                    .entry(rec.step.clone().unwrap_or_default())
                    .or_default()
                    .undo_in_flight = true;
            }
            Event::UndoResult => {
                let s = r
                    .steps
                    .entry(rec.step.clone().unwrap_or_default())
                    .or_default();
                s.undo_in_flight = false;
                match rec.status.as_deref() {
                    Some("failed") => s.status = StepStatus::UndoFailed,
                    // An irreversible step a forced rollback passed over: it ran and was not
                    // undone, so running it again is a decision (in doubt), not a given.
                    Some("passed-over") => {
                        s.status = StepStatus::InDoubt;
                        s.before = None;
                        s.attempts = s.attempts.max(1);
                    }
                    // "undone", or "skipped" (nothing to undo, or passed over with --force):
                    // the step is behind the rollback point and runs again on resume, with a
                    // freshly recorded prior state.
                    _ => {
                        s.status = StepStatus::RolledBack;
                        s.before = None;
                        s.attempts = 0;
                    }
                }
                s.undo = rec.message.clone();
                // A step passed by a rollback runs (and is approved) again.
                s.approved_by = None;
            }
        }
    }
    r
}

/// All runs in `dir`, newest first (by file name, which starts with the runbook name, so sort
/// by modification time).
/// A run id as lifeboat makes them (`<runbook>-<date>-<time>-<hex>`): letters, digits, `-`,
/// `_`, `.`; never a path.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub fn list_runs(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            let id = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mtime = e.metadata().and_then(|m| m.modified()).ok();
            out.push((mtime, id, p));
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(out.into_iter().map(|(_, id, p)| (id, p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irreversible_steps_passed_over_or_skipped_in_doubt_are_not_forgotten() {
        let mut skipped = Record::new("r", Event::Result).step("m").status("skipped");
        skipped.details = Some(serde_json::json!({"inDoubt": true}));
        let recs = vec![
            Record::new("r", Event::RunStarted),
            Record {
                attempt: Some(1),
                ..Record::new("r", Event::Intent).step("m")
            },
            skipped,
            Record::new("r", Event::Result)
                .step("plain")
                .status("skipped"),
        ];
        let r = replay(&recs);
        assert!(
            r.steps["m"].in_doubt_skipped,
            "a rollback must not pass it as clean"
        );
        assert!(!r.steps["plain"].in_doubt_skipped);
        let mut forced = recs.clone();
        forced.push(
            Record::new("r", Event::UndoResult)
                .step("m")
                .status("passed-over"),
        );
        let r = replay(&forced);
        assert_eq!(
            r.steps["m"].status,
            StepStatus::InDoubt,
            "a resume asks before running it again"
        );
    }

    #[test]
    fn replay_tracks_intent_result_and_undo() {
        let recs = vec![
            Record::new("r", Event::RunStarted),
            Record {
                before: Some(serde_json::json!({"replicas": 1})),
                attempt: Some(1),
                ..Record::new("r", Event::Intent).step("a")
            },
            Record::new("r", Event::Result)
                .step("a")
                .status("succeeded"),
            Record {
                before: Some(serde_json::json!({"replicas": 5})),
                attempt: Some(1),
                ..Record::new("r", Event::Intent).step("b")
            },
        ];
        let r = replay(&recs);
        assert_eq!(r.steps["a"].status, StepStatus::Succeeded);
        assert_eq!(r.steps["b"].status, StepStatus::InDoubt);
        assert!(r.finished.is_none());
        let mut more = recs.clone();
        more.push(Record {
            before: Some(serde_json::json!({"replicas": 9})),
            attempt: Some(2),
            ..Record::new("r", Event::Intent).step("b")
        });
        more.push(
            Record::new("r", Event::UndoResult)
                .step("a")
                .status("undone"),
        );
        let r = replay(&more);
        // undo restores the state before the first attempt
        assert_eq!(
            r.steps["b"].before,
            Some(serde_json::json!({"replicas": 5}))
        );
        assert_eq!(r.steps["a"].status, StepStatus::RolledBack);
    }

    #[test]
    fn torn_last_line_is_ignored_but_damage_elsewhere_is_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.jsonl");
        let good = serde_json::to_string(&Record::new("r", Event::RunStarted)).unwrap();
        std::fs::write(&p, format!("{good}\n{{\"time\":\"x\",\"ru")).unwrap();
        assert_eq!(read(&p).unwrap().len(), 1);
        std::fs::write(&p, format!("garbage\n{good}\n")).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("x.jsonl:1:"), "{e}");
    }

    #[test]
    fn reopening_cuts_a_torn_last_line_and_locks_the_run() {
        let d = tempfile::tempdir().unwrap();
        let good = serde_json::to_string(&Record::new("r2", Event::RunStarted)).unwrap();
        let p = d.path().join("r2.jsonl");
        std::fs::write(&p, format!("{good}\n{{\"time\":\"x\",\"ru")).unwrap();
        let mut j = Journal::open(d.path(), "r2", Redactor::default()).unwrap();
        let again = Journal::open(d.path(), "r2", Redactor::default());
        assert!(
            again.is_err_and(|e| e.to_string().contains("in progress in another")),
            "one process per run"
        );
        j.append(Record::new("r2", Event::RunResumed)).unwrap();
        let recs = read(&p).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].event, Event::RunResumed);
    }

    #[test]
    fn a_rollback_forgets_approvals_and_is_pending_until_finished() {
        let recs = vec![
            Record::new("r", Event::RunStarted),
            Record {
                actor: Some(Actor::default()),
                ..Record::new("r", Event::Approval).step("go")
            },
            Record::new("r", Event::Result)
                .step("go")
                .status("succeeded"),
            Record {
                details: Some(serde_json::json!({"to": "cp"})),
                ..Record::new("r", Event::RollbackStarted)
            },
            Record::new("r", Event::UndoResult)
                .step("go")
                .status("skipped"),
        ];
        let r = replay(&recs);
        assert!(r.steps["go"].approved_by.is_none());
        assert_eq!(r.steps["go"].status, StepStatus::RolledBack);
        assert_eq!(r.pending_rollback, Some(Some("cp".to_string())));
        let mut done = recs.clone();
        done.push(Record::new("r", Event::RunFinished).status("rolled-back"));
        assert_eq!(replay(&done).pending_rollback, None);
    }

    #[test]
    fn secrets_never_reach_the_file() {
        let d = tempfile::tempdir().unwrap();
        let red = Redactor::default();
        red.add("hunter2-secret");
        let mut j = Journal::create(d.path(), "r1", red).unwrap();
        j.append(
            Record::new("r1", Event::Result)
                .step("s")
                .message("failed: password hunter2-secret rejected"),
        )
        .unwrap();
        let text = std::fs::read_to_string(d.path().join("r1.jsonl")).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("[REDACTED]"));
    }
}
