"""Prediction and suppression neurons (METHODS.md D3; Gurnee et al. 2024, LAD ``neuron_counter``).

A neuron's direct effect on the vocabulary is the cosine of its output weights ``w_out`` (a row of
``W_out``, what it writes into the residual stream) with every token's unembedding column. Over the
``V`` cosines, the vocabulary moments tell the shape: a few tokens strongly promoted (heavy right
tail: kurtosis > 10, skew > 0) is a *prediction* neuron; a few strongly suppressed (skew < 0) a
*suppression* neuron. Kurtosis is **non-excess** (Gaussian = 3). No forward passes: weights only,
one layer at a time, neurons in chunks so a 262k-token vocabulary fits in memory.

Weight preprocessing (``preprocessing="lad"``, the default). LAD loads models with TransformerLens
``fold_ln=True, center_writing_weights=True, center_unembed=True``. The bridge cannot refold the
weights here, so the equivalent is applied directly to the two matrices used (the same linear maps
TransformerLens applies; nothing runs):

* fold the final norm's scale into ``W_U`` (``W_U <- diag(g) W_U``; its bias only moves ``b_U``);
* LayerNorm models only: centre ``W_U`` over ``d_model`` (fold_ln with centring) and centre each
  ``w_out`` over ``d_model`` (``center_writing_weights``; TransformerLens skips both for RMSNorm);
* centre ``W_U`` over the vocabulary (``center_unembed``);
* Gemma-style post-MLP norms: the neuron's written direction is ``g_post * w_out`` (the RMS divide
  is a positive scalar shared by all neurons, so it does not change a cosine; the norm makes the
  neuron's write non-linear, which no weight statistic can capture -- stated on the page).

``preprocessing="raw"`` uses the checkpoint's matrices as they are.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> frame = layer_neurons(lm, 0, unembedding_directions(lm))
    >>> len(frame["vocab_kurt"]) == lm.bridge.cfg.d_mlp
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from precompute.methods import Method
from precompute.model.internals import is_layernorm
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext, rel_depth

PREPROCESSING = ("lad", "raw")


@dataclass(frozen=True)
class NeuronsConfig(BaseConfig):
    """Defaults: kurtosis threshold 10 (non-excess) and the sign of the skew [LAD, UN].

    ``chunk_elems`` (ours) bounds the cosines held at once (neurons x vocabulary).
    """

    kurtosis_threshold: float = 10.0
    preprocessing: str = "lad"
    chunk_elems: int = 2**25


def norm_scale(module: torch.nn.Module, d_model: int) -> torch.Tensor:
    """Return the elementwise scale ``g`` a norm module applies after normalising, ``(D,)``.

    ``nn.LayerNorm`` exposes it as ``weight``. RMSNorm variants differ (Llama multiplies by
    ``weight``, Gemma by ``1 + weight``), so the module is applied to ``sqrt(D) * I``, whose rows
    have unit RMS: the output's diagonal over ``sqrt(D)`` is ``g``.
    """
    if isinstance(module, torch.nn.LayerNorm):
        if module.weight is None:
            return torch.ones(d_model)
        return module.weight.detach().float().cpu()
    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    eye = torch.eye(d_model, dtype=dtype, device=device) * d_model**0.5  # (D, D), unit-RMS rows
    with torch.inference_mode():
        out = module(eye)  # (D, D)
    return (out.diagonal() / d_model**0.5).float().cpu()


def _original(component):
    return getattr(component, "original_component", component)


def unembedding_directions(lm: LoadedModel, preprocessing: str = "lad") -> torch.Tensor:
    """``W_U`` as ``(D, V)`` with every column (token) normalised to unit length.

    Args:
        lm: Loaded model.
        preprocessing: ``lad`` (TransformerLens-equivalent folding and centring) or ``raw``.
    """
    if preprocessing not in PREPROCESSING:
        raise ValueError(f"Unknown preprocessing {preprocessing!r}; use one of {PREPROCESSING}.")
    w_u = lm.bridge.original_model.get_output_embeddings().weight.detach().float().cpu().T  # (D, V)
    if preprocessing == "lad":
        g = norm_scale(_original(lm.bridge.ln_final), lm.d_model)  # (D,)
        w_u = w_u * g[:, None]
        if is_layernorm(lm):
            w_u = w_u - w_u.mean(0, keepdim=True)  # fold_ln centring of the reading weights
        w_u = w_u - w_u.mean(1, keepdim=True)  # center_unembed
    return w_u / w_u.norm(dim=0, keepdim=True).clamp_min(1e-12)


def output_weights(lm: LoadedModel, layer: int, preprocessing: str = "lad") -> torch.Tensor:
    """Return the output direction of every MLP neuron of one layer, ``(d_mlp, D)``.

    Raises:
        ValueError: ``layer`` out of range.
    """
    if not 0 <= layer < lm.n_layers:
        raise ValueError(
            f"Layer {layer} is out of range: {lm.name} has layers 0..{lm.n_layers - 1}."
        )
    block = lm.bridge.blocks[layer]
    out = _original(block.mlp.out)
    w = out.weight.detach().float().cpu()
    # nn.Linear stores (D, d_mlp); GPT-2's Conv1D stores (d_mlp, D)
    w = w.T if isinstance(out, torch.nn.Linear) else w  # (d_mlp, D)
    if w.shape[1] != lm.d_model:
        raise ValueError(f"Unexpected MLP output weight shape {tuple(w.shape)} in {lm.name}.")
    if preprocessing == "lad":
        post = getattr(block, "ln2_post", None)  # Gemma: a norm after the MLP, before the residual
        if post is not None:
            w = w * norm_scale(_original(post), lm.d_model)[None, :]
        if is_layernorm(lm):
            w = w - w.mean(1, keepdim=True)  # center_writing_weights
    return w


@torch.inference_mode()
def vocab_moments(
    w_out: torch.Tensor, w_u_unit: torch.Tensor, chunk_elems: int = 2**25
) -> dict[str, torch.Tensor]:
    """Moments over the vocabulary of ``cos(w_out, W_U[:, v])``.

    Args:
        w_out: ``(N, D)`` neuron output weights.
        w_u_unit: ``(D, V)`` unit-norm unembedding columns.
        chunk_elems: Upper bound on cosines held at once.

    Returns:
        ``vocab_mean, vocab_var`` (population), ``vocab_skew`` (E[z^3]) and ``vocab_kurt`` (E[z^4],
        non-excess), each ``(N,)``. A neuron with zero output weights (or constant cosines) gets
        zero variance, skew and kurtosis.
    """
    n, v = w_out.shape[0], w_u_unit.shape[1]
    unit = w_out.float() / w_out.float().norm(dim=1, keepdim=True).clamp_min(1e-12)  # (N, D)
    step = max(1, chunk_elems // max(v, 1))
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("mean", "var", "skew", "kurt")}
    for s in range(0, n, step):
        c = unit[s : s + step] @ w_u_unit  # (n, V) cosines
        mean = c.mean(1, keepdim=True)  # (n, 1)
        c -= mean
        sq = c.square()  # (n, V)
        m2 = sq.mean(1)  # (n,)
        m3 = (sq * c).mean(1)
        m4 = sq.square_().mean(1)
        ok = m2 > 1e-20
        safe = torch.where(ok, m2, torch.ones_like(m2))
        cols["mean"].append(mean[:, 0])
        cols["var"].append(m2)
        cols["skew"].append(torch.where(ok, m3 / safe.pow(1.5), torch.zeros_like(m2)))
        cols["kurt"].append(torch.where(ok, m4 / safe.square(), torch.zeros_like(m2)))
    return {f"vocab_{k}": torch.cat(t) for k, t in cols.items()}


def classify(moments: dict[str, torch.Tensor], threshold: float = 10.0) -> dict[str, torch.Tensor]:
    """``is_prediction`` (kurtosis > threshold, skew > 0) and ``is_suppression`` (skew < 0)."""
    heavy = moments["vocab_kurt"] > threshold
    return {
        "is_prediction": heavy & (moments["vocab_skew"] > 0),
        "is_suppression": heavy & (moments["vocab_skew"] < 0),
    }


def layer_neurons(
    lm: LoadedModel,
    layer: int,
    w_u_unit: torch.Tensor,
    cfg: NeuronsConfig | None = None,
) -> dict[str, torch.Tensor]:
    """Moments and classes of every neuron of one layer (``(d_mlp,)`` tensors)."""
    cfg = cfg or NeuronsConfig()
    moments = vocab_moments(output_weights(lm, layer, cfg.preprocessing), w_u_unit, cfg.chunk_elems)
    return {**moments, **classify(moments, cfg.kurtosis_threshold)}


def layer_frames(
    lm: LoadedModel, layer: int, stats: dict[str, torch.Tensor], ctx: RunContext, variant: str
) -> tuple[pd.DataFrame, list[dict]]:
    """Build the ``neurons`` rows of one layer and its four per-layer summary records."""
    n = len(stats["vocab_kurt"])
    frame = pd.DataFrame({k: t.numpy() for k, t in stats.items()})
    frame.insert(0, "neuron", range(n))
    frame = frame.assign(
        model=ctx.model,
        method=ctx.method,
        variant=variant,
        layer=layer,
        n_layers=lm.n_layers,
        rel_depth=rel_depth(layer, "block", lm.n_layers),
        run_id=ctx.run_id,
    )
    n_pred = int(stats["is_prediction"].sum())
    n_supp = int(stats["is_suppression"].sum())
    summary = [
        ("n_prediction", n_pred, "count"),
        ("n_suppression", n_supp, "count"),
        ("pct_prediction", 100.0 * n_pred / n, "percent"),
        ("pct_suppression", 100.0 * n_supp / n, "percent"),
    ]
    recs = [
        dict(
            variant=variant,
            layer=layer,
            layer_kind="block",
            n_layers=lm.n_layers,
            metric=metric,
            value=float(val),
            unit=unit,
            dataset="weights",
        )
        for metric, val, unit in summary
    ]
    return frame, recs


def process(
    lm: LoadedModel, items: list[Item], cfg: NeuronsConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute every layer's neurons from the weights (the items are not read)."""
    if cfg.preprocessing not in PREPROCESSING:
        raise ValueError(
            f"Unknown preprocessing {cfg.preprocessing!r}; use one of {PREPROCESSING}."
        )
    w_u_unit = unembedding_directions(lm, cfg.preprocessing)  # (D, V)
    frames, recs = [], []
    for layer in range(lm.n_layers):
        stats = layer_neurons(lm, layer, w_u_unit, cfg)
        frame, layer_recs = layer_frames(lm, layer, stats, ctx, cfg.preprocessing)
        frames.append(frame)
        recs += layer_recs
    return {"metrics": ctx.metrics(recs), "neurons": pd.concat(frames, ignore_index=True)}


METHOD = Method(
    name="neurons",
    summary="Prediction and suppression neurons from the vocabulary moments of MLP output weights.",
    config_cls=NeuronsConfig,
    # Weights only: the job machinery needs a dataset, so it loads the (small) example prompts and
    # ignores them; metric rows say dataset "weights".
    dataset="examples",
    process=process,
    run_one=None,
    chunk_size=None,
)
