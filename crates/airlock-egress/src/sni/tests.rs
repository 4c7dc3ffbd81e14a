use super::build::{client_hello, records};
use super::*;

fn handshake_of(record: &[u8]) -> Vec<u8> {
    record[5..].to_vec()
}

#[test]
fn reads_the_name() {
    let hello = client_hello(&[b"github.com"], &[]);
    assert!(looks_like_tls(&hello));
    assert_eq!(server_name(&hello).unwrap(), "github.com");
}

#[test]
fn every_split_point_needs_more_then_succeeds() {
    let hello = client_hello(&[b"registry.npmjs.org"], &[]);
    for cut in 0..hello.len() {
        assert_eq!(
            server_name(&hello[..cut]),
            Err(SniError::NeedMore),
            "cut at {cut}"
        );
    }
    assert_eq!(server_name(&hello).unwrap(), "registry.npmjs.org");
    // Bytes after the hello (say, early data) do not matter.
    let mut more = hello.clone();
    more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
    assert_eq!(server_name(&more).unwrap(), "registry.npmjs.org");
}

#[test]
fn fragmented_across_records() {
    let hs = handshake_of(&client_hello(&[b"a.example.com"], &[]));
    for chunk in [1, 2, 3, 7, 50, 100] {
        let recs = records(&hs, chunk);
        assert_eq!(
            server_name(&recs).unwrap(),
            "a.example.com",
            "chunk {chunk}"
        );
        for cut in 0..recs.len() {
            assert_eq!(
                server_name(&recs[..cut]),
                Err(SniError::NeedMore),
                "chunk {chunk} cut {cut}"
            );
        }
    }
}

#[test]
fn no_sni_is_denied() {
    assert_eq!(
        server_name(&client_hello(&[], &[])),
        Err(SniError::NoServerName)
    );
    // Empty host name.
    assert_eq!(
        server_name(&client_hello(&[b""], &[])),
        Err(SniError::NoServerName)
    );
    assert_eq!(
        SniError::NoServerName.to_string(),
        "TLS without a server name"
    );
}

#[test]
fn ech_and_esni_are_denied() {
    let ech = client_hello(&[b"public.example.com"], &[(0xfe0d, vec![0, 1, 2])]);
    assert_eq!(server_name(&ech), Err(SniError::Encrypted));
    let esni = client_hello(&[], &[(0xffce, vec![1, 2, 3])]);
    assert_eq!(server_name(&esni), Err(SniError::Encrypted));
}

#[test]
fn ambiguous_hellos_are_malformed() {
    // Two host names in one extension: which would the server pick?
    let two = client_hello(&[b"allowed.com", b"evil.com"], &[]);
    assert!(matches!(server_name(&two), Err(SniError::Malformed(_))));
    // Two server_name extensions.
    let mut list = vec![0, 11, 0, 0, 8];
    list.extend_from_slice(b"evil.com");
    let dup = client_hello(&[b"allowed.com"], &[(0, list)]);
    assert!(matches!(server_name(&dup), Err(SniError::Malformed(_))));
}

#[test]
fn names_pass_through_for_the_policy_to_refuse() {
    assert_eq!(
        server_name(&client_hello(&[b"github.com\0.evil.com"], &[])).unwrap(),
        "github.com\0.evil.com"
    );
    assert_eq!(
        server_name(&client_hello(&[b"github.com."], &[])).unwrap(),
        "github.com."
    );
    assert_eq!(
        server_name(&client_hello(&[b"10.0.0.1"], &[])).unwrap(),
        "10.0.0.1"
    );
}

#[test]
fn not_tls() {
    assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), Err(SniError::NotTls));
    assert!(!looks_like_tls(b"GET /"));
    assert_eq!(
        server_name(&[22, 2, 0, 0, 5, 1, 2, 3, 4, 5]),
        Err(SniError::NotTls)
    );
}

#[test]
fn malformed_never_panics() {
    let hello = client_hello(&[b"github.com"], &[(0x1234, vec![5; 40])]);
    // Every truncation of the inner message with a consistent outer length, and every single-byte
    // corruption: an answer, never a panic.
    for i in 5..hello.len() {
        for v in [0u8, 1, 0x7f, 0xff] {
            let mut bad = hello.clone();
            bad[i] = v;
            let _ = server_name(&bad);
        }
    }
    let hs = handshake_of(&hello);
    for cut in 4..hs.len() {
        let mut inner = hs[..cut].to_vec();
        let len = (cut - 4) as u32;
        inner[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        let r = server_name(&records(&inner, usize::MAX));
        assert!(r.is_err(), "cut {cut}");
    }
    // A pseudo-random byte soup behind a handshake header.
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        let mut soup = vec![22, 3, 1, 0, 200, 1, 0, 0, 196];
        for _ in 0..196 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            soup.push((x >> 16) as u8);
        }
        let _ = server_name(&soup);
    }
}

#[test]
fn oversized_and_wrong_first_message() {
    // A handshake header announcing 1 MiB.
    let big = [22, 3, 1, 0, 4, 1, 0x10, 0, 0];
    assert_eq!(server_name(&big), Err(SniError::TooLarge));
    // A ServerHello where a ClientHello belongs.
    let sh = [22, 3, 1, 0, 4, 2, 0, 0, 0];
    assert!(matches!(server_name(&sh), Err(SniError::Malformed(_))));
    // A record type change in the middle of a fragmented hello.
    let hs = handshake_of(&client_hello(&[b"a.com"], &[]));
    let mut recs = records(&hs[..10], 10);
    recs.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
    assert!(matches!(server_name(&recs), Err(SniError::Malformed(_))));
    // A hello in one-byte records: the buffer stops growing at the cap.
    let mut hs = vec![1, 0, 0x75, 0x30];
    hs.resize(4 + 30000, 0);
    let recs = records(&hs, 1);
    assert_eq!(server_name(&recs[..MAX_HELLO - 3]), Err(SniError::NeedMore));
    assert_eq!(
        server_name(&recs[..MAX_HELLO + 10]),
        Err(SniError::TooLarge)
    );
}
