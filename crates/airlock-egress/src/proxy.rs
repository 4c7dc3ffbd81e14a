//! Connections from the sandbox: inspect the first bytes, decide, and relay to the name the
//! sandbox asked for — resolved here, on the host side, never the address it dialled.

pub use crate::ctx::Ctx;
use crate::ctx::{connect, Note, Unreachable};
use crate::http::body::BodyFramer;
use crate::http::{self, HttpError, Request, Target};
use crate::journal::{Kind, Verdict};
use crate::policy::Decision;
use crate::{host, relay, sni};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

/// What the first bytes of a connection asked for.
enum Hello {
    Tls(String),
    Http(Request),
}

/// Why inspection failed, and in which protocol to say so.
struct Unreadable {
    tls: bool,
    http: Option<HttpError>,
    reason: String,
}

/// Read until the buffer holds a complete ClientHello or request head (or proves it never
/// will). `buf` may already hold bytes.
fn inspect(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    ctx: &Ctx,
    accept_tls: bool,
) -> Result<Hello, Unreadable> {
    let deadline = Instant::now() + ctx.inspect_timeout;
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            let tls = sni::looks_like_tls(buf);
            let fail = |reason: String, http: Option<HttpError>| Unreadable { tls, http, reason };
            if tls && accept_tls {
                match sni::server_name(buf) {
                    Ok(name) => return Ok(Hello::Tls(name)),
                    Err(sni::SniError::NeedMore) => {}
                    Err(e) => return Err(fail(e.to_string(), None)),
                }
            } else if tls {
                return Err(fail(
                    "TLS where an HTTP proxy request was expected".into(),
                    None,
                ));
            } else {
                match http::parse(buf) {
                    Ok(r) => return Ok(Hello::Http(r)),
                    Err(HttpError::NeedMore) => {}
                    Err(HttpError::NotHttp) => {
                        return Err(fail(
                            "neither a TLS ClientHello nor an HTTP/1 request".into(),
                            None,
                        ))
                    }
                    Err(e) => return Err(fail(e.to_string(), Some(e))),
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = || Unreadable {
            tls: sni::looks_like_tls(buf),
            http: None,
            reason: format!(
                "no complete TLS ClientHello or HTTP request within {} s",
                ctx.inspect_timeout.as_secs()
            ),
        };
        if left.is_zero() {
            return Err(timed_out());
        }
        let _ = conn.set_read_timeout(Some(left));
        match conn.read(&mut chunk) {
            Ok(0) => {
                return Err(Unreadable {
                    tls: false,
                    http: None,
                    reason: "closed before a complete request".into(),
                })
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out())
            }
            Err(e) => {
                return Err(Unreadable {
                    tls: false,
                    http: None,
                    reason: format!("read failed: {e}"),
                })
            }
        }
    }
}

/// How the refusal is told to the program.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Say {
    Tls,
    Http,
    Nothing,
}

fn refuse(
    conn: TcpStream,
    say: Say,
    status: &str,
    host: Option<&str>,
    port: Option<u16>,
    reason: &str,
    fix: &str,
) {
    match say {
        Say::Tls => relay::refuse(conn, &sni::ALERT_ACCESS_DENIED),
        Say::Http => relay::refuse(
            conn,
            &http::response(status, &refusal_text(host, port, reason, fix)),
        ),
        Say::Nothing => relay::refuse(conn, &[]),
    }
}

/// The plain-text body of a refusal: what was blocked, why, and how to allow it.
pub fn refusal_text(host: Option<&str>, port: Option<u16>, reason: &str, fix: &str) -> String {
    let what = match (host, port) {
        (Some(h), Some(p)) => format!("{}:{p}", host::display(h)),
        (Some(h), None) => host::display(h),
        _ => "this connection".into(),
    };
    let mut s = format!("airlock: blocked {what}: {reason}\n");
    if !fix.is_empty() {
        s.push_str(&format!("To allow it, {fix}.\n"));
    }
    s
}

/// The interceptor, if TLS to `name` (normalized) is to be ended here.
fn interceptor_for<'a>(ctx: &'a Ctx, name: &str) -> Option<&'a crate::intercept::Interceptor> {
    ctx.intercept().map(|i| &**i).filter(|i| i.intercepts(name))
}

