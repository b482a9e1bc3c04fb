#!/usr/bin/env python3
"""st_interop.py: the Python side of test_safetensors' interoperability test.

Reads and writes through scripts/twins/stio.py (numpy + struct + json; the `safetensors` package
is not installed), which follows the format as the safetensors package writes it: 8-byte
little-endian header length, JSON header padded with spaces, tensors ordered by element size
(largest first) then name, no holes.

  st_interop.py write PATH   writes the file that the C test reads and checks
  st_interop.py check PATH   checks the file that the C test wrote; exit 0 if it matches, else 1
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "twins"))
from stio import NUMPY, st_array, st_parse, st_write  # noqa: E402


def write(path):
    tensors = {
        "weight": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.25 - 0.5,
        "half": np.array([1.0, -2.5, 65504.0, 2.0 ** -24], dtype=np.float16),
        "index": np.array([-7, 0, 2 ** 40 + 3], dtype=np.int64),
    }
    st_write(path, tensors, {"format": "st_interop", "answer": "42"})


def fail(msg):
    print("st_interop check: " + msg, file=sys.stderr)
    sys.exit(1)


def check(path):
    blob = open(path, "rb").read()
    n = int.from_bytes(blob[:8], "little")
    if n % 8 != 0:
        fail(f"header length {n} is not a multiple of 8")
    header, data, meta = st_parse(blob)
    want_meta = {"config": '{"a": 1}', "unicode": "gr\u00fc\u00dfe"}
    if meta != want_meta:
        fail(f"metadata {meta!r} != {want_meta!r}")
    # no holes, no overlap, every byte of the data area used (what the safetensors package demands)
    spans = sorted(tuple(e["data_offsets"]) for e in header.values())
    pos = 0
    for b, e in spans:
        if b != pos:
            fail(f"data not contiguous: a tensor starts at {b}, expected {pos}")
        pos = e
    if pos != len(data):
        fail(f"data area is {len(data)} bytes but tensors cover {pos}")

    def get(name):
        e = header[name]
        itemsize = np.dtype(NUMPY[e["dtype"]] or "<u2").itemsize   # BF16: 2 bytes
        if e["data_offsets"][0] % itemsize != 0:
            fail(f"{name} starts at {e['data_offsets'][0]}, not aligned to {itemsize}")
        return e["dtype"], e["shape"], st_array(e, data)

    want = {
        "weights": ("F32", [2, 2], np.array([[1.5, -2.0], [3.25, 1e-3]], dtype=np.float32)),
        "mask": ("BOOL", [3], np.array([True, False, True])),
        "bf": ("BF16", [2], np.array([1.0, -0.5], dtype=np.float32)),
        "step": ("I64", [], np.array(123456789012, dtype=np.int64)),
    }
    if sorted(header) != sorted(want):
        fail(f"tensor names {sorted(header)} != {sorted(want)}")
    for name, (dtype, shape, values) in want.items():
        got_dtype, got_shape, arr = get(name)
        if got_dtype != dtype or got_shape != shape:
            fail(f"{name}: {got_dtype} {got_shape}, expected {dtype} {shape}")
        if not np.array_equal(arr, values):
            fail(f"{name}: values {arr!r} != {values!r}")
    print("st_interop check: ok")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    (write if sys.argv[1] == "write" else check)(sys.argv[2])
