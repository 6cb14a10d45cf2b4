//! Baselines for scripts/bench-backup, with the same client library lifeboat uses:
//!
//!   bench_raw create FILE.jsonl [--concurrency N]   create every object (namespaces first)
//!   bench_raw list RESOURCE... [--concurrency N]    paginated LIST (500 per page) of each
//!                                                   resource ("configmaps", "deployments.apps")
//!                                                   across all namespaces, objects discarded
//!
//! Prints one JSON line: {"op", "objects", "seconds"}.
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;

fn ar(spec: &str) -> ApiResource {
    let (plural, group) = spec.split_once('.').unwrap_or((spec, ""));
    let (kind, version) = match (group, plural) {
        ("", "configmaps") => ("ConfigMap", "v1"),
        ("", "secrets") => ("Secret", "v1"),
        ("", "namespaces") => ("Namespace", "v1"),
        ("apps", "deployments") => ("Deployment", "v1"),
        _ => panic!("unknown resource {spec}"),
    };
    let api_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version,
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn ar_for(obj: &serde_json::Value) -> ApiResource {
    let spec = match obj["kind"].as_str().unwrap() {
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        "Namespace" => "namespaces",
        "Deployment" => "deployments.apps",
        k => panic!("unknown kind {k}"),
    };
    ar(spec)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lifeboat::cluster::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conc = args
        .iter()
        .position(|a| a == "--concurrency")
        .map(|i| args[i + 1].parse().unwrap())
        .unwrap_or(16usize);
    let client = kube::Client::try_default().await?;
    match args.first().map(String::as_str) {
        Some("create") => {
            let text = std::fs::read_to_string(&args[1])?;
            let objs: Vec<serde_json::Value> = text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let start = Instant::now();
            let (ns, rest): (Vec<_>, Vec<_>) =
                objs.into_iter().partition(|o| o["kind"] == "Namespace");
            let mut n = 0;
            for batch in [ns, rest] {
                n += batch.len();
                futures::stream::iter(batch)
                    .map(|o| {
                        let client = client.clone();
                        async move {
                            let ar = ar_for(&o);
                            let api: Api<DynamicObject> = match o["metadata"]["namespace"].as_str()
                            {
                                Some(ns) => Api::namespaced_with(client, ns, &ar),
                                None => Api::all_with(client, &ar),
                            };
                            api.create(&PostParams::default(), &serde_json::from_value(o)?)
                                .await?;
                            Ok::<_, anyhow::Error>(())
                        }
                    })
                    .buffer_unordered(conc)
                    .try_collect::<Vec<()>>()
                    .await?;
            }
            println!(
                "{{\"op\":\"create\",\"objects\":{n},\"seconds\":{:.3}}}",
                start.elapsed().as_secs_f64()
            );
        }
        Some("list") => {
            let resources: Vec<String> = args[1..]
                .iter()
                .take_while(|a| !a.starts_with("--"))
                .cloned()
                .collect();
            let start = Instant::now();
            let counts: Vec<usize> = futures::stream::iter(resources)
                .map(|r| {
                    let client = client.clone();
                    async move {
                        let api: Api<DynamicObject> = Api::all_with(client, &ar(&r));
                        let mut lp = ListParams::default().limit(500);
                        let mut n = 0;
                        loop {
                            let page = api.list(&lp).await?;
                            n += page.items.len();
                            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                                Some(c) => lp = lp.continue_token(&c),
                                None => break,
                            }
                        }
                        Ok::<_, anyhow::Error>(n)
                    }
                })
                .buffer_unordered(conc)
                .try_collect()
                .await?;
            println!(
                "{{\"op\":\"list\",\"objects\":{},\"seconds\":{:.3}}}",
                counts.iter().sum::<usize>(),
                start.elapsed().as_secs_f64()
            );
        }
        _ => {
            anyhow::bail!("usage: bench_raw create FILE.jsonl | list RESOURCE... [--concurrency N]")
        }
    }
    Ok(())
}
