"""What the data show, in words: every sentence a page states about its chart, computed.

Pure functions (DataFrame in, markdown out; no Streamlit, no queries): a page passes the frame it
charts and prints the sentence, so the words change when the results change, and a model that
departs from the paper is named from the numbers. ``tests/test_claims.py`` runs them on the
embedded tables. Frames are the views' curve frames: ``model, layer, rel_depth, mean`` (+ ``n``).

Example::

    st.markdown(claims.lens_finding("kl_to_final", curve_frame("kl_to_final", models)))
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd


def per_model(df: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each model's rows sorted by layer, models in name order."""
    if df.empty:
        return
    for model, g in df.groupby("model", sort=True):
        yield str(model), g.sort_values("layer").reset_index(drop=True)


def where(g: pd.DataFrame, i: int, what: str = "state") -> str:
    """``state 5 (relative depth 0.28)`` for row ``i`` of one model's curve."""
    return f"{what} {int(g['layer'].iloc[i])} (depth {float(g['rel_depth'].iloc[i]):.2f})"


def sample_size(df: pd.DataFrame, unit: str) -> str:
    """``n per point (documents): 16 (gemma3-270m), 32 (smollm2-135m).`` from column ``n``."""
    if df.empty or "n" not in df.columns:
        return ""
    parts = []
    for model, g in per_model(df):
        lo, hi = int(g["n"].min()), int(g["n"].max())
        parts.append(f"{lo if lo == hi else f'{lo}–{hi}'} ({model})")
    return f"n per point ({unit}): " + ", ".join(parts) + "."


def largest_rise(v: np.ndarray) -> tuple[int, int, float]:
    """Indices ``(i, j)``, ``i < j``, of the largest increase ``v[j] - v[i]``, and that increase."""
    best, bi, bj, lo = 0.0, 0, 0, 0
    for j in range(1, len(v)):
        if v[j - 1] < v[lo]:
            lo = j - 1
        if v[j] - v[lo] > best:
            best, bi, bj = float(v[j] - v[lo]), lo, j
    return bi, bj, best


