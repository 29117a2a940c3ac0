//! The list of resolvers dnscheck measures: `test-lists/resolvers.toml` (or a file in its
//! format) read into [`Target`]s, every field checked before any network I/O, and the domain
//! asked for checked as a DNS name.

use std::net::IpAddr;

use serde::Deserialize;
use url::{Host, Url};

use super::{BUILTIN_RESOLVERS, MAX_ADDRESSES, MAX_RESOLVERS};

/// How a resolver is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// DNS over HTTPS (RFC 8484), `https://` URLs.
    Doh,
    /// DNS over TLS (RFC 7858), `dot://` URLs.
    Dot,
}

/// One resolver to check, validated before any network I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as the list writes it: the measurement's `input`.
    pub input: String,
    /// The URL parsed.
    pub url: Url,
    /// DoH or DoT.
    pub transport: Transport,
    /// The URL's host: a name to bootstrap, or an address.
    pub host: Host<String>,
    /// The port (443 for DoH, 853 for DoT unless the URL says).
    pub port: u16,
    /// The TLS server name: `sni` from the list, else the URL's host.
    pub server_name: String,
    /// Addresses known to be the resolver's, tried besides the bootstrap's.
    pub addresses: Vec<IpAddr>,
    /// Who runs it, for the summary.
    pub operator: Option<String>,
}

/// Why a resolvers file cannot be used. Found before any network I/O.
pub type ResolversFileError = crate::data_file::DataFileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    resolver: Vec<RawResolver>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolver {
    url: String,
    operator: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    sni: Option<String>,
}

/// The built-in list.
pub fn builtin() -> Result<Vec<Target>, ResolversFileError> {
    parse_resolvers(BUILTIN_RESOLVERS, "test-lists/resolvers.toml")
}

/// Reads a resolvers file (the format of `test-lists/resolvers.toml`).
pub fn parse_resolvers(text: &str, source_name: &str) -> Result<Vec<Target>, ResolversFileError> {
    let raw: RawFile = crate::data_file::parse_toml(text, source_name)?;
    let bad = |field: String, reason: String| ResolversFileError::Field {
        source_name: source_name.to_string(),
        field,
        reason,
    };
    if raw.resolver.is_empty() {
        return Err(bad("resolver".into(), "no [[resolver]] listed".into()));
    }
    if raw.resolver.len() > MAX_RESOLVERS {
        return Err(bad(
            "resolver".into(),
            format!("{} listed; at most {MAX_RESOLVERS}", raw.resolver.len()),
        ));
    }
    let mut targets: Vec<Target> = Vec::with_capacity(raw.resolver.len());
    for (i, r) in raw.resolver.into_iter().enumerate() {
        let target =
            target(&r).map_err(|(field, reason)| bad(format!("resolver[{i}].{field}"), reason))?;
        if targets.iter().any(|t| t.input == target.input) {
            return Err(bad(
                format!("resolver[{i}].url"),
                format!("{} is listed twice", target.input),
            ));
        }
        targets.push(target);
    }
    Ok(targets)
}

/// One `[[resolver]]` checked; the error names the field.
fn target(r: &RawResolver) -> Result<Target, (&'static str, String)> {
    let input = r.url.trim().to_string();
    let url = Url::parse(&input).map_err(|e| ("url", format!("{input:?} is not a URL: {e}")))?;
    let transport = match url.scheme() {
        "https" => Transport::Doh,
        "dot" => Transport::Dot,
        other => {
            return Err((
                "url",
                format!("{input:?}: scheme {other:?} is neither https (DoH) nor dot (DoT)"),
            ));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(("url", format!("{input:?} carries credentials")));
    }
    // `dot://` is not a scheme the URL standard knows, so its host is read here as an address
    // when it is one, as for `https://`.
    let host = match url.host() {
        None => return Err(("url", format!("{input:?} has no host"))),
        Some(Host::Domain(d)) => match d.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => Host::Ipv4(v4),
            Ok(IpAddr::V6(v6)) => Host::Ipv6(v6),
            Err(_) if d.is_empty() => return Err(("url", format!("{input:?} has no host"))),
            Err(_) => Host::Domain(d.to_ascii_lowercase()),
        },
        Some(Host::Ipv4(a)) => Host::Ipv4(a),
        Some(Host::Ipv6(a)) => Host::Ipv6(a),
    };
    let port = url.port().unwrap_or(match transport {
        Transport::Doh => 443,
        Transport::Dot => 853,
    });
    if port == 0 {
        return Err(("url", format!("{input:?}: port 0")));
    }
    let server_name = match &r.sni {
        Some(s) if s.trim().is_empty() => return Err(("sni", "empty".into())),
        Some(s) => s.trim().to_string(),
        None => match &host {
            Host::Domain(d) => d.clone(),
            Host::Ipv4(a) => a.to_string(),
            Host::Ipv6(a) => a.to_string(),
        },
    };
    if rustls::pki_types::ServerName::try_from(server_name.clone()).is_err() {
        return Err(("sni", format!("{server_name:?} is not a server name")));
    }
    let mut addresses = Vec::new();
    for a in &r.addresses {
        let ip: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| ("addresses", format!("{a:?} is not an IP address")))?;
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    if addresses.len() > MAX_ADDRESSES {
        return Err((
            "addresses",
            format!("{} listed; at most {MAX_ADDRESSES}", addresses.len()),
        ));
    }
    Ok(Target {
        input,
        url,
        transport,
        host,
        port,
        server_name,
        addresses,
        operator: r.operator.clone().filter(|o| !o.trim().is_empty()),
    })
}

