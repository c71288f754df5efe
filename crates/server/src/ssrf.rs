//! Webhook URLs that cannot reach inside: a tenant names the URL, the server connects to it, so
//! an endpoint that resolves to a loopback, private, link-local or otherwise non-public address
//! would let a tenant probe (or call) what sits beside the server — a metadata service on
//! 169.254.169.254, a database on 10.0.0.5, the admin port on 127.0.0.1 (SSRF).
//!
//! The check is made at registration ([`Guard::check_url`], 400 `webhook_url_not_public`) and
//! again at every connection: the delivery client resolves names through [`Guard`] (a
//! `reqwest::dns::Resolve`), which refuses the whole name when any of its addresses is not
//! public, so a name that answered a public address at registration and a private one later
//! (DNS rebinding) is refused then. reqwest does not ask the resolver about IP literals, so
//! [`Guard::check_literal`] checks those before each request. `--webhook-allow-private` turns
//! all of it off (tests, and receivers on the operator's own network).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// Whether `ip` is an address of the public internet: not loopback, private, link-local,
/// shared (CGNAT), multicast, broadcast, documentation, benchmarking or reserved; the IPv6
/// forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by it.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let not_public = a == 0 // "this network" 0.0.0.0/8
        || a == 10 // private
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT) 100.64.0.0/10
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, cloud metadata services
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation (TEST-NET-1)
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // documentation (TEST-NET-2)
        || (a == 203 && b == 0 && c == 113) // documentation (TEST-NET-3)
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !not_public
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    // Only global unicast (2000::/3) is public; that excludes ::, ::1, fc00::/7 (unique
    // local), fe80::/10 (link-local), fec0::/10, ff00::/8 (multicast), 100::/64 (discard),
    // 64:ff9b:1::/48 (local NAT64) and every reserved block.
    let global_unicast = segments[0] & 0xe000 == 0x2000;
    let not_public = match segments {
        // IETF protocol assignments 2001::/23 (Teredo, benchmarking, ORCHID) and documentation.
        [0x2001, second, ..] => second < 0x0200 || second == 0x0db8,
        // Documentation 3fff::/20.
        [first, ..] => first & 0xfff0 == 0x3ff0,
    };
    global_unicast && !not_public
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match s {
        // `::` and `::1` come out as 0.0.0.0 and 0.0.0.1: not public either.
        [0, 0, 0, 0, 0, 0 | 0xffff, hi, lo] => v4(hi, lo),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => v4(hi, lo),
        [0x2002, hi, lo, ..] => v4(hi, lo),
        _ => None,
    }
}

/// Why a webhook URL or connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The host is, or one of its addresses is, not public; `host` is `None` for an IP literal.
    #[error("{}{address}{}not a public address (allowed only with --webhook-allow-private)",
        host.as_ref().map(|h| format!("{h} resolves to ")).unwrap_or_default(),
        if host.is_some() { ", " } else { " is " })]
    NotPublic { host: Option<String>, address: IpAddr },
    #[error("{host} does not resolve: {reason}")]
    Unresolvable { host: String, reason: String },
}

/// A future of a name's addresses.
pub type Lookup = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// What turns host names into addresses: the system's resolver, or a test's.
pub trait Resolver: Send + Sync {
    fn lookup(&self, host: &str) -> Lookup;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, host: &str) -> Lookup {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    }
}

/// The resolver of webhook deliveries and registrations, for [`crate::Config`]: the system's
/// unless a test sets another.
#[derive(Clone)]
pub struct WebhookResolver(pub Arc<dyn Resolver>);

impl std::fmt::Debug for WebhookResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookResolver")
    }
}

impl Default for WebhookResolver {
    fn default() -> WebhookResolver {
        WebhookResolver(Arc::new(SystemResolver))
    }
}

/// Resolves names and refuses non-public addresses (unless private ones are allowed).
#[derive(Clone)]
pub struct Guard {
    resolver: Arc<dyn Resolver>,
    allow_private: bool,
}

