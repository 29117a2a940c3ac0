#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Run from anywhere: `python3 fuzz/seeds/make_seeds.py [OONI_WEBCONNECTIVITY_DIR]`. It needs the
`cryptography` package (Ed25519) and, for the OONI seeds, OONI's QA measurements (ooni/probe-cli
`internal/minipipeline/testdata/webconnectivity/generated/*/measurement.json`, default
tests/data/ooni/webconnectivity/ of this repository, tests/data/SOURCES.md); without them the
OONI seeds are left as they are.
The output is deterministic (Ed25519 signatures are), so re-running it changes nothing.

Envelopes are signed with the fuzz targets' fixed test key (fuzz/src/lib.rs,
TEST_SECRET_KEY_B64: the bytes 1 to 32), in exactly the form `Identity::seal` writes
(probe/src/envelope.rs): {"v":1,"key":...,"sig":...,"measurement":<the signed bytes>}.
"""

import base64
import json
import os
import struct
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FUZZ = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(FUZZ)
CORPUS = os.path.join(FUZZ, "corpus")
OONI = (
    sys.argv[1]
    if len(sys.argv) > 1
    else os.path.join(REPO, "tests", "data", "ooni", "webconnectivity")
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()

# The OONI QA measurements copied (each recorded in corpus/SOURCES.md).
OONI_FILES = [
    "generated-dnsBlockingNXDOMAIN.json",
    "generated-tcpBlockingConnectTimeout.json",
    "generated-tlsBlockingConnectionResetWithConsistentDNS.json",
    "generated-httpDiffWithConsistentDNS.json",
    "generated-dnsHijackingToProxyWithHTTPURL.json",
    "generated-successWithHTTPS.json",
]


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def seal(measurement_json):
    sig = base64.b64encode(KEY.sign(measurement_json.encode())).decode()
    return f'{{"v":1,"key":"{PUBLIC}","sig":"{sig}","measurement":{measurement_json}}}'


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def base(test_name, test_keys, input_=None, cc="IR", asn="AS197207"):
    return {
        "annotations": {"engine_name": "vantage", "platform": "linux"},
        "data_format_version": "0.2.0",
        "input": input_,
        "measurement_start_time": "2025-06-01 12:00:00",
        "probe_asn": asn,
        "probe_cc": cc,
        "probe_ip": "127.0.0.1",
        "software_name": "vantage",
        "software_version": "0.1.0",
        "test_keys": test_keys,
        "test_name": test_name,
        "test_runtime": 1.5,
        "test_version": "0.1.0",
    }


CANARY = base(
    "canary",
    {
        "checks": [
            {"target": "1.1.1.1:53", "protocol": "dns", "description": "resolver", "ok": True,
             "failure": None, "t": 0.05},
            {"target": "9.9.9.9:443", "protocol": "tcp", "description": "web", "ok": False,
             "failure": "generic_timeout_error", "t": 5.0},
        ],
        "ok": 1,
        "total": 2,
        "queries": [],
        "tcp_connect": [],
    },
)

THROTTLING = base(
    "throttling",
    {
        "server": "192.0.2.10:8443",
        "server_cert_sha256": "00" * 32,
        "control_sni": "example.org",
        "payload_bytes": 160000,
        "max_download_ms": 8000,
        "downloads": [
            {"sni": "twitter.com", "role": "target", "repetition": 0, "t0": 0.1, "ttfb_ms": 80,
             "ttlb_ms": 6100, "bytes": 160000, "complete": True, "failure": None,
             "samples": [[100, 2000], [1000, 26000], [6100, 160000]]},
            {"sni": "example.org", "role": "control", "repetition": 0, "t0": 6.3, "ttfb_ms": 70,
             "ttlb_ms": 900, "bytes": 160000, "complete": True, "failure": None,
             "samples": [[100, 20000], [900, 160000]]},
        ],
        "tcp_connect": [],
        "tls_handshakes": [],
    },
    input_="twitter.com",
)

HEARTBEAT = base("heartbeat", {}, cc="TR", asn="AS9121")


def ooni_measurements():
    out = []
    for name in OONI_FILES:
        path = os.path.join(OONI, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                out.append((name, f.read()))
    return out


def ingest_line(ooni):
    ours = [("canary", CANARY), ("throttling", THROTTLING), ("heartbeat", HEARTBEAT)]
    for name, m in ours:
        # The bare measurement (the target seals it) and the signed line (the target ingests
        # it as it is).
        write("ingest_line", f"{name}.json", compact(m))
        write("ingest_line", f"{name}.signed.jsonl", seal(compact(m)) + "\n")
    for name, text in ooni[:3]:
        m = compact(json.loads(text))
        stem = name.removesuffix(".json")
        write("ingest_line", f"ooni-{stem}.json", m)
        write("ingest_line", f"ooni-{stem}.signed.jsonl", seal(m) + "\n")
    body = "\r\n".join([seal(compact(CANARY)), "", "not json", seal(compact(HEARTBEAT)), ""])
    write("ingest_line", "body-three-lines.jsonl", body)


def ooni_measurement(ooni):
    for name, text in ooni:
        write("ooni_measurement", name, text)
    if len(ooni) >= 2:
        lines = "\n".join(compact(json.loads(t)) for _, t in ooni[:2]) + "\n"
        write("ooni_measurement", "two-measurements.jsonl", lines)
        write("ooni_measurement", "array.json",
              compact([json.loads(t) for _, t in ooni[:2]]))


# DNS (RFC 1035 section 4.1): header, one question, answers.
def name(host):
    out = b""
    for label in host.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def dns(id_, rcode, answers, qtype=1, flags=0x8180):
    header = struct.pack(">HHHHHH", id_, flags | rcode, 1, len(answers), 0, 0)
    q = name("example.org") + struct.pack(">HH", qtype, 1)
    rrs = b""
    for rtype, rdata in answers:
        rrs += b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, 300, len(rdata)) + rdata
    return header + q + rrs


def framed(id_, datagrams):
    out = struct.pack(">H", id_)
    for d in datagrams:
        out += struct.pack(">H", len(d)) + d
    return out


def dns_response():
    a = (1, bytes([93, 184, 216, 34]))
    injected = (1, bytes([10, 10, 34, 34]))
    aaaa = (28, bytes.fromhex("26062800022000010248189325c81946"))
    cname = (5, name("www.example.net"))
    write("dns_response", "a", framed(0x1234, [dns(0x1234, 0, [a])]))
    write("dns_response", "aaaa", framed(0x1234, [dns(0x1234, 0, [aaaa], qtype=28)]))
    write("dns_response", "cname-a", framed(7, [dns(7, 0, [cname, a])]))
    write("dns_response", "nxdomain", framed(7, [dns(7, 3, [])]))
    write("dns_response", "servfail-with-answer", framed(7, [dns(7, 2, [a])]))
    write("dns_response", "injected-then-real", framed(7, [dns(7, 0, [injected]), dns(7, 0, [a])]))
    write("dns_response", "wrong-id-then-real", framed(7, [dns(8, 0, [injected]), dns(7, 0, [a])]))
    write("dns_response", "query-not-response", framed(7, [dns(7, 0, [], flags=0x0100)]))
    write("dns_response", "truncated", framed(7, [dns(7, 0, [a])[:20]]))


HEADER = "url,category_code,category_description,date_added,source,notes"

# Written for these seeds; example and documentation domains only.
LIST = "\n".join([
    HEADER,
    "https://example.org/,NEWS,News Media,2025-01-01,vantage-fuzz,",
    'http://example.net/path?q=1,HUMR,Human Rights Issues,2025-01-02,vantage-fuzz,"a note, with a comma"',
    "https://www.example.com:8443/a/b,POLR,Political Criticism,2025-01-03,vantage-fuzz,",
    "http://[2001:db8::1]/,COMT,Communication Tools,2025-01-04,vantage-fuzz,",
    "https://xn--bcher-kva.example/,CULTR,Culture,2025-01-05,vantage-fuzz,",
    "",
])


def test_list_csv():
    write("test_list_csv", "good.csv", LIST)
    write("test_list_csv", "bom-crlf.csv", "\ufeff" + LIST.replace("\n", "\r\n"))
    write("test_list_csv", "bad-rows.csv", "\n".join([
        HEADER,
        "not a url,NEWS,News,2025,x,",
        "ftp://files.example/,FILE,File,2025,x,",
        "https://short.example/,NEWS",
        '"https://quoted.example/","NEWS","multi\nline",2025,x,',
        "",
    ]))
    write("test_list_csv", "header-only.csv", HEADER + "\n")


def signed_lists():
    doc = {
        "kind": "vantage-test-lists",
        "cc": "ir",
        "generated_at": "2025-06-01 12:00:00",
        "lists": {"global": LIST, "ir": HEADER + "\nhttps://example.ir/,NEWS,News,2025,x,\n"},
    }
    write("signed_lists", "lists.json", compact(doc))
    write("signed_lists", "lists.signed", seal(compact(doc)) + "\n")
    other = dict(doc, kind="something-else", lists={})
    write("signed_lists", "wrong-kind.signed", seal(compact(other)))
    bad = dict(doc, lists={"../x": "not a list"})
    write("signed_lists", "bad-list.json", compact(bad))


def th_request():
    ua = {"User-Agent": ["Mozilla/5.0"], "Accept": ["text/html"]}
    write("th_request", "https.json", compact({
        "http_request": "https://example.org/",
        "http_request_headers": ua,
        "tcp_connect": ["93.184.216.34:443", "[2606:2800:220:1:248:1893:25c8:1946]:443"],
        "x_quic_enabled": False,
    }))
    write("th_request", "http-port.json", compact({
        "http_request": "http://example.net:8080/a?b=c",
        "tcp_connect": ["192.0.2.1:8080", "not an endpoint", "[::1]:80"],
    }))
    write("th_request", "ip-literal.json", compact({"http_request": "http://[64:ff9b::c000:201]/"}))
    write("th_request", "bad-scheme.json", compact({"http_request": "ftp://example.org/"}))


def daemon_config():
    with open(os.path.join(REPO, "deploy", "vantage.toml"), encoding="utf-8") as f:
        shipped = f.read()
    write("daemon_config", "vantage.toml", shipped)
    write("daemon_config", "consent.toml", shipped.replace(
        "informed_consent = false", "informed_consent = true", 1))
    write("daemon_config", "full.toml", """informed_consent = true
