//! Fault injection for tests (compiled only with the `faults` feature; `scripts/test` builds
//! with it). A wrapper around any store that fails, throttles, delays, truncates or "loses the
//! response of" chosen operations, configured by `LIFEBOAT_FAULTS` (rules) and
//! `LIFEBOAT_FAULTS_SEED` (for probabilistic rules, so a failing schedule reproduces). Every
//! injected fault is appended as one line to `LIFEBOAT_FAULTS_LOG` when that is set.
//!
//! Rules are separated by `;`, each `OP[@PREFIX][,option...]`:
//! - `OP`: `put`, `get`, `list`, `delete` or `any` (`get` also matches range reads, `put` also
//!   create-if-absent puts);
//! - `@PREFIX`: only keys starting with it (`put@data/`);
//! - `nth=N`: the rule is armed from the Nth matching operation on (1-based; default 1);
//! - `count=N`: it fires N times (default 1; `count=0`: every time once armed);
//! - `p=F`: once armed, fires with probability F (seeded);
//! - `fail=KIND`: `transient` (connection reset), `throttle` (503 SlowDown, `retry-after=S`
//!   optional), `permanent` (403), `enospc` (no space left on device), `truncate` (a put stores
//!   only the first half of the value and reports success: the store lied; a get returns half),
//!   `lost` (the put is done, then a transient error is returned: the response was lost),
//!   `delay=MS` (the operation is slowed down, then done).
//!
//! Example: `put@data/,nth=3,fail=transient;any,nth=10,count=20,fail=throttle`.
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::{DynStore, ObjectInfo, ObjectStore, PutOutcome, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    List,
    Delete,
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fail {
    Transient,
    Throttle(Option<Duration>),
    Permanent,
    NoSpace,
    Truncate,
    Lost,
    Delay(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub op: Op,
    pub prefix: String,
    pub nth: u64,
    /// 0: unlimited.
    pub count: u64,
    pub probability: f64,
    pub fail: Fail,
}

/// Parse `LIFEBOAT_FAULTS` rules.
pub fn parse(spec: &str) -> Result<Vec<Rule>, String> {
    let mut out = Vec::new();
    for raw in spec.split(';').map(str::trim).filter(|r| !r.is_empty()) {
        let mut parts = raw.split(',').map(str::trim);
        let head = parts.next().unwrap_or_default();
        let (op, prefix) = head.split_once('@').unwrap_or((head, ""));
        let op = match op {
            "put" => Op::Put,
            "get" => Op::Get,
            "list" => Op::List,
            "delete" => Op::Delete,
            "any" => Op::Any,
            o => return Err(format!("{raw}: unknown operation {o:?}")),
        };
        let mut rule = Rule {
            op,
            prefix: prefix.to_string(),
            nth: 1,
            count: 1,
            probability: 1.0,
            fail: Fail::Transient,
        };
        let mut retry_after = None;
        for p in parts {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("{raw}: {p:?} is not key=value"))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{raw}: {k}={v} is not a number"))
            };
            match k {
                "nth" => rule.nth = num(v)?.max(1),
                "count" => rule.count = num(v)?,
                "p" => {
                    rule.probability = v
                        .parse::<f64>()
                        .map_err(|_| format!("{raw}: p={v} is not a number"))?
                }
                "retry-after" => retry_after = Some(Duration::from_secs(num(v)?)),
                "fail" => {
                    rule.fail = match v {
                        "transient" => Fail::Transient,
                        "throttle" => Fail::Throttle(None),
                        "permanent" => Fail::Permanent,
                        "enospc" => Fail::NoSpace,
                        "truncate" => Fail::Truncate,
                        "lost" => Fail::Lost,
                        d if d.starts_with("delay=") => {
                            Fail::Delay(Duration::from_millis(num(&d[6..])?))
                        }
                        f => return Err(format!("{raw}: unknown fault {f:?}")),
                    }
                }
                "delay" => rule.fail = Fail::Delay(Duration::from_millis(num(v)?)),
                _ => return Err(format!("{raw}: unknown option {k:?}")),
            }
        }
        if let (Fail::Throttle(_), Some(r)) = (&rule.fail, retry_after) {
            rule.fail = Fail::Throttle(Some(r));
        }
        out.push(rule);
    }
    Ok(out)
}

/// splitmix64: a small, seeded, reproducible generator (not for cryptography).
#[derive(Debug)]
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug)]
struct RuleState {
    rule: Rule,
    seen: u64,
    fired: u64,
}

#[derive(Debug)]
pub struct FaultStore {
    inner: DynStore,
    rules: Mutex<Vec<RuleState>>,
    rng: Mutex<Rng>,
    log: Option<std::path::PathBuf>,
    pub injected: AtomicU64,
}

