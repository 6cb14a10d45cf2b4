//! One conformance suite every ObjectStore backend must pass: the local directory backend and
//! the S3 backend against the local S3 server (s3s-fs), both behind the retry wrapper as the
//! product uses them.
mod common;

use std::sync::Arc;

use bytes::Bytes;
use lifeboat::store::{DynStore, ObjectStore, local::LocalStore, retry::RetryStore, s3::S3Store};

async fn suite(store: DynStore) {
    // get / get_range of a missing key: NotFound.
    assert!(
        store
            .get("data/00/missing")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .get_range("data/00/missing", 0, 1)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // put / get round trip, including empty and binary values.
    store
        .put("config", Bytes::from_static(b"{\"version\":1}"))
        .await
        .unwrap();
    assert_eq!(
        store.get("config").await.unwrap().as_ref(),
        b"{\"version\":1}"
    );
    store.put("keys/empty", Bytes::new()).await.unwrap();
    assert_eq!(store.get("keys/empty").await.unwrap().len(), 0);
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    store
        .put("data/ab/abcd", Bytes::from(big.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.get("data/ab/abcd").await.unwrap().as_ref(),
        big.as_slice()
    );
    // ranges
    assert_eq!(
        store
            .get_range("data/ab/abcd", 1000, 64)
            .await
            .unwrap()
            .as_ref(),
        &big[1000..1064]
    );
    assert_eq!(
        store
            .get_range("data/ab/abcd", big.len() as u64 - 10, 10)
            .await
            .unwrap()
            .as_ref(),
        &big[big.len() - 10..]
    );
    // replace
    store
        .put("config", Bytes::from_static(b"v2"))
        .await
        .unwrap();
    assert_eq!(store.get("config").await.unwrap().as_ref(), b"v2");
    // list: every key under the prefix once, with sizes; other prefixes not included.
    for i in 0..25 {
        store
            .put(&format!("snapshots/s{i:02}"), Bytes::from(vec![b'x'; i]))
            .await
            .unwrap();
    }
    store
        .put("snapshotsX/not-me", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let mut l = store.list("snapshots/").await.unwrap();
    l.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(l.len(), 25, "{l:?}");
    assert_eq!(l[3].key, "snapshots/s03");
    assert_eq!(l[3].size, 3);
    let data = store.list("data/").await.unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].key, "data/ab/abcd");
    assert_eq!(data[0].size, big.len() as u64);
    assert!(store.list("index/").await.unwrap().is_empty());
    // delete, idempotent
    store.delete("snapshots/s00").await.unwrap();
    store.delete("snapshots/s00").await.unwrap();
    assert!(store.get("snapshots/s00").await.unwrap_err().is_not_found());
    assert_eq!(store.list("snapshots/").await.unwrap().len(), 24);
    // concurrent puts of distinct keys
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.put(&format!("index/i{i}"), Bytes::from(format!("{i}")))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.list("index/").await.unwrap().len(), 16);
    assert!(!store.location().is_empty());
}

#[tokio::test]
async fn local_directory_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(RetryStore::new(Arc::new(LocalStore::new(
        dir.path().join("repo"),
    ))));
    suite(store).await;
    // No temporary files are left behind.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(p).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

pub async fn s3_client() -> aws_sdk_s3::Client {
    common::s3_client_with(None)
}

#[tokio::test]
async fn s3_backend_with_prefix() {
    let client = s3_client().await;
    let bucket = common::unique("lbt-conf");
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    let store: DynStore = Arc::new(RetryStore::new(Arc::new(S3Store::from_client(
        client.clone(),
        &bucket,
        "team/a",
    ))));
    suite(store).await;
    // Everything lives under the prefix.
    let all = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        all.contents()
            .iter()
            .all(|o| o.key().unwrap().starts_with("team/a/"))
    );
}

#[tokio::test]
async fn s3_backend_without_prefix() {
    let client = s3_client().await;
    let bucket = common::unique("lbt-conf");
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    suite(Arc::new(RetryStore::new(Arc::new(S3Store::from_client(
        client, &bucket, "",
    )))))
    .await;
}

#[tokio::test]
async fn s3_errors_are_classified() {
    // Wrong credentials: permanent, not retried forever, no secret in the message.
    let store = RetryStore::new(Arc::new(S3Store::from_client(
        common::s3_client_with(Some("definitely-wrong-secret")),
        "whatever",
        "",
    )));
    let err = store.get("config").await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        !err.to_string().contains("definitely-wrong-secret"),
        "{err}"
    );
}
