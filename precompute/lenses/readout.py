"""The one lens read-out: a residual state through the model's final norm and unembedding.

Every lens in Stagescope (logit lens, tuned lens, lens entropy, guess-then-refine, the probes'
answer) reads a state ``h_i`` the same way: the final norm with its statistics **recomputed on
h_i** (``variant=cached_final_scale`` reproduces TransformerLens < 2.18, which divided by the last
state's scale), then the unembedding with its bias and soft-cap. :func:`lens_logits` is that map;
:func:`lens_from_states` adds the per-(state, position) comparisons with the model's own output
that the lens pages draw.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> r = lens_readout(lm, lm.tokenize("the cat sat on the mat"))
    >>> r.kl.shape == (lm.n_layers + 1, 7)
    True
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from precompute.lenses import fused
from precompute.lenses.fused import buffers, row_stats
from precompute.model.internals import (
    NORM_VARIANTS,
    final_norm,
    logit_softcap,
    unembed,
    unembed_weights,
)
from precompute.model.load import LoadedModel
from precompute.model.replay import states_and_logits
from precompute.model.threads import DEFAULT_THREADS, intra_op_threads, map_threads


def lens_logits(
    lm: LoadedModel,
    states: torch.Tensor,
    variant: str = "recompute_ln",
    final_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits a residual state would give if the model stopped there.

    Args:
        lm: Loaded model.
        states: ``(..., T, D)`` residual states, pre final norm.
        variant: ``recompute_ln`` (the true lens) or ``cached_final_scale``.
        final_state: ``h_L`` ``(T, D)``; required for ``cached_final_scale``.

    Returns:
        ``(..., T, V)`` logits, the model's own dtype.
    """
    return unembed(lm, final_norm(lm, states, variant, final_state=final_state))


@dataclass
class LensReadout:
    """Per-(state, position) read-outs of one prompt. Shapes: ``S`` states, ``T`` positions.

    Attributes:
        ids: Input token ids ``(T,)``.
        kl: KL(p_final || p_i), nats ``(S, T)``.
        ce_final: Cross-entropy of p_i against p_final, nats ``(S, T)``.
        entropy: Entropy of p_i, nats ``(S, T)``.
        ce_next: -log p_i(x_{t+1}), nats ``(S, T)``; NaN at the last position.
        rank_final: Rank of the model's top-1 under p_i ``(S, T)``.
        prob_final: p_i of the model's top-1 ``(S, T)``.
        topk_ids: ``(S, T, K)``; topk_probs: ``(S, T, K)``.
        final_ids: The model's top-1 per position ``(T,)``.
    """

    ids: torch.Tensor
    kl: torch.Tensor
    ce_final: torch.Tensor
    entropy: torch.Tensor
    ce_next: torch.Tensor
    rank_final: torch.Tensor
    prob_final: torch.Tensor
    topk_ids: torch.Tensor
    topk_probs: torch.Tensor
    final_ids: torch.Tensor

    @property
    def top1_matches_final(self) -> torch.Tensor:
        """``(S, T)`` bool: the lens's top-1 equals the model's top-1."""
        return self.topk_ids[..., 0] == self.final_ids

    @property
    def top1_is_input(self) -> torch.Tensor:
        """``(S, T)`` bool: the lens's top-1 is the input token at that position."""
        return self.topk_ids[..., 0] == self.ids


#: Most rows (state x position cells) per block of the read-out, one block per worker thread at
#: a time: a float32 product of 256 rows x the unembedding runs near the core's peak (measured on
#: one core of this machine: 32 rows 50 GFLOP/s, 128 rows 80, 256 rows 88, 2048^3 98).
BLOCK_ROWS = 256
#: Most logits per block (a Gemma-sized vocabulary gets fewer rows: 128 MB per worker).
BLOCK_ELEMS = 2**25


