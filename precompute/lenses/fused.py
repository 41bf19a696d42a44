"""Pieces of the fused lens read-out (``precompute.lenses.readout``).

Top-k searched in vocabulary groups, and float32 buffers reused per thread.
"""

from __future__ import annotations

import threading

import torch

#: Vocabulary entries per group for the top-k search (:func:`group_max`).
TOPK_GROUP = 64


def group_max(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row max ``(..., 1)`` and the ``k`` vocabulary groups holding the top-k (one pass over z).

    The top ``k`` entries of a row lie in the ``k`` groups of :data:`TOPK_GROUP` entries with
    the largest maxima, so top-k then reads ``k * TOPK_GROUP`` entries instead of the row.
    ``None`` when the vocabulary does not split into groups (then a plain top-k).
    """
    v = z.shape[-1]
    if v % TOPK_GROUP or v // TOPK_GROUP < k:
        return z.amax(-1, keepdim=True), None
    gmax = z.view(*z.shape[:-1], v // TOPK_GROUP, TOPK_GROUP).amax(-1)  # (..., G)
    return gmax.amax(-1, keepdim=True), gmax.topk(k, -1).indices


def topk_in_groups(
    z: torch.Tensor, k: int, groups: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k ids and values of the rows of ``z``, searched in ``groups`` when given."""
    if groups is None:
        top = z.topk(k, dim=-1)
        return top.indices, top.values
    offsets = torch.arange(TOPK_GROUP, device=z.device)
    cand = (groups[..., None] * TOPK_GROUP + offsets).flatten(-2)  # (..., k * group)
    top = z.gather(-1, cand).topk(k, dim=-1)
    return cand.gather(-1, top.indices), top.values


_LOCAL = threading.local()


def buffers(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float32 buffers of ``n`` elements, kept per thread (no page faults on reuse)."""
    have = getattr(_LOCAL, "bufs", None)
    if have is None or have[0].numel() < n or have[0].device != device:
        have = (torch.empty(n, device=device), torch.empty(n, device=device))
        _LOCAL.bufs = have
    return have[0][:n], have[1][:n]
