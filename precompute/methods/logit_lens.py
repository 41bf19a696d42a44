"""Logit lens (METHODS.md A1-A2): what each residual state would predict if the model stopped there.

Each state ``h_i`` (``i = 0..L``) goes through the model's own final norm, with its statistics
recomputed on ``h_i`` (the true lens; ``variant=cached_final_scale`` reproduces older
TransformerLens),
and the unembedding. Compared with the model's real output distribution ``p_final`` per position:

* ``kl_to_final`` = KL(p_final || p_i) in nats, ``ce_to_final`` = H(p_final) + KL,
* ``entropy`` of ``p_i`` in nats, ``ce_next_token`` = -log p_i(next token),
* ``top1_matches_final``, ``top1_is_input`` (the lens repeats the input token, seed 000),
* ``prob_final_top1`` and ``rank_final_top1`` (1 + #tokens with strictly higher probability).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> r = lens_readout(lm, lm.tokenize("the cat sat on the mat"))
    >>> r.kl.shape == (lm.n_layers + 1, 7)
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import torch

from precompute.methods import Method
from precompute.model.internals import NORM_VARIANTS, final_norm, residual_states, unembed
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext


@dataclass(frozen=True)
class LogitLensConfig(BaseConfig):
    """Defaults: K = 10 (GEVA tables), recomputed norm (METHODS.md A1).

    ``n_docs`` = 200 and ``max_tokens`` = 512 are the teaching defaults of METHODS.md A2 (ours;
    seed 000 states none). The embedded CPU results use smaller values, recorded in their config.
    ``variant`` may be ``both`` to compute the two norm variants from one forward pass.
    """

    k: int = 10
    variant: str = "recompute_ln"
    max_tokens: int = 512
    n_docs: int = 200
    chunk_elems: int = 2**26


@dataclass
class LensReadout:
    """Per-(state, position) read-outs of one prompt. Shapes: ``S = L+1`` states, ``T`` positions.

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
        states: ``(S, T, D)`` residual states, pre final norm.
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
        normed = final_norm(lm, h, variant, final_state=states[-1])  # (s, T, D)
        z = unembed(lm, normed).float()  # (s, T, V) logits
        # Few passes over (s, T, V): shift by the max, exponentiate once, reduce with batched
        # dot products (bmm) instead of materialising p * log p.
        z -= z.amax(-1, keepdim=True)
        e = z.exp()  # (s, T, V) unnormalised probabilities
        norm = e.sum(-1)  # (s, T)
        log_norm = norm.log()
        s_, t_ = z.shape[:2]
        ez = torch.bmm(e.view(s_ * t_, 1, v), z.view(s_ * t_, v, 1)).view(s_, t_)  # sum e*z
        ent = log_norm - ez / norm  # (s, T) entropy in nats
        pz = torch.einsum("stv,tv->st", z, p_final)  # (s, T) sum_v p_final * z
        ce_final = log_norm - pz  # (s, T): -sum p_final log p_i
        out["entropy"].append(ent)
        out["ce_final"].append(ce_final)
        out["kl"].append((ce_final - h_final).clamp_min(0.0))
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


def doc_records(r: LensReadout, n_layers: int, variant: str, prompt_id: str) -> list[dict]:
    """Per-layer means over positions ``1..T-1`` (position 0 excluded, METHODS.md 0.5)."""
    recs = []
    for metric, (unit, attr) in DOC_METRICS.items():
        vals = getattr(r, attr).float()[:, 1:]  # (S, T-1)
        means = vals.nanmean(-1).tolist()
        for i, val in enumerate(means):
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


def token_records(r: LensReadout, n_layers: int, variant: str, prompt_id: str) -> list[dict]:
    """Per-(state, position) rows for heatmaps: every position, every state."""
    recs = []
    per_cell = {
        "kl_to_final": ("nats", r.kl),
        "entropy": ("nats", r.entropy),
        "top1_prob": ("prob", r.topk_probs[..., 0]),
        "prob_final_top1": ("prob", r.prob_final),
        "rank_final_top1": ("rank", r.rank_final.float()),
    }
    for metric, (unit, t) in per_cell.items():
        arr = t.float().tolist()
        for i, row in enumerate(arr):
            for pos, val in enumerate(row):
                recs.append(
                    dict(
                        prompt_id=prompt_id,
                        variant=variant,
                        position=pos,
                        layer=i,
                        layer_kind="resid",
                        n_layers=n_layers,
                        metric=metric,
                        value=val,
                        unit=unit,
                    )
                )
    return recs


def topk_frame(
    lm: LoadedModel, r: LensReadout, ctx: RunContext, variant: str, prompt_id: str
) -> pd.DataFrame:
    """Top-k tokens per (state, position), long."""
    n_states, n_pos, k = r.topk_ids.shape
    ids = r.topk_ids.reshape(-1).tolist()
    uniq = {i: lm.tokenizer.decode([i]) for i in set(ids)}
    inputs = lm.token_strs(r.ids)
    layer = torch.arange(n_states).repeat_interleave(n_pos * k)
    pos = torch.arange(n_pos).repeat_interleave(k).repeat(n_states)
    return pd.DataFrame(
        {
            "model": ctx.model,
            "method": ctx.method,
            "variant": variant,
            "dataset": ctx.dataset,
            "prompt_id": prompt_id,
            "position": pos.numpy(),
            "input_token": [inputs[p] for p in pos.tolist()],
            "layer": layer.numpy(),
            "rel_depth": (layer / (n_states - 1)).numpy(),
            "k": torch.arange(1, k + 1).repeat(n_states * n_pos).numpy(),
            "token_id": ids,
            "token_str": [uniq[i] for i in ids],
            "prob": r.topk_probs.reshape(-1).numpy(),
            "run_id": ctx.run_id,
        }
    )


