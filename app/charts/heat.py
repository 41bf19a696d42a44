"""Heatmaps: layer x token (lenses, causal tracing), layer x layer, query x key attention."""

from __future__ import annotations

import textwrap

import altair as alt
import pandas as pd

from app.charts.base import HEATMAP_SCHEME, VERMILLION, finish, legend, show_token, wrap

#: Outline of the cells a heatmap marks (e.g. where two lenses disagree): vermillion, 2 px.
OUTLINE = VERMILLION


def position_labels(df: pd.DataFrame, mark: pd.Series | None = None) -> tuple[pd.Series, list[str]]:
    """``"position: token"`` labels (tokens made visible) and their order by position.

    Labels carry the position, so two equal tokens stay two rows (Altair merges equal strings).
    """
    star = mark.map({True: " *", False: ""}) if mark is not None else ""
    labels = (
        df["position"].astype(int).astype(str) + ": " + df["input_token"].map(show_token) + star
    )
    order = (
        pd.DataFrame({"p": df["position"], "l": labels}).drop_duplicates("p").sort_values("p")["l"]
    )
    return labels, order.tolist()


def _colour_scale(domain, scheme: str = HEATMAP_SCHEME, reverse: bool = False) -> alt.Scale:
    if domain is None:
        return alt.Scale(scheme=scheme, reverse=reverse)
    return alt.Scale(scheme=scheme, domain=list(domain), reverse=reverse, clamp=True)


