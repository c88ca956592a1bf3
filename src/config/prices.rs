//! `ai-rate-limiter prices`: the effective price of every deployment, as the gateway will
//! charge it: the deployment's fields over its model's, and the defaults that follow
//! (cached input and cache writes at the input price, reasoning at the output price).

use super::schema::{Config, Price};
use std::fmt::Write;

/// The table, one row per deployment (USD per million tokens).
pub fn table(config: &Config) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "model".into(),
        "deployment".into(),
        "input".into(),
        "output".into(),
        "cached_input".into(),
        "cache_write".into(),
        "reasoning".into(),
        "batch_discount".into(),
    ]];
    let mut missing = 0;
    for m in &config.models {
        for d in &m.deployments {
            let deployment = format!(
                "{}/{}",
                d.provider,
                d.model.as_deref().unwrap_or(m.name.as_str())
            );
            let price = Price::of(m.price.as_ref(), d.price.as_ref());
            let cells = match price.as_ref().and_then(Price::effective) {
                Some(e) => {
                    let p = price.unwrap_or_default();
                    // A value the operator did not give is marked with the one it follows.
                    let cell = |given: Option<f64>, value: f64, from: &str| match given {
                        Some(v) => usd(v),
                        None => format!("{} (= {from})", usd(value)),
                    };
                    [
                        usd(e.input),
                        usd(e.output),
                        cell(p.cached_input, e.cached_input, "input"),
                        cell(p.cache_write, e.cache_write, "input"),
                        cell(p.reasoning, e.reasoning, "output"),
                        format!("{}%", e.batch_discount * 100.0),
                    ]
                }
                None => {
                    missing += 1;
                    let none = || "-".to_string();
                    ["no price".into(), none(), none(), none(), none(), none()]
                }
            };
            let [a, b, c, d2, e, f] = cells;
            rows.push([m.name.clone(), deployment, a, b, c, d2, e, f]);
        }
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::from("USD per million tokens\n");
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if missing > 0 {
        let _ = writeln!(
            out,
            "{missing} deployment(s) without a price (both input and output are needed)"
        );
    }
    out
}

/// What `check` (and the gateway at start and on reload) warns about: deployments a spend
/// limit covers that have no price, so their requests would be charged nothing. A
/// consumer's spend limit covers every model; a model's, its deployments; a deployment's,
/// itself.
pub fn spend_warnings(config: &Config) -> Vec<String> {
    let spend = |rules: &[super::schema::LimitRuleConfig]| rules.iter().any(|r| r.spend.is_some());
    let consumers: Vec<&str> = config
        .consumers
        .iter()
        .filter(|c| spend(&c.limits))
        .map(|c| c.name.as_str())
        .collect();
    let mut out = Vec::new();
    for (i, m) in config.models.iter().enumerate() {
        for (j, d) in m.deployments.iter().enumerate() {
            let priced = Price::of(m.price.as_ref(), d.price.as_ref())
                .as_ref()
                .and_then(Price::effective)
                .is_some();
            if priced {
                continue;
            }
            let mut by = Vec::new();
            if !consumers.is_empty() {
                by.push(format!("consumer(s) {}", consumers.join(", ")));
            }
            if spend(&m.limits) {
                by.push(format!("model {}", m.name));
            }
            if spend(&d.limits) {
                by.push("the deployment itself".to_string());
            }
            if !by.is_empty() {
                out.push(format!(
                    "models[{i}].deployments[{j}] ({}/{}): no price (input and output), but the spend limits of {} cover it: its requests are charged nothing",
                    d.provider,
                    d.model.as_deref().unwrap_or(m.name.as_str()),
                    by.join(" and ")
                ));
            }
        }
    }
    out
}

/// A price without trailing zeros.
fn usd(v: f64) -> String {
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_effective_prices_and_what_has_none() {
        let yaml = r#"
auth: {enabled: false}
providers: [{name: oa, kind: openai, api_key: sk-x}, {name: local, kind: mock}]
models:
  - name: gpt-4o
    price: {input: 2.5, output: 10, batch_discount: 0.5}
    deployments:
      - {provider: oa}
      - {provider: oa, model: gpt-4o-2024-08-06, price: {cached_input: 1.25}}
  - name: mock
    deployments: [{provider: local}]
"#;
        let config =
            crate::config::parse_str(yaml, "test", crate::providers::check).expect("valid");
        let t = table(&config);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "USD per million tokens");
        assert!(lines[2].starts_with("gpt-4o  oa/gpt-4o "), "{t}");
        assert!(
            lines[2].contains("2.5 (= input)") && lines[2].contains("10 (= output)"),
            "{t}"
        );
        assert!(lines[2].ends_with("50%"), "{t}");
        assert!(
            lines[3].contains("oa/gpt-4o-2024-08-06") && lines[3].contains(" 1.25 "),
            "{t}"
        );
        assert!(
            lines[4].contains("local/mock") && lines[4].contains("no price"),
            "{t}"
        );
        assert!(t.ends_with("1 deployment(s) without a price (both input and output are needed)\n"));
    }

    #[test]
    fn spend_limits_over_unpriced_deployments_are_warned_about() {
        let yaml = r#"
auth: {enabled: true}
consumers:
  - {name: a, keys: [sk-a], limits: [{name: d, spend: {limit_usd: 5, time_window: 24h}}]}
  - {name: b, keys: [sk-b]}
providers: [{name: local, kind: mock}]
models:
  - name: priced
    price: {input: 1, output: 2}
    deployments: [{provider: local}, {provider: local, model: x, price: {output: 3}}]
  - name: half
    price: {input: 1}
    deployments: [{provider: local}]
"#;
        let config =
            crate::config::parse_str(yaml, "test", crate::providers::check).expect("valid");
        let w = spend_warnings(&config);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("models[1].deployments[0] (local/half): no price")
                && w[0].contains("consumer(s) a"),
            "{w:?}"
        );
        // Without spend limits nothing is missing.
        let none = crate::config::parse_str(
            &yaml.replace(
                "spend: {limit_usd: 5, time_window: 24h}",
                "count: {count: 5, time_window: 60s}",
            ),
            "t",
            crate::providers::check,
        )
        .expect("valid");
        assert!(spend_warnings(&none).is_empty());
    }
}
