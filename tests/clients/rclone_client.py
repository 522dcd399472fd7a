"""rclone against s3p: an `s3` remote (provider Other) with the endpoint, the API key and secret, path style, and
no_check_bucket (else rclone tries CreateBucket before it uploads, and probes on some commands)."""

import os

from harness import (Matrix, expect_bytes, expect_denied, expect_eq, expect_no_s3_error, fetch_presigned, load_spec, payload,
                     presign_kind, run, write_file)

spec = load_spec()
rclone = spec.tools["rclone"]

conf = spec.path("rclone.conf")
with open(conf, "w", encoding="utf-8") as f:
    for remote, user, endpoint in (("s3p", "alice", spec.endpoint), ("s3p-bob", "bob", spec.endpoint),
                                   ("s3p-write", "alice", spec.write_endpoint),
                                   ("s3p-write-bob", "bob", spec.write_endpoint)):
        key, secret = spec.user(user)
        f.write(
            f"[{remote}]\ntype = s3\nprovider = Other\naccess_key_id = {key}\nsecret_access_key = {secret}\n"
            f"endpoint = {endpoint}\nregion = {spec.region}\nforce_path_style = true\nno_check_bucket = true\n\n"
        )

env = dict(os.environ)
# This machine's AWS_CA_BUNDLE makes rclone's AWS SDK fail before any request (clients.md).
for k in [k for k in env if k.startswith("AWS_") or k.startswith("RCLONE_")]:
    env.pop(k)
env.update(RCLONE_CONFIG=conf, AWS_EC2_METADATA_DISABLED="true")

REMOTE = {"alice": "s3p", "bob": "s3p-bob"}


def rc(user, *args, check=True):
    return run([rclone, "--config", conf, "--low-level-retries", "1", "--retries", "1", *args], env=env,
               check=check)


def at(user, vkey=""):
    return f"{REMOTE[user]}:{spec.bucket}/{vkey}".rstrip("/")


_, version, _ = run([rclone, "version"], env=env)
m = Matrix("rclone", version.decode().splitlines()[0])


def root(user):
    def f():
        _, out, _ = rc(user, "lsf", at(user))
        entries = out.decode().splitlines()
        expect_eq(f"{user}'s root entries", sorted(entries), sorted(d + "/" for d in spec.root_dirs(user)))
        return ", ".join(entries)
    return f


m.check("list root (alice, lsf)", root("alice"))
m.check("list root (bob, lsf)", root("bob"))


def expected_tree(keys, base):
    """lsf -R entries under `base/`: every file, and every directory (implied or a `dir/` marker) with a slash."""
    out = set()
    for k in keys:
        rel = k[len(base) + 1:]
        parts = rel.split("/")
        for i in range(1, len(parts)):
            out.add("/".join(parts[:i]) + "/")
        if not rel.endswith("/"):
            out.add(rel)
    return out


def recursive():
    _, out, _ = rc(spec.list_user, "lsf", "-R", at(spec.list_user, spec.list_ds))
    entries = out.decode().splitlines()
    expect_eq(f"lsf -R {spec.list_ds}", set(entries), expected_tree(spec.list_keys, spec.list_ds))
    _, out, _ = rc(spec.list_user, "lsf", "-R", "--files-only", "--format", "ps", "--separator", "\t",
                   at(spec.list_user, spec.list_ds))
    files = dict(line.rsplit("\t", 1) for line in out.decode().splitlines())
    for user, key, want in spec.downloads:
        if key.startswith(spec.list_ds + "/"):
            expect_eq(f"size of {key}", int(files[key[len(spec.list_ds) + 1:]]), len(want))
    return f"{len(entries)} entries (files and directories)"


m.check("list data source recursively (lsf -R)", recursive)


def download():
    for i, (user, key, want) in enumerate(spec.downloads):
        _, out, _ = rc(user, "cat", at(user, key))
        expect_bytes(f"cat {key}", out, want)
        dest = spec.path(f"download/{i}")
        rc(user, "copyto", at(user, key), dest)
        with open(dest, "rb") as fh:
            expect_bytes(f"copyto {key}", fh.read(), want)
    return f"{len(spec.downloads)} objects, cat and copyto"


m.check("download byte for byte (cat, copyto)", download)


