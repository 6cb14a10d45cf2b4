//! Trust under faults: the repository never lists a backup it cannot restore. Each test drives
//! the real binary (built with the `faults` feature: `LIFEBOAT_FAULTS` store faults,
//! `LIFEBOAT_FAILPOINTS` kill/sleep points, `LIFEBOAT_CLOCK_SKEW_SECONDS`) against the real
//! control plane and a local or S3 repository, then checks the invariants: `repo check` is
//! clean (or names exactly the damage done outside lifeboat), every listed backup passes
//! `verify --read-data` and a server-side dry-run restore.
mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Lifeboat, TestNs, env, unique};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use serde_json::Value;

const PASSWORD: &str = "fault-campaign-password";

struct Repo {
    url: String,
    dir: Option<PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Repo {
    fn local() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        Repo {
            url: format!("file://{}", dir.display()),
            dir: Some(dir),
            _tmp: tmp,
        }
    }

    async fn s3() -> Repo {
        let bucket = unique("lbt-faults");
        common::s3_client_with(None)
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        Repo {
            url: format!("s3://{bucket}/r"),
            dir: None,
            _tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn lb(&self) -> Lifeboat {
        let s3 = &env().s3;
        Lifeboat::new()
            .env("LIFEBOAT_REPO", &self.url)
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("LIFEBOAT_S3_ENDPOINT", &s3.endpoint)
            .env("AWS_ACCESS_KEY_ID", &s3.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
            .env("AWS_REGION", &s3.region)
            .env("LIFEBOAT_STORE_RETRY_SECONDS", "8")
    }

    fn dir(&self) -> &Path {
        self.dir.as_deref().expect("a local repository")
    }

    fn files(&self, prefix: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir().join(prefix)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }
}

async fn namespace_with_objects(prefix: &str, n: usize) -> TestNs {
    let ns = TestNs::new(prefix).await;
    for i in 0..n {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("cm-{i}")},
            "data": {"value": format!("{prefix}-{i}-{}", "x".repeat(200))}
        }))
        .unwrap();
        ns.api::<ConfigMap>()
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    ns
}

