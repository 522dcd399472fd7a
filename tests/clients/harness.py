"""Shared helpers of the client-matrix scripts (driven by tests/clients.rs).

Each script is run as `python tests/clients/<client>.py SPEC.json`. The spec, written by the Rust test, holds the
s3p endpoint, the API keys and what each one must see (computed from the seed), and the paths of the command-line
tools. A script runs every check, prints one `CHECK <name>: PASS|FAIL|N/A <detail>` line per check, and exits 1 if
any check failed (2 if it could not run at all), so that one failing check does not hide the others.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import traceback
import urllib.error
import urllib.request

INSTALL_HINT = (
    "install the Python clients with `.ci/run` (venv in ~/.cache/s3p/venv), or: "
    "python3 -m venv ~/.cache/s3p/venv && ~/.cache/s3p/venv/bin/pip install -r tests/requirements.txt, "
    "then set S3P_PYTHON=~/.cache/s3p/venv/bin/python"
)


def require(module):
    """Imports a client module, or exits 2 with how to install it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        print(f"MISSING CLIENT: cannot import {module} ({e}); {INSTALL_HINT}", flush=True)
        sys.exit(2)


# ---------------------------------------------------------------------------------------------------------------
# The Parquet data (written by make_parquet.py, read back by pyarrow, DuckDB and polars).

PARQUET_ROWS = 5000


def parquet_rows(part):
    """Deterministic rows of Parquet part `part`: (id, city, amount)."""
    cities = ["Z\u00fcrich", "S\u00e3o Paulo", "\u6771\u4eac", "New York", "Reykjav\u00edk", "Montr\u00e9al"]
    ids = [part * PARQUET_ROWS + i for i in range(PARQUET_ROWS)]
    return {
        "id": ids,
        "city": [cities[i % len(cities)] for i in ids],
        "amount": [round(i * 1.25, 2) for i in ids],
    }


def expected_rows(parts):
    """Rows of several parts, sorted by id, as a list of tuples."""
    out = []
    for p in parts:
        r = parquet_rows(p)
        out.extend(zip(r["id"], r["city"], r["amount"]))
    return sorted(out)


def part_of(key):
    """`sales/cities-1.parquet` -> 1 (the part number is the last number in the name)."""
    stem = key.rsplit("/", 1)[-1].split(".")[0]
    return int(stem.rsplit("-", 1)[-1])


# ---------------------------------------------------------------------------------------------------------------
# Checks.


