//! The address floor: destinations no sandbox connection may reach, whatever a name resolves
//! to (DNS rebinding) — the host's own services, private networks and cloud metadata.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` may not be connected to, or `None` if it is an ordinary public address. IPv6 forms
/// that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that address.
///
/// 198.18.0.0/15 (benchmarking) is deliberately allowed: tests use it as their fake internet.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const TABLE: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\" (0.0.0.0/8)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private network (RFC 1918)"),
        ([172, 16, 0, 0], 12, "private network (RFC 1918)"),
        ([192, 168, 0, 0], 16, "private network (RFC 1918)"),
        (
            [169, 254, 0, 0],
            16,
            "link-local / cloud metadata (169.254.0.0/16)",
        ),
        (
            [100, 64, 0, 0],
            10,
            "carrier-grade NAT / cloud metadata (100.64.0.0/10)",
        ),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved (240.0.0.0/4) or broadcast"),
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map(|(_, _, why)| *why)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// The IPv4 address an IPv6 address stands for, if it is one of the embedding forms.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96) // ::ffff:a.b.c.d (mapped)
        || in_v6(ip, [0, 0, 0, 0, 0xffff, 0, 0, 0], 96) // ::ffff:0:a.b.c.d (SIIT translated)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) // 64:ff9b::/96 (NAT64)
        || in_v6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48) // 64:ff9b:1::/48 (local NAT64)
        || (in_v6(ip, [0; 8], 96) && bits > 1)
    // ::a.b.c.d (compatible; :: and ::1 are their own cases)
    {
        return Some(low32);
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip == Ipv6Addr::UNSPECIFIED {
        return Some("unspecified address (::)");
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    const TABLE: &[([u16; 8], u32, &str)] = &[
        (
            [0xfc00, 0, 0, 0, 0, 0, 0, 0],
            7,
            "unique local address / cloud metadata (fc00::/7)",
        ),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local (fe80::/10)"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local (fec0::/10)"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in_v6(ip, *net, *len))
        .map(|(_, _, why)| *why)
}

/// Names of cloud metadata services, refused in every mode (by name; their addresses are
/// covered by [`forbidden`]). `host` must already be normalized. Subdomains count too.
pub fn metadata_name(host: &str) -> bool {
    const NAMES: &[&str] = &[
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.azure.internal",
        "metadata.packet.net",
        "metadata.platformequinix.com",
        "metadata.tencentyun.com",
        "metadata.oraclecloud.com",
    ];
    let host = host.strip_suffix('.').unwrap_or(host);
    NAMES.iter().any(|n| {
        host.eq_ignore_ascii_case(n)
            || (host.len() > n.len() + 1
                && host.as_bytes()[host.len() - n.len() - 1] == b'.'
                && host[host.len() - n.len()..].eq_ignore_ascii_case(n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_table() {
        let forbidden_addrs = [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.170.2",
            "169.254.0.1",
            "100.64.0.1",
            "100.100.100.200",
            "100.127.255.255",
            "224.0.0.251",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::fb",
            "ff05::1:3",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:100.100.100.200",
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
        ];
        for a in forbidden_addrs {
            let ip: IpAddr = a.parse().unwrap();
            assert!(forbidden(ip).is_some(), "{a} should be forbidden");
        }
        let allowed = [
            "1.1.1.1",
            "8.8.8.8",
            "140.82.112.3",
            "198.18.0.1",
            "198.19.255.254",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "223.255.255.255",
            "11.0.0.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:1.1.1.1",
            "::ffff:198.18.0.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ];
        for a in allowed {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(forbidden(ip), None, "{a} should be allowed");
        }
    }

    #[test]
    fn reasons_name_the_range() {
        assert_eq!(forbidden("127.0.0.1".parse().unwrap()), Some("loopback"));
        assert_eq!(
            forbidden("::ffff:127.0.0.1".parse().unwrap()),
            Some("loopback")
        );
        assert!(forbidden("169.254.169.254".parse().unwrap())
            .unwrap()
            .contains("metadata"));
    }

    #[test]
    fn metadata_names() {
        for n in [
            "metadata",
            "metadata.google.internal",
            "METADATA.GOOGLE.INTERNAL",
            "metadata.google.internal.",
            "instance-data",
            "metadata.azure.com",
            "x.metadata.google.internal",
            "instance-data.ec2.internal",
        ] {
            assert!(metadata_name(n), "{n}");
        }
        for n in [
            "metadata.example.com",
            "mymetadata",
            "google.internal",
            "xmetadata.google.internal",
            "github.com",
        ] {
            assert!(!metadata_name(n), "{n}");
        }
    }
}