/// Wrap `inner` when `LIFEBOAT_FAULTS` is set (an invalid value is a panic: it is a test's bug).
pub fn from_env(inner: DynStore) -> DynStore {
    match std::env::var("LIFEBOAT_FAULTS") {
        Ok(spec) if !spec.trim().is_empty() => {
            let rules = parse(&spec).unwrap_or_else(|e| panic!("LIFEBOAT_FAULTS: {e}"));
            let seed = std::env::var("LIFEBOAT_FAULTS_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            let log = std::env::var_os("LIFEBOAT_FAULTS_LOG").map(Into::into);
            std::sync::Arc::new(FaultStore::new(inner, rules, seed, log))
        }
        _ => inner,
    }
}

impl FaultStore {
    pub fn new(
        inner: DynStore,
        rules: Vec<Rule>,
        seed: u64,
        log: Option<std::path::PathBuf>,
    ) -> FaultStore {
        FaultStore {
            inner,
            rules: Mutex::new(
                rules
                    .into_iter()
                    .map(|rule| RuleState {
                        rule,
                        seen: 0,
                        fired: 0,
                    })
                    .collect(),
            ),
            rng: Mutex::new(Rng(seed)),
            log,
            injected: AtomicU64::new(0),
        }
    }

    /// The fault to inject into this operation, if any (first matching rule that fires).
    fn decide(&self, op: Op, key: &str) -> Option<Fail> {
        let mut rules = self.rules.lock().expect("fault rules");
        for st in rules.iter_mut() {
            if (st.rule.op != Op::Any && st.rule.op != op) || !key.starts_with(&st.rule.prefix) {
                continue;
            }
            st.seen += 1;
            if st.seen < st.rule.nth || (st.rule.count != 0 && st.fired >= st.rule.count) {
                continue;
            }
            if st.rule.probability < 1.0
                && self.rng.lock().expect("rng").next_f64() >= st.rule.probability
            {
                continue;
            }
            st.fired += 1;
            let fail = st.rule.fail.clone();
            self.injected.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = &self.log {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                {
                    let _ = writeln!(f, "{op:?} {key} {fail:?}");
                }
            }
            return Some(fail);
        }
        None
    }

    fn error(op: &'static str, key: &str, f: &Fail) -> StoreError {
        let key = key.to_string();
        match f {
            Fail::Throttle(retry_after) => StoreError::Throttled {
                op,
                key,
                message: "SlowDown: please reduce your request rate (injected)".into(),
                retry_after: *retry_after,
            },
            Fail::Permanent => StoreError::Permanent {
                op,
                key,
                message: "AccessDenied (injected)".into(),
            },
            Fail::NoSpace => StoreError::Permanent {
                op,
                key,
                message: "No space left on device (os error 28) (injected)".into(),
            },
            _ => StoreError::Transient {
                op,
                key,
                message: "connection reset by peer (injected)".into(),
            },
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        match self.decide(Op::Put, key) {
            None => self.inner.put(key, data).await,
            Some(Fail::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.put(key, data).await
            }
            Some(Fail::Truncate) => self.inner.put(key, data.slice(..data.len() / 2)).await,
            Some(f @ Fail::Lost) => {
                self.inner.put(key, data).await?;
                Err(Self::error("put", key, &f))
            }
            Some(f) => Err(Self::error("put", key, &f)),
        }
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome, StoreError> {
        match self.decide(Op::Put, key) {
            None | Some(Fail::Truncate) => self.inner.put_if_absent(key, data).await,
            Some(Fail::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.put_if_absent(key, data).await
            }
            Some(f @ Fail::Lost) => {
                self.inner.put_if_absent(key, data).await?;
                Err(Self::error("put", key, &f))
            }
            Some(f) => Err(Self::error("put", key, &f)),
        }
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        match self.decide(Op::Get, key) {
            None | Some(Fail::Lost) => self.inner.get(key).await,
            Some(Fail::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.get(key).await
            }
            Some(Fail::Truncate) => {
                let b = self.inner.get(key).await?;
                Ok(b.slice(..b.len() / 2))
            }
            Some(f) => Err(Self::error("get", key, &f)),
        }
    }
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        match self.decide(Op::Get, key) {
            None | Some(Fail::Lost) | Some(Fail::Truncate) => {
                self.inner.get_range(key, offset, len).await
            }
            Some(Fail::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.get_range(key, offset, len).await
            }
            Some(f) => Err(Self::error("get", key, &f)),
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        match self.decide(Op::List, prefix) {
            None | Some(Fail::Lost) | Some(Fail::Truncate) => self.inner.list(prefix).await,
            Some(Fail::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.list(prefix).await
            }
            Some(f) => Err(Self::error("list", prefix, &f)),
        }
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.decide(Op::Delete, key) {
            None | Some(Fail::Truncate) => self.inner.delete(key).await,
            Some(Fail::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.inner.delete(key).await
            }
            Some(f @ Fail::Lost) => {
                self.inner.delete(key).await?;
                Err(Self::error("delete", key, &f))
            }
            Some(f) => Err(Self::error("delete", key, &f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        let r = parse("put@data/,nth=3,fail=transient;any,nth=10,count=0,p=0.5,fail=throttle,retry-after=2;delete,fail=delay=50").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].op, Op::Put);
        assert_eq!(r[0].prefix, "data/");
        assert_eq!(r[0].nth, 3);
        assert_eq!(r[1].count, 0);
        assert_eq!(r[1].fail, Fail::Throttle(Some(Duration::from_secs(2))));
        assert_eq!(r[2].fail, Fail::Delay(Duration::from_millis(50)));
        assert!(parse("frob").is_err());
        assert!(parse("put,fail=melt").is_err());
        assert!(parse("put,nth=x").is_err());
    }

    #[tokio::test]
    async fn nth_put_under_a_prefix_fails_once() {
        let dir = tempfile::tempdir().unwrap();
        let inner: DynStore =
            std::sync::Arc::new(super::super::local::LocalStore::new(dir.path().into()));
        let s = FaultStore::new(inner, parse("put@data/,nth=2").unwrap(), 1, None);
        s.put("index/a", Bytes::from_static(b"x")).await.unwrap();
        s.put("data/00/a", Bytes::from_static(b"x")).await.unwrap();
        assert!(
            s.put("data/00/b", Bytes::from_static(b"x"))
                .await
                .unwrap_err()
                .is_transient()
        );
        s.put("data/00/c", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(s.injected.load(Ordering::Relaxed), 1);
    }
}
