"""Permutohedral-lattice Gaussian filter (`torch.ops.wsolbench.lattice_filter`).

The lattice of Adams, Baek & Davis (2010) in the form Kraehenbuehl's dense CRF uses: points are
lifted onto the d-dimensional hyperplane of Z^{d+1}, splatted with barycentric weights onto the
d+1 vertices of their enclosing simplex, blurred with the kernel (0.5, 1, 0.5) along each of the
d+1 lattice directions in turn, and sliced back, times alpha = 1 / (1 + 2^-d). Without
normalisation this approximates, up to a constant factor, sum_j exp(-|f_i - f_j|^2 / 2) v_j.

The operator W is only nearly symmetric: its exact adjoint blurs the directions in reverse
order (`transpose=True`). The gradient wrt `values` uses that adjoint, so it is exact.
`symmetric=True` applies W + W^T in one call (one lattice, one splat, both blur orders, one
slice): the gradient of the CRF energy v.Wv, which the CRF losses use to pay for one lattice per
forward and backward instead of two.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from bench import _ext

__all__ = ["lattice_filter", "lattice_filter_op", "lattice_filter_reference", "MAX_DIM"]

MAX_DIM = 8
OP_NAME = "lattice_filter"


# --------------------------------------------------------------------------------------------
# pure-torch reference (slow, for small inputs): the same lattice, step by step
# --------------------------------------------------------------------------------------------
def _embed(f: Tensor):
    """f: [P, d] float64 -> rem0 [P, d+1] int64, rank [P, d+1] int64, barycentric [P, d+1]."""
    P, d = f.shape
    inv_std = math.sqrt(2.0 / 3.0) * (d + 1)
    el = f.new_zeros(P, d + 1)
    sm = f.new_zeros(P)
    for j in range(d, 0, -1):
        cf = f[:, j - 1] * (inv_std / math.sqrt(float(j * (j + 1))))
        el[:, j] = sm - j * cf
        sm = sm + cf
    el[:, 0] = sm
    down = 1.0 / (d + 1)
    rd = torch.round(el * down)  # half to even, as std::nearbyint
    rem0 = rd.to(torch.int64) * (d + 1)
    s = rd.to(torch.int64).sum(1, keepdim=True)
    diff = el - rem0
    # rank[i] = #{j > i: diff_i < diff_j} + #{j < i: not(diff_j < diff_i)}
    less = diff.unsqueeze(2) < diff.unsqueeze(1)  # [P, i, j]: diff_i < diff_j
    idx = torch.arange(d + 1, device=f.device)
    upper = idx.unsqueeze(1) < idx.unsqueeze(0)  # j > i
    rank = (less & upper).sum(2) + ((~less.transpose(1, 2)) & upper.transpose(0, 1)).sum(2)
    rank = rank + s
    lo, hi = rank < 0, rank > d
    rank = torch.where(lo, rank + d + 1, torch.where(hi, rank - d - 1, rank))
    rem0 = torch.where(lo, rem0 + d + 1, torch.where(hi, rem0 - d - 1, rem0))
    bary = f.new_zeros(P, d + 2)
    for i in range(d + 1):
        v = (el[:, i] - rem0[:, i]) * down
        bary.scatter_add_(1, (d - rank[:, i]).unsqueeze(1), v.unsqueeze(1))
        bary.scatter_add_(1, (d - rank[:, i] + 1).unsqueeze(1), -v.unsqueeze(1))
    bary[:, 0] += 1.0 + bary[:, d + 1]
    return rem0, rank, bary[:, : d + 1]


def _filter_one(f: Tensor, v: Tensor, reverse: bool) -> Tensor:
    """One image: f [P, d] (any float), v [P, K] -> alpha * S^T B S v, [P, K] in v's dtype."""
    P, d = f.shape
    K = v.shape[1]
    if P == 0:
        return v.new_zeros(P, K)
    rem0, rank, bary = _embed(f.to(torch.float64))
    w = bary.to(v.dtype)
    r = torch.arange(d + 1, device=f.device).view(1, d + 1, 1)
    rk = rank[:, :d].unsqueeze(1)  # [P, 1, d]
    keys = rem0[:, :d].unsqueeze(1) + torch.where(rk <= d - r, r, r - (d + 1))  # [P, d+1, d]
    keys = keys.reshape(-1, d)
    lat_keys, inv = torch.unique(keys, dim=0, return_inverse=True)
    M = lat_keys.shape[0]
    lat = v.new_zeros(M, K)
    lat.index_add_(0, inv, (w.reshape(-1, 1) * v.repeat_interleave(d + 1, dim=0)))
    # neighbours of every lattice point along each direction
    nbrs = []
    for j in range(d + 1):
        k1, k2 = lat_keys - 1, lat_keys + 1
        if j < d:
            k1[:, j] = lat_keys[:, j] + d
            k2[:, j] = lat_keys[:, j] - d
        allk = torch.cat([lat_keys, k1, k2])
        _, ids = torch.unique(allk, dim=0, return_inverse=True)
        table = torch.full((int(ids.max()) + 1,), -1, dtype=torch.int64, device=f.device)
        table[ids[:M]] = torch.arange(M, device=f.device)
        nbrs.append((table[ids[M : 2 * M]], table[ids[2 * M :]]))
    order = range(d, -1, -1) if reverse else range(d + 1)
    pad = torch.cat([lat, lat.new_zeros(1, K)])  # index -1 -> zero row
    for j in order:
        n1, n2 = nbrs[j]
        pad = torch.cat([pad[:M] + 0.5 * (pad[n1] + pad[n2]), lat.new_zeros(1, K)])
    lat = pad[:M]
    alpha = 1.0 / (1.0 + 2.0 ** (-d))
    out = (w.unsqueeze(2) * lat[inv.view(P, d + 1)]).sum(1)
    return out * alpha


