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

from precompute.model.internals import NORM_VARIANTS, final_norm, residual_states, unembed
from precompute.model.load import LoadedModel


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


@torch.inference_mode()
def lens_from_states(
    lm: LoadedModel,
    states: torch.Tensor,
    final_logits: torch.Tensor,
    ids: torch.Tensor,
    k: int = 10,
    variant: str = "recompute_ln",
    chunk_elems: int = 2**26,
) -> LensReadout:
    """Read out every residual state through the final norm and unembedding.

    Args:
        lm: Loaded model (for its norm and unembedding).
        states: ``(S, T, D)`` residual states, pre final norm (or translated by a tuned lens).
        final_logits: ``(T, V)`` the model's logits.
        ids: ``(T,)`` input ids.
        k: Top-k tokens to keep.
        variant: ``recompute_ln`` or ``cached_final_scale``.
        chunk_elems: Upper bound on logits held at once (states are processed in chunks).

    Returns:
        The read-outs.
    """
    n_states, n_pos, _ = states.shape
    logp_final = torch.log_softmax(final_logits.float(), -1)  # (T, V)
    p_final = logp_final.exp()
    h_final = (p_final * -logp_final).nan_to_num().sum(-1)  # (T,) entropy of p_final
    final_ids = logp_final.argmax(-1)  # (T,)
    next_ids = torch.cat([ids[1:], ids[:1]])  # (T,) last entry is a dummy, masked below
    v = final_logits.shape[-1]
    step = max(1, chunk_elems // max(n_pos * v, 1))
    out: dict[str, list[torch.Tensor]] = {n: [] for n in LensReadout.__dataclass_fields__}
    for s0 in range(0, n_states, step):
        h = states[s0 : s0 + step]  # (s, T, D)
        z = lens_logits(lm, h, variant, final_state=states[-1]).float()  # (s, T, V)
        # Few passes over (s, T, V): shift by the max, exponentiate once, reduce with batched
        # dot products (bmm) instead of materialising p * log p.
        z -= z.amax(-1, keepdim=True)
        e = z.exp()  # (s, T, V) unnormalised probabilities
        norm = e.sum(-1)  # (s, T)
        log_norm = norm.log()
        s_, t_ = z.shape[:2]
        ez = torch.bmm(e.view(s_ * t_, 1, v), z.view(s_ * t_, v, 1)).view(s_, t_)  # sum e*z
        ent = log_norm - ez / norm  # (s, T) entropy in nats
        pz = vocab_dot(z, p_final)  # (s, T) float64: sum_v p_final * z
        ce_final = log_norm.double() - pz  # (s, T): -sum p_final log p_i
        out["entropy"].append(ent)
        out["ce_final"].append(ce_final.float())
        out["kl"].append((ce_final - h_final.double()).clamp_min(0.0).float())
        z_star = z.gather(-1, final_ids.expand(s_, -1)[..., None])  # (s, T, 1)
        out["prob_final"].append((z_star[..., 0] - log_norm).exp())
        out["rank_final"].append(1 + (z > z_star).sum(-1))
        z_next = z.gather(-1, next_ids.expand(s_, -1)[..., None])[..., 0]  # (s, T)
        ce_next = log_norm - z_next
        ce_next[:, -1] = float("nan")
        out["ce_next"].append(ce_next)
        top = z.topk(min(k, v), dim=-1)
        out["topk_ids"].append(top.indices)
        out["topk_probs"].append((top.values - log_norm[..., None]).exp())
    cat = {n: torch.cat(t) for n, t in out.items() if t}
    return LensReadout(ids=ids, final_ids=final_ids, **cat)


def lens_readout(
    lm: LoadedModel, ids: torch.Tensor, k: int = 10, variant: str = "recompute_ln"
) -> LensReadout:
    """Run the model on ``ids`` (shape ``(1, T)``) and read out every residual state."""
    if variant not in NORM_VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; use one of {NORM_VARIANTS}.")
    states, logits = residual_states(lm, ids)  # (S, T, D), (T, V)
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
