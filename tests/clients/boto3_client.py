"""boto3 against s3p: SigV4 headers (default), SigV2 headers (signature_version='s3'), presigned URLs in both."""

from harness import (Matrix, expect_bytes, expect_eq, fetch_denied_presigned, fetch_presigned, http_put, load_spec,
                     payload, presign_kind, require, write_file)

boto3 = require("boto3")
botocore = require("botocore")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

spec = load_spec()
m = Matrix("boto3", f"boto3 {boto3.__version__}, botocore {botocore.__version__}")


def client(user, signature_version=None, endpoint=None, verify=None):
    """What a user writes: endpoint, key, secret, region, path-style addressing."""
    key, secret = spec.user(user)
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=spec.region)
    config = Config(s3={"addressing_style": "path"}, signature_version=signature_version,
                    retries={"max_attempts": 1, "mode": "standard"})
    return session.client("s3", endpoint_url=endpoint or spec.endpoint, config=config, verify=verify)


def writer(user="alice", https=True, signature_version=None):
    """A client of the writable s3p; over https botocore sends its default trailing checksums (aws-chunked)."""
    if https:
        return client(user, signature_version, spec.write_https_endpoint, spec.write_ca)
    return client(user, signature_version, spec.write_endpoint)


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


def sigv2_listing_refused():
    # SigV2 signs no listing parameter: s3p refuses SigV2 listings (header and presigned alike).
    try:
        client("bob", "s3").list_objects_v2(Bucket=spec.bucket, Delimiter="/")
    except ClientError as e:
        code = e.response["Error"]["Code"]
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        expect_eq("SigV2 listing refused", (status, code), (403, "AccessDenied"))
        return "403 AccessDenied"
    raise AssertionError("a SigV2 header listing was answered")


m.check("list root (bob, SigV2 header): refused, sign listings with SigV4", sigv2_listing_refused)


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

# Writes, on the writable s3p.
WRITE = f"{spec.write_ds}/boto3"


def read(c, key):
    return c.get_object(Bucket=spec.bucket, Key=key)["Body"].read()


def put_object():
    for https in (True, False):
        c = writer(https=https)
        data = payload(700_000, f"boto3 put {https}")
        key = f"{WRITE}/put-{'https' if https else 'http'}.bin"
        out = c.put_object(Bucket=spec.bucket, Key=key, Body=data, ContentType="application/x-test",
                           Metadata={"origin": "boto3"})
        head = c.head_object(Bucket=spec.bucket, Key=key)
        expect_eq("ETag of the put and the head", head["ETag"], out["ETag"])
        expect_eq("metadata", head["Metadata"], {"origin": "boto3"})
        expect_eq("content type", head["ContentType"], "application/x-test")
        expect_bytes(f"{key} read back", read(c, key), data)
    return "https (aws-chunked, CRC32 trailer) and http; metadata and content type kept"


def upload_file_multipart():
    from boto3.s3.transfer import TransferConfig
    data = payload(13 << 20, "boto3 upload_file")
    src = write_file(spec.path("up/upload_file.bin"), data)
    c = writer()
    cfg = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, use_threads=False)
    c.upload_file(src, spec.bucket, f"{WRITE}/upload_file.bin", Config=cfg)
    expect_bytes("upload_file read back", read(c, f"{WRITE}/upload_file.bin"), data)
    etag = c.head_object(Bucket=spec.bucket, Key=f"{WRITE}/upload_file.bin")["ETag"]
    if not etag.endswith('-3"'):
        raise AssertionError(f"not a 3-part upload: ETag {etag}")
    return "13 MiB in 3 parts (https, default checksums)"


def presigned_put(sig):
    def f():
        c = writer(https=False, signature_version=sig)
        key = f"{WRITE}/presigned-{sig}.txt"
        url = c.generate_presigned_url("put_object", Params={"Bucket": spec.bucket, "Key": key}, ExpiresIn=600)
        expect_eq("presigned URL kind", presign_kind(url), "v2" if sig == "s3" else "v4")
        body = b"uploaded with a presigned URL and plain HTTP"
        status, answer = http_put(url, body)
        expect_eq(f"PUT {url}: {answer[:300]!r}", status, 200)
        expect_bytes(f"{key} read back", read(c, key), body)
        return presign_kind(url)
    return f


def copy_and_delete_objects():
    c = writer()
    src_user, src_key, want = next(d for d in spec.downloads if d[0] == "alice")
    c.copy_object(Bucket=spec.bucket, Key=f"{WRITE}/copy.bin", CopySource={"Bucket": spec.bucket, "Key": src_key})
    expect_bytes("copy read back", read(c, f"{WRITE}/copy.bin"), want)
    keys = [f"{WRITE}/del/{i}" for i in range(4)]
    for k in keys:
        c.put_object(Bucket=spec.bucket, Key=k, Body=b"x")
    out = c.delete_objects(Bucket=spec.bucket, Delete={"Objects": [{"Key": k} for k in keys + [src_key]]})
    expect_eq("deleted", sorted(d["Key"] for d in out.get("Deleted", [])), keys)
    expect_eq("refused", [(e["Key"], e["Code"]) for e in out.get("Errors", [])], [(src_key, "AccessDenied")])
    left = c.list_objects_v2(Bucket=spec.bucket, Prefix=f"{WRITE}/del/")
    expect_eq("left after delete_objects", left.get("KeyCount"), 0)
    return f"copied {src_key}; 4 deleted, 1 refused"


def write_denied():
    for who, c, key in (("alice", writer(), f"{spec.list_ds}/boto3-denied.txt"),
                        ("bob", writer("bob"), f"{WRITE}/denied.txt")):
        try:
            c.put_object(Bucket=spec.bucket, Key=key, Body=b"no")
        except ClientError as e:
            expect_eq(f"{who} put {key}", e.response["Error"]["Code"], "AccessDenied")
        else:
            raise AssertionError(f"{who} could put {key}")
    return "403 AccessDenied"


m.check("upload: put_object (https with trailing checksum, http)", put_object)
m.check("upload: upload_file, multipart", upload_file_multipart)
m.check("upload: presigned PUT, SigV4", presigned_put("s3v4"))
m.check("upload: presigned PUT, SigV2", presigned_put("s3"))
m.check("copy_object, delete_objects", copy_and_delete_objects)
m.check("upload refused where not granted", write_denied)
m.done()
