//! Talking to Kubernetes: client construction from kubeconfig + context. Discovery, paginated
//! LIST, apply, wait and exec come here as the operations need them.
use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::Error;

/// How to reach the cluster: the resolved --kubeconfig and --context.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// TCP connect timeout; `None` keeps kube's default.
    pub connect_timeout: Option<Duration>,
}

/// A client plus the address it talks to (for messages).
pub struct Cluster {
    pub client: kube::Client,
    /// The same, without kube's automatic retries of 429/503/504: for requests whose refusal
    /// is the answer (an eviction refused by a PodDisruptionBudget is a 429).
    pub client_no_retry: kube::Client,
    pub server: String,
}

/// The UID of the `kube-system` namespace: a cluster's identity, the same whatever address
/// it is reached at. `None` when it cannot be read (no such namespace, no permission).
pub async fn cluster_uid(client: &kube::Client) -> Option<String> {
    let nss: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    match nss.get_opt("kube-system").await {
        Ok(ns) => ns.and_then(|n| n.metadata.uid),
        Err(e) => {
            tracing::debug!("cannot read namespace kube-system for the cluster's identity: {e}");
            None
        }
    }
}

/// Build the kube configuration: an explicit kubeconfig file, else `$KUBECONFIG` /
/// `~/.kube/config`, else the in-cluster service account (so `drill run` works in a CronJob).
pub async fn config(opts: &ClusterOptions) -> Result<kube::Config, Error> {
    let kopts = KubeConfigOptions {
        context: opts.context.clone(),
        ..Default::default()
    };
    let mut config = match &opts.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig { source })?;
            kube::Config::from_custom_kubeconfig(kc, &kopts)
                .await
                .map_err(|source| Error::Kubeconfig { source })?
        }
        None if opts.context.is_some() => kube::Config::from_kubeconfig(&kopts)
            .await
            .map_err(|source| Error::Kubeconfig { source })?,
        None => kube::Config::infer().await.map_err(|e| {
            tracing::debug!(error = %e, "kubeconfig inference failed");
            Error::NoCluster {
                detail: e.to_string(),
            }
        })?,
    };
    if let Some(t) = opts.connect_timeout {
        config.connect_timeout = Some(t);
        config.read_timeout = Some(t * 3);
    }
    Ok(config)
}

/// Select rustls' process-wide crypto provider once. Both `ring` (kube) and `aws-lc-rs` (the AWS
/// SDK) are compiled in, so rustls cannot pick one by itself; we choose ring for the Kubernetes
/// client. Idempotent; call before building any rustls-based client.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Connect (lazily: no request is made here).
pub async fn connect(opts: &ClusterOptions) -> Result<Cluster, Error> {
    install_crypto_provider();
    let config = config(opts).await?;
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let mut no_retry = config.clone();
    no_retry.default_retry = false;
    let client = kube::Client::try_from(config).map_err(|source| Error::Client { source })?;
    let client_no_retry =
        kube::Client::try_from(no_retry).map_err(|source| Error::Client { source })?;
    Ok(Cluster {
        client,
        client_no_retry,
        server,
    })
}
