#!/usr/bin/env python3
"""An independent verifier of a Vantage aggregator's transparency log (docs/transparency.md),
written from the specifications, not from the aggregator's code, with Python's standard library
only. aggregator/tests/log.rs runs it against a real server.

It checks, and prints one line per check ("ok ..." or "FAIL ..."):

1. the checkpoint (C2SP tlog-checkpoint) is a signed note (C2SP signed-note) whose Ed25519
   signature (RFC 8032 section 5.1.7, written out below) verifies with the aggregator's public
   key, under the key name and key ID the spec derives, and whose origin is the one derived
   from the key (vantage.invalid/ and the first 16 hex digits of SHA-256 of the key);
2. the Merkle tree served as C2SP tlog-tiles has the checkpoint's root: every level-0 tile is
   fetched, the root recomputed from its leaf hashes (RFC 6962 section 2.1), every hash of a
   higher level checked against the full tile below it, and every entry of the entry bundles
   hashed into the level-0 hash it must equal;
3. each witness given (--witness, its verifier key NAME+KEYID+BASE64 with signature type 0x04)
   has cosigned the checkpoint (C2SP tlog-cosignature/v1: a signature line of the witness's
   name and key ID, whose bytes are the key ID, an 8-byte big-endian timestamp and an Ed25519
   signature of "cosignature/v1\ntime <timestamp>\n" followed by the checkpoint's text);
4. each measurement given (its id and its signer's key) has an inclusion proof
   (GET /api/v1/log/proof/ID) that verifies against the checkpoint's root (RFC 9162 section
   2.1.3.2), for the leaf made from that id and key.

Usage: log_verify.py --base http://127.0.0.1:PORT --public-key BASE64
                     [--checkpoint FILE] [--measurements FILE] [--witness VKEY ...]
--checkpoint: verify against this saved checkpoint instead of the one served now.
--measurements: lines of "ID KEY" (hex id, base64 key) to prove.
Exits 0 when every check holds, 1 otherwise.
"""

import argparse
import base64
import hashlib
import json
import sys
import urllib.error
import urllib.request

# --- Ed25519 verification, RFC 8032 section 5.1 -------------------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(a, b):
    """Point addition in extended coordinates (RFC 8032 section 5.1.4)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s, point):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, point)
        point = _add(point, point)
        s >>= 1
    return q


def _equal(a, b):
    x1, y1, z1, _ = a
    x2, y2, z2, _ = b
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def _recover_x(y, sign):
    """RFC 8032 section 5.1.3, steps 2 to 4."""
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _decompress(s):
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


_GY = 4 * pow(5, P - 2, P) % P
_GX = _recover_x(_GY, 0)
G = (_GX, _GY, 1, _GX * _GY % P)


def ed25519_verify(public, message, signature):
    """RFC 8032 section 5.1.7: [8][S]B = [8]R + [8][k]A'."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decompress(public)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % L
    left = _mul(8, _mul(s, G))
    right = _mul(8, _add(r, _mul(k, a)))
    return _equal(left, right)


