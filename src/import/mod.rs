//! `ai-rate-limiter import-apisix`: turn an APISIX standalone config (YAML ending in
//! `#END`, or JSON) into a `gateway.yaml` that behaves the same.
//!
//! [`apisix`] maps the resources and plugins; what it cannot map is returned as
//! [`Unmapped`] items (printed on stderr with the resource they came from), and the exit
//! code says whether the import was complete. The field-by-field table and every
//! deliberate difference are in `lua-compat/README.md`.

pub mod apisix;
mod limits;
mod yaml;

use serde_yaml_ng::Value;

/// Something of the APISIX file the gateway config does not express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// Where it came from (`routes[id=1].plugins.cors`).
    pub at: String,
    pub what: String,
}

impl std::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

/// The result of an import.
pub struct Imported {
    /// The gateway config, as YAML text.
    pub yaml: String,
    pub unmapped: Vec<Unmapped>,
}

/// APISIX's `${{VAR}}` / `${{VAR:=default}}` (substituted in the raw text) become the
/// gateway's `${VAR}` / `${VAR:-default}` (substituted in values at load).
pub fn convert_env(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        match inner.split_once(":=") {
            Some((var, default)) => {
                out.push_str(&format!("${{{}:-{}}}", var.trim(), default.trim()));
            }
            None => out.push_str(&format!("${{{}}}", inner.trim())),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Parse an APISIX standalone file: JSON, or YAML that must end with `#END` (APISIX keeps
/// its old config otherwise).
pub fn parse(text: &str, json: bool) -> Result<Value, String> {
    let text = convert_env(text);
    if json {
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))?;
        return serde_yaml_ng::to_value(v).map_err(|e| e.to_string());
    }
    let tail = text.trim_end();
    if !tail.ends_with("#END") {
        return Err(
            "missing valid end flag: an APISIX standalone YAML file must end with `#END`".into(),
        );
    }
    serde_yaml_ng::from_str(&text).map_err(|e| format!("not valid YAML: {e}"))
}

/// The importer never prints a config `check` would refuse: its output is validated as the
/// gateway would load it. Variables take the environment's value or their default (an
/// unset one without a default is checked as a placeholder); files the config names
/// (certificates, CA bundles, service-account keys) belong to the machine it will run on
/// and are not checked here.
fn check_output(yaml: &str) -> Result<(), String> {
    // `${VAR}` without a default gets a placeholder default; defaults stay as written;
    // `$$` is a literal `$` (a limit key's or count's own `$${var}` template) and stays.
    let mut text = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            text.push_str("$$");
            rest = escaped;
            continue;
        }
        let Some(after) = after.strip_prefix('{') else {
            text.push('$');
            rest = after;
            continue;
        };
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if after[name_len..].starts_with('}') && name_len > 0 {
            text.push_str(&format!(
                "${{{}:-imported-placeholder}}",
                &after[..name_len]
            ));
            rest = &after[name_len + 1..];
        } else {
            text.push_str("${");
            rest = after;
        }
    }
    text.push_str(rest);
    let env = |name: &str| std::env::var(name).ok();
    let problems = match crate::config::parse_str_with_env(
        &text,
        "the imported config",
        &env,
        crate::providers::check,
    ) {
        Ok(_) => return Ok(()),
        Err(e) => e.problems,
    };
    let machine = ["credentials_file", "extra_ca_file", "cert_file", "key_file"];
    let real: Vec<String> = problems
        .iter()
        .filter(|p| !machine.iter().any(|f| p.path.ends_with(f)))
        .map(|p| format!("  - {p}"))
        .collect();
    if real.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the imported config would be refused ({} problem(s)); nothing was written:\n{}",
        real.len(),
        real.join("\n")
    ))
}

/// Import `text` (JSON when `json`).
pub fn import(text: &str, json: bool) -> Result<Imported, String> {
    let v = parse(text, json)?;
    let (config, unmapped) = apisix::map_config(&v)?;
    let yaml = serde_yaml_ng::to_string(&config).map_err(|e| e.to_string())?;
    check_output(&yaml)?;
    let header =
        "# Imported from an APISIX standalone config by `ai-rate-limiter import-apisix`.\n";
    Ok(Imported {
        yaml: format!("{header}{yaml}"),
        unmapped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_syntax_is_converted() {
        assert_eq!(
            convert_env("a: ${{KEY}}\nb: \"x${{PORT:=9080}}y\"\nc: ${{ W := 1 }}"),
            "a: ${KEY}\nb: \"x${PORT:-9080}y\"\nc: ${W:-1}"
        );
        assert_eq!(
            convert_env("no vars, ${HOME} kept"),
            "no vars, ${HOME} kept"
        );
    }

    #[test]
    fn yaml_needs_the_end_marker() {
        assert!(parse("routes: []\n", false).unwrap_err().contains("#END"));
        assert!(parse("routes: []\n#END\n", false).is_ok());
        assert!(parse("{\"routes\": []}", true).is_ok());
    }
}
