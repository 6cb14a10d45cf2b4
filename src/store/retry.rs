//! Retries with exponential backoff and jitter around any store: only `StoreError::Transient`
//! errors are retried (throttling, 5xx, timeouts, connection failures).
use std::time::Duration;

use bytes::Bytes;

use super::{DynStore, ObjectInfo, ObjectStore, StoreError};

#[derive(Debug, Clone)]
pub struct RetryStore {
    inner: DynStore,
    attempts: u32,
    base: Duration,
    max: Duration,
}

impl RetryStore {
    pub fn new(inner: DynStore) -> RetryStore {
        RetryStore {
            inner,
            attempts: 6,
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }

    pub fn with_policy(
        inner: DynStore,
        attempts: u32,
        base: Duration,
        max: Duration,
    ) -> RetryStore {
        RetryStore {
            inner,
            attempts: attempts.max(1),
            base,
            max,
        }
    }

    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let mut b = [0u8; 2];
        let _ = getrandom::getrandom(&mut b);
        let jitter = u16::from_le_bytes(b) as f64 / u16::MAX as f64; // 0..1
        exp.mul_f64(0.5 + jitter / 2.0)
    }

    async fn run<T, F, Fut>(&self, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Err(e) if e.is_transient() && attempt + 1 < self.attempts => {
                    let d = self.delay(attempt);
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