# --- RFC 6962 section 2.1 hashing ---------------------------------------------------------------


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(hashes):
    """The Merkle Tree Hash of leaves given by their leaf hashes (RFC 6962 section 2.1)."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# --- C2SP signed-note and tlog-checkpoint -------------------------------------------------------


def origin_of(public):
    return "vantage.invalid/" + hashlib.sha256(public).hexdigest()[:16]


def verify_checkpoint(note, public):
    """Returns (origin, size, root) of a checkpoint signed by `public`, or raises ValueError."""
    if "\n\n" not in note or not note.endswith("\n"):
        raise ValueError("not a signed note: no blank line before the signatures")
    text, sigs = note.rsplit("\n\n", 1)
    text += "\n"
    name = origin_of(public)
    key_id = hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]
    signed = False
    for line in sigs[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise ValueError(f"not a signature line: {line!r}")
        sig_name, _, blob = line[2:].partition(" ")
        raw = base64.b64decode(blob, validate=True)
        if sig_name != name or raw[:4] != key_id:
            continue
        if not ed25519_verify(public, text.encode(), raw[4:]):
            raise ValueError(f"the signature of {name} does not verify")
        signed = True
    if not signed:
        raise ValueError(f"no signature by {name}")
    lines = text.split("\n")
    if len(lines) < 4 or lines[0] != name:
        raise ValueError(f"origin {lines[0]!r} is not {name!r}")
    if not lines[1].isdigit() or str(int(lines[1])) != lines[1]:
        raise ValueError(f"size {lines[1]!r}")
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32:
        raise ValueError("the root is not 32 bytes")
    return name, int(lines[1]), root


def verify_cosignature(note, vkey):
    """Returns the timestamp of the C2SP tlog-cosignature/v1 of the witness of `vkey` on the
    checkpoint `note`, or raises ValueError."""
    name, key_id_hex, blob = vkey.split("+", 2)
    encoded = base64.b64decode(blob, validate=True)
    if len(encoded) != 33 or encoded[0] != 0x04:
        raise ValueError(f"{vkey!r} is not a cosignature/v1 verifier key")
    public = encoded[1:]
    key_id = hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4]
    if key_id.hex() != key_id_hex:
        raise ValueError(f"the key ID of {vkey!r} is not its name's and key's")
    text, sigs = note.rsplit("\n\n", 1)
    text += "\n"
    for line in sigs[:-1].split("\n"):
        sig_name, _, blob = line[2:].partition(" ")
        raw = base64.b64decode(blob, validate=True)
        if sig_name != name or raw[:4] != key_id:
            continue
        if len(raw) != 4 + 8 + 64:
            raise ValueError(f"the cosignature of {name} is not a timestamped Ed25519 signature")
        timestamp = int.from_bytes(raw[4:12], "big")
        message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
        if timestamp >= 2**63 or not ed25519_verify(public, message, raw[12:]):
            raise ValueError(f"the cosignature of {name} does not verify")
        return timestamp
    raise ValueError(f"no cosignature by {name}")


# --- C2SP tlog-tiles ----------------------------------------------------------------------------


def tile_index(n):
    """<N> as 3-digit groups, all but the last prefixed with x."""
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n > 0:
        groups.insert(0, f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(groups)


def tile_path(level, n, width):
    suffix = "" if width == 256 else f".p/{width}"
    return f"tile/{level}/{tile_index(n)}{suffix}"


# Proxies are never used: the log is read from the address given, on loopback in the tests.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(base, path):
    with OPENER.open(f"{base}/{path}", timeout=20) as answer:
        return answer.read()


class Report:
    def __init__(self):
        self.failed = 0

    def check(self, ok, what):
        print(("ok " if ok else "FAIL ") + what, flush=True)
        if not ok:
            self.failed += 1
        return ok


def tiles_of_level(base, level, size):
    """The hashes of `level`, fetched tile by tile, for a tree of `size` leaves."""
    count = size >> (8 * level)
    hashes = []
    for n in range((count + 255) // 256):
        width = min(256, count - n * 256)
        data = get(base, "log/" + tile_path(level, n, width))
        if len(data) != 32 * width:
            raise ValueError(f"{tile_path(level, n, width)} has {len(data)} bytes")
        hashes += [data[i : i + 32] for i in range(0, len(data), 32)]
    return hashes


def check_tree(base, size, root, report):
    try:
        leaves = tiles_of_level(base, 0, size)
    except (urllib.error.URLError, ValueError) as e:
        report.check(False, f"the level-0 tiles of a tree of {size}: {e}")
        return
    report.check(mth(leaves) == root, f"the root of the {size} leaf hashes of the tiles is the checkpoint's")
    level, below = 1, leaves
    while size >> (8 * level) > 0:
        try:
            upper = tiles_of_level(base, level, size)
        except (urllib.error.URLError, ValueError) as e:
            report.check(False, f"the level-{level} tiles: {e}")
            return
        wrong = [i for i, h in enumerate(upper) if h != mth(below[i * 256 : (i + 1) * 256])]
        report.check(not wrong, f"every level-{level} hash is the root of its full tile below (wrong: {wrong[:5]})")
        level, below = level + 1, upper
    wrong = []
    for n in range((size + 255) // 256):
        width = min(256, size - n * 256)
        path = "tile/entries/" + tile_index(n) + ("" if width == 256 else f".p/{width}")
        try:
            bundle = get(base, "log/" + path)
        except urllib.error.URLError as e:
            report.check(False, f"{path}: {e}")
            return
        entries, at = [], 0
        while at < len(bundle):
            length = int.from_bytes(bundle[at : at + 2], "big")
            entries.append(bundle[at + 2 : at + 2 + length])
            at += 2 + length
        if len(entries) != width:
            wrong.append(f"{path} holds {len(entries)} entries")
            continue
        for i, entry in enumerate(entries):
            if len(entry) != 64 or leaf_hash(entry) != leaves[n * 256 + i]:
                wrong.append(f"entry {n * 256 + i}")
    report.check(not wrong, f"every entry of the bundles hashes to its level-0 hash (wrong: {wrong[:5]})")


def check_proofs(base, measurements, size, root, report):
    proven = 0
    for mid, key in measurements:
        leaf = bytes.fromhex(mid) + base64.b64decode(key, validate=True)
        try:
            answer = json.loads(get(base, f"api/v1/log/proof/{mid}"))
        except urllib.error.HTTPError as e:
            report.check(False, f"proof of {mid}: HTTP {e.code} {e.read().decode(errors='replace')}")
            continue
        if answer.get("tree_size") != size:
            report.check(False, f"proof of {mid} is against a tree of {answer.get('tree_size')}, not {size}")
            continue
        path = [base64.b64decode(h, validate=True) for h in answer["inclusion_proof"]]
        if report.check(
            verify_inclusion(answer["leaf_index"], size, leaf_hash(leaf), path, root),
            f"leaf {answer['leaf_index']} ({mid[:12]}...) is included in the tree of {size}",
        ):
            proven += 1
    report.check(proven == len(measurements), f"{proven} of {len(measurements)} proofs verify")


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--base", required=True)
    args.add_argument("--public-key", required=True)
    args.add_argument("--checkpoint")
    args.add_argument("--measurements")
    args.add_argument("--witness", action="append", default=[])
    a = args.parse_args()
    base = a.base.rstrip("/")
    public = base64.b64decode(a.public_key, validate=True)
    report = Report()
    if a.checkpoint:
        with open(a.checkpoint, encoding="utf-8") as f:
            note = f.read()
    else:
        note = get(base, "log/checkpoint").decode("utf-8")
    try:
        origin, size, root = verify_checkpoint(note, public)
    except ValueError as e:
        report.check(False, f"checkpoint: {e}")
        return 1
    report.check(True, f"checkpoint of {origin} at size {size} is signed by the aggregator's key")
    for vkey in a.witness:
        try:
            when = verify_cosignature(note, vkey)
            report.check(True, f"cosigned by witness {vkey.split('+')[0]} at {when}")
        except ValueError as e:
            report.check(False, f"cosignature: {e}")
    check_tree(base, size, root, report)
    if a.measurements:
        with open(a.measurements, encoding="utf-8") as f:
            measurements = [line.split() for line in f if line.strip()]
        check_proofs(base, measurements, size, root, report)
    print(f"{report.failed} failed", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