fn listed(lb: &Lifeboat) -> Vec<String> {
    lb.run(&["backup", "list", "-o", "json"])
        .success()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// The invariants after any schedule: check clean, every listed backup verifies with its data
/// and restores (server-side dry run, into a mapped namespace). Returns the listed count.
fn assert_trustworthy(lb: &Lifeboat, what: &str) -> usize {
    let c = lb.run(&["repo", "check", "-o", "json"]);
    assert_eq!(c.code(), 0, "{what}: repo check\n{}", c.describe());
    let ids = listed(lb);
    for id in &ids {
        let v = lb.run(&["backup", "verify", id, "--read-data", "-o", "json"]);
        assert_eq!(
            v.code(),
            0,
            "{what}: listed backup {id} does not verify\n{}",
            v.describe()
        );
        let detail = lb
            .run(&["backup", "describe", id, "-o", "json"])
            .success()
            .json();
        let Some(ns) = detail["selectors"]["namespaces"][0].as_str() else {
            continue;
        };
        let r = lb.run(&[
            "restore",
            id,
            "--dry-run",
            "--namespace-map",
            &format!("{ns}={}", unique("lbt-dry")),
            "-o",
            "json",
        ]);
        assert_eq!(
            r.code(),
            0,
            "{what}: listed backup {id} does not restore\n{}",
            r.describe()
        );
    }
    ids.len()
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(child: std::process::Child, what: &str) -> std::process::Output {
    common::output_bounded(child, what)
}

fn spawn(lb: &Lifeboat, args: &[&str]) -> std::process::Child {
    lb.command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_clock_skewed_prune_during_a_backup_deletes_nothing_it_needs() {
    let ns = namespace_with_objects("skew", 5).await;
    for repo in [Repo::local(), Repo::s3().await] {
        let lb = repo.lb();
        lb.run(&["repo", "init"]).success();
        lb.run(&["backup", "create", "-n", &ns.name]).success();
        // The backup stops for 4 s once its packs and index are written, before its snapshot.
        let slow = repo
            .lb()
            .env("LIFEBOAT_FAILPOINTS", "backup.before-snapshot=sleep=4000");
        let child = spawn(&slow, &["backup", "create", "-n", &ns.name, "-o", "json"]);
        std::thread::sleep(Duration::from_millis(1500));
        // Prune with a clock 10 minutes behind (and one 10 minutes ahead): the running
        // backup's lock is fresh for both, so both are refused.
        for skew in ["-600", "600"] {
            let p = repo.lb().env("LIFEBOAT_CLOCK_SKEW_SECONDS", skew).run(&[
                "backup",
                "prune",
                "--keep-last",
                "1",
                "--safety-margin",
                "0s",
            ]);
            assert_eq!(p.code(), 1, "skew {skew}\n{}", p.describe());
            assert!(p.stderr().contains("locked"), "{}", p.describe());
        }
        let out = finish(child, "paused backup");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(listed(&lb).len(), 2);
        assert_trustworthy(&lb, "after a skewed prune");
        // Now prune for real: the newest backup keeps everything it needs.
        repo.lb()
            .env("LIFEBOAT_CLOCK_SKEW_SECONDS", "-600")
            .run(&[
                "backup",
                "prune",
                "--keep-last",
                "1",
                "--safety-margin",
                "0s",
            ])
            .success();
        assert_eq!(assert_trustworthy(&lb, "after prune"), 1);
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn a_backup_that_lost_its_lock_records_nothing_and_prune_keeps_young_packs() {
    let ns = namespace_with_objects("lost", 5).await;
    let repo = Repo::local();
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    lb.run(&["backup", "create", "-n", &ns.name]).success();
    // A new object so the second backup writes a new pack.
    ns.api::<ConfigMap>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                serde_json::json!({"metadata": {"name": "new"}, "data": {"k": "v2"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let slow = repo
        .lb()
        .env("LIFEBOAT_FAILPOINTS", "backup.before-snapshot=sleep=4000");
    let packs_before = repo.files("data").len();
    let child = spawn(&slow, &["backup", "create", "-n", &ns.name]);
    wait_for("the second backup's pack", || {
        repo.files("data").len() > packs_before && !repo.files("locks").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    // Someone removes its lock (a wrong staleness judgement elsewhere), then prunes.
    for l in repo.files("locks") {
        std::fs::remove_file(l).unwrap();
    }
    let p = lb.run(&["backup", "prune", "--keep-last", "1", "-o", "json"]);
    let report = p.success().json();
    assert!(
        report["packsKeptYoung"].as_u64().unwrap() >= 1,
        "the running backup's pack is young: kept\n{}",
        p.describe()
    );
    assert_eq!(report["packsDeleted"], 0, "{}", p.describe());
    let out = finish(child, "backup that lost its lock");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lost its repository lock"), "{err}");
    assert_eq!(
        listed(&lb).len(),
        1,
        "the backup that lost its lock is not listed"
    );
    assert_trustworthy(&lb, "after a lost lock");
    ns.cleanup().await;
}

#[tokio::test]
async fn store_faults_fail_the_backup_loudly_or_are_retried() {
    let ns = namespace_with_objects("store", 5).await;
    let repo = Repo::s3().await;
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    let log = repo._tmp.path().join("faults.log");
    let with = |rules: &str| {
        repo.lb()
            .env("LIFEBOAT_FAULTS", rules)
            .env("LIFEBOAT_FAULTS_LOG", log.to_str().unwrap())
    };
    // Failures that must fail the backup, with nothing listed.
    for rules in [
        "put@data/,fail=permanent",
        "put@data/,fail=enospc",
        "put@index/,fail=permanent",
        "put@snapshots/,fail=permanent",
        "get@config,fail=permanent",
    ] {
        let r = with(rules).run(&["backup", "create", "-n", &ns.name]);
        assert_eq!(r.code(), 1, "{rules}\n{}", r.describe());
        assert_eq!(
            r.stderr().trim().lines().count(),
            1,
            "{rules}: one line\n{}",
            r.describe()
        );
        assert!(listed(&lb).is_empty(), "{rules}: nothing listed");
    }
    assert_eq!(assert_trustworthy(&lb, "after failed backups"), 0);
    // The store lies: half a pack is stored and "OK" is returned. The backup sees the pack is
    // too short and refuses to record itself; `repo check` names the damaged pack (damage
    // outside lifeboat), `repo repair index` leaves it out, and the next backup stores the
    // blobs again instead of deduplicating against the damaged pack.
    ns.api::<ConfigMap>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                serde_json::json!({"metadata": {"name": "fresh"}, "data": {"k": "new content"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let r = with("put@data/,fail=truncate").run(&["backup", "create", "-n", &ns.name]);
    assert_eq!(r.code(), 1, "{}", r.describe());
    assert!(
        r.stderr().contains("refusing to record"),
        "{}",
        r.describe()
    );
    assert!(listed(&lb).is_empty());
    let c = lb.run(&["repo", "check"]);
    assert_eq!(c.code(), 2, "{}", c.describe());
    assert!(c.stdout().contains("DAMAGED pack"), "{}", c.describe());
    let fixed = lb.run(&["repo", "repair", "index"]);
    assert_eq!(
        fixed.code(),
        2,
        "the damaged pack is named\n{}",
        fixed.describe()
    );
    assert_eq!(assert_trustworthy(&lb, "after repair index"), 0);
    // Faults that retries absorb: throttling (with Retry-After), resets, lost responses.
    for rules in [
        "any,nth=2,count=6,fail=throttle,retry-after=1",
        "put,count=3,fail=transient",
        "put@index/,fail=lost;put@snapshots/,fail=lost",
        "list,count=2,fail=transient;get,nth=2,count=2,fail=throttle",
    ] {
        let r = with(rules).run(&["backup", "create", "-n", &ns.name]);
        assert_eq!(r.code(), 0, "{rules}\n{}", r.describe());
    }
    let injected = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(injected >= 10, "{injected} faults injected");
    assert_eq!(assert_trustworthy(&lb, "after store faults"), 4);
    ns.cleanup().await;
}

#[tokio::test]
async fn concurrent_and_interrupted_inits_never_brick_a_repository() {
    let ns = namespace_with_objects("init", 2).await;
    for round in 0..3 {
        let repo = if round == 1 {
            Repo::s3().await
        } else {
            Repo::local()
        };
        let lb = repo.lb();
        let a = spawn(&lb, &["repo", "init"]);
        let b = spawn(&repo.lb(), &["repo", "init"]);
        let (a, b) = (finish(a, "init a"), finish(b, "init b"));
        let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(ok, 1, "exactly one init wins (round {round})");
        let loser = if a.status.success() { &b } else { &a };
        assert!(
            String::from_utf8_lossy(&loser.stderr).contains("already exists"),
            "{}",
            String::from_utf8_lossy(&loser.stderr)
        );
        lb.run(&["backup", "create", "-n", &ns.name]).success();
        assert_eq!(assert_trustworthy(&lb, "after concurrent inits"), 1);
    }
    // An init killed between its key file and its config, then init again.
    let repo = Repo::local();
    let killed = repo
        .lb()
        .env("LIFEBOAT_FAILPOINTS", "init.after-key=kill")
        .run(&["repo", "init"]);
    assert_eq!(
        killed.output.status.signal(),
        Some(9),
        "{}",
        killed.describe()
    );
    assert_eq!(repo.files("keys").len(), 1);
    repo.lb().run(&["repo", "init"]).success();
    let lb = repo.lb();
    lb.run(&["backup", "create", "-n", &ns.name]).success();
    assert_eq!(assert_trustworthy(&lb, "after a killed init"), 1);
    ns.cleanup().await;
}

fn flip(path: &Path, at_fraction: f64) -> Vec<u8> {
    let orig = std::fs::read(path).unwrap();
    let mut b = orig.clone();
    let i = ((b.len() as f64) * at_fraction) as usize % b.len();
    b[i] ^= 0x40;
    std::fs::write(path, &b).unwrap();
    orig
}

#[tokio::test]
async fn repo_check_names_each_damaged_file_and_repairs_bring_backups_back() {
    let a = namespace_with_objects("chka", 4).await;
    let b = namespace_with_objects("chkb", 4).await;
    let repo = Repo::local();
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    lb.run(&["backup", "create", "-n", &a.name]).success();
    lb.run(&["backup", "create", "-n", &b.name]).success();
    assert_eq!(assert_trustworthy(&lb, "before damage"), 2);

    // A flipped byte in a snapshot: named by check, the other backup still lists and restores,
    // and prune refuses to guess.
    let snap = repo.files("snapshots")[0].clone();
    let orig = flip(&snap, 0.5);
    let c = lb.run(&["repo", "check", "-o", "json"]);
    assert_eq!(c.code(), 2, "{}", c.describe());
    let name = format!("snapshots/{}", snap.file_name().unwrap().to_string_lossy());
    assert!(c.stdout().contains(&name), "{}", c.describe());
    assert_eq!(listed(&lb).len(), 1);
    let p = lb.run(&["backup", "prune", "--keep-last", "1"]);
    assert_eq!(p.code(), 1, "{}", p.describe());
    assert!(p.stderr().contains("damaged"), "{}", p.describe());
    std::fs::write(&snap, orig).unwrap();

    // A snapshot copied under another name is detected (names are bound into the seal).
    let copy = snap.with_file_name("0".repeat(64));
    std::fs::copy(&snap, &copy).unwrap();
    let c = lb.run(&["repo", "check"]);
    assert_eq!(c.code(), 2, "{}", c.describe());
    assert!(c.stdout().contains(&"0".repeat(64)), "{}", c.describe());
    std::fs::remove_file(&copy).unwrap();

    // A flipped byte in an index file.
    let idx = repo.files("index")[0].clone();
    let orig = flip(&idx, 0.5);
    let c = lb.run(&["repo", "check"]);
    assert_eq!(c.code(), 2, "{}", c.describe());
    assert!(
        c.stdout().contains(&format!(
            "index/{}",
            idx.file_name().unwrap().to_string_lossy()
        )),
        "{}",
        c.describe()
    );
    std::fs::write(&idx, orig).unwrap();

    // A flipped byte in a pack: --read-data names it.
    let pack = repo.files("data")[0].clone();
    let orig = flip(&pack, 0.3);
    let c = lb.run(&["repo", "check", "--read-data"]);
    assert_eq!(c.code(), 2, "{}", c.describe());
    assert!(
        c.stdout()
            .contains(&pack.file_name().unwrap().to_string_lossy().to_string()),
        "{}",
        c.describe()
    );
    std::fs::write(&pack, orig).unwrap();

    // A damaged lock file: nobody takes it for stale; the message names it.
    std::fs::create_dir_all(repo.dir().join("locks")).unwrap();
    let lock = repo.dir().join("locks").join("f".repeat(64));
    std::fs::write(&lock, b"garbage").unwrap();
    let p = lb.run(&["backup", "prune"]);
    assert_eq!(p.code(), 1, "{}", p.describe());
    assert!(p.stderr().contains(&"f".repeat(64)), "{}", p.describe());
    let c = lb.run(&["repo", "check"]);
    assert_eq!(c.code(), 2, "{}", c.describe());
    assert!(
        c.stdout().contains(&format!("locks/{}", "f".repeat(64))),
        "{}",
        c.describe()
    );
    std::fs::remove_file(&lock).unwrap();

    // A flipped byte in the only key file: "corrupt", naming it (not "wrong password").
    let key = repo.files("keys")[0].clone();
    let orig = flip(&key, 0.9);
    let r = lb.run(&["backup", "list"]);
    assert_eq!(r.code(), 1, "{}", r.describe());
    assert!(
        r.stderr()
            .contains(&key.file_name().unwrap().to_string_lossy().to_string())
            && r.stderr().contains("corrupt"),
        "{}",
        r.describe()
    );
    std::fs::write(&key, orig).unwrap();

    // The index deleted: backups cannot be read until `repo repair index` rebuilds it.
    for f in repo.files("index") {
        std::fs::remove_file(f).unwrap();
    }
    let c = lb.run(&["repo", "check"]);
    assert_eq!(c.code(), 2, "{}", c.describe());
    lb.run(&["repo", "repair", "index"]).success();
    assert_eq!(assert_trustworthy(&lb, "after repair index"), 2);

    // A pack lost: `repair snapshots` names what is lost and leaves a backup that verifies.
    let ids = listed(&lb);
    let packs = repo.files("data");
    assert!(packs.len() >= 2);
    std::fs::remove_file(packs.last().unwrap()).unwrap();
    let dry = lb.run(&["repo", "repair", "snapshots", "--dry-run"]);
    dry.success();
    assert!(dry.stdout().contains("would lose"), "{}", dry.describe());
    let r = lb.run(&["repo", "repair", "snapshots", "-o", "json"]);
    let rep = r.success().json();
    assert_eq!(
        rep["repaired"].as_array().unwrap().len(),
        1,
        "{}",
        r.describe()
    );
    assert!(!rep["repaired"][0]["lost"].as_array().unwrap().is_empty());
    let after = listed(&lb);
    assert_eq!(after.len(), ids.len());
    // What remains is trustworthy (the repaired backup may hold nothing; check stays clean).
    let c = lb.run(&["repo", "check"]);
    assert_eq!(c.code(), 0, "{}", c.describe());
    a.cleanup().await;
    b.cleanup().await;
}

#[tokio::test]
async fn retention_and_latest_are_per_namespace_series() {
    let shop = namespace_with_objects("shop", 2).await;
    let billing = namespace_with_objects("billing", 2).await;
    let repo = Repo::local();
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    let mut shop_ids = Vec::new();
    for _ in 0..2 {
        shop_ids.push(
            lb.run(&["backup", "create", "-n", &shop.name, "-o", "json"])
                .success()
                .json()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        lb.run(&["backup", "create", "-n", &billing.name]).success();
    }
    // billing ran last; `latest -n shop` is shop's newest backup.
    let r = lb.run(&[
        "restore",
        "latest",
        "-n",
        &shop.name,
        "--dry-run",
        "-o",
        "json",
    ]);
    assert_eq!(
        r.success().json()["backup"],
        shop_ids[1],
        "{}",
        r.describe()
    );
    // Nightly-style retention keeps each series' newest.
    let p = lb
        .run(&["backup", "prune", "--keep-daily", "7", "-o", "json"])
        .success()
        .json();
    assert_eq!(p["keptBackups"], 2, "{p}");
    let left = lb.run(&["backup", "list", "-o", "json"]).success().json();
    let mut ns: Vec<String> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["namespaces"][0].as_str().unwrap().to_string())
        .collect();
    ns.sort();
    let mut want = vec![shop.name.clone(), billing.name.clone()];
    want.sort();
    assert_eq!(ns, want);
    assert_trustworthy(&lb, "after grouped retention");
    shop.cleanup().await;
    billing.cleanup().await;
}

#[tokio::test]
async fn kill_9_at_every_write_point_leaves_nothing_half_listed() {
    let ns = namespace_with_objects("kill", 5).await;
    let repo = Repo::local();
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    lb.run(&["backup", "create", "-n", &ns.name]).success();
    let mut n = 1;
    for (i, fp) in [
        "lock.written",
        "pack.before-upload",
        "index.before-write",
        "backup.before-snapshot",
        "backup.after-snapshot",
    ]
    .iter()
    .enumerate()
    {
        // A change, so each backup writes a new pack.
        ns.api::<ConfigMap>()
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    serde_json::json!({"metadata": {"name": format!("k{i}")}, "data": {"k": fp}}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        let r = repo
            .lb()
            .env("LIFEBOAT_FAILPOINTS", &format!("{fp}=kill"))
            .run(&["backup", "create", "-n", &ns.name]);
        assert_eq!(r.output.status.signal(), Some(9), "{fp}\n{}", r.describe());
        if *fp == "backup.after-snapshot" {
            n += 1; // the snapshot was written: the backup is complete
        }
        assert_eq!(listed(&lb).len(), n, "{fp}");
        assert_trustworthy(&lb, fp);
    }
    // The killed processes' locks are stale (dead pid, same boot and PID namespace): prune runs.
    for fp in ["prune.after-index", "prune.before-delete"] {
        let r = repo
            .lb()
            .env("LIFEBOAT_FAILPOINTS", &format!("{fp}=kill"))
            .run(&[
                "backup",
                "prune",
                "--keep-last",
                "1",
                "--safety-margin",
                "0s",
            ]);
        assert_eq!(r.output.status.signal(), Some(9), "{fp}\n{}", r.describe());
        assert_trustworthy(&lb, fp);
    }
    lb.run(&[
        "backup",
        "prune",
        "--keep-last",
        "1",
        "--safety-margin",
        "0s",
    ])
    .success();
    assert_eq!(assert_trustworthy(&lb, "final prune"), 1);
    ns.cleanup().await;
}

/// splitmix64, so a failing schedule reproduces from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Random store faults for one process (no truncation: that is damage outside lifeboat,
/// covered on its own above).
fn random_faults(rng: &mut Rng) -> String {
    let mut rules = Vec::new();
    for _ in 0..rng.below(3) + 1 {
        let op = rng.pick(&[
            "put",
            "put@data/",
            "put@index/",
            "put@snapshots/",
            "get",
            "list",
            "delete",
            "any",
        ]);
        let fail = rng.pick(&[
            "transient",
            "throttle",
            "lost",
            "permanent",
            "enospc",
            "delay=200",
        ]);
        let p = rng.pick(&["0.05", "0.2", "0.5"]);
        rules.push(format!(
            "{op},nth={},count=0,p={p},fail={fail}",
            rng.below(6) + 1
        ));
    }
    rules.join(";")
}

const KILL_POINTS: &[&str] = &[
    "lock.written",
    "pack.before-upload",
    "index.before-write",
    "backup.before-snapshot",
    "backup.after-snapshot",
    "prune.after-index",
    "prune.before-delete",
    "init.after-key",
];

/// The campaign: seeded schedules of faults over init, backup, prune and restore, alone and in
/// concurrent pairs, with clocks skewed by up to ±10 minutes. After each schedule the
/// invariants of `assert_trustworthy` must hold. `LIFEBOAT_CAMPAIGN_SCHEDULES` (default 50) and
/// `LIFEBOAT_CAMPAIGN_SEED` (default 1) choose the rounds; `scripts/fault-campaign` runs more.
#[tokio::test]
async fn fault_campaign() {
    let schedules: u64 = std::env::var("LIFEBOAT_CAMPAIGN_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let first: u64 = std::env::var("LIFEBOAT_CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let ns = namespace_with_objects("campaign", 6).await;
    let mut injected = 0usize;
    let mut listed_total = 0usize;
    let mut kills = 0usize;
    let mut failed_ops = 0usize;
    for seed in first..first + schedules {
        let mut rng = Rng(seed);
        let repo = if seed % 4 == 0 {
            Repo::s3().await
        } else {
            Repo::local()
        };
        let log = repo._tmp.path().join("faults.log");
        let faulty = |rng: &mut Rng, lb: Lifeboat| -> Lifeboat {
            let mut lb = lb
                .env("LIFEBOAT_FAULTS_SEED", &rng.next().to_string())
                .env("LIFEBOAT_FAULTS_LOG", log.to_str().unwrap())
                .env(
                    "LIFEBOAT_CLOCK_SKEW_SECONDS",
                    &((rng.below(1201) as i64) - 600).to_string(),
                )
                .env("LIFEBOAT_STORE_RETRY_SECONDS", "3");
            if rng.below(2) == 0 {
                lb = lb.env("LIFEBOAT_FAULTS", &random_faults(rng));
            }
            if rng.below(4) == 0 {
                lb = lb.env(
                    "LIFEBOAT_FAILPOINTS",
                    &format!("{}=kill", rng.pick(KILL_POINTS)),
                );
            }
            lb
        };
        let scenario = rng.below(5);
        let what = format!("seed {seed} scenario {scenario}");
        let lb = repo.lb();
        let mut outcomes: Vec<std::process::Output> = Vec::new();
        if scenario == 0 {
            // init ‖ init, both under faults.
            let a = spawn(&faulty(&mut rng, repo.lb()), &["repo", "init"]);
            let b = spawn(&faulty(&mut rng, repo.lb()), &["repo", "init"]);
            outcomes.push(finish(a, "init a"));
            outcomes.push(finish(b, "init b"));
            let wins = outcomes.iter().filter(|o| o.status.success()).count();
            assert!(wins <= 1, "{what}: two inits succeeded");
            if wins == 0 {
                // Both failed (faults): a clean init afterwards must work.
                let r = lb.run(&["repo", "init"]);
                assert!(
                    r.code() == 0 || r.stderr().contains("already exists"),
                    "{what}: {}",
                    r.describe()
                );
            }
            lb.run(&["backup", "create", "-n", &ns.name]).success();
        } else {
            lb.run(&["repo", "init"]).success();
            lb.run(&["backup", "create", "-n", &ns.name]).success();
            // A change so the next backup writes new data.
            ns.api::<ConfigMap>()
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(serde_json::json!({"metadata": {"name": format!("s{seed}")}, "data": {"k": seed.to_string()}}))
                        .unwrap(),
                )
                .await
                .unwrap();
            let backup = ["backup", "create", "-n", ns.name.as_str()];
            let prune_args = [
                "backup",
                "prune",
                "--keep-last",
                "1",
                "--safety-margin",
                if rng.below(2) == 0 { "0s" } else { "6h" },
            ];
            let pairs: Vec<(Vec<&str>, Vec<&str>)> = match scenario {
                1 => vec![(backup.to_vec(), vec![])],
                2 => vec![(backup.to_vec(), prune_args.to_vec())],
                3 => vec![(backup.to_vec(), backup.to_vec())],
                _ => vec![(
                    vec!["restore", "latest", "--dry-run", "--namespace-map"],
                    prune_args.to_vec(),
                )],
            };
            for (a, b) in pairs {
                let mut a = a;
                let map = format!("{}={}", ns.name, unique("lbt-cmp"));
                if a[0] == "restore" {
                    a.push(&map);
                }
                let ca = spawn(&faulty(&mut rng, repo.lb()), &a);
                let cb = (!b.is_empty()).then(|| {
                    std::thread::sleep(Duration::from_millis(rng.below(800)));
                    spawn(&faulty(&mut rng, repo.lb()), &b)
                });
                outcomes.push(finish(ca, "first"));
                if let Some(cb) = cb {
                    outcomes.push(finish(cb, "second"));
                }
            }
        }
        for o in &outcomes {
            if o.status.signal() == Some(9) {
                kills += 1;
            } else if !o.status.success() {
                failed_ops += 1;
                // A failure is loud and short: one line on stderr, no panic.
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(!err.contains("panicked"), "{what}: {err}");
            }
        }
        injected += std::fs::read_to_string(&log)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        listed_total += assert_trustworthy(&lb, &what);
    }
    eprintln!(
        "fault campaign: {schedules} schedules (seeds {first}..{}), {injected} store faults injected, {kills} processes killed, {failed_ops} operations failed loudly, {listed_total} backups listed, 0 listed-but-broken",
        first + schedules - 1
    );
    ns.cleanup().await;
}

/// `repo key list -o json` with this password: (ids, the current one).
fn keys_of(lb: &Lifeboat) -> (Vec<String>, String) {
    let r = lb.run(&["repo", "key", "list", "-o", "json"]);
    let v = r.json();
    let keys = v["keys"].as_array().unwrap();
    let ids = keys
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    let current = keys
        .iter()
        .find(|k| k["current"] == true)
        .map(|k| k["id"].as_str().unwrap().to_string())
        .unwrap_or_default();
    (ids, current)
}

#[tokio::test]
async fn repository_keys_are_added_rotated_and_removed_without_ever_locking_everyone_out() {
    let ns = namespace_with_objects("keys", 2).await;
    for round in 0..2 {
        let repo = if round == 0 {
            Repo::local()
        } else {
            Repo::s3().await
        };
        let lb = repo.lb();
        lb.run(&["repo", "init"]).success();
        lb.run(&["backup", "create", "-n", &ns.name]).success();
        let with_pw = |pw: &str| repo.lb().env("LIFEBOAT_PASSWORD", pw);
        let (ids, first) = keys_of(&lb);
        assert_eq!(ids, [first.clone()]);
        // Another password.
        let r = lb
            .clone_with("LIFEBOAT_NEW_PASSWORD", "second-password")
            .run(&["repo", "key", "add", "-o", "json"]);
        r.success();
        let second = r.json()["added"].as_str().unwrap().to_string();
        let (ids, current) = keys_of(&with_pw("second-password"));
        assert_eq!(ids.len(), 2);
        assert_eq!(current, second, "the new password opens its own key");
        // The key this password opened is not removed; the other one is.
        let r = lb.run(&["repo", "key", "remove", &first[..8]]);
        r.code_is(1);
        assert!(
            r.stderr().contains("is the one this password opened"),
            "{}",
            r.describe()
        );
        with_pw("second-password")
            .run(&["repo", "key", "remove", &first[..8]])
            .success();
        let r = lb.run(&["backup", "list"]);
        r.code_is(1);
        assert!(r.stderr().contains("wrong password"), "{}", r.describe());
        // Rotation: the new password opens, the old one no longer does, the data is untouched.
        let second_lb = with_pw("second-password");
        let r = second_lb
            .clone_with("LIFEBOAT_NEW_PASSWORD", "third-password")
            .run(&["repo", "key", "passwd"]);
        r.success();
        let r = second_lb.run(&["backup", "list"]);
        r.code_is(1);
        let third = with_pw("third-password");
        assert_eq!(keys_of(&third).0.len(), 1);
        assert_eq!(assert_trustworthy(&third, "after key rotation"), 1);
        // The last key cannot go: it is the one its password opens.
        let (_, only) = keys_of(&third);
        third.run(&["repo", "key", "remove", &only]).code_is(1);
        assert_eq!(keys_of(&third).0, [only]);
        // A wrong password changes nothing.
        let r = with_pw("not-a-password")
            .clone_with("LIFEBOAT_NEW_PASSWORD", "sneaky")
            .run(&["repo", "key", "add"]);
        r.code_is(1);
        assert_eq!(keys_of(&third).0.len(), 1);
    }
    // Faults: the store refuses the new key, or loses the response; a passwd killed between
    // writing the new key and removing the old one leaves both working.
    let repo = Repo::s3().await;
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    let with = |rules: &str| {
        repo.lb()
            .env("LIFEBOAT_FAULTS", rules)
            .env("LIFEBOAT_NEW_PASSWORD", "fresh-password")
    };
    let r = with("put@keys/,fail=permanent").run(&["repo", "key", "add"]);
    r.code_is(1);
    assert_eq!(r.stderr().trim().lines().count(), 1, "{}", r.describe());
    assert_eq!(keys_of(&lb).0.len(), 1, "nothing added");
    with("put@keys/,count=2,fail=transient;get@keys/,count=1,fail=throttle,retry-after=1")
        .run(&["repo", "key", "add"])
        .success();
    assert_eq!(keys_of(&lb).0.len(), 2);
    let r = with("delete@keys/,fail=permanent").run(&["repo", "key", "passwd"]);
    r.code_is(1);
    assert!(
        keys_of(&repo.lb().env("LIFEBOAT_PASSWORD", "fresh-password"))
            .0
            .len()
            >= 3
    );
    assert!(
        !keys_of(&lb).1.is_empty(),
        "the old password still opens after the failed removal"
    );
    let killed = repo
        .lb()
        .env("LIFEBOAT_NEW_PASSWORD", "after-kill")
        .env("LIFEBOAT_FAILPOINTS", "key.passwd.before-remove=kill")
        .run(&["repo", "key", "passwd"]);
    assert_eq!(
        killed.output.status.signal(),
        Some(9),
        "{}",
        killed.describe()
    );
    assert!(!keys_of(&lb).1.is_empty(), "the old password still opens");
    assert!(
        !keys_of(&repo.lb().env("LIFEBOAT_PASSWORD", "after-kill"))
            .1
            .is_empty()
    );
    // The killed passwd's exclusive lock is seen to be stale (its process is gone): the
    // repository is usable at once and checks clean.
    assert_eq!(assert_trustworthy(&lb, "after a killed passwd"), 0);
    repo.lb()
        .env("LIFEBOAT_NEW_PASSWORD", "yet-another")
        .run(&["repo", "key", "add"])
        .success();
    // Two responders remove each other's key at the same moment: never both.
    let repo = Repo::local();
    let a = repo.lb();
    a.run(&["repo", "init"]).success();
    a.clone_with("LIFEBOAT_NEW_PASSWORD", "b-password")
        .run(&["repo", "key", "add"])
        .success();
    let b = repo.lb().env("LIFEBOAT_PASSWORD", "b-password");
    let (ka, kb) = (keys_of(&a).1, keys_of(&b).1);
    for _ in 0..3 {
        let ra = spawn(&a, &["repo", "key", "remove", &kb]);
        let rb = spawn(&b, &["repo", "key", "remove", &ka]);
        let (ra, rb) = (finish(ra, "remove b"), finish(rb, "remove a"));
        assert!(
            !(ra.status.success() && rb.status.success()),
            "both removals succeeded: no key would be left"
        );
        let left = [&a, &b]
            .iter()
            .filter(|l| l.run(&["backup", "list"]).code() == 0)
            .count();
        assert!(left > 0, "a password still opens the repository");
        if ra.status.success() || rb.status.success() {
            break;
        }
    }
    ns.cleanup().await;
}

fn gauge(text: &str, name: &str) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    match scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .value
    {
        prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_and_prunes_report_to_metrics_pushgateway_and_webhooks_also_when_they_fail() {
    let ns = namespace_with_objects("report", 3).await;
    let repo = Repo::s3().await;
    let lb = repo.lb();
    lb.run(&["repo", "init"]).success();
    let (port, got) = common::http_recorder().await;
    let metrics = repo._tmp.path().join("backup.prom");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["backup", "create", "-n", &ns.name, "--metrics-file"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(metrics.to_str().unwrap().into());
        for s in [
            "--pushgateway".to_string(),
            format!("http://127.0.0.1:{port}"),
            "--notify".into(),
            format!("http://127.0.0.1:{port}/hook"),
        ] {
            v.push(s);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let ok = args(&[]);
    lb.run(&ok.iter().map(String::as_str).collect::<Vec<_>>())
        .success();
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(gauge(&text, "lifeboat_backup_success"), 1.0);
    assert!(gauge(&text, "lifeboat_backup_objects") >= 3.0, "{text}");
    let last_ok = gauge(&text, "lifeboat_backup_last_success_timestamp_seconds");
    assert!(last_ok > 1.7e9, "{text}");
    // A failing backup: success 0, the last success carried over, a "failed" webhook.
    let r = repo
        .lb()
        .env("LIFEBOAT_FAULTS", "get@config,fail=permanent")
        .run(&ok.iter().map(String::as_str).collect::<Vec<_>>());
    r.code_is(1);
    assert_eq!(r.stderr().trim().lines().count(), 1, "{}", r.describe());
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(gauge(&text, "lifeboat_backup_success"), 0.0);
    assert_eq!(
        gauge(&text, "lifeboat_backup_last_success_timestamp_seconds"),
        last_ok
    );
    // Prune.
    let prom = repo._tmp.path().join("prune.prom");
    lb.run(&[
        "backup",
        "prune",
        "--keep-last",
        "1",
        "--metrics-file",
        prom.to_str().unwrap(),
        "--notify",
        &format!("http://127.0.0.1:{port}/hook"),
    ])
    .success();
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(gauge(&text, "lifeboat_prune_success"), 1.0);
    let got = got.lock().unwrap().clone();
    let pushes: Vec<&(String, String)> = got
        .iter()
        .filter(|(l, _)| l.starts_with("PUT /metrics/job/lifeboat_backup/cluster/"))
        .collect();
    assert_eq!(pushes.len(), 2, "{got:?}");
    let hooks: Vec<Value> = got
        .iter()
        .filter(|(l, _)| l.starts_with("POST /hook"))
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    let kinds: Vec<(String, String)> = hooks
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap().into(),
                h["event"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("backup".to_string(), "finished".to_string()),
            ("backup".into(), "failed".into()),
            ("prune".into(), "finished".into())
        ]
    );
    assert!(!hooks.iter().any(|h| h.to_string().contains(PASSWORD)));
    ns.cleanup().await;
}
