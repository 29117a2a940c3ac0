//! DNS response handling (`probe/src/engine/dns.rs`): datagrams read as the UDP lookup reads
//! every answer to one query, the first as the answer and the rest as duplicates (injected or
//! late answers, OONI ts-017 E003), through `vantage_probe::engine::dns::parse_datagrams`.
//!
//! Input: the query id (2 bytes, big-endian), then datagrams, each a 2-byte big-endian length
//! and that many bytes (the last one takes whatever is left).
//!
//! Invariants: never a panic; one query record and one duplicate per later datagram, each with
//! its raw bytes; no addresses exactly when there is an error, unless the answer carried both
//! addresses and an error rcode; the records serialise and parse again as
//! `vantage_probe::ooni::DnsQuery` (they go into every measurement).

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use vantage_probe::engine::dns::parse_datagrams;
use vantage_probe::ooni::DnsQuery;

/// The id and the datagrams of one input.
fn split(data: &[u8]) -> Option<(u16, Vec<&[u8]>)> {
    let (id, mut rest) = data.split_first_chunk::<2>()?;
    let mut datagrams = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let n = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        datagrams.push(&tail[..n]);
        rest = &tail[n..];
    }
    if datagrams.is_empty() {
        // The lookup reads at least one datagram before it parses any.
        datagrams.push(rest);
    }
    Some((u16::from_be_bytes(*id), datagrams))
}

fuzz_target!(|data: &[u8]| {
    let Some((id, datagrams)) = split(data) else {
        return;
    };
    let lookup = parse_datagrams(&datagrams, id);
    assert_eq!(lookup.queries.len(), 1, "one record for the first datagram");
    assert_eq!(
        lookup.duplicates.len(),
        datagrams.len() - 1,
        "one per later datagram"
    );
    let first = &lookup.queries[0];
    assert_eq!(
        first.failure.is_some(),
        lookup.error.is_some(),
        "the record's failure is the lookup's error"
    );
    if lookup.error.is_none() {
        assert!(!lookup.addrs.is_empty(), "no error, so an address");
    }
    if lookup.addrs.is_empty() {
        assert!(lookup.error.is_some(), "no address, so an error");
    } else if lookup.error.is_some() {
        assert!(
            first.rcode.is_some_and(|r| r != 0),
            "addresses and an error only with an error rcode: {first:?}"
        );
    }
    let addresses = first
        .answers
        .iter()
        .flatten()
        .filter(|a| a.answer_type == "A" || a.answer_type == "AAAA")
        .count();
    assert_eq!(
        addresses,
        lookup.addrs.len(),
        "one A/AAAA answer per address"
    );
    for (record, raw) in lookup
        .queries
        .iter()
        .chain(&lookup.duplicates)
        .zip(&datagrams)
    {
        let kept = record.raw_response.as_deref().expect("raw bytes kept");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(kept)
            .expect("raw_response is base64");
        assert_eq!(&decoded[..], *raw, "raw_response holds the datagram");
        let written = serde_json::to_string(record).expect("a DNS record serialises");
        let again: DnsQuery = serde_json::from_str(&written)
            .unwrap_or_else(|e| panic!("a DNS record does not parse again: {e}\n{written}"));
        assert_eq!(&again, record, "a DNS record survives JSON");
    }
});
