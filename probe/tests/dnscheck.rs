//! `vantage run --test dnscheck` as a volunteer runs it: the summary it prints, what it keeps,
//! and how it refuses a bad resolvers file or domain before sending anything. Loopback only.

use std::process::{Command, Output};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::tcp::closed_port;
use vantage_fixtures::tls::{TestCa, TlsFixture};

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");

async fn vantage(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(VANTAGE)
            .args(&args)
            .output()
            .expect("run vantage")
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-dnscheck-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_summary_names_each_resolver_its_verdict_and_the_failed_step() {
    let dir = tempdir("summary");
    let ca = TestCa::new("resolvers CA");
    let ca_path = dir.join("ca.pem");
    ca.write_pem(&ca_path);
    // The CA parses as the probe will read it.
    assert!(CertificateDer::from_pem_slice(ca.pem().as_bytes()).is_ok());
    let doh = TlsFixture::doh(
        &ca.leaf(&["doh.test"]),
        vec![(
            "example.net",
            Behaviour::Answer(vec![[192, 0, 2, 7].into()]),
        )],
    )
    .await;
    let dns = DnsFixture::start(vec![(
        "doh.test",
        Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
    )])
    .await;
    let closed = closed_port();
    let list = dir.join("resolvers.toml");
    std::fs::write(
        &list,
        format!(
            "[[resolver]]\nurl = \"https://doh.test:{}/dns-query\"\noperator = \"Loopback DoH\"\n\n\
             [[resolver]]\nurl = \"dot://{closed}/\"\nsni = \"dot.test\"\n",
            doh.addr.port()
        ),
    )
    .expect("write list");
    let data = dir.join("data");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["run", "--test", "dnscheck", "--yes", "--no-upload"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--resolvers-file".into(), list.display().to_string()]);
        a.extend(["--resolver".into(), dns.addr.to_string()]);
        a.extend(["--ca-file".into(), ca_path.display().to_string()]);
        a.extend(["--data-dir".into(), data.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let out = vantage(args(&["--domain", "example.net"])).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let doh_line = format!(
        "https://doh.test:{}/dns-query [Loopback DoH]: working",
        doh.addr.port()
    );
    let expected = [
        doh_line.as_str(),
        &format!(
            "  https://127.0.0.1:{}/dns-query: answered 192.0.2.7",
            doh.addr.port()
        ),
        &format!("dot://{closed}/: BLOCKED (tcp_ip)"),
        &format!("  dot://{closed}: connect failed: connection_refused"),
        "Checked 2 resolvers: 1 working, 1 blocked, 0 undetermined.",
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, expected, "{stdout}");
    assert!(
        text(&out.stderr).contains("Checking 2 resolvers with a lookup of example.net."),
        "{}",
        text(&out.stderr)
    );

    // Both are kept, signed, waiting for upload, with their verdicts.
    let out = vantage(vec![
        "results".into(),
        "list".into(),
        "--json".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let doh_row = rows
        .iter()
        .find(|r| r["input"] == format!("https://doh.test:{}/dns-query", doh.addr.port()))
        .expect("the DoH result");
    assert_eq!(doh_row["accessible"], true, "{rows:?}");
    assert_eq!(doh_row["blocking"], false, "{rows:?}");
    let dot_row = rows
        .iter()
        .find(|r| r["input"] == format!("dot://{closed}/"))
        .expect("the DoT result");
    assert_eq!(dot_row["blocking"], "tcp_ip", "{rows:?}");
    assert!(rows.iter().all(|r| r["upload"] == "pending"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_file_or_domain_is_refused_before_anything_is_sent() {
    let dir = tempdir("refused");
    let data = dir.join("data");
    let run = |extra: Vec<String>| {
        let mut a: Vec<String> = ["run", "--test", "dnscheck", "--yes", "--no-upload"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--data-dir".into(), data.display().to_string()]);
        a.extend(extra);
        vantage(a)
    };
    let cases = [
        (
            "[[resolver]]\nurl = \"udp://127.0.0.1:53/\"\n",
            "resolver[0].url: \"udp://127.0.0.1:53/\": scheme \"udp\" is neither https (DoH) nor dot (DoT)",
        ),
        (
            "[[resolver]]\nurl = \"dot://127.0.0.1/\"\naddresses = [\"localhost\"]\n",
            "resolver[0].addresses: \"localhost\" is not an IP address",
        ),
        (
            "[[resolvers]]\nurl = \"dot://127.0.0.1/\"\n",
            "unknown field `resolvers`",
        ),
    ];
    for (i, (body, message)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad{i}.toml"));
        std::fs::write(&file, body).expect("write");
        let out = run(vec!["--resolvers-file".into(), file.display().to_string()]).await;
        assert_eq!(out.status.code(), Some(2), "{body}");
        let err = text(&out.stderr);
        assert!(err.contains(message), "{body}: {err}");
        assert!(out.stdout.is_empty(), "{body}");
    }
    let out = run(vec!["--domain".into(), "two..dots".into()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--domain: \"two..dots\" is not a domain name"),
        "{}",
        text(&out.stderr)
    );
    // Refused before anything started: not even the probe's key was made.
    assert!(!data.join("identity.key").exists());
}
