"""Every chart builder in ``app.charts``, called on small synthetic frames: is the spec readable?

Checks on the Vega-Lite spec (no browser): a title, axis titles, label limits, a minimum size,
legends whose entries are the series drawn (line styles drawn as strokes), colour-blind-safe
palettes. ``tests/test_browser.py`` checks what the browser then draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app import charts


def depth_frame(series=("a-model", "b-model"), n=6, dash=None) -> pd.DataFrame:
    rows = []
    for s in series:
        for d in dash or [None]:
            for i in range(n):
                m = float(i + (len(s) % 3))
                rows.append(
                    {
                        "model": s,
                        "rel_depth": i / (n - 1),
                        "layer": i,
                        "mean": m,
                        "ci_lo": m - 0.5,
                        "ci_hi": m + 0.5,
                        "n": 10,
                        **({"variant": d} if d else {}),
                    }
                )
    return pd.DataFrame(rows)


def token_frame(n_layers=4, tokens=("The", " ", "\n", " Paris", "\ufffd")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        [
            {
                "layer": layer,
                "position": p,
                "input_token": t,
                "token": t,
                "top1_prob": float(rng.random()),
                "disagree": (layer + p) % 3 == 0,
            }
            for layer in range(n_layers)
            for p, t in enumerate(tokens)
        ]
    )


def trace_frame() -> pd.DataFrame:
    rows = []
    for kind in ("hidden", "mlp"):
        for p, t in enumerate(["The", " Eiff", "el", " is"]):
            for layer in range(5):
                rows.append(
                    {
                        "kind": kind,
                        "position": p,
                        "input_token": t,
                        "subject": p in (1, 2),
                        "layer": layer,
                        "rel_depth": layer / 4,
                        "p_restored": 0.1 * layer,
                    }
                )
    return pd.DataFrame(rows)


def stage_frames():
    sigs = [f"signature {i}" for i in range(9)]
    mat = pd.DataFrame(
        [
            {"model": "m", "signature": s, "layer": i, "rel_depth": i / 4, "value": (i * j) % 5 / 4}
            for j, s in enumerate(sigs)
            for i in range(5)
        ]
    )
    bounds = pd.DataFrame({"model": ["m"], "boundary": [1], "layer": [2], "rel_depth": [0.5]})
    return mat, bounds, sigs


BUILDERS = {
    "depth_lines": lambda: (charts.depth_lines(depth_frame(), "KL (nats)"), {"model"}),
    "depth_lines_dashed": lambda: (
        charts.depth_lines(
            depth_frame(dash=["solid-one", "dashed-one"]),
            "entropy (bits)",
            stroke_dash="variant",
            dash_order=["solid-one", "dashed-one"],
        ),
        {"model", "variant"},
    ),
    "depth_lines_symlog": lambda: (
        charts.depth_lines(depth_frame(), "KL (nats)", y_scale="symlog", normalise=True),
        {"model"},
    ),
    "knockout_chart": lambda: (
        charts.knockout_chart(depth_frame(), (0.4, 0.7), "reported", "Knockout"),
        {"model"},
    ),
    "patching_chart": lambda: (
        charts.patching_chart(depth_frame(), (0.4, 0.7), "reported", "Patching"),
        {"model"},
    ),
    "k_curves": lambda: (
        charts.k_curves(
            depth_frame()
            .rename(columns={"model": "group", "rel_depth": "k"})
            .assign(lens="logit", k=lambda d: 2 ** d["layer"])
        ),
        {"group", "lens"},
    ),
    "stage_chart": lambda: (charts.stage_chart(*stage_frames()[:2], "m"), {"signature"}),
    "token_heatmap": lambda: (
        charts.token_heatmap(token_frame(), "top1_prob", "p (top-1)", (0, 1), outline="disagree"),
        set(),
    ),
    "similarity_heatmap": lambda: (
        charts.similarity_heatmap(
            pd.DataFrame({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1], "value": [1, 0.5, 0.5, 1]}),
            "a",
            "b",
            "relative depth, model A",
            "relative depth, model B",
        ),
        set(),
    ),
    "rdm_heatmap": lambda: (
        charts.rdm_heatmap(
            pd.DataFrame(
                {
                    "sentence_a": ["s1", "s1", "s2", "s2"],
                    "sentence_b": ["s1", "s2", "s1", "s2"],
                    "dissimilarity": [0.0, 0.4, 0.4, 0.0],
                }
            )
        ),
        set(),
    ),
    "matrix_heatmap": lambda: (
        charts.matrix_heatmap(
            pd.DataFrame({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1], "v": [1, 0.5, 0.5, 1]}),
            "a",
            "b",
            "v",
            "similarity (CKA)",
            (0, 1),
            "layer of A",
            "layer of B",
        ),
        set(),
    ),
    "trace_heatmaps": lambda: (
        charts.trace_heatmaps(trace_frame(), (0.0, 0.5), {"hidden": "hidden state", "mlp": "MLP"}),
        set(),
    ),
    "pattern_chart": lambda: (
        charts.pattern_chart(
            pd.DataFrame(
                {
                    "query_token": ["0: a", "1: b"] * 2,
                    "key_token": ["0: a"] * 2 + ["1: b"] * 2,
                    "weight": [1, 0.5, 0, 0.5],
                    "in_band": [False, True, False, False],
                }
            ),
            ["0: a", "1: b"],
        ),
        set(),
    ),
    "neuron_scatter": lambda: (
        charts.neuron_scatter(
            pd.DataFrame(
                {
                    "neuron": [0, 1, 2],
                    "vocab_skew": [1.0, -1.0, 0.0],
                    "vocab_kurt": [20.0, 30.0, 3.0],
                    "class": ["prediction", "suppression", "other"],
                }
            )
        ),
        {"class"},
    ),
    "stacked_shares": lambda: (
        charts.stacked_shares(
            pd.DataFrame(
                {
                    "model": "m",
                    "lens": ["logit", "tuned"] * 2,
                    "layer": 1,
                    "rel_depth": 0.5,
                    "bucket": ["top 1 %", "top 1 %", "rest", "rest"],
                    "mean": 0.5,
                    "order": [0, 0, 1, 1],
                    "n": 3,
                }
            ),
            ["top 1 %", "rest"],
        ),
        {"bucket"},
    ),
    "layer_bars": lambda: (
        charts.layer_bars(
            pd.DataFrame({"layer": [0, 1, 2], "share": [0.1, 0.5, 0.0]}),
            "share",
            "share (fraction)",
            "Disagreement",
        ),
        set(),
    ),
    "guess_histogram": lambda: (
        charts.guess_histogram(
            pd.DataFrame({"start": [0.0, 0.5], "end": [0.5, 1.0], "count": [3, 1]}),
            pd.DataFrame({"model": ["a-model", "b-model"], "value": [0.3, 0.6]}),
            "relative depth",
            "When does the model know the answer?",
        ),
        {"model"},
    ),
    "guess_rule": lambda: (
        charts.guess_rule(charts.depth_lines(depth_frame(), "KL (nats)"), 0.35),
        {"model"},
    ),
    "scaled_lines": lambda: (
        charts.scaled_lines(
            stage_frames()[0], "value", "scaled (0-1)", "signature", "signature", "All signatures"
        ),
        {"signature"},
    ),
}


def walk(spec: dict):
    """Every (sub)spec with an encoding, with the data values it draws (inline datasets)."""
    datasets = spec.get("datasets", {})

    def rows(node, inherited):
        data = node.get("data", {})
        return datasets.get(data.get("name"), inherited) if data else inherited

    def go(node, inherited):
        here = rows(node, inherited)
        if "encoding" in node:
            yield node, here
        for key in ("layer", "hconcat", "vconcat", "concat"):
            for child in node.get(key, []):
                yield from go(child, here)
        if "spec" in node:
            yield from go(node["spec"], here)

    yield from go(spec, [])


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_spec_is_readable(name):
    chart, expected_legends = BUILDERS[name]()
    spec = chart.to_dict()
    title = spec.get("title")
    assert title and (title if isinstance(title, str) else title.get("text")), "chart has no title"
    config = spec.get("config", {})
    assert config.get("axis", {}).get("labelLimit", 0) >= 150, "axis labels have no limit"
    assert config.get("legend", {}).get("labelLimit", 0) >= 150, "legend labels have no limit"
    inner = spec.get("spec", spec)  # a facet keeps its cell size in "spec"
    height = inner.get("height", spec.get("height"))
    assert height is not None and height >= charts.MIN_HEIGHT, f"height {height}"
    width = inner.get("width", spec.get("width"))
    assert width is None or width >= charts.MIN_WIDTH - 20, f"width {width}"
    legends, titles = {}, {}
    for node, values in walk(spec):
        enc = node["encoding"]
        for axis in ("x", "y"):
            ch = enc.get(axis)
            if isinstance(ch, dict) and "field" in ch:
                axis_spec = ch.get("axis") or {}
                titles.setdefault(axis, []).append(ch.get("title") or axis_spec.get("title"))
        for channel in ("color", "strokeDash", "shape", "fill"):
            ch = enc.get(channel)
            if not isinstance(ch, dict) or "field" not in ch or ch.get("legend", {}) is None:
                continue
            if ch.get("type") == "quantitative":
                assert ch.get("scale", {}).get("scheme") == charts.HEATMAP_SCHEME
                continue
            drawn = {r[ch["field"]] for r in values if ch["field"] in r}
            domain = ch.get("scale", {}).get("domain")
            if domain is not None:  # a fixed domain must list exactly the series drawn
                assert set(domain) == drawn, f"{name}: {channel} legend {domain} vs {drawn}"
            legends[ch["field"]] = drawn
            if channel == "strokeDash":
                assert ch["legend"].get("symbolType") == "stroke", "line styles not in legend"
            if channel == "color" and "range" in ch.get("scale", {}):
                assert set(ch["scale"]["range"]) <= {*charts.SERIES, "#BBBBBB"}  # grey: "other"
    for axis, found in titles.items():  # layers share an axis: one of them names it
        assert any(found), f"{name}: the {axis} axis has no title"
    assert set(legends) == expected_legends, f"{name}: legends {set(legends)}"
    for field, drawn in legends.items():
        assert drawn, f"{name}: legend of {field} has no entries"


def test_every_public_builder_is_checked():
    builders = {n for n in charts.__all__ if callable(getattr(charts, n)) and n[0].islower()}
    helpers = {"finish", "show_token", "symlog_ticks", "wrap"}
    checked = {n.split("_dashed")[0].split("_symlog")[0] for n in BUILDERS}
    assert builders - helpers <= checked


def test_dash_order_puts_the_first_variant_solid():
    chart = charts.depth_lines(
        depth_frame(dash=["z-first", "a-second"]),
        "y (u)",
        stroke_dash="variant",
        dash_order=["z-first", "a-second"],
    )
    (line,) = [n for n, _ in walk(chart.to_dict()) if "strokeDash" in n["encoding"]]
    scale = line["encoding"]["strokeDash"]["scale"]
    assert scale["domain"][0] == "z-first" and scale["range"][0] == [1, 0]


def test_bands_are_grouped_by_line_style():
    """One interval band per (colour, line style): otherwise Vega joins them in diagonal streaks."""
    chart = charts.depth_lines(depth_frame(dash=["x", "y"]), "y (u)", stroke_dash="variant")
    (area,) = [n for n, _ in walk(chart.to_dict()) if n.get("mark", {}).get("type") == "area"]
    assert area["encoding"]["detail"]["field"] == "variant"


def test_long_axis_titles_wrap():
    title = "‖attention output‖ / ‖MLP output‖ (ratio of means over documents)"
    assert isinstance(charts.wrap(title), list)
    assert all(len(line) <= charts.base.TITLE_CHARS for line in charts.wrap(title))


def test_symlog_ticks_cover_the_range():
    ticks = charts.symlog_ticks(480)
    assert ticks[0] == 0 and 3 <= len(ticks) <= 9 and max(ticks) <= 500


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (" ", "␣"),
        ("    ", "␣␣␣␣"),
        ("\n", "↵"),
        ("\xa0", "⍽"),
        ("\ufffd", charts.BYTE_TOKEN),
        (" Paris", " Paris"),
        ("", "∅"),
        (None, "∅"),
    ],
)
def test_tokens_are_visible(raw, shown):
    assert charts.show_token(raw) == shown
