#!/usr/bin/python3
"""twin_unet.py: the PyTorch twin of src/stages/unet.c (DRDC's refiner U-Net, paper 4.5).

A transcription of the subset of openai/guided-diffusion's UNetModel that drdc builds
(guided_diffusion/unet.py and nn.py): use_scale_shift_norm=True, conv_resample=True,
resblock_updown=False, num_head_channels given, use_new_attention_order=False
(QKVAttentionLegacy), no class embedding, no fp16, no gradient checkpointing (which changes
memory, not values). Module and parameter names are guided-diffusion's, so the state dict is the
one the C model loads. DRDC's input is concat(x_t, cond) on channels (6 in, 3 out).

Built tiny and seeded, it writes one safetensors file (all F32) that tests/golden/test_unet.c reads:
  param.<name>   every weight, RANDOMISED (the zero_module layers too, else eps would be 0)
  input.x_t      [B,3,H,W]   input.cond [B,3,H,W]   input.t [B] (integer values)
  input.target   [B,3,H,W]   the regression target of the loss
  out.temb       [B,C]       timestep_embedding(t, C)
  out.eps        [B,3,H,W]   the network output (dropout 0, so train == eval)
  out.loss       []          F.mse_loss(eps, target)
  grad.<name>    d loss / d param

Run with Debian's /usr/bin/python3 (torch 1.13):  twin_unet.py --out FILE [options]
--attention-res takes resolutions (as drdc's config); they become guided-diffusion's
attention_resolutions (downsample rates) as image_size // res.
"""
import argparse
import json
import math
import os
import sys
from abc import abstractmethod

import torch as th
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stio import st_write  # noqa: E402


# ---- guided_diffusion/nn.py --------------------------------------------------------------

class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def conv_nd(dims, *args, **kwargs):
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    elif dims == 2:
        return nn.Conv2d(*args, **kwargs)
    raise ValueError(f"unsupported dimensions: {dims}")


def linear(*args, **kwargs):
    return nn.Linear(*args, **kwargs)


def zero_module(module):
    for p in module.parameters():
        p.detach().zero_()
    return module


