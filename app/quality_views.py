"""Data shaping for the "knows vs uses" (probes, patching) and representation-quality pages."""

from __future__ import annotations

import pandas as pd

from app import data

PROBE_METHOD = "probes"
PATCH_METHOD = "activation_patching"
QUALITY_METHOD = "representation_quality"

#: The curve name of the patching effect in ``knows_uses_frame``.
USES = "patching effect (uses)"
INTRO = (
    "For each fact prompt we take the residual state at the last token after every layer and "
    "train a logistic-regression probe (standardised features, 5-fold cross-validation) to "
    "predict the model's own final answer token. Answers with too few examples are dropped. "
    "Two baselines: the *majority* answer, and the *template only* guess (the most frequent "
    "answer of the prompt's relation, without reading the model)."
)
KNOWS_NOTE = (
    "**What to look for.** The probe curve says where the answer is *linearly readable* from "
    "the last token; the patching curve says where copying the clean state into a corrupted run "
    "*restores* the answer: from there on the model uses it. Gandikota et al. (Evolution of LLM "
    "Stages) find the answer decodable 7-9 layers before it is used. Facts of one relation "
    "share a template, so a probe can guess the answer from the template alone: only accuracy "
    "above the 'template only' line is knowledge of the fact. The shuffled-label control is "
    "near chance by construction (labels shuffled across examples cannot be learned for held-out "
    "folds): it is not a memorisation control."
)
PROVENANCE = (
    "Label = the model's argmax token at the last position (computed from its final "
    "state, so no second pass). scikit-learn LogisticRegression (L2, C = 1, lbfgs, "
    "max_iter 1000) after StandardScaler fitted on the training folds only; "
    "StratifiedKFold(5, shuffle, seed 0); the control shuffles labels once with seed 0. "
    "The minimum examples per answer is in each run's config (lowered for the small "
    "offline fact sets).",
)

#: Probe metrics: (label, what it is).
PROBE_METRICS = {
    "probe_acc": ("probe accuracy", "held-out accuracy of the linear probe (5-fold CV)"),
    "control_acc": (
        "control (shuffled labels)",
        "the same probe trained on labels shuffled across examples: near chance by construction, "
        "so it checks the pipeline, not how much a probe can memorise",
    ),
    "majority_acc": ("majority class", "always guessing the most frequent answer"),
    "template_acc": (
        "template only",
        "guessing the most frequent answer of the prompt's relation, without reading the model",
    ),
    "selectivity": ("selectivity", "probe accuracy minus control accuracy"),
}

#: Representation-quality metric: (label, variant, unit, what it measures).
QUALITY_METRICS = {
    "prompt_entropy": (
        "prompt entropy",
        "maxEntropy",
        "fraction of maximum",
        "How spread out the tokens of one prompt are: the matrix entropy of the tokens' Gram "
        "matrix (after centring and unit-length scaling), divided by its maximum. Low = the "
        "tokens collapse onto a few directions (compression); high = every token points its "
        "own way.",
    ),
    "dataset_entropy": (
        "dataset entropy",
        "maxEntropy",
        "fraction of maximum",
        "The same entropy across prompts: one pooled vector per prompt. Low = the layer maps "
        "different prompts to similar vectors; high = prompts stay distinct.",
    ),
    "curvature_rad": (
        "curvature",
        "",
        "radians",
        "How sharply the sequence of token states turns: the mean angle between consecutive "
        "steps z_{k+1} - z_k. 0 = a straight line; about 2.09 rad (2π/3) = random, unrelated "
        "steps. Hosseini & Fedorenko found LLMs straighten sentence trajectories in middle layers.",
    ),
    "infonce": (
        "InfoNCE loss",
        "",
        "nats",
        "Can each prompt's typo-ed copy be picked out of all the others by its vector? The "
        "contrastive loss with temperature 0.1: lower = more invariant to the typos.",
    ),
    "lidar": (
        "LiDAR",
        "maxEntropy",
        "fraction of maximum",
        "Linear discriminant analysis with each prompt as a class and its augmented copies as "
        "samples: the entropy of the between-prompt scatter measured in units of the "
        "within-prompt (augmentation) scatter. High = many directions separate prompts robustly.",
    ),
    "dime": (
        "DiME",
        "",
        "nats",
        "Do two augmented views share information? The entropy of the joint (Hadamard) Gram "
        "matrix with the pairing shuffled minus with the true pairing. Higher = the views "
        "agree more than chance.",
    ),
}


