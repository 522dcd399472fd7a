"""pyarrow's S3FileSystem against s3p: endpoint_override HOST:PORT/s3p, scheme http, the API key and secret."""

from harness import (Matrix, expect_bytes, expect_denied, expect_eq, expected_rows, load_spec, part_of, require)

pa = require("pyarrow")
pafs = require("pyarrow.fs")
pq = require("pyarrow.parquet")
pads = require("pyarrow.dataset")

spec = load_spec()
m = Matrix("pyarrow S3FileSystem", f"pyarrow {pa.__version__}")


def fs(user, host_port=None):
    key, secret = spec.user(user)
    return pafs.S3FileSystem(access_key=key, secret_key=secret, region=spec.region, scheme="http",
                             endpoint_override=(host_port or spec.host_port) + spec.base_path)


def root(user):
    def f():
        infos = fs(user).get_file_info(pafs.FileSelector(spec.bucket))
        dirs = {i.base_name for i in infos if i.type == pafs.FileType.Directory}
        others = [i.path for i in infos if i.type != pafs.FileType.Directory]
        expect_eq(f"{user}'s root directories", dirs, spec.root_dirs(user))
        expect_eq(f"{user}'s root files", others, [])
        return ", ".join(sorted(dirs))
    return f


m.check("list root (alice)", root("alice"))
m.check("list root (bob)", root("bob"))


def recursive():
    base = f"{spec.bucket}/{spec.list_ds}"
    infos = fs(spec.list_user).get_file_info(pafs.FileSelector(base, recursive=True))
    files = {i.path[len(spec.bucket) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}
    dirs = {i.path[len(spec.bucket) + 1:] for i in infos if i.type == pafs.FileType.Directory}
    # S3FileSystem's rule: a key ending in `/` is a directory marker when empty, else a file named without the `/`.
    want_files, want_dirs = {}, set()
    for k, size in spec.list_sizes.items():
        if k.endswith("/") and size == 0:
            want_dirs.add(k[:-1])
        else:
            want_files[k.rstrip("/")] = size
        parts = k.split("/")
        for i in range(2, len(parts)):
            want_dirs.add("/".join(parts[:i]))
    want_dirs -= set(want_files)
    expect_eq("files", set(files), set(want_files))
    expect_eq("file sizes", files, want_files)
    expect_eq("directories", dirs, want_dirs)
    return f"{len(files)} files, {len(dirs)} directories"


m.check("list data source recursively (FileSelector recursive)", recursive)


def download():
    for user, key, want in spec.downloads:
        f = fs(user)
        with f.open_input_stream(f"{spec.bucket}/{key}") as s:
            expect_bytes(f"open_input_stream {key}", s.read(), want)
        with f.open_input_file(f"{spec.bucket}/{key}") as s:
            expect_eq(f"size of {key}", s.size(), len(want))
            tail = want[-7:]
            expect_bytes(f"read_at end of {key}", s.read_at(len(tail), len(want) - len(tail)), tail)
    return f"{len(spec.downloads)} objects, whole and ranged"


m.check("download byte for byte (open_input_stream, open_input_file ranges)", download)


def rows(table):
    d = table.select(["id", "city", "amount"]).to_pydict()
    return sorted(zip(d["id"], d["city"], d["amount"]))


def parquet():
    f = fs("alice")
    for key in spec.parquet["root_files"]:
        expect_eq(f"read_table {key}", rows(pq.read_table(f"{spec.bucket}/{key}", filesystem=f)),
                  expected_rows([part_of(key)]))
    # A dataset of the Parquet files found by listing the data source.
    infos = f.get_file_info(pafs.FileSelector(f"{spec.bucket}/{spec.list_ds}", recursive=True))
    paths = sorted(i.path for i in infos if i.path.endswith(".parquet"))
    expect_eq("Parquet files found by listing", paths, sorted(f"{spec.bucket}/{k}" for k in spec.parquet["all_files"]))
    table = pads.dataset(paths, filesystem=f, format="parquet").to_table()
    expect_eq("dataset rows", rows(table), expected_rows([part_of(k) for k in spec.parquet["all_files"]]))
    private = spec.parquet["private"]
    expect_eq(f"alice reads {private}", rows(pq.read_table(f"{spec.bucket}/{private}", filesystem=f)),
              expected_rows([part_of(private)]))
    return f"{len(paths)} files in a dataset, {table.num_rows} rows"


m.check("read Parquet (read_table, dataset)", parquet)
m.na("presign", "S3FileSystem cannot presign URLs")


def denied():
    f = fs(spec.denied_user)
    user, key, want = spec.control
    with f.open_input_stream(f"{spec.bucket}/{key}") as s:
        expect_bytes(f"control: {user} reads {key}", s.read(), want)
    for what, call in (
        (spec.denied_key, lambda: f.open_input_stream(f"{spec.bucket}/{spec.denied_key}").read()),
        (spec.parquet["private"], lambda: pq.read_table(f"{spec.bucket}/{spec.parquet['private']}", filesystem=f)),
    ):
        try:
            call()
        except OSError as e:
            expect_denied(f"reading {what}", e)
        else:
            raise AssertionError(f"{spec.denied_user} read {what}")
    infos = f.get_file_info(pafs.FileSelector(f"{spec.bucket}/{spec.denied_ds}", recursive=True, allow_not_found=True))
    expect_eq(f"{spec.denied_user}'s listing of {spec.denied_ds}", [i.path for i in infos], [])
    return "reads refused (AccessDenied), empty listing"


m.check(f"denied data source refused (bob, {spec.denied_ds})", denied)
# Writes, on the writable s3p.
WRITE = f"{spec.write_ds}/pyarrow"


def write_parquet():
    w = fs("alice", spec.write_host_port)
    n = 300_000
    table = pa.table({"id": list(range(n)), "label": [f"row {i}" for i in range(n)]})
    path = f"{spec.bucket}/{WRITE}/table.parquet"
    pq.write_table(table, path, filesystem=w)
    back = pq.read_table(path, filesystem=w)
    expect_eq("rows read back", back.num_rows, n)
    expect_eq("table read back", back.equals(table), True)
    # A raw stream of several MiB (multipart in pyarrow's S3 output stream) and a delete.
    data = bytes(range(256)) * (40 * 1024)
    with w.open_output_stream(f"{spec.bucket}/{WRITE}/raw.bin") as out:
        for i in range(0, len(data), 1 << 20):
            out.write(data[i:i + (1 << 20)])
    with w.open_input_stream(f"{spec.bucket}/{WRITE}/raw.bin") as inp:
        expect_bytes("raw stream read back", inp.read(), data)
    w.delete_file(f"{spec.bucket}/{WRITE}/raw.bin")
    info = w.get_file_info(f"{spec.bucket}/{WRITE}/raw.bin")
    expect_eq("deleted", info.type, pafs.FileType.NotFound)
    return f"Parquet ({n} rows) and a 10 MiB stream written and read back; delete"


def write_denied():
    table = pa.table({"a": [1]})
    for user, target in (("alice", f"{spec.list_ds}/pyarrow-denied.parquet"), ("bob", f"{WRITE}/denied.parquet")):
        try:
            pq.write_table(table, f"{spec.bucket}/{target}", filesystem=fs(user, spec.write_host_port))
        except OSError as e:
            expect_denied(f"write_table {target} ({user})", e)
        else:
            raise AssertionError(f"{user} wrote {target}")
    return "403"


m.check("upload: write_table, output stream, delete_file", write_parquet)
m.check("upload refused where not granted", write_denied)
m.done()
