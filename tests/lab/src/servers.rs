//! The lab's own servers, each run by the driver inside its namespace as `vantage-lab <server>`:
//! the Internet's web servers, the ISP's filtering proxy and its DNS injector.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use vantage_fixtures::dns::{Behaviour, respond};
use vantage_fixtures::http::{Handler, HttpFixture, Request, Response};
use vantage_fixtures::tls::{TestCa, TlsFixture};

use crate::scenario::{SITES, Technique, page};

/// The page a site serves, chosen by the Host header; the lab's DoH resolver's answers.
fn site_handler() -> Handler {
    Arc::new(|req: &Request| {
        let host = req
            .header("host")
            .unwrap_or("")
            .split(':')
            .next()
            .unwrap_or("");
        if let Some(answer) = crate::dnscheck::doh_answer(host, req) {
            return answer;
        }
        match SITES.iter().find(|s| s.domain.eq_ignore_ascii_case(host)) {
            Some(s) => Response::html(&page(s.domain)),
            None => Response {
                status: 404,
                headers: Vec::new(),
                body: b"no such site".to_vec(),
            },
        }
    })
}

/// Every site over HTTP on port 80 and HTTPS on port 443 (with the DoH resolver), QUIC on UDP
/// 443 and the DoT resolvers on TCP 853, on all of the namespace's addresses,
/// with a certificate for every site from a CA made now, written to `ca_pem` for the probes and
/// the test helper to trust (written last: its presence says the servers are up).
pub async fn web(ca_pem: &Path) -> Result<()> {
    let ca = TestCa::new("Vantage lab CA");
    let names: Vec<&str> = SITES
        .iter()
        .map(|s| s.domain)
        .chain(crate::apps::TLS_NAMES.iter().copied())
        .chain(crate::quic::TLS_NAMES.iter().copied())
        .chain(crate::dnscheck::TLS_NAMES.iter().copied())
        .collect();
    let leaf = ca.leaf(&names);
    let _http = HttpFixture::start_on(([0, 0, 0, 0], 80).into(), site_handler()).await;
    let _https = TlsFixture::start_on(([0, 0, 0, 0], 443).into(), &leaf, site_handler()).await;
    let pem_dir = ca_pem.parent().unwrap_or(Path::new("."));
    let _quic = crate::quic::serve(&leaf, ([0, 0, 0, 0], 443).into(), pem_dir)?;
    let _dot = crate::dnscheck::serve_dot(&leaf, pem_dir).await?;
    let partial = ca_pem.with_extension("partial");
    std::fs::write(&partial, ca.pem()).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, ca_pem).with_context(|| format!("writing {}", ca_pem.display()))?;
    eprintln!("web: serving {} sites on :80 and :443", SITES.len());
    std::future::pending::<()>().await;
    Ok(())
}

/// The ISP's filtering proxy: connections to a watched address arrive here (DNAT). A request
/// whose Host is blocked gets the national blockpage; any other is passed to `upstream`, the
/// address the client meant, untouched.
pub async fn proxy(listen: SocketAddr, upstream: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("proxy: bind {listen}"))?;
    eprintln!("proxy: listening on {listen}, passing allowed hosts to {upstream}");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if let Err(e) = pass_or_block(client, upstream).await {
                eprintln!("proxy: {e:#}");
            }
        });
    }
}

async fn pass_or_block(mut client: tokio::net::TcpStream, upstream: SocketAddr) -> Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut chunk).await?;
        if n == 0 || head.len() > 64 * 1024 {
            bail!("no request head");
        }
        head.extend_from_slice(&chunk[..n]);
    }
    if let Some(page) = requested_host(&head).and_then(|h| crate::hygiene::filter_page(&h)) {
        let page = Response::html(&page);
        client.write_all(&page.to_bytes()).await?;
        client.shutdown().await?;
        return Ok(());
    }
    let mut server = tokio::net::TcpStream::connect(upstream)
        .await
        .with_context(|| format!("connect {upstream}"))?;
    server.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// Whether the request head's Host names a site the proxy blocks.
#[cfg(test)]
fn blocked_host(head: &[u8]) -> bool {
    requested_host(head).is_some_and(|h| crate::hygiene::filter_page(&h).is_some())
}

/// The request head's Host, lower-case, without a port.
fn requested_host(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
        .map(|(_, v)| {
            v.trim()
                .split(':')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase()
        })
}

/// A distant resolver: relays each query to `upstream` and its answer back `delay` later. The
/// ISP's resolver asks it for the injected name, so that the injector's forged answer arrives
/// well ahead of the real one whatever the machine's load, as across a real border.
pub async fn slow_dns(listen: SocketAddr, upstream: SocketAddr, delay: Duration) -> Result<()> {
    let socket = Arc::new(
        UdpSocket::bind(listen)
            .await
            .with_context(|| format!("slow-dns: bind {listen}"))?,
    );
    eprintln!("slow-dns: relaying {listen} to {upstream} after {delay:?}");
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let (query, socket) = (buf[..n].to_vec(), socket.clone());
        tokio::spawn(async move {
            let Ok(out) = UdpSocket::bind("0.0.0.0:0").await else {
                return;
            };
            let mut answer = vec![0u8; 4096];
            let relayed = async {
                out.send_to(&query, upstream).await?;
                out.recv(&mut answer).await
            };
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), relayed).await {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&answer[..n], client).await;
            }
        });
    }
}

