"""DuckDB + httpfs against s3p: the extension is loaded from the PyPI package's file (works offline), and an S3
secret gives the endpoint HOST:PORT/s3p, path-style URLs, plain http, the API key and secret."""

import os

from harness import (Matrix, expect_bytes, expect_denied, expect_eq, expected_rows, load_spec, part_of, require)

duckdb = require("duckdb")
httpfs_pkg = require("duckdb_extension_httpfs")

spec = load_spec()
EXTENSION = os.path.join(os.path.dirname(httpfs_pkg.__file__), "extensions", f"v{duckdb.__version__}",
                         "httpfs.duckdb_extension")
m = Matrix("DuckDB httpfs", f"duckdb {duckdb.__version__}, extension {EXTENSION}")


def connect(user, host_port=None):
    if not os.path.exists(EXTENSION):
        raise AssertionError(f"no httpfs extension for duckdb {duckdb.__version__} at {EXTENSION}: pin "
                             "duckdb-extension-httpfs to the duckdb version in tests/requirements.txt")
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD '{EXTENSION}'")
    key, secret = spec.user(user)
    con.execute(
        f"CREATE SECRET s3p (TYPE s3, KEY_ID {sql_str(key)}, SECRET {sql_str(secret)}, REGION {sql_str(spec.region)}, "
        f"ENDPOINT {sql_str((host_port or spec.host_port) + spec.base_path)}, URL_STYLE 'path', USE_SSL false)"
    )
    return con


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def glob(con, pattern):
    return [r[0] for r in con.execute("SELECT file FROM glob(?)", [pattern]).fetchall()]


def strip(url):
    prefix = f"s3://{spec.bucket}/"
    if not url.startswith(prefix):
        raise AssertionError(f"unexpected URL {url}")
    return url[len(prefix):]


def root(user):
    def f():
        # DuckDB lists files, not directories: the data sources are the first segments of every key.
        files = [strip(u) for u in glob(connect(user), spec.url("**"))]
        dirs = {k.split("/", 1)[0] for k in files}
        expect_eq(f"{user}'s data sources (first segments of glob('s3://{spec.bucket}/**'))", dirs,
                  spec.root_dirs(user))
        return f"{', '.join(sorted(dirs))} ({len(files)} files)"
    return f


m.check("list root (alice, glob **: data sources seen)", root("alice"))
m.check("list root (bob, glob **: data sources seen)", root("bob"))


def recursive():
    files = [strip(u) for u in glob(connect(spec.list_user), spec.url(spec.list_ds + "/**"))]
    want = {k for k in spec.list_keys if not k.endswith("/")}
    expect_eq(f"glob {spec.list_ds}/**", set(files), want)
    expect_eq("no file twice", len(files), len(set(files)))
    return f"{len(files)} files"


m.check("list data source recursively (glob **)", recursive)


def download():
    cons = {}
    for user, key, want in spec.downloads:
        con = cons.setdefault(user, connect(user))
        got = con.execute("SELECT content, size FROM read_blob(?)", [spec.url(key)]).fetchall()
        expect_eq(f"read_blob {key} rows", len(got), 1)
        expect_bytes(f"read_blob {key}", bytes(got[0][0]), want)
        expect_eq(f"size of {key}", got[0][1], len(want))
    return f"{len(spec.downloads)} objects (read_blob)"


m.check("download byte for byte (read_blob)", download)


def rows(con, sql, params):
    return sorted(tuple(r) for r in con.execute(sql, params).fetchall())


def parquet():
    con = connect("alice")
    p = spec.parquet
    q = "SELECT id, city, amount FROM read_parquet(?)"
    expect_eq(p["root_glob"], rows(con, q, [spec.url(p["root_glob"])]),
              expected_rows([part_of(k) for k in p["root_files"]]))
    expect_eq(p["deep_glob"], rows(con, q, [spec.url(p["deep_glob"])]),
              expected_rows([part_of(k) for k in p["all_files"]]))
    expect_eq(p["private"], rows(con, q, [spec.url(p["private"])]), expected_rows([part_of(p["private"])]))
    n = con.execute("SELECT count(*) FROM read_parquet(?) WHERE id % 1000 = 7", [spec.url(p["deep_glob"])]).fetchone()
    expect_eq("filtered count", n[0], len(p["all_files"]) * 5)
    return f"read_parquet('{spec.url(p['root_glob'])}') and '{p['deep_glob']}'"


m.check("read Parquet (read_parquet with globs)", parquet)
m.na("presign", "DuckDB cannot presign URLs")


def denied():
    con = connect(spec.denied_user)
    user, key, want = spec.control
    got = con.execute("SELECT content FROM read_blob(?)", [spec.url(key)]).fetchone()
    expect_bytes(f"control: {user} reads {key}", bytes(got[0]), want)
    for sql, target in (("SELECT content FROM read_blob(?)", spec.denied_key),
                        ("SELECT count(*) FROM read_parquet(?)", spec.parquet["private"])):
        try:
            con.execute(sql, [spec.url(target)]).fetchall()
        except duckdb.Error as e:
            expect_denied(f"reading {target}", e)
        else:
            raise AssertionError(f"{spec.denied_user} read {target}")
    files = glob(con, spec.url(spec.denied_ds + "/**"))
    expect_eq(f"{spec.denied_user}'s glob of {spec.denied_ds}/**", files, [])
    return "reads refused (HTTP 403), empty glob"


m.check(f"denied data source refused (bob, {spec.denied_ds})", denied)

# Writes, on the writable s3p: COPY ... TO 's3://...' (DuckDB uploads with multipart).
WRITE = f"{spec.write_ds}/duckdb"


def copy_to():
    con = connect("alice", spec.write_host_port)
    target = spec.url(f"{WRITE}/out.parquet")
    con.execute(f"COPY (SELECT range AS id, 'row ' || range::VARCHAR AS name FROM range(200000)) "
                f"TO {sql_str(target)} (FORMAT parquet)")
    got = con.execute(f"SELECT count(*), sum(id), min(name), max(id) FROM read_parquet({sql_str(target)})").fetchone()
    expect_eq("rows read back", got, (200000, sum(range(200000)), "row 0", 199999))
    csv = spec.url(f"{WRITE}/out.csv")
    con.execute(f"COPY (SELECT 1 AS a, 'x' AS b) TO {sql_str(csv)} (FORMAT csv, HEADER)")
    raw = con.execute("SELECT content FROM read_blob(?)", [csv]).fetchone()[0]
    expect_bytes("CSV read back", bytes(raw), b"a,b\n1,x\n")
    return "Parquet (200,000 rows) and CSV written and read back"


def write_denied():
    for user, target in (("alice", f"{spec.list_ds}/duckdb-denied.parquet"), ("bob", f"{WRITE}/denied.parquet")):
        con = connect(user, spec.write_host_port)
        try:
            con.execute(f"COPY (SELECT 1 AS a) TO {sql_str(spec.url(target))} (FORMAT parquet)")
        except duckdb.Error as e:
            expect_denied(f"COPY TO {target} ({user})", e)
        else:
            raise AssertionError(f"{user} wrote {target}")
    return "403"


m.check("upload: COPY TO s3:// (Parquet, CSV)", copy_to)
m.check("upload refused where not granted", write_denied)
m.done()
