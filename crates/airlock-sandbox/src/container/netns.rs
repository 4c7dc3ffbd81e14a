//! The sandbox side of filtered egress: inside the fresh network namespace, make every address
//! local (any-IP routes on lo) and open the listeners that catch every connection and DNS query;
//! their descriptors go to the host side, which enforces the policy (see `egress`).

use crate::sys;
use airlock_model::plan::EgressPlan;
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6,
};
use serde::{Deserialize, Serialize};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

/// What one handed-over descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Transparent TCP: any destination on this port.
    Tcp,
    /// The explicit HTTP proxy.
    Proxy,
    /// DNS (UDP, with packet-info so replies come from the address that was asked).
    Dns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerInfo {
    pub kind: ListenerKind,
    pub port: u16,
    pub v6: bool,
}

fn tcp(v6: bool, loopback_only: bool, port: u16) -> io::Result<OwnedFd> {
    let fam = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if v6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        let ip = if loopback_only {
            Ipv6Addr::LOCALHOST
        } else {
            Ipv6Addr::UNSPECIFIED
        };
        bind(
            fd.as_raw_fd(),
            &SockaddrIn6::from(SocketAddrV6::new(ip, port, 0, 0)),
        )?;
    } else {
        let ip = if loopback_only {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(ip, port)),
        )?;
    }
    listen(&fd, Backlog::new(512).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

fn udp(v6: bool, port: u16) -> io::Result<OwnedFd> {
    let fam = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(fam, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if v6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)),
        )?;
    } else {
        setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
        )?;
    }
    Ok(fd)
}

/// Route everything to lo and open the listeners. IPv6 listeners are skipped when the host
/// has IPv6 disabled (then IPv6 simply has nowhere to go).
pub fn setup(plan: &EgressPlan) -> io::Result<Vec<(ListenerInfo, OwnedFd)>> {
    sys::add_anyip_routes()?;
    let mut out = Vec::new();
    let mut push = |info: ListenerInfo, r: io::Result<OwnedFd>| -> io::Result<()> {
        match r {
            Ok(fd) => {
                out.push((info, fd));
                Ok(())
            }
            Err(e)
                if info.v6
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                    ) =>
            {
                Ok(())
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("listener {info:?}: {e}"))),
        }
    };
    for &port in &plan.ports {
        for v6 in [false, true] {
            push(
                ListenerInfo {
                    kind: ListenerKind::Tcp,
                    port,
                    v6,
                },
                tcp(v6, false, port),
            )?;
        }
    }
    for v6 in [false, true] {
        push(
            ListenerInfo {
                kind: ListenerKind::Dns,
                port: 53,
                v6,
            },
            udp(v6, 53),
        )?;
    }
    push(
        ListenerInfo {
            kind: ListenerKind::Proxy,
            port: plan.proxy_port,
            v6: false,
        },
        tcp(false, true, plan.proxy_port),
    )?;
    Ok(out)
}

/// Hand the listeners to the host side over `sock`.
pub fn send(sock: &OwnedFd, listeners: &[(ListenerInfo, OwnedFd)]) -> io::Result<()> {
    let infos: Vec<ListenerInfo> = listeners.iter().map(|(i, _)| *i).collect();
    let data = serde_json::to_vec(&infos).map_err(io::Error::other)?;
    let fds: Vec<i32> = listeners.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    sys::send_fds(sock.as_raw_fd(), &data, &fds)
}

/// Receive what [`send`] sent.
pub fn recv(sock: &OwnedFd) -> io::Result<Vec<(ListenerInfo, OwnedFd)>> {
    let (data, fds) = sys::recv_fds(sock.as_raw_fd(), 64)?;
    let infos: Vec<ListenerInfo> = serde_json::from_slice(&data).map_err(io::Error::other)?;
    if infos.len() != fds.len() {
        return Err(io::Error::other(format!(
            "expected {} listener descriptors, got {}",
            infos.len(),
            fds.len()
        )));
    }
    Ok(infos.into_iter().zip(fds).collect())
}
