"""Reads a lake table with delta-rs (the `deltalake` package), an
implementation of the Delta protocol independent of ours, and prints what the
tests check as one JSON object.

usage: read_delta.py TABLE_URI STORAGE_OPTIONS_JSON|null [TXN_APP_ID ...]
"""
import json
import os
import sys

from deltalake import DeltaTable

uri = sys.argv[1]
options = json.loads(sys.argv[2])
apps = sys.argv[3:]
dt = DeltaTable(uri, storage_options=options)
table = dt.to_pyarrow_table()
rows = table.to_pylist()
for r in rows:
    for k, v in list(r.items()):
        if hasattr(v, "isoformat"):
            r[k] = v.isoformat()
        elif k in ("metrics", "tags") and v is not None:
            r[k] = dict(v)
rows.sort(key=lambda r: (r["source_partition"], r["source_offset"]))
print(json.dumps({
    "version": dt.version(),
    "partition_columns": dt.metadata().partition_columns,
    "schema": {f.name: str(f.type) for f in table.schema},
    "files": len(dt.file_uris()),
    "txn": {a: dt.transaction_version(a) for a in apps},
    "rows": rows,
}))
sys.stdout.flush()
# Under load, pyarrow's and delta-rs' thread pools sometimes abort the
# interpreter's teardown ("terminate called without an active exception")
# after everything is printed: leave without one.
os._exit(0)
