//! Hot reload: a background service that reloads the config file when its content changes
//! (polled, which also works for editors that replace the file and for ConfigMap symlink
//! swaps) and on SIGHUP. A valid file becomes the new snapshot atomically; an invalid one
//! keeps the old snapshot, logs every problem and counts a failed reload.

use crate::config::{load_file, schema::Config};
use crate::state::AppState;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// Command-line settings that win over the file, applied to every load.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        if let Some(l) = &self.listen {
            c.server.listen = l.clone();
        }
        if let Some(l) = &self.metrics_listen {
            c.server.metrics_listen = l.clone();
        }
    }
}

pub struct Reloader {
    pub state: Arc<AppState>,
    pub path: PathBuf,
    pub overrides: Overrides,
}

fn fingerprint(path: &PathBuf) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

impl Reloader {
    /// The config file's fingerprint, and the TLS files' (a renewed certificate reloads
    /// too, without touching the config file).
    fn watched(&self) -> Option<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(fingerprint(&self.path)?);
        if let Some(t) = &self.state.runtime.load().config.server.tls {
            for f in [&t.cert_file, &t.key_file] {
                h.update(fingerprint(f).unwrap_or_default());
            }
        }
        Some(h.finalize().into())
    }
}

impl Reloader {
    /// Load the file and swap it in. Returns whether the new config is in use.
    pub fn reload(&self, trigger: &str) -> bool {
        let m = &self.state.metrics;
        match load_file(&self.path, crate::providers::check) {
            Ok(mut config) => {
                self.overrides.apply(&mut config);
                let old = self.state.runtime.load();
                let restart_only = restart_only_changes(&old.config, &config);
                if !restart_only.is_empty() {
                    tracing::warn!(fields = ?restart_only, "config reload: these settings change only at restart");
                }
                if let (Some(cert), Some(t)) = (&self.state.tls, &config.server.tls) {
                    match cert.reload(&t.cert_file, &t.key_file) {
                        Ok(()) => {
                            tracing::info!(cert = %t.cert_file.display(), "TLS certificate reloaded")
                        }
                        Err(e) => tracing::error!(
                            "TLS certificate not reloaded, keeping the previous one: {e}"
                        ),
                    }
                }
                self.state.set_traces(config.traces.as_ref());
                // The file is the base; the Admin API's objects stay on top of it.
                self.state.file_config.store(Arc::new(config));
                self.state.rebuild();
                let generation = self.state.runtime.load().generation;
                m.config_reloads.with_label_values(&["success"]).inc();
                tracing::info!(trigger, generation, "config reloaded");
                true
            }
            Err(e) => {
                m.config_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(
                    trigger,
                    "config reload failed, keeping the previous config: {e}"
                );
                false
            }
        }
    }
}

/// The settings a reload changed that take effect only at restart, each by its path
/// (`server.tls` is not one: its certificate is reloaded); the same list as
/// `config::reference::RESTART_ONLY` (a test keeps them in step).
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut note = |changed: bool, path: &'static str| {
        if changed {
            out.push(path);
        }
    };
    let (o, n) = (&old.server, &new.server);
    note(o.listen != n.listen, "server.listen");
    note(
        o.metrics_listen != n.metrics_listen,
        "server.metrics_listen",
    );
    note(o.threads != n.threads, "server.threads");
    note(o.work_stealing != n.work_stealing, "server.work_stealing");
    note(
        o.max_body_bytes != n.max_body_bytes,
        "server.max_body_bytes",
    );
    note(
        o.max_header_bytes != n.max_header_bytes,
        "server.max_header_bytes",
    );
    note(
        o.header_read_timeout != n.header_read_timeout,
        "server.header_read_timeout",
    );
    note(
        o.shutdown_grace_period != n.shutdown_grace_period,
        "server.shutdown_grace_period",
    );
    note(o.upgrade_sock != n.upgrade_sock, "server.upgrade_sock");
    note(old.logging != new.logging, "logging");
    note(
        old.upstream.pool_size != new.upstream.pool_size,
        "upstream.pool_size",
    );
    note(
        old.upstream.extra_ca_file != new.upstream.extra_ca_file,
        "upstream.extra_ca_file",
    );
    let (o, n) = (&old.batch, &new.batch);
    note(o.enabled != n.enabled, "batch.enabled");
    note(o.store != n.store, "batch.store");
    note(o.data_dir != n.data_dir, "batch.data_dir");
    note(
        old.responses.store != new.responses.store,
        "responses.store",
    );
    note(
        old.responses.data_dir != new.responses.data_dir,
        "responses.data_dir",
    );
    note(old.admin.data_dir != new.admin.data_dir, "admin.data_dir");
    note(old.admin.store != new.admin.store, "admin.store");
    let (o, n) = (&old.limits, &new.limits);
    note(o.policy != n.policy, "limits.policy");
    note(o.redis != n.redis, "limits.redis");
    note(
        o.local_max_keys != n.local_max_keys,
        "limits.local_max_keys",
    );
    out
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload on SIGHUP is off");
                None
            }
        };
        let mut last = self.watched();
        loop {
            let reload_cfg = self.state.runtime.load().config.reload.clone();
            tokio::select! {
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                    self.reload("sighup");
                    last = self.watched();
                }
                _ = tokio::time::sleep(reload_cfg.poll_interval) => {
                    if reload_cfg.watch {
                        let now = self.watched();
                        if now.is_some() && now != last {
                            self.reload("file_change");
                            last = self.watched();
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_changes_name_their_fields() {
        let parse =
            |yaml: &str| crate::config::parse_str(yaml, "test", crate::providers::check).unwrap();
        let base = "auth: {enabled: false}\nproviders: [{name: m, kind: mock}]\n";
        let old = parse(base);
        let new = parse(&format!(
            "{base}server: {{listen: \"127.0.0.1:1\", threads: 3}}\n"
        ));
        assert_eq!(
            restart_only_changes(&old, &new),
            ["server.listen", "server.threads"]
        );
        assert!(restart_only_changes(&old, &old).is_empty());
    }

    /// The reference's reload column (`config::reference::RESTART_ONLY`) names exactly
    /// what a reload warns about.
    #[test]
    fn every_restart_only_setting_is_in_the_reference_list() {
        let parse =
            |yaml: &str| crate::config::parse_str(yaml, "test", crate::providers::check).unwrap();
        let base = "auth: {enabled: false}\nproviders: [{name: m, kind: mock}]\n";
        let old = parse(base);
        let new = parse(&format!(
            "{base}server: {{listen: \"127.0.0.1:1\", metrics_listen: \"127.0.0.1:2\", \
             threads: 3, work_stealing: true, max_body_bytes: 5000, max_header_bytes: 6000, \
             header_read_timeout: 7s, shutdown_grace_period: 8s, upgrade_sock: /tmp/x.sock}}
logging: {{level: debug}}
upstream: {{pool_size: 9}}
batch: {{enabled: false, store: redis, data_dir: other}}
responses: {{store: redis, data_dir: other}}
admin: {{store: redis, data_dir: other}}
limits: {{policy: redis, redis: {{url: \"redis://127.0.0.1:1\"}}, local_max_keys: 10}}
"
        ));
        let mut new = new;
        new.upstream.extra_ca_file = Some("/tmp/ca.pem".into()); // validation reads the file
        let mut got = restart_only_changes(&old, &new);
        let mut want = crate::config::reference::RESTART_ONLY.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
