import math

import pytest
import torch

from precompute.lenses.readout import lens_from_states, lens_readout
from precompute.methods.logit_lens import LogitLensConfig, run_one
from precompute.model.internals import final_norm, residual_states, unembed

PROMPT = "The Eiffel Tower is located in the city of Paris"


@torch.inference_mode()
def test_lens_of_last_state_equals_model_logits(tiny):
    ids = tiny.tokenize(PROMPT)
    states, logits = residual_states(tiny, ids)
    hf = tiny.bridge.original_model(ids).logits[0]
    assert states.shape == (tiny.n_layers + 1, ids.shape[1], tiny.d_model)
    torch.testing.assert_close(unembed(tiny, final_norm(tiny, states[-1])), hf, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, hf, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["recompute_ln", "cached_final_scale"])
def test_invariants(tiny, variant):
    r = lens_readout(tiny, tiny.tokenize(PROMPT), variant=variant)
    assert torch.all(r.kl >= 0)
    assert torch.allclose(r.kl[-1], torch.zeros_like(r.kl[-1]), atol=1e-5)
    assert torch.allclose(r.ce_final[-1], r.entropy[-1], atol=1e-4)  # CE = H(final) at i = L
    assert torch.all(r.entropy <= math.log(tiny.d_vocab) + 1e-4)
    assert torch.all(r.rank_final[-1] == 1)
    assert torch.all(r.top1_matches_final[-1])
    assert torch.all(r.topk_probs[..., :-1] >= r.topk_probs[..., 1:])
    assert torch.isnan(r.ce_next[:, -1]).all() and torch.isfinite(r.ce_next[:, :-1]).all()


def test_variants_agree_only_at_the_last_state(tiny):
    ids = tiny.tokenize(PROMPT)
    a = lens_readout(tiny, ids, variant="recompute_ln")
    b = lens_readout(tiny, ids, variant="cached_final_scale")
    torch.testing.assert_close(a.entropy[-1], b.entropy[-1], atol=1e-5, rtol=0)
    assert (a.entropy[:-1] - b.entropy[:-1]).abs().max() > 1e-3


@torch.inference_mode()
def test_cached_final_scale_matches_old_transformerlens_formula(tiny_models):
    """TL < 2.18: centre each state, divide by the final state's LN scale, then weight and bias."""
    lm = tiny_models["tiny-gpt2"]
    states, _ = residual_states(lm, lm.tokenize(PROMPT))
    ln = lm.bridge.ln_final.original_component
    final = states[-1]
    scale = (final.var(-1, keepdim=True, unbiased=False) + ln.eps).sqrt()
    h = states[2]
    expected = (h - h.mean(-1, keepdim=True)) / scale * ln.weight + ln.bias
    got = final_norm(lm, states[2:3], "cached_final_scale", final_state=final)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_metrics_do_not_change_when_all_logits_shift(tiny):
    ids = tiny.tokenize(PROMPT)
    states, logits = residual_states(tiny, ids)
    a = lens_from_states(tiny, states, logits, ids[0])
    b = lens_from_states(tiny, states, logits + 7.5, ids[0])
    torch.testing.assert_close(a.kl, b.kl, atol=1e-5, rtol=0)
    assert torch.equal(a.rank_final, b.rank_final)


def test_chunking_does_not_change_results(tiny):
    ids = tiny.tokenize(PROMPT)
    states, logits = residual_states(tiny, ids)
    a = lens_from_states(tiny, states, logits, ids[0], chunk_elems=1)
    b = lens_from_states(tiny, states, logits, ids[0], chunk_elems=2**30)
    torch.testing.assert_close(a.kl, b.kl)
    assert torch.equal(a.topk_ids, b.topk_ids)


def test_run_one_rows(tiny):
    df = run_one(tiny, PROMPT, LogitLensConfig())
    assert {"layer", "position", "metric", "value", "token"} <= set(df.columns)
    assert {"kl_to_final", "entropy", "top1_prob"} <= set(df["metric"])
    n_tok = tiny.tokenize(PROMPT).shape[1]
    assert len(df[df.metric == "entropy"]) == (tiny.n_layers + 1) * n_tok
    assert df["position"].between(0, n_tok - 1).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
@torch.inference_mode()
def test_real_models_lens_and_prediction(name):
    from precompute.model.load import load_model

    lm = load_model(name, device="cpu")
    ids = lm.tokenize("The Eiffel Tower is located in the city of")
    states, logits = residual_states(lm, ids)
    hf = lm.bridge.original_model(ids).logits[0]
    torch.testing.assert_close(unembed(lm, final_norm(lm, states[-1])), hf, atol=1e-4, rtol=1e-4)
    r = lens_from_states(lm, states, logits, ids[0])
    assert lm.tokenizer.decode([int(r.final_ids[-1])]) == " Paris"
    assert torch.all(r.kl >= 0) and r.kl[-1].abs().max() < 1e-4
    assert lm.provenance["quantization"].startswith("dequantised from GGUF")


def test_live_panel_and_precompute_give_the_same_numbers(tiny_models):
    """The lens page's live frame (run_one) and the stored rows (process) agree for one prompt."""
    from precompute.methods.logit_lens import process
    from precompute.types import Item, RunContext

    lm = tiny_models["tiny-llama"]
    cfg = LogitLensConfig(max_tokens=16)
    live = run_one(lm, PROMPT, cfg)
    item = [Item("p0", PROMPT)]
    stored = process(lm, item, cfg, RunContext(lm.name, "logit_lens", "examples"))["metrics"]
    cells = stored[stored["position"] >= 0]
    for metric in ("kl_to_final", "entropy", "top1_prob"):
        a = live[live.metric == metric].set_index(["layer", "position"])["value"].sort_index()
        b = cells[cells.metric == metric].set_index(["layer", "position"])["value"].sort_index()
        assert len(a) == len(b) > 0
        assert (a - b).abs().max() == 0.0, metric
    docs = process(lm, item, cfg, RunContext(lm.name, "logit_lens", "wikitext"))["metrics"]
    doc_kl = docs[docs.metric == "kl_to_final"].set_index("layer")["value"]
    live_kl = live[(live.metric == "kl_to_final") & (live.position >= 1)]
    mean_kl = live_kl.groupby("layer")["value"].mean()
    assert (doc_kl - mean_kl).abs().max() < 1e-6
