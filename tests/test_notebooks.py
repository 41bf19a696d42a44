"""Generated notebooks run headless (nbclient) on the embedded results and draw their chart."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from app import notebooks
from app.config import AppConfig

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "data" / "results"


def _frames() -> dict[str, tuple[pd.DataFrame, notebooks.ChartSpec, str]]:
    """The rows of five precomputed page charts, as the pages query them."""
    from app.facts_views import group_curves
    from app.flow_views import knockout_curves
    from app.lens_views import curve_frame
    from app.representation_views import id_curves
    from app.robustness_views import depth_frame

    spec = notebooks.ChartSpec
    return {
        "logit_lens": (
            curve_frame("kl_to_final", ["smollm2-135m", "gemma3-270m"]),
            spec("KL (nats)", "Logit lens", y_scale="symlog"),
            "logit_lens",
        ),
        "delete_swap": (
            depth_frame("kl"),
            spec("KL (nats)", "Delete or swap", dash="intervention"),
            "layer_ablation",
        ),
        "causal_tracing": (
            group_curves("mlp", "facts", ["last_subject", "last"]),
            spec("indirect effect", "Where are facts stored?", dash="token group"),
            "causal_tracing",
        ),
        "knockout": (
            knockout_curves("facts", "W9"),
            spec("relative change (%)", "When is the fact moved?", dash="edges"),
            "attention_knockout",
        ),
        "intrinsic_dimension": (
            id_curves("twonn", "mean", "wikitext", "1/1"),
            spec("intrinsic dimension", "Intrinsic dimension"),
            "intrinsic_dimension",
        ),
    }


def test_notebooks_execute_and_draw_their_chart():
    from nbclient import NotebookClient

    cfg = AppConfig.from_env({"STAGESCOPE_RESULTS_DIR": str(RESULTS)})
    for name, (df, spec, method) in _frames().items():
        assert not df.empty, name
        nb = notebooks.build(df, spec, method, cfg=cfg)
        nbformat.validate(nb)
        # the notebook's own rows must be the page's rows
        nb.cells.append(
            nbformat.v4.new_code_cell(
                f"assert len(df) == {len(df)}\n"
                f"assert abs(df['mean'].sum() - {float(df['mean'].sum())!r}) < 1e-6\n"
                f"assert len(full) >= len(df)"
            )
        )
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()  # raises on any error
        chart_out = nb.cells[3].outputs
        assert any(
            any("vegalite" in mime or mime == "text/html" for mime in out.get("data", {}))
            for out in chart_out
        ), (name, chart_out)
        printed = "".join(o.get("text", "") for o in nb.cells[5].outputs)
        assert f"rows of {method} in metrics_agg" in printed, (name, printed)


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
