"""Data shaping for "Delete or swap a layer" (no charts here): queries and the live intervention."""

from __future__ import annotations

import pandas as pd

from app import claims_views, data, live

METHODS = ("layer_ablation", "layer_swap")

#: metric: (label, unit, what the curve means). What the data show is computed on the page
#: (``app.claims_views``), never written here.
METRICS = {
    "kl": (
        "KL(normal ‖ intervened)",
        "nats",
        "How far the output distribution moves when the block is deleted or swapped. Lad et al. "
        "find the first and last blocks critical and most middle blocks dispensable in GPT-2 and "
        "Pythia; check each model below.",
    ),
    "top1_same": (
        "top-1 agreement with the normal model",
        "fraction",
        "The share of positions where the intervened model still picks the same next token.",
    ),
    "delta_entropy": (
        "entropy change (intervened − normal)",
        "bits",
        "Above 0: the intervened model is less sure; below 0: more sure. If the last block "
        "sharpened the output, deleting it would raise the entropy.",
    ),
    "delta_loss": (
        "next-token loss change (intervened − normal)",
        "nats",
        "How much worse the model predicts the actual next word (positive = worse).",
    ),
}

DEFINITIONS = (
    "- **Delete block l**: its attention and MLP write nothing; *attention only* / *MLP only* "
    "zero just one of them.\n"
    "- **Swap l, l+1**: run block l+1 before block l (each block keeps its own weights and "
    "attention type).\n"
    "- **KL(normal ‖ intervened)**: nats of surprise the intervened model has about the normal "
    "model's distribution, averaged over positions (position 0 excluded).\n"
    "- **Top-1 agreement**: positions where both pick the same next token.\n"
    "- **Entropy change** in bits and **loss change** in nats: intervened minus normal."
)

INTRO = (
    "Lad et al. delete one block at a time (the residual stream skips it) or run two "
    "neighbouring blocks in swapped order, and measure how far the output distribution moves. "
    "In their models most middle layers are dispensable and the first and last are not -- "
    "the evidence behind their *stages* of inference. Do these models agree?"
)
TRY_THIS = (
    "**Try this.** Delete block 0, then a middle block, then the last one; then swap "
    "the same blocks. Which breaks the prediction, and which leaves it almost intact?"
)

BLOCK_NOTE = (
    "Block l sits at relative depth l / (L − 1); the swap of blocks l and l+1 is drawn at block "
    "l, next to the deletion of block l."
)
PROVENANCE = (
    "Each WikiText-2 paragraph is cut to its first `max_tokens` tokens (the run's config, "
    "below). For every block l the model is run with that block deleted (its attention and MLP "
    "outputs zeroed, so the residual stream skips it) or with blocks l and l+1 run in swapped "
    "order, and compared with the normal run at positions 1..T−1: KL in nats, entropy in bits "
    "(as Lad et al.), next-token loss in nats at positions 1..T−2. Mean and 95 % interval "
    "(±1.96 SEM) over paragraphs. Deletion runs here; the swap runs below."
)


def finding(metric: str, df: pd.DataFrame) -> str:
    """What the data show for one metric, computed from every model's whole-block curves."""
    block = df[df["intervention"] == INTERVENTIONS[("layer_ablation", "block")]]
    swap = df[df["intervention"] == INTERVENTIONS[("layer_swap", "adjacent")]]
    if metric == "kl":
        return claims_views.deletion_finding(block, swap)
    kl = depth_frame("kl")
    kl = kl[kl["intervention"] == INTERVENTIONS[("layer_ablation", "block")]]
    return claims_views.edge_finding(metric, block, kl)


#: (method, variant) -> label on the page
INTERVENTIONS = {
    ("layer_ablation", "block"): "delete block",
    ("layer_ablation", "attn"): "delete attention only",
    ("layer_ablation", "mlp"): "delete MLP only",
    ("layer_swap", "adjacent"): "swap with next block",
}

#: live action -> (kind, component)
ACTIONS = {
    "delete block": ("delete", "block"),
    "delete attention only": ("delete", "attn"),
    "delete MLP only": ("delete", "mlp"),
    "swap with next block": ("swap", "block"),
}


def models() -> list[str]:
    """Models with deletion or swap results."""
    return sorted(set(data.models_for(METHODS[0])) | set(data.models_for(METHODS[1])))


