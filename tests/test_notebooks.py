"""Every precomputed chart offers a notebook; every notebook runs headless and draws its chart.

The pages run once in their default state (AppTest) while ``notebooks.build`` records what each
offers; each page must offer at least as many notebook buttons as it draws Altair charts (live
panels draw nothing until asked), and every recorded notebook is executed with nbclient on the
embedded results, one after the other in one kernel.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from app import notebooks
from app.config import AppConfig

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "data" / "results"


#: Pages whose charts are not precomputed results (the class poll's live histogram).
NOT_PRECOMPUTED = {"60_classroom.py"}
NB_LABEL = "Open in a notebook"


@dataclass
class Offered:
    """A notebook a page offered: its file name, the notebook and the rows it carries."""

    page: str
    name: str
    nb: nbformat.NotebookNode
    df: pd.DataFrame
    spec: notebooks.ChartSpec
    table: str


def _run_pages() -> tuple[dict[str, tuple[int, int]], list[Offered]]:
    """Every page in its default state (AppTest): (charts, notebook buttons) and the notebooks."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    offered: list[Offered] = []
    counts: dict[str, tuple[int, int]] = {}
    real_build = notebooks.build
    page = ""

    def recording_build(df, spec, method, table="metrics_agg", cfg=None):
        nb = real_build(df, spec, method, table, cfg)
        offered.append(Offered(page, spec.title, nb, df.copy(), spec, table))
        return nb

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STAGESCOPE_LIVE_MODELS", "tiny-gpt2")
        mp.setenv("STAGESCOPE_RESULTS_DIR", str(RESULTS))
        mp.setattr(notebooks, "build", recording_build)
        for path in sorted((ROOT / "pages").glob("[0-9][0-9]_*.py")):
            page = path.name
            at = AppTest.from_file(str(path), default_timeout=120).run()
            assert not at.exception, (page, [e.value for e in at.exception])
            n_charts = len(at.get("vega_lite_chart"))
            buttons = [b for b in at.get("download_button") if NB_LABEL in b.proto.label]
            counts[page] = (n_charts, len(buttons))
            st.cache_data.clear()
    return counts, offered


@pytest.fixture(scope="module")
def pages_run():
    """Run every page once for the tests below (about half a minute)."""
    return _run_pages()


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "pages").glob("[0-9][0-9]_*.py")))
def test_every_precomputed_chart_offers_a_notebook(page, pages_run):
    counts, offered = pages_run
    n_charts, n_buttons = counts[page]
    if page in NOT_PRECOMPUTED:
        return
    assert n_buttons >= n_charts, f"{page}: {n_charts} charts, {n_buttons} notebook buttons"
    assert len([o for o in offered if o.page == page]) == n_buttons


