//! Sockets and the network: dangerous families, host loopback, the internet, metadata, Unix.

use super::Ctx;
use crate::report::{Findings, Outcome};
use crate::sys::net::{self, Connect};
use crate::sys::Errno;
use std::net::SocketAddr;

const CONNECT_TIMEOUT_MS: i32 = 1500;

fn socket_attempt(
    f: &mut Findings,
    what: &str,
    domain: libc::c_int,
    ty: libc::c_int,
    proto: libc::c_int,
) {
    let r = net::socket(domain, ty, proto);
    f.result(format!("socket({what})"), &r);
}

pub fn socket_packet(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let all = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    socket_attempt(
        &mut f,
        "AF_PACKET, SOCK_RAW",
        libc::AF_PACKET,
        libc::SOCK_RAW,
        all,
    );
    socket_attempt(
        &mut f,
        "AF_PACKET, SOCK_DGRAM",
        libc::AF_PACKET,
        libc::SOCK_DGRAM,
        all,
    );
    f.outcome()
}

pub fn socket_vsock(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    socket_attempt(
        &mut f,
        "AF_VSOCK, SOCK_STREAM",
        libc::AF_VSOCK,
        libc::SOCK_STREAM,
        0,
    );
    socket_attempt(
        &mut f,
        "AF_VSOCK, SOCK_DGRAM",
        libc::AF_VSOCK,
        libc::SOCK_DGRAM,
        0,
    );
    f.outcome()
}

pub fn socket_raw(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    socket_attempt(
        &mut f,
        "AF_INET, SOCK_RAW, IPPROTO_RAW",
        libc::AF_INET,
        libc::SOCK_RAW,
        libc::IPPROTO_RAW,
    );
    socket_attempt(
        &mut f,
        "AF_INET, SOCK_RAW, IPPROTO_ICMP",
        libc::AF_INET,
        libc::SOCK_RAW,
        libc::IPPROTO_ICMP,
    );
    socket_attempt(
        &mut f,
        "AF_INET6, SOCK_RAW, IPPROTO_RAW",
        libc::AF_INET6,
        libc::SOCK_RAW,
        libc::IPPROTO_RAW,
    );
    f.outcome()
}

pub fn socket_netlink(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    for (name, proto) in [
        ("NETLINK_AUDIT", libc::NETLINK_AUDIT),
        ("NETLINK_NETFILTER", libc::NETLINK_NETFILTER),
        ("NETLINK_KOBJECT_UEVENT", libc::NETLINK_KOBJECT_UEVENT),
        ("NETLINK_GENERIC", libc::NETLINK_GENERIC),
        ("NETLINK_XFRM", libc::NETLINK_XFRM),
    ] {
        socket_attempt(
            &mut f,
            &format!("AF_NETLINK, {name}"),
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            proto,
        );
    }
    // NETLINK_ROUTE is what getaddrinfo and `ip` use: allowed, reported for context only.
    match net::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) {
        Ok(_) => f.note("NETLINK_ROUTE: allowed (fine)"),
        Err(e) => f.note(format!("NETLINK_ROUTE: {e}")),
    }
    f.outcome()
}

/// A TCP connect is blocked when it fails at once; a timeout means a route exists.
fn tcp(f: &mut Findings, addr: &str) {
    let Ok(sa) = addr.parse::<SocketAddr>() else {
        f.note(format!("bad address {addr}"));
        return;
    };
    let what = format!("tcp connect {addr}");
    match net::tcp_connect(&sa, CONNECT_TIMEOUT_MS) {
        Ok(Connect::Connected) => f.escaped(what, "connected"),
        Ok(Connect::TimedOut) => f.escaped(
            what,
            format!("no answer in {CONNECT_TIMEOUT_MS} ms: a route exists, packets may have left"),
        ),
        Err(e) => f.blocked(what, e),
    }
}

pub fn loopback_host(ctx: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let Some(port) = ctx.host_port else {
        return Outcome::blocked("no --host-port given");
    };
    tcp(&mut f, &format!("127.0.0.1:{port}"));
    tcp(&mut f, &format!("[::ffff:127.0.0.1]:{port}"));
    tcp(&mut f, &format!("[::1]:{port}"));
    f.outcome()
}

pub fn internet(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    tcp(&mut f, "1.1.1.1:443");
    tcp(&mut f, "[2606:4700:4700::1111]:443");
    tcp(&mut f, "[::ffff:1.1.1.1]:443");
    f.outcome()
}

pub fn metadata(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    tcp(&mut f, "169.254.169.254:80");
    tcp(&mut f, "169.254.170.2:80");
    tcp(&mut f, "100.100.100.200:80");
    tcp(&mut f, "[fd00:ec2::254]:80");
    f.outcome()
}

pub fn udp_dns(_: &Ctx) -> Outcome {
    let mut f = Findings::new();
    // A minimal DNS query for "." NS; it only matters whether the kernel will send it.
    let query: [u8; 17] = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
    for addr in ["8.8.8.8:53", "[2001:4860:4860::8888]:53"] {
        let Ok(sa) = addr.parse::<SocketAddr>() else {
            continue;
        };
        match net::udp_send(&sa, &query) {
            Ok(n) => f.escaped(
                format!("udp sendto {addr}"),
                format!("kernel accepted {n} bytes: a route exists"),
            ),
            Err(e) => f.blocked(format!("udp sendto {addr}"), e),
        }
    }
    f.outcome()
}

pub fn unix_abstract(ctx: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let Some(name) = ctx.host_abstract.as_deref() else {
        return Outcome::blocked("no --host-abstract given");
    };
    let r = net::unix_connect(name, true);
    f.result(format!("connect @{name}"), &r);
    f.outcome()
}

pub fn unix_host_sockets(ctx: &Ctx) -> Outcome {
    let mut f = Findings::new();
    let well_known = [
        "/run/docker.sock",
        "/var/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/podman/podman.sock",
        "/run/dbus/system_bus_socket",
        "/var/run/dbus/system_bus_socket",
        "/run/systemd/private",
        "/run/systemd/journal/stdout",
        "/tmp/.X11-unix/X0",
    ];
    for path in well_known
        .iter()
        .map(|s| s.to_string())
        .chain(ctx.host_unix.iter().cloned())
    {
        match net::unix_connect(&path, false) {
            Ok(()) => f.escaped(format!("connect {path}"), "connected"),
            Err(Errno(libc::ENOENT)) => f.blocked(path, "ENOENT"),
            Err(e) => f.blocked(format!("connect {path}"), e),
        }
    }
    f.outcome()
}
