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

/// Serve every listener from one thread polling them all (threads cost start-up time; most
/// sandboxes never open a connection). Connections and DNS queries get threads of their own.
pub fn serve(listeners: Vec<(ListenerInfo, OwnedFd)>, ctx: Arc<Ctx>) {
    let r = std::thread::Builder::new()
        .name("egress".into())
        .spawn(move || poll_loop(listeners, ctx));
    if let Err(e) = r {
        eprintln!("airlock: cannot start the egress thread: {e}");
    }
}

fn poll_loop(listeners: Vec<(ListenerInfo, OwnedFd)>, ctx: Arc<Ctx>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let tcp: Vec<Option<TcpListener>> = listeners
        .iter()
        .map(|(i, fd)| {
            (i.kind != ListenerKind::Dns)
                .then(|| fd.try_clone().ok().map(TcpListener::from))
                .flatten()
        })
        .collect();
    loop {
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| i)
            .collect();
        for i in ready {
            let (info, fd) = &listeners[i];
            match (&tcp[i], info.kind) {
                (Some(l), kind) => {
                    let Ok((conn, _)) = l.accept() else { continue };
                    let ctx = ctx.clone();
                    let working = ctx.working();
                    let _ = std::thread::Builder::new()
                        .name("egress-conn".into())
                        .spawn(move || {
                            let _working = working;
                            if kind == ListenerKind::Proxy {
                                airlock_egress::proxy::serve_explicit(conn, &ctx);
                            } else if let Ok(dst) = conn.local_addr() {
                                // Any-IP routing: the local address is where the program tried to go.
                                airlock_egress::proxy::serve_transparent(conn, dst, &ctx);
                            }
                        });
                }
                (None, _) => dns_query(fd, info.v6, &ctx),
            }
        }
    }
}

/// DNS over UDP: the socket receives queries for any address (any-IP routing); replies must come
/// from the address that was asked, which packet-info carries both ways. Resolution may wait on
/// the upstream, so each query is answered on a thread of its own.
fn dns_query(fd: &OwnedFd, v6: bool, ctx: &Arc<Ctx>) {
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let (len, from, info4, info6) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<SockaddrStorage>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) else {
            return;
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
    let Some(from) = from else { return };
    buf.truncate(len);
    let Ok(fd) = fd.try_clone() else { return };
    let ctx = ctx.clone();
    let working = ctx.working();
    let _ = std::thread::Builder::new()
        .name("egress-dns".into())
        .spawn(move || {
            let _working = working;
            let reply = airlock_egress::dns::answer(&buf, &ctx);
            if reply.is_empty() {
                return;
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
        });
}
