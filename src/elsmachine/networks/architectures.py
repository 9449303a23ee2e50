"""The convolutional noise-prediction networks the theory is tested on (docs/theory.md,
"Networks"; the paper's ResNet and UNet).

ResNet: an input 3x3 convolution, ``depth`` residual layers h <- h + conv3x3(silu(h + e(t, y)))
and an output 3x3 convolution, without normalisation (paper: 8 layers at 256 channels). Its
receptive field is 2 * (depth + 2) + 1 pixels wide, which bounds the patch size an ELS
machine needs to mimic it.

UNet: three scales (paper: 64/128/256 channels), one residual block per scale on the way down
and up, average pooling and nearest upsampling, skip connections by concatenation, no
normalisation.

Attention UNet (``attn-unet``): the UNet with a self-attention block after every residual
block at the ``attention`` coarsest scales (default 2, as DDPM's at 16 x 16 and below), and
in the middle: h <- h + W_o softmax(q k^T / sqrt(d)) v over all positions of the scale, with
q, k, v = W_{q,k,v} GroupNorm(h) in ``heads`` heads. It is the one global step of the
network: every output pixel can see every input pixel, which no local machine does.

Both predict the noise eps of x_t = a x_0 + s eps on the cosine schedule, take t in [0, 1]
(a sinusoidal embedding of 1000 t), optionally a class label, and use zero or circular
padding throughout. Rebuilt from :class:`NetConfig`, which checkpoints carry. They compute in
the dtype of their weights (float64 weights run in float64 end to end).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["NetConfig", "ResNet", "UNet", "build_network"]

ARCHS = ("resnet", "unet", "attn-unet")


@dataclass(frozen=True)
class NetConfig:
    """Everything needed to rebuild a network. ``num_classes`` = 0 means unconditional."""

    arch: str = "resnet"
    channels: int = 1
    image_size: int = 32
    width: int = 256
    depth: int = 8
    widths: tuple[int, ...] = (64, 128, 256)
    padding: str = "zeros"
    num_classes: int = 0
    emb_dim: int = 128
    attention: int = 2  # attn-unet: how many of the coarsest scales attend
    heads: int = 4  # attn-unet: attention heads
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise InputError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.padding not in ("zeros", "circular"):
            raise InputError(f"unknown padding {self.padding!r}; choose 'zeros' or 'circular'")
        for name in ("channels", "width", "depth", "emb_dim", "image_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if self.num_classes < 0:
            raise InputError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.arch in ("unet", "attn-unet"):
            if len(self.widths) < 1 or any(w < 1 for w in self.widths):
                raise InputError(f"widths must be positive integers, got {self.widths}")
            if self.image_size % (2 ** (len(self.widths) - 1)):
                raise InputError(f"image size {self.image_size} is not divisible by 2^{len(self.widths) - 1}")
        if self.arch == "attn-unet":
            if not 1 <= self.attention <= len(self.widths):
                raise InputError(f"attention must name 1 to {len(self.widths)} of the coarsest scales, got {self.attention}")
            if not isinstance(self.heads, int) or self.heads < 1:
                raise InputError(f"heads must be a positive integer, got {self.heads!r}")
            bad = [w for w in self.widths[-self.attention:] if w % self.heads]
            if bad:
                raise InputError(f"attention widths {bad} are not divisible by heads={self.heads}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @staticmethod
    def from_dict(d: dict) -> "NetConfig":
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        known = set(NetConfig.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise InputError(f"network config has unknown fields: {', '.join(sorted(unknown))}")
        return NetConfig(**d)


def conv3x3(cin: int, cout: int, padding: str) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding)


class Embedding(nn.Module):
    """Sinusoidal embedding of 1000 t, plus a learned class embedding, through an MLP."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.classes = nn.Embedding(num_classes, dim) if num_classes > 0 else None

    def forward(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        half = self.dim // 2
        dt = self.mlp[0].weight.dtype
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=dt) / half)
        arg = 1000.0 * t.to(dt).view(-1, 1) * freqs.view(1, -1)
        e = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
        if self.dim % 2:
            e = F.pad(e, (0, 1))
        e = self.mlp(e)
        if self.classes is not None:
            if labels is None:
                raise InputError("this network is class-conditional: labels are required")
            e = e + self.classes(labels)
        return e