def normalization(channels):
    return GroupNorm32(32, channels)


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = th.exp(
        -math.log(max_period) * th.arange(start=0, end=half, dtype=th.float32) / half
    ).to(device=timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    embedding = th.cat([th.cos(args), th.sin(args)], dim=-1)
    if dim % 2:
        embedding = th.cat([embedding, th.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


# ---- guided_diffusion/unet.py (subset) ---------------------------------------------------

class TimestepBlock(nn.Module):
    @abstractmethod
    def forward(self, x, emb):
        """Apply the module to `x` given `emb` timestep embeddings."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb):
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            else:
                x = layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels, use_conv, dims=2, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = conv_nd(dims, self.channels, self.out_channels, 3, padding=1)

    def forward(self, x):
        assert x.shape[1] == self.channels
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.use_conv:
            x = self.conv(x)
        return x


class Downsample(nn.Module):
    def __init__(self, channels, use_conv, dims=2, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        assert use_conv
        self.op = conv_nd(dims, self.channels, self.out_channels, 3, stride=2, padding=1)

    def forward(self, x):
        assert x.shape[1] == self.channels
        return self.op(x)


class ResBlock(TimestepBlock):
    def __init__(self, channels, emb_channels, dropout, out_channels=None, use_scale_shift_norm=False, dims=2):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels),
            nn.SiLU(),
            conv_nd(dims, channels, self.out_channels, 3, padding=1),
        )
        self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        while len(emb_out.shape) < len(h.shape):
            emb_out = emb_out[..., None]
        if self.use_scale_shift_norm:
            out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = th.chunk(emb_out, 2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
            h = out_rest(h)
        else:
            h = h + emb_out
            h = self.out_layers(h)
        return self.skip_connection(x) + h


class QKVAttentionLegacy(nn.Module):
    def __init__(self, n_heads):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv):
        bs, width, length = qkv.shape
        assert width % (3 * self.n_heads) == 0
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = th.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = th.softmax(weight.float(), dim=-1).type(weight.dtype)
        a = th.einsum("bts,bcs->bct", weight, v)
        return a.reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    def __init__(self, channels, num_heads=1, num_head_channels=-1):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            assert channels % num_head_channels == 0
            self.num_heads = channels // num_head_channels
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        self.attention = QKVAttentionLegacy(self.num_heads)
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        h = self.attention(qkv)
        h = self.proj_out(h)
        return (x + h).reshape(b, c, *spatial)


class UNetModel(nn.Module):
    def __init__(self, image_size, in_channels, model_channels, out_channels, num_res_blocks,
                 attention_resolutions, dropout=0, channel_mult=(1, 2, 4, 8), num_head_channels=-1,
                 use_scale_shift_norm=True):
        super().__init__()
        self.model_channels = model_channels
        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            linear(model_channels, time_embed_dim),
            nn.SiLU(),
            linear(time_embed_dim, time_embed_dim),
        )
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(conv_nd(2, in_channels, ch, 3, padding=1))])
        input_block_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, time_embed_dim, dropout, out_channels=int(mult * model_channels),
                                   use_scale_shift_norm=use_scale_shift_norm)]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_head_channels=num_head_channels))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                out_ch = ch
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, True, out_channels=out_ch)))
                ch = out_ch
                input_block_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, time_embed_dim, dropout, use_scale_shift_norm=use_scale_shift_norm),
            AttentionBlock(ch, num_head_channels=num_head_channels),
            ResBlock(ch, time_embed_dim, dropout, use_scale_shift_norm=use_scale_shift_norm),
        )
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                ich = input_block_chans.pop()
                layers = [ResBlock(ch + ich, time_embed_dim, dropout, out_channels=int(model_channels * mult),
                                   use_scale_shift_norm=use_scale_shift_norm)]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_head_channels=num_head_channels))
                if level and i == num_res_blocks:
                    out_ch = ch
                    layers.append(Upsample(ch, True, out_channels=out_ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(conv_nd(2, input_ch, out_channels, 3, padding=1)),
        )

    def forward(self, x, timesteps):
        hs = []
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = th.cat([h, hs.pop()], dim=1)
            h = module(h, emb)
        return self.out(h)


def drdc_eps(model, x_t, t, cond, conditioned=True):
    """DRDC's model conditioning (eq. 10): the U-Net sees concat(x_t, cond) on channels; without it
    (the paper's ablation) the U-Net sees x_t alone."""
    return model(th.cat([x_t, cond], dim=1) if conditioned else x_t, t)


def randomise(model):
    """Every parameter random: weights U(+-1/sqrt(fan_in)) (the zero_module layers included),
    GroupNorm weights 1 + 0.1 N(0,1), biases 0.1 N(0,1)."""
    with th.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                bound = 1.0 / math.sqrt(p[0].numel())
                p.uniform_(-bound, bound)
            elif name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * th.randn_like(p))
            else:
                p.copy_(0.1 * th.randn_like(p))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--mult", default="1,2")
    ap.add_argument("--res-blocks", type=int, default=1)
    ap.add_argument("--attention-res", default="8")
    ap.add_argument("--head-channels", type=int, default=16)
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--seed", type=int, default=133)
    ap.add_argument("--no-model-conditioning", action="store_true",
                    help="3 input channels (x_t only) instead of concat(x_t, cond)")
    a = ap.parse_args()

    th.manual_seed(a.seed)
    th.set_num_threads(1)
    mult = tuple(int(v) for v in a.mult.split(","))
    att = [int(v) for v in a.attention_res.split(",") if v]
    ds_list = [a.image_size // r for r in att]
    model = UNetModel(a.image_size, 3 if a.no_model_conditioning else 6, a.channels, 3, a.res_blocks, ds_list, dropout=0.0, channel_mult=mult,
                      num_head_channels=a.head_channels, use_scale_shift_norm=True)
    randomise(model)
    out = {}
    for name, p in model.state_dict().items():
        out["param." + name] = p.clone()

    B, S = a.batch, a.image_size
    x_t = th.randn(B, 3, S, S)
    cond = th.randn(B, 3, S, S)
    target = th.randn(B, 3, S, S)
    t = th.randint(0, 1000, (B,), dtype=th.int64)
    t[0] = 999          # the largest arguments of the sinusoids
    if B > 1:
        t[1] = 0
    out["input.x_t"] = x_t
    out["input.cond"] = cond
    out["input.target"] = target
    out["input.t"] = t.float()
    out["out.temb"] = timestep_embedding(t, a.channels)

    model.train()
    eps = drdc_eps(model, x_t, t, cond, not a.no_model_conditioning)
    loss = F.mse_loss(eps, target)
    loss.backward()
    out["out.eps"] = eps
    out["out.loss"] = loss
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad.clone()

    st_write(a.out, out, {"format": "drdc-twin-unet", "args": json.dumps(vars(a))}, dtype="<f4")


if __name__ == "__main__":
    main()
