#!/usr/bin/env python3
"""twin_backbone.py: the PyTorch twin of src/stages/backbone.c, for tests/golden/test_backbone.c.

For each case it builds a small backbone with random (seeded) weights in PyTorch, runs it on a
random batch and writes one safetensors file DIR/<case>.safetensors holding
  - the weights, under their PyTorch state-dict names (BatchNorm num_batches_tracked included),
  - twin.input      [B,3,H,W] in [0,1]
  - twin.block.N    the raw output of each chosen feature block N
  - twin.features   [B,C,H/16,W/16]: the blocks resized (bilinear, align_corners=True), concatenated
  - twin.logits     [B,classes]
and __metadata__ {arch, image_size, blocks}. The C test loads the weights into its own model,
runs the same input and compares every tensor.

References:
  - mobilenet_v2: transcribed here from ../shared/weights/README.md (TF-SAME padding computed from
    the input, BatchNorm folded into conv biases, ReLU6, input x*2-1).
  - efficientnet-b*: the real port, `efficientnet_pytorch` 0.7.1 (lukemelas), and
    efficientnet-lite*: `efficientnet_lite_pytorch` 0.1.0, both pure Python, fetched into
    build/pydeps by scripts/setup/fetch_pydeps.sh. Where they are absent these cases are skipped
    (a line on stderr says so); the C test then reports them as skipped.
BatchNorm statistics and affine parameters are randomised too, so that eval-mode BN is tested.

Usage: /usr/bin/python3 scripts/twins/twin_backbone.py --out DIR [--cases a,b] [--pydeps DIR]
Exit 77 when torch itself is missing.
"""
import argparse
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    print("twin_backbone: needs numpy and torch (Debian python3-torch): %s" % e, file=sys.stderr)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from stio import st_write  # noqa: E402

# name: (arch, image size, batch, seed)
CASES = {
    "mobilenet_v2_64": ("mobilenet_v2", 64, 2, 1),
    "mobilenet_v2_224": ("mobilenet_v2", 224, 1, 2),
    "efficientnet-b0_64": ("efficientnet-b0", 64, 2, 3),
    "efficientnet-b4_224": ("efficientnet-b4", 224, 1, 4),
    "efficientnet-lite4_64": ("efficientnet-lite4", 64, 2, 5),
}

# Default feature blocks (backbone.h): mobilenet_v2 1,3,6,13; EfficientNets the last block of
# the stride-2, 4, 8 stages and of the last stride-16 stage. Written independently of the C
# code: from the port's own block list (stride and resolution changes), see effnet_blocks.
MNV2_BLOCKS = [1, 3, 6, 13]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# ---- MobileNetV2, from ../shared/weights/README.md ------------------------------------------
def tf_same(x, k, s):
    """TF 'SAME' padding: out = ceil(in/s), total = max((out-1)*s + k - in, 0), odd pixel after."""
    def pads(n):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return total // 2, total - total // 2
    (t, b), (l, r) = pads(x.shape[-2]), pads(x.shape[-1])
    return F.pad(x, [l, r, t, b])


def conv_same(conv, x):
    k, s = conv.kernel_size[0], conv.stride[0]
    return F.conv2d(tf_same(x, k, s), conv.weight, conv.bias, s, 0, 1, conv.groups)


class InvertedResidual(nn.Module):
    def __init__(self, inp, out, stride, expand):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        if expand == 1:  # features.1: depthwise (conv.0.0), project (conv.1)
            self.conv = nn.Sequential(nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, groups=hidden)),
                                      nn.Conv2d(hidden, out, 1))
        else:            # expand (conv.0.0), depthwise (conv.1.0), project (conv.2)
            self.conv = nn.Sequential(nn.Sequential(nn.Conv2d(inp, hidden, 1)),
                                      nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, groups=hidden)),
                                      nn.Conv2d(hidden, out, 1))

    def forward(self, x):
        h = x
        convs = [m[0] if isinstance(m, nn.Sequential) else m for m in self.conv]
        for i, c in enumerate(convs):
            h = conv_same(c, h)
            if i < len(convs) - 1:
                h = F.relu6(h)
        return x + h if self.use_res else h


