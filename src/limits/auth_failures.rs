//! A brake on credential guessing: failed authentications (unknown keys, wrong basic-auth
//! passwords) fill leaky buckets, one per client address and one per basic-auth user.
//! A full bucket answers 429 without checking the credential, so guessing goes no faster
//! than the bucket drains. Pure (the caller passes the time), unit-tested with a fake clock.
//!
//! - **Per address** (IPv6 by its /64): [`ADDRESS`] failures fill it; it then lets one
//!   attempt through every `1 / leak` seconds. Every attempt from a throttled address is
//!   refused, the right credential too: a guesser cannot tell a hit from a miss.
//! - **Per user** (basic auth): [`USER`] failures across every address fill it. A full
//!   user bucket refuses that user's attempts only from addresses that have not
//!   authenticated as the user before: an attacker elsewhere cannot lock the real user
//!   out of the addresses it works from.
//!
//! State is bounded: each map holds at most [`MAX_ENTRIES`] keys of 16 bytes (an address
//! as it is, a user's name as a digest); past that,
//! emptied buckets are dropped, and if every bucket is still in use, new keys share one
//! overflow bucket (a flood from that many addresses is throttled as one).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;

/// A bucket's shape: how many failures fill it and how many drain per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub capacity: f64,
    pub leak_per_sec: f64,
}

/// Per client address: 20 failures, then one attempt every 2 seconds.
pub const ADDRESS: Shape = Shape {
    capacity: 20.0,
    leak_per_sec: 0.5,
};
/// Per basic-auth user: 10 failures, then one every 6 seconds (from unknown addresses).
pub const USER: Shape = Shape {
    capacity: 10.0,
    leak_per_sec: 1.0 / 6.0,
};
/// Most keys held per map.
pub const MAX_ENTRIES: usize = 65_536;
/// Addresses remembered per user as having authenticated as it.
const KNOWN_PER_USER: usize = 8;

type Digest16 = [u8; 16];

fn digest(parts: &[&[u8]]) -> Digest16 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let full = h.finalize();
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// The address as throttled: IPv4 whole, IPv6 by its /64 (one host's usual allocation).
/// Written into the key as it is, a tag byte and the address: it fits in 16 bytes, so
/// no digest is needed (the hash is on every authenticated request's path).
fn address_key(ip: Option<IpAddr>) -> Digest16 {
    let ip = match ip {
        Some(IpAddr::V6(a)) => Some(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4)),
        other => other,
    };
    let mut k = [0u8; 16];
    match ip {
        Some(IpAddr::V4(a)) => {
            k[0] = 4;
            k[1..5].copy_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            k[0] = 6;
            k[1..9].copy_from_slice(&a.octets()[..8]);
        }
        None => {}
    }
    k
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: f64,
}

impl Bucket {
    fn level(&self, shape: Shape, now: f64) -> f64 {
        (self.level - (now - self.at).max(0.0) * shape.leak_per_sec).max(0.0)
    }
}

/// One map of buckets, bounded.
#[derive(Debug)]
struct Buckets {
    shape: Shape,
    map: HashMap<Digest16, Bucket>,
    overflow: Bucket,
}

const OVERFLOW_KEY: Digest16 = [0xff; 16];

impl Buckets {
    fn new(shape: Shape) -> Buckets {
        Buckets {
            shape,
            map: HashMap::new(),
            overflow: Bucket {
                level: 0.0,
                at: 0.0,
            },
        }
    }

    /// Seconds until the bucket of `key` lets an attempt through (0: now).
    fn wait(&self, key: &Digest16, now: f64) -> f64 {
        let b = if *key == OVERFLOW_KEY {
            Some(&self.overflow)
        } else {
            self.map.get(key)
        };
        let Some(b) = b else { return 0.0 };
        let over = b.level(self.shape, now) - (self.shape.capacity - 1.0);
        if over <= 0.0 {
            0.0
        } else {
            over / self.shape.leak_per_sec
        }
    }

