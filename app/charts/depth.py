"""Curves over relative depth: means with 95 % interval bands, stage bands, reference marks."""

from __future__ import annotations

import re

import altair as alt
import numpy as np
import pandas as pd

from app.charts.base import (
    DEPTH_TITLE,
    OKABE_ITO,
    SERIES,
    dash_legend,
    finish,
    legend,
    wrap,
)

#: The four stages of Lad et al. (2024) as rough relative-depth bands -- a hypothesis, drawn light.
STAGES = pd.DataFrame(
    {
        "stage": [
            "1 detokenization",
            "2 feature engineering",
            "3 prediction ensembling",
            "4 residual sharpening",
        ],
        "short": ["1 detok.", "2 features", "3 ensembling", "4 sharpening"],
        "start": [0.0, 0.1, 0.5, 0.85],
        "end": [0.1, 0.5, 0.85, 1.0],
        "shade": ["a", "b", "a", "b"],
    }
)
STAGE_NOTE = "Grey bands: the four stages Lad, Gurnee & Tegmark (2024) hypothesise."
_SYMLOG_TICKS = [0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


def stage_bands() -> list[alt.Chart]:
    """Alternating grey bands for the hypothesised stages, each named at the top of the plot."""
    base = alt.Chart(STAGES)
    rect = base.mark_rect(opacity=0.35).encode(
        x=alt.X("start:Q"),
        x2="end:Q",
        fill=alt.Fill(
            "shade:N", scale=alt.Scale(domain=["a", "b"], range=["#d0d0d0", "#ececec"]), legend=None
        ),
        tooltip=[alt.Tooltip("stage:N", title="stage (hypothesis, Lad et al. 2024)")],
    )
    text = base.mark_text(align="left", baseline="top", dx=3, fontSize=10, color="#444444").encode(
        x="start:Q", y=alt.value(3), text="short:N"
    )
    return [rect, text]


def symlog_ticks(top: float) -> list[float]:
    """Readable tick values for a symlog axis from 0 up to ``top``."""
    ticks = [t for t in _SYMLOG_TICKS if t <= max(top, 1) * 1.05]
    return ticks[::2] if len(ticks) > 9 else ticks


def normalise_by_series(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Divide each series' mean and interval by that series' largest |mean| (for shape reading)."""
    df = df.copy()
    top = df.groupby(by)["mean"].transform(lambda s: s.abs().max()).replace(0, np.nan)
    df["raw_mean"] = df["mean"]
    for col in ("mean", "ci_lo", "ci_hi"):
        df[col] = df[col] / top
    return df


def depth_layers(
    df: pd.DataFrame,
    y_title: str,
    color: str = "model",
    color_title: str | None = None,
    x: str = "rel_depth",
    x_title: str = DEPTH_TITLE,
    stroke_dash: str | None = None,
    dash_order: list[str] | None = None,
    y_scale: str = "linear",
    y_domain: list[float] | None = None,
) -> list[alt.Chart]:
    """The interval band and the mean line (with points) of every series, unfinished."""
    y_axis = alt.Axis(title=wrap(y_title))
    if y_scale == "symlog" and len(df):
        y_axis = alt.Axis(title=wrap(y_title), values=symlog_ticks(float(df["ci_hi"].max())))
    y_sc = alt.Scale(type=y_scale, domain=y_domain or alt.Undefined)
    x_enc = alt.X(
        f"{x}:Q",
        title=x_title,
        scale=alt.Scale(domain=[0, 1] if x == "rel_depth" else alt.Undefined),
    )
    palette = OKABE_ITO if df[color].nunique() <= len(OKABE_ITO) else SERIES
    col_scale = alt.Scale(range=palette)
    base = alt.Chart(df).encode(x=x_enc)
    detail = [alt.Detail(f"{stroke_dash}:N")] if stroke_dash else []
    col_enc = alt.Color(f"{color}:N", scale=col_scale, legend=legend(color_title or color))
    band = base.mark_area(opacity=0.18).encode(
        y=alt.Y("ci_lo:Q", scale=y_sc, axis=y_axis),
        y2="ci_hi:Q",
        color=col_enc,
        *detail,
    )
    enc = {
        "y": alt.Y("mean:Q", scale=y_sc, axis=y_axis),
        "color": col_enc,
        "tooltip": [
            f"{color}:N",
            alt.Tooltip(f"{x}:Q", format=".2f"),
            alt.Tooltip("mean:Q", format=".4f"),
            *([alt.Tooltip("raw_mean:Q", format=".4g", title="value")] if "raw_mean" in df else []),
            *([f"{stroke_dash}:N"] if stroke_dash else []),
            *(["n:Q"] if "n" in df else []),
        ],
    }
    if stroke_dash:
        order = dash_order or sorted(df[stroke_dash].dropna().unique())
        enc["strokeDash"] = alt.StrokeDash(
            f"{stroke_dash}:N",
            scale=alt.Scale(
                domain=order, range=[[1, 0], [6, 4], [2, 2], [8, 3, 2, 3]][: len(order)]
            ),
            legend=dash_legend(stroke_dash),
        )
    line = base.mark_line(strokeWidth=2).encode(**enc)
    # Points in their own layer, so the line-style legend draws strokes, not dots.
    points = base.mark_point(size=22, filled=True, opacity=1).encode(
        y=enc["y"], color=col_enc, tooltip=enc["tooltip"], *detail
    )
    return [band, line, points]


def depth_lines(
    df: pd.DataFrame,
    y_title: str,
    title: str | None = None,
    color: str = "model",
    x: str = "rel_depth",
    x_title: str = DEPTH_TITLE,
    bands: bool = True,
    height: int = 400,
    stroke_dash: str | None = None,
    y_scale: str = "linear",
    dash_order: list[str] | None = None,
    color_title: str | None = None,
    normalise: bool = False,
    subtitle: str | None = None,
) -> alt.LayerChart:
    """Mean curves over depth with a 95 % interval band, one colour per series.

    Args:
        df: Rows with ``x``, ``mean``, ``ci_lo``, ``ci_hi``, ``color`` (and ``stroke_dash``).
        y_title: Axis title, with its unit.
        title: Chart title (default: the y quantity, by depth).
        color: Column that picks the colour.
        x: Column on the x-axis.
        x_title: Axis title.
        bands: Draw the stage hypothesis bands.
        height: Pixel height of the whole chart.
        stroke_dash: Optional column drawn as line styles (solid first, in ``dash_order``).
        y_scale: ``linear`` or ``symlog`` (for quantities spanning orders of magnitude).
        dash_order: Order of the ``stroke_dash`` values: the first is solid, the second dashed.
        color_title: Legend title of the colours (default: the column name).
        normalise: Divide each colour's curve by its own maximum (compare shapes, not heights).
        subtitle: A line under the title.
    """
    if title is None:
        quantity = re.sub(r"\s*\([^()]*\)$", "", y_title)
        title = f"{quantity[:1].upper()}{quantity[1:]}, by depth"
    if normalise:
        df = normalise_by_series(df, color)
        y_title = f"{y_title}, ÷ each {color}'s maximum"
    layers = [
        *(stage_bands() if bands else []),
        *depth_layers(
            df, y_title, color, color_title, x, x_title, stroke_dash, dash_order, y_scale
        ),
    ]
    note = [n for n in (subtitle, STAGE_NOTE if bands else None) if n]
    return finish(alt.layer(*layers), title, note or None, height)


def seed_band(band: tuple[float, float], label: str) -> list[alt.Chart]:
    """A reported depth range, drawn light and named in the plot."""
    frame = pd.DataFrame({"start": [band[0]], "end": [band[1]], "band": [label]})
    base = alt.Chart(frame)
    rect = base.mark_rect(opacity=0.15, color="#777777").encode(
        x="start:Q", x2="end:Q", tooltip=["band:N"]
    )
    text = base.mark_text(align="left", baseline="top", dx=3, fontSize=10, color="#444444").encode(
        x="start:Q", y=alt.value(3), text="band:N"
    )
    return [rect, text]


def knockout_chart(
    df: pd.DataFrame,
    band: tuple[float, float],
    band_label: str,
    title: str,
    color: str = "model",
    height: int = 340,
) -> alt.LayerChart:
    """Knockout curves over relative depth with a reported band and a zero line."""
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#999999").encode(y="y:Q")
    lines = depth_layers(
        df,
        "change in p(prediction) (%)",
        color=color,
        x_title="relative depth of the window centre (0 = first block, 1 = last)",
    )
    return finish(alt.layer(*seed_band(band, band_label), zero, *lines), title, None, height)


def patching_chart(
    df: pd.DataFrame, band: tuple[float, float], band_label: str, title: str, height: int = 380
) -> alt.LayerChart:
    """Patching effect over relative depth, with the 0.5 "uses" threshold and a reported band."""
    half = alt.Chart(pd.DataFrame({"y": [0.5]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    lines = depth_layers(df, "normalised logit-difference effect (0 = corrupted, 1 = clean)")
    return finish(alt.layer(*seed_band(band, band_label), half, *lines), title, None, height)


def k_curves(
    df: pd.DataFrame,
    color: str = "group",
    color_title: str = "group",
    title: str = "Earliest depth at which the prediction is in the top k",
) -> alt.LayerChart:
    """Earliest relative depth reaching rank <= k, over k (log scale), dashed by lens."""
    base = alt.Chart(df).encode(
        x=alt.X("k:Q", scale=alt.Scale(type="log"), title="k (rank threshold, log scale)"),
        color=alt.Color(f"{color}:N", scale=alt.Scale(range=OKABE_ITO), legend=legend(color_title)),
    )
    band = base.mark_area(opacity=0.15).encode(y="ci_lo:Q", y2="ci_hi:Q", detail="lens:N")
    points = base.mark_point(filled=True, size=22).encode(
        y="mean:Q", detail="lens:N", tooltip=[color, "lens", "k", "mean:Q"]
    )
    line = base.mark_line().encode(
        y=alt.Y(
            "mean:Q",
            title=wrap("relative depth where rank ≤ k first holds"),
            scale=alt.Scale(domain=[0, 1]),
        ),
        strokeDash=alt.StrokeDash("lens:N", legend=dash_legend("lens")),
        tooltip=[color, "lens", "k", alt.Tooltip("mean:Q", format=".3f"), "n"],
    )
    return finish(alt.layer(band, line, points), title, None, 380)


def scaled_lines(
    df: pd.DataFrame,
    y: str,
    y_title: str,
    color: str,
    color_title: str,
    title: str,
    shape: bool = False,
    height: int = 400,
    legend_orient: str = "right",
) -> alt.Chart:
    """Several signatures of one model, each already scaled to [0, 1], over relative depth."""
    n = df[color].nunique()
    palette = OKABE_ITO if n <= len(OKABE_ITO) else SERIES
    enc = {
        "x": alt.X("rel_depth:Q", title=DEPTH_TITLE, scale=alt.Scale(domain=[0, 1])),
        "y": alt.Y(f"{y}:Q", title=wrap(y_title), scale=alt.Scale(domain=[0, 1])),
        "color": alt.Color(
            f"{color}:N",
            scale=alt.Scale(range=palette),
            legend=legend(color_title, columns=1, symbolLimit=0, orient=legend_orient),
        ),
        "tooltip": [
            f"{color}:N",
            alt.Tooltip("rel_depth:Q", format=".2f"),
            alt.Tooltip(f"{y}:Q", format=".3f"),
        ],
    }
    if shape:
        enc["shape"] = alt.Shape(f"{color}:N", legend=None)
    chart = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=26, filled=True)).encode(**enc)
    return finish(chart, title, None, height) if title else chart


def stage_chart(mat: pd.DataFrame, bounds: pd.DataFrame, model: str) -> alt.LayerChart:
    """One model's normalised signatures over relative depth with the estimated boundaries."""
    m = mat[mat["model"] == model]
    lines = scaled_lines(
        m,
        "value",
        "normalised signature (0 = model's min, 1 = max)",
        "signature",
        "signature",
        "",
        shape=True,
    )
    layers = [lines]
    b = bounds[bounds["model"] == model] if not bounds.empty else bounds
    if not b.empty:
        layers.append(
            alt.Chart(b)
            .mark_rule(strokeDash=[6, 3], size=2, color="black")
            .encode(
                x="rel_depth:Q",
                tooltip=["boundary:O", "layer:O", alt.Tooltip("rel_depth:Q", format=".2f")],
            )
        )
    return finish(
        alt.layer(*layers),
        f"Stage signatures of {model}",
        "Dashed black rules: the estimated stage boundaries.",
        440,
    )