/// The DNS injector: watches UDP queries to `resolver` on a raw socket and, for a name with
/// [`Technique::DnsInjected`], sends the client a forged answer from the resolver's address
/// at once, ahead of the resolver's own, as the Great Firewall does (OONI's
/// web_connectivity keeps the late answers in `x_dns_duplicate_responses`, spec ts-017).
pub fn inject(resolver: Ipv4Addr) -> Result<()> {
    let table: Vec<(String, Behaviour)> = SITES
        .iter()
        .filter_map(|s| match s.technique {
            Technique::DnsInjected(ip) => Some((s.domain.to_string(), Behaviour::Answer(vec![ip]))),
            _ => None,
        })
        .collect();
    let mut watch = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
        .context("raw UDP socket (needs root)")?;
    let send = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
        .context("raw IP socket (needs root)")?;
    send.set_header_included_v4(true)?;
    eprintln!(
        "inject: watching queries to {resolver}:53 for {} name(s)",
        table.len()
    );
    let mut buf = vec![0u8; 65536];
    loop {
        let n = watch.read(&mut buf).context("reading the raw socket")?;
        let Some(q) = Datagram::parse(&buf[..n]) else {
            continue;
        };
        if q.dst != SocketAddrV4::new(resolver, 53) {
            continue;
        }
        let Ok(query) = Message::from_vec(q.payload) else {
            continue;
        };
        let Some(question) = query.queries.first() else {
            continue;
        };
        let name = question.name().to_ascii();
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if question.query_type() != RecordType::A || !table.iter().any(|(n, _)| *n == name) {
            continue;
        }
        for (_, answer) in respond(&query, &table) {
            let packet = udp_packet(q.dst, q.src, &answer);
            send.send_to(&packet, &SockAddr::from(SocketAddr::V4(q.src)))
                .with_context(|| format!("sending the forged answer to {}", q.src))?;
            eprintln!("inject: forged an answer for {name} to {}", q.src);
        }
    }
}

/// An IPv4 UDP datagram as read from a raw socket.
#[derive(Debug, PartialEq, Eq)]
struct Datagram<'a> {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Parses an IPv4 header (RFC 791 §3.1) and a UDP header (RFC 768); `None` for anything
    /// else or anything cut short.
    fn parse(p: &'a [u8]) -> Option<Datagram<'a>> {
        let first = *p.first()?;
        if first >> 4 != 4 || *p.get(9)? != 17 {
            return None;
        }
        let ihl = usize::from(first & 0x0f) * 4;
        let ip = |at: usize| -> Option<Ipv4Addr> {
            let b: [u8; 4] = p.get(at..at + 4)?.try_into().ok()?;
            Some(Ipv4Addr::from(b))
        };
        let (src_ip, dst_ip) = (ip(12)?, ip(16)?);
        let udp = p.get(ihl..)?;
        let port = |at: usize| -> Option<u16> {
            Some(u16::from_be_bytes([*udp.get(at)?, *udp.get(at + 1)?]))
        };
        let len = usize::from(port(4)?);
        Some(Datagram {
            src: SocketAddrV4::new(src_ip, port(0)?),
            dst: SocketAddrV4::new(dst_ip, port(2)?),
            payload: udp.get(8..len.max(8))?,
        })
    }
}

/// An IPv4 + UDP packet from `src` to `dst` carrying `payload`; the UDP checksum is left zero,
/// which RFC 768 allows over IPv4.
fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_packet_parses_back_to_what_was_sent() {
        let src = SocketAddrV4::new(Ipv4Addr::new(45, 66, 0, 53), 53);
        let dst = SocketAddrV4::new(Ipv4Addr::new(45, 66, 1, 2), 40000);
        let p = udp_packet(src, dst, b"hello");
        assert_eq!(
            checksum(&p[..20]),
            0,
            "a header with its checksum sums to zero"
        );
        assert_eq!(
            Datagram::parse(&p),
            Some(Datagram {
                src,
                dst,
                payload: b"hello"
            })
        );
    }

    #[test]
    fn truncated_or_foreign_packets_are_ignored() {
        let src = SocketAddrV4::new(Ipv4Addr::new(45, 66, 0, 53), 53);
        let p = udp_packet(src, src, b"hello");
        for cut in [0, 1, 10, 19, 25] {
            assert_eq!(Datagram::parse(&p[..cut]), None, "cut at {cut}");
        }
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert_eq!(Datagram::parse(&tcp), None);
    }

    #[test]
    fn the_proxy_blocks_by_host_header_only() {
        assert!(blocked_host(
            b"GET / HTTP/1.1\r\nHost: blockpage.lab\r\n\r\n"
        ));
        assert!(blocked_host(
            b"GET / HTTP/1.1\r\nhost: BLOCKPAGE.lab:80\r\n\r\n"
        ));
        assert!(!blocked_host(
            b"GET / HTTP/1.1\r\nHost: neighbour.lab\r\n\r\n"
        ));
        assert!(blocked_host(
            b"GET / HTTP/1.1\r\nHost: samesize.lab\r\n\r\n"
        ));
        assert!(!blocked_host(b"GET /blockpage.lab HTTP/1.1\r\n\r\n"));
    }
}
