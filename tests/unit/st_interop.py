#!/usr/bin/env python3
"""st_interop.py: the Python side of test_safetensors' interoperability test.

Written with numpy + struct + json only (the `safetensors` package is not installed), following
the format as the safetensors package writes it: 8-byte little-endian header length, JSON header
padded with spaces, tensors ordered by element size (largest first) then name, no holes.

  st_interop.py write PATH   writes the file that the C test reads and checks
  st_interop.py check PATH   checks the file that the C test wrote; exit 0 if it matches, else 1
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64, "I64": np.int64,
          "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def write(path):
    tensors = {
        "weight": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.25 - 0.5,
        "half": np.array([1.0, -2.5, 65504.0, 2.0 ** -24], dtype=np.float16),
        "index": np.array([-7, 0, 2 ** 40 + 3], dtype=np.int64),
    }
    names = {np.float32: "F32", np.float16: "F16", np.int64: "I64"}
    order = sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n))
    header = {"__metadata__": {"format": "st_interop", "answer": "42"}}
    offset = 0
    for n in order:
        a = tensors[n]
        header[n] = {"dtype": names[a.dtype.type], "shape": list(a.shape),
                     "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for n in order:
            f.write(tensors[n].astype(tensors[n].dtype.newbyteorder("<")).tobytes())


def fail(msg):
    print("st_interop check: " + msg, file=sys.stderr)
    sys.exit(1)


def check(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    if n % 8 != 0:
        fail(f"header length {n} is not a multiple of 8")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
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
        b, end = e["data_offsets"]
        raw = data[b:end]
        if e["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(DTYPES[e["dtype"]]).newbyteorder("<"))
        itemsize = 2 if e["dtype"] == "BF16" else np.dtype(DTYPES[e["dtype"]]).itemsize
        if b % itemsize != 0:
            fail(f"{name} starts at {b}, not aligned to {itemsize}")
        return e["dtype"], e["shape"], arr.reshape(e["shape"])

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
