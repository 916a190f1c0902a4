"""Vision transformers (DeiT layout) as backbones, and the TS-CAM network built on one.

`VisionTransformer` maps images [B,3,H,W] to the patch tokens laid out as a feature map
[B,D,H/p,W/p] (after the final LayerNorm; the class token is dropped), so it fits the
backbone interface of `bench.models` (`out_channels`, `cam_layer`) and every CAM method runs
on it. `tokens_and_attention` also returns the class token's attention to the patches,
averaged over heads and summed over layers (TS-CAM's semantic-agnostic map).

Parameter names follow the DeiT / timm checkpoints (`cls_token`, `pos_embed`,
`patch_embed.proj`, `blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`), so a
local DeiT file loads with `--weights` (its classifier and distillation token are dropped).

Registered backbones: ``deit-small`` (DeiT-S: patch 16, dim 384, depth 12, 6 heads, for 224
images) and ``small-vit`` (patch 8, dim 96, depth 4, 3 heads, for the 64-96 px synthetic images
on CPU budgets)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import ClassifierOutput, register_backbone


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, with_attention: bool = False):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if not with_attention:  # fused kernel: the attention matrix is not materialised
            out, attn = F.scaled_dot_product_attention(q, k, v), None
        else:
            attn = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)  # [B,heads,N,N]
            out = attn @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), attn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, with_attention: bool = False):
        y, attn = self.attn(self.norm1(x), with_attention)
        x = x + y
        return x + self.mlp(self.norm2(x)), attn


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x)  # [B,D,h,w]


class TokenGrid(nn.Module):
    """Patch tokens [B,N,D] -> feature map [B,D,h,w]: the backbone's `cam_layer` (the module
    whose output the CAM methods read)."""

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, d = tokens.shape
        return tokens.transpose(1, 2).reshape(b, d, *grid)


class VisionTransformer(nn.Module):
    def __init__(self, patch: int = 16, dim: int = 384, depth: int = 12, heads: int = 6, mlp_ratio: float = 4.0,
                 image_size: int = 224):
        super().__init__()
        self.patch, self.out_channels, self.image_size = patch, dim, image_size
        self.patch_embed = PatchEmbed(patch, dim)
        grid = image_size // patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.grid = TokenGrid()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)
        # decoders on this encoder scale the papers' widths (meant for 512-2048 channels) by this
        self.decoder_width_scale = dim / 2048

    @property
    def cam_layer(self) -> nn.Module:
        return self.grid

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding for a `grid` of patches: the stored one, bicubically resized
        when the input is not `image_size` square (as timm does for other input sizes)."""
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = int(math.isqrt(patches.shape[1]))
        if (side, side) == tuple(grid):
            return self.pos_embed
        patches = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls, patches.flatten(2).transpose(1, 2)], 1)

    def tokens_and_attention(self, x: torch.Tensor, with_attention: bool = False):
        """(patch feature map [B,D,h,w], class-token attention [B,h,w] or None): the attention
        of the class token to every patch, averaged over heads and summed over layers."""
        patches = self.patch_embed(x)
        grid = tuple(patches.shape[-2:])
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches.flatten(2).transpose(1, 2)], 1)
        tokens = tokens + self._pos_embed(grid)
        total = None
        for block in self.blocks:
            tokens, attn = block(tokens, with_attention)
            if with_attention:
                row = attn.mean(1)[:, 0, 1:]  # [B, N-1]: the class token's row, head-averaged
                total = row if total is None else total + row
        features = self.grid(self.norm(tokens)[:, 1:], grid)
        return features, None if total is None else total.view(x.shape[0], *grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens_and_attention(x)[0]

    def convert_state_dict(self, state: dict) -> dict:
        """A DeiT / timm checkpoint (unwrapped by the loader): drop the classifier and the
        distillation token, which this backbone does not have."""
        return {k: v for k, v in state.items() if not k.startswith(("head", "dist_token"))}


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def register_vit(name: str):
    """`register_backbone`, marking the factory as a vision transformer's (`is_vit`)."""

    def wrap(factory):
        factory.vision_transformer = True
        return register_backbone(name)(factory)

    return wrap


def is_vit(backbone: str) -> bool:
    from bench.models import BACKBONES

    return getattr(BACKBONES.get(backbone), "vision_transformer", False)


@register_vit("deit-small")
def deit_small() -> VisionTransformer:
    """DeiT-S (Touvron et al. 2021), the backbone of TS-CAM's main results."""
    return VisionTransformer(patch=16, dim=384, depth=12, heads=6, image_size=224)


@register_vit("small-vit")
def small_vit() -> VisionTransformer:
    """A small ViT for CPU budgets: 8x8 patches of 64-96 px images (64-144 tokens); the position
    embedding is stored for the embedded datasets' default 96 px (a 12x12 grid)."""
    return VisionTransformer(patch=8, dim=96, depth=4, heads=3, image_size=96)


@dataclass
class TSCAMOutput(ClassifierOutput):
    attention: torch.Tensor | None = None  # [B,h,w] class-token attention (when asked)


class TSCAMNet(nn.Module):
    """TS-CAM (Gao et al., ICCV 2021): a ViT whose patch tokens go through a 3x3 conv to one
    semantic map per class; global average pooling of the maps gives the class scores."""

    def __init__(self, backbone: VisionTransformer, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(backbone.out_channels, num_classes, kernel_size=3, padding=1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, with_attention: bool = False) -> TSCAMOutput:
        features, attention = self.backbone.tokens_and_attention((images - self.mean) / self.std, with_attention)
        maps = self.head(features)  # [B,C,h,w] semantic (class) maps
        return TSCAMOutput(maps.mean(dim=(2, 3)), maps, attention)

    def cam(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(semantic-aware maps [B,h,w] = attention x the class's semantic map, logits [B,C])."""
        out = self(images, with_attention=True)
        semantic = out.features[torch.arange(len(classes), device=classes.device), classes]
        return out.attention * semantic, out.logits
