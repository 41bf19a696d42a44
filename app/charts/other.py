"""Scatter and bar charts: neuron statistics, bucket shares, per-layer disagreement."""

from __future__ import annotations

import altair as alt
import pandas as pd

from app.charts.base import OKABE_ITO, VERMILLION, finish, legend, wrap


def neuron_scatter(
    df: pd.DataFrame, threshold: float = 10.0, title: str = "Every neuron of one layer"
) -> alt.LayerChart:
    """Skew against (non-excess) kurtosis, log scale, with the threshold line."""
    pts = (
        alt.Chart(df)
        .mark_circle(size=14, opacity=0.6)
        .encode(
            x=alt.X("vocab_skew:Q", title="skew of cosines over the vocabulary"),
            y=alt.Y(
                "vocab_kurt:Q",
                title=wrap("kurtosis (non-excess; Gaussian = 3), log scale"),
                scale=alt.Scale(type="log"),
            ),
            color=alt.Color(
                "class:N",
                scale=alt.Scale(
                    domain=["prediction", "suppression", "other"],
                    range=["#0072B2", "#D55E00", "#BBBBBB"],
                ),
                legend=legend("neuron class"),
            ),
            tooltip=[
                "neuron:Q",
                alt.Tooltip("vocab_skew:Q", format=".2f"),
                alt.Tooltip("vocab_kurt:Q", format=".1f"),
                "class:N",
            ],
        )
    )
    rule = alt.Chart(pd.DataFrame({"y": [threshold]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    return finish(alt.layer(pts, rule), title, f"Dashed line: kurtosis {threshold:g}.", 400)


def stacked_shares(
    df: pd.DataFrame,
    order: list[str],
    title: str = "How frequent is the lens's top-1 token, layer by layer?",
) -> alt.FacetChart:
    """Stacked bars: bucket shares by relative depth; a row per model, a column per lens."""
    n_cols = max(df["lens"].nunique(), 1) if len(df) else 1
    chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X(
                "rel_depth:Q",
                title="relative depth (0 = embeddings, 1 = last)",
                bin=alt.Bin(step=0.05),
                scale=alt.Scale(domain=[0, 1.05]),
            ),
            y=alt.Y(
                "mean:Q", title=wrap("share of lens top-1 tokens (fraction)", 24), stack="normalize"
            ),
            color=alt.Color(
                "bucket:N",
                sort=order,
                scale=alt.Scale(domain=order, range=OKABE_ITO[: len(order)]),
                legend=legend("corpus frequency of the top-1 token"),
            ),
            order=alt.Order("order:Q"),
            tooltip=[
                "model",
                "lens",
                "layer",
                "bucket",
                alt.Tooltip("mean:Q", format=".2f", title="share"),
                "n",
            ],
        )
        .properties(height=200, width=max(560 // n_cols, 240))
        .facet(
            row=alt.Row("model:N", title=None, header=alt.Header(labelLimit=0)),
            column=alt.Column("lens:N", title=None, header=alt.Header(labelLimit=0)),
        )
    )
    return finish(chart, title)


def layer_bars(
    df: pd.DataFrame, value: str, value_title: str, title: str, colour: str = VERMILLION
) -> alt.Chart:
    """One horizontal bar per residual state (top = last), e.g. the share of disagreeing cells."""
    n = max(df["layer"].nunique(), 1) if len(df) else 1
    chart = (
        alt.Chart(df)
        .mark_bar(color=colour)
        .encode(
            y=alt.Y("layer:O", sort="descending", title=wrap("residual state (0 = embeddings)")),
            x=alt.X(f"{value}:Q", title=value_title, scale=alt.Scale(domain=[0, 1])),
            tooltip=["layer:O", alt.Tooltip(f"{value}:Q", format=".2f")],
        )
    )
    return finish(chart, title, None, max(14 * n + 120, 300))


__all__ = ["layer_bars", "neuron_scatter", "stacked_shares"]


def guess_rule(chart, guess: float, axis: str = "x"):
    """The chart with a student's guess drawn as a dashed vermillion rule (x: depth, y: value).

    A finished chart keeps its configuration; a chart that cannot be layered (facets, concats)
    comes back unchanged.
    """
    enc = alt.X("g:Q") if axis == "x" else alt.Y("g:Q")
    rule = (
        alt.Chart(pd.DataFrame({"g": [guess], "label": ["your guess"]}))
        .mark_rule(strokeDash=[6, 3], size=2, color=VERMILLION)
        .encode(**{axis: enc}, tooltip=["label:N", alt.Tooltip("g:Q", format=".2f")])
    )
    try:
        inner = chart.copy()
        lifted = {}  # a configured chart cannot sit inside a layer; title and size go on top
        for name in ("config", "title", "height", "width"):
            lifted[name] = getattr(inner, name, alt.Undefined)
            setattr(inner, name, alt.Undefined)
        layered = alt.layer(inner, rule).properties(
            **{k: v for k, v in lifted.items() if k != "config" and v is not alt.Undefined}
        )
        if lifted["config"] is not alt.Undefined:
            layered.config = lifted["config"]
        return layered
    except Exception:  # noqa: BLE001 - altair refuses facets/concats in a layer in several ways
        return chart


def guess_histogram(hist: pd.DataFrame, truth: pd.DataFrame, unit: str, title: str):
    """The class's guesses as a histogram (``start, end, count``), each model's answer a rule."""
    bars = (
        alt.Chart(hist)
        .mark_bar(color=OKABE_ITO[1])
        .encode(
            x=alt.X("start:Q", bin="binned", title=f"guess ({unit})"),
            x2="end:Q",
            y=alt.Y("count:Q", title="students", axis=alt.Axis(tickMinStep=1)),
            tooltip=["start:Q", "end:Q", "count:Q"],
        )
    )
    rules = (
        alt.Chart(truth)
        .mark_rule(size=3, strokeDash=[4, 2])
        .encode(
            x="value:Q",
            color=alt.Color(
                "model:N", scale=alt.Scale(range=OKABE_ITO), legend=legend("answer in the data")
            ),
        )
    )
    return finish(alt.layer(bars, rules), wrap(title, 70), None, 300)
