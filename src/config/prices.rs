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
        let config = crate::config::parse_str(yaml, "test").expect("valid");
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
}
