//! S3 (and S3-compatible) repositories with aws-sdk-s3: custom endpoint, path-style addressing,
//! region, and credentials from the standard AWS chain (environment, shared profile, web
//! identity, container/instance metadata). The SDK's own retries are disabled: `RetryStore` is
//! the one retry policy.
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::{ObjectInfo, ObjectStore, PutOutcome, S3Options, StoreError};

#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
}

impl S3Store {
    pub async fn new(bucket: &str, prefix: &str, opts: &S3Options) -> S3Store {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &opts.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(ep) = &opts.endpoint {
            b = b.endpoint_url(ep);
        }
        b = b.force_path_style(opts.path_style.unwrap_or(opts.endpoint.is_some()));
        if shared.region().is_none() {
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        S3Store {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: opts.endpoint.clone(),
        }
    }

    /// A store over an already configured client (library users with their own SDK setup).
    pub fn from_client(client: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> S3Store {
        S3Store {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
        }
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

type Raw = aws_sdk_s3::config::http::HttpResponse;

fn classify<E>(op: &'static str, key: &str, err: SdkError<E, Raw>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let key = key.to_string();
    let status = match &err {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    };
    let message = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            match (e.code(), e.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => crate::error::display_chain(&err),
            }
        }
        _ => crate::error::display_chain(&err),
    };
    let code = match &err {
        SdkError::ServiceError(se) => se.err().code().map(str::to_string),
        _ => None,
    };
    let retry_after = match &err {
        SdkError::ServiceError(se) => se
            .raw()
            .headers()
            .get("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs),
        _ => None,
    };
    match (&err, status, code.as_deref()) {
        (_, _, Some("NoSuchBucket")) => StoreError::Permanent {
            op,
            key,
            message: "the bucket does not exist (create it first)".into(),
        },
        (_, Some(404), _) | (_, _, Some("NoSuchKey" | "NotFound")) => StoreError::NotFound { key },
        (SdkError::DispatchFailure(d), _, _) if d.is_io() || d.is_timeout() => {
            StoreError::Unreachable { op, key, message }
        }
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
            _,
        ) => StoreError::Transient { op, key, message },
        (_, Some(429 | 503), _)
        | (_, _, Some("SlowDown" | "Throttling" | "ThrottlingException")) => {
            StoreError::Throttled {
                op,
                key,
                message,
                retry_after,
            }
        }
        (_, Some(s), _) if s >= 500 => StoreError::Transient { op, key, message },
        (_, _, Some("RequestTimeout" | "InternalError" | "ConditionalRequestConflict")) => {
            StoreError::Transient { op, key, message }
        }
        _ => StoreError::Permanent { op, key, message },
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> String {
        let base = format!("s3://{}/{}", self.bucket, self.prefix);
        match &self.endpoint {
            Some(e) => format!("{} (endpoint {e})", base.trim_end_matches('/')),
            None => base.trim_end_matches('/').to_string(),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(ByteStream::from(data))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("put", key, e))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome, StoreError> {
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .if_none_match("*")
            .body(ByteStream::from(data.clone()))
            .send()
            .await;
        if let Err(e) = sent {
            let precondition =
                matches!(&e, SdkError::ServiceError(se) if se.raw().status().as_u16() == 412);
            if precondition {
                return Ok(PutOutcome::Exists);
            }
            return Err(classify("put", key, e));
        }
        // A server that ignores If-None-Match overwrote instead: the one whose bytes are not
        // there (read back) lost.
        let back = self.get(key).await?;
        Ok(if back == data {
            PutOutcome::Created
        } else {
            PutOutcome::Exists
        })
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| classify("get", key, e))?;
        out.body
            .collect()
            .await
            .map(|b| b.into_bytes())
            .map_err(|e| StoreError::Transient {
                op: "get",
                key: key.to_string(),
                message: e.to_string(),
            })
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .range(format!("bytes={}-{}", offset, offset + len - 1))
            .send()
            .await
            .map_err(|e| classify("get", key, e))?;
        let b = out
            .body
            .collect()
            .await
            .map(|b| b.into_bytes())
            .map_err(|e| StoreError::Transient {
                op: "get",
                key: key.to_string(),
                message: e.to_string(),
            })?;
        if b.len() as u64 != len {
            return Err(StoreError::Permanent {
                op: "get",
                key: key.to_string(),
                message: format!("short range read: {} of {len} bytes", b.len()),
            });
        }
        Ok(b)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let full_prefix = self.full(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("list", prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    if k.len() > strip {
                        out.push(ObjectInfo {
                            key: k[strip..].to_string(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                            modified: o.last_modified().and_then(|t| {
                                jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok()
                            }),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| match classify("delete", key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            })
    }
}
