import math

import pytest
import torch

from precompute.lenses.readout import lens_from_states
from precompute.methods.lens_entropy import (
    LensEntropyConfig,
    both_entropies,
    doc_entropy,
    entropy_bits,
    process,
    run_one,
    scale_shortcut_ok,
    state_entropy,
)
from precompute.model.internals import residual_states
from precompute.types import Item, RunContext

PROMPT = "The Eiffel Tower is located in the city of Paris, in France."


def test_uniform_logits_give_log2_v():
    for v in (2, 320, 50000):
        assert float(entropy_bits(torch.zeros(3, v))[0]) == pytest.approx(math.log2(v), rel=1e-5)


def test_one_hot_and_clamp():
    z = torch.tensor([[0.0, -1e4, -1e4]])
    assert float(entropy_bits(z)) == pytest.approx(0.0, abs=1e-6)
    z = torch.tensor([[0.0, -25.0, -25.0, -25.0]])  # p ~ 1.4e-11 < 1e-9: clamped
    p = torch.softmax(z, -1)[0]
    want = -(p[0] * p[0].log2() + 3 * p[1] * math.log2(1e-9))
    assert float(entropy_bits(z)) == pytest.approx(float(want), rel=1e-5)


def test_uniform_lens_on_a_model(tiny_models):
    """tiny-llama: RMSNorm of a zero state is zero and there is no unembedding bias."""
    lm = tiny_models["tiny-llama"]
    states = torch.zeros(3, 5, lm.d_model)
    states[-1] = torch.randn(5, lm.d_model)  # the final scale must be defined
    for variant in ("recompute_ln", "cached_final_scale"):
        h = state_entropy(lm, states, variant)
        torch.testing.assert_close(h[:2], torch.full((2, 5), math.log2(lm.d_vocab)))


def test_variants_agree_at_the_last_state(tiny):
    h = doc_entropy(tiny, tiny.tokenize(PROMPT))
    assert h["recompute_ln"].shape == (tiny.n_layers + 1,)
    assert float(h["recompute_ln"][-1]) == pytest.approx(
        float(h["cached_final_scale"][-1]), abs=1e-4
    )
    assert (h["recompute_ln"][:-1] - h["cached_final_scale"][:-1]).abs().max() > 1e-3
    assert torch.all(h["recompute_ln"] <= math.log2(tiny.d_vocab) + 1e-4)


@pytest.mark.parametrize("variant", ["recompute_ln", "cached_final_scale"])
def test_same_readout_as_the_logit_lens(tiny, variant):
    """Exact entropy (clamp 0) in bits = the logit lens's entropy in nats / ln 2."""
    ids = tiny.tokenize(PROMPT)
    states, logits = residual_states(tiny, ids)
    ours = state_entropy(tiny, states, variant, clamp=0.0)
    lens = lens_from_states(tiny, states, logits, ids[0], variant=variant).entropy / math.log(2)
    torch.testing.assert_close(ours, lens, atol=1e-4, rtol=1e-4)
    clamped = state_entropy(tiny, states, variant, clamp=1e-9, chunk_elems=1)  # one state a chunk
    assert (clamped - ours).abs().max() < 1e-3


def test_positions_and_characters(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    cfg = LensEntropyConfig(max_chars=30)
    ids = lm.tokenize(PROMPT[:30])
    states, _ = residual_states(lm, ids)
    want = state_entropy(lm, states, "recompute_ln")[:, 1:-1].mean(-1)
    got = run_one(lm, PROMPT, cfg)
    got = got[got["variant"] == "recompute_ln"].sort_values("layer")["value"].to_numpy()
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float32), want, atol=1e-5, rtol=1e-5)


def test_process_and_bad_input(tiny_models):
    lm = tiny_models["tiny-neox"]
    ctx = RunContext(lm.name, "lens_entropy", "wikitext", "r1")
    out = process(lm, [Item("a", PROMPT), Item("b", "x")], LensEntropyConfig(), ctx)["metrics"]
    assert set(out["prompt_id"]) == {"a"}
    assert len(out) == 2 * (lm.n_layers + 1)
    assert set(out["unit"]) == {"bits"} and out["value"].notna().all()
    assert out["rel_depth"].max() == 1.0
    with pytest.raises(ValueError, match="at least 3"):
        run_one(lm, "x", LensEntropyConfig())
    with pytest.raises(ValueError, match="variant"):
        process(lm, [], LensEntropyConfig(variant="tuned"), ctx)


def test_one_unembedding_shortcut_is_exact(tiny):
    states, _ = residual_states(tiny, tiny.tokenize(PROMPT))
    fast = both_entropies(tiny, states, chunk_elems=1)
    assert scale_shortcut_ok(tiny) == (tiny.name == "tiny-llama")  # RMSNorm, no biases
    for v, e in fast.items():
        torch.testing.assert_close(e, state_entropy(tiny, states, v), atol=1e-4, rtol=1e-4)
