//! Filtered egress, tried the way a sandbox does it: in a fresh network namespace (and user
//! namespace when rootless) bring lo up, make every address local on lo (`local 0.0.0.0/0`,
//! `local ::/0`), open the sandbox's listeners, and check that a connection to an outside
//! address lands on the listener. That is all the kernel side of `--net filtered` needs; the
//! rest (SNI/Host checks, resolution, the metadata floor) is host-side user-space code.

use super::child::{self, Reporter};
use super::host::{errstr, Host};
use super::row::{Row, Status};
use nix::sched::{unshare, CloneFlags};
use std::time::Duration;

const UNSHARE: u8 = 1;
const LOOPBACK: u8 = 2;
const LISTENERS: u8 = 3;
const CONNECT: u8 = 4;

/// Port of the probe's listener (any allowed port works the same way).
const PORT: u16 = 443;

pub(super) fn egress_row(h: &Host) -> Row {
    let o = child::run(Duration::from_secs(5), |r: &Reporter| {
        let flags = if h.root {
            CloneFlags::CLONE_NEWNET
        } else {
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET
        };
        if !r.check(UNSHARE, unshare(flags)) {
            return 1;
        }
        if !r.check_io(LOOPBACK, crate::sys::loopback_up()) {
            return 1;
        }
        let plan = airlock_model::plan::EgressPlan {
            ports: vec![PORT],
            proxy_port: airlock_model::plan::PROXY_PORT,
            domains: vec![],
        };
        let Ok(listeners) = crate::container::netns::setup(&plan).map_err(|e| {
            r.err(LISTENERS, e.raw_os_error().unwrap_or(libc::EIO));
        }) else {
            return 1;
        };
        r.ok(LISTENERS, listeners.len() as i64);
        // TEST-NET-3: never routed anywhere; inside it is local and reaches the listener.
        let to = std::net::SocketAddr::from(([203, 0, 113, 7], PORT));
        r.check_io(
            CONNECT,
            std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)),
        );
        0
    });
    let failed = [UNSHARE, LOOPBACK, LISTENERS, CONNECT]
        .into_iter()
        .find_map(|step| match o.get(step) {
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(format!("{}: {}", step_name(step), errstr(e))),
            None => Some(format!(
                "{}: {}",
                step_name(step),
                o.abnormal_end()
                    .unwrap_or_else(|| "the probe did not get there".into())
            )),
        });
    let needed = "--net filtered (the default): the sandbox's own listeners catch every connection and DNS query";
    match failed {
        None => Row::new(
            "egress",
            "filtered egress",
            Status::Ok,
            "in a fresh network namespace every address routes to lo (any-IP routes) and a connection to 203.0.113.7:443 lands on the sandbox's listener; the host-side proxy needs nothing more (no firewall rules, no veth)",
            None,
            needed,
        ),
        Some(why) => Row::new(
            "egress",
            "filtered egress",
            Status::Missing,
            why,
            Some("run `airlock doctor` for the user namespace rows; a kernel without CONFIG_NET_NS or IPv4 local routes cannot filter: use --net off".into()),
            needed,
        ),
    }
}

fn step_name(step: u8) -> &'static str {
    match step {
        UNSHARE => "new network namespace",
        LOOPBACK => "bring lo up",
        LISTENERS => "any-IP routes and listeners",
        _ => "connect through the any-IP route",
    }
}