def datasets(method: str) -> list[str]:
    """Datasets with aggregated results for a method."""
    if not data.table_exists("metrics_agg"):
        return []
    df = data.query(
        "SELECT DISTINCT dataset FROM metrics_agg WHERE method = ? ORDER BY dataset", [method]
    )
    return df["dataset"].tolist()


def probe_curves(dataset: str, metrics: list[str] | None = None) -> pd.DataFrame:
    """Mean over folds and 95 % interval of the probe metrics per model and state."""
    df = data.query(
        """SELECT model, variant AS label_kind, metric, layer, n_layers, rel_depth, mean, ci_lo,
                  ci_hi, n
           FROM metrics_agg WHERE method = ? AND dataset = ? AND grp = ''
           AND unit = 'fraction' ORDER BY model, metric, layer""",
        [PROBE_METHOD, dataset],
    )
    df = df[df["metric"].isin(metrics or list(PROBE_METRICS))].copy()
    df["curve"] = df["metric"].map(lambda m: PROBE_METRICS[m][0])
    return df


def probe_sizes(dataset: str) -> pd.DataFrame:
    """Examples and classes each model's probes used (same at every state)."""
    df = data.query(
        """SELECT model, metric, max(mean) AS value FROM metrics_agg
           WHERE method = ? AND dataset = ? AND metric IN ('n_examples', 'n_classes')
           GROUP BY model, metric""",
        [PROBE_METHOD, dataset],
    )
    if df.empty:
        return df
    return df.pivot(index="model", columns="metric", values="value").reset_index()


#: From ``precompute.methods.activation_patching`` (USES_VARIANT, EFFECT_METRIC, USES_METRIC,
#: USES_REL_METRIC), copied so the page does not import torch.
USES_VARIANT = "resid_last"
EFFECT_METRIC = "effect_logit_diff"
USES_METRIC = "uses_layer"
USES_REL_METRIC = "uses_rel_depth"


def _patch_dataset(dataset: str, available: list[str]) -> str | None:
    if dataset in available:
        return dataset
    return available[0] if available else None


def uses_curve(dataset: str) -> pd.DataFrame:
    """Return the activation-patching "uses" curve (empty without patching results).

    The normalised logit-difference effect of patching the clean ``h_i`` into the corrupted run at
    the last position (variant ``resid_last``): 0 = corrupted, 1 = clean (METHODS.md B3). Taken
    from the same facts as the probes when the patching ran on them, else from its own facts.
    """
    if not data.models_for(PATCH_METHOD):
        return pd.DataFrame()
    df = data.query(
        """SELECT model, dataset, layer, n_layers, rel_depth, mean, ci_lo, ci_hi, n
           FROM metrics_agg WHERE method = ? AND metric = ? AND variant = ?
           AND layer_kind = 'resid' ORDER BY model, layer""",
        [PATCH_METHOD, EFFECT_METRIC, USES_VARIANT],
    )
    ds = _patch_dataset(dataset, sorted(df["dataset"].unique()))
    return df[df["dataset"] == ds].copy()