/// Connect upstream for an allowed name, or refuse and journal. On success the allow is
/// journaled with the address.
fn connect_or_refuse(
    conn: TcpStream,
    ctx: &Ctx,
    note: &Note,
    name: &str,
    port: u16,
    say: Say,
) -> Option<(TcpStream, TcpStream)> {
    match connect(ctx, name, port) {
        Ok((up, ip)) => {
            note.record(ctx, Verdict::Allow, "", "", Some(ip));
            Some((conn, up))
        }
        Err(Unreachable::Forbidden(reason)) => {
            note.record(ctx, Verdict::Deny, &reason, "", None);
            refuse(
                conn,
                say,
                "403 Forbidden",
                Some(name),
                Some(port),
                &reason,
                "",
            );
            None
        }
        Err(Unreachable::Failed(reason)) => {
            note.record(ctx, Verdict::Allow, &reason, "", None);
            match say {
                Say::Http => relay::refuse(
                    conn,
                    &http::response("502 Bad Gateway", &format!("airlock: {reason}\n")),
                ),
                Say::Tls => relay::refuse(conn, &sni::ALERT_INTERNAL_ERROR),
                Say::Nothing => relay::refuse(conn, &[]),
            }
            None
        }
    }
}

fn refusal_status(e: Option<&HttpError>) -> &'static str {
    match e {
        Some(HttpError::Malformed(_) | HttpError::TooLong | HttpError::Unsupported(_)) => {
            "400 Bad Request"
        }
        _ => "403 Forbidden",
    }
}

/// A connection caught by a transparent listener. `dst` is where the program tried to go
/// (the accepted socket's local address); only its port is used: the upstream address comes
/// from resolving the name in the SNI or Host header.
pub fn serve_transparent(mut conn: TcpStream, dst: SocketAddr, ctx: &Ctx) {
    let Some(_slot) = ctx.admit(&Note {
        kind: Kind::Tcp,
        host: None,
        port: Some(dst.port()),
        dst: Some(dst),
    }) else {
        return drop(conn);
    };
    let _ = conn.set_nodelay(true);
    let port = dst.port();
    let mut buf = Vec::new();
    let mut note = Note {
        kind: Kind::Tcp,
        host: None,
        port: Some(port),
        dst: Some(dst),
    };
    let hello = match inspect(&mut conn, &mut buf, ctx, true) {
        Ok(h) => h,
        Err(u) => {
            if u.http.is_some() {
                note.kind = Kind::Http;
            }
            note.record(ctx, Verdict::Deny, &u.reason, "", None);
            let say = if u.tls {
                Say::Tls
            } else if u.http.is_some() {
                Say::Http
            } else {
                Say::Nothing
            };
            return refuse(
                conn,
                say,
                refusal_status(u.http.as_ref()),
                None,
                Some(port),
                &u.reason,
                "",
            );
        }
    };
    match hello {
        Hello::Tls(name) => {
            note.host = Some(name.clone());
            let Ok(canon) = decide(ctx, &note, &name, port) else {
                return relay::refuse(conn, &sni::ALERT_ACCESS_DENIED);
            };
            if let Some(icpt) = interceptor_for(ctx, &canon) {
                let Some(_open) = ctx.register(&note, &canon, port, &conn, None) else {
                    return;
                };
                let at = crate::intercepted::Where {
                    kind: Kind::Tcp,
                    host: name,
                    port,
                    dst: Some(dst),
                };
                return crate::intercepted::serve(conn, &buf, &canon, at, ctx, icpt, None);
            }
            let Some((conn, mut up)) = connect_or_refuse(conn, ctx, &note, &canon, port, Say::Tls)
            else {
                return;
            };
            let Some(_open) = ctx.register(&note, &canon, port, &conn, Some(&up)) else {
                return;
            };
            if up.write_all(&buf).is_ok() {
                relay::relay(conn, up, None);
            }
        }
        Hello::Http(req) => {
            note.kind = Kind::Http;
            if req.method == "CONNECT" {
                let reason = "CONNECT is only accepted by the explicit proxy (HTTP_PROXY)";
                note.record(ctx, Verdict::Deny, reason, "", None);
                return refuse(
                    conn,
                    Say::Http,
                    "403 Forbidden",
                    None,
                    Some(port),
                    reason,
                    "",
                );
            }
            forward_http(conn, ctx, note, &buf, req, port, None);
        }
    }
}

/// Check the policy for `name:port`: the canonical name, or the journaled denial's reason and
/// fix (the caller tells the program).
fn decide(ctx: &Ctx, note: &Note, name: &str, port: u16) -> Result<String, (String, String)> {
    let (reason, fix) = match ctx.policy().check(name, port) {
        Decision::Allow => match host::normalize(name) {
            Ok(canon) => return Ok(canon),
            Err(e) => (e.to_string(), String::new()),
        },
        Decision::Deny { reason, fix } => (reason, fix),
    };
    note.record(ctx, Verdict::Deny, &reason, &fix, None);
    Err((reason, fix))
}

/// How much of a plain-HTTP body is read (and scanned for placeholders) before it is sent.
const PLAIN_BODY_SEEN: usize = 64 * 1024;

