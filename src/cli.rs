//! Command line (clap).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ai-rate-limiter",
    version,
    about = "An OpenAI-compatible LLM gateway with APISIX-compatible rate limits",
    long_about = "An OpenAI-compatible LLM gateway built on Pingora. Point an OpenAI SDK at \
                  http://HOST:PORT/v1; the gateway authenticates consumers, routes each model to \
                  a pool of provider deployments with failover, streams answers back and exports \
                  Prometheus metrics."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. The config file is watched and also reloaded on SIGHUP; SIGTERM
    /// shuts down gracefully (in-flight requests finish within server.shutdown_grace_period).
    Run {
        /// The config file.
        #[arg(long, short, default_value = "gateway.yaml")]
        config: PathBuf,
        /// Proxy listen address, overriding server.listen (e.g. 0.0.0.0:9080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Metrics/health listen address, overriding server.metrics_listen.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Validate a config file without serving: prints every problem with its path and
    /// exits non-zero if there is any.
    Check {
        /// The config file.
        #[arg(default_value = "gateway.yaml")]
        file: PathBuf,
    },
}
