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
        /// Take over the listening sockets of a running gateway (zero-downtime restart):
        /// start the new binary with --upgrade, then send SIGQUIT to the old process; it
        /// hands its sockets over through server.upgrade_sock and drains.
        #[arg(long)]
        upgrade: bool,
    },
    /// Submit and follow batches on a running gateway (the OpenAI Files and Batches API).
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
        /// The gateway's base URL.
        #[arg(
            long,
            global = true,
            default_value = "http://127.0.0.1:9080",
            env = "GATEWAY_URL"
        )]
        url: String,
        /// A consumer key of the gateway.
        #[arg(
            long,
            global = true,
            env = "GATEWAY_API_KEY",
            default_value = "sk-local-dev",
            hide_env_values = true
        )]
        key: String,
    },
    /// Manage consumers and their keys through a running gateway's Admin API (on its
    /// metrics listener).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        /// The gateway's admin (metrics) listener.
        #[arg(
            long,
            global = true,
            default_value = "http://127.0.0.1:9091",
            env = "GATEWAY_ADMIN_URL"
        )]
        url: String,
        /// An admin key (`admin.keys`).
        #[arg(long, global = true, env = "GATEWAY_ADMIN_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Turn an APISIX standalone config (YAML ending in #END, or JSON) into a gateway.yaml
    /// on stdout. What cannot be mapped is listed on stderr with where it came from; the
    /// exit code is 0 for a complete import, 3 for an incomplete one, 1 for an error.
    ImportApisix {
        /// The APISIX file (`apisix.yaml` or `apisix.json`).
        file: PathBuf,
    },
    /// Ask a running gateway whether it is ready (for container health checks): exits 0
    /// when `/ready` answers 200.
    Health {
        /// The gateway's readiness URL (on its metrics listener).
        #[arg(long, default_value = "http://127.0.0.1:9091/ready")]
        url: String,
    },
    /// Validate a config file without serving: prints every problem with its path and
    /// exits non-zero if there is any.
    Check {
        /// The config file.
        #[arg(default_value = "gateway.yaml")]
        file: PathBuf,
    },
    /// Print the JSON Schema of gateway.yaml (for editors: point the YAML language
    /// server's `yaml.schemas` at the file), or with --markdown the configuration
    /// reference (docs/config-reference.md).
    Schema {
        /// The Markdown reference instead of the JSON Schema.
        #[arg(long)]
        markdown: bool,
    },
    /// Print the effective price of every deployment (USD per million tokens): its own
    /// fields over its model's, and the defaults that follow.
    Prices {
        /// The config file.
        #[arg(default_value = "gateway.yaml")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Upload a JSONL input file and create a batch; with --wait, show its progress and
    /// download the output and error files when it ends.
    Submit {
        /// The JSONL input file: one request per line (`custom_id`, `method`, `url`, `body`).
        file: PathBuf,
        /// The endpoint every line calls.
        #[arg(long, default_value = "/v1/chat/completions")]
        endpoint: String,
        /// Follow the batch until it ends, then download its output and error files.
        #[arg(long)]
        wait: bool,
        /// Where --wait writes `<batch>_output.jsonl` and `<batch>_errors.jsonl`.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print a batch object.
    Status {
        /// The batch id (`batch_…`).
        id: String,
    },
    /// Print every result line of a batch.
    Results {
        /// The batch id (`batch_…`).
        id: String,
        /// `jsonl` (one result per line), `json` (one array) or `csv` (a row per request).
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "json", "csv"])]
        format: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(c: &clap::Command, path: &str) {
            assert!(
                c.get_about().is_some() || path == "ai-rate-limiter",
                "{path}"
            );
            for a in c.get_arguments() {
                if matches!(a.get_id().as_str(), "help" | "version") {
                    continue;
                }
                assert!(a.get_help().is_some(), "{path} {}", a.get_id());
            }
            for s in c.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(s, &format!("{path} {}", s.get_name()));
            }
        }
        walk(&Cli::command(), "ai-rate-limiter");
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// List consumers (the file's and the API's).
    Consumers,
    /// Create a consumer.
    CreateConsumer {
        /// Its name (letters, digits, `.`, `_`, `-`).
        name: String,
        /// Its limit rules as a JSON list (gateway.yaml's schema).
        #[arg(long)]
        limits: Option<String>,
        /// Free-form labels as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Delete a consumer and its keys.
    DeleteConsumer {
        /// The consumer.
        name: String,
    },
    /// A consumer's limits: used, limit, remaining.
    Usage {
        /// The consumer.
        name: String,
    },
    /// Key commands.
    #[command(subcommand)]
    Keys(AdminKeyCommand),
    /// The audit log.
    Audit,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminKeyCommand {
    /// Create a key for a consumer: its secret is printed once.
    Create {
        /// The consumer.
        consumer: String,
        /// Unix seconds after which it is refused.
        #[arg(long)]
        expires_at: Option<u64>,
    },
    /// A consumer's keys (ids and prefixes).
    List {
        /// The consumer.
        consumer: String,
    },
    /// A new key; the old one keeps working for --grace seconds.
    Rotate {
        /// The consumer.
        consumer: String,
        /// The key's id (`key_…`).
        id: String,
        /// Seconds the old key keeps working.
        #[arg(long, default_value_t = 0)]
        grace: u64,
    },
    /// Revoke a key at once.
    Revoke {
        /// The consumer.
        consumer: String,
        /// The key's id (`key_…`).
        id: String,
    },
}
