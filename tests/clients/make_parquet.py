"""Writes the Parquet parts of the client matrix: `python make_parquet.py OUTDIR PART...` -> OUTDIR/cities-PART.parquet.

The rows come from harness.parquet_rows, which the reading clients compare against. Small row groups, so that
readers issue several ranged GETs per file.
"""

import os
import sys

from harness import parquet_rows, require

pa = require("pyarrow")
pq = require("pyarrow.parquet")

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for part in (int(p) for p in sys.argv[2:]):
    rows = parquet_rows(part)
    table = pa.table(
        {
            "id": pa.array(rows["id"], pa.int64()),
            "city": pa.array(rows["city"], pa.string()),
            "amount": pa.array(rows["amount"], pa.float64()),
        }
    )
    pq.write_table(table, os.path.join(out, f"cities-{part}.parquet"), row_group_size=1000)
print("ok")
