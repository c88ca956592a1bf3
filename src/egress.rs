//! Where the gateway may connect when a client names the address: batch webhooks (and any
//! other outbound URL a consumer supplies). Without this a consumer could point a webhook
//! at loopback, the private network or a cloud metadata service and read the outcome back
//! from the batch (a port scanner inside the operator's network).
//!
//! The rule: only `http`/`https` URLs whose host resolves exclusively to public
//! addresses, unless an address lies in `batch.webhook_allow_networks`. It is checked when
//! the URL is accepted and again at every delivery, on the addresses the connection then
//! uses (DNS may have changed: the checked address is the one connected to). Redirects are
//! never followed: a 3xx is a failed delivery.

use crate::url::BaseUrl;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Why a URL is refused; the messages tell the consumer nothing about the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("webhook_url must be an http:// or https:// URL with a host (and no credentials)")]
    InvalidUrl,
    #[error("webhook_url's host cannot be resolved")]
    Unresolvable,
    #[error("webhook_url must point to a public address: loopback, private, link-local, unique-local, unspecified and multicast addresses are refused (an operator can allow networks in batch.webhook_allow_networks)")]
    Internal,
}

/// Whether an address is internal to a host or network rather than public.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_internal(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_internal(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                // IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 and 6to4 2002::/16 embed
                // an IPv4 address that may be internal.
                || (s[..6] == [0; 6] && v4_internal(Ipv4Addr::from(v6.to_bits() as u32)))
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                    && v4_internal(Ipv4Addr::from(v6.to_bits() as u32)))
                || (s[0] == 0x2002
                    && v4_internal(Ipv4Addr::new(
                        (s[1] >> 8) as u8,
                        s[1] as u8,
                        (s[2] >> 8) as u8,
                        s[2] as u8,
                    )))
        }
    }
}

fn v4_internal(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: cloud metadata lives here
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] == 0 // "this network" 0/8
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments 192.0.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved 240/4
}

/// The egress rule of one config snapshot.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Vec<IpNet>,
}

impl EgressPolicy {
    pub fn new(allow: &[IpNet]) -> EgressPolicy {
        EgressPolicy {
            allow: allow.to_vec(),
        }
    }

    /// Whether the gateway may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(&ip)) || !is_internal(ip)
    }

    /// Parse a client-supplied URL (http/https, no credentials, a valid port).
    pub fn parse(&self, url: &str) -> Result<BaseUrl, EgressError> {
        BaseUrl::parse(url).map_err(|_| EgressError::InvalidUrl)
    }

    /// The address to connect to for `base`: every address its host resolves to must be
    /// permitted (so a name cannot mix a public and an internal address).
    pub async fn resolve(&self, base: &BaseUrl) -> Result<SocketAddr, EgressError> {
        let addrs = crate::dns::lookup(&base.host, base.port)
            .await
            .map_err(|_| EgressError::Unresolvable)?;
        if addrs.iter().any(|a| !self.permits(a.ip())) {
            return Err(EgressError::Internal);
        }
        addrs.first().copied().ok_or(EgressError::Unresolvable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let p = EgressPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(!p.permits(ip(bad)), "{bad} must be refused");
        }
        for good in [
            "8.8.8.8",
            "172.32.0.1",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(p.permits(ip(good)), "{good} is public");
        }
        let open =
            EgressPolicy::new(&["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]);
        assert!(open.permits(ip("127.0.0.1")) && open.permits(ip("::ffff:127.0.0.1")));
        assert!(open.permits(ip("fd00::1")));
        assert!(!open.permits(ip("10.0.0.1")) && !open.permits(ip("::1")));
    }

    #[tokio::test]
    async fn urls_are_parsed_strictly_and_names_resolved_before_the_check() {
        let p = EgressPolicy::default();
        assert_eq!(
            p.parse("ftp://example.com/x").unwrap_err(),
            EgressError::InvalidUrl
        );
        assert_eq!(
            p.parse("http://u:p@example.com/").unwrap_err(),
            EgressError::InvalidUrl
        );
        let local = p.parse("http://localhost:9/hook").unwrap();
        assert_eq!(p.resolve(&local).await.unwrap_err(), EgressError::Internal);
        let metadata = p.parse("http://169.254.169.254/latest/meta-data").unwrap();
        assert_eq!(
            p.resolve(&metadata).await.unwrap_err(),
            EgressError::Internal
        );
        let open = EgressPolicy::new(&["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        assert!(open.resolve(&local).await.unwrap().ip().is_loopback());
    }
}
