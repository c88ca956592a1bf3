//! Name resolution for every outbound connection the gateway makes (providers, webhooks).
//!
//! An async stub resolver (hickory) reading the system's `resolv.conf` and hosts file, with
//! a cache that keeps each answer for its record's TTL: a provider whose address changes is
//! followed as soon as its record says so, and a lookup neither blocks a proxy thread nor
//! takes a thread of tokio's blocking pool (as `getaddrinfo` does). Where no usable
//! `resolv.conf` exists, lookups fall back to the system resolver, said once in the log.

use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

/// Longest wait for one name, all servers and retries included.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

static RESOLVER: OnceLock<Option<TokioResolver>> = OnceLock::new();

/// Read the system's resolver config now (at start-up, off the async threads), so the
/// first request does not.
pub fn init() {
    resolver();
}

fn resolver() -> Option<&'static TokioResolver> {
    RESOLVER
        .get_or_init(|| {
            match TokioResolver::builder_tokio().and_then(|b| b.build()) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "no usable resolv.conf: names are resolved by the system resolver");
                    None
                }
            }
        })
        .as_ref()
}

/// Every address of `host` (a name or an IP literal) on `port`, IPv4 first, never none:
/// an error says why there is none.
pub async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found: Vec<SocketAddr> = tokio::time::timeout(LOOKUP_TIMEOUT, async {
        match resolver() {
            Some(r) => r
                .lookup_ip(host)
                .await
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(ip, port)).collect())
                .map_err(|e| e.to_string()),
            None => tokio::net::lookup_host((host, port))
                .await
                .map(|a| a.collect())
                .map_err(|e| e.to_string()),
        }
    })
    .await
    .map_err(|_| format!("no answer in {}s", LOOKUP_TIMEOUT.as_secs()))??;
    if found.is_empty() {
        return Err("no address".to_string());
    }
    // IPv4 first, as the system resolver orders them here (a server bound to 127.0.0.1
    // only is reached at once through `localhost`); callers fall back to the others.
    let mut found = found;
    found.sort_by_key(SocketAddr::is_ipv6);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_need_no_lookup_and_localhost_comes_from_the_hosts_file() {
        let v4 = lookup("127.0.0.1", 80).await.unwrap();
        assert_eq!(v4, vec!["127.0.0.1:80".parse().unwrap()]);
        let v6 = lookup("[::1]", 443).await.unwrap();
        assert_eq!(v6, vec!["[::1]:443".parse().unwrap()]);
        let local = lookup("localhost", 8080).await.unwrap();
        assert!(local
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
    }

    #[tokio::test]
    async fn a_name_that_does_not_exist_is_an_error() {
        assert!(lookup("no-such-host.invalid", 80).await.is_err());
    }
}