data_dir = "/var/lib/vantage"

[aggregator]
url = "https://vantage.example.org/base"
ca_file = "/etc/vantage/ca.pem"
proxy = "127.0.0.1:9050"
key = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="

[network]
cc = "IR"
asn = "AS197207"

[lists]
countries = ["ir", "TR"]
files = ["/etc/vantage/local.csv", "/etc/vantage/other-list.csv"]
categories = ["NEWS", "HUMR"]
max_urls = 50
fetch = false

[schedule]
canary_seconds = 30
heartbeat_seconds = 60
run_seconds = 3600
run_jitter_seconds = 600
first_run_seconds = 0
refresh_seconds = 3600
upload_seconds = 60
upload_max_backoff_seconds = 600

[budget]
concurrency = 8
daily_megabytes = 50
body_cap_kilobytes = 256

[canary]
targets = "/etc/vantage/canaries.csv"
timeout_seconds = 3

[engine]
timeout_seconds = 15
dns_timeout_seconds = 5
resolver = "192.0.2.53:53"

[throttling]
targets = ["twitter.com", "www.example.org"]
every_seconds = 3600
control_sni = "example.org"
payload_bytes = 100000
repetitions = 2
max_download_seconds = 10
budget_bytes = 1000000
ratio = 0.5
""")


def main():
    ooni = ooni_measurements()
    ingest_line(ooni)
    ooni_measurement(ooni)
    dns_response()
    test_list_csv()
    signed_lists()
    th_request()
    daemon_config()
    print(f"seeds written under {CORPUS}; OONI measurements found: {len(ooni)}")


if __name__ == "__main__":
    main()