class MobileNetV2(nn.Module):
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]

    def __init__(self):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(3, 32, 3, 2))]
        inp = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(nn.Sequential(nn.Conv2d(inp, 1280, 1)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1001))

    def run(self, images, blocks):
        """images in [0,1] -> (logits, {block: output})"""
        x = images * 2 - 1
        outs = {}
        for i, layer in enumerate(self.features):
            if i == 0 or i == len(self.features) - 1:
                x = F.relu6(conv_same(layer[0], x))
            else:
                x = layer(x)
            if i in blocks:
                outs[i] = x
        x = x.mean(dim=(2, 3))
        return self.classifier[1](x), outs


# ---- EfficientNet via the real port ------------------------------------------------------------
def load_port(arch, pydeps):
    if pydeps and os.path.isdir(pydeps) and pydeps not in sys.path:
        sys.path.insert(0, pydeps)
    try:
        if "lite" in arch:
            from efficientnet_lite_pytorch import EfficientNet
        else:
            from efficientnet_pytorch import EfficientNet
    except ImportError as e:
        return None, str(e)
    return EfficientNet, None


def effnet_blocks(model, size):
    """Default feature blocks read off the built port: the last block of each stride-2, 4, 8
    stage and the last block at stride 16, found by running a probe through the blocks."""
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        x = model._bn0(model._conv_stem(x))
        res = []
        for i, blk in enumerate(model._blocks):
            x = blk(x)
            res.append(size // x.shape[-1])
    last = {}
    for i, r in enumerate(res):
        last[r] = i
    return [last[2], last[4], last[8], last[16]]


def randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


def run_case(name, arch, size, batch, seed, out_dir, pydeps):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    if arch == "mobilenet_v2":
        model = MobileNetV2()
        blocks = MNV2_BLOCKS
        norm = lambda x: x  # noqa: E731 (inside run)
    else:
        EfficientNet, err = load_port(arch, pydeps)
        if EfficientNet is None:
            print("twin_backbone: skipping %s: the EfficientNet port is not installed (%s); run "
                  "scripts/setup/fetch_pydeps.sh" % (name, err), file=sys.stderr)
            return False
        model = EfficientNet.from_name(arch)   # note: never set_swish(): on lite it replaces ReLU6
        with torch.no_grad():
            randomise_bn(model, gen)
        blocks = effnet_blocks(model, size)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        norm = lambda x: (x - mean) / std  # noqa: E731
    model.eval()
    images = torch.rand(batch, 3, size, size, generator=gen)
    with torch.no_grad():
        if arch == "mobilenet_v2":
            logits, outs = model.run(images, set(blocks))
        else:
            outs, hooks = {}, []
            for i in blocks:
                hooks.append(model._blocks[i].register_forward_hook(
                    lambda mod, inp, out, i=i: outs.__setitem__(i, out)))
            logits = model(norm(images))
            for h in hooks:
                h.remove()
        feats = torch.cat([F.interpolate(outs[i], size=(size // 16, size // 16), mode="bilinear",
                                         align_corners=True) for i in blocks], dim=1)
    # 0-dim buffers (BatchNorm's num_batches_tracked, which drdc ignores) as shape [1], as always
    tensors = {k: np.atleast_1d(v.detach().numpy()) for k, v in model.state_dict().items()}
    tensors["twin.input"] = images.numpy()
    for i in blocks:
        tensors["twin.block.%d" % i] = outs[i].numpy()
    tensors["twin.features"] = feats.numpy()
    tensors["twin.logits"] = logits.numpy()
    meta = {"arch": arch, "image_size": size, "blocks": ",".join(str(b) for b in blocks),
            "channels": feats.shape[1]}
    path = os.path.join(out_dir, name + ".safetensors")
    st_write(path, tensors, meta)
    print("twin_backbone: %s: %s %dpx batch %d blocks %s -> features %s" %
          (name, arch, size, batch, meta["blocks"], list(feats.shape)))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the case files")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    ap.add_argument("--pydeps", default=os.environ.get("DRDC_PYDEPS", os.path.join(SOURCE, "build", "pydeps")),
                    help="folder with efficientnet_pytorch / efficientnet_lite_pytorch")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for name in a.cases.split(","):
        if name not in CASES:
            print("twin_backbone: unknown case %s (known: %s)" % (name, ", ".join(CASES)), file=sys.stderr)
            return 2
        run_case(name, *CASES[name], a.out, a.pydeps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