def test_every_offered_notebook_runs_headless_and_draws_its_chart(pages_run):
    """All the notebooks the pages offer, executed one after the other in one kernel."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    _, offered = pages_run
    kinds = {o.spec.kind for o in offered}
    assert kinds == {"lines", "heatmap", "bars", "points"}, kinds
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env={**os.environ, "STAGESCOPE_RESULTS_DIR": str(RESULTS)})
    kc = None
    try:
        for o in offered:
            nb = copy.deepcopy(o.nb)
            nbformat.validate(nb)
            nb.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))  # one kernel, fresh names
            nb.cells.append(nbformat.v4.new_code_cell(_checks(o)))
            client = NotebookClient(nb, km=km, timeout=120)
            client.kc = kc
            client.execute()  # raises on any error in any cell
            kc = client.kc
            assert _drawn(nb.cells[4].outputs), (o.page, o.name, nb.cells[4].outputs)
            printed = "".join(x.get("text", "") for x in nb.cells[6].outputs)
            assert f"in {o.table} (" in printed, (o.page, o.name, printed)
    finally:
        if kc is not None:
            kc.stop_channels()
        km.shutdown_kernel(now=True)


def _drawn(outputs) -> bool:
    """Whether a cell displayed an Altair chart (a Vega-Lite bundle, or its HTML embedding)."""
    for out in outputs:
        for mime, value in out.get("data", {}).items():
            if "vegalite" in mime or (mime == "text/html" and "vegaEmbed" in value):
                return True
    return False


def _checks(o: Offered) -> str:
    """A last cell: the notebook's rows are the page's rows, the full table holds at least them."""
    numeric = list(o.df.select_dtypes("number").columns)
    total = float(o.df[numeric].sum().sum()) if numeric else 0.0
    return (
        f"assert len(df) == {len(o.df)}\n"
        f"assert list(df.columns) == {list(o.df.columns)!r}\n"
        f"assert abs(df[{numeric!r}].sum().sum() - {total!r}) <= 1e-9 * max(1, {abs(total)!r})\n"
        "assert len(full) >= 1\n"
        "# the chart drew every row: one of its datasets is df (or df normalised)\n"
        "sizes = [len(v) for v in chart.to_dict().get('datasets', {}).values()]\n"
        f"assert {len(o.df)} in sizes, sizes\n"
    )


def test_hub_notebook_pins_the_revision():
    df = pd.DataFrame(
        {"rel_depth": [0.0, 1.0], "mean": [1.0, 2.0], "ci_lo": [0.5, 1.5], "ci_hi": [1.5, 2.5]}
    ).assign(model="m")
    cfg = AppConfig.from_env(
        {"STAGESCOPE_HF_REPO": "org/stagescope-results", "STAGESCOPE_HF_REVISION": "abc123"}
    )
    nb = notebooks.build(df, notebooks.ChartSpec("y"), "logit_lens", cfg=cfg)
    source = nb.cells[5].source
    assert "hf_hub_download" in source and "'abc123'" in source
    assert "org/stagescope-results@abc123" in nb.cells[0].source


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="lack"):
        notebooks.build(pd.DataFrame({"x": [1]}), notebooks.ChartSpec("y"), "m")


def test_chart_spec_names_what_it_reads():
    with pytest.raises(ValueError, match="kind"):
        notebooks.ChartSpec("y", kind="pie")
    heat = notebooks.ChartSpec("p", kind="heatmap", x="layer:O", y="token", color="p", column="k")
    assert heat.columns() == {"layer", "token", "p", "k"}  # no interval band on a heatmap
    lines = notebooks.ChartSpec("y", dash="lens", y_sort="position")
    assert lines.columns() == {"rel_depth", "mean", "model", "ci_lo", "ci_hi", "lens", "position"}


def test_live_frames_record_model_and_prompt(monkeypatch):
    """A live result downloads with the model and prompt that made it (tiny model)."""
    monkeypatch.setenv("STAGESCOPE_LIVE_MODELS", "tiny-gpt2")
    from app.lens_views import live_lens_frame
    from app.robustness_views import live_intervention, live_table

    prompt = "the cat sat on the mat"
    df = live_lens_frame("tiny-gpt2", prompt, 64)
    assert df.attrs["inputs"] == {"model": "tiny-gpt2", "prompt": prompt}
    res = live_intervention("tiny-gpt2", prompt, "delete block", 0, 64)
    table = live_table(res)
    assert set(table["prompt"]) == {prompt} and set(table["model"]) == {"tiny-gpt2"}


def test_more_live_frames_record_their_inputs(monkeypatch):
    """Attention pattern and RSA: the frames the pages download carry model and text."""
    monkeypatch.setenv("STAGESCOPE_LIVE_MODELS", "tiny-gpt2")
    from app.representation_views import live_rsa_frames
    from app.stages_views import live_pattern_frame

    prompt = "the cat sat on the mat and the dog"
    frame = live_pattern_frame("tiny-gpt2", prompt, 0, 64)["frame"]
    one_head = frame[frame["head"] == 0]  # what the page downloads
    assert one_head.attrs["inputs"] == {"model": "tiny-gpt2", "prompt": prompt}
    text = "\n".join(["The cat sat.", "The dog ran.", "A bird flew.", "Fish swim."])
    text += "\nRain fell.\nKids play.\nSun rose."
    res = live_rsa_frames("tiny-gpt2", text, 64)
    for name in ("rdm", "similarity"):
        assert res[name].attrs["inputs"] == {"model": "tiny-gpt2", "prompt": text}