    /// Where `key`'s failures go: its own bucket, or the overflow when the map is full.
    fn slot(&mut self, key: Digest16, now: f64) -> &mut Bucket {
        if !self.map.contains_key(&key) && self.map.len() >= MAX_ENTRIES {
            let shape = self.shape;
            self.map.retain(|_, b| b.level(shape, now) > 0.0);
            if self.map.len() >= MAX_ENTRIES {
                return &mut self.overflow;
            }
        }
        self.map.entry(key).or_insert(Bucket {
            level: 0.0,
            at: now,
        })
    }

    fn resolve(&self, key: Digest16) -> Digest16 {
        if self.map.contains_key(&key) || self.map.len() < MAX_ENTRIES {
            key
        } else {
            OVERFLOW_KEY
        }
    }

    fn fail(&mut self, key: Digest16, now: f64) {
        let shape = self.shape;
        let b = self.slot(key, now);
        b.level = (b.level(shape, now) + 1.0).min(shape.capacity + 1.0);
        b.at = now;
    }
}

/// Who is attempting to authenticate.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub addr: Option<IpAddr>,
    /// The basic-auth user name, when the credential has one.
    pub user: Option<&'a str>,
}

/// The throttle's state (one per process).
#[derive(Debug)]
pub struct AuthFailures {
    addresses: Buckets,
    users: Buckets,
    /// user → addresses that have authenticated as it (most recent last).
    known: HashMap<Digest16, Vec<Digest16>>,
}

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures::new(ADDRESS, USER)
    }
}

impl AuthFailures {
    pub fn new(address: Shape, user: Shape) -> AuthFailures {
        AuthFailures {
            addresses: Buckets::new(address),
            users: Buckets::new(user),
            known: HashMap::new(),
        }
    }

    fn keys(a: &Attempt<'_>) -> (Digest16, Option<Digest16>) {
        (
            address_key(a.addr),
            a.user.map(|u| digest(&[b"user", u.as_bytes()])),
        )
    }

    /// Seconds the attempt must wait before its credential is checked (0: check it now).
    pub fn check(&self, a: &Attempt<'_>, now: f64) -> f64 {
        let (addr, user) = Self::keys(a);
        let mut wait = self.addresses.wait(&self.addresses.resolve(addr), now);
        if let Some(u) = user {
            let known = self.known.get(&u).is_some_and(|k| k.contains(&addr));
            if !known {
                wait = wait.max(self.users.wait(&self.users.resolve(u), now));
            }
        }
        wait
    }

    /// A credential was checked and was wrong.
    pub fn failed(&mut self, a: &Attempt<'_>, now: f64) {
        let (addr, user) = Self::keys(a);
        self.addresses.fail(addr, now);
        if let Some(u) = user {
            self.users.fail(u, now);
        }
    }

    /// A basic-auth user authenticated from this address: it is known to the user's
    /// throttle from now on.
    pub fn succeeded(&mut self, a: &Attempt<'_>) {
        let (addr, Some(user)) = Self::keys(a) else {
            return;
        };
        if !self.known.contains_key(&user) && self.known.len() >= MAX_ENTRIES {
            // Forget one user's addresses (any): the cost is a throttle for that user's
            // next attempt from a new address while an attack on it runs.
            if let Some(k) = self.known.keys().next().copied() {
                self.known.remove(&k);
            }
        }
        let list = self.known.entry(user).or_default();
        if let Some(at) = list.iter().position(|k| *k == addr) {
            list.remove(at);
        } else if list.len() >= KNOWN_PER_USER {
            list.remove(0);
        }
        list.push(addr);
    }

