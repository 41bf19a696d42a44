"""What the data show about facts, representations and lenses, in words (see ``claims_views``).

Pure functions: DataFrame in, markdown out. ``tests/test_claims.py`` runs them on the embedded
tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.claims_views import first_index, per_model, thirds, where

# ------------------------------------------------------------------------------ facts


def sites_finding(mlp_subject: pd.DataFrame, attn_last: pd.DataFrame) -> str:
    """Causal tracing: MLP site at the last subject token against attention at the last token.

    ROME finds the MLP site first (early-middle layers), the attention site later.
    """
    out = []
    a_by = dict(per_model(attn_last))
    for model, g in per_model(mlp_subject):
        a = a_by.get(model)
        if a is None:
            continue
        m, k = int(np.argmax(g["mean"].to_numpy())), int(np.argmax(a["mean"].to_numpy()))
        s = (
            f"**{model}** ({int(g['n'].max())} facts): MLP effect at the last subject token peaks "
            f"at {where(g, m, 'block')}, {g['mean'].iloc[m]:.2f}; attention at the last token "
            f"at {where(a, k, 'block')}, {a['mean'].iloc[k]:.2f}"
        )
        s += (
            " -- lookup first, then the move, as ROME found."
            if g["rel_depth"].iloc[m] < a["rel_depth"].iloc[k]
            else " -- **not** in ROME's order: departs from the paper."
        )
        out.append(s)
    return " ".join(out)


def knockout_finding(df: pd.DataFrame, band: tuple[float, float]) -> str:
    """Where cutting subject -> last hurts, against a reported band; the other edge sets.

    "Hurts" = at least half the largest drop. The band is the one the Evolution of LLM Stages
    project reports.
    """
    out = []
    for model, g in df.groupby("model", sort=True):
        parts = []
        sub = g[g["grp"] == "subject"].sort_values("layer")
        if not sub.empty:
            v = sub["mean"].to_numpy()
            hurt = v <= 0.5 * v.min()
            lo, hi = sub["rel_depth"].to_numpy()[hurt][[0, -1]]
            inside = lo <= band[1] and hi >= band[0]
            parts.append(
                f"cutting subject → last hurts (≥ half the largest drop, {v.min():.0f} %) with "
                f"the window centred between depths {lo:.2f} and {hi:.2f}"
                + (
                    f", overlapping the reported {band[0]:.2f}–{band[1]:.2f}"
                    if inside
                    else f" -- **outside** the reported {band[0]:.2f}–{band[1]:.2f}: departs"
                )
            )
        non = g[g["grp"] == "non_subject"].sort_values("layer")
        if not non.empty and not sub.empty:
            i = int(np.argmin(non["mean"].to_numpy()))
            parts.append(
                f"the non-subject cut is worst at depth {non['rel_depth'].iloc[i]:.2f} "
                f"({non['mean'].iloc[i]:.0f} %)"
            )
        last = g[g["grp"] == "last"]
        if not last.empty:
            parts.append(f"last → last changes p by at most {last['mean'].abs().max():.0f} %")
        out.append(f"**{model}**: " + "; ".join(parts) + ".")
    return " ".join(out)


def window_note(window: str, df: pd.DataFrame, reference: str = "Geva et al. used 9 of 48") -> str:
    """How much of each model's depth one window covers (``W9`` -> 9 blocks)."""
    w = int("".join(ch for ch in str(window) if ch.isdigit()) or 0)
    if not w or df.empty:
        return ""
    sizes = df.groupby("model")["n_layers"].max().sort_index()
    parts = [f"{w / n:.0%} of {m}'s {n} blocks" for m, n in sizes.items()]
    return (
        f"A window of W = {w} blocks covers {' and '.join(parts)}: one critical block shows as a "
        f"plateau that wide ({reference})."
    )


# ------------------------------------------------------------------------------ representations


def template_finding(df: pd.DataFrame) -> str:
    """Probe accuracy against the template-only baseline, per model (``probe_curves`` rows)."""
    out = []
    for model, g in df.groupby("model", sort=True):
        p = g[g["metric"] == "probe_acc"].sort_values("layer").reset_index(drop=True)
        t = g[g["metric"] == "template_acc"].sort_values("layer").reset_index(drop=True)
        if p.empty or t.empty:
            continue
        beats = first_index(p["mean"].to_numpy() > t["mean"].to_numpy() + 0.05)
        s = f"**{model}**: the template alone gives {t['mean'].max():.2f}; "
        s += (
            f"the probe beats it by more than 0.05 from {where(p, beats)} "
            f"(best {p['mean'].max():.2f})."
            if beats is not None
            else f"the probe (best {p['mean'].max():.2f}) **never beats it**: its 'knows' layer "
            "reads the relation's template, not the fact."
        )
        out.append(s)
    return " ".join(out)


