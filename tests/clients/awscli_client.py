"""aws CLI v1 against s3p, configured as a user would: a profile with endpoint_url and path-style addressing in a
config file, the API key and secret in a credentials file (both in the test's work dir)."""

import os

from harness import (Matrix, expect_bytes, expect_denied, expect_eq, expect_no_s3_error, fetch_denied_presigned, fetch_presigned,
                     load_spec, payload, presign_kind, run, write_file)

spec = load_spec()
aws = spec.tools["aws"]

config = spec.path("aws/config")
credentials = spec.path("aws/credentials")
PROFILES = (("s3p", None, spec.endpoint), ("s3p-bob", None, spec.endpoint), ("s3p-v4", "s3v4", spec.endpoint),
            ("s3p-bob-v4", "s3v4", spec.endpoint), ("s3p-write", None, spec.write_endpoint),
            ("s3p-write-bob", None, spec.write_endpoint))
with open(config, "w", encoding="utf-8") as f:
    for name, sig, endpoint in PROFILES:
        f.write(f"[profile {name}]\nregion = {spec.region}\nendpoint_url = {endpoint}\n"
                f"s3 =\n    addressing_style = path\n")
        if sig:
            f.write(f"    signature_version = {sig}\n")
with open(credentials, "w", encoding="utf-8") as f:
    for name, user in (("s3p", "alice"), ("s3p-bob", "bob"), ("s3p-v4", "alice"), ("s3p-bob-v4", "bob"),
                       ("s3p-write", "alice"), ("s3p-write-bob", "bob")):
        key, secret = spec.user(user)
        f.write(f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")

env = dict(os.environ)
# Credentials come from the profile only (environment credentials would win over it).
for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    env.pop(k, None)
env.update(AWS_CONFIG_FILE=config, AWS_SHARED_CREDENTIALS_FILE=credentials, AWS_EC2_METADATA_DISABLED="true",
           AWS_DEFAULT_REGION=spec.region)

PROFILE = {"alice": "s3p", "bob": "s3p-bob"}
PROFILE_V4 = {"alice": "s3p-v4", "bob": "s3p-bob-v4"}


def aws_run(user, *args, check=True, profile=None):
    return run([aws, *args, "--profile", profile or PROFILE[user]], env=env, check=check)


_, version, version_err = run([aws, "--version"], env=env)
m = Matrix("aws CLI v1", (version.decode() + version_err).strip())


def root(user):
    def f():
        _, out, _ = aws_run(user, "s3", "ls", spec.url(""))
        lines = [line.strip() for line in out.decode().splitlines() if line.strip()]
        dirs = {line[len("PRE "):] for line in lines if line.startswith("PRE ")}
        expect_eq(f"{user}'s root listing", lines, sorted(f"PRE {d}/" for d in spec.root_dirs(user)))
        return ", ".join(sorted(dirs))
    return f


m.check("list root (alice)", root("alice"))
m.check("list root (bob)", root("bob"))


def parse_ls_keys(text):
    """`aws s3 ls --recursive` lines are `date time size key`; keys may hold spaces themselves."""
    keys = []
    for line in text.splitlines():
        rest = line
        for _ in range(3):
            rest = rest.lstrip()
            rest = rest[rest.index(" "):]
        keys.append(rest.lstrip())
    return keys


def recursive():
    _, out, _ = aws_run(spec.list_user, "s3", "ls", spec.url(spec.list_ds + "/"), "--recursive", "--page-size", "4")
    keys = parse_ls_keys(out.decode())
    expect_eq(f"keys under {spec.list_ds}/", set(keys), spec.list_keys)
    expect_eq("no key twice", len(keys), len(set(keys)))
    return f"{len(keys)} keys, pages of 4"


m.check("list data source recursively (s3 ls --recursive)", recursive)


def download():
    for i, (user, key, want) in enumerate(spec.downloads):
        dest = spec.path(f"download/{i}")
        aws_run(user, "s3", "cp", spec.url(key), dest)
        with open(dest, "rb") as fh:
            expect_bytes(f"s3 cp {key}", fh.read(), want)
        _, out, _ = aws_run(user, "s3", "cp", spec.url(key), "-")
        expect_bytes(f"s3 cp {key} -", out, want)
    return f"{len(spec.downloads)} objects, to a file and to stdout"


m.check("download byte for byte (s3 cp)", download)


def presign(profiles, want_kind):
    def f():
        for user, key, want in spec.downloads:
            _, out, _ = aws_run(user, "s3", "presign", spec.url(key), "--expires-in", "600", profile=profiles[user])
            url = out.decode().strip()
            expect_eq(f"presigned URL kind of {url}", presign_kind(url), want_kind)
            fetch_presigned(f"presigned {key}", url, want)
        return f"{len(spec.downloads)} URLs, {want_kind}"
    return f


m.check("presign (default: SigV2) + plain HTTP GET", presign(PROFILE, "v2"))
m.check("presign SigV4 (signature_version = s3v4) + plain HTTP GET", presign(PROFILE_V4, "v4"))


def denied():
    user = spec.denied_user
    _, out, _ = aws_run(user, "s3", "cp", spec.url(spec.control[1]), "-")
    expect_bytes(f"control: {user} reads {spec.control[1]}", out, spec.control[2])
    rc, out, err = aws_run(user, "s3", "cp", spec.url(spec.denied_key), "-", check=False)
    if rc == 0:
        raise AssertionError(f"s3 cp {spec.denied_key} succeeded for {user}: {out[:200]!r}")
    expect_denied(f"s3 cp {spec.denied_key}", err)
    rc, out, err = aws_run(user, "s3", "ls", spec.url(spec.denied_ds + "/"), "--recursive", check=False)
    expect_eq(f"{user}'s listing of {spec.denied_ds}/", out.decode(), "")
    expect_no_s3_error(f"{user}'s listing of {spec.denied_ds}/", err)
    return "s3 cp 403, empty listing"


def denied_presigned(profiles):
    def f():
        user, key, want = spec.control
        _, out, _ = aws_run(user, "s3", "presign", spec.url(key), profile=profiles[user])
        fetch_presigned(f"control: presigned ({profiles[user]}) {key}", out.decode().strip(), want)
        _, out, _ = aws_run(user, "s3", "presign", spec.url(spec.denied_key), profile=profiles[user])
        fetch_denied_presigned(f"presigned ({profiles[user]}) {spec.denied_key}", out.decode().strip())
        return "403 AccessDenied"
    return f


m.check(f"denied data source refused (bob, {spec.denied_ds})", denied)
m.check("denied data source refused (bob, presigned SigV2)", denied_presigned(PROFILE))
m.check("denied data source refused (bob, presigned SigV4)", denied_presigned(PROFILE_V4))

# Writes, on the writable s3p: alice may write `write_ds`.
WRITE = f"{spec.write_ds}/awscli"


def upload_single_and_multipart():
    small = write_file(spec.path("up/small.bin"), payload(300_000, "awscli small"))
    # 100 MiB: the aws CLI uploads in 8 MiB parts (multipart from 8 MiB on).
    big_data = payload(100 << 20, "awscli big")
    big = write_file(spec.path("up/big.bin"), big_data)
    for src, name in ((small, "small.bin"), (big, "big.bin")):
        aws_run("alice", "s3", "cp", src, spec.url(f"{WRITE}/{name}"), profile="s3p-write")
    for src, name in ((small, "small.bin"), (big, "big.bin")):
        back = spec.path(f"back/{name}")
        aws_run("alice", "s3", "cp", spec.url(f"{WRITE}/{name}"), back, profile="s3p-write")
        with open(src, "rb") as a, open(back, "rb") as b:
            expect_bytes(f"{name} read back", b.read(), a.read())
    return "300 kB in one PUT, 100 MiB in parts, both read back"


def sync_up_and_remove():
    for i in range(5):
        write_file(spec.path(f"tree/d{i % 2}/f{i}.txt"), payload(1000 + i, f"tree {i}"))
    aws_run("alice", "s3", "sync", spec.path("tree"), spec.url(f"{WRITE}/tree/"), profile="s3p-write")
    _, out, _ = aws_run("alice", "s3", "ls", spec.url(f"{WRITE}/tree/"), "--recursive", profile="s3p-write")
    keys = set(parse_ls_keys(out.decode()))
    expect_eq("synced keys", keys, {f"{WRITE}/tree/d{i % 2}/f{i}.txt" for i in range(5)})
    # A second sync sends nothing new; `s3 rm --recursive` (DeleteObjects) removes everything.
    aws_run("alice", "s3", "sync", spec.path("tree"), spec.url(f"{WRITE}/tree/"), profile="s3p-write")
    aws_run("alice", "s3", "rm", spec.url(f"{WRITE}/"), "--recursive", profile="s3p-write")
    rc, out, err = aws_run("alice", "s3", "ls", spec.url(f"{WRITE}/"), "--recursive", profile="s3p-write",
                           check=False)
    expect_eq("listing after s3 rm --recursive", out.decode(), "")
    expect_no_s3_error("listing after s3 rm --recursive", err)
    return "5 files synced, then removed"


def write_denied():
    src = write_file(spec.path("up/denied.txt"), b"not for you")
    for user, profile, target in (("alice", "s3p-write", f"{spec.list_ds}/awscli-denied.txt"),
                                  ("bob", "s3p-write-bob", f"{spec.write_ds}/awscli-denied.txt")):
        rc, out, err = aws_run(user, "s3", "cp", src, spec.url(target), profile=profile, check=False)
        if rc == 0:
            raise AssertionError(f"s3 cp to {target} succeeded for {user}")
        expect_denied(f"s3 cp to {target} ({user})", err)
    return "read-only data source, and a key without a write grant: 403"


m.check("upload: s3 cp, one PUT and multipart (100 MiB)", upload_single_and_multipart)
m.check("upload: s3 sync, s3 rm --recursive", sync_up_and_remove)
m.check("upload refused where not granted", write_denied)
m.done()
