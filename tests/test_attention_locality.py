import math

import pytest
import torch

from precompute.methods.attention_locality import (
    AttentionLocalityConfig,
    attention_pattern,
    layer_locality,
    locality_stats,
    process,
    run_one,
)
from precompute.types import Item, RunContext

PROMPT = "The cat sat on the mat and the dog sat on the log near Paris in France."


def brute_force(a: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Loops over heads, queries and offsets, straight from the METHODS.md D1 wording."""
    h, t, _ = a.shape
    entries, masses = [], []
    for head in range(h):
        for q in range(t):
            for d in range(1, k + 1):
                if q - d >= 0:
                    entries.append(float(a[head, q, q - d]))
            if q >= k + 1:
                masses.append(sum(float(a[head, q, q - d]) for d in range(1, k + 1)))
    return sum(entries) / len(entries), sum(masses) / len(masses)


def random_causal_pattern(h: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(h, t, t, generator=g)
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(-1)


@pytest.mark.parametrize("t", [7, 12, 40])
def test_previous_token_pattern(t):
    a = torch.zeros(3, t, t)
    a[:, 0, 0] = 1.0
    for q in range(1, t):
        a[:, q, q - 1] = 1.0
    s = locality_stats(a, 5)
    assert s["prev5_mass_fraction"] == pytest.approx(1.0)
    assert s["prev5_mean_weight"] == pytest.approx((t - 1) / (5 * t - 15))


def test_uniform_causal_pattern_closed_form():
    t = 20
    a = torch.ones(t, t).tril()
    a = (a / a.sum(-1, keepdim=True))[None]  # (1, T, T): A[q, k] = 1/(q+1)
    s = locality_stats(a, 5)
    mean = sum(1 / (q + 1) for d in range(1, 6) for q in range(d, t)) / (5 * t - 15)
    mass = sum(5 / (q + 1) for q in range(6, t)) / (t - 6)
    assert s["prev5_mean_weight"] == pytest.approx(mean)
    assert s["prev5_mass_fraction"] == pytest.approx(mass)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_agrees_with_brute_force_loops(k):
    a = random_causal_pattern(4, 17, seed=k)
    s = locality_stats(a, k)
    mean, mass = brute_force(a, k)
    assert s["prev5_mean_weight"] == pytest.approx(mean, rel=1e-5)
    assert s["prev5_mass_fraction"] == pytest.approx(mass, rel=1e-5)


def test_short_pattern_has_no_mass_fraction():
    s = locality_stats(random_causal_pattern(2, 6), 5)
    assert math.isnan(s["prev5_mass_fraction"])
    assert math.isfinite(s["prev5_mean_weight"])


def test_bad_pattern_shape():
    with pytest.raises(ValueError, match="heads, T, T"):
        locality_stats(torch.zeros(4, 5), 5)


def test_hook_reduction_matches_cached_patterns(tiny):
    ids = tiny.tokenize(PROMPT)
    stats = layer_locality(tiny, ids)
    assert len(stats) == tiny.n_layers
    for layer, s in enumerate(stats):
        a = attention_pattern(tiny, ids, layer)
        assert torch.allclose(a.sum(-1), torch.ones(()), atol=1e-5)
        mean, mass = brute_force(a)
        assert s["prev5_mean_weight"] == pytest.approx(mean, rel=1e-5)
        assert s["prev5_mass_fraction"] == pytest.approx(mass, rel=1e-5)
        assert 0 <= s["prev5_mass_fraction"] <= 1


def test_process_rows(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    ctx = RunContext(lm.name, "attention_locality", "wikitext", "r1")
    items = [Item("a", PROMPT), Item("short", "the cat")]
    out = process(lm, items, AttentionLocalityConfig(), ctx)["metrics"]
    assert set(out["prompt_id"]) == {"a"}  # the two-token document is skipped
    assert len(out) == 2 * lm.n_layers
    assert set(out["metric"]) == {"prev5_mean_weight", "prev5_mass_fraction"}
    assert out["rel_depth"].max() == 1.0 and out["value"].notna().all()


def test_layer_out_of_range_and_short_prompt(tiny_models):
    lm = tiny_models["tiny-llama"]
    with pytest.raises(ValueError, match="out of range"):
        attention_pattern(lm, lm.tokenize(PROMPT), lm.n_layers)
    with pytest.raises(ValueError, match="at least"):
        run_one(lm, "cat", AttentionLocalityConfig())


def test_live_pattern_statistics_equal_the_stored_rows(tiny_models):
    """The stage page's live panel reads one layer's pattern; its statistics equal process()."""
    lm = tiny_models["tiny-neox"]
    cfg = AttentionLocalityConfig(max_tokens=32)
    ctx = RunContext(lm.name, "attention_locality", "wikitext")
    stored = process(lm, [Item("p0", PROMPT)], cfg, ctx)["metrics"]
    ids = lm.tokenize(PROMPT, max_tokens=cfg.max_tokens)
    for layer in range(lm.n_layers):
        live = locality_stats(attention_pattern(lm, ids, layer), cfg.top_k)
        rows = stored[stored.layer == layer].set_index("metric")["value"]
        for metric, value in live.items():
            assert rows[metric] == pytest.approx(value, rel=1e-6, abs=1e-9), (layer, metric)
