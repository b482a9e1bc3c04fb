"""make_corpus.py: writes the small seed files of tests/fuzz/corpus/<target>/ (committed; rerun
only to regenerate them). Run with Debian's /usr/bin/python3 (needs torch, numpy, PIL).

Each seed is a valid (or nearly valid) input of a few hundred bytes at most, so the fuzzer starts
from the formats' real structure: safetensors with every dtype, scalars, empty tensors and
metadata; configs; VisA-style CSVs with quoting; .pth in zip and legacy form; .npy of every
supported dtype and rank 0..3; PNG (gray, RGB, RGBA, 16-bit, palette), JPEG and BMP images."""
import collections
import io
import os
import struct
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts", "twins"))
from stio import st_encode  # noqa: E402


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def seeds_safetensors():
    f32 = np.arange(6, dtype="<f4").tobytes()
    out("safetensors", "basic.st", st_encode([("w", "F32", [2, 3], f32)], {"format": "pt"}))
    out("safetensors", "dtypes.st", st_encode([
        ("a", "F16", [2], np.array([1, -2], "<f2").tobytes()),
        ("b", "BF16", [1], b"\x80\x3f"),
        ("c", "F64", [1], np.array([3.5], "<f8").tobytes()),
        ("d", "I64", [1], np.array([-7], "<i8").tobytes()),
        ("e", "I32", [], np.array([9], "<i4").tobytes()),
        ("f", "I16", [1], b"\x01\x00"), ("g", "I8", [1], b"\xff"), ("h", "U8", [2], b"\x01\x02"),
        ("i", "BOOL", [1], b"\x01"), ("j", "U16", [1], b"\x02\x00"),
        ("k", "U32", [1], b"\x03\x00\x00\x00"), ("l", "U64", [1], b"\x04" + b"\x00" * 7),
        ("z", "F32", [0, 4], b"")]))
    out("safetensors", "nometa.st", st_encode([("x", "F32", [1, 1, 1, 1], f32[:4])], pad=False))
    out("safetensors", "empty.st", st_encode([], {}))


def seeds_config():
    for name in ("tiny.json", "mvtec.json"):
        with open(os.path.join(ROOT, "configs", name), "rb") as f:
            out("config", name, f.read())
    out("config", "small.json", b'{"data": {"image_size": 128, "categories": ["bottle", "cable"]},'
                                b' "infer": {"grids": [8, 16], "scales": [1, 0.5]}}')
    out("config", "empty.json", b"{}")


def seeds_csv():
    out("csv", "visa.csv", b"object,split,label,image,mask\r\n"
                           b"candle,train,normal,candle/Data/Images/Normal/0000.JPG,\r\n"
                           b"candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\r\n")
    out("csv", "quoted.csv", b'\xef\xbb\xbfa,"b,c","d""e"\n\n"multi\nline",x\ry')
    out("csv", "one.csv", b"x")


def seeds_pth():
    small = collections.OrderedDict()
    small["w"] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    small["b"] = torch.tensor([1, 2], dtype=torch.int64)
    small["h"] = torch.tensor(1.5, dtype=torch.float16)
    small["v"] = torch.arange(4, dtype=torch.uint8)[1:3]
    small["n"] = {"x": torch.tensor([True]), 3: torch.zeros(0)}
    small["skip"] = 7
    for legacy, name in ((False, "zip.pth"), (True, "legacy.pth")):
        buf = io.BytesIO()
        torch.save(small, buf, _use_new_zipfile_serialization=not legacy)
        out("pth", name, buf.getvalue())
    buf = io.BytesIO()
    torch.save({"p": torch.nn.Parameter(torch.ones(2, 2))}, buf)
    out("pth", "param.pth", buf.getvalue())


def seeds_npy():
    def npy(a):
        b = io.BytesIO()
        np.save(b, a)
        return b.getvalue()
    out("npy", "f4_2d.npy", npy(np.arange(12, dtype="<f4").reshape(3, 4)))
    out("npy", "f8_3d.npy", npy(np.ones((1, 2, 2), "<f8")))
    out("npy", "u1.npy", npy(np.arange(5, dtype="u1")))
    out("npy", "i8_scalar.npy", npy(np.array(3, "<i8")))
    v2 = bytearray(npy(np.zeros((2, 2), "<f4")))
    # the same array as format 2.0 (4-byte header length)
    hl = struct.unpack("<H", v2[8:10])[0]
    hdr = v2[10:10 + hl]
    out("npy", "v2.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", len(hdr)) + hdr + v2[10 + hl:])


def seeds_image():
    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()
    rgb = Image.fromarray((np.arange(4 * 3 * 3) * 7 % 256).astype("u1").reshape(4, 3, 3))
    out("image", "rgb.png", save(rgb, "PNG"))
    out("image", "gray.png", save(rgb.convert("L"), "PNG"))
    out("image", "rgba.png", save(rgb.convert("RGBA"), "PNG"))
    out("image", "pal.png", save(rgb.convert("P"), "PNG"))
    out("image", "gray16.png", save(Image.fromarray(np.array([[0, 1], [300, 65535]], "<u2")).convert("I;16"), "PNG"))
    out("image", "rgb.jpg", save(rgb, "JPEG", quality=50))
    out("image", "rgb.bmp", save(rgb, "BMP"))
    out("image", "mask.bmp", save(rgb.convert("1"), "BMP"))


if __name__ == "__main__":
    seeds_safetensors(); seeds_config(); seeds_csv(); seeds_pth(); seeds_npy(); seeds_image()
    sys.exit(0)
