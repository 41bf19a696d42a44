"""Layer deletion (METHODS.md C1) and the shared sweep machinery, on the tiny random models."""

from __future__ import annotations

import pytest
import torch

from precompute.methods.layer_ablation import LayerAblationConfig, process, run_one
from precompute.model import interventions as iv
from precompute.model.internals import final_norm, unembed
from precompute.schema import conform
from precompute.types import RunContext

PROMPT = "The cat sat on the mat and the dog sat on the log. Paris is the capital of France."


def _logits(lm, h):
    return unembed(lm, final_norm(lm, h)).float()


@torch.inference_mode()
def test_running_every_block_from_h0_reproduces_the_model(tiny):
    run = iv.normal_run(tiny, tiny.tokenize(PROMPT))
    x = run.states[0][None]
    for j in range(tiny.n_layers):
        x = iv.run_block(tiny, run, j, x)
    hf = tiny.bridge.original_model(run.ids).logits[0]
    torch.testing.assert_close(_logits(tiny, x)[0], hf, atol=1e-4, rtol=0)
    torch.testing.assert_close(run.logits, hf, atol=1e-4, rtol=0)
    torch.testing.assert_close(x[0], run.states[-1], atol=1e-5, rtol=0)


@torch.inference_mode()
def test_deleting_through_hooks_equals_skipping_the_block(tiny):
    ids = tiny.tokenize(PROMPT)
    run = iv.normal_run(tiny, ids)
    for ell in range(tiny.n_layers):
        x = run.states[0][None]
        for j in range(tiny.n_layers):
            if j != ell:
                x = iv.run_block(tiny, run, j, x)
        hooked = iv.reference_logits(tiny, ids, iv.Intervention("delete", ell))
        torch.testing.assert_close(hooked, _logits(tiny, x)[0], atol=1e-4, rtol=0)


def test_fast_sweep_equals_reference(tiny):
    ids = tiny.tokenize(PROMPT)
    ivs = iv.delete_all(tiny.n_layers, iv.COMPONENTS)
    fast = iv.sweep(tiny, ids, ivs, method="fast", chunk_elems=2 * ids.shape[1] * tiny.d_vocab)
    ref = iv.sweep(tiny, ids, ivs, method="reference")
    assert set(fast) == set(iv.METRIC_UNITS)
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k], atol=1e-4, rtol=0)


def test_metric_invariants(tiny):
    ids = tiny.tokenize(PROMPT)
    m = iv.sweep(tiny, ids, iv.delete_all(tiny.n_layers, iv.COMPONENTS))
    assert torch.all(m["kl"] >= 0)
    assert torch.all((m["top1_same"] >= 0) & (m["top1_same"] <= 1))
    torch.testing.assert_close(
        m["delta_entropy"], m["entropy_intervened"] - m["entropy_normal"], atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        m["delta_loss"], m["loss_intervened"] - m["loss_normal"], atol=1e-4, rtol=0
    )
    assert all(torch.isfinite(v).all() for v in m.values())
    assert m["kl"].max() > 1e-3  # deleting a block of a random model changes something


def test_no_op_intervention_gives_kl_zero_and_full_agreement(tiny):
    run = iv.normal_run(tiny, tiny.tokenize(PROMPT))
    m = iv.compare(run.logits, run.logits[None], run.ids[0])
    assert float(m["kl"][0]) == 0.0
    assert float(m["top1_same"][0]) == 1.0
    assert float(m["delta_entropy"][0]) == 0.0
    assert float(m["delta_loss"][0]) == 0.0


