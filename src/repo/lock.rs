//! Repository locks. Backups, restores, verifies, exports and drills take a shared lock; prune,
//! delete and repairs an exclusive one. Protocol (docs/repository-format.md, "Locks"):
//!
//! - A lock is stale only by age: not refreshed for [`STALE_AFTER`] *by the reader's clock*. A
//!   refresh time in the reader's future (the holder's clock is ahead) is fresh, never stale.
//! - Or, when it provably is on this machine and in this PID namespace (same boot id and PID
//!   namespace inode, not merely the same hostname), when its process is gone (the pid does not
//!   exist, or exists with another start time).
//! - The holder refreshes every [`REFRESH_EVERY`] and checks each time that its lock file is
//!   still there; a lock that was removed is never silently written again. A holder that lost
//!   its lock, or has not confirmed it for [`MUST_CONFIRM_WITHIN`], is told by
//!   [`Lock::ensure_held`], which writers call before they write an index or a snapshot.
//!
//! Locks are one defence; prune's safety margin (never deleting a pack younger than hours, by the
//! store's clock) is the other, so a clock or lock mistake cannot delete a running backup's data.
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{RepoError, Repository, hostname, new_id};
use crate::store::layout;

pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A holder that could not confirm its lock for this long stops before writing: others may
/// consider it stale soon (their clocks may be ahead of ours).
pub const MUST_CONFIRM_WITHIN: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LockFile {
    pub exclusive: bool,
    pub hostname: String,
    pub pid: u32,
    pub operation: String,
    pub created: String,
    pub refreshed: String,
    /// `/proc/sys/kernel/random/boot_id` of the holder's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder's PID namespace (`/proc/self/ns/pid` link, e.g. `pid:[4026531836]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
    /// The holder process's start time (clock ticks since boot, /proc/PID/stat field 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

/// Where this process runs, as far as PID liveness checks are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub boot_id: Option<String>,
    pub pid_namespace: Option<String>,
}

impl ProcessIdentity {
    pub fn current() -> ProcessIdentity {
        ProcessIdentity {
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            pid_namespace: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .map(|p| p.display().to_string()),
        }
    }
}

/// Start time of a process (field 22 of /proc/PID/stat), None when it does not exist.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl LockFile {
    /// Stale by age (by `now`, the reader's clock; a refresh in the future is fresh) or, when
    /// provably in the same machine and PID namespace as `me`, by a dead process.
    pub fn is_stale_at(&self, now: jiff::Timestamp, me: &ProcessIdentity) -> bool {
        match self.refreshed.parse::<jiff::Timestamp>() {
            Ok(t) => {
                let age = now.duration_since(t);
                if age.is_positive() && age.unsigned_abs() > STALE_AFTER {
                    return true;
                }
            }
            // An unreadable time: judge by the other evidence only (never stale by itself).
            Err(_) => {}
        }
        let same_namespace = me.boot_id.is_some()
            && me.pid_namespace.is_some()
            && self.boot_id == me.boot_id
            && self.pid_namespace == me.pid_namespace;
        if !same_namespace {
            return false;
        }
        match (process_start(self.pid), self.pid_start) {
            (None, _) => true,
            (Some(now_start), Some(then)) => now_start != then,
            (Some(_), None) => false,
        }
    }

    pub fn is_stale(&self) -> bool {
        self.is_stale_at(crate::faults::now(), &ProcessIdentity::current())
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock by {} on {} (pid {}), refreshed {}",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.operation,
            self.hostname,
            self.pid,
            self.refreshed
        )
    }
}

#[derive(Debug)]
struct HolderState {
    lost: AtomicBool,
    /// When the lock file was last confirmed present and ours (monotonic).
    confirmed: StdMutex<Instant>,
}

/// A held lock; `release` removes it. Dropping without release leaves a lock that becomes stale.
pub struct Lock {
    repo: Arc<Repository>,
    id: String,
    state: Arc<HolderState>,
    refresher: tokio::task::JoinHandle<()>,
}

