#!/usr/bin/python3
"""twin_base.py: the PyTorch twin of src/stages/base.c (DRDC's base model).

A transcription of UniAD's reconstruction module (zhiyuanyou/UniAD,
models/reconstructions/uniad.py: learned position embedding, neighbour mask, layer-wise
learned queries, post-norm layers, feature jitter; models/initializer.py: xavier_uniform),
with the same module and parameter names, so its state dict is the one the C model loads.
Built tiny and seeded, it writes one safetensors file (the C golden test reads it):

  param.<name>      the weights (UniAD's init, then small noise on every 1-D tensor so that a
                    zero bias or a unit norm cannot hide a swapped tensor)
  input.features    [B,C,h,w]
  input.jitter      [B,C,h,w] the N(0,1) draws of the feature jitter
  mask              [L,L] the neighbour mask (-inf blocked, 0 allowed)
  out.rec_eval      [B,C,h,w] eval-mode reconstruction
  out.map_eval      [B,1,h,w] anomaly map (L2 over channels, before upsampling)
  out.rec_train     [B,C,h,w] training-mode reconstruction (jitter as given, dropout 0)
  out.loss_train    []        MSE(rec_train, features)
  grad.<name>       d loss / d param after one backward
  out.grad_norm     []        total grad norm before clipping
  step1.<name>      the weights after clip_grad_norm_(clip) and one torch.optim.AdamW step

Run with Debian's /usr/bin/python3 (torch 1.13):  twin_base.py --out FILE [options]
Dropout is 0 in the twin (dropout masks cannot be shared with C); the jitter noise is given.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stio import st_write  # noqa: E402


# ---- UniAD's reconstruction module ---------------------------------------------------------

class PositionEmbeddingLearned(nn.Module):
    """Row and column tables of hidden/2 each; token (y, x) gets concat(col[x], row[y])."""

    def __init__(self, feature_size, num_pos_feats):
        super().__init__()
        self.feature_size = feature_size
        self.row_embed = nn.Embedding(feature_size[0], num_pos_feats)
        self.col_embed = nn.Embedding(feature_size[1], num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self):
        h, w = self.feature_size
        cols = self.col_embed.weight.unsqueeze(0).repeat(h, 1, 1)   # h x w x E/2
        rows = self.row_embed.weight.unsqueeze(1).repeat(1, w, 1)   # h x w x E/2
        return torch.cat([cols, rows], dim=-1).flatten(0, 1)       # (h w) x E


class EncoderLayer(nn.Module):
    def __init__(self, hidden, nhead, ffn, dropout):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden, nhead, dropout=dropout)
        self.linear1 = nn.Linear(hidden, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src, mask, pos):                 # post-norm (normalize_before False)
        qk = src + pos
        a = self.self_attn(qk, qk, value=src, attn_mask=mask)[0]
        src = self.norm1(src + self.dropout1(a))
        f = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(f))


class DecoderLayer(nn.Module):
    def __init__(self, hidden, feature_size, nhead, ffn, dropout):
        super().__init__()
        self.learned_embed = nn.Embedding(feature_size[0] * feature_size[1], hidden)
        self.self_attn = nn.MultiheadAttention(hidden, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(hidden, nhead, dropout=dropout)
        self.linear1 = nn.Linear(hidden, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.norm3 = nn.LayerNorm(hidden)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, out, memory, tgt_mask, memory_mask, pos):
        batch = memory.shape[1]
        tgt = self.learned_embed.weight.unsqueeze(1).repeat(1, batch, 1)   # (h w) x B x E
        a = self.self_attn(query=tgt + pos, key=memory + pos, value=memory, attn_mask=tgt_mask)[0]
        tgt = self.norm1(tgt + self.dropout1(a))
        a = self.multihead_attn(query=tgt + pos, key=out + pos, value=out, attn_mask=memory_mask)[0]
        tgt = self.norm2(tgt + self.dropout2(a))
        f = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(f))


class TransformerEncoder(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, src, mask, pos):
        for layer in self.layers:
            src = layer(src, mask, pos)
        return src


class TransformerDecoder(nn.Module):
    def __init__(self, layers, hidden):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, memory, tgt_mask, memory_mask, pos):
        out = memory
        for layer in self.layers:
            out = layer(out, memory, tgt_mask, memory_mask, pos)
        return self.norm(out)


def neighbor_mask(feature_size, n):
    """[L,L]: -inf where query (y1,x1) may not attend key (y2,x2) (within the n x n window)."""
    h, w = feature_size
    keep = torch.ones(h, w, h, w)
    r = n // 2
    for y in range(h):
        for x in range(w):
            keep[y, x, max(y - r, 0):min(y + r + 1, h), max(x - r, 0):min(x + r + 1, w)] = 0
    keep = keep.view(h * w, h * w)
    return keep.masked_fill(keep == 0, float("-inf")).masked_fill(keep == 1, 0.0)


class Transformer(nn.Module):
    def __init__(self, hidden, feature_size, nbr, nhead, n_enc, n_dec, ffn, dropout):
        super().__init__()
        self.feature_size = feature_size
        self.neighbor = nbr
        self.encoder = TransformerEncoder([EncoderLayer(hidden, nhead, ffn, dropout) for _ in range(n_enc)])
        self.decoder = TransformerDecoder(
            [DecoderLayer(hidden, feature_size, nhead, ffn, dropout) for _ in range(n_dec)], hidden)

    def forward(self, src, pos):
        pos = pos.unsqueeze(1).repeat(1, src.shape[1], 1)          # (h w) x B x E
        mask = neighbor_mask(self.feature_size, self.neighbor) if self.neighbor else None
        memory = self.encoder(src, mask, pos)                      # mask in encoder,
        return self.decoder(memory, mask, mask, pos)               # and both decoder attentions


class UniAD(nn.Module):
    def __init__(self, inplanes, feature_size, hidden, nhead, n_enc, n_dec, ffn, dropout, nbr,
                 jitter_scale, jitter_prob):
        super().__init__()
        self.feature_size = feature_size
        self.jitter_scale, self.jitter_prob = jitter_scale, jitter_prob
        self.pos_embed = PositionEmbeddingLearned(feature_size, hidden // 2)
        self.transformer = Transformer(hidden, feature_size, nbr, nhead, n_enc, n_dec, ffn, dropout)
        self.input_proj = nn.Linear(inplanes, hidden)
        self.output_proj = nn.Linear(hidden, inplanes)
        # UniAD's initializer (method xavier_uniform): every nn.Linear, which includes each
        # MultiheadAttention's out_proj; in_proj_weight keeps torch's own xavier-uniform.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                m.bias.data.zero_()

    def add_jitter(self, tokens, noise):
        """tokens (h w) x B x C; noise of that shape (given, so C can use the same draws)."""
        if noise is None:
            if torch.rand(()).item() > self.jitter_prob:
                return tokens
            noise = torch.randn(tokens.shape)
        norms = tokens.norm(dim=2, keepdim=True) / tokens.shape[2]   # (h w) x B x 1
        return tokens + noise * norms * self.jitter_scale

    def forward(self, features, jitter=None):
        tokens = features.flatten(2).permute(2, 0, 1)                # (h w) x B x C
        if self.training and self.jitter_scale:
            noise = None if jitter is None else jitter.flatten(2).permute(2, 0, 1)
            tokens = self.add_jitter(tokens, noise)
        tokens = self.input_proj(tokens)                             # (h w) x B x E
        out = self.transformer(tokens, self.pos_embed())             # (h w) x B x E
        rec = self.output_proj(out)                                  # (h w) x B x C
        h, w = self.feature_size
        return rec.permute(1, 2, 0).reshape(features.shape[0], -1, h, w)   # B x C x h x w


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--channels", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--enc-layers", type=int, default=2)
    ap.add_argument("--dec-layers", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=64)
    ap.add_argument("--feat-h", type=int, default=6)
    ap.add_argument("--feat-w", type=int, default=6)
    ap.add_argument("--neighbor", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--jitter-scale", type=float, default=20.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--clip", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=133)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    fs = (a.feat_h, a.feat_w)
    model = UniAD(a.channels, fs, a.hidden, a.heads, a.enc_layers, a.dec_layers, a.ffn, 0.0, a.neighbor,
                  a.jitter_scale, 1.0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    out = {}
    for name, p in model.state_dict().items():
        out["param." + name] = p.clone()

    feats = torch.randn(a.batch, a.channels, a.feat_h, a.feat_w)
    jitter = torch.randn(a.batch, a.channels, a.feat_h, a.feat_w)
    out["input.features"] = feats
    out["input.jitter"] = jitter
    out["mask"] = neighbor_mask(fs, a.neighbor)

    model.eval()
    with torch.no_grad():
        rec = model(feats)
    out["out.rec_eval"] = rec
    out["out.map_eval"] = torch.sqrt(((rec - feats) ** 2).sum(dim=1, keepdim=True))

    model.train()
    rec_t = model(feats, jitter)
    loss = F.mse_loss(rec_t, feats)
    loss.backward()
    out["out.rec_train"] = rec_t
    out["out.loss_train"] = loss
    params = dict(model.named_parameters())
    for name, p in params.items():
        out["grad." + name] = p.grad.clone()

    total = torch.nn.utils.clip_grad_norm_(list(params.values()), a.clip)
    out["out.grad_norm"] = total
    opt = torch.optim.AdamW(list(params.values()), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=a.wd)
    opt.step()
    for name, p in params.items():
        out["step1." + name] = p.detach().clone()

    st_write(a.out, out, {"format": "drdc-twin-transformer", "args": json.dumps(vars(a))}, dtype="<f4")


if __name__ == "__main__":
    main()
