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


def buffers(n: int, m: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 buffers of ``n`` and ``m`` elements, kept per thread (no page faults on reuse)."""
    have = getattr(_LOCAL, "bufs", None)
    if have is None or have[0].numel() < n or have[1].numel() < m or have[0].device != device:
        big_n, big_m = n, m
        if have is not None and have[0].device == device:
            big_n, big_m = max(n, have[0].numel()), max(m, have[1].numel())
        have = (torch.empty(big_n, device=device), torch.empty(big_m, device=device))
        _LOCAL.bufs = have
    return have[0][:n], have[1][:m]


LOG2_E = 1.4426950408889634
#: Vocabulary entries per float32 partial sum in :func:`block_sum`.
SUM_BLOCK = 4096


def block_sum(x: torch.Tensor, block: int = SUM_BLOCK) -> torch.Tensor:
    """Row sums of ``x`` ``(n, V)``: float32 sums of ``block`` entries, added in float64.

    A small KL is a difference of two nats-sized numbers (``CE - H``): one float32 product over
    a 262k vocabulary (Gemma) moved it by 5e-3 relative; float32 blocks summed in float64 keep
    it near 1e-4, at the speed of a float32 sum (a float64 sum of every entry is 4x slower).
    """
    v = x.shape[-1]
    whole = v - v % block
    out = x.narrow(-1, 0, whole).unflatten(-1, (-1, block)).sum(-1).double().sum(-1)
    if whole < v:
        out += x.narrow(-1, whole, v - whole).sum(-1).double()
    return out


#: Logits per statistics chunk (:func:`row_stats`): a logit block is read ~20 rows at a time, so
#: that its ~10 passes (max, exp, sums, rank, top-k) run in cache (2 MiB L2 per core, 32 MiB L3
#: here) instead of streaming a 50 MB block from memory ten times; smaller chunks pay more
#: per-operation overhead than they gain.
STAT_ELEMS = 2**20


def row_stats(
    z: torch.Tensor,
    e: torch.Tensor,
    p_final: torch.Tensor,
    star: torch.Tensor,
    nxt: torch.Tensor,
    k: int,
) -> dict[str, torch.Tensor]:
    """Every lens statistic of logit rows ``z`` ``(n, V)`` float32, read while they are in cache.

    ``z`` is shifted by its row max in place and ``e`` (same shape) is scratch.

    Args:
        z: Logit rows (overwritten with ``z - max``).
        e: Scratch, same shape as ``z``.
        p_final: ``(n, V)`` the model's output probabilities at each row's position.
        star: ``(n,)`` the model's top-1 id at each row's position.
        nxt: ``(n,)`` the next input id at each row's position.
        k: Top-k tokens to keep.

    Returns:
        ``(n,)`` ``entropy``, ``pz`` (``sum p_final * (z - max)``, float64, by
        :func:`block_sum`), ``log_norm``, ``prob_final``, ``rank_final``, ``z_next``; ``(n, k)``
        ``topk_ids``, ``topk_probs``.
    """
    m, groups = group_max(z, k)
    z -= m  # shift by the max: exp never overflows
    # exp(z) as 2 ** (z log2 e): torch's float32 exp2 runs ~4x faster than its exp here.
    norm = torch.exp2(torch.mul(z, LOG2_E, out=e), out=e).sum(-1)  # unnormalised probabilities
    log_norm = norm.log()
    entropy = log_norm - torch.mul(e, z, out=e).sum(-1) / norm
    pz = block_sum(torch.mul(z, p_final, out=e))
    z_star = z.gather(-1, star[:, None])  # (n, 1)
    rank = 1 + torch.gt(z, z_star, out=e).sum(-1).long()  # 1.0 where above (no bool tensor)
    top_ids, top_z = topk_in_groups(z, k, groups)
    return dict(
        entropy=entropy,
        pz=pz,
        log_norm=log_norm,
        prob_final=(z_star[:, 0] - log_norm).exp(),
        rank_final=rank,
        z_next=z.gather(-1, nxt[:, None])[:, 0],
        topk_ids=top_ids,
        topk_probs=(top_z - log_norm[:, None]).exp(),
    )
