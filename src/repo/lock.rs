//! Repository locks. Backups take a shared lock, prune (and delete) an exclusive one. A lock is
//! refreshed every few minutes while its holder runs; a lock not refreshed for
//! `STALE_AFTER`, or held by a dead process on this host, is stale and ignored (and removed by
//! the next exclusive locker).
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{RepoError, Repository, hostname, new_id};
use crate::store::layout;

pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LockFile {
    pub exclusive: bool,
    pub hostname: String,
    pub pid: u32,
    pub operation: String,
    pub created: String,
    pub refreshed: String,
}

impl LockFile {
    pub fn is_stale(&self) -> bool {
        let age = self
            .refreshed
            .parse::<jiff::Timestamp>()
            .map(|t| jiff::Timestamp::now().duration_since(t))
            .map(|d| d.as_secs() as u64)
            .unwrap_or(u64::MAX);
        if age > STALE_AFTER.as_secs() {
            return true;
        }
        self.hostname == hostname()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
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

/// A held lock; `release` removes it. Dropping without release leaves a lock that becomes stale.
pub struct Lock {
    repo: Arc<Repository>,
    id: String,
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
        let file = LockFile {
            exclusive,
            hostname: hostname(),
            pid: std::process::id(),
            operation: operation.to_string(),
            created: super::now(),
            refreshed: super::now(),
        };
        repo.write_json(&layout::lock(&id), &file).await?;
        // Someone may have locked at the same time: look again now that ours is visible.
        let after = others(&repo, &id).await?;
        if let Err(e) = check(&after) {
            let _ = repo.delete(&layout::lock(&id)).await;
            return Err(e);
        }
        if exclusive {
            for (sid, l) in &after {
                if l.is_stale() {
                    tracing::info!(lock = %l.describe(), "removing stale lock");
                    let _ = repo.delete(&layout::lock(sid)).await;
                }
            }
        }
        let r = repo.clone();
        let key = layout::lock(&id);
        let refresher = tokio::spawn(async move {
            let mut file = file;
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                file.refreshed = super::now();
                if let Err(e) = r.write_json(&key, &file).await.map(|_| ()) {
                    tracing::warn!(error = %e, "cannot refresh the repository lock");
                }
            }
        });
        Ok(Lock {
            repo,
            id,
            refresher,
        })
    }

    pub async fn release(self) -> Result<(), RepoError> {
        self.refresher.abort();
        self.repo.delete(&layout::lock(&self.id)).await
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}
