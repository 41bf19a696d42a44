"""The four stage-signature methods on a real offline model (one load, one short prompt)."""

import math

import pytest
import torch

from precompute.methods.attention_locality import attention_pattern, layer_locality
from precompute.methods.component_norms import HOOKS, layer_summary, token_norms
from precompute.methods.lens_entropy import doc_entropy
from precompute.methods.neurons import layer_neurons, unembedding_directions

pytestmark = pytest.mark.slow

PROMPT = "The Eiffel Tower is located in the city of Paris, which is the capital of France."


@pytest.fixture(scope="module")
def smol():
    from precompute.model.load import load_model

    try:
        return load_model("smollm2-135m", device="cpu")
    except FileNotFoundError as err:
        pytest.skip(f"offline model not installed: {err}")


def test_locality_and_patterns(smol):
    ids = smol.tokenize(PROMPT)
    stats = layer_locality(smol, ids)
    assert len(stats) == smol.n_layers == 30
    for s in stats:
        assert 0 <= s["prev5_mass_fraction"] <= 1 + 1e-6
        assert 0 <= s["prev5_mean_weight"] <= 1 + 1e-6
    a = attention_pattern(smol, ids, 0)
    assert a.shape[0] == 9  # query heads, even with grouped-query attention
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:2]), atol=1e-4, rtol=0)


def test_writes_add_up_and_norms(smol):
    ids = smol.tokenize(PROMPT)
    names = {t.format(i=i) for t in HOOKS.values() for i in (0, 29)}
    names |= {f"blocks.{i}.hook_resid_{s}" for i in (0, 29) for s in ("pre", "post")}
    with smol.lock:
        _, cache = smol.bridge.run_with_cache(ids, names_filter=lambda n: n in names)
    for i in (0, 29):
        got = (
            cache[f"blocks.{i}.hook_resid_pre"]
            + cache[HOOKS["attn"].format(i=i)]
            + cache[HOOKS["mlp"].format(i=i)]
        )
        post = cache[f"blocks.{i}.hook_resid_post"]
        assert (got - post).abs().max() <= 1e-4 * max(1.0, float(post.abs().max()))
    s = layer_summary(token_norms(smol, ids))
    assert torch.isfinite(s["ratio_of_means"]).all() and (s["mlp_out_norm"] > 0).all()


def test_last_layer_neurons(smol):
    stats = layer_neurons(smol, smol.n_layers - 1, unembedding_directions(smol))
    assert len(stats["vocab_kurt"]) == 1536
    assert torch.isfinite(stats["vocab_kurt"]).all()
    assert float(stats["vocab_kurt"].median()) > 2.0  # roughly Gaussian bulk


def test_lens_entropy(smol):
    h = doc_entropy(smol, smol.tokenize(PROMPT))
    top = math.log2(smol.d_vocab)
    for v in h.values():
        assert torch.all(v >= 0) and torch.all(v <= top + 1e-3)
    assert float(h["recompute_ln"][-1]) == pytest.approx(
        float(h["cached_final_scale"][-1]), abs=1e-3
    )