/// Checks that `domain` can be asked for (a DNS name), before any network I/O.
pub fn check_domain(domain: &str) -> Result<(), String> {
    let d = domain.trim_end_matches('.');
    if d.is_empty() || d.parse::<IpAddr>().is_ok() {
        return Err(format!("{domain:?} is not a domain name"));
    }
    hickory_proto::rr::Name::from_ascii(d)
        .map(|_| ())
        .map_err(|e| format!("{domain:?} is not a domain name ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_list_is_valid() {
        let list = builtin().expect("built-in list");
        assert!(list.len() >= 10, "{}", list.len());
        assert!(list.iter().any(|t| t.transport == Transport::Dot));
        assert!(list.iter().any(|t| t.transport == Transport::Doh));
        let dot = list
            .iter()
            .find(|t| t.input == "dot://1.1.1.1:853/")
            .expect("Cloudflare by address");
        assert_eq!(dot.port, 853);
        assert_eq!(dot.server_name, "one.one.one.one");
        assert_eq!(dot.host, Host::<String>::Ipv4([1, 1, 1, 1].into()));
        let google = list
            .iter()
            .find(|t| t.input == "https://dns.google/dns-query")
            .expect("Google DoH");
        assert_eq!(
            (google.port, google.server_name.as_str()),
            (443, "dns.google")
        );
    }

    #[test]
    fn bad_files_name_the_field_or_line() {
        let err = |text: &str| parse_resolvers(text, "f.toml").expect_err(text).to_string();
        let e = err("[[resolver]]\nurl = \"udp://8.8.8.8:53\"\n");
        assert!(
            e.contains("resolver[0].url") && e.contains("neither https"),
            "{e}"
        );
        let e =
            err("[[resolver]]\nurl = \"https://a.example/\"\n[[resolver]]\nurl = \"not a url\"\n");
        assert!(e.contains("resolver[1].url"), "{e}");
        let e = err("[[resolver]]\nurl = \"dot://a.example/\"\naddresses = [\"1.2.3\"]\n");
        assert!(
            e.contains("resolver[0].addresses") && e.contains("\"1.2.3\""),
            "{e}"
        );
        let e = err("[[resolver]]\nurl = \"dot://a.example/\"\nsni = \"\"\n");
        assert!(e.contains("resolver[0].sni"), "{e}");
        let e = err("[[resolver]]\nurl = \"dot://a.example/\"\nport = 1\n");
        assert!(e.contains("f.toml") && e.contains("port"), "{e}");
        let e = err(
            "[[resolver]]\nurl = \"dot://a.example/\"\n[[resolver]]\nurl = \"dot://a.example/\"\n",
        );
        assert!(e.contains("listed twice"), "{e}");
        let e = err("");
        assert!(e.contains("no [[resolver]]"), "{e}");
        let e = err("[[resolver]]\nurl = \"https://user:pw@a.example/\"\n");
        assert!(e.contains("credentials"), "{e}");
        assert!(check_domain("example.org").is_ok());
        assert!(check_domain("").is_err());
        assert!(check_domain("1.2.3.4").is_err());
        let e = check_domain("bad..name").expect_err("empty label");
        assert!(e.starts_with("\"bad..name\" is not a domain name ("), "{e}");
    }
}