def within_finding(df: pd.DataFrame) -> str:
    """Layer x layer similarity of one model: neighbours, first vs last, the largest change."""
    if df.empty:
        return ""
    w = df.pivot_table(index="layer_a", columns="layer_b", values="value").sort_index()
    v = w.to_numpy()
    nb = np.array([v[i, i + 1] for i in range(len(v) - 1)])
    k = int(np.argmin(nb))
    return (
        f"Neighbouring states agree at ρ = {nb.mean():.2f} on average; the first and last state "
        f"at ρ = {v[0, -1]:.2f}. The geometry changes most between states {w.index[k]} and "
        f"{w.index[k + 1]} (ρ = {nb[k]:.2f})."
    )


def matched_finding(diag: pd.DataFrame) -> str:
    """Two models at equal relative depth: where they agree most and least."""
    if diag.empty:
        return ""
    d = diag.sort_values("rel_depth").reset_index(drop=True)
    hi, lo = int(d["mean"].idxmax()), int(d["mean"].idxmin())
    return (
        f"At equal relative depth the two models agree at ρ = {d['mean'].mean():.2f} on average: "
        f"most at depth {d['rel_depth'][hi]:.2f} (ρ = {d['mean'][hi]:.2f}), least at depth "
        f"{d['rel_depth'][lo]:.2f} (ρ = {d['mean'][lo]:.2f})."
    )


def early_share_finding(df: pd.DataFrame, what: str) -> str:
    """Mean of a per-lens curve over the first third of depth, per model and lens."""
    out = []
    for model, g in df.groupby("model", sort=True):
        vals = [f"{lens} {thirds(x.sort_values('layer'))[0]:.0%}" for lens, x in g.groupby("lens")]
        out.append(f"**{model}**: {', '.join(vals)}")
    return f"{what}, first third of depth -- " + "; ".join(out) + "."


def worse_states_finding(df: pd.DataFrame) -> str:
    """States where the tuned lens is further from the final output than the logit lens."""
    out = []
    for model, g in df.groupby("model", sort=True):
        w = g.pivot_table(index="layer", columns="variant", values="mean")
        if not {"logit", "tuned"} <= set(w.columns):
            continue
        worse = w.index[w["tuned"] > w["logit"] + 1e-9].tolist()
        out.append(
            f"**{model}**: the tuned lens beats the logit lens at every state."
            if not worse
            else f"**{model}**: the tuned lens is **worse** than the logit lens at states {worse} "
            f"of 0..{int(w.index.max())} -- an undertrained instrument."
        )
    return " ".join(out)


def disagreement_finding(by_layer: pd.DataFrame) -> str:
    """Where two lenses disagree on one prompt: the peak, the band, the last disagreeing state."""
    if by_layer.empty or not by_layer["share_disagree"].gt(0).any():
        return "The two lenses agree at every state and position."
    d = by_layer.sort_values("layer").reset_index(drop=True)
    v = d["share_disagree"].to_numpy()
    k = int(np.argmax(v))
    band = d.loc[v >= v[k] / 2, "layer"]
    last = int(d.loc[v > 0, "layer"].max())
    final = int(d["layer"].max())
    s = (
        f"Disagreement peaks at state {int(d['layer'][k])} (depth {d['rel_depth'][k]:.2f}, "
        f"{v[k]:.0%} of positions) and stays at least half that from state {band.min()} to "
        f"{band.max()}."
    )
    if last >= final - 1:
        s += f" They still disagree at state {last}; they agree only at the output (state "
        s += f"{final}), where both lenses are the model itself."
    else:
        s += f" From state {last + 1} of {final} on they agree at every position."
    return s


def earliest_finding(df: pd.DataFrame, col: str, k: int = 1) -> str:
    """Which group reaches rank <= k first (mean relative depth), per lens; ``col`` names groups."""
    one = df[df["k"] == k] if "k" in df else df.iloc[:0]
    if one.empty:
        return ""
    out = []
    for lens, g in one.groupby("lens", sort=True):
        order = g.groupby(col)["mean"].mean().sort_values()
        out.append(f"{lens}: " + ", ".join(f"{name} {depth:.2f}" for name, depth in order.items()))
    return (
        f"Mean relative depth at which the prediction first reaches rank {k}, earliest first -- "
        + "; ".join(out)
        + "."
    )


def mcq_finding(settled: pd.DataFrame) -> str:
    """Multiple choice: is the model above chance? Only then is the decision timing a finding."""
    acc = settled[settled["what"].str.startswith("model's final answer")]
    if acc.empty:
        return ""
    out = []
    for model, g in acc.groupby("model", sort=True):
        p, n = float(g["mean"].iloc[0]), int(g["n"].iloc[0])
        margin = 1.96 * (0.25 * 0.75 / max(n, 1)) ** 0.5
        if p <= 0.25 + margin:
            out.append(
                f"**{model}** answers {p:.0%} of {n} items correctly, within chance (25 % ± "
                f"{margin:.0%}): its 'decision' is not a decision, so this chart cannot say when "
                "it decides -- that needs a model above chance."
            )
        else:
            out.append(f"**{model}** answers {p:.0%} of {n} items correctly, above chance.")
    return " ".join(out)