    /// Keys held (for tests and the memory bound).
    pub fn len(&self) -> usize {
        self.addresses.map.len() + self.users.map.len() + self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_braked_after_its_failures() {
        let mut t = AuthFailures::default();
        let a = Attempt {
            addr: ip("10.0.0.1"),
            user: None,
        };
        for _ in 0..20 {
            assert_eq!(t.check(&a, 0.0), 0.0);
            t.failed(&a, 0.0);
        }
        let wait = t.check(&a, 0.0);
        assert!(wait > 1.9 && wait <= 2.0, "{wait}");
        // It drains: one attempt every 2 s.
        assert_eq!(t.check(&a, 2.0), 0.0);
        t.failed(&a, 2.0);
        assert!(t.check(&a, 2.5) > 0.0);
        // Another address is not affected.
        let b = Attempt {
            addr: ip("10.0.0.2"),
            user: None,
        };
        assert_eq!(t.check(&b, 0.0), 0.0);
    }

    #[test]
    fn ipv6_is_throttled_by_its_64() {
        let mut t = AuthFailures::default();
        for i in 0..20 {
            let a = Attempt {
                addr: ip(&format!("2001:db8::{i:x}")),
                user: None,
            };
            t.failed(&a, 0.0);
        }
        let other_host = Attempt {
            addr: ip("2001:db8::ffff"),
            user: None,
        };
        assert!(t.check(&other_host, 0.0) > 0.0);
        let other_net = Attempt {
            addr: ip("2001:db8:1::1"),
            user: None,
        };
        assert_eq!(t.check(&other_net, 0.0), 0.0);
    }

    #[test]
    fn address_keys_are_the_addresses_themselves_and_never_collide() {
        let k = |s: &str| address_key(ip(s));
        // An IPv4-mapped IPv6 address is its IPv4 address.
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
        // One key per /64, none shared across families, none with no address or the
        // overflow bucket (an IPv6 /64 that starts with the IPv4 tag's bytes included).
        let keys = [
            k("10.0.0.1"),
            k("10.0.0.2"),
            k("0.0.0.0"),
            k("255.255.255.255"),
            k("400:a00::1"),
            k("::1"),
            k("ffff:ffff:ffff:ffff::1"),
            address_key(None),
            OVERFLOW_KEY,
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(k("2001:db8::1"), k("2001:db8::ffff:1"));
    }

    #[test]
    fn a_user_under_attack_still_works_from_its_own_address() {
        let mut t = AuthFailures::default();
        let home = Attempt {
            addr: ip("192.0.2.10"),
            user: Some("alice"),
        };
        t.succeeded(&home);
        // Guesses for alice from many addresses, each under its own address limit.
        for i in 0..40 {
            let a = Attempt {
                addr: ip(&format!("198.51.100.{i}")),
                user: Some("alice"),
            };
            t.failed(&a, 1.0);
        }
        // A fresh attacker address is braked for alice...
        let fresh = Attempt {
            addr: ip("203.0.113.5"),
            user: Some("alice"),
        };
        assert!(t.check(&fresh, 1.0) > 0.0);
        // ...and alice from her known address is not.
        assert_eq!(t.check(&home, 1.0), 0.0);
        // Another user from the fresh address is not.
        let bob = Attempt {
            addr: ip("203.0.113.5"),
            user: Some("bob"),
        };
        assert_eq!(t.check(&bob, 1.0), 0.0);
    }

    #[test]
    fn state_is_bounded() {
        let mut t = AuthFailures::new(
            Shape {
                capacity: 2.0,
                leak_per_sec: 0.001,
            },
            USER,
        );
        for i in 0..(MAX_ENTRIES as u32 + 1000) {
            let a = Attempt {
                addr: Some(IpAddr::V4(i.into())),
                user: None,
            };
            t.failed(&a, 0.0);
        }
        assert!(t.addresses.map.len() <= MAX_ENTRIES);
        // The overflow bucket took the rest, and is braked as one.
        let late = Attempt {
            addr: Some(IpAddr::V4((MAX_ENTRIES as u32 + 5000).into())),
            user: None,
        };
        assert!(t.check(&late, 0.0) > 0.0);
    }
}