def token_heatmap(
    df: pd.DataFrame,
    value: str,
    value_title: str,
    domain: tuple[float, float] | None,
    text: str | None = "token",
    scheme: str = HEATMAP_SCHEME,
    reverse: bool = False,
    title: str = "Every layer, every position",
    outline: str | None = None,
    outline_label: str = "marked cells",
) -> alt.LayerChart:
    """Layer x position heatmap with a word in each cell.

    Args:
        df: Rows with ``layer``, ``position``, ``input_token``, ``value`` and ``text`` columns.
        value: Column coloured.
        value_title: Legend title, with its unit.
        domain: Fixed colour domain (so prompts compare); ``None`` lets the data decide.
        text: Column written in each cell (``None`` for no text).
        scheme: Vega colour scheme.
        reverse: Reverse the scheme (so that "good" is always the bright end).
        title: Chart title.
        outline: Boolean column: its true cells get an orange frame.
        outline_label: What the frame means (said in the subtitle).
    """
    df = df.copy()
    df["pos_label"], order = position_labels(df)
    if text:
        df["cell_text"] = df[text].map(show_token)
    n_layers = int(df["layer"].max()) + 1 if len(df) else 1
    n_pos = max(df["position"].nunique(), 1)
    base = alt.Chart(df).encode(
        x=alt.X(
            "pos_label:N",
            sort=order,
            title="position: input token",
            axis=alt.Axis(labelAngle=-45, labelLimit=140),
        ),
        y=alt.Y("layer:O", sort="descending", title=wrap("residual state (0 = embeddings)")),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(
            f"{value}:Q", scale=_colour_scale(domain, scheme, reverse), legend=legend(value_title)
        ),
        tooltip=[
            "layer:O",
            "position:O",
            alt.Tooltip("pos_label:N", title="input token"),
            *([alt.Tooltip("cell_text:N", title="lens top-1")] if text else []),
            alt.Tooltip(f"{value}:Q", format=".3f"),
        ],
    )
    layers = [rect]
    if text:
        mid = (domain[0] + domain[1]) / 2 if domain else float(df[value].median() if len(df) else 0)
        bright = f"datum['{value}'] {'<' if reverse else '>'} {mid}"
        layers.append(
            base.mark_text(fontSize=10, limit=max(min(900 // n_pos, 90), 30)).encode(
                text="cell_text:N",
                color=alt.condition(bright, alt.value("black"), alt.value("white")),
            )
        )
    subtitle = None
    if outline:
        layers.append(
            base.transform_filter(f"datum['{outline}']").mark_rect(
                fill=None, stroke=OUTLINE, strokeWidth=2
            )
        )
        subtitle = f"Orange frame: {outline_label}."
    height = 18 * n_layers + 150
    return finish(alt.layer(*layers), title, subtitle, height, min(max(60 * n_pos, 300), 1400))


def matrix_heatmap(
    df: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    value_title: str,
    domain: tuple[float, float] | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
    title: str | None = None,
) -> alt.Chart:
    """A plain numeric heatmap (e.g. layer x layer similarity)."""
    n = max(df[y].nunique(), 1) if len(df) else 1
    chart = (
        alt.Chart(df)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:O", title=x_title or x, axis=alt.Axis(labelAngle=-45)),
            y=alt.Y(f"{y}:O", title=wrap(y_title or y), sort="descending"),
            color=alt.Color(f"{value}:Q", scale=_colour_scale(domain), legend=legend(value_title)),
            tooltip=[f"{x}:O", f"{y}:O", alt.Tooltip(f"{value}:Q", format=".3f")],
        )
    )
    return finish(
        chart,
        title or value_title[:1].upper() + value_title[1:],
        None,
        max(min(14 * n + 160, 520), 420),
    )


def trace_heatmaps(
    df: pd.DataFrame,
    domain: tuple[float, float],
    kinds: dict[str, str],
    title: str = "Restoring one state at a time",
) -> alt.FacetChart:
    """ROME-style heatmaps side by side: token rows (subject *), block columns, p restored.

    Args:
        df: Rows with ``kind, position, input_token, subject, layer, p_restored`` (``rel_depth``).
        domain: Colour domain shared by the kinds of one fact (from p_corrupt up).
        kinds: ``kind`` -> what was restored (``hidden`` -> ``hidden state``), in column order.
        title: Chart title.
    """
    df = df[df["kind"].isin(list(kinds))].copy()
    df["token"], order = position_labels(df, df["subject"].astype(bool))
    # Header lines joined by "|" and split by the header's labelExpr (a long name wraps).
    header = {k: "|".join(textwrap.wrap(f"restoring the {v}", 30)) for k, v in kinds.items()}
    df["restored"] = df["kind"].map(header)
    n_pos = max(df["position"].nunique(), 1)
    n_kinds = max(df["kind"].nunique(), 1)
    chart = (
        alt.Chart(df)
        .mark_rect()
        .encode(
            x=alt.X(
                "layer:O",
                title="block (layer) restored",
                axis=alt.Axis(labelAngle=0, labelOverlap=True),
            ),
            y=alt.Y("token:N", sort=order, title="position: token (* = subject)"),
            color=alt.Color(
                "p_restored:Q",
                scale=_colour_scale(domain),
                legend=legend("p(answer) restored", orient="bottom", gradientLength=260),
            ),
            tooltip=[
                "kind:N",
                "token:N",
                "layer:O",
                *([alt.Tooltip("rel_depth:Q", format=".2f")] if "rel_depth" in df else []),
                alt.Tooltip("p_restored:Q", format=".4f"),
            ],
        )
        .properties(width=max(680 // n_kinds, 220), height=max(24 * n_pos, 200))
        .facet(
            column=alt.Column(
                "restored:N",
                sort=[header[k] for k in kinds],
                title=None,
                header=alt.Header(
                    labelFontSize=13, labelLimit=0, labelExpr="split(datum.label, '|')"
                ),
            )
        )
    )
    return finish(chart, title, "Colour starts at the corrupted probability (no effect).")


def pattern_chart(
    frame: pd.DataFrame, order: list[str], title: str = "Attention pattern"
) -> alt.LayerChart:
    """Query x key attention weights, with the previous-5-token band outlined."""
    base = alt.Chart(frame).encode(
        x=alt.X(
            "key_token:N",
            sort=order,
            title="key (attended-to) position: token",
            axis=alt.Axis(labelAngle=-45),
        ),
        y=alt.Y("query_token:N", sort=order, title="query position: token"),
    )
    rect = base.mark_rect().encode(
        color=alt.Color("weight:Q", scale=_colour_scale((0, 1)), legend=legend("attention weight")),
        tooltip=["query_token:N", "key_token:N", alt.Tooltip("weight:Q", format=".3f")],
    )
    layers = [rect]
    if "in_band" in frame:
        layers.append(
            base.transform_filter("datum.in_band").mark_rect(
                fill=None, stroke=OUTLINE, strokeWidth=1.5
            )
        )
    size = max(22 * len(order), 260) + 160
    return finish(
        alt.layer(*layers),
        title,
        "Orange frame: the previous 5 tokens.",
        min(size, 900),
        min(size, 900),
    )


#: Colour title of representational-similarity heatmaps.
SIM_TITLE = "Spearman ρ of RDMs"


def similarity_heatmap(df: pd.DataFrame, x: str, y: str, x_title: str, y_title: str) -> alt.Chart:
    """A layer x layer similarity heatmap on a fixed 0-1 colour scale (so models compare)."""
    return matrix_heatmap(df, x, y, "value", SIM_TITLE, (0.0, 1.0), x_title, y_title)


def rdm_heatmap(rdm: pd.DataFrame) -> alt.Chart:
    """One live RDM, sentence x sentence, its colour scale fitted to the layer."""
    return matrix_heatmap(
        rdm, "sentence_a", "sentence_b", "dissimilarity", "1 − cosine", None, "", ""
    )