def presign():
    kinds = set()
    for user, key, want in spec.downloads:
        _, out, _ = rc(user, "link", "--expire", "10m", at(user, key))
        url = out.decode().strip()
        kinds.add(presign_kind(url))
        fetch_presigned(f"link {key}", url, want)
    return f"{len(spec.downloads)} URLs, {'/'.join(sorted(kinds))}"


m.check("presign (rclone link) + plain HTTP GET", presign)


def denied():
    """rclone treats a refused HEAD like a missing object (so does s3p: a denied data source answers like a
    missing one): `cat` prints nothing, `copyto` writes nothing, `link` reports the 403."""
    user = spec.denied_user
    _, out, _ = rc(user, "cat", at(user, spec.control[1]))
    expect_bytes(f"control: {user} reads {spec.control[1]}", out, spec.control[2])
    _, out, err = rc(user, "cat", "--dump", "headers", at(user, spec.denied_key), check=False)
    expect_eq(f"bytes of {spec.denied_key} for {user}", out, b"")
    head = f"HEAD {spec.base_path}/{spec.bucket}/{spec.denied_key} HTTP/1.1"
    if head not in err or "HTTP/1.1 403 Forbidden" not in err.split(head, 1)[1]:
        raise AssertionError(f"cat {spec.denied_key}: want its HEAD refused with 403: {err[-1500:]}")
    dest = spec.path("denied.csv")
    rc(user, "copyto", at(user, spec.denied_key), dest, check=False)
    if os.path.exists(dest):
        raise AssertionError(f"copyto {spec.denied_key} wrote {dest}")
    code, out, err = rc(user, "link", at(user, spec.denied_key), check=False)
    if code == 0:
        raise AssertionError(f"link {spec.denied_key} succeeded for {user}: {out!r}")
    expect_denied(f"link {spec.denied_key}", err)
    code, out, err = rc(user, "lsf", "-R", at(user, spec.denied_ds), check=False)
    expect_eq(f"{user}'s listing of {spec.denied_ds}", out.decode(), "")
    expect_no_s3_error(f"{user}'s listing of {spec.denied_ds}", err)
    return "HEAD 403: cat prints nothing, copyto writes nothing, link 403; empty listing"


m.check(f"denied data source refused (bob, {spec.denied_ds})", denied)

# Writes, on the writable s3p.
WRITE = f"{spec.write_ds}/rclone"


def copy_up():
    files = {f"d{i % 2}/f{i}.bin": payload(50_000 * (i + 1), f"rclone {i}") for i in range(4)}
    # One large enough for rclone's multipart upload (its cutoff is 200 MiB by default: lowered here).
    files["big.bin"] = payload(12 << 20, "rclone big")
    for name, data in files.items():
        write_file(spec.path(f"up/{name}"), data)
    rc("alice", "copy", spec.path("up"), f"s3p-write:{spec.bucket}/{WRITE}", "--s3-upload-cutoff", "5M",
       "--s3-chunk-size", "5M")
    _, out, _ = rc("alice", "lsf", "-R", "--files-only", f"s3p-write:{spec.bucket}/{WRITE}")
    expect_eq("uploaded files", set(out.decode().split()), set(files))
    for name, data in files.items():
        _, got, _ = rc("alice", "cat", f"s3p-write:{spec.bucket}/{WRITE}/{name}")
        expect_bytes(f"{name} read back", got, data)
    rc("alice", "delete", f"s3p-write:{spec.bucket}/{WRITE}")
    rcode, out, err = rc("alice", "lsf", "-R", f"s3p-write:{spec.bucket}/{WRITE}", check=False)
    expect_eq("left after delete", out.decode().split(), [])
    return f"{len(files)} files (one multipart) copied, read back, deleted"


def write_denied():
    src = write_file(spec.path("denied/x.txt"), b"no")
    for remote, target in (("s3p-write", f"{spec.list_ds}/rclone-denied"), ("s3p-write-bob", WRITE + "-denied")):
        rcode, out, err = rc("alice", "copy", spec.path("denied"), f"{remote}:{spec.bucket}/{target}", check=False)
        if rcode == 0:
            raise AssertionError(f"{remote} could copy to {target}")
        expect_denied(f"copy to {target}", err)
    return "403"


m.check("upload: copy, one PUT and multipart; delete", copy_up)
m.check("upload refused where not granted", write_denied)
m.done()