def _row_blocks(n_rows: int, cap: int, workers: int) -> list[tuple[int, int]]:
    """Ranges ``[r0, r1)`` of at most ``cap`` rows, as many as a multiple of ``workers``, even."""
    n = -(-n_rows // max(1, cap))
    n = -(-n // workers) * workers if n > 1 else 1
    size = -(-n_rows // n)
    return [(r, min(r + size, n_rows)) for r in range(0, n_rows, size)]


ALL = slice(None)


class _Unembed:
    """The unembedding written into a reused buffer (``lm.bridge.unembed``'s numbers, no copies).

    A float32 model multiplies by the weight directly (``torch.mm(out=...)``: no bias broadcast
    copy, no fresh 100 MB allocation per call); other dtypes go through :func:`unembed`.
    """

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.weight, bias = unembed_weights(lm)
        self.bias = bias if bias is not None and bool(bias.any()) else None  # + 0 is exact
        self.cap = logit_softcap(lm)
        self.direct = self.weight.dtype == torch.float32

    def __call__(self, x: torch.Tensor, out: torch.Tensor, cols: slice = ALL) -> torch.Tensor:
        """Logits of normed rows ``x`` ``(n, D)`` into ``out`` ``(n, V)`` float32.

        ``cols``: only these vocabulary entries (``out`` then holds as many columns).
        """
        if not self.direct:
            return out.copy_(unembed(self.lm, x)[:, cols])
        torch.mm(x.to(self.weight.dtype), self.weight[cols].t(), out=out)
        if self.bias is not None:
            out += self.bias[cols]
        if self.cap:
            out.div_(self.cap).tanh_().mul_(self.cap)
        return out

    def split(self, x: torch.Tensor, workers: int) -> torch.Tensor:
        """Logits of ``x`` ``(n, D)``, vocabulary slices spread over single-core workers."""
        v = self.weight.shape[0]
        if workers <= 1 or not self.direct:
            return self(x, torch.empty(x.shape[0], v, device=x.device))
        cuts = [slice(v * i // workers, v * (i + 1) // workers) for i in range(workers)]
        empty = [torch.empty(x.shape[0], c.stop - c.start, device=x.device) for c in cuts]
        return torch.cat(map_threads(lambda i: self(x, empty[i], cuts[i]), range(workers)), -1)


def _final(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output distribution ``p_final`` ``(T, V)`` float32 and its entropy (float64).

    Computed in float64, then rounded: the float32 entries sum to 1 within 1e-7 (exp of a
    float32 log-softmax summed to 1 + 1e-5, which moved a 135-nat cross-entropy by 2e-3).
    """
    z64 = z.double()
    z64 -= z64.amax(-1, keepdim=True)
    p64 = z64.exp()
    norm = p64.sum(-1)
    p64 /= norm[:, None]
    return p64.float(), norm.log() - (p64 * z64).nansum(-1)


@torch.inference_mode()
def lens_from_states(
    lm: LoadedModel,
    states: torch.Tensor,
    final_logits: torch.Tensor | None,
    ids: torch.Tensor,
    k: int = 10,
    variant: str = "recompute_ln",
    chunk_elems: int = 2**26,
) -> LensReadout:
    """Read out every residual state through the final norm and unembedding.

    Fused and blocked: the logits are computed block by block (at most :data:`BLOCK_ROWS` rows
    and ``chunk_elems`` logits; as many blocks as a multiple of the worker threads, of even
    size) into a reused buffer per thread, the blocks spread over single-core threads
    (``map_threads``); every statistic (max, exp, sums, rank, top-k) is then read a few rows at
    a time while they are in the core's cache (:func:`fused.row_stats`). The numbers are those
    of the plain full-tensor computation (``tests/test_live_speed.py`` checks them against
    float64).

    Args:
        lm: Loaded model (for its norm and unembedding).
        states: ``(S, T, D)`` residual states, pre final norm (or translated by a tuned lens).
        final_logits: ``(T, V)`` the model's logits; ``None``: the read-out of ``states[-1]``
            (``h_L``: the model's own output), computed once for both uses.
        ids: ``(T,)`` input ids.
        k: Top-k tokens to keep.
        variant: ``recompute_ln`` or ``cached_final_scale``.
        chunk_elems: Upper bound on logits held at once.

    Returns:
        The read-outs.
    """
    dev = states.device
    cpu = dev.type == "cpu"
    workers = DEFAULT_THREADS if cpu else 1
    with intra_op_threads(1) if cpu else contextlib.nullcontext():  # small ops: no barriers
        return _read(lm, states, final_logits, ids, k, variant, chunk_elems, workers)


def _read(lm, states, final_logits, ids, k, variant, chunk_elems, workers) -> LensReadout:
    """:func:`lens_from_states` on ``workers`` single-core threads (1: in this thread)."""
    n_states, n_pos, _ = states.shape
    dev = states.device
    normed = final_norm(lm, states, variant, final_state=states[-1])  # (S, T, D), small
    head = _Unembed(lm)
    z_last = None  # without final_logits: the lens of h_L is the model's output, computed once
    if final_logits is None:
        z_last = final_logits = head.split(normed[-1], workers)
    cuts = [slice(n_pos * i // workers, n_pos * (i + 1) // workers) for i in range(workers)]
    cuts = [c for c in cuts if c.stop > c.start]  # positions split over the workers
    parts = map_threads(lambda c: _final(final_logits[c]), cuts)
    p_final = torch.cat([p for p, _ in parts])  # (T, V)
    h_final = torch.cat([h for _, h in parts])  # (T,) float64
    final_ids = final_logits.argmax(-1)  # (T,)
    next_ids = torch.cat([ids[1:], ids[:1]])  # (T,) last entry is a dummy, masked below
    v = final_logits.shape[-1]
    n_rows, d = n_states * n_pos, normed.shape[-1]
    rows = normed.reshape(n_rows, d)  # cell (s, t) is row s * T + t
    n_mm = n_rows - (n_pos if z_last is not None else 0)  # rows after n_mm: h_L, logits known
    cap = min(BLOCK_ROWS, max(1, min(BLOCK_ELEMS, chunk_elems) // v))
    blocks = _row_blocks(n_rows, cap, workers)
    step = max(1, fused.STAT_ELEMS // v)  # rows whose statistics are read while in cache
    shape, kk = (n_states, n_pos), min(k, v)
    out = {n: torch.empty(shape, device=dev) for n in ("kl", "ce_final", "entropy", "ce_next")}
    out["prob_final"] = torch.empty(shape, device=dev)
    out["rank_final"] = torch.empty(shape, dtype=torch.long, device=dev)
    out["topk_ids"] = torch.empty((*shape, kk), dtype=torch.long, device=dev)
    out["topk_probs"] = torch.empty((*shape, kk), device=dev)
    flat = {name: x.view(n_rows, *x.shape[2:]) for name, x in out.items()}

    def read(block: tuple[int, int]) -> None:  # rows r0..r1-1, written into ``out``
        r0, r1 = block
        zbuf, e = buffers((r1 - r0) * v, min(step, r1 - r0) * v, dev)
        z = zbuf.view(r1 - r0, v)
        if r0 < n_mm:
            head(rows[r0 : min(r1, n_mm)], z[: min(r1, n_mm) - r0])
        if r1 > n_mm:  # h_L: its logits are the model's, computed above
            z[max(r0, n_mm) - r0 :].copy_(z_last[max(r0, n_mm) - n_mm : r1 - n_mm])
        a = r0
        while a < r1:  # a few rows at a time, never across two states
            b = min(a + step, r1, (a // n_pos + 1) * n_pos)
            t0, t1 = a % n_pos, a % n_pos + b - a
            st = row_stats(
                z[a - r0 : b - r0],
                e[: (b - a) * v].view(b - a, v),
                p_final[t0:t1],
                final_ids[t0:t1],
                next_ids[t0:t1],
                kk,
            )
            ce_final = st["log_norm"].double() - st["pz"]  # -sum p_final log p_i
            flat["ce_final"][a:b] = ce_final.float()
            flat["kl"][a:b] = (ce_final - h_final[t0:t1]).clamp_min(0.0).float()
            flat["ce_next"][a:b] = st["log_norm"] - st["z_next"]
            for name in ("entropy", "prob_final", "rank_final", "topk_ids", "topk_probs"):
                flat[name][a:b] = st[name]
            a = b

    map_threads(read, blocks, workers)  # whole blocks per core: no barrier per operation
    out["ce_next"][:, -1] = float("nan")
    return LensReadout(ids=ids, final_ids=final_ids, **out)


def lens_readout(
    lm: LoadedModel, ids: torch.Tensor, k: int = 10, variant: str = "recompute_ln"
) -> LensReadout:
    """Run the model on ``ids`` (shape ``(1, T)``) and read out every residual state."""
    if variant not in NORM_VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; use one of {NORM_VARIANTS}.")
    states, logits = states_and_logits(lm, ids, logits=False)  # (S, T, D), None
    return lens_from_states(lm, states, logits, ids[0], k=k, variant=variant)


DOC_METRICS = {
    # metric: (unit, readout attribute)
    "kl_to_final": ("nats", "kl"),
    "ce_to_final": ("nats", "ce_final"),
    "entropy": ("nats", "entropy"),
    "ce_next_token": ("nats", "ce_next"),
    "prob_final_top1": ("prob", "prob_final"),
    "top1_matches_final": ("fraction", "top1_matches_final"),
    "top1_is_input": ("fraction", "top1_is_input"),
}


def doc_records(
    r: LensReadout,
    n_layers: int,
    variant: str,
    prompt_id: str,
    metrics: tuple[str, ...] | None = None,
) -> list[dict]:
    """Per-state means over positions ``1..T-1`` (position 0 excluded, METHODS.md 0.5).

    Args:
        r: The read-outs of one document.
        n_layers: ``L`` (for relative depth).
        variant: Label of the ``variant`` column.
        prompt_id: The document's id.
        metrics: Names of :data:`DOC_METRICS` to keep (``None``: all).
    """
    recs = []
    for metric, (unit, attr) in DOC_METRICS.items():
        if metrics is not None and metric not in metrics:
            continue
        vals = getattr(r, attr).float()[:, 1:]  # (S, T-1)
        for i, val in enumerate(vals.nanmean(-1).tolist()):
            recs.append(
                dict(
                    prompt_id=prompt_id,
                    variant=variant,
                    layer=i,
                    layer_kind="resid",
                    n_layers=n_layers,
                    metric=metric,
                    value=val,
                    unit=unit,
                )
            )
    return recs
