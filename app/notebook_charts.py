"""The chart a generated notebook draws: one description (``ChartSpec``), readable Altair code.

Every precomputed chart of the app is one of four kinds, and ``ChartSpec`` describes each with
the same fields (which columns go on x, y and colour, scales, line styles, facets, reference
rules and shaded bands). ``chart_code`` writes the Altair code a student reads and edits in the
notebook; the notebook's ``df`` holds the chart's rows. Kinds:

- ``lines``: one line per ``color`` (and ``dash``) value over ``x``, with the 95 % interval
  band ``ci_lo``..``ci_hi`` when ``band`` (depth curves, knockout, k curves, stage signatures);
- ``heatmap``: one cell per (``x``, ``y``), coloured by the numeric ``color`` column, an optional
  word in each cell (lens top-1 tokens, causal-tracing and similarity matrices);
- ``bars``: bars of ``y`` over ``x`` (binned when ``x_bin``), stacked by ``color``;
- ``points``: a scatter of ``y`` against ``x``, coloured by ``color``.

Example::

    spec = ChartSpec("KL (nats)", "Logit lens", y_scale="symlog")
    code = chart_code(spec)  # ends with the chart as the cell's value
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.charts.base import DEPTH_TITLE
from app.charts.depth import STAGES

KINDS = ("lines", "heatmap", "bars", "points")
#: Lad et al.'s four stages (a hypothesis) as (start, end, label) bands, as the depth charts draw.
STAGE_BANDS = tuple(zip(STAGES["start"], STAGES["end"], STAGES["short"], strict=True))
DEFAULT_TYPES = {  # kind -> (x, y, color) Vega-Lite types when a field has no ":T" suffix
    "lines": ("Q", "Q", "N"),
    "heatmap": ("O", "O", "Q"),
    "bars": ("Q", "Q", "N"),
    "points": ("Q", "Q", "N"),
}


@dataclass(frozen=True)
class ChartSpec:
    """What a notebook draws: the same fields for every kind (unused ones are ignored).

    Attributes:
        y_title: Title of the y-axis, with its unit (heatmaps: of the colour legend).
        title: Chart title.
        kind: ``lines``, ``heatmap``, ``bars`` or ``points``.
        x: Column on the x-axis (``"layer:O"`` to force a type).
        y: Column on the y-axis.
        color: Series column (lines, bars, points) or the value coloured (heatmap).
        dash: Column drawn as line styles (lines).
        x_title: Title of the x-axis (default: the column name).
        axis_title: Title of the y-axis of a heatmap (``y_title`` is its colour's).
        color_title: Legend title of the colours.
        y_scale: ``linear``, ``log`` or ``symlog``.
        x_scale: ``linear`` or ``log``.
        band: Draw the 95 % interval ``ci_lo``..``ci_hi`` (lines).
        stages: Shade Lad et al.'s stage bands (lines on ``rel_depth``).
        x_bands: More shaded x ranges, as (start, end, label).
        rules: Reference rules, as ("x" or "y", value).
        domain: Colour domain (heatmap) or y domain (lines, points).
        reverse: Reverse the heatmap's colour scheme.
        text: Column written in each heatmap cell.
        x_sort: Column whose order sorts a categorical x (e.g. token labels by position).
        y_sort: ``"descending"`` or a column ordering a categorical y.
        row: Column of facet rows.
        column: Column of facet columns.
        palette: Fixed colours, as (value, colour) pairs.
        order: Order of the colour values (bars) or line styles (lines), first solid.
        x_bin: Bin width of a binned x (bars).
        stack: Bar stacking (``"normalize"`` for shares).
        normalise: Divide each colour's curve by its own largest |mean| (compare shapes).
    """

    y_title: str
    title: str = ""
    kind: str = "lines"
    x: str = "rel_depth"
    y: str = "mean"
    color: str = "model"
    dash: str | None = None
    x_title: str | None = None
    axis_title: str | None = None
    color_title: str | None = None
    y_scale: str = "linear"
    x_scale: str = "linear"
    band: bool = True
    stages: bool = True
    x_bands: tuple[tuple[float, float, str], ...] = ()
    rules: tuple[tuple[str, float], ...] = ()
    domain: tuple[float, float] | None = None
    reverse: bool = False
    text: str | None = None
    x_sort: str | None = None
    y_sort: str | None = None
    row: str | None = None
    column: str | None = None
    palette: tuple[tuple[str, str], ...] = ()
    order: tuple[str, ...] = ()
    x_bin: float | None = None
    stack: str | None = None
    normalise: bool = False

    def __post_init__(self) -> None:
        """Refuse an unknown kind early (a typo would otherwise draw nothing)."""
        if self.kind not in KINDS:
            raise ValueError(f"Unknown chart kind {self.kind!r}; one of {KINDS}.")

    def columns(self) -> set[str]:
        """The columns of ``df`` the chart reads."""
        cols = {_field(self.x), _field(self.y), _field(self.color)}
        if self.kind == "lines" and self.band:
            cols |= {"ci_lo", "ci_hi"}
        extra = (self.dash, self.text, self.x_sort, self.row, self.column)
        cols |= {c for c in extra if c}
        if self.y_sort and self.y_sort not in ("ascending", "descending"):
            cols.add(self.y_sort)
        return cols


def default_title(y_title: str) -> str:
    """A depth chart's title from its y quantity, as the app titles it ("KL, by depth")."""
    quantity = re.sub(r"\s*\([^()]*\)$", "", y_title)
    return f"{quantity[:1].upper()}{quantity[1:]}, by depth"


def _field(shorthand: str) -> str:
    return shorthand.split(":")[0]


def _typed(shorthand: str, default: str) -> str:
    return shorthand if ":" in shorthand else f"{shorthand}:{default}"


def _scale(**kw) -> str:
    given = {k: v for k, v in kw.items() if v is not None and v is not False and v != "linear"}
    args = ", ".join(f"{k}={v!r}" for k, v in given.items())
    return f"alt.Scale({args})"


def _colour_scale(spec: ChartSpec) -> str:
    if spec.palette:
        return _scale(domain=[v for v, _ in spec.palette], range=[c for _, c in spec.palette])
    if spec.kind == "heatmap":
        domain = list(spec.domain) if spec.domain else None
        return _scale(scheme="viridis", domain=domain, reverse=spec.reverse, clamp=bool(domain))
    domain = f"domain={list(spec.order)!r}, " if spec.order else ""
    return f"alt.Scale({domain}range=OKABE_ITO)"


def _sort(spec_sort: str | None) -> str:
    if not spec_sort:
        return ""
    if spec_sort in ("ascending", "descending"):
        return f", sort={spec_sort!r}"
    return f", sort=alt.EncodingSortField({spec_sort!r}, op='min')"


def _encodings(spec: ChartSpec) -> list[str]:
    tx, ty, tc = DEFAULT_TYPES[spec.kind]
    heat = spec.kind == "heatmap"
    x_title = spec.x_title or (
        DEPTH_TITLE if _field(spec.x) == "rel_depth" else _field(spec.x).replace("_", " ")
    )
    y_title = (spec.axis_title or _field(spec.y)) if heat else spec.y_title
    color_title = spec.y_title if heat else (spec.color_title or _field(spec.color))
    x_extra = _sort(spec.x_sort)
    if spec.x_scale != "linear":
        x_extra += f", scale={_scale(type=spec.x_scale)}"
    if spec.x_bin:
        x_extra += f", bin=alt.Bin(step={spec.x_bin!r})"
    if heat:
        x_extra += ", axis=alt.Axis(labelAngle=-45)"
    y_extra = _sort(spec.y_sort)
    out = []
    if spec.kind in ("lines", "points"):
        domain = list(spec.domain) if spec.domain else None
        out.append(f"y_scale = {_scale(type=spec.y_scale, domain=domain)}")
        y_extra += ", scale=y_scale"
    if spec.stack:
        y_extra += f", stack={spec.stack!r}"
    return [
        *out,
        f"x = alt.X({_typed(spec.x, tx)!r}, title={x_title!r}{x_extra})",
        f"y = alt.Y({_typed(spec.y, ty)!r}, title={y_title!r}{y_extra})",
        f"color = alt.Color({_typed(spec.color, tc)!r}, title={color_title!r},"
        f" scale={_colour_scale(spec)})",
    ]


def _tooltip(spec: ChartSpec) -> str:
    fields = [spec.x, spec.y, spec.color, spec.dash, spec.text, spec.row, spec.column]
    names = list(dict.fromkeys(_field(f) for f in fields if f))
    return f"tooltip={names!r}"


def _lines(spec: ChartSpec) -> list[str]:
    detail = f", detail={_typed(spec.dash, 'N')!r}" if spec.dash else ""
    out = ["base = alt.Chart(data).encode(x=x, color=color)", "layers = ["]
    if spec.band:
        out.append(
            "    base.mark_area(opacity=0.2).encode("
            f"y=alt.Y('ci_lo:Q', scale=y_scale), y2='ci_hi:Q'{detail}),"
        )
    dash = ""
    if spec.dash:
        sort = f", sort={list(spec.order)!r}" if spec.order else ""
        dash = f" strokeDash=alt.StrokeDash({_typed(spec.dash, 'N')!r}{sort}),"
    out += [
        f"    base.mark_line(point=True).encode(y=y,{dash} {_tooltip(spec)}),",
        "]",
    ]
    return out


def _backdrop(spec: ChartSpec) -> list[str]:
    """Shaded x ranges below the data, reference rules above it (lines and points)."""
    bands = list(spec.x_bands)
    if spec.kind == "lines" and spec.stages and _field(spec.x) == "rel_depth":
        bands = [*STAGE_BANDS, *bands]
    out = []
    if bands:
        rows = [(float(a), float(b), str(label), i % 2) for i, (a, b, label) in enumerate(bands)]
        out += [
            "# shaded depth ranges (alternating greys), each named at the top of the plot",
            f"BANDS = pd.DataFrame({rows!r}, columns=['start', 'end', 'label', 'shade'])",
            "greys = alt.Scale(range=['#d0d0d0', '#ececec'])",
            "grey = alt.Fill('shade:N', scale=greys, legend=None)",
            "shade = alt.Chart(BANDS).mark_rect(opacity=0.5)",
            "label = alt.Chart(BANDS).mark_text(align='left', baseline='top', dx=3, fontSize=10)",
            "layers = [shade.encode(x='start:Q', x2='end:Q', fill=grey, tooltip=['label:N']),",
            "          label.encode(x='start:Q', y=alt.value(3), text='label:N'), *layers]",
        ]
    for axis, value in spec.rules:
        out.append(
            f"layers.append(alt.Chart(pd.DataFrame({{'v': [{float(value)!r}]}}))"
            f".mark_rule(color='#555555', strokeDash=[4, 4]).encode({axis}='v:Q'))"
        )
    return out


def _heatmap(spec: ChartSpec) -> list[str]:
    out = [
        "base = alt.Chart(data).encode(x=x, y=y)",
        f"layers = [base.mark_rect().encode(color=color, {_tooltip(spec)})]",
    ]
    if spec.text:
        lo, hi = spec.domain or (0.0, 1.0)
        bright = f"datum[{_field(spec.color)!r}] {'<' if spec.reverse else '>'} {(lo + hi) / 2!r}"
        out.append(
            f"layers.append(base.mark_text(fontSize=9).encode(text={_typed(spec.text, 'N')!r}, "
            f"color=alt.condition({bright!r}, alt.value('black'), alt.value('white'))))"
        )
    return out


def _bars(spec: ChartSpec) -> list[str]:
    tooltip = _tooltip(spec)
    return [f"layers = [alt.Chart(data).mark_bar().encode(x=x, y=y, color=color, {tooltip})]"]


def _points(spec: ChartSpec) -> list[str]:
    return [
        "layers = [alt.Chart(data).mark_circle(size=16, opacity=0.6)"
        f".encode(x=x, y=y, color=color, {_tooltip(spec)})]"
    ]


def chart_code(spec: ChartSpec) -> str:
    """The code of the notebook cell that draws ``spec`` from ``df`` (the chart is its value)."""
    body = {"lines": _lines, "heatmap": _heatmap, "bars": _bars, "points": _points}[spec.kind]
    out = [
        "import altair as alt",
        "",
        "alt.data_transformers.disable_max_rows()  # every row of df is drawn",
        *_data(spec),
        *_encodings(spec),
        *body(spec),
        *(_backdrop(spec) if spec.kind in ("lines", "points") else []),
    ]
    facets = {k: v for k, v in (("row", spec.row), ("column", spec.column)) if v}
    size = "width=260, height=200" if facets else "width=640, height=360"
    out.append(f"chart = alt.layer(*layers).properties({size})")
    if facets:
        out.append(f"chart = chart.facet({_facet_args(facets)})")
    out += [f"chart = chart.properties(title={spec.title!r})", "chart"]
    return "\n".join(out) + "\n"


def _data(spec: ChartSpec) -> list[str]:
    """``data``: the rows drawn (``df`` itself, or each series divided by its maximum)."""
    if not spec.normalise:
        return ["data = df"]
    return [
        "# each series divided by its own largest |mean|: compare shapes, not heights",
        f"top = df.groupby({_field(spec.color)!r})['mean'].transform(lambda s: s.abs().max())",
        "data = df.assign(**{c: df[c] / top for c in ['mean', 'ci_lo', 'ci_hi']})",
    ]


def _facet_args(facets: dict[str, str]) -> str:
    kinds = {"row": "alt.Row", "column": "alt.Column"}
    return ", ".join(f"{k}={kinds[k]}({_typed(v, 'N')!r}, title=None)" for k, v in facets.items())