class Matrix:
    def __init__(self, client, version):
        self.client = client
        self.failed = []
        print(f"CLIENT {client} {version}", flush=True)

    def check(self, name, fn):
        """Runs `fn()`; an exception or an AssertionError is a FAIL. `fn` may return a detail string."""
        try:
            detail = fn()
            print(f"CHECK {name}: PASS {detail or ''}".rstrip(), flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check runs
            msg = f"{type(e).__name__}: {e}"
            print(f"CHECK {name}: FAIL {msg}", flush=True)
            traceback.print_exc(file=sys.stderr)
            self.failed.append(name)

    def na(self, name, why):
        print(f"CHECK {name}: N/A {why}", flush=True)

    def done(self):
        if self.failed:
            print(f"{self.client}: {len(self.failed)} check(s) failed: {', '.join(self.failed)}", flush=True)
            sys.exit(1)
        print(f"{self.client}: all checks passed", flush=True)
        sys.exit(0)


def expect_eq(what, got, want):
    if got != want:
        extra = ""
        if isinstance(got, (set, frozenset)) and isinstance(want, (set, frozenset)):
            extra = f"; missing {sorted(want - got)}; unexpected {sorted(got - want)}"
        raise AssertionError(f"{what}: got {_short(got)}, want {_short(want)}{extra}")


def expect_bytes(what, got, want):
    if got != want:
        raise AssertionError(
            f"{what}: got {len(got)} bytes (sha256 {hashlib.sha256(got).hexdigest()[:16]}, starts {got[:40]!r}), "
            f"want {len(want)} bytes (sha256 {hashlib.sha256(want).hexdigest()[:16]}, starts {want[:40]!r})"
        )


def expect_denied(what, text):
    """A refusal as the client reports it: the status or the S3 code must be visible."""
    t = str(text)
    for wrong in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthorizationHeaderMalformed"):
        if wrong in t:
            raise AssertionError(f"{what}: refused for the wrong reason ({wrong}): {_short(t, 600)}")
    if not any(s in t for s in ("AccessDenied", "Access Denied", "ACCESS_DENIED", "403", "Forbidden")):
        raise AssertionError(f"{what}: refused, but not as AccessDenied/403: {_short(t, 600)}")


def expect_no_s3_error(what, text):
    """An empty answer must be an empty listing, not a refusal or a failure the client printed and went on."""
    t = str(text)
    for error in ("AccessDenied", "Access Denied", "InternalError", "ServiceUnavailable", "SignatureDoesNotMatch",
                  "InvalidAccessKeyId", "An error occurred", "status code: 403", "status code: 500",
                  "StatusCode: 403", "StatusCode: 500"):
        if error in t:
            raise AssertionError(f"{what}: the client reported {error}: {_short(t, 600)}")


def _short(v, n=400):
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


# ---------------------------------------------------------------------------------------------------------------
# The spec and subprocesses.


class Spec:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        self.raw = d
        self.endpoint = d["endpoint"]  # http://127.0.0.1:PORT/s3p
        self.host_port = d["host_port"]  # 127.0.0.1:PORT
        self.base_path = d["base_path"]  # /s3p
        self.bucket = d["bucket"]
        self.region = d["region"]
        self.workdir = d["workdir"]
        self.users = d["users"]  # name -> {key, secret, data_sources}
        self.list_user = d["list_user"]
        self.list_ds = d["list_ds"]
        self.list_sizes = d["list_keys"]  # virtual key (`<ds>/...`) -> size
        self.list_keys = set(self.list_sizes)
        self.downloads = [(x["user"], x["key"], base64.b64decode(x["b64"])) for x in d["downloads"]]
        self.denied_user = d["denied"]["user"]
        self.denied_key = d["denied"]["key"]
        self.denied_ds = d["denied"]["ds"]
        # A download the denied user may make: the positive control of every refusal check.
        self.control = next(x for x in self.downloads if x[0] == self.denied_user)
        self.parquet = d["parquet"]
        self.tools = d["tools"]
        # The writable s3p (tests/clients.rs `writable()`): alice may write `write_ds` there, bob may not.
        extra = d.get("extra", {})
        self.write_endpoint = extra.get("write_endpoint")
        self.write_host_port = extra.get("write_host_port")
        self.write_https_endpoint = extra.get("write_https_endpoint")
        self.write_ca = extra.get("write_ca")
        self.write_ds = extra.get("write_ds")

    def user(self, name):
        u = self.users[name]
        return u["key"], u["secret"]

    def root_dirs(self, name):
        return set(self.users[name]["data_sources"])

    def url(self, vkey):
        """s3://bucket/key."""
        return f"s3://{self.bucket}/{vkey}"

    def path(self, name):
        p = os.path.join(self.workdir, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p


def payload(n, seed):
    """Deterministic pseudo-random bytes (a misplaced byte cannot go unnoticed)."""
    out = bytearray()
    block = hashlib.sha256(f"s3p write {seed}".encode()).digest()
    while len(out) < n:
        out.extend(block)
        block = hashlib.sha256(block).digest()
    return bytes(out[:n])


def write_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def load_spec():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} SPEC.json", flush=True)
        sys.exit(2)
    return Spec(sys.argv[1])


def run(argv, env=None, check=True, timeout=120):
    """Runs a command; returns (rc, stdout bytes, stderr text). With check, a non-zero rc raises."""
    try:
        p = subprocess.run(argv, env=env, capture_output=True, timeout=timeout)
    except FileNotFoundError as e:
        raise AssertionError(f"cannot run {argv[0]}: {e}") from e
    err = p.stderr.decode("utf-8", "replace")
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}: {_short(err, 1500)}")
    return p.returncode, p.stdout, err


def http_get(url):
    """A plain HTTP GET (no S3 client, no proxy): returns (status, body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_put(url, body, headers=None):
    """A plain HTTP PUT (no S3 client, no proxy, no default Content-Type: SigV2 signs it): returns
    (status, body)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    target = u.path + (f"?{u.query}" if u.query else "")
    conn.request("PUT", target, body=body, headers={"Content-Length": str(len(body)), **(headers or {})})
    r = conn.getresponse()
    status, answer = r.status, r.read()
    conn.close()
    return status, answer


def fetch_presigned(what, url, want):
    """Fetches a presigned URL with plain HTTP and compares the body."""
    if not url.startswith("http://"):
        raise AssertionError(f"{what}: not an http URL: {url}")
    status, body = http_get(url)
    if status != 200:
        raise AssertionError(f"{what}: GET {url} -> {status}: {body[:600]!r}")
    expect_bytes(what, body, want)


def presign_kind(url):
    """'v2' for SigV2 query auth, 'v4' for SigV4 query auth."""
    if "X-Amz-Signature=" in url and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url:
        return "v4"
    if "Signature=" in url and "AWSAccessKeyId=" in url and "Expires=" in url:
        return "v2"
    return "unknown"


def fetch_denied_presigned(what, url):
    status, body = http_get(url)
    if status != 403 or b"<Code>AccessDenied</Code>" not in body:
        raise AssertionError(f"{what}: want 403 AccessDenied, got {status}: {body[:600]!r}")
