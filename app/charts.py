"""Chart builders: pure functions, DataFrame in, Altair chart out. No Streamlit here.

Conventions (STYLE.md): relative depth on the x-axis whenever models are compared, units in every
axis title, Okabe-Ito colours for models, viridis for heatmaps with fixed domains so two heatmaps
can be compared, token axes labelled "position: token" and sorted by position.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]

#: The four stages of Lad et al. (2024) as rough relative-depth bands -- a hypothesis, drawn light.
STAGES = pd.DataFrame(
    {
        "stage": [
            "1 detokenization",
            "2 feature engineering",
            "3 prediction ensembling",
            "4 residual sharpening",
        ],
        "start": [0.0, 0.1, 0.5, 0.85],
        "end": [0.1, 0.5, 0.85, 1.0],
    }
)


def stage_bands(show: bool = True) -> alt.Chart | None:
    """Light background bands for the hypothesised stages (labelled as a hypothesis)."""
    if not show:
        return None
    return (
        alt.Chart(STAGES)
        .mark_rect(opacity=0.08)
        .encode(
            x=alt.X("start:Q"),
            x2="end:Q",
            color=alt.Color(
                "stage:N",
                scale=alt.Scale(scheme="greys"),
                legend=alt.Legend(title="Stages (hypothesis, Lad et al.)", orient="bottom"),
            ),
            tooltip=["stage:N"],
        )
    )


def depth_lines(
    df: pd.DataFrame,
    y_title: str,
    color: str = "model",
    x: str = "rel_depth",
    x_title: str = "relative depth (0 = first, 1 = last)",
    bands: bool = True,
    height: int = 300,
    stroke_dash: str | None = None,
    y_scale: str = "linear",
) -> alt.LayerChart:
    """Mean curves over depth with a 95 % interval band, one colour per model.

    Args:
        df: Rows with ``x``, ``mean``, ``ci_lo``, ``ci_hi``, ``color`` (and ``stroke_dash``).
        y_title: Axis title, with its unit.
        color: Column that picks the colour.
        x: Column on the x-axis.
        x_title: Axis title.
        bands: Draw the stage hypothesis bands.
        height: Pixel height.
        stroke_dash: Optional column for dashed lines (e.g. a variant).
        y_scale: ``linear`` or ``symlog`` (for quantities spanning orders of magnitude).
    """
    base = alt.Chart(df).encode(
        x=alt.X(
            f"{x}:Q",
            title=x_title,
            scale=alt.Scale(domain=[0, 1] if x == "rel_depth" else alt.Undefined),
        ),
        color=alt.Color(f"{color}:N", scale=alt.Scale(range=OKABE_ITO), title=color),
    )
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("ci_lo:Q", scale=alt.Scale(type=y_scale)),
        y2="ci_hi:Q",
        color=alt.Color(f"{color}:N", scale=alt.Scale(range=OKABE_ITO), legend=None),
    )
    enc = dict(
        y=alt.Y("mean:Q", title=y_title, scale=alt.Scale(type=y_scale)),
        tooltip=[color, alt.Tooltip(x, format=".2f"), alt.Tooltip("mean:Q", format=".4f"), "n:Q"],
    )
    if stroke_dash:
        enc["strokeDash"] = alt.StrokeDash(f"{stroke_dash}:N")
        enc["detail"] = f"{stroke_dash}:N"
    line = base.mark_line(point=alt.OverlayMarkDef(size=18)).encode(**enc)
    layers = [stage_bands(bands), band, line] if bands else [band, line]
    chart = alt.layer(*[layer for layer in layers if layer is not None]).properties(height=height)
    # The stage bands have their own (grey) colour scale; models keep the Okabe-Ito palette.
    return chart.resolve_scale(color="independent")


def token_heatmap(
    df: pd.DataFrame,
    value: str,
    value_title: str,
    domain: tuple[float, float] | None,
    text: str | None = "token",
    scheme: str = "viridis",
    reverse: bool = False,
) -> alt.LayerChart:
    """Layer x position heatmap with a word in each cell.

    Args:
        df: Rows with ``layer``, ``position``, ``input_token``, ``value`` and ``text`` columns.
        value: Column coloured.
        value_title: Legend title, with its unit.
        domain: Fixed colour domain (so prompts compare); ``None`` lets the data decide.
        text: Column written in each cell (``None`` for no text).
        scheme: Vega colour scheme.
        reverse: Reverse the scheme.
    """
    df = df.copy()
    df["pos_label"] = df["position"].astype(str) + ": " + df["input_token"].astype(str)
    order = df.drop_duplicates("position").sort_values("position")["pos_label"].tolist()
    scale = alt.Scale(scheme=scheme, reverse=reverse)
    if domain is not None:
        scale = alt.Scale(scheme=scheme, domain=list(domain), reverse=reverse, clamp=True)
    n_layers = int(df["layer"].max()) + 1 if len(df) else 1
    base = alt.Chart(df).encode(
        x=alt.X("pos_label:N", sort=order, title="position: input token"),
        y=alt.Y("layer:O", sort="descending", title="residual state (0 = embeddings)"),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", scale=scale, title=value_title),
        tooltip=[
            "layer:O",
            "position:O",
            "input_token:N",
            *([f"{text}:N"] if text else []),
            alt.Tooltip(f"{value}:Q", format=".3f"),
        ],
    )
    layers = [rect]
    if text:
        layers.append(
            base.mark_text(fontSize=10, limit=70).encode(
                text=f"{text}:N",
                color=alt.condition(
                    f"datum.{value} > {(domain[0] + domain[1]) / 2 if domain else 0}",
                    alt.value("black"),
                    alt.value("white"),
                )
                if not reverse
                else alt.value("black"),
            )
        )
    width = max(60 * df["position"].nunique(), 300)
    return alt.layer(*layers).properties(height=max(18 * n_layers, 200), width=min(width, 1400))


def matrix_heatmap(
    df: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    title: str,
    domain: tuple[float, float] | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
) -> alt.Chart:
    """A plain numeric heatmap (e.g. layer x layer similarity)."""
    scale = alt.Scale(scheme="viridis")
    if domain is not None:
        scale = alt.Scale(scheme="viridis", domain=list(domain), clamp=True)
    return (
        alt.Chart(df)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:O", title=x_title or x),
            y=alt.Y(f"{y}:O", title=y_title or y, sort="descending"),
            color=alt.Color(f"{value}:Q", scale=scale, title=title),
            tooltip=[x, y, alt.Tooltip(f"{value}:Q", format=".3f")],
        )
        .properties(height=360)
    )
