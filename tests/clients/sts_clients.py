"""Temporary credentials from s3p's STS API, used by real clients (driven by tests/sts.rs).

`python tests/clients/sts_clients.py SPEC.json`: boto3's STS client asks s3p for sessions (AssumeRole with an API
key, AssumeRoleWithWebIdentity with an OIDC token the test signed), then boto3, DuckDB httpfs, pyarrow's
S3FileSystem and rclone read (and write, where the session may) with the session's credentials. One
`CHECK <name>: PASS|FAIL` line per check; exit 1 if any failed.
"""

import json
import subprocess
import sys

from harness import Matrix, require

boto3 = require("boto3")
botocore_config = require("botocore.config")
botocore_exceptions = require("botocore.exceptions")

spec = json.load(open(sys.argv[1]))
m = Matrix("STS sessions", f"boto3 {boto3.__version__}")
S3_URL = spec["s3_url"]
STS_URL = spec["sts_url"]
REGION = spec["region"]
PATH_STYLE = botocore_config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})


def sts(key, secret):
    return boto3.client("sts", endpoint_url=STS_URL, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret)


def s3(creds):
    return boto3.client("s3", endpoint_url=S3_URL, region_name=REGION, config=PATH_STYLE,
                        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])


def denied(fn, code="AccessDenied"):
    try:
        fn()
    except botocore_exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}"
        return
    raise AssertionError(f"expected {code}, got success")


NARROW = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
    "Resource": ["arn:aws:s3:::immuta", "arn:aws:s3:::immuta/sales/*"]}]})

sessions = {}


def assume_narrowed():
    r = sts(spec["writer"], spec["writer_secret"]).assume_role(
        RoleArn=spec["role_arn"], RoleSessionName="boto3-narrow", DurationSeconds=900, Policy=NARROW)
    c = r["Credentials"]
    assert c["AccessKeyId"].startswith("ASIA"), c["AccessKeyId"]
    assert r["AssumedRoleUser"]["Arn"].endswith("/boto3-narrow"), r["AssumedRoleUser"]
    sessions["narrow"] = c
    return f"expires {c['Expiration']}"


def narrowed_reads_sales_only():
    c = s3(sessions["narrow"])
    body = c.get_object(Bucket="immuta", Key="sales/plain.txt")["Body"].read()
    assert body == spec["plain_body"].encode(), body
    denied(lambda: c.get_object(Bucket="immuta", Key="data/q1.csv"))
    denied(lambda: c.put_object(Bucket="immuta", Key="sandbox/narrow.txt", Body=b"no"))
    page = c.list_objects_v2(Bucket="immuta", Delimiter="/")
    prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert prefixes == ["sales/"], prefixes


def whole_session_writes_where_its_key_may():
    creds = sts(spec["writer"], spec["writer_secret"]).assume_role(
        RoleArn=spec["role_arn"], RoleSessionName="boto3-write")["Credentials"]
    sessions["whole"] = creds
    c = s3(creds)
    c.put_object(Bucket="immuta", Key="sandbox/from-session.txt", Body=b"written by a session")
    got = c.get_object(Bucket="immuta", Key="sandbox/from-session.txt")["Body"].read()
    assert got == b"written by a session", got
    c.delete_object(Bucket="immuta", Key="sandbox/from-session.txt")
    # Its key may not write `sales`: neither may the session.
    denied(lambda: c.put_object(Bucket="immuta", Key="sales/x.txt", Body=b"no"))


def web_identity():
    # No credentials: the token is the caller's proof (boto3 sends this call unsigned).
    unsigned = botocore_config.Config(signature_version=require("botocore").UNSIGNED)
    r = boto3.client("sts", endpoint_url=STS_URL, region_name=REGION, config=unsigned).assume_role_with_web_identity(
        RoleArn=spec["role_arn"], RoleSessionName="oidc-job", WebIdentityToken=spec["jwt"])
    assert r["SubjectFromWebIdentityToken"] == "user-42", r
    c = s3(r["Credentials"])
    body = c.get_object(Bucket="immuta", Key="sales/plain.txt")["Body"].read()
    assert body == spec["plain_body"].encode()
    denied(lambda: c.get_object(Bucket="immuta", Key="data/q1.csv"))