def uses_summary(dataset: str) -> pd.DataFrame:
    """Per model: mean over facts of the uses state and its relative depth (``resid_last``)."""
    if not data.models_for(PATCH_METHOD):
        return pd.DataFrame(columns=["model", "dataset", "metric", "mean", "n"])
    df = data.query(
        """SELECT model, dataset, metric, mean, n FROM metrics_agg
           WHERE method = ? AND variant = ? AND metric IN (?, ?)""",
        [PATCH_METHOD, USES_VARIANT, USES_METRIC, USES_REL_METRIC],
    )
    ds = _patch_dataset(dataset, sorted(df["dataset"].unique()))
    return df[df["dataset"] == ds]


def knows_uses_gap(dataset: str) -> pd.DataFrame:
    """Per model: the "knows" state (probes) and the "uses" state (patching), and their gap.

    ``knows`` = first state with mean probe accuracy >= 0.9 x max (METHODS.md B3 step 7, the
    ``knows_layer`` rows). ``uses`` = mean over facts of the first state whose ``resid_last``
    patching effect is >= 0.5 (B3 step 6, computed by ``activation_patching``).
    ``gap = uses - knows`` in layers and in relative depth.
    """
    knows = data.query(
        """SELECT model, layer AS knows_layer, rel_depth AS knows_rel, n_layers FROM metrics_agg
           WHERE method = ? AND dataset = ? AND metric = 'knows_layer'""",
        [PROBE_METHOD, dataset],
    )
    if knows.empty:
        return knows
    uses = uses_summary(dataset)
    rows = []
    for r in knows.itertuples():
        u = uses[uses["model"] == r.model].set_index("metric")
        has = USES_METRIC in u.index and USES_REL_METRIC in u.index
        uses_layer = float(u.loc[USES_METRIC, "mean"]) if has else None
        uses_rel = float(u.loc[USES_REL_METRIC, "mean"]) if has else None
        rows.append(
            {
                "model": r.model,
                "layers (L)": int(r.n_layers),
                "knows: state": int(r.knows_layer),
                "knows: rel. depth": round(float(r.knows_rel), 3),
                "uses: state (mean over facts)": None if not has else round(uses_layer, 2),
                "uses: rel. depth": None if not has else round(uses_rel, 3),
                "facts patched": None if not has else int(u.loc[USES_METRIC, "n"]),
                "gap (layers)": None if not has else round(uses_layer - r.knows_layer, 2),
                "gap (rel. depth)": None if not has else round(uses_rel - r.knows_rel, 3),
            }
        )
    return pd.DataFrame(rows)


def knows_uses_frame(dataset: str) -> pd.DataFrame:
    """Probe accuracy, control and the patching effect on one relative-depth axis, long."""
    probes = probe_curves(dataset, ["probe_acc", "control_acc", "template_acc"])
    uses = uses_curve(dataset)
    cols = ["model", "curve", "layer", "rel_depth", "mean", "ci_lo", "ci_hi", "n"]
    frames = [probes[cols]] if len(probes) else []
    if len(uses):
        uses = uses.assign(curve=USES)
        frames.append(uses[cols])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def quality_curves(metric: str, dataset: str) -> pd.DataFrame:
    """Mean and 95 % interval (over prompts, or a single value per state) of one metric."""
    _, variant, _, _ = QUALITY_METRICS[metric]
    return data.query(
        """SELECT model, variant, grp, metric, unit, layer, n_layers, rel_depth, mean, ci_lo, ci_hi,
                  n
           FROM metrics_agg WHERE method = ? AND dataset = ? AND metric = ? AND variant = ?
           ORDER BY model, layer""",
        [QUALITY_METHOD, dataset, metric, variant],
    )


def quality_overview(dataset: str) -> pd.DataFrame:
    """Every quality metric, min-max scaled per (model, metric), for one small-multiples chart."""
    frames = []
    for metric in QUALITY_METRICS:
        df = quality_curves(metric, dataset)
        if df.empty:
            continue
        g = df.groupby("model")["mean"]
        lo, hi = g.transform("min"), g.transform("max")
        df["scaled"] = ((df["mean"] - lo) / (hi - lo).where(hi > lo)).fillna(0.5)
        df["label"] = QUALITY_METRICS[metric][0]
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
