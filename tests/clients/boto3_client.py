"""boto3 against s3p: SigV4 headers (default), SigV2 headers (signature_version='s3'), presigned URLs in both."""

from harness import (Matrix, expect_bytes, expect_eq, fetch_denied_presigned, fetch_presigned, load_spec,
                     presign_kind, require)

boto3 = require("boto3")
botocore = require("botocore")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

spec = load_spec()
m = Matrix("boto3", f"boto3 {boto3.__version__}, botocore {botocore.__version__}")


def client(user, signature_version=None):
    """What a user writes: endpoint, key, secret, region, path-style addressing."""
    key, secret = spec.user(user)
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=spec.region)
    config = Config(s3={"addressing_style": "path"}, signature_version=signature_version,
                    retries={"max_attempts": 1, "mode": "standard"})
    return session.client("s3", endpoint_url=spec.endpoint, config=config)


def root(user, sig=None):
    def f():
        out = client(user, sig).list_objects_v2(Bucket=spec.bucket, Delimiter="/")
        dirs = {p["Prefix"] for p in out.get("CommonPrefixes", [])}
        expect_eq(f"{user}'s root directories", dirs, {d + "/" for d in spec.root_dirs(user)})
        expect_eq(f"{user}'s root objects", [o["Key"] for o in out.get("Contents", [])], [])
        return ", ".join(sorted(dirs))
    return f


m.check("list root (alice, SigV4)", root("alice"))
m.check("list root (bob, SigV4)", root("bob"))
m.check("list root (bob, SigV2 header)", root("bob", "s3"))


def recursive(v1, sig=None):
    def f():
        c = client(spec.list_user, sig)
        if v1:
            pages = c.get_paginator("list_objects").paginate(
                Bucket=spec.bucket, Prefix=spec.list_ds + "/", PaginationConfig={"PageSize": 4})
        else:
            pages = c.get_paginator("list_objects_v2").paginate(
                Bucket=spec.bucket, Prefix=spec.list_ds + "/", PaginationConfig={"PageSize": 4})
        keys, n = [], 0
        for page in pages:
            n += 1
            keys.extend(o["Key"] for o in page.get("Contents", []))
        expect_eq("no key twice", len(keys), len(set(keys)))
        expect_eq(f"keys under {spec.list_ds}/", set(keys), spec.list_keys)
        expect_eq("UTF-8 byte order", keys, sorted(keys, key=lambda k: k.encode()))
        return f"{len(keys)} keys in {n} pages of 4"
    return f


m.check("list data source recursively (ListObjectsV2, pages of 4)", recursive(False))
m.check("list data source recursively (ListObjects v1, pages of 4)", recursive(True))
m.check("list data source recursively (SigV2 header)", recursive(False, "s3"))


def download(sig=None):
    def f():
        for user, key, want in spec.downloads:
            got = client(user, sig).get_object(Bucket=spec.bucket, Key=key)["Body"].read()
            expect_bytes(f"GET {key}", got, want)
        return f"{len(spec.downloads)} objects"
    return f


m.check("download byte for byte (get_object, SigV4)", download())
m.check("download byte for byte (get_object, SigV2 header)", download("s3"))


def download_file():
    user, key, want = spec.downloads[0]
    path = spec.path("download_file.bin")
    client(user).download_file(spec.bucket, key, path)
    with open(path, "rb") as fh:
        expect_bytes(f"download_file {key}", fh.read(), want)


m.check("download byte for byte (download_file)", download_file)


def presign(sig, want_kind):
    def f():
        kinds = set()
        for user, key, want in spec.downloads:
            url = client(user, sig).generate_presigned_url(
                "get_object", Params={"Bucket": spec.bucket, "Key": key}, ExpiresIn=600)
            kind = presign_kind(url)
            kinds.add(kind)
            if want_kind:
                expect_eq(f"presigned URL kind of {url}", kind, want_kind)
            fetch_presigned(f"presigned {key}", url, want)
        return f"{len(spec.downloads)} URLs, {'/'.join(sorted(kinds))}"
    return f


m.check("presign (default signature) + plain HTTP GET", presign(None, None))
m.check("presign SigV2 (signature_version='s3') + plain HTTP GET", presign("s3", "v2"))
m.check("presign SigV4 (signature_version='s3v4') + plain HTTP GET", presign("s3v4", "v4"))


def denied():
    c = client(spec.denied_user)
    user, key, want = spec.control
    expect_bytes(f"control: {user} reads {key}", c.get_object(Bucket=spec.bucket, Key=key)["Body"].read(), want)
    for op in ("get_object", "head_object"):
        try:
            getattr(c, op)(Bucket=spec.bucket, Key=spec.denied_key)
        except ClientError as e:
            code = e.response["Error"]["Code"]
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            if status != 403 or code not in ("AccessDenied", "403"):
                raise AssertionError(f"{op} {spec.denied_key}: want 403 AccessDenied, got {status} {code}")
        else:
            raise AssertionError(f"{op} {spec.denied_key} succeeded for {spec.denied_user}")
    out = c.list_objects_v2(Bucket=spec.bucket, Prefix=spec.denied_ds + "/")
    expect_eq(f"{spec.denied_user}'s listing of {spec.denied_ds}/", out.get("KeyCount"), 0)
    return "GET/HEAD 403 AccessDenied, empty listing"


def denied_presigned(sig):
    def f():
        user, key, want = spec.control
        url = client(user, sig).generate_presigned_url(
            "get_object", Params={"Bucket": spec.bucket, "Key": key}, ExpiresIn=600)
        fetch_presigned(f"control: presigned ({sig}) {key} for {user}", url, want)
        url = client(spec.denied_user, sig).generate_presigned_url(
            "get_object", Params={"Bucket": spec.bucket, "Key": spec.denied_key}, ExpiresIn=600)
        fetch_denied_presigned(f"presigned ({sig}) {spec.denied_key}", url)
        return "403 AccessDenied"
    return f


m.check(f"denied data source refused (bob, {spec.denied_ds})", denied)
m.check("denied data source refused (bob, presigned SigV2)", denied_presigned("s3"))
m.check("denied data source refused (bob, presigned SigV4)", denied_presigned("s3v4"))
m.done()
