//! What can be checked of `docker/` without a Docker engine: the compose file parses and
//! every path it (and the Dockerfile) references exists, the Prometheus config passes
//! `promtool check config`, the image's gateway.yaml is valid, and every metric the Grafana
//! dashboard queries is one the gateway exports.

mod common;
use common::*;
use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn docker() -> &'static Path {
    Box::leak(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docker")
            .into_boxed_path(),
    )
}

#[test]
fn compose_file_parses_and_every_referenced_path_exists() {
    let text = std::fs::read_to_string(docker().join("compose.yaml")).unwrap();
    let compose: Value = serde_yaml_ng::from_str(&text).unwrap();
    let services = compose["services"].as_mapping().expect("services");
    for name in ["redis", "gateway-1", "gateway-2", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "service {name}");
    }
    let mut checked = 0;
    for (name, s) in services {
        let name = name.as_str().unwrap_or("?");
        if let Some(b) = s.get("build") {
            let ctx = docker().join(b["context"].as_str().unwrap());
            assert!(ctx.is_dir(), "{name}: build context");
            let df = ctx.join(b["dockerfile"].as_str().unwrap());
            assert!(df.is_file(), "{name}: {}", df.display());
            checked += 1;
            // Every COPY source of the Dockerfile exists in the context.
            for line in std::fs::read_to_string(&df).unwrap().lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.first() == Some(&"COPY") && !line.contains("--from") {
                    for src in &words[1..words.len() - 1] {
                        assert!(ctx.join(src).exists(), "Dockerfile COPY {src}");
                    }
                }
            }
        }
        for v in s
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            if host.starts_with('.') {
                assert!(docker().join(host).exists(), "{name}: volume {host}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "paths checked: {checked}");
    for f in [
        "grafana/provisioning/datasources/prometheus.yaml",
        "grafana/provisioning/dashboards/dashboards.yaml",
    ] {
        let _: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(docker().join(f)).unwrap())
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(docker().join("prometheus.yml"))
        .output()
        .expect("promtool is needed (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .arg("check")
        .arg(docker().join("gateway.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_metric_of_the_dashboard_is_exported() {
    let text =
        std::fs::read_to_string(docker().join("grafana/dashboards/ai-rate-limiter.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut wanted = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("gateway_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                wanted.insert(name);
            }
        }
    }
    assert!(wanted.len() >= 10, "{wanted:?}");
    // A gateway on the Redis policy that has served a priced request and seen an upstream
    // error, so that every labelled series exists.
    let redis = redis::Redis::start();
    let gw = Gw::start(&format!(
        "auth: {{enabled: false}}\n\
         providers: [{{name: mock, kind: mock}}, {{name: bad, kind: mock, mock: {{failure: {{status: 500}}}}}}]\n\
         models: [{{name: m, price: {{input: 1, output: 2}}, deployments: [{{provider: mock, limits: [{{name: c, conn: {{conn: 5}}}}]}}]}}, {{name: b, deployments: [{{provider: bad}}]}}]\n\
         limits: {{policy: redis, redis: {{url: \"{}\"}}}}\n",
        redis.url()
    ));
    assert_eq!(
        post(
            &gw.url("/v1/chat/completions"),
            None,
            &chat_body("m", "hi", false)
        )
        .status,
        200
    );
    assert_eq!(
        post(
            &gw.url("/v1/chat/completions"),
            None,
            &chat_body("b", "hi", false)
        )
        .status,
        500
    );
    let metrics = gw.metrics();
    let families: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in &wanted {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(f)))
            .unwrap_or(name);
        assert!(
            families.contains(family),
            "the dashboard queries {name}, not exported"
        );
    }
}