def lattice_filter_reference(
    features: Tensor, values: Tensor, valid: Optional[Tensor] = None, normalize: bool = False, transpose: bool = False,
    symmetric: bool = False,
) -> Tensor:
    """Pure-torch version of the op (same arguments, [B, d, N] / [B, K, N]); slow."""
    if symmetric:
        if normalize:
            raise ValueError("lattice_filter: symmetric=True cannot be combined with normalize=True")
        return (lattice_filter_reference(features, values, valid, False, False)
                + lattice_filter_reference(features, values, valid, False, True))
    B, d, N = features.shape
    K = values.shape[1]
    out = values.new_zeros(B, K, N)
    for b in range(B):
        keep = torch.ones(N, dtype=torch.bool, device=values.device) if valid is None else valid[b].bool()
        f = features[b].t()[keep]
        v = values[b].t()[keep]
        if normalize:
            nrm = _filter_one(f, torch.ones_like(v[:, :1]), False)
            if transpose:
                res = _filter_one(f, v / nrm, True)
            else:
                res = _filter_one(f, v, False) / nrm
        else:
            res = _filter_one(f, v, transpose)
        out[b][:, keep] = res.t()
    return out


# --------------------------------------------------------------------------------------------
# the custom op: fake kernel, autograd, fallback
# --------------------------------------------------------------------------------------------
_QUALNAME = f"wsolbench::{OP_NAME}"


def _has_op() -> bool:
    return _ext.has_op(OP_NAME)


if _has_op():

    @torch.library.register_fake(_QUALNAME)
    def _lattice_filter_fake(features, values, valid=None, normalize=False, transpose=False, symmetric=False):
        torch._check(features.dim() == 3, lambda: "lattice_filter: features must be [B, d, N]")
        torch._check(values.dim() == 3, lambda: "lattice_filter: values must be [B, K, N]")
        torch._check(1 <= features.shape[1] <= MAX_DIM, lambda: "lattice_filter: d must be in [1, 8]")
        torch._check(values.dtype == features.dtype, lambda: "lattice_filter: values dtype must match features")
        torch._check(values.shape[0] == features.shape[0], lambda: "lattice_filter: batch sizes differ")
        torch._check(values.shape[2] == features.shape[2], lambda: "lattice_filter: point counts differ")
        torch._check(not (normalize and symmetric), lambda: "lattice_filter: symmetric with normalize")
        return values.new_empty(values.shape[0], values.shape[1], values.shape[2])

    def _setup_context(ctx, inputs, output):
        features, values, valid, normalize, transpose, symmetric = inputs
        ctx.save_for_backward(features, valid)
        ctx.has_valid = valid is not None
        ctx.normalize = normalize
        ctx.transpose = transpose
        ctx.symmetric = symmetric

    def _backward(ctx, grad):
        features, valid = ctx.saved_tensors
        if not ctx.has_valid:
            valid = None
        # the adjoint: transpose flipped; W + W^T is its own
        grad_values = torch.ops.wsolbench.lattice_filter(
            features, grad.contiguous(), valid, ctx.normalize, ctx.symmetric or not ctx.transpose, ctx.symmetric
        )
        # features are constants (no gradient), valid and the flags are not differentiable
        return None, grad_values, None, None, None, None

    torch.library.register_autograd(_QUALNAME, _backward, setup_context=_setup_context)


