"""s3cmd against s3p: a config file with host_base/host_bucket = HOST:PORT/s3p (path style: no %(bucket)s), plain
http, the API key and secret. SigV4 headers by default; a second config with signature_v2 = True.

s3cmd signs without the base path (SigV4: it moves `/s3p` into the signed host; SigV2: it leaves it out), so the
s3p under test runs with `signature_base_path_tolerance: true`. The spec's extra.strict_host_port is an s3p with
the default configuration, which must refuse s3cmd's SigV4 signature."""

import os

from harness import (Matrix, expect_bytes, expect_denied, expect_eq, fetch_denied_presigned, fetch_presigned,
                     load_spec, payload, presign_kind, run, write_file)

spec = load_spec()
s3cmd = spec.tools["s3cmd"]
host = spec.host_port + spec.base_path


def write_config(user, v2, host=host, name=""):
    key, secret = spec.user(user)
    path = spec.path(f"s3cfg-{user}{'-v2' if v2 else ''}{name}")
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            f"[default]\naccess_key = {key}\nsecret_key = {secret}\nhost_base = {host}\nhost_bucket = {host}\n"
            f"bucket_location = {spec.region}\nuse_https = False\nsignature_v2 = {v2}\n"
        )
    return path


CONFIG = {(u, v2): write_config(u, v2) for u in ("alice", "bob") for v2 in (False, True)}
STRICT_HOST = spec.raw["extra"]["strict_host_port"] + spec.base_path
STRICT = {v2: write_config("alice", v2, STRICT_HOST, "-strict") for v2 in (False, True)}
env = dict(os.environ)
for k in [k for k in env if k.startswith("AWS_") or k.startswith("S3CMD")]:
    env.pop(k)


def s3(user, *args, v2=False, check=True, config=None):
    return run([s3cmd, "-c", config or CONFIG[(user, v2)], "--no-progress", *args], env=env, check=check,
               timeout=60)


_, version, _ = run([s3cmd, "--version"], env=env)
m = Matrix("s3cmd", version.decode().strip())


def root(user, v2=False):
    def f():
        _, out, _ = s3(user, "ls", spec.url(""), v2=v2)
        lines = [line.split() for line in out.decode().splitlines() if line.strip()]
        want = sorted(d + "/" for d in spec.root_dirs(user))
        expect_eq(f"{user}'s root listing", lines, [["DIR", spec.url(d)] for d in want])
        return ", ".join(line[-1] for line in lines)
    return f


def recursive(v2=False):
    def f():
        _, out, _ = s3(spec.list_user, "ls", "-r", spec.url(spec.list_ds + "/"), v2=v2)
        prefix = spec.url("")
        keys = [line[line.index(prefix) + len(prefix):] for line in out.decode().splitlines() if prefix in line]
        expect_eq(f"keys under {spec.list_ds}/", set(keys), spec.list_keys)
        return f"{len(keys)} keys"
    return f


def download(v2=False):
    def f():
        for i, (user, key, want) in enumerate(spec.downloads):
            dest = spec.path(f"download/{i}{'-v2' if v2 else ''}")
            s3(user, "get", "--force", spec.url(key), dest, v2=v2)
            with open(dest, "rb") as fh:
                expect_bytes(f"get {key}", fh.read(), want)
        return f"{len(spec.downloads)} objects"
    return f


def sigv2_listing_refused():
    # SigV2 signs no listing parameter: s3p refuses SigV2 listings (header and presigned alike).
    code, out, err = s3("alice", "ls", spec.url(""), v2=True, check=False)
    if code == 0:
        raise AssertionError(f"a SigV2 listing was answered: {out[:300]!r}")
    expect_denied("ls (SigV2)", err + out.decode())
    return "403"


for v2, label in ((False, "SigV4 header"), (True, "SigV2 header")):
    if not v2:
        m.check(f"list root (alice, {label})", root("alice", v2))
        m.check(f"list root (bob, {label})", root("bob", v2))
        m.check(f"list data source recursively (ls -r, {label})", recursive(v2))
    m.check(f"download byte for byte (get, {label})", download(v2))
m.check("ls (SigV2 header): refused, sign listings with SigV4", sigv2_listing_refused)


def presign():
    kinds = set()
    for user, key, want in spec.downloads:
        _, out, _ = s3(user, "signurl", spec.url(key), "+600")
        url = out.decode().strip()
        kinds.add(presign_kind(url))
        fetch_presigned(f"signurl {key}", url, want)
    return f"{len(spec.downloads)} URLs, {'/'.join(sorted(kinds))}"


m.check("presign (signurl) + plain HTTP GET", presign)


