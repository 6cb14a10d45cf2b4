//! Retries with exponential backoff and jitter around any store: only transient errors
//! (`StoreError::Transient`, `StoreError::Throttled`: throttling, 5xx, timeouts, connection
//! failures) are retried, for up to a time budget (default 120 s, `LIFEBOAT_STORE_RETRY_SECONDS`),
//! so a minute of S3 `503 SlowDown` slows a backup down instead of failing it. A `Retry-After`
//! the server sent is honoured (capped by what is left of the budget).
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{DynStore, ObjectInfo, ObjectStore, PutOutcome, StoreError};

/// Default retry budget per operation.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(120);
/// Budget while the store cannot be reached at all (connection refused): short, so a wrong
/// endpoint fails in seconds; a store that goes away mid-backup still gets several tries.
pub const UNREACHABLE_BUDGET: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct RetryStore {
    inner: DynStore,
    attempts: u32,
    budget: Duration,
    base: Duration,
    max: Duration,
}

impl RetryStore {
    pub fn new(inner: DynStore) -> RetryStore {
        let budget = std::env::var("LIFEBOAT_STORE_RETRY_SECONDS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_BUDGET);
        RetryStore {
            inner,
            attempts: u32::MAX,
            budget,
            base: Duration::from_millis(200),
            max: Duration::from_secs(20),
        }
    }

    /// At most `attempts` tries, whatever the budget (tests).
    pub fn with_policy(
        inner: DynStore,
        attempts: u32,
        base: Duration,
        max: Duration,
    ) -> RetryStore {
        RetryStore {
            inner,
            attempts: attempts.max(1),
            budget: Duration::from_secs(3600),
            base,
            max,
        }
    }

    /// Retry for up to `budget` in total.
    pub fn with_budget(
        inner: DynStore,
        budget: Duration,
        base: Duration,
        max: Duration,
    ) -> RetryStore {
        RetryStore {
            inner,
            attempts: u32::MAX,
            budget,
            base,
            max,
        }
    }

    fn delay(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let mut b = [0u8; 2];
        let _ = getrandom::getrandom(&mut b);
        let jitter = u16::from_le_bytes(b) as f64 / u16::MAX as f64; // 0..1
        let backoff = exp.mul_f64(0.5 + jitter / 2.0);
        match hint {
            // The server said when: wait that long (plus a little jitter), not less.
            Some(h) => h.min(Duration::from_secs(60)) + backoff.mul_f64(0.1),
            None => backoff,
        }
    }

    async fn run<T, F, Fut>(&self, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            match f().await {
                Err(e) if e.is_transient() && attempt + 1 < self.attempts => {
                    let d = self.delay(attempt, e.retry_after());
                    let elapsed = started.elapsed();
                    let budget = if matches!(e, StoreError::Unreachable { .. }) {
                        self.budget.min(UNREACHABLE_BUDGET)
                    } else {
                        self.budget
                    };
                    if elapsed + d > budget {
                        tracing::debug!(error = %e, attempts = attempt + 1, elapsed_s = elapsed.as_secs(), "store still failing after the retry budget; giving up");
                        return Err(e);
                    }
                    tracing::info!(error = %e, attempt = attempt + 1, delay_ms = d.as_millis() as u64, "transient store error, retrying");
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for RetryStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.run(|| self.inner.put(key, data.clone())).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome, StoreError> {
        let mut tries = 0;
        let outcome = self
            .run(|| {
                tries += 1;
                self.inner.put_if_absent(key, data.clone())
            })
            .await?;
        // A retry after a put that did land (the response was lost) finds our own value.
        if outcome == PutOutcome::Exists && tries > 1 {
            if let Ok(back) = self.get(key).await {
                if back == data {
                    return Ok(PutOutcome::Created);
                }
            }
        }
        Ok(outcome)
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.run(|| self.inner.get(key)).await
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        self.run(|| self.inner.get_range(key, offset, len)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.run(|| self.inner.list(prefix)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run(|| self.inner.delete(key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails `fail` times with the given error, then succeeds.
    #[derive(Debug)]
    struct Flaky {
        fail: u32,
        calls: AtomicU32,
        transient: bool,
    }

    #[async_trait::async_trait]
    impl ObjectStore for Flaky {
        fn location(&self) -> String {
            "flaky".into()
        }
        async fn put(&self, _: &str, _: Bytes) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn put_if_absent(&self, _: &str, _: Bytes) -> Result<PutOutcome, StoreError> {
            unimplemented!()
        }
        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail {
                return Err(if self.transient {
                    StoreError::Transient {
                        op: "get",
                        key: key.into(),
                        message: "503 SlowDown".into(),
                    }
                } else {
                    StoreError::Permanent {
                        op: "get",
                        key: key.into(),
                        message: "403 AccessDenied".into(),
                    }
                });
            }
            Ok(Bytes::from_static(b"ok"))
        }
        async fn get_range(&self, _: &str, _: u64, _: u64) -> Result<Bytes, StoreError> {
            unimplemented!()
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            unimplemented!()
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            unimplemented!()
        }
    }

    #[tokio::test]
    async fn retries_transient_errors_only() {
        let flaky = Arc::new(Flaky {
            fail: 3,
            calls: AtomicU32::new(0),
            transient: true,
        });
        let s = RetryStore::with_policy(
            flaky.clone(),
            5,
            Duration::from_millis(1),
            Duration::from_millis(5),
        );
        assert_eq!(s.get("k").await.unwrap().as_ref(), b"ok");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);

        let denied = Arc::new(Flaky {
            fail: 3,
            calls: AtomicU32::new(0),
            transient: false,
        });
        let s = RetryStore::with_policy(
            denied.clone(),
            5,
            Duration::from_millis(1),
            Duration::from_millis(5),
        );
        assert!(s.get("k").await.is_err());
        assert_eq!(
            denied.calls.load(Ordering::SeqCst),
            1,
            "permanent errors are not retried"
        );

        let always = Arc::new(Flaky {
            fail: 100,
            calls: AtomicU32::new(0),
            transient: true,
        });
        let s = RetryStore::with_policy(
            always.clone(),
            3,
            Duration::from_millis(1),
            Duration::from_millis(5),
        );
        assert!(s.get("k").await.unwrap_err().is_transient());
        assert_eq!(
            always.calls.load(Ordering::SeqCst),
            3,
            "gives up after the attempts"
        );
    }
}
