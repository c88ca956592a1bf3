//! Prices: every number finite and not negative, a discount at most 1.

use super::Problems;
use crate::config::schema::Price;

pub(super) fn price(price: &Price, path: &str, p: &mut Problems) {
    for (field, value) in price.fields() {
        let Some(v) = value else { continue };
        if !v.is_finite() || v < 0.0 {
            p.add(
                format!("{path}.{field}"),
                "must be a number of USD per million tokens, 0 or more",
            );
        } else if field == "batch_discount" && v > 1.0 {
            p.add(
                format!("{path}.{field}"),
                "is the share taken off (0.5 = half price): at most 1",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bad_prices_are_named_by_path() {
        let yaml = r#"
auth: {enabled: false}
providers: [{name: local, kind: mock}]
models:
  - name: m
    price: {input: -1, output: 10, batch_discount: 1.5}
    deployments: [{provider: local, price: {reasoning: .nan}}]
"#;
        let e = crate::config::parse_str(yaml, "t", crate::providers::check)
            .unwrap_err()
            .to_string();
        for want in [
            "models[0].price.input: must be a number of USD per million tokens, 0 or more",
            "models[0].price.batch_discount: is the share taken off (0.5 = half price): at most 1",
            "models[0].deployments[0].price.reasoning: must be a number",
        ] {
            assert!(e.contains(want), "{want} not in {e}");
        }
        // Unknown fields are refused too.
        let e = crate::config::parse_str(
            "auth: {enabled: false}\nproviders: [{name: l, kind: mock}]\nmodels: [{name: m, price: {inptu: 1}, deployments: [{provider: l}]}]\n",
            "t",
            crate::providers::check,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("inptu"), "{e}");
    }
}