class _ReferenceFilter(torch.autograd.Function):
    """Fallback without the extension: the reference, with the same exact-adjoint backward."""

    @staticmethod
    def forward(ctx, features, values, valid, normalize, transpose, symmetric):
        ctx.save_for_backward(features, valid)
        ctx.flags = (normalize, transpose, symmetric)
        with torch.no_grad():
            return lattice_filter_reference(features, values, valid, normalize, transpose, symmetric)

    @staticmethod
    def backward(ctx, grad):
        features, valid = ctx.saved_tensors
        normalize, transpose, symmetric = ctx.flags
        g = _ReferenceFilter.apply(features, grad, valid, normalize, symmetric or not transpose, symmetric)
        return None, g, None, None, None, None


def _check_valid(valid: Optional[Tensor], features: Tensor, values: Tensor) -> None:
    """`valid` must be a bool/uint8 [B, N] mask of the points of `features` [B, d, N]."""
    if valid is None:
        return
    torch._check_value(
        valid.dtype in (torch.bool, torch.uint8),
        lambda: f"lattice_filter: valid must be a bool or uint8 mask, got {valid.dtype}",
    )
    if features.dim() == 3:
        B, N = features.shape[0], features.shape[2]
        torch._check_value(
            valid.dim() == 2 and tuple(valid.shape) == (B, N),
            lambda: f"lattice_filter: valid must be [B, N] = [{B}, {N}] like features {tuple(features.shape)}, "
                    f"got {tuple(valid.shape)}",
        )


def lattice_filter_op(
    features: Tensor, values: Tensor, valid: Optional[Tensor] = None, normalize: bool = False, transpose: bool = False,
    symmetric: bool = False,
) -> Tensor:
    """The op on flattened points: features [B, d, N], values [B, K, N], valid [B, N] or None.

    Uses the compiled kernel when available, otherwise the pure-torch reference."""
    _check_valid(valid, features, values)
    if _has_op():
        return torch.ops.wsolbench.lattice_filter(features, values, valid, normalize, transpose, symmetric)
    return _ReferenceFilter.apply(features, values, valid, normalize, transpose, symmetric)


def lattice_filter(
    features: Tensor,
    values: Tensor,
    valid: Optional[Tensor] = None,
    normalize: bool = False,
    transpose: bool = False,
    symmetric: bool = False,
) -> Tensor:
    """Gaussian filtering of `values` in the space of `features` by a permutohedral lattice.

    Args:
        features: [B, d, H, W] or [B, d, N] per-point positions, already divided by their
            standard deviations (e.g. x/sigma_xy, y/sigma_xy, r/sigma_rgb, ...), 1 <= d <= 8.
            Treated as constants: no gradient flows to them.
        values: [B, K, H, W] or [B, K, N], same dtype (float32 or float64) and device.
            All K channels share one lattice per image, built once.
        valid: optional bool/uint8 mask [B, H, W] or [B, N]; invalid points neither splat nor
            receive (their output is 0). Lets images of different sizes share a padded batch.
        normalize: divide by the filtered ones (W 1). Default False: the papers' lattice, not
            normalised.
        transpose: apply the exact adjoint W^T (blur directions in reverse order).
        symmetric: apply W + W^T (one lattice for both; not with `normalize`).

    Returns:
        W values, shaped like `values`. Differentiable wrt `values` (exact, through the adjoint).
    """
    if features.dim() == 4:
        B, d, H, W = features.shape
        torch._check(values.dim() == 4, lambda: f"lattice_filter: values must be [B, K, H, W], got {tuple(values.shape)}")
        torch._check(
            tuple(values.shape[2:]) == (H, W) and values.shape[0] == B,
            lambda: f"lattice_filter: values {tuple(values.shape)} do not match features {tuple(features.shape)}",
        )
        K = values.shape[1]
        if valid is not None:
            torch._check_value(
                tuple(valid.shape) in ((B, H, W), (B, H * W)),
                lambda: f"lattice_filter: valid must be [B, H, W] = [{B}, {H}, {W}] (or [B, H*W] = [{B}, {H * W}]) "
                        f"like features {tuple(features.shape)}, got {tuple(valid.shape)}",
            )
        f = features.reshape(B, d, H * W)
        v = values.reshape(B, K, H * W)
        m = None if valid is None else valid.reshape(B, H * W)
        out = lattice_filter_op(f, v, m, normalize, transpose, symmetric)
        return out.view(B, K, H, W)
    return lattice_filter_op(features, values, valid, normalize, transpose, symmetric)
