//! Prices through the real binary: `ai-rate-limiter prices` prints every deployment's
//! effective price, and a bad price is refused with its path.

use std::process::Command;

fn prices(yaml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ai-rate-limiter"))
        .arg("prices")
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn prices_prints_each_deployments_effective_price() {
    let out = prices(
        r#"
auth: {enabled: false}
providers: [{name: oa, kind: openai, api_key: sk-secret-key}, {name: local, kind: mock}]
models:
  - name: gpt-4o
    price: {input: 2.5, output: 10, batch_discount: 0.5}
    deployments:
      - {provider: oa, price: {output: 8, reasoning: 12}}
  - name: mock
    deployments: [{provider: local}]
"#,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row = text.lines().find(|l| l.starts_with("gpt-4o")).unwrap();
    let cells: Vec<&str> = row
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells,
        [
            "gpt-4o",
            "oa/gpt-4o",
            "2.5",
            "8",
            "2.5 (= input)",
            "2.5 (= input)",
            "12",
            "50%"
        ]
    );
    assert!(text.contains("no price"), "{text}");
    assert!(!text.contains("sk-secret-key"));
}

#[test]
fn a_bad_price_is_refused_with_its_path() {
    let out = prices(
        "auth: {enabled: false}\nproviders: [{name: l, kind: mock}]\nmodels: [{name: m, deployments: [{provider: l, price: {input: -2, output: 1}}]}]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("models[0].deployments[0].price.input"),
        "{err}"
    );
}
