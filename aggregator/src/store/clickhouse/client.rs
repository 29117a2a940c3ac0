//! The HTTP client of the ClickHouse store: the store address, SQL string literals and one
//! statement per POST, with errors that name the server, the operation and its answer.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::super::DbError;
use super::ClickHouse;

/// How long to wait for a connection: the database is near (loopback or the same network).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement may take, answer included: a search over billions of rows is
/// seconds; anything near this is a server in trouble.
pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// The parts of `clickhouse://HOST:PORT/DB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Address {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) db: String,
}

/// Parses `clickhouse://HOST:PORT/DB`: a host name or IP address (IPv6 in brackets), a port and
/// one database name of ASCII letters, digits and `_`; nothing else (no user, path, query or
/// fragment), so that what is not understood is refused rather than ignored.
pub(super) fn parse_address(url: &str) -> Result<Address, String> {
    const FORM: &str = "expected clickhouse://HOST:PORT/DB";
    let rest = url
        .strip_prefix("clickhouse://")
        .ok_or_else(|| format!("{FORM}: the address must start with clickhouse://"))?;
    let (authority, db) = rest
        .split_once('/')
        .ok_or_else(|| format!("{FORM}: no database name"))?;
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("{FORM}: no port after the host"))?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if !host_ok {
        return Err(format!("{FORM}: {host:?} is not a host name or IP address"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{FORM}: {port:?} is not a port (1 to 65535)"))?;
    if db.is_empty() || db.len() > 64 || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "{FORM}: the database name {db:?} must be 1 to 64 ASCII letters, digits or _"
        ));
    }
    Ok(Address {
        host: host.to_string(),
        port,
        db: db.to_string(),
    })
}

