//! The local S3 server (s3s-fs) through aws-sdk-s3 with a custom endpoint and path-style
//! addressing: the combination lifeboat's S3 backend uses.
mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::unique;

async fn client() -> aws_sdk_s3::Client {
    common::s3_client_with(None)
}

async fn bucket(c: &aws_sdk_s3::Client) -> String {
    let name = unique("lbt");
    c.create_bucket().bucket(&name).send().await.unwrap();
    name
}

#[tokio::test]
async fn put_get_list_delete() {
    let c = client().await;
    let b = bucket(&c).await;
    for i in 0..3 {
        c.put_object()
            .bucket(&b)
            .key(format!("data/obj-{i}"))
            .body(ByteStream::from(format!("hello {i}").into_bytes()))
            .send()
            .await
            .unwrap();
    }
    c.put_object()
        .bucket(&b)
        .key("other/x")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();

    let got = c
        .get_object()
        .bucket(&b)
        .key("data/obj-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"hello 1"
    );

    let listed = c
        .list_objects_v2()
        .bucket(&b)
        .prefix("data/")
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(String::from))
        .collect();
    keys.sort();
    assert_eq!(keys, ["data/obj-0", "data/obj-1", "data/obj-2"]);

    let head = c
        .head_object()
        .bucket(&b)
        .key("data/obj-2")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(7));

    c.delete_object()
        .bucket(&b)
        .key("data/obj-0")
        .send()
        .await
        .unwrap();
    let listed = c
        .list_objects_v2()
        .bucket(&b)
        .prefix("data/")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents().len(), 2);
    let missing = c.get_object().bucket(&b).key("data/obj-0").send().await;
    let err = missing.expect_err("deleted object must be gone");
    assert!(err.into_service_error().is_no_such_key());
}

#[tokio::test]
async fn multipart_upload_round_trips() {
    let c = client().await;
    let b = bucket(&c).await;
    let key = "big/blob";
    let mp = c
        .create_multipart_upload()
        .bucket(&b)
        .key(key)
        .send()
        .await
        .unwrap();
    let id = mp.upload_id().unwrap().to_string();
    const PART: usize = 5 * 1024 * 1024;
    let mut all = Vec::new();
    let mut parts = Vec::new();
    for n in 1..=3i32 {
        let len = if n == 3 { 1234 } else { PART };
        let data: Vec<u8> = (0..len)
            .map(|i| ((i as u32).wrapping_mul(2654435761) >> 24) as u8 ^ n as u8)
            .collect();
        all.extend_from_slice(&data);
        let up = c
            .upload_part()
            .bucket(&b)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(up.e_tag().unwrap())
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket(&b)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let got = c
        .get_object()
        .bucket(&b)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(got.len(), all.len());
    assert!(got.as_ref() == all.as_slice(), "multipart content differs");
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let c = common::s3_client_with(Some("not-the-secret"));
    assert!(c.list_buckets().send().await.is_err());
}