async fn others(repo: &Repository, mine: &str) -> Result<Vec<(String, LockFile)>, RepoError> {
    let mut out = Vec::new();
    for f in repo.list(layout::LOCKS).await? {
        let Some(id) = layout::id_of(layout::LOCKS, &f.key) else {
            continue;
        };
        if id == mine {
            continue;
        }
        match repo.read_json::<LockFile>(&f.key, "lock file").await {
            Ok(l) => out.push((id.to_string(), l)),
            Err(RepoError::Store { source, .. }) if source.is_not_found() => {} // released meanwhile
            // A damaged lock file cannot be judged: treat it as held (fail loudly, lose nothing).
            Err(RepoError::Corrupt { key, .. }) => out.push((
                id.to_string(),
                LockFile {
                    exclusive: true,
                    hostname: "?".into(),
                    pid: 0,
                    operation: format!(
                        "unreadable lock file {key} (remove it if no lifeboat runs)"
                    ),
                    created: String::new(),
                    refreshed: String::new(),
                    boot_id: None,
                    pid_namespace: None,
                    pid_start: None,
                },
            )),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

impl Lock {
    pub async fn acquire(
        repo: Arc<Repository>,
        exclusive: bool,
        operation: &str,
    ) -> Result<Lock, RepoError> {
        let id = new_id();
        let check = |locks: &[(String, LockFile)]| -> Result<(), RepoError> {
            for (_, l) in locks {
                if l.is_stale() {
                    continue;
                }
                if exclusive || l.exclusive {
                    return Err(RepoError::Locked(l.describe()));
                }
            }
            Ok(())
        };
        check(&others(&repo, &id).await?)?;
        let me = ProcessIdentity::current();
        let file = LockFile {
            exclusive,
            hostname: hostname(),
            pid: std::process::id(),
            operation: operation.to_string(),
            created: super::now(),
            refreshed: super::now(),
            boot_id: me.boot_id.clone(),
            pid_namespace: me.pid_namespace.clone(),
            pid_start: process_start(std::process::id()),
        };
        let key = layout::lock(&id);
        repo.write_json(&key, &file).await?;
        crate::faults::point("lock.written");
        // Someone may have locked at the same time: look again now that ours is visible.
        let after = others(&repo, &id).await?;
        if let Err(e) = check(&after) {
            let _ = repo.delete(&key).await;
            return Err(e);
        }
        if exclusive {
            for (sid, l) in &after {
                if l.is_stale() && l.pid != 0 {
                    tracing::info!(lock = %l.describe(), "removing stale lock");
                    let _ = repo.delete(&layout::lock(sid)).await;
                }
            }
        }
        let state = Arc::new(HolderState {
            lost: AtomicBool::new(false),
            confirmed: StdMutex::new(Instant::now()),
        });
        let (r, st) = (repo.clone(), state.clone());
        let refresher = tokio::spawn(async move {
            let mut file = file;
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                match refresh(&r, &key, &mut file).await {
                    Ok(()) => *st.confirmed.lock().expect("lock state") = Instant::now(),
                    Err(Refresh::Lost) => {
                        tracing::error!(lock = %key, "the repository lock was removed by someone else; this operation will stop before writing");
                        st.lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(Refresh::Failed(e)) => {
                        tracing::warn!(error = %e, "cannot refresh the repository lock")
                    }
                }
            }
        });
        Ok(Lock {
            repo,
            id,
            state,
            refresher,
        })
    }

    /// Fail unless this lock is still held: not removed by someone else, and confirmed recently.
    /// Reads the lock file now (one GET), so it is current at the moment of the call.
    pub async fn ensure_held(&self) -> Result<(), RepoError> {
        let key = layout::lock(&self.id);
        if self.state.lost.load(Ordering::SeqCst) {
            return Err(RepoError::LockLost(
                "the lock file was removed by another process".into(),
            ));
        }
        match self.repo.read_json::<LockFile>(&key, "lock file").await {
            Ok(l) if l.pid == std::process::id() => {}
            Ok(_) => {
                return Err(RepoError::LockLost(
                    "the lock file now belongs to another process".into(),
                ));
            }
            Err(RepoError::Store { source, .. }) if source.is_not_found() => {
                self.state.lost.store(true, Ordering::SeqCst);
                return Err(RepoError::LockLost(
                    "the lock file was removed by another process".into(),
                ));
            }
            Err(e) => return Err(e),
        }
        let mut confirmed = self.state.confirmed.lock().expect("lock state");
        if confirmed.elapsed() > MUST_CONFIRM_WITHIN {
            return Err(RepoError::LockLost(format!(
                "the lock could not be refreshed for {} minutes",
                confirmed.elapsed().as_secs() / 60
            )));
        }
        *confirmed = Instant::now();
        Ok(())
    }

    /// The lock file's key.
    pub fn key(&self) -> String {
        layout::lock(&self.id)
    }

    pub async fn release(self) -> Result<(), RepoError> {
        self.refresher.abort();
        self.repo.delete(&layout::lock(&self.id)).await
    }
}

enum Refresh {
    Lost,
    Failed(RepoError),
}

async fn refresh(repo: &Repository, key: &str, file: &mut LockFile) -> Result<(), Refresh> {
    match repo.read_json::<LockFile>(key, "lock file").await {
        Ok(_) => {}
        Err(RepoError::Store { source, .. }) if source.is_not_found() => return Err(Refresh::Lost),
        Err(e) => return Err(Refresh::Failed(e)),
    }
    file.refreshed = super::now();
    repo.write_json(key, file)
        .await
        .map(|_| ())
        .map_err(Refresh::Failed)
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(refreshed: &str, id: &ProcessIdentity, pid: u32, start: Option<u64>) -> LockFile {
        LockFile {
            exclusive: false,
            hostname: "h".into(),
            pid,
            operation: "backup".into(),
            created: refreshed.into(),
            refreshed: refreshed.into(),
            boot_id: id.boot_id.clone(),
            pid_namespace: id.pid_namespace.clone(),
            pid_start: start,
        }
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_refresh_in_the_future_is_fresh() {
        let other = ProcessIdentity {
            boot_id: Some("other-boot".into()),
            pid_namespace: Some("pid:[1]".into()),
        };
        let me = ProcessIdentity::current();
        let l = lock("2026-12-02T10:10:00Z", &other, 1, None);
        // The reader's clock is 10 minutes behind the holder's.
        assert!(!l.is_stale_at(ts("2026-12-02T10:00:00Z"), &me));
        // Days behind: still fresh, never stale by a negative age.
        assert!(!l.is_stale_at(ts("2026-11-01T10:00:00Z"), &me));
        assert!(!l.is_stale_at(ts("2026-12-02T10:39:00Z"), &me));
        assert!(l.is_stale_at(ts("2026-12-02T10:41:00Z"), &me));
    }

    #[test]
    fn pid_liveness_only_in_the_same_boot_and_pid_namespace() {
        let me = ProcessIdentity::current();
        assert!(me.boot_id.is_some() && me.pid_namespace.is_some(), "{me:?}");
        let now = ts("2026-12-02T10:00:00Z");
        // A pid that does not exist here.
        let dead = 0x3fff_fff0;
        // Same hostname, other PID namespace: cannot judge the pid, so not stale.
        let other_ns = ProcessIdentity {
            boot_id: me.boot_id.clone(),
            pid_namespace: Some("pid:[42]".into()),
        };
        assert!(!lock("2026-12-02T09:59:00Z", &other_ns, dead, None).is_stale_at(now, &me));
        // No identity recorded (an older lifeboat, or "unknown"): not stale either.
        let none = ProcessIdentity {
            boot_id: None,
            pid_namespace: None,
        };
        assert!(!lock("2026-12-02T09:59:00Z", &none, dead, None).is_stale_at(now, &me));
        // Same boot and namespace, process gone: stale.
        assert!(lock("2026-12-02T09:59:00Z", &me, dead, None).is_stale_at(now, &me));
        // Same boot and namespace, our own pid alive with its start time: fresh; with another
        // start time (the pid was reused): stale.
        let pid = std::process::id();
        let start = process_start(pid);
        assert!(start.is_some());
        assert!(!lock("2026-12-02T09:59:00Z", &me, pid, start).is_stale_at(now, &me));
        assert!(lock("2026-12-02T09:59:00Z", &me, pid, start.map(|s| s + 1)).is_stale_at(now, &me));
    }
}
