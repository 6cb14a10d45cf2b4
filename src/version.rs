//! `lifeboat version`: the client's version and, when the cluster answers, the server's.
use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::{self, ClusterOptions};
use crate::error::display_chain;
use crate::output::Render;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientVersion {
    pub version: &'static str,
    pub platform: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerVersion {
    pub git_version: String,
    pub major: String,
    pub minor: String,
    pub platform: String,
    pub go_version: String,
    pub build_date: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReport {
    pub client_version: ClientVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub server_version: Option<ServerVersion>,
    /// Why the server version is missing (unreachable, no kubeconfig, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_error: Option<String>,
}

pub fn client_version() -> ClientVersion {
    ClientVersion {
        version: env!("CARGO_PKG_VERSION"),
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

/// Never fails because of the cluster: an unreachable cluster is reported in `server_error`.
pub async fn version(opts: &ClusterOptions) -> VersionReport {
    let mut opts = opts.clone();
    opts.connect_timeout.get_or_insert(Duration::from_secs(5));
    let client_version = client_version();
    let cluster = match cluster::connect(&opts).await {
        Ok(c) => c,
        Err(e) => {
            return VersionReport {
                client_version,
                server: None,
                server_version: None,
                server_error: Some(display_chain(&e)),
            };
        }
    };
    match cluster.client.apiserver_version().await {
        Ok(info) => VersionReport {
            client_version,
            server: Some(cluster.server),
            server_version: Some(ServerVersion {
                git_version: info.git_version,
                major: info.major,
                minor: info.minor,
                platform: info.platform,
                go_version: info.go_version,
                build_date: info.build_date,
            }),
            server_error: None,
        },
        Err(source) => {
            let e = crate::error::cluster_error(&cluster.server, source);
            VersionReport {
                client_version,
                server: Some(cluster.server),
                server_version: None,
                server_error: Some(display_chain(&e)),
            }
        }
    }
}

impl Render for VersionReport {
    fn table(&self, w: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            w,
            "Client Version: {} ({})",
            self.client_version.version, self.client_version.platform
        )?;
        if let Some(s) = &self.server_version {
            writeln!(w, "Server Version: {}", s.git_version)?;
        }
        Ok(())
    }
}
