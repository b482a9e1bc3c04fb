"""stio.py: the safetensors reader and writer of drdc's Python scripts and tests (numpy + struct +
json; the `safetensors` package is not installed).

The format as the safetensors package writes it: an 8-byte little-endian header length, a JSON
header (an optional "__metadata__" of strings, then per tensor its dtype, shape and byte range in
the data area) padded with spaces to a multiple of 8, then the tensors' little-endian bytes with
no holes, ordered by element size (largest first), then name.

  st_write(path, tensors, metadata=None, dtype=None)  numpy arrays or torch tensors; dtype casts all
  st_read(path, convert=None) -> (tensors, metadata)   numpy arrays (convert: e.g. torch.from_numpy)
  st_parse(blob) -> (header, data, metadata)           the raw pieces, for tests that check layout
  st_array(entry, data) -> numpy array                 one header entry's tensor (BF16 as float32)
  st_encode(entries, metadata=None, pad=True) -> bytes (name, dtype, shape, raw bytes) in file order

Scripts run as `/usr/bin/python3 path/to/script.py` put this folder on sys.path (relative to their
own __file__) to import it.
"""
import json
import os
import struct

import numpy as np

# safetensors dtype -> numpy little-endian type (BF16 has none: st_array widens it to float32)
NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
         "I8": "i1", "U8": "u1", "BOOL": "?", "BF16": None}
NAMES = {np.dtype(t).str: name for name, t in NUMPY.items() if t}   # "<f4" -> "F32", "|b1" -> "BOOL"


def st_encode(entries, metadata=None, pad=True):
    """The file's bytes from (name, dtype, shape, raw) entries, in the given order. metadata None
    leaves "__metadata__" out; pad False leaves the header unpadded (not valid safetensors)."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def _numpy(value, dtype):
    if hasattr(value, "detach"):   # a torch tensor
        value = value.detach().cpu().numpy()
    a = np.asarray(value, dtype=dtype)
    return a.astype(a.dtype.newbyteorder("<"), copy=False)


def st_write(path, tensors, metadata=None, dtype=None):
    """Writes {name: array or tensor} (shapes kept, 0-dim included) through a temporary file.
    dtype (e.g. "<f4") converts every tensor first; without it each keeps its own dtype."""
    arrays = {name: _numpy(v, dtype) for name, v in tensors.items()}
    for name, a in arrays.items():
        if a.dtype.str not in NAMES:
            raise ValueError("%s: unsupported dtype %s" % (name, a.dtype))
    order = sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n))
    blob = st_encode([(n, NAMES[arrays[n].dtype.str], arrays[n].shape, arrays[n].tobytes(order="C"))
                      for n in order], metadata)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)


def st_parse(blob):
    """(header without "__metadata__", data area, metadata) of a file's bytes."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    return header, blob[8 + n:], meta


def st_array(entry, data):
    """One tensor of the data area as a numpy array of its shape (a copy; BF16 widened to float32)."""
    b, e = entry["data_offsets"]
    raw = data[b:e]
    if entry["dtype"] == "BF16":
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        a = np.frombuffer(raw, dtype=NUMPY[entry["dtype"]])
    return a.reshape(entry["shape"]).copy()


def st_read(path, convert=None):
    """({name: numpy array}, metadata) of a file; convert (e.g. torch.from_numpy) maps each array."""
    with open(path, "rb") as f:
        header, data, meta = st_parse(f.read())
    out = {}
    for name, entry in header.items():
        a = st_array(entry, data)
        out[name] = convert(a) if convert else a
    return out, meta
