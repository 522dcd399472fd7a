"""polars against s3p: storage_options with the endpoint URL (http://HOST:PORT/s3p), plain http allowed, path
style, the API key and secret, the region."""

from harness import (Matrix, expect_denied, expect_eq, expected_rows, load_spec, part_of, require)

pl = require("polars")

spec = load_spec()
m = Matrix("polars", f"polars {pl.__version__}")


def storage_options(user, endpoint=None):
    key, secret = spec.user(user)
    return {
        "aws_access_key_id": key,
        "aws_secret_access_key": secret,
        "aws_region": spec.region,
        "aws_endpoint_url": endpoint or spec.endpoint,
        "aws_allow_http": "true",
        "aws_virtual_hosted_style_request": "false",
    }


def rows(df):
    return sorted(df.select(["id", "city", "amount"]).iter_rows())


m.na("list root", "polars has no directory listing (its globs list keys: see the recursive check)")


def recursive():
    lf = pl.scan_parquet(spec.url(spec.parquet["deep_glob"]), storage_options=storage_options(spec.list_user),
                         include_file_paths="path")
    paths = sorted(lf.select("path").unique().collect()["path"].to_list())
    expect_eq(f"files matched by {spec.parquet['deep_glob']}", paths,
              sorted(spec.url(k) for k in spec.parquet["all_files"]))
    return f"{len(paths)} Parquet files found under {spec.list_ds}/ (scan_parquet **/*.parquet)"


m.check("list data source recursively (glob **/*.parquet)", recursive)


def download():
    n = 0
    for user, key, want in spec.downloads:
        try:
            text = want.decode("utf-8")
        except UnicodeDecodeError:
            continue  # polars reads tables and lines, not raw bytes
        lines = pl.read_lines(spec.url(key), storage_options=storage_options(user), glob=False)["line"].to_list()
        expect_eq(f"lines of {key}", "\n".join(lines), text)
        n += 1
    expect_eq("some text objects were read", n > 0, True)
    return f"{n} text objects (read_lines); binary objects: n/a"


m.check("download text objects (read_lines)", download)


def parquet():
    opts = storage_options("alice")
    p = spec.parquet
    for key in p["root_files"]:
        expect_eq(f"read_parquet {key}", rows(pl.read_parquet(spec.url(key), storage_options=opts)),
                  expected_rows([part_of(key)]))
    expect_eq(p["root_glob"], rows(pl.scan_parquet(spec.url(p["root_glob"]), storage_options=opts).collect()),
              expected_rows([part_of(k) for k in p["root_files"]]))
    expect_eq(p["private"], rows(pl.read_parquet(spec.url(p["private"]), storage_options=opts)),
              expected_rows([part_of(p["private"])]))
    n = pl.scan_parquet(spec.url(p["deep_glob"]), storage_options=opts).filter(pl.col("id") % 1000 == 7) \
        .select(pl.len()).collect().item()
    expect_eq("filtered count", n, len(p["all_files"]) * 5)
    return "read_parquet, scan_parquet with globs"


m.check("read Parquet (read_parquet, scan_parquet)", parquet)
m.na("presign", "polars cannot presign URLs")


def denied():
    opts = storage_options(spec.denied_user)
    user, key, want = spec.control
    lines = pl.read_lines(spec.url(key), storage_options=opts, glob=False)["line"].to_list()
    expect_eq(f"control: {user} reads {key}", "\n".join(lines), want.decode())
    try:
        pl.read_parquet(spec.url(spec.parquet["private"]), storage_options=opts)
    except Exception as e:  # noqa: BLE001 - polars raises several types for object store errors
        expect_denied(f"reading {spec.parquet['private']}", e)
    else:
        raise AssertionError(f"{spec.denied_user} read {spec.parquet['private']}")
    try:
        df = pl.scan_parquet(spec.url(spec.denied_ds + "/*.parquet"), storage_options=opts).collect()
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not any(s in msg.lower() for s in ("no files", "empty", "not found", "403", "accessdenied")):
            raise AssertionError(f"glob of {spec.denied_ds}/*.parquet failed for another reason: {e}") from e
        return f"read refused (403), glob of {spec.denied_ds}/ finds nothing ({type(e).__name__}: {msg[:120]})"
    raise AssertionError(f"{spec.denied_user} globbed {spec.denied_ds}/*.parquet: {df.height} rows")


m.check(f"denied data source refused (bob, {spec.denied_ds})", denied)
# Writes, on the writable s3p.
WRITE = f"{spec.write_ds}/polars"


def write_parquet():
    opts = storage_options("alice", spec.write_endpoint)
    n = 250_000
    df = pl.DataFrame({"id": list(range(n)), "label": [f"row {i}" for i in range(n)]})
    target = spec.url(f"{WRITE}/frame.parquet")
    df.write_parquet(target, storage_options=opts)
    back = pl.read_parquet(target, storage_options=opts)
    expect_eq("frame read back", back.equals(df), True)
    csv = spec.url(f"{WRITE}/frame.csv")
    df.head(3).write_csv(csv, storage_options=opts)
    expect_eq("CSV read back", pl.read_csv(csv, storage_options=opts).equals(df.head(3)), True)
    return f"Parquet ({n} rows) and CSV written and read back"


def write_denied():
    df = pl.DataFrame({"a": [1]})
    for user, target in (("alice", f"{spec.list_ds}/polars-denied.parquet"), ("bob", f"{WRITE}/denied.parquet")):
        try:
            df.write_parquet(spec.url(target), storage_options=storage_options(user, spec.write_endpoint))
        except Exception as e:  # noqa: BLE001 - polars raises its own error types for cloud failures
            expect_denied(f"write_parquet {target} ({user})", e)
        else:
            raise AssertionError(f"{user} wrote {target}")
    return "403"


m.check("upload: write_parquet, write_csv", write_parquet)
m.check("upload refused where not granted", write_denied)
m.done()
