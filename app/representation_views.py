"""Data shaping for the representation pages (intrinsic dimension, RSA): queries and live frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from app import data, live, notebooks

ID_METHOD = "intrinsic_dimension"
RSA_METHOD = "rsa"
DEPTH_A = "relative depth, model A (0 = embeddings, 1 = last)"
DEPTH_0 = "relative depth (0 = embeddings)"


ID_NOTE = (
    "**What to look for.** Gandikota et al. (Evolution of LLM Stages) report that models of "
    "every size start using many dimensions around 40 % of their depth; Valeriani et al. find "
    "the ID rises, then falls to a minimum in intermediate layers where representations are "
    "most semantic. Compare the *shape* across models, not the absolute level: with tens to "
    "thousands of texts in a space of 576-640 dimensions, every estimator is biased low, and the"
    " PCA dimensions cannot exceed the number of texts. With last-token vectors, the embedding "
    "layer (depth 0) often has very few distinct points: many texts end in the same token."
)
INTRO = (
    "Each sentence becomes one vector per layer (the mean of its token states, first token "
    "excluded). A layer's **RDM** holds 1 − cosine similarity for every pair of sentences. "
    "Two layers -- of one model or of two models given the same sentences -- are compared by "
    "the **Spearman rank correlation** of their RDMs' upper triangles: 1 means the same "
    "ordering of pairs, whatever the width of each space (the method of Gandikota et al., "
    "Evolution of LLM Stages)."
)
WITHIN_NOTE = (
    "**What to look for.** Gandikota et al. (Evolution of LLM Stages) find blocks: early "
    "layers resemble each other, the middle is more varied, and the last layers converge "
    "again. A bright square along the diagonal is a stretch of layers that keep the same "
    "geometry -- a candidate *stage*."
)
ACROSS_NOTE = (
    "**What to look for.** Gandikota et al. (Evolution of LLM Stages) report that models of "
    "different sizes align at similar *relative* depths: look for a bright diagonal. Computed "
    "now from the two models' stored RDMs over the {n} stimuli both saw, then interpolated onto "
    "a grid of relative depths (step 0.05)."
)
#: Stored RSA variants ``pooling|distance|normalisation`` in words.
VARIANT_LABELS = {
    "mean|cosine|none": "mean of the token states, cosine distance",
    "mean|cosine|center": "mean of the token states, centred, cosine distance",
    "mean|correlation|none": "mean of the token states, correlation distance",
    "last|cosine|none": "last token's state, cosine distance",
}
PROVENANCE = (
    "WikiText-2 paragraphs (cut to `max_tokens`, see the config) or the team's facts; stimuli "
    "sorted by id so every model's RDMs line up. Defaults (mean pooling without BOS, cosine, "
    "Spearman) are ours: Gandikota et al. do not specify them (METHODS.md E3)."
)


def live_rdm_note(res: dict, layer: int) -> str:
    """What the live RDM shows, and what to look for in it."""
    n_layers = res["n_layers"]
    return (
        f"{res['model']}; {len(res['sentences'])} sentences; normalisation: {res['norm']}. "
        f"The RDM's colour scale is fitted to this layer: mean-pooled states are often all alike "
        f"(small distances); *centre features* removes that common direction. **What to look "
        f"for.** State {layer} of {n_layers} (relative depth {layer / n_layers:.2f}). Dark cells "
        "are sentence pairs this layer represents alike. Do the two capital-city sentences pair "
        "up at every depth, or only in the middle? The layer x layer map above compares these "
        "matrices by rank correlation."
    )


#: estimator: (label, what it measures)
ESTIMATORS = {
    "twonn": (
        "TwoNN (headline)",
        "Facco et al. 2017: for each point, the ratio of its 2nd to its 1st nearest-neighbour "
        "distance; on a d-dimensional manifold these ratios follow a Pareto law with exponent d. "
        "Local: it needs only the two nearest neighbours, so curved manifolds are fine. The 10 % "
        "largest ratios are discarded (scikit-dimension's default).",
    ),
    "twonn_ml": (
        "TwoNN, maximum likelihood",
        "The same ratios, with d estimated by maximum likelihood instead of a line fit (the "
        "discarded 10 % are treated as censored). Should agree with TwoNN; a gap flags noise.",
    ),
    "mle": (
        "Levina-Bickel MLE (K = 5)",
        "Levina and Bickel 2005: the distances to the 5 nearest neighbours of each point, "
        "averaged over points. Also local; more sensitive to the density of points.",
    ),
    "pca90": (
        "PCA: components for 90 % variance",
        "Global and linear: how many principal directions explain 90 % of the variance. A curved "
        "low-dimensional manifold can need many linear directions, so this is an upper bound "
        "-- and it cannot exceed the number of points minus one.",
    ),
    "participation_ratio": (
        "PCA participation ratio",
        "(Σλ)² / Σλ² of the covariance eigenvalues: the number of directions that share the "
        "variance evenly. One dominant (e.g. 'massive activation') direction pulls it towards 1.",
    ),
}

POOLINGS = {
    "mean": "mean over tokens (first token excluded)",
    "last": "last token",
}

SCALES = {"1/1": "all points", "1/2": "half the points", "1/4": "a quarter of the points"}


def datasets(method: str) -> list[str]:
    """Datasets with results for a method (``metrics_agg`` or ``similarity``)."""
    table = "similarity" if method == RSA_METHOD else "metrics_agg"
    if not data.table_exists(table):
        return []
    df = data.query(
        f'SELECT DISTINCT dataset FROM "{table}" WHERE method = ? ORDER BY dataset', [method]
    )
    return sorted(df["dataset"].tolist(), key=lambda d: (d != "wikitext", d))


def id_curves(estimator: str, pooling: str, dataset: str, scale: str = "1/1") -> pd.DataFrame:
    """ID by relative depth per model, its 95 % interval, and the distinct points behind it.

    Estimates on all points (``1/1``) take their interval from the stored half-sampling rows
    (``id_ci_lo``/``id_ci_hi``, METHODS.md E1); ``n`` is then the number of points and
    ``n_resamples`` the half-samples. Subset rows (``1/2``, ``1/4``) keep the interval over
    subsets (``n`` = subsets). Results stored before the intervals existed have a zero-width band.
    """
    grp = f"{estimator}|{pooling}"
    df = data.query(
        """WITH r AS (SELECT model, variant, grp, layer, metric, mean FROM metrics_agg
                      WHERE method = ? AND dataset = ? AND grp = ?)
           SELECT a.model, a.variant, a.layer, a.rel_depth, a.mean,
                  coalesce(lo.mean, a.ci_lo) AS ci_lo, coalesce(hi.mean, a.ci_hi) AS ci_hi,
                  CASE WHEN lo.mean IS NULL THEN a.n ELSE CAST(round(p.mean) AS BIGINT) END AS n,
                  p.mean AS n_points, b.mean AS n_resamples
           FROM metrics_agg a
           LEFT JOIN r p ON p.model = a.model AND p.variant = a.variant AND p.layer = a.layer
                        AND p.metric = 'n_points'
           LEFT JOIN r lo ON lo.model = a.model AND lo.variant = a.variant
                         AND lo.layer = a.layer AND lo.metric = 'id_ci_lo'
           LEFT JOIN r hi ON hi.model = a.model AND hi.variant = a.variant
                         AND hi.layer = a.layer AND hi.metric = 'id_ci_hi'
           LEFT JOIN r b ON b.model = a.model AND b.variant = a.variant AND b.layer = a.layer
                        AND b.metric = 'n_resamples'
           WHERE a.method = ? AND a.metric = 'intrinsic_dim' AND a.grp = ? AND a.dataset = ?
             AND (? = '' OR a.variant = ?)
           ORDER BY a.model, a.variant, a.layer""",
        [ID_METHOD, dataset, grp, ID_METHOD, grp, dataset, scale, scale],
    )
    return df


def id_interval_note(df: pd.DataFrame) -> str:
    """What the band is, with the points and half-samples behind it (from ``id_curves`` rows)."""
    if df.empty or df["n_resamples"].isna().all():
        return (
            "These results were stored without intervals (computed before half-sampling was "
            "added): the curve has no band."
        )
    b = int(df["n_resamples"].max())
    lo, hi = int(df["n_points"].min()), int(df["n_points"].max())
    pts = f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"
    return (
        f"**Band: 95 % interval** from {b:,} random halves of the points (drawn without "
        "replacement -- copies of a point would sit at distance 0 and break TwoNN; the "
        "delete-d jackknife of Shao & Wu 1989). "
        f"**n = {pts} distinct points per estimate.** PCA-90 has no band (one eigendecomposition "
        "per half-sample would cost too much)."
    )


def id_points_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per model: the fewest and most distinct points behind the estimates (duplicates removed)."""
    if df.empty:
        return pd.DataFrame(columns=["model", "fewest points", "most points", "states"])
    g = df.groupby("model")
    return pd.DataFrame(
        {
            "fewest points": g["n_points"].min().round().astype("Int64"),
            "most points": g["n_points"].max().round().astype("Int64"),
            "states": g["layer"].nunique(),
        }
    ).reset_index()


