//! Rule numbers that may be APISIX 3.18 templates: `count: 10` or
//! `count: "$${http_count ?? 2}"`; `time_window: 60s` or `time_window: "$http_window"`
//! (seconds). In gateway.yaml `${…}` is an environment variable, so a braced template is
//! written `$${…}` (it reaches the rule as `${…}`). A template is resolved per request (see `config::key`); its `fixed` value is
//! what the defaults give (for the status page), 0 without one.

use super::*;

/// A count or token limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Amount {
    pub fixed: u64,
    pub template: Option<String>,
}

impl From<u64> for Amount {
    fn from(fixed: u64) -> Amount {
        Amount {
            fixed,
            template: None,
        }
    }
}

/// A window length.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub fixed: Duration,
    /// Resolves to seconds.
    pub template: Option<String>,
}

impl From<Duration> for Window {
    fn from(fixed: Duration) -> Window {
        Window {
            fixed,
            template: None,
        }
    }
}

fn template_default(t: &str) -> u64 {
    crate::config::key::KeyTemplate::parse(t)
        .ok()
        .and_then(|k| k.default_number())
        .unwrap_or(0)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(n.into()),
            Raw::Text(t) if t.contains('$') => Ok(Amount {
                fixed: template_default(&t),
                template: Some(t),
            }),
            Raw::Text(t) => t.trim().parse::<u64>().map(Amount::from).map_err(|_| {
                serde::de::Error::custom(format!("{t:?} is not a number or a ${{…}} template"))
            }),
        }
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "{n} needs a unit (e.g. {n}s)"
            ))),
            Raw::Text(t) if t.contains('$') => Ok(Window {
                fixed: Duration::from_secs(template_default(&t)),
                template: Some(t),
            }),
            Raw::Text(t) => humantime::parse_duration(&t)
                .map(Window::from)
                .map_err(|e| serde::de::Error::custom(format!("{t:?}: {e}"))),
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.template {
            Some(t) => s.serialize_str(t),
            None => s.serialize_u64(self.fixed),
        }
    }
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.template {
            Some(t) => s.serialize_str(t),
            None => s.serialize_str(&humantime::format_duration(self.fixed).to_string()),
        }
    }
}

impl JsonSchema for Amount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A whole number, or an APISIX template resolved per request (`\"$${http_count ?? 2}\"`).",
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "\\$"}]
        })
    }
}

impl JsonSchema for Window {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Window".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration with its unit (`60s`, `1m`, `24h`), or an APISIX template giving seconds.",
            "type": "string"
        })
    }
}

/// How a duration is written in the file (`500ms`, `30s`, `5m`, `24h`, `30days`): the
/// schema of the `Duration` fields (read with `humantime_serde`).
pub struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration with its unit: `500ms`, `30s`, `5m`, `24h`, `30days`.",
            "type": "string"
        })
    }
}
