//! lifeboat's volume data pipeline on its own, for scripts/bench-volume:
//!
//!   bench_volume init REPO_DIR            create a local repository (password: $LIFEBOAT_PASSWORD)
//!   bench_volume ingest REPO_DIR          read a tar stream on stdin: chunk, hash, compress, seal,
//!                                         pack into the repository, store the file tree
//!
//! The runtime and the packing workers use every core the process may run on (so `taskset -c 0`
//! measures one core). Prints one JSON line: {"op", "bytes", "files", "chunks", "packBytes",
//! "seconds"}.
use std::sync::Arc;
use std::time::Instant;

use lifeboat::repo::Packer;
use lifeboat::repo::crypto::KdfParams;
use lifeboat::store::DynStore;
use lifeboat::volume::{Counters, ingest, store_tree};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (op, dir) = match args.as_slice() {
        [_, op, dir] => (op.as_str(), std::path::PathBuf::from(dir)),
        _ => {
            eprintln!("usage: bench_volume init|ingest REPO_DIR");
            std::process::exit(64);
        }
    };
    let password = std::env::var("LIFEBOAT_PASSWORD").expect("LIFEBOAT_PASSWORD");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store: DynStore = Arc::new(lifeboat::store::local::LocalStore::new(dir));
        let start = Instant::now();
        match op {
            "init" => {
                lifeboat::repo::Repository::init(store, password.as_bytes(), KdfParams::DEFAULT)
                    .await
                    .unwrap();
                println!("{{\"op\":\"init\",\"seconds\":{}}}", start.elapsed().as_secs_f64());
            }
            "ingest" => {
                let repo = Arc::new(
                    lifeboat::repo::Repository::open(store, password.as_bytes())
                        .await
                        .unwrap(),
                );
                repo.load_index().await.unwrap();
                let packer = Arc::new(Packer::with_pack_size(
                    repo.clone(),
                    lifeboat::volume::PACK_SIZE,
                ));
                let (entries, stats) = ingest(
                    repo,
                    packer.clone(),
                    || std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock()),
                    cores,
                    Arc::new(Counters::default()),
                )
                .await
                .unwrap();
                store_tree(&packer, &entries).await.unwrap();
                let ps = packer.finish().await.unwrap();
                println!(
                    "{{\"op\":\"ingest\",\"bytes\":{},\"files\":{},\"chunks\":{},\"packBytes\":{},\"seconds\":{}}}",
                    stats.bytes,
                    stats.files,
                    stats.chunks,
                    ps.pack_bytes,
                    start.elapsed().as_secs_f64()
                );
            }
            other => {
                eprintln!("unknown op {other}");
                std::process::exit(64);
            }
        }
    });
}