def first_index(mask: np.ndarray) -> int | None:
    """Index of the first True, or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def thirds(g: pd.DataFrame) -> tuple[float, float, float]:
    """Mean of a curve over the first, middle and last third of relative depth."""
    d = g["rel_depth"].to_numpy()
    v = g["mean"].to_numpy()
    cuts = [d < 1 / 3, (d >= 1 / 3) & (d < 2 / 3), d >= 2 / 3]
    return tuple(float(v[c].mean()) if c.any() else float("nan") for c in cuts)


# ------------------------------------------------------------------------------ logit lens


def lens_finding(metric: str, df: pd.DataFrame) -> str:
    """What one logit-lens curve shows, per model (page "Logit lens")."""
    out = []
    for model, g in per_model(df):
        v = g["mean"].to_numpy()
        if metric == "kl_to_final":
            i, j, rise = largest_rise(v[:-1])
            below = first_index(v < 1.0)
            s = f"starts at {v[0]:.1f} nats"
            if rise > 0.1 * max(v[i], 1e-9):
                s += (
                    f", *rises* from {v[i]:.1f} to {v[j]:.1f} nats between {where(g, i)} and "
                    f"{where(g, j)}, then falls"
                )
            else:
                s += ", falls with depth"
            if below is not None:
                s += f"; below 1 nat from {where(g, below)}"
        elif metric == "entropy":
            m = int(np.argmin(v[1:])) + 1  # state 0 reads the token itself
            s = f"lowest at {where(g, m)}, {v[m]:.2f} nats"
            if v[-1] > v[m] * 1.1:
                s += (
                    f"; it then *rises* to {v[-1]:.2f} nats at the output: through this lens "
                    "the last layers widen the distribution, they do not sharpen it"
                )
            else:
                s += "; the last layers keep it low"
        elif metric == "top1_matches_final":
            half = first_index(v[:-1] >= 0.5)
            s = (
                f"agrees with the final token at half the positions from {where(g, half)}"
                if half is not None
                else f"agrees at half the positions only at the last state ({v[-2]:.0%} one "
                "state before)"
            )
        elif metric == "top1_is_input":
            low = first_index(v < 0.1)
            s = f"repeats the input at {v[0]:.0%} of positions at state 0"
            s += f", under 10 % from {where(g, low)}" if low is not None else ""
        elif metric == "ce_next_token":
            m = int(np.argmin(v))
            s = f"lowest next-token loss at {where(g, m)}: {v[m]:.2f} nats"
        else:
            s = f"from {v[0]:.2f} to {v[-1]:.2f}"
        out.append(f"**{model}**: {s}.")
    return " ".join(out)


# ------------------------------------------------------------------------------ early layers


def locality_finding(df: pd.DataFrame) -> str:
    """Locality by thirds of depth; departs from Lad et al. when the first third is not highest."""
    out = []
    for model, g in per_model(df):
        t = thirds(g)
        top = ["first", "middle", "last"][int(np.nanargmax(t))]
        s = (
            f"**{model}**: mean locality {t[0]:.2f} in the first third of the blocks, "
            f"{t[1]:.2f} in the middle, {t[2]:.2f} in the last"
        )
        s += (
            " -- highest early, as the paper reports."
            if top == "first"
            else (f" -- highest in the **{top}** third: this model departs from the paper.")
        )
        if model.startswith("gemma3"):
            glob = g["layer"] % 6 == 5  # Gemma-3: every sixth layer attends globally
            s += (
                f" Its global-attention blocks ({', '.join(map(str, g.loc[glob, 'layer']))}) "
                f"average {g.loc[glob, 'mean'].mean():.2f}, its sliding-window blocks "
                f"{g.loc[~glob, 'mean'].mean():.2f}."
            )
        out.append(s)
    return " ".join(out)


def ratio_finding(df: pd.DataFrame) -> str:
    """Attention/MLP ratio: early vs late third (Lad et al.: attention-heavy early)."""
    out = []
    for model, g in per_model(df):
        t = thirds(g)
        agrees = t[0] > t[2]
        above = g.loc[g["mean"] > 1, "layer"].tolist()
        s = f"**{model}**: mean ratio {t[0]:.2f} in the first third, {t[2]:.2f} in the last"
        s += (
            " (attention-heavier early, as the paper says)"
            if agrees
            else (" (**not** attention-heavier early: departs from the paper)")
        )
        s += f"; above 1 at blocks {above}." if above else "; never above 1."
        out.append(s)
    return " ".join(out)


# ------------------------------------------------------------------------------ delete / swap


def deletion_finding(kl: pd.DataFrame, swap: pd.DataFrame | None = None) -> str:
    """Worst deletion, middle cost and the last block per model; swap against delete mid-depth.

    Args:
        kl: KL curve of deleting whole blocks.
        swap: KL curve of swapping block l and l+1 (optional).
    """
    out = []
    for model, g in per_model(kl):
        v = g["mean"].to_numpy()
        worst = int(np.argmax(v))
        mid = float(np.median(v[1:-1])) if len(v) > 2 else float("nan")
        s = (
            f"**{model}**: the worst deletion is {where(g, worst, 'block')}, KL {v[worst]:.2f} "
            f"nats (block 0: {v[0]:.2f}); a middle block costs {mid:.2f} (median), the last "
            f"block {v[-1]:.2f}."
        )
        early = worst < max(1, round(0.15 * len(v)))
        last_critical = v[-1] > 2 * mid
        if not early:
            s += " The worst block is not among the first few: departs from the paper."
        s += (
            " The last block matters more than the middle ones, as the paper found."
            if last_critical
            else " The last block is **no more critical** than the middle: departs from the paper."
        )
        if swap is not None and not swap.empty:
            sw = swap[swap["model"] == model].set_index("layer")["mean"]
            dl = g.set_index("layer")["mean"]
            mids = [b for b in sw.index if 0 < b < len(v) - 1 and b in dl.index]
            gentler = [b for b in mids if sw[b] < dl[b]]
            harsher = [b for b in mids if sw[b] >= dl[b]]
            s += f" Mid-depth, the swap is gentler than the deletion at {len(gentler)} of "
            s += f"{len(mids)} blocks"
            s += f" (not at {harsher})." if 0 < len(harsher) <= 6 else "."
        out.append(s)
    return " ".join(out)


def edge_finding(metric: str, df: pd.DataFrame, kl: pd.DataFrame | None = None) -> str:
    """Top-1 agreement, entropy or loss change of deleting blocks, per model."""
    out = []
    for model, g in per_model(df):
        v = g["mean"].to_numpy()
        if metric == "top1_same":
            w = int(np.argmin(v))
            s = (
                f"lowest agreement at {where(g, w, 'block')}: {v[w]:.0%}; median middle "
                f"block {np.median(v[1:-1]):.0%}"
            )
        elif metric == "delta_entropy":
            s = f"deleting the last block changes the entropy by {v[-1]:+.2f} bits"
            s += " (the model becomes *more* confident)" if v[-1] < 0 else " (less confident)"
            up = int(np.argmax(v))
            s += f"; the largest rise is at {where(g, up, 'block')}: {v[up]:+.2f} bits"
        else:  # delta_loss: does it follow KL?
            w = int(np.argmax(v))
            s = f"largest loss increase at {where(g, w, 'block')}: {v[w]:+.2f} nats"
            if kl is not None:
                k = kl[kl["model"] == model].set_index("layer")["mean"]
                both = g.set_index("layer")["mean"].to_frame("loss").join(k.rename("kl"))
                if len(both.dropna()) > 2:
                    s += (
                        f"; across blocks it correlates with KL at r = {both.corr().iloc[0, 1]:.2f}"
                    )
        out.append(f"**{model}**: {s}.")
    return " ".join(out)


# ------------------------------------------------------------------------------ sharpening


def neuron_finding(pred: pd.DataFrame, supp: pd.DataFrame) -> str:
    """Where prediction neurons appear; who dominates the last block (Lad et al.: suppression)."""
    out = []
    s_by = dict(per_model(supp))
    for model, g in per_model(pred):
        sg = s_by.get(model)
        if sg is None:
            continue
        p, q = g["mean"].to_numpy(), sg["mean"].to_numpy()
        first = first_index(p > 0)
        s = (
            f"**{model}**: prediction neurons appear from {where(g, first, 'block')}"
            if (first is not None)
            else f"**{model}**: no prediction neurons"
        )
        s += f"; the last block has {p[-1]:.1f} % prediction and {q[-1]:.1f} % suppression neurons"
        s += (
            " -- suppression dominates, as the paper reports."
            if q[-1] > p[-1]
            else " -- prediction neurons outnumber suppression ones: **departs from the paper**."
        )
        out.append(s)
    return " ".join(out)


def peak_finding(
    df: pd.DataFrame,
    what: str,
    unit: str = "",
    fmt: str = ".1f",
    kind: str = "block",
    lowest: bool = False,
) -> str:
    """Where each model's curve peaks (or dips, ``lowest``), and its value there."""
    out = []
    for model, g in per_model(df):
        v = g["mean"].to_numpy()
        m = int(np.argmin(v) if lowest else np.argmax(v))
        last = " (the last one)" if m == len(g) - 1 else ""
        out.append(
            f"**{model}**: {what} {'is lowest' if lowest else 'peaks'} at {where(g, m, kind)}"
            f"{last}, {format(float(v[m]), fmt)}{unit}."
        )
    return " ".join(out)