/// `s` as a ClickHouse string literal: single quotes, with backslash escapes for the quote,
/// the backslash and the control characters (ClickHouse SQL "String literals").
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Lower-case hex of `bytes`, for cursors.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of lower-case or upper-case hex, if it is hex of UTF-8.
pub(super) fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// At most the first 500 characters of an answer, for an error message.
fn excerpt(text: &str) -> &str {
    let text = text.trim_end();
    match text.char_indices().nth(500) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

impl ClickHouse {
    /// One statement; the answer's body on success. `in_db`: run it in this store's database
    /// (everything but creating it).
    pub(super) fn post(&self, op: &str, in_db: bool, body: &str) -> Result<String, DbError> {
        self.post_with(op, in_db, body, "")
    }

    /// [`Self::post`] with query settings (`&name=value...`) in the URL, where every version
    /// takes them (18.16 has no `SETTINGS` clause in a SELECT).
    pub(super) fn post_with(
        &self,
        op: &str,
        in_db: bool,
        body: &str,
        settings: &str,
    ) -> Result<String, DbError> {
        // Unquoted 64-bit numbers in JSON whatever the server's profile says.
        let mut url = format!(
            "{}?output_format_json_quote_64bit_integers=0{settings}",
            self.endpoint
        );
        // Room for a long query, a duplicate check's list of ids: the default
        // `max_query_size` is 256 KiB. Not for an INSERT, whose rows after `FORMAT` are data
        // read as a stream, not query text; a larger limit would make the server copy the
        // whole body before parsing it.
        if body.len() > 200_000 && !body.starts_with("INSERT") {
            url.push_str(&format!("&max_query_size={}", body.len() + 1));
        }
        if in_db {
            url.push_str("&database=");
            url.push_str(&self.db);
        }
        let mut response = self
            .agent
            .post(&url)
            .send(body)
            .map_err(|e| self.error(op, format!("cannot reach the server: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_string()
            .map_err(|e| self.error(op, format!("HTTP {status}, answer cut short: {e}")))?;
        if status != 200 {
            return Err(self.error(op, format!("HTTP {status}: {}", excerpt(&text))));
        }
        Ok(text)
    }

    /// A statement in this store's database.
    pub(super) fn execute(&self, op: &str, sql: &str) -> Result<String, DbError> {
        self.post(op, true, sql)
    }

    /// The rows a SELECT answers, each read as `T` from JSONEachRow.
    pub(super) fn rows<T: DeserializeOwned>(&self, op: &str, sql: &str) -> Result<Vec<T>, DbError> {
        self.rows_with(op, sql, "")
    }

    /// [`Self::rows`] with query settings (see [`Self::post_with`]).
    pub(super) fn rows_with<T: DeserializeOwned>(
        &self,
        op: &str,
        sql: &str,
        settings: &str,
    ) -> Result<Vec<T>, DbError> {
        let text = self.post_with(op, true, &format!("{sql} FORMAT JSONEachRow"), settings)?;
        // An error raised after the answer began streaming arrives as text after the rows, with
        // status 200 already sent: it does not parse, and its text is the message.
        serde_json::Deserializer::from_str(&text)
            .into_iter::<T>()
            .collect::<Result<Vec<T>, _>>()
            .map_err(|e| self.error(op, format!("unreadable answer ({e}): {}", excerpt(&text))))
    }

    /// Inserts `rows` into `table` in one statement (one part on the server).
    pub(super) fn insert_rows<T: Serialize>(
        &self,
        op: &str,
        table: &str,
        rows: &[T],
    ) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut body = format!("INSERT INTO {table} FORMAT JSONEachRow\n");
        for row in rows {
            let line = serde_json::to_string(row)
                .map_err(|e| self.error(op, format!("encoding a row: {e}")))?;
            body.push_str(&line);
            body.push('\n');
        }
        self.execute(op, &body).map(|_| ())
    }

    pub(super) fn error(&self, op: &str, message: String) -> DbError {
        DbError::ClickHouse {
            at: self.at.clone(),
            op: op.to_string(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use super::*;

    #[test]
    fn addresses_are_parsed_strictly() {
        assert_eq!(
            parse_address("clickhouse://127.0.0.1:8123/vantage_1"),
            Ok(Address {
                host: "127.0.0.1".into(),
                port: 8123,
                db: "vantage_1".into()
            })
        );
        assert_eq!(
            parse_address("clickhouse://[::1]:9000/v").map(|a| a.host),
            Ok("[::1]".into())
        );
        for (bad, why) in [
            ("http://127.0.0.1:8123/db", "must start with clickhouse://"),
            ("clickhouse://127.0.0.1:8123", "no database name"),
            ("clickhouse://127.0.0.1/db", "no port"),
            ("clickhouse://127.0.0.1:99999/db", "is not a port"),
            ("clickhouse://127.0.0.1:0/db", "is not a port"),
            ("clickhouse://127.0.0.1:8123/", "database name \"\""),
            ("clickhouse://127.0.0.1:8123/db;DROP", "database name"),
            ("clickhouse://127.0.0.1:8123/db/more", "database name"),
            ("clickhouse://127.0.0.1:8123/db?x=1", "database name"),
            ("clickhouse://user:pw@127.0.0.1:8123/db", "not a host name"),
            ("clickhouse://ho st:8123/db", "not a host name"),
            ("clickhouse://[zz]:8123/db", "not a host name"),
        ] {
            let err = parse_address(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_bad_address_is_refused_before_any_connection() {
        let err = ClickHouse::open("clickhouse://127.0.0.1:8123/db;drop").expect_err("bad");
        assert_eq!(
            err.to_string(),
            "ClickHouse clickhouse://127.0.0.1:8123/db;drop: reading the store address: \
             expected clickhouse://HOST:PORT/DB: the database name \"db;drop\" must be 1 to 64 \
             ASCII letters, digits or _"
        );
    }

    #[test]
    fn an_unreachable_server_is_named_in_the_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let err = ClickHouse::open(&format!("clickhouse://127.0.0.1:{port}/v"))
            .expect_err("nothing listens");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "ClickHouse 127.0.0.1:{port}/v: creating the database: cannot reach the server:"
            )),
            "{text}"
        );
    }

    #[test]
    fn a_server_answering_500_gives_its_status_and_message() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "Code: 243, e.displayText() = DB::Exception: Cannot reserve 1.00 MiB, not enough space";
            let _ = write!(
                s,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        let err = ClickHouse::open(&format!("clickhouse://127.0.0.1:{port}/v")).expect_err("500");
        answer.join().expect("fake server");
        assert_eq!(
            err.to_string(),
            format!(
                "ClickHouse 127.0.0.1:{port}/v: creating the database: HTTP 500: Code: 243, \
                 e.displayText() = DB::Exception: Cannot reserve 1.00 MiB, not enough space"
            )
        );
    }

    #[test]
    fn a_missing_table_is_a_clear_error() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        server.query("DROP TABLE v.envelopes").expect("drop");
        let err = db.envelope("x").expect_err("no table");
        let text = err.to_string();
        assert!(
            text.contains("reading an envelope: HTTP 404: Code: 60")
                && text.contains("v.envelopes doesn't exist"),
            "{text}"
        );
    }
}