def depth_frame(metric: str) -> pd.DataFrame:
    """Return the curves of one metric for every model and intervention (``intervention`` label)."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; use one of {sorted(METRICS)}.")
    df = data.query(
        """SELECT model, method, variant, layer, layer_kind, n_layers, rel_depth, metric, unit,
                  n, mean, ci_lo, ci_hi
           FROM metrics_agg WHERE method IN (?, ?) AND dataset = 'wikitext' AND metric = ?
           ORDER BY model, method, variant, layer""",
        [*METHODS, metric],
    )
    labels = [INTERVENTIONS.get((m, v), f"{m} {v}") for m, v in zip(df["method"], df["variant"])]
    return df.assign(intervention=labels)


def edge_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Summarise the edges: first, middle median, last, and the block of the largest value."""
    rows = []
    for (model, label), g in df.groupby(["model", "intervention"], sort=True):
        g = g.sort_values("layer")
        rows.append(
            {
                "model": model,
                "intervention": label,
                "first": g["mean"].iloc[0],
                "middle (median)": g["mean"].iloc[1:-1].median() if len(g) > 2 else float("nan"),
                "last": g["mean"].iloc[-1],
                "largest at block": int(g.loc[g["mean"].idxmax(), "layer"]),
                "documents": int(g["n"].max()),
            }
        )
    return pd.DataFrame(rows)


def n_blocks(model_name: str) -> int:
    """Return the number of blocks of a live model, from the catalog (no model load)."""
    from precompute.model.catalog import CATALOG

    spec = CATALOG.get(model_name)
    if spec is not None and spec.n_layers > 0:
        return int(spec.n_layers)
    return live.get_model(model_name).n_layers  # tiny or Hub models: ask the model itself


def _topk(lm, logp, k: int) -> pd.DataFrame:
    top = logp.exp().topk(k)
    ids = top.indices.tolist()
    return pd.DataFrame(
        {
            "rank": range(1, len(ids) + 1),
            "token": [repr(lm.tokenizer.decode([i])) for i in ids],
            "prob": top.values.tolist(),
        }
    )


def live_table(res: dict) -> pd.DataFrame:
    """Join the live top-k tables, before and after, into one long frame (CSV download)."""
    extra = {k: res[k] for k in ("model", "prompt", "action", "layer", "kl_last", "kl_mean")}
    return pd.concat(
        [res["before"].assign(when="before", **extra), res["after"].assign(when="after", **extra)]
    )


def live_intervention(
    model_name: str, prompt: str, action: str, layer: int, max_tokens: int, k: int = 10
) -> dict:
    """Run the intervention on the student's prompt with the same code as precompute.

    Returns:
        ``before`` / ``after``: top-k next tokens at the last position (DataFrames); ``kl_last``
        (nats) at the last position; ``kl_mean``, ``top1_same`` over positions 1..T-1; the
        settings; ``n_tokens`` and ``truncated``.

    Raises:
        ValueError: Layer out of range, an unknown action, or a prompt under two tokens.
    """
    import torch

    from precompute.model import interventions as iv

    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}; use one of {list(ACTIONS)}.")
    kind, component = ACTIONS[action]
    lm = live.get_model(model_name)
    ids = lm.tokenize(prompt, max_tokens=max_tokens)  # (1, T)
    n_full = int(lm.tokenize(prompt).shape[1])
    intervention = iv.Intervention(kind, int(layer), component)
    normal, after = iv.intervened_logits(lm, ids, intervention)  # (T, V) each
    m = iv.compare(normal, after[None], ids[0])
    lp_n = torch.log_softmax(normal[-1], -1)
    lp_a = torch.log_softmax(after[-1], -1)
    kl_last = float((lp_n.exp() * (lp_n - lp_a)).sum().clamp_min(0.0))
    return {
        "model": model_name,
        "prompt": prompt,
        "action": action,
        "layer": int(layer),
        "n_layers": lm.n_layers,
        "before": _topk(lm, lp_n, k),
        "after": _topk(lm, lp_a, k),
        "kl_last": kl_last,
        "kl_mean": float(m["kl"][0]),
        "top1_same": float(m["top1_same"][0]),
        "n_tokens": int(ids.shape[1]),
        "truncated": n_full > max_tokens,
    }