def prompt_frame(lm: LoadedModel, ctx: RunContext, item: Item, ids: torch.Tensor) -> pd.DataFrame:
    """One ``prompts`` row: the prompt as this model tokenised it."""
    toks = lm.token_strs(ids)
    return pd.DataFrame(
        [
            dict(
                model=ctx.model,
                dataset=ctx.dataset,
                prompt_id=item.prompt_id,
                text=item.text,
                n_tokens=len(toks),
                tokens_json=json.dumps(toks),
                run_id=ctx.run_id,
            )
        ]
    )


def process(
    lm: LoadedModel, items: list[Item], cfg: LogitLensConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: per-document layer curves; for the example prompts also per-token read-outs."""
    variants = [cfg.variant] if cfg.variant != "both" else list(NORM_VARIANTS)
    detailed = ctx.dataset == "examples"
    metrics, topk, prompts = [], [], []
    for item in items:
        ids = lm.tokenize(item.text, max_tokens=cfg.max_tokens)  # (1, T)
        if ids.shape[1] < 2:
            continue
        states, logits = residual_states(lm, ids)
        for variant in variants:
            r = lens_from_states(lm, states, logits, ids[0], cfg.k, variant, cfg.chunk_elems)
            recs = doc_records(r, lm.n_layers, variant, item.prompt_id)
            if detailed:
                recs += token_records(r, lm.n_layers, variant, item.prompt_id)
                topk.append(topk_frame(lm, r, ctx, variant, item.prompt_id))
            metrics.append(ctx.metrics(recs))
        prompts.append(prompt_frame(lm, ctx, item, ids[0]))
    out = {"metrics": pd.concat(metrics) if metrics else ctx.metrics([])}
    if prompts:
        out["prompts"] = pd.concat(prompts)
    if topk:
        out["lens_topk"] = pd.concat(topk)
    return out


def run_one(lm: LoadedModel, prompt: str, cfg: LogitLensConfig) -> pd.DataFrame:
    """Tidy rows for one prompt: per (layer, position) metrics, with the lens's top-1 token."""
    ids = lm.tokenize(prompt, max_tokens=cfg.max_tokens)
    r = lens_readout(lm, ids, k=cfg.k, variant=cfg.variant)
    ctx = RunContext(model=lm.name, method="logit_lens", dataset="live")
    df = ctx.metrics(token_records(r, lm.n_layers, cfg.variant, "live"))
    top1 = r.topk_ids[..., 0]  # (S, T)
    strs = {i: lm.tokenizer.decode([i]) for i in set(top1.flatten().tolist())}
    df["token"] = [strs[int(top1[layer, pos])] for layer, pos in zip(df["layer"], df["position"])]
    inputs = lm.token_strs(ids)
    df["input_token"] = [inputs[p] for p in df["position"]]
    return df


def bench_live_lens(model_name: str, args) -> dict:
    """``bench live-logit-lens``: the live lens on a 32-token prompt against the matmul peak.

    ``flops`` counts the work the lens cannot avoid: the forward pass through the blocks
    (2 FLOPs per block parameter per token) plus unembedding every residual state at every
    position (2 * (L+1) * T * D * V; the last state's unembedding is the model's own output).
    """
    from precompute.bench.util import matmul_peak_flops, median_seconds
    from precompute.model.load import load_model

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    text = "The Eiffel Tower is located in the city of Paris, which is the capital of France. " * 4
    ids = lm.tokenize(text)[:, :32]  # (1, 32)
    n_tok = ids.shape[1]

    def forward() -> None:
        with torch.inference_mode(), lm.lock:
            lm.bridge(ids)

    forward_s = median_seconds(forward)
    lens_s = median_seconds(lambda: lens_readout(lm, ids))
    block_params = sum(p.numel() for p in lm.bridge.blocks.parameters())
    flops = 2 * block_params * n_tok + 2 * (lm.n_layers + 1) * n_tok * lm.d_model * lm.d_vocab
    peak = matmul_peak_flops()
    return {
        "model": lm.name,
        "tokens": n_tok,
        "lens_seconds": round(lens_s, 4),
        "forward_seconds": round(forward_s, 4),
        "flops": int(flops),
        "matmul_peak_flops": round(peak),
        "fraction_of_peak": round(flops / lens_s / peak, 3),
    }


METHOD = Method(
    name="logit_lens",
    summary="Logit lens: KL to final, entropy, top-1 agreement and input repetition per layer.",
    config_cls=LogitLensConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=8,
    extra_datasets=("examples",),
    benches={"live-logit-lens": bench_live_lens},
)
