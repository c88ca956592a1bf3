//! Validation of who may call what: consumers' Basic credentials and the
//! `consumer_restriction` of routes and models.

use super::*;
use crate::config::schema::ConsumerRestriction;

/// Basic credentials: a username, unique across consumers, and a password.
pub(super) fn basic_auth(c: &Config, p: &mut Problems) {
    let mut users: HashMap<&str, usize> = HashMap::new();
    for (i, consumer) in c.consumers.iter().enumerate() {
        for (j, b) in consumer.basic_auth.iter().enumerate() {
            let path = format!("consumers[{i}].basic_auth[{j}]");
            if b.username.is_empty() || b.username.contains(':') {
                p.add(format!("{path}.username"), "must be non-empty, without `:`");
            } else if let Some(other) = users.insert(b.username.as_str(), i) {
                p.add(
                    format!("{path}.username"),
                    format!("already used by consumers[{other}]"),
                );
            }
            if b.password.is_empty() {
                p.add(format!("{path}.password"), "must not be empty");
            }
        }
    }
}

/// A restriction lists someone, with a status a client can be answered with.
pub(super) fn restriction(r: &ConsumerRestriction, path: &str, p: &mut Problems) {
    if r.allow.is_empty() && r.deny.is_empty() {
        p.add(
            format!("{path}.consumer_restriction"),
            "needs allow or deny (a list of consumer names)",
        );
    }
    if !(200..=599).contains(&r.rejected_code) {
        p.add(
            format!("{path}.consumer_restriction.rejected_code"),
            "must be 200..=599",
        );
    }
}