def denied():
    user = spec.denied_user
    dest = spec.path("denied")
    s3(user, "get", "--force", spec.url(spec.control[1]), dest)
    with open(dest, "rb") as fh:
        expect_bytes(f"control: {user} reads {spec.control[1]}", fh.read(), spec.control[2])
    code, out, err = s3(user, "get", "--force", spec.url(spec.denied_key), dest, check=False)
    if code == 0:
        raise AssertionError(f"get {spec.denied_key} succeeded for {user}")
    expect_denied(f"get {spec.denied_key}", err + out.decode())
    code, out, err = s3(user, "ls", "-r", spec.url(spec.denied_ds + "/"))
    expect_eq(f"{user}'s listing of {spec.denied_ds}/", out.decode(), "")
    return "get 403, empty listing"


def denied_presigned():
    user, key, want = spec.control
    _, out, _ = s3(user, "signurl", spec.url(key), "+600")
    fetch_presigned(f"control: signurl {key} for {user}", out.decode().strip(), want)
    _, out, _ = s3(user, "signurl", spec.url(spec.denied_key), "+600")
    fetch_denied_presigned(f"signurl {spec.denied_key}", out.decode().strip())
    return "403 AccessDenied"


def strict():
    code, out, err = s3("alice", "ls", spec.url(""), config=STRICT[False], check=False)
    if code == 0 or "SignatureDoesNotMatch" not in err:
        raise AssertionError(f"want SignatureDoesNotMatch, got rc {code}: {out[:300]!r} {err[-600:]}")
    user, key, want = spec.control
    dest = spec.path("strict-v2")
    s3("alice", "get", "--force", spec.url(key), dest, config=STRICT[True])
    with open(dest, "rb") as fh:
        expect_bytes(f"get {key} (SigV2)", fh.read(), want)
    return "SigV4 refused (SignatureDoesNotMatch); SigV2 object reads accepted (botocore-style resource)"


m.check("default s3p (no signature_base_path_tolerance): SigV4 refused, SigV2 reads accepted", strict)
m.check(f"denied data source refused (bob, {spec.denied_ds})", denied)
m.check("denied data source refused (bob, signurl)", denied_presigned)

# Writes, on the writable s3p (which also tolerates s3cmd's signatures without the base path).
WRITE_HOST = spec.write_host_port + spec.base_path
WRITE_CONFIG = {(u, v2): write_config(u, v2, WRITE_HOST, "-write") for u in ("alice", "bob") for v2 in (False, True)}
WRITE = f"{spec.write_ds}/s3cmd"


def put(v2):
    def f():
        small = payload(200_000, f"s3cmd small {v2}")
        big = payload(16 << 20, f"s3cmd big {v2}")
        tag = "v2" if v2 else "v4"
        for name, data in ((f"small-{tag}.bin", small), (f"big-{tag}.bin", big)):
            src = write_file(spec.path(f"up/{name}"), data)
            # s3cmd uploads in 15 MiB parts from 15 MiB on: the big file is multipart.
            s3("alice", "put", src, spec.url(f"{WRITE}/{name}"), config=WRITE_CONFIG[("alice", v2)])
            back = spec.path(f"back/{name}")
            s3("alice", "get", "--force", spec.url(f"{WRITE}/{name}"), back, config=WRITE_CONFIG[("alice", v2)])
            with open(back, "rb") as fh:
                expect_bytes(f"{name} read back", fh.read(), data)
        # `del --recursive` lists first: with SigV4 (s3p refuses SigV2 listings).
        s3("alice", "del", "--recursive", "--force", spec.url(f"{WRITE}/"), config=WRITE_CONFIG[("alice", False)])
        _, out, _ = s3("alice", "ls", "-r", spec.url(f"{WRITE}/"), config=WRITE_CONFIG[("alice", False)])
        expect_eq("left after del --recursive", out.decode().strip(), "")
        return "200 kB and 16 MiB (multipart) put, read back, deleted"
    return f


def write_denied():
    src = write_file(spec.path("up/denied.txt"), b"no")
    for user, target in (("alice", f"{spec.list_ds}/s3cmd-denied.txt"), ("bob", f"{WRITE}/denied.txt")):
        rc, out, err = s3(user, "put", src, spec.url(target), config=WRITE_CONFIG[(user, False)], check=False)
        if rc == 0:
            raise AssertionError(f"{user} could put {target}")
        expect_denied(f"put {target} ({user})", out.decode() + err)
    return "403"


m.check("upload: put (SigV4), multipart; del --recursive", put(False))
m.check("upload: put (SigV2), multipart; del --recursive", put(True))
m.check("upload refused where not granted", write_denied)
m.done()
