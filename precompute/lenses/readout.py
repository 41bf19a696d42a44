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

from dataclasses import dataclass

import torch

from precompute.lenses.fused import buffers, group_max, topk_in_groups
from precompute.model.internals import (
    NORM_VARIANTS,
    final_norm,
    logit_softcap,
    unembed,
    unembed_weights,
)
from precompute.model.load import LoadedModel
from precompute.model.replay import states_and_logits
from precompute.model.threads import map_threads


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


def vocab_dot(z: torch.Tensor, p: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """``sum_v p[t, v] * z[s, t, v]``, accumulated in float64 across vocabulary blocks.

    A single float32 matrix product over a 262k vocabulary (Gemma) accumulates enough rounding
    to move a small KL (= CE - H, a difference of two nats-sized numbers) by 5e-3 relative;
    float32 blocks of ``block`` entries summed in float64 keep it near 1e-4, and run as fast.

    Args:
        z: ``(S, T, V)`` logits.
        p: ``(T, V)`` probabilities.
        block: Vocabulary entries per float32 partial sum.

    Returns:
        ``(S, T)`` float64.
    """
    out = torch.zeros(z.shape[:2], dtype=torch.float64, device=z.device)
    for v0 in range(0, z.shape[-1], block):
        out += torch.einsum("stv,tv->st", z[..., v0 : v0 + block], p[:, v0 : v0 + block]).double()
    return out


#: Rows (state x position cells) per block of the read-out: a float32 matrix product of 128 rows
#: runs at full speed on one core (46 GFLOP/s here; 32 rows: 27, reading the unembedding from
#: memory once per block), and the block's statistics are read while it is in cache or close.
BLOCK_ROWS = 128


def _blocks(n_states: int, n_pos: int, v: int, elems: int) -> list[tuple[slice, slice]]:
    """Rectangles ``(states, positions)`` of about ``elems`` logits covering every cell."""
    if n_pos * v <= elems:
        step = max(1, elems // (n_pos * v))
        return [(slice(s, s + step), slice(0, n_pos)) for s in range(0, n_states, step)]
    step = max(1, elems // v)
    return [
        (slice(s, s + 1), slice(t, t + step))
        for s in range(n_states)
        for t in range(0, n_pos, step)
    ]


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

    def __call__(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Logits of normed rows ``x`` ``(n, D)`` into ``out`` ``(n, V)`` float32."""
        if not self.direct:
            return out.copy_(unembed(self.lm, x))
        torch.mm(x.to(self.weight.dtype), self.weight.t(), out=out)
        if self.bias is not None:
            out += self.bias
        if self.cap:
            out.div_(self.cap).tanh_().mul_(self.cap)
        return out


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

    Fused and blocked: the logits are computed block by block (:data:`BLOCK_ROWS` rows, at
    most ``chunk_elems`` logits) into two reused buffers per thread, every statistic (max, exp,
    sums, rank, top-k) is read from the block while it is near, and the blocks are spread over
    single-core threads (``map_threads``). The numbers are those of the plain full-tensor
    computation (``tests/test_live_speed.py`` checks them against float64).

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
    n_states, n_pos, _ = states.shape
    normed = final_norm(lm, states, variant, final_state=states[-1])  # (S, T, D), small
    head = _Unembed(lm)
    dev = states.device
    z_last = None  # without final_logits: the lens of h_L is the model's output, computed once
    if final_logits is None:
        z_last = head(normed[-1], torch.empty(n_pos, head.weight.shape[0], device=dev))
        final_logits = z_last
    logp_final = torch.log_softmax(final_logits.float(), -1)  # (T, V)
    p_final = logp_final.exp()
    h_final = (p_final * -logp_final).nan_to_num().sum(-1).double()  # (T,) entropy of p_final
    final_ids = logp_final.argmax(-1)  # (T,)
    next_ids = torch.cat([ids[1:], ids[:1]])  # (T,) last entry is a dummy, masked below
    v = final_logits.shape[-1]
    n_read = n_states - (z_last is not None)  # states whose logits the blocks compute
    blocks = _blocks(n_read, n_pos, v, max(v, min(BLOCK_ROWS * v, chunk_elems)))
    if z_last is not None:
        blocks.append((slice(n_read, n_states), slice(0, n_pos)))
    shape, kk = (n_states, n_pos), min(k, v)
    out = {n: torch.empty(shape, device=dev) for n in ("kl", "ce_final", "entropy", "ce_next")}
    out["prob_final"] = torch.empty(shape, device=dev)
    out["rank_final"] = torch.empty(shape, dtype=torch.long, device=dev)
    out["topk_ids"] = torch.empty((*shape, kk), dtype=torch.long, device=dev)
    out["topk_probs"] = torch.empty((*shape, kk), device=dev)

    def read(block: tuple[slice, slice]) -> None:  # one block, written into ``out``
        ss, ts = block
        h = normed[ss, ts]  # (s, t, D)
        s_, t_ = h.shape[:2]
        n = s_ * t_
        zbuf, ebuf = buffers(n * v, dev)
        if ss.start == n_read:  # h_L: its logits are the model's, computed above
            z = zbuf.view(s_, t_, v).copy_(z_last[ts].view(s_, t_, v))
        else:
            z = head(h.reshape(n, -1), zbuf.view(n, v)).view(s_, t_, v)
        m, groups = group_max(z, kk)
        z -= m  # shift by the max: exp never overflows
        e = torch.exp(z, out=ebuf.view(s_, t_, v))  # unnormalised probabilities
        norm = e.sum(-1)  # (s, t)
        log_norm = norm.log()
        ez = torch.bmm(e.view(n, 1, v), z.view(n, v, 1)).view(s_, t_)  # sum e*z
        out["entropy"][ss, ts] = log_norm - ez / norm
        ce_final = log_norm.double() - vocab_dot(z, p_final[ts])  # -sum p_final log p_i
        out["ce_final"][ss, ts] = ce_final.float()
        out["kl"][ss, ts] = (ce_final - h_final[ts]).clamp_min(0.0).float()
        z_star = z.gather(-1, final_ids[ts].expand(s_, -1)[..., None])  # (s, t, 1)
        out["prob_final"][ss, ts] = (z_star[..., 0] - log_norm).exp()
        above = torch.gt(z, z_star, out=e)  # e is free now: 1.0 where above (no bool cast)
        out["rank_final"][ss, ts] = 1 + above.sum(-1).long()
        z_next = z.gather(-1, next_ids[ts].expand(s_, -1)[..., None])[..., 0]
        out["ce_next"][ss, ts] = log_norm - z_next
        top_ids, top_z = topk_in_groups(z, kk, groups)
        out["topk_ids"][ss, ts] = top_ids
        out["topk_probs"][ss, ts] = (top_z - log_norm[..., None]).exp()

    if dev.type == "cpu":
        map_threads(read, blocks)  # whole blocks per core: no barrier per operation
    else:
        for block in blocks:
            read(block)
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
