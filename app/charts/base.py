"""What every chart shares: palettes, size minimums, label limits, titles, token display."""

from __future__ import annotations

import textwrap

import altair as alt
import pandas as pd

#: Okabe & Ito (2008) colour-blind-safe categorical palette; yellow last (faint on white).
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000", "#F0E442"]
VERMILLION = "#D55E00"  # marks that must stand out: a guess, disagreement, outlines
#: Nine distinguishable series: Okabe-Ito plus a mid grey (the ninth needs a shape as well).
SERIES = [*OKABE_ITO, "#999999"]
HEATMAP_SCHEME = "viridis"
#: Smallest plot area a chart may ask for (the browser tests check what is drawn against these).
MIN_WIDTH = 240
MIN_HEIGHT = 200
#: Longest axis or legend label, in pixels, before Vega shortens it with an ellipsis.
LABEL_LIMIT = 220
#: Characters per line of an axis title before it wraps onto a second line.
TITLE_CHARS = 42
DEPTH_TITLE = "relative depth (0 = first, 1 = last)"

#: Visible stand-ins for characters a cell would otherwise show as blank.
_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍", "\xa0": "⍽"}
BYTE_TOKEN = "⟨byte⟩"


def show_token(token: object) -> str:
    """A token as a student can read it: whitespace made visible, byte pieces named.

    A token made only of whitespace shows each character (``"  "`` -> ``"␣␣"``); a newline or tab
    inside a word shows as ``↵`` / ``⇥``; a lone byte of a multi-byte character (decoded as
    U+FFFD) shows as ``⟨byte⟩``. A leading space before a word is kept as a space.
    """
    text = "" if token is None or (isinstance(token, float) and pd.isna(token)) else str(token)
    if text == "":
        return "∅"
    if not text.strip() or text.strip("\xa0") == "":
        return "".join(_VISIBLE.get(c, c) for c in text)
    for raw, shown in (("\n", "↵"), ("\t", "⇥"), ("\r", "␍")):
        text = text.replace(raw, shown)
    return text.replace("\ufffd", BYTE_TOKEN)


def wrap(title: str, width: int = TITLE_CHARS) -> str | list[str]:
    """An axis title that would not fit along the axis, split into lines (Vega draws a list)."""
    lines = textwrap.wrap(title, width)
    return title if len(lines) <= 1 else lines


def legend(title: str | None, **kw) -> alt.Legend:
    """A legend on the right with room for its labels."""
    return alt.Legend(
        title=wrap(title, 28) if title else None,
        orient=kw.pop("orient", "right"),
        labelLimit=LABEL_LIMIT,
        titleLimit=LABEL_LIMIT,
        symbolOpacity=kw.pop("symbolOpacity", 1),
        **kw,
    )


def dash_legend(title: str) -> alt.Legend:
    """A legend that draws the line style itself (solid, dashed), not a dot."""
    return legend(
        title,
        symbolType="stroke",
        symbolStrokeWidth=2.5,
        symbolSize=500,
        symbolStrokeColor="#333333",
    )


def finish(
    chart,
    title: str,
    subtitle: str | list[str] | None = None,
    height: int | None = None,
    width: int | None = None,
):
    """Give a top-level chart its title, size and readable label limits.

    Streamlit fits the whole chart (axes and legends included) into ``height``; the plot area is
    what is left, so heights here are total heights.
    """
    props: dict = {"title": alt.Title(title, subtitle=subtitle or alt.Undefined, anchor="start")}
    if height is not None:
        props["height"] = max(int(height), MIN_HEIGHT)
    if width is not None:
        props["width"] = max(int(width), MIN_WIDTH)
    return (
        chart.properties(**props)
        .configure_axis(labelLimit=LABEL_LIMIT, labelFontSize=11, titleFontSize=12)
        .configure_legend(labelLimit=LABEL_LIMIT, titleLimit=LABEL_LIMIT)
        .configure_title(fontSize=14, subtitleFontSize=11, subtitleColor="#555555", limit=0)
    )