/// Read more of the request's body into `buf`, until it is complete, PLAIN_BODY_SEEN bytes
/// are there, or the inspection time is over.
fn read_body_start(conn: &mut TcpStream, buf: &mut Vec<u8>, req: &Request, ctx: &Ctx) {
    let deadline = Instant::now() + ctx.inspect_timeout;
    let mut chunk = [0u8; 8192];
    loop {
        let mut framer = BodyFramer::new(req.body);
        let rest = &buf[req.head_len..];
        match framer.feed(rest) {
            Ok(_) if framer.done() => return,
            Ok(_) => {}
            Err(_) => return,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if rest.len() >= PLAIN_BODY_SEEN || left.is_zero() {
            return;
        }
        let _ = conn.set_read_timeout(Some(left));
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Send one plain-HTTP request to its host and relay the response. `port` is where it goes;
/// `expect` (inside a CONNECT tunnel) is the host the tunnel was opened for. `upstream`, if
/// given, is the already open connection (CONNECT).
fn forward_http(
    conn: TcpStream,
    ctx: &Ctx,
    mut note: Note,
    buf: &[u8],
    req: Request,
    port: u16,
    tunnel: Option<(&str, TcpStream)>,
) {
    let (raw_host, _) = match req.authority(port) {
        Ok(a) => a,
        Err(e) => {
            let reason = e.to_string();
            note.record(ctx, Verdict::Deny, &reason, "", None);
            return refuse(
                conn,
                Say::Http,
                refusal_status(Some(&e)),
                None,
                Some(port),
                &reason,
                "",
            );
        }
    };
    note.host = Some(raw_host.clone());
    // No secret goes anywhere in clear text: a placeholder in plain HTTP is a leak attempt.
    // The body's start (up to PLAIN_BODY_SEEN bytes) is read before deciding.
    let mut owned;
    let mut buf = buf;
    let mut conn = conn;
    if let Some(icpt) = ctx.intercept() {
        let secrets = icpt.secrets();
        owned = buf.to_vec();
        read_body_start(&mut conn, &mut owned, &req, ctx);
        buf = &owned;
        let rest = &buf[req.head_len..];
        let leak = secrets.check_plain(&req).err().or_else(|| {
            // A broken framing is refused when the body is forwarded.
            match crate::inject::BodyCheck::new(secrets, None, req.body).feed(rest) {
                Err(crate::inject::BodyStop::Leak(l)) => Some(l),
                _ => None,
            }
        });
        if let Some(l) = leak {
            let reason = format!(
                "{} (never in plain HTTP)",
                l.reason(&host::display(&raw_host))
            );
            note.record(ctx, Verdict::Deny, &reason, "", None);
            return refuse(
                conn,
                Say::Http,
                "403 Forbidden",
                Some(&raw_host),
                Some(port),
                &reason,
                "",
            );
        }
    }
    let decision = match &tunnel {
        Some((expect, _)) if host::normalize(&raw_host).ok().as_deref() != Some(expect) => {
            Decision::Deny {
                reason: format!(
                    "the request inside a CONNECT to {expect} names {} (domain fronting)",
                    host::display(&raw_host)
                ),
                fix: String::new(),
            }
        }
        _ => ctx.policy().check(&raw_host, port),
    };
    if let Decision::Deny { reason, fix } = decision {
        note.record(ctx, Verdict::Deny, &reason, &fix, None);
        return refuse(
            conn,
            Say::Http,
            "403 Forbidden",
            Some(&raw_host),
            Some(port),
            &reason,
            &fix,
        );
    }
    let Ok(canon) = host::normalize(&raw_host) else {
        return;
    };
    let tunnel_open = tunnel.is_some();
    let (conn, mut up) = match tunnel {
        Some((_, up)) => (conn, up),
        None => match connect_or_refuse(conn, ctx, &note, &canon, port, Say::Http) {
            Some(pair) => pair,
            None => return,
        },
    };
    // A tunnel's connection is registered by the tunnel.
    let _open = if tunnel_open {
        None
    } else {
        match ctx.register(&note, &canon, port, &conn, Some(&up)) {
            Some(r) => Some(r),
            None => return,
        }
    };
    let mut framer = BodyFramer::new(req.body);
    let rest = &buf[req.head_len..];
    let Ok(take) = framer.feed(rest) else { return };
    let mut out = req.forward_head();
    out.extend_from_slice(&rest[..take]);
    if up.write_all(&out).is_ok() {
        relay::relay(conn, up, Some(framer));
    }
}

/// A connection to the explicit proxy (HTTP_PROXY / HTTPS_PROXY): `CONNECT host:port` or an
/// absolute-form request (`GET http://host/path`).
pub fn serve_explicit(mut conn: TcpStream, ctx: &Ctx) {
    let Some(_slot) = ctx.admit(&Note {
        kind: Kind::Http,
        host: None,
        port: None,
        dst: None,
    }) else {
        return relay::refuse(
            conn,
            &http::response(
                "503 Service Unavailable",
                "airlock: too many connections at once\n",
            ),
        );
    };
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut note = Note {
        kind: Kind::Http,
        host: None,
        port: None,
        dst: None,
    };
    let req = match inspect(&mut conn, &mut buf, ctx, false) {
        Ok(Hello::Http(r)) => r,
        Ok(Hello::Tls(_)) => return,
        Err(u) => {
            note.record(ctx, Verdict::Deny, &u.reason, "", None);
            let say = if u.tls { Say::Nothing } else { Say::Http };
            return refuse(
                conn,
                say,
                refusal_status(u.http.as_ref()),
                None,
                None,
                &u.reason,
                "",
            );
        }
    };
    match &req.target {
        Target::Authority(_) => connect_tunnel(conn, ctx, note, buf, req),
        Target::Absolute { .. } => {
            let port = match req.authority(80) {
                Ok((_, p)) => p,
                Err(_) => 80,
            };
            note.port = Some(port);
            forward_http(conn, ctx, note, &buf, req, port, None);
        }
        Target::Origin(_) | Target::Asterisk => {
            let reason = "the proxy needs an absolute URL (http://host/path) or CONNECT host:port";
            note.record(ctx, Verdict::Deny, reason, "", None);
            refuse(conn, Say::Http, "400 Bad Request", None, None, reason, "");
        }
    }
}

fn connect_tunnel(conn: TcpStream, ctx: &Ctx, mut note: Note, buf: Vec<u8>, req: Request) {
    note.kind = Kind::Connect;
    let (raw_host, port) = match req.authority(443) {
        Ok(a) => a,
        Err(e) => {
            let reason = e.to_string();
            note.record(ctx, Verdict::Deny, &reason, "", None);
            return refuse(
                conn,
                Say::Http,
                refusal_status(Some(&e)),
                None,
                None,
                &reason,
                "",
            );
        }
    };
    note.host = Some(raw_host.clone());
    note.port = Some(port);
    let canon = match decide(ctx, &note, &raw_host, port) {
        Ok(c) => c,
        Err((reason, fix)) => {
            return refuse(
                conn,
                Say::Http,
                "403 Forbidden",
                Some(&raw_host),
                Some(port),
                &reason,
                &fix,
            )
        }
    };
    let Some((mut conn, up)) = connect_or_refuse(conn, ctx, &note, &canon, port, Say::Http) else {
        return;
    };
    let Some(_open) = ctx.register(&note, &canon, port, &conn, Some(&up)) else {
        return;
    };
    if conn
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    // Inside the tunnel the same inspection applies, and it must name the same host: a
    // ClientHello or Host for another name would be fronting through an allowed tunnel.
    let mut inner = buf[req.head_len..].to_vec();
    let tunnel_note = |kind| Note {
        kind,
        host: None,
        port: Some(port),
        dst: None,
    };
    match inspect(&mut conn, &mut inner, ctx, true) {
        Ok(Hello::Tls(name)) => {
            let mut n = tunnel_note(Kind::Connect);
            n.host = Some(name.clone());
            if host::normalize(&name).ok().as_deref() != Some(canon.as_str()) {
                let reason = format!("the TLS server name {} differs from the CONNECT target {canon} (domain fronting)", host::display(&name));
                n.record(ctx, Verdict::Deny, &reason, "", None);
                return relay::refuse(conn, &sni::ALERT_ACCESS_DENIED);
            }
            if let Some(icpt) = interceptor_for(ctx, &canon) {
                let Ok(peer) = up.peer_addr() else { return };
                let at = crate::intercepted::Where {
                    kind: Kind::Connect,
                    host: name,
                    port,
                    dst: None,
                };
                return crate::intercepted::serve(
                    conn,
                    &inner,
                    &canon,
                    at,
                    ctx,
                    icpt,
                    Some((up, peer.ip())),
                );
            }
            let mut up = up;
            if up.write_all(&inner).is_ok() {
                relay::relay(conn, up, None);
            }
        }
        Ok(Hello::Http(r)) => forward_http(
            conn,
            ctx,
            tunnel_note(Kind::Http),
            &inner,
            r,
            port,
            Some((&canon, up)),
        ),
        Err(u) => {
            let n = tunnel_note(Kind::Connect);
            n.record(
                ctx,
                Verdict::Deny,
                &format!("inside the CONNECT tunnel to {canon}: {}", u.reason),
                "",
                None,
            );
            let say = if u.tls {
                Say::Tls
            } else if u.http.is_some() {
                Say::Http
            } else {
                Say::Nothing
            };
            refuse(
                conn,
                say,
                refusal_status(u.http.as_ref()),
                Some(&canon),
                Some(port),
                &u.reason,
                "",
            );
        }
    }
}
