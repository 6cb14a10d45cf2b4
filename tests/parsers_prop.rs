//! Property tests of every parser of stored data: mutated (truncated, bit-flipped, spliced)
//! inputs give typed errors, never a panic. `PROPTEST_CASES` sets the number of cases per
//! property (default 256 here; `scripts/prop-million` runs a million in all).
use lifeboat::repo::IndexFile;
use lifeboat::repo::crypto::{KeyFile, MasterKey};
use lifeboat::repo::lock::LockFile;
use lifeboat::repo::pack::{BlobType, PackBuilder, read_header};
use lifeboat::repo::snapshot::{Snapshot, Tree};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// A mutation of `base`: flip bytes, truncate, or splice random bytes in.
fn mutate(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len().max(1);
    prop_oneof![
        prop::collection::vec((0..len, any::<u8>()), 1..8).prop_map({
            let base = base.clone();
            move |flips| {
                let mut b = base.clone();
                for (i, x) in flips {
                    if let Some(v) = b.get_mut(i) {
                        *v ^= x | 1;
                    }
                }
                b
            }
        }),
        (0..len).prop_map({
            let base = base.clone();
            move |n| base[..n.min(base.len())].to_vec()
        }),
        (0..len, prop::collection::vec(any::<u8>(), 0..64)).prop_map({
            let base = base.clone();
            move |(at, junk)| {
                let mut b = base.clone();
                let at = at.min(b.len());
                b.splice(at..at, junk);
                b
            }
        }),
    ]
}

fn sample_pack(key: &MasterKey) -> Vec<u8> {
    let mut b = PackBuilder::default();
    for i in 0..5u8 {
        let plain = vec![i; 100 + i as usize];
        let sealed = key.seal(&plain);
        b.add(
            BlobType::Object,
            key.blob_id(&plain),
            &sealed,
            plain.len() as u32,
        );
    }
    b.finish(key).0
}

const INDEX_JSON: &str = r#"{"packs":[{"id":"aa","blobs":[{"type":"object","id":"0000000000000000000000000000000000000000000000000000000000000000","offset":0,"length":10,"rawLength":3}]}]}"#;
const LOCK_JSON: &str = r#"{"exclusive":false,"hostname":"h","pid":1,"operation":"backup","created":"2026-12-02T10:00:00Z","refreshed":"2026-12-02T10:00:00Z","bootId":"b","pidNamespace":"pid:[1]","pidStart":5}"#;
const TREE_JSON: &str = r#"{"entries":[{"group":"","version":"v1","resource":"configmaps","kind":"ConfigMap","namespace":"a","name":"b","blob":"0000000000000000000000000000000000000000000000000000000000000000","size":3}]}"#;
const SNAPSHOT_JSON: &str = r#"{"version":1,"time":"2026-12-02T10:00:00Z","hostname":"h","toolVersion":"0.1.0","cluster":{"server":"https://x","context":null,"serverVersion":"v1.34.4"},"selectors":{"namespaces":["a"],"labelSelector":null,"includeResources":[],"excludeResources":[],"includeClusterResources":"auto","defaultExcludes":true},"tags":{},"resources":{"configmaps":1},"objects":1,"bytesTotal":3,"bytesAdded":3,"durationSeconds":0.1,"warnings":[],"trees":["0000000000000000000000000000000000000000000000000000000000000000"]}"#;

#[test]
fn samples_parse() {
    serde_json::from_str::<IndexFile>(INDEX_JSON).unwrap();
    serde_json::from_str::<LockFile>(LOCK_JSON).unwrap();
    serde_json::from_str::<Tree>(TREE_JSON).unwrap();
    serde_json::from_str::<Snapshot>(SNAPSHOT_JSON).unwrap();
    let k = MasterKey::generate();
    assert_eq!(read_header(&k, &sample_pack(&k)).unwrap().len(), 5);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn pack_headers_never_panic(m in mutate(sample_pack(&MasterKey::generate()))) {
        // Another key (or a mutated pack) must not decode as a header, and never panics.
        let other = MasterKey::generate();
        prop_assert!(read_header(&other, &m).is_none());
    }

    #[test]
    fn mutated_pack_headers_are_rejected(seed in any::<u64>()) {
        let k = MasterKey::generate();
        let p = sample_pack(&k);
        let i = (seed as usize) % p.len();
        let mut m = p.clone();
        m[i] ^= 0x80;
        // Either the header is intact (the flip hit a blob) or it is refused: never garbage.
        if let Some(h) = read_header(&k, &m) {
            prop_assert_eq!(h.len(), 5);
        }
    }

    #[test]
    fn sealed_files_bound_to_names_reject_mutations(m in mutate(MasterKey::generate().seal_bound(b"{}", b"snapshots/x"))) {
        let k = MasterKey::generate();
        prop_assert!(k.open_bound(&m, b"snapshots/x").is_err());
    }

    #[test]
    fn json_files_never_panic(
        i in mutate(INDEX_JSON.as_bytes().to_vec()),
        l in mutate(LOCK_JSON.as_bytes().to_vec()),
        t in mutate(TREE_JSON.as_bytes().to_vec()),
        s in mutate(SNAPSHOT_JSON.as_bytes().to_vec()),
    ) {
        let _ = serde_json::from_slice::<IndexFile>(&i);
        let _ = serde_json::from_slice::<LockFile>(&l);
        let _ = serde_json::from_slice::<Tree>(&t);
        let _ = serde_json::from_slice::<Snapshot>(&s);
    }

    #[test]
    fn key_files_never_panic_and_bound_their_parameters(
        mem in any::<u32>(), it in any::<u32>(), par in any::<u32>(), salt in "[0-9a-f]{0,80}", sealed in "[0-9a-fz]{0,200}"
    ) {
        let kf = KeyFile {
            version: 2,
            created: "t".into(),
            hostname: "h".into(),
            kdf: "argon2id".into(),
            params: lifeboat::repo::crypto::KdfParams { memory_kib: mem % (1 << 13), iterations: it % 3, parallelism: par % 3 },
            salt,
            sealed,
        };
        // Small parameters so the KDF runs quickly; never a panic, never a key.
        prop_assert!(kf.open(b"pw").is_err());
        let huge = KeyFile { params: lifeboat::repo::crypto::KdfParams { memory_kib: u32::MAX, iterations: it, parallelism: par }, ..kf.clone() };
        prop_assert!(huge.open(b"pw").is_err());
    }

    #[test]
    fn tar_streams_never_panic(m in mutate(sample_tar())) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let r = rt.block_on(lifeboat::volume::tree_of(std::io::Cursor::new(m)));
        let _ = r; // an error or a tree, never a panic
    }

    #[test]
    fn journal_lines_never_panic(m in mutate(br#"{"seq":1,"time":"2026-12-02T10:00:00Z","event":"started"}
{"seq":2}
"#.to_vec())) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        std::fs::write(&p, &m).unwrap();
        let _ = lifeboat::runbook::journal::read(&p);
    }
}

fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("a.txt", &b"hello"[..]), ("dir/b.bin", &[7u8; 700][..])] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap()
}