def entropy_instruments_finding(df: pd.DataFrame) -> str:
    """Recomputed-norm against cached-scale lens entropy (bits), per model."""
    out = []
    for model, g in per_model(df):
        rec = g[g["variant"] == "recompute_ln"].reset_index(drop=True)
        cac = g[g["variant"] == "cached_final_scale"].reset_index(drop=True)
        if rec.empty or cac.empty:
            continue
        r, c = rec["mean"].to_numpy(), cac["mean"].to_numpy()
        m = int(np.argmin(r[1:])) + 1
        s = (
            f"**{model}**: with the cached scale the entropy falls from {c[1]:.1f} to "
            f"{c[-1]:.1f} bits; recomputed, it is {r[1]:.1f} bits at state 1, lowest at "
            f"{where(rec, m)} ({r[m]:.1f}) and *rises* to {r[-1]:.1f} at the output"
            if r[-1] > r[m] * 1.1
            else f"**{model}**: recomputed, the entropy is lowest at {where(rec, m)} "
            f"({r[m]:.1f} bits)"
        )
        out.append(s + f"; the two agree at the last state ({abs(r[-1] - c[-1]):.2g} bits apart).")
    return " ".join(out)


# ------------------------------------------------------------------------------ stage map


def boundary_finding(bounds: pd.DataFrame, n_layers: dict[str, int]) -> str:
    """The estimated boundaries of each model, and how far apart the models place them."""
    if bounds.empty:
        return ""
    out = []
    for model, g in bounds.groupby("model", sort=True):
        depths = ", ".join(f"{d:.2f}" for d in g.sort_values("boundary")["rel_depth"])
        out.append(f"**{model}** ({n_layers.get(model, '?')} blocks): {depths}")
    wide = bounds.pivot_table(index="model", columns="boundary", values="rel_depth")
    spread = (wide.max() - wide.min()).max() if len(wide) > 1 else float("nan")
    s = "Estimated boundaries (relative depth): " + "; ".join(out) + "."
    if len(wide) > 1:
        s += f" The models' boundaries differ by up to {spread:.2f} in relative depth."
    return s
