#!/usr/bin/env python3
"""The s3p benchmark (issues 7 and 13): direct backend vs nginx proxy_pass vs bare pingora vs s3p, all on
loopback.

Run it through bench/run, which installs nginx and wrk, builds s3p and bench/loadgen, and calls this script
with the binaries. Everything this script starts runs in its own process group, is listed in <work>/pids
(bench/run kills what is left from there) and is stopped in a `finally`; each child also gets SIGTERM if
this script dies. Standard library only.

Output (in --out): results.jsonl (one JSON line per cell, target and round), table.md (medians and ratios),
machine.json.
"""

import argparse
import ctypes
import http.client
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

# ---------------------------------------------------------------- constants

API_KEY, API_SECRET = "bench-api-key", "bench-api-secret-0123456789"
LEGACY_KEY = "bench-legacy-key"  # no secret: the legacy `Authorization: AWS <key>:immuta` header (cell 1c)
LIST_KEY, LIST_SECRET = "bench-lister-key", "bench-lister-secret-0123456789"
GARAGE_KEY = "GK0123456789abcdef01234567"
GARAGE_SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
BACKEND_KEY, BACKEND_SECRET = "nginx-ignores-this", "nginx-ignores-this-too-0123456789"
BUCKET = "bench"            # the directory nginx serves as /<bucket>/<key>
LIST_BUCKET = "bench-list"  # Garage bucket for listings
DS, LIST_DS = "bench", "list"
SMALL_COUNT, SMALL_SIZE = 1000, 4096
MID_COUNT, MID_SIZE = 16, 1 << 20
PUT_COUNT = 64
BIG_SIZE = 256 << 20
HUGE_SIZE = 4 << 30
LIST_KEYS = 10_000

# Each cell's load: (tool, connections, wrk threads, object set, timeout s)
LOAD_CELLS = {
    "1a_get4k_presigned": ("wrk", 16, 2, "small", 10),
    "1b_get4k_signed": ("loadgen", 16, 0, "small", 10),
    "1c_get4k_legacy": ("wrk", 16, 2, "small", 10),
    "2_get1m": ("wrk", 4, 2, "mid", 30),
    "3_get256m": ("wrk", 1, 1, "big", 60),
    "4_latency_1conn": ("wrk", 1, 1, "small", 10),
    # Uploads: 1 MiB PUTs (s3p: presigned SigV4 PUT URLs into a writable data source).
    "8_put1m": ("wrk", 4, 2, "put", 30),
    # Like 1a, but one GET in five asks for a key that does not exist (404).
    "9_get4k_miss20": ("wrk", 16, 2, "small_miss", 10),
}
# bare: examples/bare_pingora.rs, a pingora ProxyHttp with nothing but `upstream_peer` and s3p's settings.
PROXY_TARGETS = ["direct", "nginx_buf", "nginx_nobuf", "bare", "s3p"]

WRK_LUA = r"""
-- Cycles through a file of request paths (one per line); prints a JSON summary.
local paths = {}
local idx = 0
local method, body = "GET", nil
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  if args[2] ~= nil then
    -- PUT the content of this file to every path.
    local f = io.open(args[2], "rb")
    body = f:read("*a")
    f:close()
    method = "PUT"
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  idx = math.random(#paths)
end
function request()
  idx = idx % #paths + 1
  return wrk.format(method, paths[idx], nil, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"bytes":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def cpu_ticks(pid, which=(11, 12)):
    """utime + stime of a process (all threads), in clock ticks; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(fields[i]) for i in which)
    except (OSError, IndexError):
        return 0


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def machine_cpu():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


def machine_busy(seconds):
    b0, t0 = machine_cpu()
    time.sleep(seconds)
    b1, t1 = machine_cpu()
    return (b1 - b0) / max(1, t1 - t0)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def set_pdeathsig():
    # The child gets SIGTERM if this script dies, however it dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


# ---------------------------------------------------------------- the bench