def similarity_variants(dataset: str) -> list[str]:
    """RSA variants (``pooling|distance|normalisation``) stored for a dataset."""
    df = data.query(
        "SELECT DISTINCT variant FROM similarity WHERE method = ? AND dataset = ? ORDER BY variant",
        [RSA_METHOD, dataset],
    )
    return df["variant"].tolist()


def rsa_models(dataset: str) -> list[str]:
    """Models with RSA results on a dataset."""
    df = data.query(
        "SELECT DISTINCT model FROM similarity WHERE method = ? AND dataset = ? ORDER BY model",
        [RSA_METHOD, dataset],
    )
    return df["model"].tolist()


def _depth_labels(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["depth_a"] = df["rel_depth_a"].map(lambda v: f"{v:.2f}")
    df["depth_b"] = df["rel_depth_b"].map(lambda v: f"{v:.2f}")
    return df


def within_similarity(model: str, dataset: str, variant: str) -> pd.DataFrame:
    """Return the stored layer x layer similarity of one model, with relative-depth labels."""
    df = data.query(
        """SELECT layer_a, layer_b, rel_depth_a, rel_depth_b, value, n_stimuli
           FROM similarity WHERE method = ? AND model = ? AND model_b = ? AND dataset = ?
             AND variant = ? ORDER BY layer_a, layer_b""",
        [RSA_METHOD, model, model, dataset, variant],
    )
    return _depth_labels(df)


def _rdm_rows(model: str, dataset: str, variant: str) -> pd.DataFrame:
    return data.query(
        """SELECT layer, rel_depth, stimulus_a, stimulus_b, value FROM rdm
           WHERE method = ? AND model = ? AND dataset = ? AND variant = ?""",
        [RSA_METHOD, model, dataset, variant],
    )


def cross_similarity(
    model_a: str, model_b: str, dataset: str, variant: str, step: float = 0.05
) -> pd.DataFrame:
    """Similarity of every state of model A with every state of model B, on a depth grid.

    Computed now from the two models' stored RDMs (stimuli both saw, sorted by id) with the same
    function precompute uses, then resampled bilinearly onto ``0, step, ..., 1``.
    """
    from precompute.stats.rsa import cross_model_similarity, resample_to_grid

    a, b = _rdm_rows(model_a, dataset, variant), _rdm_rows(model_b, dataset, variant)
    if a.empty or b.empty:
        raise ValueError("One of the models has no stored RDMs for this dataset and variant.")
    cross = cross_model_similarity(a, b)
    sim = cross.pivot(index="layer_a", columns="layer_b", values="value").to_numpy()
    da = cross.drop_duplicates("layer_a").sort_values("layer_a")["rel_depth_a"].to_numpy()
    db = cross.drop_duplicates("layer_b").sort_values("layer_b")["rel_depth_b"].to_numpy()
    grid = np.round(np.arange(0.0, 1.0 + step / 2, step), 4)
    res = resample_to_grid(sim, da, db, grid)  # (G, G)
    ga, gb = np.meshgrid(grid, grid, indexing="ij")
    out = pd.DataFrame(
        {
            "rel_depth_a": ga.ravel(),
            "rel_depth_b": gb.ravel(),
            "value": res.ravel(),
            "n_stimuli": int(cross["n_stimuli"].iloc[0]),
        }
    )
    return _depth_labels(out)


def similarity_downloads(
    df: pd.DataFrame,
    name: str,
    key: str,
    x_title: str,
    y_title: str,
    matched: pd.DataFrame | None = None,
) -> None:
    """A similarity heatmap's rows (CSV) and a notebook drawing it on the fixed 0-1 scale.

    With ``matched`` (the diagonal, ``matched_depth``), also the notebook of its depth curve.
    """
    spec = notebooks.ChartSpec(
        "Spearman ρ of RDMs",
        "Spearman ρ of RDMs",
        kind="heatmap",
        x="depth_a",
        y="depth_b",
        color="value",
        x_title=x_title,
        axis_title=y_title,
        y_sort="descending",
        domain=(0.0, 1.0),
    )
    table = "similarity" if "layer_a" in df else "rdm"  # across models: computed from the RDMs
    notebooks.downloads(df, name, RSA_METHOD, spec, table, key)
    if matched is not None:
        y_title = "Spearman ρ of RDMs at equal depth (correlation)"
        notebooks.button(matched, f"{name}_matched", RSA_METHOD, y_title, table=table)


def matched_depth(cross: pd.DataFrame, label: str) -> pd.DataFrame:
    """Return the diagonal of a depth-grid matrix (A and B at equal relative depth) as curves."""
    diag = cross[np.isclose(cross["rel_depth_a"], cross["rel_depth_b"])].copy()
    diag = diag.rename(columns={"rel_depth_a": "rel_depth", "value": "mean"})
    diag["ci_lo"] = diag["mean"]
    diag["ci_hi"] = diag["mean"]
    diag["n"] = diag["n_stimuli"]
    diag["model"] = label
    return diag[["model", "rel_depth", "mean", "ci_lo", "ci_hi", "n"]]


MIN_LIVE_SENTENCES = 6
LIVE_NORMS = {
    "none": "none",
    "center": "centre features across sentences",
    "zscore": "z-score features across sentences",
}
DEFAULT_SENTENCES = "\n".join(
    [
        "The cat sat on the mat.",
        "A dog slept on the rug.",
        "Paris is the capital of France.",
        "Rome is the capital of Italy.",
        "Water boils at one hundred degrees.",
        "Ice melts when it gets warm.",
        "She plays the violin every night.",
    ]
)


def parse_sentences(text: str) -> list[str]:
    """One sentence per non-empty line.

    Raises:
        live.PromptError: Fewer than six sentences, or a repeated sentence.
    """
    sents = [s.strip() for s in (text or "").splitlines() if s.strip()]
    if len(sents) < MIN_LIVE_SENTENCES:
        raise live.PromptError(
            f"Enter at least {MIN_LIVE_SENTENCES} sentences, one per line; you entered "
            f"{len(sents)}. With fewer, an RDM has too few pairs for a rank correlation to mean "
            "much."
        )
    if len(set(sents)) != len(sents):
        raise live.PromptError("Two lines are identical: every sentence must be different.")
    return live.check_count(sents, "sentences")


def live_rsa_frames(model_name: str, text: str, max_tokens: int, norm: str = "none") -> dict:
    """RSA of the student's sentences on the live model, with the precompute functions.

    Returns:
        ``{"sentences", "rdm" (long, full matrix per state), "similarity" (long), "n_layers"}``.
    """
    from precompute.methods.rsa import RSAConfig, live_rsa

    sents = parse_sentences(text)
    lm = live.get_model(model_name)
    try:
        res = live_rsa(lm, sents, RSAConfig(max_tokens=max_tokens, normalise=norm))
    except ValueError as err:  # e.g. a one-token line, or two lines with equal vectors
        raise live.PromptError(str(err)) from err
    n_states, n = res.rdms.shape[:2]
    labels = [f"{i + 1:02d}: {s[:30]}" for i, s in enumerate(sents)]
    lab = [labels[int(sid[1:])] for sid in res.stimulus_ids]  # ids are s00, s01 ... in order
    li, ai, bi = np.meshgrid(np.arange(n_states), np.arange(n), np.arange(n), indexing="ij")
    rdm_long = pd.DataFrame(
        {
            "layer": li.ravel(),
            "rel_depth": li.ravel() / (n_states - 1),
            "sentence_a": np.asarray(lab, dtype=object)[ai.ravel()],
            "sentence_b": np.asarray(lab, dtype=object)[bi.ravel()],
            "dissimilarity": res.rdms.reshape(-1),
        }
    )
    d = res.rel_depth
    la, lb = np.meshgrid(np.arange(n_states), np.arange(n_states), indexing="ij")
    sim = pd.DataFrame(
        {
            "layer_a": la.ravel(),
            "layer_b": lb.ravel(),
            "rel_depth_a": d[la.ravel()],
            "rel_depth_b": d[lb.ravel()],
            "value": res.similarity.reshape(-1),
        }
    )
    sim = _depth_labels(sim)
    for frame in (rdm_long, sim):  # for the CSV downloads
        frame.attrs["inputs"] = {"model": model_name, "prompt": text}
    return {
        "sentences": sents,
        "labels": labels,
        "rdm": rdm_long,
        "similarity": sim,
        "n_layers": n_states - 1,
        "model": model_name,
        "norm": norm,
    }