class ResidualConv(nn.Module):
    """h <- h + conv3x3(silu(h + W e))."""

    def __init__(self, width: int, emb_dim: int, padding: str) -> None:
        super().__init__()
        self.emb = nn.Linear(emb_dim, width)
        self.conv = conv3x3(width, width, padding)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return h + self.conv(F.silu(h + self.emb(e)[:, :, None, None]))


class ResNet(nn.Module):
    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embedding(cfg.emb_dim, cfg.num_classes)
        self.inp = conv3x3(cfg.channels, cfg.width, cfg.padding)
        self.layers = nn.ModuleList(ResidualConv(cfg.width, cfg.emb_dim, cfg.padding) for _ in range(cfg.depth))
        self.out = conv3x3(cfg.width, cfg.channels, cfg.padding)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, H, W], t [B] in [0, 1], labels [B] -> predicted noise [B, C, H, W]."""
        e = self.embed(t, labels)
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h, e)
        return self.out(F.silu(h))


class UBlock(nn.Module):
    """Two convolutions with the embedding added between them, and a 1x1 skip when widths differ."""

    def __init__(self, cin: int, cout: int, emb_dim: int, padding: str) -> None:
        super().__init__()
        self.c1 = conv3x3(cin, cout, padding)
        self.c2 = conv3x3(cout, cout, padding)
        self.emb = nn.Linear(emb_dim, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        z = self.c1(F.silu(h)) + self.emb(e)[:, :, None, None]
        return self.skip(h) + self.c2(F.silu(z))


def _groups(width: int) -> int:
    """GroupNorm groups of an attention block: 8, or fewer where the width is small."""
    return math.gcd(width, 8)


class SelfAttention(nn.Module):
    """h <- h + W_o MultiHead(GroupNorm(h)) over all H x W positions (the attention UNet's one
    global step). The output projection starts at zero, so a new block is the identity."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(width), width)
        self.qkv = nn.Conv2d(width, 3 * width, 1)
        self.proj = nn.Conv2d(width, width, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, C, H, W = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return h + self.proj(a.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """The UNet; with ``cfg.arch == "attn-unet"`` a self-attention block follows each residual
    block at the ``cfg.attention`` coarsest scales and in the middle."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = list(cfg.widths)
        n_attn = cfg.attention if cfg.arch == "attn-unet" else 0
        attends = [i >= len(w) - n_attn for i in range(len(w))]

        def attn(i: int, width: int) -> nn.Module:
            return SelfAttention(width, cfg.heads) if attends[i] else nn.Identity()

        self.embed = Embedding(cfg.emb_dim, cfg.num_classes)
        self.inp = conv3x3(cfg.channels, w[0], cfg.padding)
        self.down = nn.ModuleList()
        cin = w[0]
        for wi in w:
            self.down.append(UBlock(cin, wi, cfg.emb_dim, cfg.padding))
            cin = wi
        self.mid = UBlock(cin, cin, cfg.emb_dim, cfg.padding)
        self.up = nn.ModuleList()
        for wi in reversed(w):
            self.up.append(UBlock(cin + wi, wi, cfg.emb_dim, cfg.padding))
            cin = wi
        self.out = conv3x3(cin, cfg.channels, cfg.padding)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if n_attn:  # registered only here, so the plain UNet's weights keep their names
            self.down_attn = nn.ModuleList(attn(i, wi) for i, wi in enumerate(w))
            self.mid_attn = attn(len(w) - 1, w[-1])
            self.up_attn = nn.ModuleList(attn(len(w) - 1 - i, wi) for i, wi in enumerate(reversed(w)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        plain = not hasattr(self, "mid_attn")
        e = self.embed(t, labels)
        h = self.inp(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, e) if plain else self.down_attn[i](block(h, e))
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        h = self.mid(h, e) if plain else self.mid_attn(self.mid(h, e))
        for i, block in enumerate(self.up):
            s = skips.pop()
            if h.shape[-1] != s.shape[-1]:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, s], dim=1), e)
            h = h if plain else self.up_attn[i](h)
        return self.out(F.silu(h))


def build_network(cfg: NetConfig) -> nn.Module:
    return ResNet(cfg) if cfg.arch == "resnet" else UNet(cfg)