class Bench:
    def __init__(self, a):
        self.a = a
        self.work = os.path.abspath(a.work)
        self.out = os.path.abspath(a.out)
        os.makedirs(self.out, exist_ok=True)
        self.results = open(os.path.join(self.out, "results.jsonl"), "a")
        self.procs = {}
        self.pidfile = os.path.join(self.work, "pids")
        self.rows = []  # every result line, for the table
        self.started = time.time()
        self.deadline = self.started + a.time_limit
        self.retries = 0

    # ---- processes

    def spawn(self, name, cmd, env=None, logname=None):
        logf = open(os.path.join(self.work, logname or f"{name}.log"), "ab")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                             start_new_session=True, preexec_fn=set_pdeathsig)
        self.procs[name] = p
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def restart(self, name):
        p = self.procs.pop(name)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        self.start_s3p(name, port=getattr(self, f"port_{name}"))

    def stop_all(self):
        for name, p in reversed(list(self.procs.items())):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for name, p in self.procs.items():
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self.procs.clear()

    def run_tool(self, cmd, timeout, stdin_data=None):
        """Runs a client; returns (stdout, client CPU seconds)."""
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run(cmd, input=stdin_data, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=set_pdeathsig)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        return p.stdout, p.stderr, cpu

    # ---- set-up

    def make_data(self):
        www = os.path.join(self.work, "www", BUCKET)
        self.www = os.path.dirname(www)
        for d in ("small", "mid", "big", "huge"):
            os.makedirs(os.path.join(www, d), exist_ok=True)
        rnd = random.Random(7)
        for i in range(SMALL_COUNT):
            with open(os.path.join(www, "small", f"obj-{i:05d}"), "wb") as f:
                f.write(rnd.randbytes(SMALL_SIZE))
        block = rnd.randbytes(MID_SIZE)
        for i in range(MID_COUNT):
            with open(os.path.join(www, "mid", f"obj-{i:03d}"), "wb") as f:
                f.write(block[i:] + block[:i])
        with open(os.path.join(www, "big", "obj-256m"), "wb") as f:
            for i in range(BIG_SIZE // MID_SIZE):
                f.write(block)
        with open(os.path.join(www, "huge", "obj-4g"), "wb") as f:
            f.truncate(HUGE_SIZE)  # sparse: nginx reads zeros from the page cache
        self.put_body = os.path.join(self.work, "put-body")
        with open(self.put_body, "wb") as f:
            f.write(block)
        self.objects = {
            "put": [f"put/obj-{i:03d}" for i in range(PUT_COUNT)],
            "small": [f"small/obj-{i:05d}" for i in range(SMALL_COUNT)],
            "small_miss": [f"small/obj-{i:05d}" if i % 5 else f"small/missing-{i:05d}" for i in range(SMALL_COUNT)],
            "mid": [f"mid/obj-{i:03d}" for i in range(MID_COUNT)],
            "big": ["big/obj-256m"],
            "huge": ["huge/obj-4g"],
        }

    def nginx_common(self, name):
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""
        temp = "\n".join(f"  {t}_temp_path {d}/{t}_temp;" for t in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return d, f"""
{user}
worker_processes {self.a.workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  default_type application/octet-stream;
{temp}
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
"""

    def start_backend(self):
        self.port_backend = free_port()
        d, head = self.nginx_common("nginx-backend")
        conf = head + f"""
  access_log off;
  open_file_cache max=10000 inactive=300s;
  server {{
    listen 127.0.0.1:{self.port_backend} reuseport backlog=4096;
    root {self.www};
    client_max_body_size 8m;
    location / {{ }}
    # Uploads (cell 7): written to disk as a WebDAV PUT; 201 or 204.
    location /{BUCKET}/put/ {{
      dav_methods PUT;
      create_full_put_path on;
      client_body_in_single_buffer on;
      client_body_buffer_size 2m;
    }}
  }}
}}
"""
        with open(f"{d}/nginx.conf", "w") as f:
            f.write(conf)
        p = self.spawn("nginx-backend", [self.a.nginx, "-p", d, "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"])
        wait_port(self.port_backend, p, "nginx backend")

    def start_nginx_proxy(self):
        self.port_nginx_buf, self.port_nginx_nobuf = free_port(), free_port()
        d, head = self.nginx_common("nginx-proxy")

        def server(port, buffering):
            return f"""
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering {buffering};
      proxy_request_buffering {buffering};
      client_max_body_size 8m;
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;
      proxy_max_temp_file_size 0;
    }}
  }}"""
        conf = head + f"""
  access_log {d}/access.log combined buffer=64k flush=1s;
  upstream backend {{
    server 127.0.0.1:{self.port_backend};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }}
{server(self.port_nginx_buf, "on")}
{server(self.port_nginx_nobuf, "off")}
}}
"""
        with open(f"{d}/nginx.conf", "w") as f:
            f.write(conf)
        p = self.spawn("nginx-proxy", [self.a.nginx, "-p", d, "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"])
        wait_port(self.port_nginx_buf, p, "nginx proxy")
        wait_port(self.port_nginx_nobuf, p, "nginx proxy")

    def start_garage(self):
        d = os.path.join(self.work, "garage")
        os.makedirs(d, exist_ok=True)
        rpc, self.port_garage, admin = free_port(), free_port(), free_port()
        with open(f"{d}/garage.toml", "w") as f:
            f.write(f"""metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{os.urandom(32).hex()}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{self.port_garage}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{os.urandom(16).hex()}"
""")
        env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=GARAGE_KEY, GARAGE_DEFAULT_SECRET_KEY=GARAGE_SECRET,
                   GARAGE_DEFAULT_BUCKET=LIST_BUCKET, RUST_LOG="warn")
        p = self.spawn("garage", [self.a.garage, "-c", f"{d}/garage.toml", "server", "--single-node",
                                  "--default-bucket"], env=env)
        wait_port(self.port_garage, p, "Garage")
        # The bucket exists once the S3 API answers; seeding retries a few times meanwhile.
        for attempt in range(20):
            try:
                out, _, _ = self.run_tool(
                    [self.a.loadgen, "put", "--host", f"127.0.0.1:{self.port_garage}", "--path", f"/{LIST_BUCKET}",
                     "--prefix", "data/part-", "--count", str(LIST_KEYS), "--size", "16", "--conns", "8",
                     "--key", GARAGE_KEY, "--secret", GARAGE_SECRET, "--region", "garage"], timeout=300)
                log(f"Garage seeded with {LIST_KEYS} keys: {out.strip()}")
                return
            except RuntimeError as e:
                if attempt == 19:
                    raise
                time.sleep(0.5)

    def proxy_config(self, d, port):
        """s3p's proxy.yaml (bare pingora reads the same file: its threads, limits and the `web` backend)."""
        path = f"{d}/proxy.yaml"
        with open(path, "w") as f:
            f.write(f"""listen: 127.0.0.1:{port}
base_path: /s3p
bucket: immuta
token_secret: bench-token-secret-0123456789
threads: {self.a.workers}
audit_log: {d}/audit.log
limits: {{ {", ".join(kv.replace("=", ": ", 1) for kv in self.a.s3p_limit)} }}
backends:
  web:
    endpoint: http://127.0.0.1:{self.port_backend}
    region: us-east-1
    access_key_id: {BACKEND_KEY}
    secret_access_key: {BACKEND_SECRET}
  garage:
    endpoint: http://127.0.0.1:{self.port_garage}
    region: garage
    access_key_id: {GARAGE_KEY}
    secret_access_key: {GARAGE_SECRET}
data_sources:
  {DS}: {{ backend: web, bucket: {BUCKET}, writable: true }}
  {LIST_DS}: {{ backend: garage, bucket: {LIST_BUCKET} }}
api_keys:
  - id: {API_KEY}
    secret: {API_SECRET}
    name: Bench
    data_sources: {{ {DS}: write }}
  - id: {LEGACY_KEY}
    name: Bench legacy header
    data_sources: [{DS}]
  - id: {LIST_KEY}
    secret: {LIST_SECRET}
    name: Lister
    data_sources: [{LIST_DS}]
""")
        return path

    def start_s3p(self, name="s3p", port=None):
        """s3p, or (name "s3p_mem") a second instance with the same configuration that serves only cell 6."""
        port = port or free_port()
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        config = self.proxy_config(d, port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_EC2_METADATA_DISABLED="true", RUST_LOG=self.a.s3p_log)
        env.update(kv.split("=", 1) for kv in self.a.s3p_env)
        p = self.spawn(name, [self.a.s3p, "--config", config], env=env, logname=f"{name}/s3p.log")
        wait_port(port, p, name)
        setattr(self, f"port_{name}", port)
        log(f"{name} listening on {port}, RSS {rss_kib(p.pid) / 1024:.1f} MiB")

    def start_bare(self):
        """Bare pingora on s3p's configuration, forwarding every request unchanged to the nginx backend."""
        self.port_bare = free_port()
        d = os.path.join(self.work, "bare")
        os.makedirs(d, exist_ok=True)
        config = self.proxy_config(d, self.port_bare)
        p = self.spawn("bare", [self.a.bare, "--config", config, "--backend", "web"],
                       env=dict(os.environ, RUST_LOG="warn"), logname="bare/bare.log")
        wait_port(self.port_bare, p, "bare pingora")
        log(f"bare pingora listening on {self.port_bare}")

    def write_paths(self):
        """Per target and object set, a file of request paths (s3p: presigned SigV4 URLs)."""
        pdir = os.path.join(self.work, "paths")
        os.makedirs(pdir, exist_ok=True)
        self.paths = {}
        pool = {"small": self.a.presigned_pool, "small_miss": self.a.presigned_pool, "mid": 2000, "big": 200,
                "huge": 4, "put": 2000}
        for objset, keys in self.objects.items():
            plain = [f"/{BUCKET}/{k}" for k in keys]
            virtual = [f"/s3p/immuta/{DS}/{k}" for k in keys]
            self.paths[("plain", objset)] = self._write(pdir, f"plain-{objset}", plain)
            self.paths[("virtual", objset)] = self._write(pdir, f"virtual-{objset}", virtual)
            out, _, _ = self.run_tool(
                [self.a.loadgen, "presign", "--host", f"127.0.0.1:{self.port_s3p}", "--key", API_KEY,
                 "--secret", API_SECRET, "--expires", "7200", "--count", str(pool[objset]),
                 "--method", "PUT" if objset == "put" else "GET"],
                timeout=120, stdin_data="\n".join(virtual) + "\n")
            urls = out.split()
            assert len(set(urls)) == len(urls) == pool[objset], "presigned URLs must be distinct"
            self.paths[("presigned", objset)] = self._write(pdir, f"presigned-{objset}", urls)
            if objset in ("small", "huge"):
                out, _, _ = self.run_tool(
                    [self.a.loadgen, "presign", "--host", f"127.0.0.1:{self.port_s3p_mem}", "--key", API_KEY,
                     "--secret", API_SECRET, "--expires", "7200", "--count", str(min(2000, pool[objset]))],
                    timeout=120, stdin_data="\n".join(virtual) + "\n")
                self.paths[("presigned_mem", objset)] = self._write(pdir, f"presigned-mem-{objset}", out.split())
        self.lua = os.path.join(pdir, "cycle.lua")
        with open(self.lua, "w") as f:
            f.write(WRK_LUA)

    @staticmethod
    def _write(d, name, lines):
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write("\n".join(lines) + "\n")
        return p

    def port_of(self, target):
        return {"direct": self.port_backend, "nginx_buf": self.port_nginx_buf, "nginx_nobuf": self.port_nginx_nobuf,
                "bare": self.port_bare, "s3p": self.port_s3p, "s3p_mem": self.port_s3p_mem}[target]

    def http_get(self, target, path, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port_of(target), timeout=30)
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body

    def http_request(self, target, method, path, body):
        c = http.client.HTTPConnection("127.0.0.1", self.port_of(target), timeout=30)
        c.request(method, path, body=body)
        r = c.getresponse()
        answer = r.read()
        c.close()
        return r.status, answer

    def preflight(self):
        """The targets serve the same bytes, and s3p really authenticates."""
        key = self.objects["small"][3]
        want = open(os.path.join(self.www, BUCKET, key), "rb").read()
        for t in ("direct", "nginx_buf", "nginx_nobuf", "bare"):
            st, body = self.http_get(t, f"/{BUCKET}/{key}")
            assert st == 200 and body == want, f"{t}: {st}, {len(body)} bytes"
        # Uploads: every target takes a 1 MiB PUT, and s3p's lands on the backend byte for byte.
        put = open(self.put_body, "rb").read()
        for t, path in (("direct", f"/{BUCKET}/put/preflight-direct"), ("nginx_buf", f"/{BUCKET}/put/preflight-nginx"),
                        ("s3p", open(self.paths[("presigned", "put")]).read().split()[0])):
            st, body = self.http_request(t, "PUT", path, put)
            assert st in (200, 201, 204), f"{t} PUT: {st} {body[:300]!r}"
        key = self.objects["put"][0]
        with open(os.path.join(self.www, BUCKET, key), "rb") as f:
            assert f.read() == put, "s3p's PUT did not land on the backend byte for byte"
        key = self.objects["small"][3]
        presigned = open(self.paths[("presigned", "small")]).read().split()[3]
        st, body = self.http_get("s3p", presigned)
        assert st == 200 and body == want, f"s3p presigned: {st} {body[:300]!r}"
        st, body = self.http_get("s3p", f"/s3p/immuta/{DS}/{key}", {"Authorization": f"AWS {LEGACY_KEY}:immuta"})
        assert st == 200 and body == want, f"s3p legacy header: {st} {body[:300]!r}"
        missing = open(self.paths[("presigned", "small_miss")]).read().split()[0]
        st, body = self.http_get("s3p", missing)
        assert st == 404 and b"NoSuchKey" in body, f"s3p, a missing key: {st} {body[:300]!r}"
        st, _ = self.http_get("s3p", f"/s3p/immuta/{DS}/{key}")
        assert st == 403, f"s3p without credentials answered {st}"
        tampered = presigned[:-4] + ("0000" if not presigned.endswith("0000") else "1111")
        st, body = self.http_get("s3p", tampered)
        assert st == 403 and b"SignatureDoesNotMatch" in body, f"s3p with a bad signature answered {st}"
        log("preflight: same bytes from every target (s3p: presigned and legacy header); a missing key is 404; "
            "s3p refuses unsigned (403) and tampered (403) requests")

    # ---- measurements

    def subject_pids(self, target):
        if target in ("s3p", "bare"):
            return [self.procs[target].pid]
        if target.startswith("nginx"):
            return children(self.procs["nginx-proxy"].pid) + [self.procs["nginx-proxy"].pid]
        return []

    def backend_pids(self):
        p = self.procs["nginx-backend"].pid
        return children(p) + [p]

    def load_run(self, cell, target, duration):
        tool, conns, threads, objset, timeout = LOAD_CELLS[cell]
        port = self.port_of(target)
        host = f"127.0.0.1:{port}"
        legacy = cell.startswith("1c") and target == "s3p"
        if tool == "wrk":
            kind = "plain" if target != "s3p" else "virtual" if legacy else "presigned"
            headers = ["-H", f"Authorization: AWS {LEGACY_KEY}:immuta"] if legacy else []
            cmd = [self.a.wrk, f"-t{threads}", f"-c{conns}", f"-d{duration}s", f"--timeout={timeout}s",
                   *headers, "-s", self.lua, f"http://{host}/", "--", self.paths[(kind, objset)]]
            if objset == "put":
                cmd.append(self.put_body)
        else:
            kind = "virtual" if target == "s3p" else "plain"
            cmd = [self.a.loadgen, "get", "--host", host, "--conns", str(conns), "--duration", str(duration),
                   "--paths", self.paths[(kind, objset)], "--sign", "header", "--key", API_KEY,
                   "--secret", API_SECRET, "--timeout", str(timeout)]
        subj, back = self.subject_pids(target), self.backend_pids()
        s0 = sum(cpu_ticks(p) for p in subj)
        su0 = sum(cpu_ticks(p, (11,)) for p in subj)
        b0 = sum(cpu_ticks(p) for p in back)
        m0 = machine_cpu()
        la = loadavg()
        t0 = time.time()
        out, err, client_cpu = self.run_tool(cmd, timeout=duration + timeout + 30)
        wall = time.time() - t0
        m1 = machine_cpu()
        s1 = sum(cpu_ticks(p) for p in subj)
        su1 = sum(cpu_ticks(p, (11,)) for p in subj)
        b1 = sum(cpu_ticks(p) for p in back)
        if tool == "wrk":
            line = next((l for l in out.splitlines() if l.startswith("WRKJSON ")), None)
            if line is None:
                raise RuntimeError(f"wrk printed no summary: {out} {err}")
            w = json.loads(line[len("WRKJSON "):])
            secs = w["duration_us"] / 1e6
            # Uploads move their bodies the other way: count what was sent (wrk counts what came back).
            moved = w["requests"] * MID_SIZE if objset == "put" else w["bytes"]
            errors = sum(w[k] for k in w if k.startswith("errors_"))
            misses = None
            if objset == "small_miss":
                # The 404s are what this cell asks for (wrk counts every status >= 400); about one in five.
                misses = w["errors_status"]
                errors -= misses
                if not 0.1 < misses / max(1, w["requests"]) < 0.3:
                    errors += 1
                    log(f"  WARNING {cell} {target}: {misses} of {w['requests']} requests missed, not about 20%")
            res = dict(requests=w["requests"], bytes=moved, duration_s=round(secs, 3),
                       rps=w["requests"] / secs, mb_s=moved / secs / 1e6, p50_us=w["p50_us"],
                       p90_us=w["p90_us"], p99_us=w["p99_us"], max_us=w["max_us"], mean_us=w["mean_us"],
                       errors=errors, errors_status=w["errors_status"], misses=misses)
        else:
            g = json.loads(out.strip().splitlines()[-1])
            res = dict(requests=g["requests"], bytes=g["bytes"], duration_s=g["duration_s"], rps=g["rps"],
                       mb_s=g["mb_s"], p50_us=g["p50_us"], p90_us=g["p90_us"], p99_us=g["p99_us"],
                       max_us=g["max_us"], mean_us=g["mean_us"], errors=g["io_errors"] + g["status_errors"],
                       errors_status=g["status_errors"])
        subject_cpu = (s1 - s0) / CLK_TCK if subj else None
        backend_cpu = (b1 - b0) / CLK_TCK
        machine_busy_s = (m1[0] - m0[0]) / CLK_TCK
        res.update(
            cell=cell, target=target, tool=tool, conns=conns, auth=(
                "legacy-header" if legacy else
                "presigned-sigv4" if target == "s3p" and tool == "wrk" else
                "sigv4-header-per-request" if tool == "loadgen" else "none"),
            subject_cpu_s=subject_cpu, subject_user_cpu_s=(su1 - su0) / CLK_TCK if subj else None,
            backend_cpu_s=backend_cpu, client_cpu_s=round(client_cpu, 3),
            # CPU used on the machine by anything else than this run's processes (other users' builds...)
            foreign_cpu_s=round(machine_busy_s - (subject_cpu or 0) - backend_cpu - client_cpu, 2),
            machine_busy=round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 3), loadavg1=la, wall_s=round(wall, 2),
            s3p_rss_kib=rss_kib(self.procs["s3p"].pid))
        if subject_cpu is not None and res["requests"]:
            res["cpu_ms_per_1k_req"] = subject_cpu * 1000 / res["requests"] * 1000
        if subject_cpu is not None and res["bytes"]:
            res["cpu_s_per_gib"] = subject_cpu / (res["bytes"] / (1 << 30))
        if res["errors"]:
            log(f"  WARNING {cell} {target}: {res['errors']} errors ({err.strip()[-300:]})")
        return res

    def listing_run(self, target, walks):
        extra = []
        if target == "direct_url":
            # What s3p itself asks its backend: the same listing with URL-encoded keys, each page resumed
            # after the last key (information only).
            extra = ["--encoding-type", "url", "--resume", "start-after"]
        if target in ("direct", "direct_url"):
            host, path, key, secret, region = f"127.0.0.1:{self.port_garage}", f"/{LIST_BUCKET}", GARAGE_KEY, \
                GARAGE_SECRET, "garage"
        else:
            host, path, key, secret, region = f"127.0.0.1:{self.port_s3p}", "/s3p/immuta", LIST_KEY, \
                LIST_SECRET, "us-east-1"
        g_pid = self.procs["garage"].pid
        s0 = cpu_ticks(self.procs["s3p"].pid)
        g0 = cpu_ticks(g_pid)
        out, _, client_cpu = self.run_tool(
            [self.a.loadgen, "list", "--host", host, "--path", path, "--key", key, "--secret", secret, "--region",
             region, "--max-keys", "1000", "--walks", str(walks)] + extra, timeout=300)
        r = json.loads(out.strip().splitlines()[-1])
        assert r["keys"] == LIST_KEYS, f"{target} listed {r['keys']} keys"
        s3p_cpu = (cpu_ticks(self.procs["s3p"].pid) - s0) / CLK_TCK
        return dict(cell="5_list10k", target=target, seconds=r["median_s"], min_s=r["min_s"], walks=r["walks"],
                    pages=r["pages"], keys=r["keys"], garage_cpu_s=(cpu_ticks(g_pid) - g0) / CLK_TCK,
                    s3p_cpu_s=s3p_cpu if target == "s3p" else None, loadavg1=loadavg())

    def slow_reader(self, target, seconds, rate):
        """s3p RSS while one client reads the 4 GiB object at `rate` bytes/s."""
        pid = self.procs[target].pid
        port = self.port_of(target)
        path = open(self.paths[("presigned" if target == "s3p" else "presigned_mem", "huge")]).read().split()[0]
        before = rss_kib(pid)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        got, samples = 0, []
        t0 = time.time()
        next_sample = t0
        head = b""
        while True:
            now = time.time()
            if now - t0 >= seconds:
                break
            if now >= next_sample:
                samples.append((round(now - t0, 2), rss_kib(pid)))
                next_sample += 0.25
            # Pace the reads: never ahead of `rate`.
            ahead = got - rate * (now - t0)
            if ahead > 0:
                time.sleep(min(0.05, ahead / rate))
                continue
            chunk = s.recv(64 * 1024)
            if not chunk:
                break
            if not head:
                head = chunk[:12]
            got += len(chunk)
        s.close()
        elapsed = time.time() - t0
        rss = [r for _, r in samples]
        settled = [r for t, r in samples if t >= 1.0] or rss
        return dict(cell="6a_rss_slow_reader", target=target, status_line=head.decode(errors="replace"),
                    bytes_read=got, seconds=round(elapsed, 2), read_mb_s=round(got / elapsed / 1e6, 2),
                    rss_before_kib=before, rss_max_kib=max(rss), rss_min_kib=min(rss),
                    rss_after_1s_kib=settled[0], rss_end_kib=rss[-1],
                    rss_growth_after_1s_kib=max(settled) - settled[0],
                    samples=samples[:: max(1, len(samples) // 40)])

    def idle_connections(self, target, count, hold):
        """RSS with `count` idle keep-alive connections that each made one authenticated GET."""
        port = self.port_of(target)
        if target.startswith("s3p"):
            pids = [self.procs[target].pid]
            paths = open(self.paths[("presigned" if target == "s3p" else "presigned_mem", "small")]).read().split()
        else:
            pids = children(self.procs["nginx-proxy"].pid)
            paths = open(self.paths[("plain", "small")]).read().split()
        before = sum(rss_kib(p) for p in pids)
        socks, ok = [], 0
        try:
            for i in range(count):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                buf = b""
                while b"\r\n\r\n" not in buf:
                    c = s.recv(65536)
                    if not c:
                        break
                    buf += c
                head, _, body = buf.partition(b"\r\n\r\n")
                length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n")
                               if l.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    c = s.recv(65536)
                    if not c:
                        break
                    body += c
                if head.startswith(b"HTTP/1.1 200") and len(body) == length:
                    ok += 1
                socks.append(s)
            time.sleep(hold)
            alive = 0
            for s in socks:  # still open (not closed by the server)?
                s.setblocking(False)
                try:
                    alive += 1 if s.recv(1) != b"" else 0
                except BlockingIOError:
                    alive += 1
            with_conns = sum(rss_kib(p) for p in pids)
        finally:
            for s in socks:
                s.close()
        time.sleep(0.5)
        after = sum(rss_kib(p) for p in pids)
        return dict(cell="6b_rss_1000_idle", target=target.replace("_buf", ""), connections=count, ok=ok,
                    still_open=alive, rss_before_kib=before, rss_with_conns_kib=with_conns,
                    rss_after_close_kib=after,
                    per_conn_kib=round((with_conns - before) / count, 2))

    # ---- driver

    def emit(self, rnd, res):
        res = dict(res, round=rnd, ts=round(time.time(), 1), quick=self.a.quick)
        for k, v in list(res.items()):
            if isinstance(v, float):
                res[k] = round(v, 3)
        self.results.write(json.dumps(res) + "\n")
        self.results.flush()
        self.rows.append(res)
        return res

    def wait_quiet(self, max_wait=None):
        """Waits (bounded) until other work on the machine uses little CPU."""
        max_wait = self.a.max_wait if max_wait is None else max_wait
        waited = 0.0
        busy = machine_busy(1.0)
        while busy > self.a.max_busy and waited < max_wait and time.time() < self.deadline - 300:
            log(f"  machine busy ({busy:.0%} of all cores used by others); waiting")
            time.sleep(4)
            waited += 5
            busy = machine_busy(1.0)
        return busy, waited

    def run(self):
        a = self.a
        log(f"work dir {self.work}; results in {self.out}")
        self.make_data()
        self.start_backend()
        self.start_nginx_proxy()
        self.start_garage()
        self.start_s3p()
        self.start_s3p("s3p_mem")
        self.start_bare()
        for t in ("s3p", "s3p_mem"):
            self.emit(0, dict(cell="6_rss_at_start", target=t, rss_kib=rss_kib(self.procs[t].pid)))
        self.write_paths()
        self.preflight()
        with open(os.path.join(self.out, "machine.json"), "w") as f:
            json.dump(machine_info(a), f, indent=1)
        cells = [c for c in LOAD_CELLS if self.selected(c)]
        log("warm-up")
        for t in PROXY_TARGETS:
            for c in ("1a_get4k_presigned", "2_get1m", "3_get256m", "8_put1m"):
                self.load_run(c, t, 1)
        if a.perf:
            self.profile(a.perf.split(","))
            return 0
        last_round = 0.0
        for rnd in range(1, a.rounds + 1):
            if rnd > 1 and time.time() + last_round > self.deadline:
                log(f"stopping before round {rnd}: it would end past the time limit ({a.time_limit}s)")
                break
            round_started = time.time()
            busy, waited = self.wait_quiet()
            log(f"round {rnd}/{a.rounds} (others' CPU before: {busy:.0%}, waited {waited:.0f}s, "
                f"{time.time() - self.started:.0f}s elapsed)")
            for ci, cell in enumerate(cells):
                k = (rnd + ci) % len(PROXY_TARGETS)
                order = PROXY_TARGETS[k:] + PROXY_TARGETS[:k]
                for t in order:
                    dur = a.duration_big if cell == "3_get256m" else a.duration
                    r = self.load_run(cell, t, dur)
                    if (r["foreign_cpu_s"] > a.max_foreign * r["wall_s"] and self.retries < a.max_retries
                            and time.time() + last_round / 4 < self.deadline):
                        # Other work took CPU during this run: keep it (marked), wait, and measure again.
                        self.retries += 1
                        self.emit(rnd, dict(r, discarded=True, others_busy_before=busy))
                        log(f"  {cell:20s} {t:12s} discarded: others used {r['foreign_cpu_s']} CPU-s; again")
                        busy, _ = self.wait_quiet(20)
                        r = self.load_run(cell, t, dur)
                    r = self.emit(rnd, dict(r, others_busy_before=busy))
                    log(f"  {cell:20s} {t:12s} {r['rps']:9.0f} req/s {r['mb_s']:8.1f} MB/s "
                        f"p50 {r['p50_us']:6d}us p99 {r['p99_us']:7d}us cpu {r['subject_cpu_s']}s "
                        f"foreign {r['foreign_cpu_s']}s")
            if self.selected("5_list10k"):
                for t in (["direct", "s3p", "direct_url"] if rnd % 2 else ["s3p", "direct", "direct_url"]):
                    r = self.emit(rnd, self.listing_run(t, a.list_walks))
                    log(f"  5_list10k            {t:12s} {r['seconds']:.3f}s (median of {len(r['walks'])} walks, "
                        f"{r['pages']} pages)")
            if self.selected("6_memory"):
                # A new s3p_mem process each round: cell 6 on a fresh process, and on the one that served the rest.
                self.restart("s3p_mem")
                for t in ("s3p_mem", "s3p"):
                    r = self.emit(rnd, self.slow_reader(t, a.slow_seconds, a.slow_rate))
                    log(f"  6a_rss_slow_reader   {t:12s} {r['status_line']!r} read {r['bytes_read'] >> 20} MiB at "
                        f"{r['read_mb_s']} MB/s; RSS {r['rss_before_kib'] / 1024:.1f} -> max "
                        f"{r['rss_max_kib'] / 1024:.1f} MiB, growth after 1s {r['rss_growth_after_1s_kib']} KiB")
                for t in ("s3p_mem", "s3p", "nginx_buf"):
                    r = self.emit(rnd, self.idle_connections(t, a.idle_conns, a.idle_hold))
                    log(f"  6b_rss_1000_idle     {r['target']:12s} {r['ok']} ok, {r['still_open']} open: RSS "
                        f"{r['rss_before_kib'] / 1024:.1f} -> {r['rss_with_conns_kib'] / 1024:.1f} MiB "
                        f"({r['per_conn_kib']} KiB/conn)")
            self.emit_cpu(rnd)
            last_round = time.time() - round_started
        table = render_table(self.rows, machine_info(a), a)
        with open(os.path.join(self.out, "table.md"), "w") as f:
            f.write(table)
        print(table)
        log(f"done in {time.time() - self.started:.0f}s; {self.out}/results.jsonl, {self.out}/table.md")
        failed = [f"{r['cell']}/{r['target']}/round {r['round']}: {r['errors']} errors"
                  for r in self.rows if r.get("errors")]
        failed += [f"{r['cell']}/{r['target']}: {r['ok']} of {r['connections']} requests ok"
                   for r in self.rows if r.get("ok") is not None and r["ok"] != r["connections"]]
        if failed:
            log("FAILED requests (the numbers above are not trustworthy): " + "; ".join(failed))
            return 1
        return 0

    def profile(self, cells):
        """perf record (cpu-clock, DWARF call graphs) of s3p during one load run per cell; reports in --out."""
        pid = self.procs["s3p"].pid
        for cell in cells:
            cell = "5_list10k" if cell.startswith("5") else next(c for c in LOAD_CELLS if c.startswith(cell))
            data = os.path.join(self.work, f"perf-{cell}.data")
            rec = subprocess.Popen([self.a.perf_bin, "record", "-e", "cpu-clock", "-F", str(self.a.perf_freq), "-g",
                                    "--call-graph", "dwarf,16384", "-p", str(pid), "-o", data],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=set_pdeathsig)
            time.sleep(1)
            if cell == "5_list10k":
                r = self.listing_run("s3p", 20)
                what = f"{r['seconds']:.3f}s per walk"
            else:
                r = self.load_run(cell, "s3p", self.a.duration)
                what = f"{r['rps']:.0f} req/s, {r['mb_s']:.1f} MB/s"
            rec.send_signal(signal.SIGINT)
            rec.wait(timeout=120)
            log(f"perf {cell}: {what} under perf")
            for name, extra in (("self", ["--no-children", "--sort", "dso,symbol"]),
                                ("children", ["--children", "--sort", "symbol"])):
                rep = subprocess.run([self.a.perf_bin, "report", "-i", data, "--stdio", "-g", "none",
                                      "--percent-limit", "0.3"] + extra, capture_output=True, text=True)
                path = os.path.join(self.out, f"perf-{cell}-{name}.txt")
                with open(path, "w") as f:
                    f.write(rep.stdout)
                log(f"  {path}")
            rep = subprocess.run([self.a.perf_bin, "report", "-i", data, "--stdio", "--no-children",
                                  "-g", "caller,0.5,callee,function,percent", "--percent-limit", "1"],
                                 capture_output=True, text=True)
            with open(os.path.join(self.out, f"perf-{cell}-callers.txt"), "w") as f:
                f.write(rep.stdout)

    def selected(self, cell):
        return not self.a.cells or any(cell.startswith(c) for c in self.a.cells.split(","))

    def emit_cpu(self, rnd):
        """Cell 7, derived from this round's load runs: CPU per 1,000 requests and per GiB."""
        for t in ("s3p", "bare", "nginx_buf", "nginx_nobuf", "direct"):
            rows = {r["cell"]: r for r in self.rows if r.get("round") == rnd and r.get("target") == t
                    and r["cell"] in LOAD_CELLS and not r.get("discarded")}
            if not rows:
                continue
            key = "subject_cpu_s" if t != "direct" else "backend_cpu_s"

            def per_1k(c):
                r = rows.get(c)
                return r[key] * 1e6 / r["requests"] if r and r["requests"] else None

            def per_gib(c):
                r = rows.get(c)
                return r[key] / (r["bytes"] / (1 << 30)) if r and r["bytes"] else None
            self.emit(rnd, dict(cell="7_cpu", target=t if t != "direct" else "direct_backend",
                                cpu_ms_per_1k_req_presigned=per_1k("1a_get4k_presigned"),
                                cpu_ms_per_1k_req_signed=per_1k("1b_get4k_signed"),
                                cpu_ms_per_1k_req_legacy=per_1k("1c_get4k_legacy"),
                                cpu_ms_per_1k_req_miss20=per_1k("9_get4k_miss20"),
                                cpu_s_per_gib_1m=per_gib("2_get1m"), cpu_s_per_gib_256m=per_gib("3_get256m")))


def machine_info(a):
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    git = lambda *args: subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "?"
    if git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"):
        commit += "+uncommitted changes"
    return dict(s3p_commit=commit, s3p_binary_mtime=time.strftime(
                    "%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(a.s3p))),
                cores=os.cpu_count(), cpu_model=model, mem_mib=mem, kernel=platform.release(),
                nginx=subprocess.run([a.nginx, "-v"], capture_output=True, text=True).stderr.strip(),
                wrk=(subprocess.run([a.wrk, "-v"], capture_output=True, text=True).stdout.splitlines() or ["?"])[0],
                workers=a.workers, rounds=a.rounds, duration_s=a.duration, quick=a.quick,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


# ---------------------------------------------------------------- the table


def render_table(rows, m, a):
    def med(cell, target, field):
        return median([r.get(field) for r in rows if r["cell"] == cell and r["target"] == target
                       and not r.get("discarded")])

    def fmt(v, nd=0):
        if v is None:
            return "–"
        if nd == 0:
            return f"{v:,.0f}"
        return f"{v:,.{nd}f}"

    def ratio(x, y):
        return f"{x / y:.2f}x" if x is not None and y else "–"

    def verdict(ok):
        return "–" if ok is None else ("**met**" if ok else "**missed**")

    lines = []
    lines.append(f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['mem_mib']} MiB, Linux {m['kernel']}; "
                 f"{m['nginx']}, {m['wrk']}; {m['date']}; s3p {m['s3p_commit']} (built {m['s3p_binary_mtime']}). "
                 f"Shared machine: other work may have run at the same "
                 f"time (see `foreign_cpu_s` in results.jsonl).")
    lines.append(f"Rounds: {len({r['round'] for r in rows if r['round']})} ({'quick' if a.quick else 'full'}; {a.duration}s per "
                 f"load run, {a.duration_big}s for 256 MiB), medians. nginx reference: the faster of "
                 f"`proxy_buffering on` / `off` per cell. s3p threads = nginx workers = {a.workers}. "
                 f"Load runs measured again because other processes took CPU: "
                 f"{sum(1 for r in rows if r.get('discarded'))}.")
    lines.append("")
    lines.append("Targets (issue 13) are ratios to bare pingora in the same run: s3p's CPU per request ≤ 1.35x in 1c "
                 "and ≤ 1.6x in 1a/1b, req/s ≥ 0.75x in 1c and ≥ 0.65x in 1a/1b, p99 ≤ 2x in every cell, added "
                 "p50 at one connection ≤ bare's + 25 µs, 1 MiB and 256 MiB ≥ 0.95x with CPU-s/GiB ≤ 1.1x; 20% "
                 "misses within 10% of the all-hit cell 1a.")
    lines.append("")
    lines.append("| cell | metric | direct | nginx proxy_pass | bare pingora | s3p | s3p/bare | s3p/nginx | target |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---|")

    def ref(cell, by, higher=True):
        b, n = med(cell, "nginx_buf", by), med(cell, "nginx_nobuf", by)
        if b is None and n is None:
            return None, "–"
        if n is None or (b is not None and ((b >= n) if higher else (b <= n))):
            return "nginx_buf", "buffering on"
        return "nginx_nobuf", "buffering off"

    titles = {
        "1a_get4k_presigned": ("1a. 4 KiB GET, 16 conns, s3p presigned URLs (wrk)", 0.65),
        "1b_get4k_signed": ("1b. 4 KiB GET, 16 conns, every request SigV4-signed (loadgen)", 0.65),
        "1c_get4k_legacy": ("1c. 4 KiB GET, 16 conns, s3p legacy header (wrk)", 0.75),
        "2_get1m": ("2. 1 MiB GET, 4 conns (wrk)", 0.95),
        "3_get256m": ("3. 256 MiB GET, 1 conn (wrk)", 0.95),
        "8_put1m": ("8. 1 MiB PUT, 4 conns, s3p presigned PUT URLs (wrk)", None),
        "9_get4k_miss20": ("9. 4 KiB GET, 16 conns, 20% missing keys, s3p presigned URLs (wrk)", None),
    }
    for cell, (title, want) in titles.items():
        if not any(r["cell"] == cell for r in rows):
            continue
        main = "rps" if cell.startswith(("1", "9")) else "mb_s"
        nt, nlabel = ref(cell, main)
        d, n, b, s = (med(cell, t, main) for t in ("direct", nt, "bare", "s3p"))
        unit = "req/s" if main == "rps" else "MB/s"
        if want is not None:
            target = f"≥ {want}x bare: {verdict(s >= want * b if s is not None and b else None)}"
        elif cell.startswith("9"):
            hit = med("1a_get4k_presigned", "s3p", "rps")
            target = (f"≥ 0.9x s3p's 1a ({fmt(hit)}): {verdict(s >= 0.9 * hit if s is not None and hit else None)}")
        else:
            target = "–"
        lines.append(f"| {title} | {unit} (nginx: {nlabel}) | {fmt(d)} | {fmt(n)} | {fmt(b)} | {fmt(s)} | "
                     f"{ratio(s, b)} | {ratio(s, n)} | {target} |")
        if cell != "3_get256m":
            for f in ("p50_us", "p99_us"):
                d, n, b, s = (med(cell, t, f) for t in ("direct", nt, "bare", "s3p"))
                target = (f"≤ 2x bare: {verdict(s <= 2 * b if s is not None and b else None)}"
                          if f == "p99_us" else "")
                lines.append(f"| | {f.replace('_us', '')} µs | {fmt(d)} | {fmt(n)} | {fmt(b)} | {fmt(s)} | "
                             f"{ratio(s, b)} | {ratio(s, n)} | {target} |")
    cell = "4_latency_1conn"
    if any(r["cell"] == cell for r in rows):
        nt, nlabel = ref(cell, "p50_us", higher=False)
        for f in ("p50_us", "p99_us"):
            d, n, b, s = (med(cell, t, f) for t in ("direct", nt, "bare", "s3p"))
            added = {t: (v - d if v is not None and d is not None else None)
                     for t, v in (("nginx", n), ("bare", b), ("s3p", s))}
            if f == "p50_us":
                ok = added["s3p"] <= added["bare"] + 25 if added["s3p"] is not None and added["bare"] is not None \
                    else None
                target = f"added ≤ bare's + 25 µs: {verdict(ok)}"
            else:
                target = f"≤ 2x bare: {verdict(s <= 2 * b if s is not None and b else None)}"
            lines.append(f"| 4. 1 conn, 4 KiB, s3p presigned (wrk) | {f.replace('_us', '')} µs (nginx: {nlabel}) | "
                         f"{fmt(d)} | {fmt(n)} | {fmt(b)} | {fmt(s)} | {ratio(s, b)} | {ratio(s, n)} | {target} |")
            lines.append(f"| | added {f.replace('_us', '')} µs over direct | 0 | {fmt(added['nginx'])} | "
                         f"{fmt(added['bare'])} | {fmt(added['s3p'])} | | | |")
    cell = "5_list10k"
    if any(r["cell"] == cell for r in rows):
        d, s = med(cell, "direct", "seconds"), med(cell, "s3p", "seconds")
        ok = s <= 1.25 * d if s is not None and d else None
        lines.append(f"| 5. list 10,000 keys, pages of 1,000 (Garage) | seconds | {fmt(d, 3)} | – | – | {fmt(s, 3)} | "
                     f"– | – | ≤ 1.25x direct ({ratio(s, d)}): {verdict(ok)} |")
    labels = {"s3p_mem": "new s3p process", "s3p": "the s3p that served all cells before"}
    cell = "6a_rss_slow_reader"
    for t in ("s3p_mem", "s3p"):
        rs = [r for r in rows if r["cell"] == cell and r["target"] == t]
        if not rs:
            continue
        before = med(cell, t, "rss_before_kib") / 1024
        mx = med(cell, t, "rss_max_kib") / 1024
        gr = max(r["rss_growth_after_1s_kib"] for r in rs) / 1024
        rate = med(cell, t, "read_mb_s")
        ok = (mx < 64 and gr < 4) if t == "s3p_mem" else gr < 4
        lines.append(f"| 6a. RSS streaming a 4 GiB object to a slow reader ({fmt(rate, 1)} MB/s), {labels[t]} | "
                     f"MiB before → max while streaming (largest growth after the first second) | – | – | – | "
                     f"{fmt(before, 1)} → {fmt(mx, 1)} ({fmt(gr, 1)}) | – | – | "
                     f"{'flat, < 64 MiB' if t == 's3p_mem' else 'flat'}: {verdict(ok)} |")
    cell = "6b_rss_1000_idle"
    n = med(cell, "nginx", "rss_with_conns_kib")
    np_ = med(cell, "nginx", "per_conn_kib")
    n0 = med(cell, "nginx", "rss_after_close_kib")
    for t in ("s3p_mem", "s3p"):
        s = med(cell, t, "rss_with_conns_kib")
        if s is None:
            continue
        sp = med(cell, t, "per_conn_kib")
        ok = s / 1024 < 64
        after = med(cell, t, "rss_after_close_kib")
        lines.append(f"| 6b. RSS with 1,000 idle keep-alive conns, {labels[t]} | MiB (KiB per conn; MiB after "
                     f"they close) | – | {fmt(n and n / 1024, 1)} ({fmt(np_, 1)}; {fmt(n0 and n0 / 1024, 1)}) | – | "
                     f"{fmt(s / 1024, 1)} ({fmt(sp, 1)}; {fmt(after / 1024, 1)}) | – | {ratio(s, n)} | "
                     f"< 64 MiB: {verdict(ok)} |")
    cell = "7_cpu"
    if any(r["cell"] == cell for r in rows):
        first = True
        for f, label, nref, want in (
                ("cpu_ms_per_1k_req_presigned", "CPU-ms / 1,000 req (cell 1a)", "1a_get4k_presigned", 1.6),
                ("cpu_ms_per_1k_req_signed", "CPU-ms / 1,000 req (cell 1b)", "1b_get4k_signed", 1.6),
                ("cpu_ms_per_1k_req_legacy", "CPU-ms / 1,000 req (cell 1c)", "1c_get4k_legacy", 1.35),
                ("cpu_ms_per_1k_req_miss20", "CPU-ms / 1,000 req (cell 9)", "9_get4k_miss20", None),
                ("cpu_s_per_gib_1m", "CPU-s / GiB (cell 2)", "2_get1m", 1.1),
                ("cpu_s_per_gib_256m", "CPU-s / GiB (cell 3)", "3_get256m", 1.1)):
            nt, nlabel = ref(nref, "rps" if nref.startswith(("1", "9")) else "mb_s")
            d = med(cell, "direct_backend", f)
            n, b, s = med(cell, nt, f) if nt else None, med(cell, "bare", f), med(cell, "s3p", f)
            if s is None and b is None:
                continue
            title = "7. CPU of the proxy (direct: of the backend nginx)" if first else ""
            first = False
            target = f"≤ {want}x bare: {verdict(s <= want * b if s is not None and b else None)}" if want else "–"
            lines.append(f"| {title} | {label} | {fmt(d, 2)} | {fmt(n, 2)} | {fmt(b, 2)} | {fmt(s, 2)} | "
                         f"{ratio(s, b)} | {ratio(s, n)} | {target} |")
    lines.append("")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI smoke test: a few seconds per cell")
    p.add_argument("--work", required=True, help="scratch directory (removed by bench/run)")
    p.add_argument("--out", required=True, help="results directory")
    p.add_argument("--s3p", required=True)
    p.add_argument("--loadgen", required=True)
    p.add_argument("--bare", required=True, help="bare pingora (cargo build --release --example bare_pingora)")
    p.add_argument("--garage", required=True)
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=int, help="seconds per load run")
    p.add_argument("--duration-big", type=int, help="seconds per 256 MiB run")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="s3p threads and nginx workers")
    p.add_argument("--cells", default="", help="comma-separated cell prefixes to run (default: all), e.g. 1a,5")
    p.add_argument("--max-busy", type=float, default=0.25,
                   help="before each round, wait while other processes use more than this share of all cores")
    p.add_argument("--max-wait", type=float, help="longest wait for a quiet machine per round (s)")
    p.add_argument("--max-foreign", type=float, default=0.35,
                   help="a load run during which other processes used more than this many cores is measured again")
    p.add_argument("--max-retries", type=int, help="at most this many load runs measured again")
    p.add_argument("--time-limit", type=int, help="stop starting rounds near this many seconds")
    p.add_argument("--perf", default="", help="instead of the rounds: profile s3p with perf during these cells "
                   "(e.g. 1a,2); reports go to --out")
    p.add_argument("--s3p-limit", action="append", default=[], metavar="NAME=VALUE",
                   help="a `limits:` setting of s3p's proxy.yaml (e.g. client_read_buffer_bytes=65536)")
    p.add_argument("--s3p-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for s3p (repeatable), e.g. LD_PRELOAD=... for allocator experiments")
    p.add_argument("--perf-bin", default=shutil.which("perf") or "perf")
    p.add_argument("--perf-freq", type=int, default=999)
    p.add_argument("--s3p-log", default="info", help="RUST_LOG for s3p (its audit log, one JSON line per request, "
                   "always goes to a file, like nginx's buffered access log)")
    a = p.parse_args()
    q = a.quick
    defaults = dict(rounds=2 if q else 5, duration=1 if q else 4, duration_big=2 if q else 5,
                    max_wait=0 if q else 60, time_limit=200 if q else 1000, max_retries=0 if q else 12)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.presigned_pool = 2000 if q else 20000
    a.list_walks = 1 if q else 5
    a.slow_seconds = 2 if q else 6
    a.slow_rate = 8 << 20
    a.idle_conns = 1000
    a.idle_hold = 0.5 if q else 2

    b = Bench(a)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return b.run()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping everything")
        return 130
    finally:
        b.stop_all()


if __name__ == "__main__":
    sys.exit(main())
