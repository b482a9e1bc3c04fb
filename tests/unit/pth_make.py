"""pth_make.py: writes the .pth files that tests/unit/test_pth.c reads, with the expected tensors.

Usage: pth_make.py OUTDIR   (run with Debian's python3, which has torch; exits 77 without torch)

Writes into OUTDIR:
  zip.pth, legacy.pth   one nested state dict (all dtypes, views, empty, scalar, parameter,
                        a conv net's state dict, int keys, non-tensor values), torch.save
                        default (zip) and _use_new_zipfile_serialization=False (legacy)
  zip64.pth             zip.pth with its central directory rewritten to ZIP64 form (every size
                        and offset in the ZIP64 extra field, ZIP64 end records)
  net_legacy.pth        a plain Conv2d+BatchNorm2d state dict, legacy (like efficientnet-b4-6ed6700e.pth)
  deflate.pth           zip.pth with DEFLATE-compressed entries (must be refused clearly)
  unknown_global.pth    a dict holding an argparse.Namespace (a global that must be refused)
  dup.pth               {"a.b": t, "a": {"b": t}}: two entries that flatten to one name
  NAME.expect           for each loadable NAME: "skipped N", then one line per tensor:
                        "name dtype ndim dim... binfile" (binfile: contiguous little-endian bytes)
"""
import argparse
import collections
import os
import struct
import sys
import zipfile

try:
    import torch
except ImportError:
    print("pth_make.py: torch is not importable by", sys.executable)
    sys.exit(77)

DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
         torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
         torch.uint8: "U8", torch.bool: "BOOL"}


def flatten(d, prefix, out, skipped):
    """The naming rule of pth.h: nested dicts joined with '.', int keys in decimal."""
    for k, v in d.items():
        if isinstance(v, torch.Tensor):
            out.append((prefix + str(k), v))
        elif isinstance(v, dict):
            flatten(v, prefix + str(k) + ".", out, skipped)
        else:
            skipped[0] += 1


def raw_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_expect(outdir, name, obj):
    tensors, skipped = [], [0]
    flatten(obj, "", tensors, skipped)
    bindir = os.path.join(outdir, name + ".d")
    os.makedirs(bindir, exist_ok=True)
    with open(os.path.join(outdir, name + ".expect"), "w") as f:
        f.write("skipped %d\n" % skipped[0])
        for i, (n, t) in enumerate(tensors):
            binfile = os.path.join(name + ".d", "%d.bin" % i)
            with open(os.path.join(outdir, binfile), "wb") as b:
                b.write(raw_bytes(t))
            f.write("%s %s %d %s %s\n" % (n, DTYPE[t.dtype], t.dim(), " ".join(str(s) for s in t.shape), binfile))


def make_zip64(src, dst):
    """Rewrites the central directory of a stored zip with ZIP64 extra fields and end records."""
    data = open(src, "rb").read()
    with zipfile.ZipFile(src) as z:
        infos = z.infolist()
        cd_start = z.start_dir
    # local headers and data stay as they are; everything after them is rebuilt
    body = bytearray(data[:cd_start])
    cd = bytearray()
    for i in infos:
        name = i.filename.encode()
        extra = struct.pack("<HHQQQ", 0x0001, 24, i.file_size, i.compress_size, i.header_offset)
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, i.flag_bits, i.compress_type, 0, 0,
                          i.CRC, 0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0, 0xFFFFFFFF)
        cd += name + extra
    cd_off = len(body)
    body += cd
    z64_off = len(body)
    body += struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, len(infos), len(infos), len(cd), cd_off)
    body += struct.pack("<IIQI", 0x07064b50, 0, z64_off, 1)
    body += struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    open(dst, "wb").write(bytes(body))


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(1234)

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1))
    net.train()
    net(torch.randn(2, 3, 8, 8))  # running stats and num_batches_tracked become non-trivial
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1.0
    inner = collections.OrderedDict()
    inner["f32"] = torch.randn(3, 4)
    inner["f16"] = torch.randn(5).half()
    inner["bf16"] = torch.randn(6).bfloat16()
    inner["f64"] = torch.randn(2, 2, 2, dtype=torch.float64)
    inner["i64"] = torch.arange(-3, 4, dtype=torch.int64) * 1000000007
    inner["i32"] = torch.tensor([-5, 7, 2 ** 30], dtype=torch.int32)
    inner["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    inner["i8"] = torch.tensor([-128, 127, 0], dtype=torch.int8)
    inner["u8"] = torch.randint(0, 256, (2, 5), dtype=torch.uint8)
    inner["bool"] = torch.tensor([True, False, True, True])
    inner["empty"] = torch.zeros(0, 3)
    inner["scalar"] = torch.tensor(3.25)
    inner["base"] = base
    inner["base_t"] = base.t()                 # a transposed view sharing base's storage
    inner["slice"] = base[1:, 1:3]             # storage offset + non-contiguous
    inner["row"] = base[2]                     # contiguous, storage offset 8
    inner["col"] = base[:, 3]                  # 1-d, stride 4
    inner["expand"] = torch.arange(3.0).expand(2, 3)  # stride 0
    inner["param"] = torch.nn.Parameter(torch.randn(2, 2))
    inner["net"] = net.state_dict()
    obj = {"state_dict": inner, "epoch": 7, "arch": "convnet", "lr": 0.5, "by_index": {0: torch.ones(2), 1: torch.zeros(1)},
           "history": [1, 2]}

    torch.save(obj, os.path.join(outdir, "zip.pth"))
    torch.save(obj, os.path.join(outdir, "legacy.pth"), _use_new_zipfile_serialization=False)
    write_expect(outdir, "zip.pth", obj)
    write_expect(outdir, "legacy.pth", obj)
    make_zip64(os.path.join(outdir, "zip.pth"), os.path.join(outdir, "zip64.pth"))
    write_expect(outdir, "zip64.pth", obj)
    # sanity: Python reads the ZIP64 rewrite too
    assert torch.equal(torch.load(os.path.join(outdir, "zip64.pth"))["state_dict"]["f32"], inner["f32"])

    sd = net.state_dict()
    torch.save(sd, os.path.join(outdir, "net_legacy.pth"), _use_new_zipfile_serialization=False)
    write_expect(outdir, "net_legacy.pth", sd)

    with zipfile.ZipFile(os.path.join(outdir, "zip.pth")) as zin, \
            zipfile.ZipFile(os.path.join(outdir, "deflate.pth"), "w", zipfile.ZIP_DEFLATED) as zout:
        for i in zin.infolist():
            zout.writestr(i.filename, zin.read(i.filename))

    torch.save({"w": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, os.path.join(outdir, "unknown_global.pth"))
    t = torch.ones(2)
    torch.save({"a.b": t, "a": {"b": t * 2}}, os.path.join(outdir, "dup.pth"))


if __name__ == "__main__":
    main()