impl Guard {
    pub fn new(resolver: Arc<dyn Resolver>, allow_private: bool) -> Guard {
        Guard { resolver, allow_private }
    }

    /// The addresses of `host` (a name, not a literal), all public unless private ones are
    /// allowed.
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, Refusal> {
        let unresolvable = |reason: String| Refusal::Unresolvable { host: host.to_owned(), reason };
        let addresses = self.resolver.lookup(host).await.map_err(|e| unresolvable(e.to_string()))?;
        if addresses.is_empty() {
            return Err(unresolvable("no address".to_owned()));
        }
        self.refuse_not_public(Some(host), &addresses)?;
        Ok(addresses)
    }

    fn refuse_not_public(&self, host: Option<&str>, addresses: &[IpAddr]) -> Result<(), Refusal> {
        match addresses.iter().find(|a| !self.allow_private && !is_public(**a)) {
            Some(address) => Err(Refusal::NotPublic { host: host.map(str::to_owned), address: *address }),
            None => Ok(()),
        }
    }

    /// An IP literal host of `url` that is not public (names are checked when resolved).
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        match literal(url) {
            Some(ip) => self.refuse_not_public(None, &[ip]),
            None => Ok(()),
        }
    }

    /// The registration check: the URL's host, a literal or a name resolved now, is public.
    pub async fn check_url(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        match (literal(url), url.host_str()) {
            (Some(_), _) => self.check_literal(url),
            (None, Some(host)) => self.addresses(host).await.map(|_| ()),
            (None, None) => Err(Refusal::Unresolvable { host: String::new(), reason: "no host".to_owned() }),
        }
    }
}

/// The host of `url` when it is an IP address (`url` has normalised `0x7f.1` and the like).
fn literal(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let addresses = guard.addresses(name.as_str()).await?;
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addresses)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        let not_public = [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "2002:a00:1::",
            "2002:7f00:1::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "4000::1",
        ];
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2001:4860:4860::8888",
            "2606:4700::1111",
        ];
        for address in not_public {
            assert!(!is_public(address.parse().unwrap()), "{address} is not public");
        }
        for address in public {
            assert!(is_public(address.parse().unwrap()), "{address} is public");
        }
    }

    struct Fixed(Vec<IpAddr>);

    impl Resolver for Fixed {
        fn lookup(&self, _: &str) -> Lookup {
            let answer = self.0.clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    fn guard(answer: &[&str], allow_private: bool) -> Guard {
        Guard::new(Arc::new(Fixed(answer.iter().map(|a| a.parse().unwrap()).collect())), allow_private)
    }

    #[tokio::test]
    async fn urls_are_checked_by_their_host() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let public = guard(&["93.184.215.14"], false);
        assert!(public.check_url(&url("https://hooks.example.com/x")).await.is_ok());
        for literal in [
            "http://127.0.0.1:8080/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest",
            "http://[::1]/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://[::ffff:a9fe:a9fe]/",
        ] {
            assert!(matches!(public.check_url(&url(literal)).await, Err(Refusal::NotPublic { .. })), "{literal}");
            assert!(public.check_literal(&url(literal)).is_err(), "{literal}");
            assert!(guard(&[], true).check_url(&url(literal)).await.is_ok(), "{literal} allowed");
        }
        // One private address among public ones is enough to refuse the name.
        let mixed = guard(&["93.184.215.14", "10.0.0.1"], false);
        assert!(matches!(mixed.check_url(&url("https://hooks.example.com/")).await, Err(Refusal::NotPublic { .. })));
        assert!(matches!(
            guard(&[], false).check_url(&url("https://nowhere.example/")).await,
            Err(Refusal::Unresolvable { .. })
        ));
        assert!(guard(&["10.0.0.1"], true).check_url(&url("https://hooks.example.com/")).await.is_ok());
    }
}
