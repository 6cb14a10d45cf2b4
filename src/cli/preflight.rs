//! `lifeboat preflight` flags.
use std::path::PathBuf;

use clap::Args;

use crate::preflight::{FailOn, PreflightOptions, version::Minor};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes (pluto-compatible): 0 clean, 2 deprecated APIs or warnings \
(with --fail-on deprecated), 3 removed APIs or failed blocker checks, 1 preflight could not run.\n\
Examples:\n  lifeboat preflight                       # next minor of the current cluster\n  \
lifeboat preflight --target 1.35 -o markdown\n  \
lifeboat preflight --nodes-to 1.35            # before upgrading kubelets: is the API server there?\n  \
helm template ./chart | lifeboat preflight --no-cluster --target 1.25 --manifests -"
)]
pub struct PreflightArgs {
    /// Target Kubernetes version (default: the next minor after the cluster's)
    #[arg(long, value_name = "1.N")]
    pub target: Option<Minor>,

    /// Node-upgrade mode: the nodes go to 1.N; the API server must already be there, and the
    /// kubelets are checked against the API server as it is now
    #[arg(long, value_name = "1.N", conflicts_with_all = ["target", "no_cluster"])]
    pub nodes_to: Option<Minor>,

    /// Manifest files or directories to scan (recursively: .yaml, .yml, .json); `-` reads stdin
    #[arg(long = "manifests", short = 'f', value_name = "PATH", num_args = 1..)]
    pub manifests: Vec<PathBuf>,

    /// Scan Helm releases (default: on when a cluster is used)
    #[arg(long, overrides_with = "no_helm")]
    pub helm: bool,

    /// Do not scan Helm releases
    #[arg(long)]
    pub no_helm: bool,

    /// Do not contact the cluster: only manifests are scanned (requires --target)
    #[arg(long)]
    pub no_cluster: bool,

    /// Which findings make the exit code non-zero
    #[arg(long, value_enum, default_value = "removed")]
    pub fail_on: FailOn,

    /// Extra deprecation entries (same format as the embedded database; docs/preflight.md)
    #[arg(long, value_name = "FILE")]
    pub api_data: Vec<PathBuf>,
}

impl PreflightArgs {
    pub fn options(&self) -> PreflightOptions {
        PreflightOptions {
            target: self.target,
            nodes_to: self.nodes_to,
            manifests: self.manifests.clone(),
            helm: if self.no_helm {
                Some(false)
            } else if self.helm {
                Some(true)
            } else {
                None
            },
            no_cluster: self.no_cluster,
            fail_on: self.fail_on,
            api_data: self.api_data.clone(),
        }
    }
}
