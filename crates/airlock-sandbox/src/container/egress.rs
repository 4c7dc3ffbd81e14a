//! The host side of filtered egress: accept on the listeners the sandbox's network namespace
//! handed over (see `netns`) and let `airlock_egress` decide and relay. Threads live as long as
//! the airlock process that owns the sandbox.

use super::netns::{ListenerInfo, ListenerKind};
use airlock_egress::proxy::Ctx;
use nix::sys::socket::{
    recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use std::io::{IoSlice, IoSliceMut};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// Serve every listener on its own thread.
pub fn serve(listeners: Vec<(ListenerInfo, OwnedFd)>, ctx: Arc<Ctx>) {
    for (info, fd) in listeners {
        let ctx = ctx.clone();
        let name = format!("egress-{:?}-{}", info.kind, info.port);
        let r = std::thread::Builder::new()
            .name(name)
            .spawn(move || match info.kind {
                ListenerKind::Tcp | ListenerKind::Proxy => {
                    accept_loop(TcpListener::from(fd), info.kind, ctx)
                }
                ListenerKind::Dns => dns_loop(fd, info.v6, ctx),
            });
        if let Err(e) = r {
            eprintln!("airlock: cannot start an egress thread: {e}");
        }
    }
}

fn accept_loop(l: TcpListener, kind: ListenerKind, ctx: Arc<Ctx>) {
    loop {
        let Ok((conn, _peer)) = l.accept() else {
            continue;
        };
        let ctx = ctx.clone();
        let _ = std::thread::Builder::new()
            .name("egress-conn".into())
            .spawn(move || {
                if kind == ListenerKind::Proxy {
                    airlock_egress::proxy::serve_explicit(conn, &ctx);
                } else if let Ok(dst) = conn.local_addr() {
                    // Any-IP routing: the local address is where the program tried to go.
                    airlock_egress::proxy::serve_transparent(conn, dst, &ctx);
                }
            });
    }
}

/// DNS over UDP: the socket receives queries for any address (any-IP routing); replies must come
/// from the address that was asked, which packet-info carries both ways.
fn dns_loop(fd: OwnedFd, v6: bool, ctx: Arc<Ctx>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
        let (len, from, info4, info6) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let Ok(msg) = recvmsg::<SockaddrStorage>(
                fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) else {
                continue;
            };
            let (mut i4, mut i6) = (None, None);
            if let Ok(cms) = msg.cmsgs() {
                for c in cms {
                    match c {
                        ControlMessageOwned::Ipv4PacketInfo(p) => i4 = Some(p),
                        ControlMessageOwned::Ipv6PacketInfo(p) => i6 = Some(p),
                        _ => {}
                    }
                }
            }
            (msg.bytes, msg.address, i4, i6)
        };
        let Some(from) = from else { continue };
        let reply = airlock_egress::dns::answer(&buf[..len], &ctx);
        if reply.is_empty() {
            continue;
        }
        let iov = [IoSlice::new(&reply)];
        let _ = match (v6, info4, info6) {
            (false, Some(mut p), _) => {
                // Reply from the destination the query was sent to.
                p.ipi_spec_dst = p.ipi_addr;
                p.ipi_ifindex = 0;
                sendmsg(
                    fd.as_raw_fd(),
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(&p)],
                    MsgFlags::empty(),
                    Some(&from),
                )
            }
            (true, _, Some(mut p)) => {
                p.ipi6_ifindex = 0;
                sendmsg(
                    fd.as_raw_fd(),
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(&p)],
                    MsgFlags::empty(),
                    Some(&from),
                )
            }
            _ => sendmsg(fd.as_raw_fd(), &iov, &[], MsgFlags::empty(), Some(&from)),
        };
    }
}