def duckdb_reads():
    duckdb = require("duckdb")
    httpfs_pkg = require("duckdb_extension_httpfs")
    import os
    ext = os.path.join(os.path.dirname(httpfs_pkg.__file__), "extensions", f"v{duckdb.__version__}",
                       "httpfs.duckdb_extension")
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{ext}'")
    c = sessions["narrow"]
    con.execute(
        f"CREATE SECRET s (TYPE s3, KEY_ID '{c['AccessKeyId']}', SECRET '{c['SecretAccessKey']}', "
        f"SESSION_TOKEN '{c['SessionToken']}', REGION '{REGION}', ENDPOINT '{spec['host_port']}/s3p', "
        "URL_STYLE 'path', USE_SSL false)")
    got = con.execute("SELECT content FROM read_text('s3://immuta/sales/plain.txt')").fetchone()[0]
    assert got == spec["plain_body"], got
    try:
        con.execute("SELECT content FROM read_text('s3://immuta/data/q1.csv')").fetchone()
    except Exception as e:  # noqa: BLE001 - DuckDB raises its own HTTP error type
        assert "403" in str(e) or "Access" in str(e), e
    else:
        raise AssertionError("DuckDB read data/q1.csv with a session narrowed to sales")


def pyarrow_reads():
    pafs = require("pyarrow.fs")
    c = sessions["narrow"]
    fs = pafs.S3FileSystem(access_key=c["AccessKeyId"], secret_key=c["SecretAccessKey"],
                           session_token=c["SessionToken"], region=REGION, scheme="http",
                           endpoint_override=spec["host_port"] + "/s3p")
    with fs.open_input_stream("immuta/sales/plain.txt") as f:
        got = f.read()
    assert got == spec["plain_body"].encode(), got
    try:
        with fs.open_input_stream("immuta/data/q1.csv") as f:
            f.read()
    except OSError as e:
        assert "ACCESS_DENIED" in str(e).upper() or "403" in str(e), e
    else:
        raise AssertionError("pyarrow read data/q1.csv with a session narrowed to sales")


def rclone_reads():
    c = sessions["narrow"]
    base = [spec["rclone"], "--config", "/dev/null", "--s3-provider", "Other",
            "--s3-endpoint", S3_URL, "--s3-region", REGION, "--s3-force-path-style",
            "--s3-access-key-id", c["AccessKeyId"], "--s3-secret-access-key", c["SecretAccessKey"],
            "--s3-session-token", c["SessionToken"], "--s3-no-check-bucket", "--low-level-retries", "1",
            "--retries", "1"]
    p = subprocess.run(base + ["cat", ":s3:immuta/sales/plain.txt"], capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == spec["plain_body"].encode(), p.stderr.decode()[-800:]
    # rclone reads a path it cannot HEAD as a directory: nothing of `data` comes out, and the root lists
    # only what the session may read.
    p = subprocess.run(base + ["cat", ":s3:immuta/data/q1.csv"], capture_output=True, timeout=60)
    assert p.stdout == b"", f"rclone read data/q1.csv with a session narrowed to sales: {p.stdout[:100]!r}"
    p = subprocess.run(base + ["lsf", ":s3:immuta/"], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()[-800:]
    assert p.stdout.decode().split() == ["sales/"], p.stdout


m.check("boto3 AssumeRole with a policy", assume_narrowed)
m.check("boto3 narrowed session reads sales only", narrowed_reads_sales_only)
m.check("boto3 whole session writes where its key may", whole_session_writes_where_its_key_may)
m.check("boto3 AssumeRoleWithWebIdentity", web_identity)
m.check("DuckDB s3_session_token", duckdb_reads)
m.check("pyarrow session_token", pyarrow_reads)
m.check("rclone session_token", rclone_reads)
m.done()