def test_two_token_prompt_has_no_loss_rows_and_no_nan(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    ids = lm.tokenize(PROMPT)[:, :2]
    m = iv.sweep(lm, ids, [iv.Intervention("delete", 0)])
    assert "loss_normal" not in m and "kl" in m
    assert all(torch.isfinite(v).all() for v in m.values())


@pytest.mark.parametrize("layer", [-1, 4, 99])
def test_layer_out_of_range_is_a_clear_error(tiny_models, layer):
    lm = tiny_models["tiny-llama"]
    with pytest.raises(ValueError, match="out of range"):
        iv.sweep(lm, lm.tokenize(PROMPT), [iv.Intervention("delete", layer)])


def test_one_token_prompt_is_a_clear_error(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    ids = lm.tokenize(PROMPT)[:, :1]
    with pytest.raises(ValueError, match="at least 2"):
        iv.sweep(lm, ids, [iv.Intervention("delete", 0)])
    with pytest.raises(ValueError, match="at least 2"):
        run_one(lm, "the", LayerAblationConfig(max_tokens=1))


def test_unknown_variant_is_a_clear_error(tiny_models):
    with pytest.raises(ValueError, match="variants"):
        run_one(tiny_models["tiny-gpt2"], PROMPT, LayerAblationConfig(variants="block,heads"))
    with pytest.raises(ValueError, match="component"):
        iv.validate(tiny_models["tiny-gpt2"], iv.Intervention("delete", 0, component="heads"))


def test_process_rows_conform(tiny_models, wikitext_dir):
    from precompute.datasets import load_wikitext

    lm = tiny_models["tiny-neox"]
    items, _ = load_wikitext(wikitext_dir, n=2)
    ctx = RunContext(model=lm.name, method="layer_ablation", dataset="wikitext", run_id="t")
    cfg = LayerAblationConfig(max_tokens=24)
    df = conform("metrics", process(lm, items, cfg, ctx)["metrics"])
    n = lm.n_layers
    assert len(df) == 2 * 3 * n * len(iv.METRIC_UNITS)
    assert set(df["variant"]) == {"block", "attn", "mlp"}
    assert set(df["layer_kind"]) == {"block"} and set(df["position"]) == {-1}
    assert df["rel_depth"].min() == 0.0 and df["rel_depth"].max() == 1.0
    assert df["value"].notna().all()
    assert set(df.loc[df["metric"] == "entropy_normal", "unit"]) == {"bits"}


def test_run_one_rows(tiny_models):
    lm = tiny_models["tiny-llama"]
    df = run_one(lm, PROMPT, LayerAblationConfig(variants="attn"))
    assert set(df["variant"]) == {"attn"} and df["prompt_id"].eq("live").all()
    assert sorted(df["layer"].unique()) == list(range(lm.n_layers))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_real_models_replay_and_fast_equals_reference(name):
    from precompute.model.load import load_model

    lm = load_model(name, device="cpu")
    ids = lm.tokenize("The Eiffel Tower is located in the city of Paris, France.")
    run = iv.normal_run(lm, ids)
    with torch.inference_mode():
        final = iv.final_states_fast(lm, run, [iv.Intervention("swap", 0, other=0)])
        torch.testing.assert_close(_logits(lm, final)[0], run.logits, atol=1e-4, rtol=0)
    last = lm.n_layers - 1
    ivs = [iv.Intervention("delete", ell, c) for ell in (0, last // 2, last) for c in iv.COMPONENTS]
    ivs += [iv.Intervention("swap", ell) for ell in (0, last // 2, last - 1)]
    fast = iv.sweep(lm, ids, ivs, method="fast")
    ref = iv.sweep(lm, ids, ivs, method="reference")
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k], atol=1e-4, rtol=0)
    assert fast["kl"][0] > fast["kl"][3]  # deleting the first block hurts more than a middle one


def test_bench_reports_its_figures(wikitext_dir, monkeypatch):
    from types import SimpleNamespace

    from precompute.bench import layer_sweep

    monkeypatch.setattr(layer_sweep, "matmul_peak_flops", lambda *a, **k: 1e9)
    out = layer_sweep.run("tiny-gpt2", SimpleNamespace(device="cpu", data_dir=wikitext_dir))
    assert out["dataset"] == "wikitext" and out["n_interventions"] == 4 + 3
    assert out["max_abs_diff"] <= 1e-4
    assert out["reference_seconds"] > 0 and out["fast_seconds"] > 0
    assert out["speedup"] > 0 and out["fraction_of_peak"] > 0


@pytest.mark.parametrize(
    ("action", "method", "variant"),
    [
        ("delete block", "layer_ablation", "block"),
        ("delete MLP only", "layer_ablation", "mlp"),
        ("swap with next block", "layer_swap", "adjacent"),
    ],
)
def test_live_panel_equals_precompute_table(action, method, variant, tiny_models, monkeypatch):
    """Page 21's live intervention and the precomputed table give the same numbers."""
    from app import live, robustness_views
    from precompute.methods import get_method
    from precompute.types import Item

    lm = tiny_models["tiny-neox"]
    monkeypatch.setattr(live, "get_model", lambda name: lm)
    m = get_method(method)
    cfg = m.config_cls(max_tokens=16)
    ctx = RunContext(model=lm.name, method=method, dataset="wikitext")
    table = conform("metrics", m.process(lm, [Item("d-1", PROMPT)], cfg, ctx)["metrics"])
    table = table[table["variant"] == variant].set_index(["metric", "layer"])["value"]
    for layer in range(lm.n_layers - (method == "layer_swap")):
        res = robustness_views.live_intervention(lm.name, PROMPT, action, layer, max_tokens=16)
        assert res["kl_mean"] == table["kl", layer]
        assert res["top1_same"] == table["top1_same", layer]
