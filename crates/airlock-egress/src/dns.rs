//! The sandbox's DNS: A/AAAA answers for allowed names only, resolved on the host side and
//! filtered by the address floor. Other names are refused without being asked anywhere, so a
//! query cannot carry data out (no exfiltration through TXT/AAAA lookups of encoded names).

use crate::journal::{Event, Kind, Verdict};
use crate::policy::Decision;
use crate::proxy::Ctx;
use crate::{host, resolve};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::io;
use std::net::IpAddr;

/// At most this many addresses per answer (keeps answers well under 512 bytes).
const MAX_ANSWERS: usize = 8;

/// Answer one DNS query datagram. An empty result means: send nothing (not a query at all).
pub fn answer(query: &[u8], ctx: &Ctx) -> Vec<u8> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return Vec::new();
    }
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            journal(ctx, None, None, Verdict::Deny, "malformed query", "", &[]);
            return header_only(query, ResponseCode::FormErr);
        }
    };
    if msg.metadata.message_type != MessageType::Query {
        return Vec::new();
    }
    let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    if msg.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        resp.set_edns(edns);
    }
    let rcode = respond(&msg, &mut resp, ctx);
    resp.metadata.response_code = rcode;
    resp.to_vec()
        .unwrap_or_else(|_| header_only(query, ResponseCode::ServFail))
}

fn respond(msg: &Message, resp: &mut Message, ctx: &Ctx) -> ResponseCode {
    if msg.metadata.op_code != OpCode::Query {
        journal(
            ctx,
            None,
            None,
            Verdict::Deny,
            "not a standard query",
            "",
            &[],
        );
        return ResponseCode::NotImp;
    }
    let [q] = msg.queries.as_slice() else {
        journal(
            ctx,
            None,
            None,
            Verdict::Deny,
            "not exactly one question",
            "",
            &[],
        );
        return ResponseCode::FormErr;
    };
    resp.add_query(q.clone());
    let qtype = q.query_type();
    let text = name_text(q.name());
    let shown = host::display(text.as_deref().unwrap_or(&q.name().to_ascii()));
    let log = |v: Verdict, reason: &str, fix: &str, ips: &[String]| {
        journal(ctx, Some(&shown), Some(qtype), v, reason, fix, ips)
    };
    let deny = |reason: &str, fix: &str| {
        log(Verdict::Deny, reason, fix, &[]);
        ResponseCode::Refused
    };
    if q.query_class() != DNSClass::IN {
        return deny("only class IN is answered", "");
    }
    let Some(text) = text else {
        return deny("a label with bytes other than letters, digits and '-'", "");
    };
    if let Decision::Deny { reason, fix } = ctx.policy().check_dns(&text) {
        return deny(&reason, &fix);
    }
    let Ok(name) = host::normalize(&text) else {
        return deny("invalid name", "");
    };
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        log(
            Verdict::Allow,
            "no records are served for this type",
            "",
            &[],
        );
        return ResponseCode::NoError;
    }
    let ips = match ctx.resolver.lookup(&name) {
        Ok(ips) => ips,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log(Verdict::Allow, "no such name upstream", "", &[]);
            return ResponseCode::NXDomain;
        }
        Err(e) => {
            log(Verdict::Allow, &format!("upstream failed: {e}"), "", &[]);
            return ResponseCode::ServFail;
        }
    };
    let (good, bad): (Vec<IpAddr>, Vec<IpAddr>) = ips
        .into_iter()
        .partition(|ip| (ctx.forbidden)(*ip).is_none());
    if good.is_empty() && !bad.is_empty() {
        return deny(&ctx.forbidden_reason(&name, &bad), "");
    }
    let mut given = Vec::new();
    for ip in good
        .into_iter()
        .filter(|ip| ip.is_ipv4() == (qtype == RecordType::A))
        .take(MAX_ANSWERS)
    {
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        resp.add_answer(Record::from_rdata(q.name().clone(), ctx.dns_ttl, data));
        given.push(ip.to_string());
    }
    let reason = if bad.is_empty() {
        String::new()
    } else {
        format!("dropped {} forbidden address(es)", bad.len())
    };
    log(Verdict::Allow, &reason, "", &given);
    ResponseCode::NoError
}

/// The question name as text if every label is letters, digits and hyphens, else `None`.
fn name_text(name: &Name) -> Option<String> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let ldh =
        |l: &&[u8]| !l.is_empty() && l.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
    labels.iter().all(ldh).then(|| {
        labels
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join(".")
    })
}

fn qtype_text(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn journal(
    ctx: &Ctx,
    host: Option<&str>,
    qtype: Option<RecordType>,
    v: Verdict,
    reason: &str,
    fix: &str,
    ips: &[String],
) {
    let mut e = Event::new(Kind::Dns, v);
    e.host = host.map(str::to_string);
    e.port = Some(53);
    e.qtype = qtype.map(qtype_text);
    e.ip = ips.to_vec();
    e.reason = (!reason.is_empty()).then(|| reason.to_string());
    e.fix = (!fix.is_empty()).then(|| fix.to_string());
    ctx.journal.record(&e);
}

/// A reply with only the header: the query's id and opcode, QR set, no sections.
fn header_only(query: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut h = vec![0u8; 12];
    h[..2].copy_from_slice(&query[..2]);
    h[2] = 0x80 | (query[2] & 0x79); // QR, opcode, RD
    h[3] = 0x80 | (u16::from(rcode) as u8 & 0x0f); // RA, rcode
    h
}

/// Encode a query, for tests and tools.
pub fn encode_query(id: u16, name: &str, ty: RecordType) -> io::Result<Vec<u8>> {
    let n = Name::from_ascii(name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    resolve::encode_query(id, &n, ty)
}

#[cfg(test)]
mod tests;
