"""RSA (METHODS.md E3): RDM symmetry and zero diagonal, self-similarity 1, rotation invariance,
Spearman equals scipy's, cross-model comparison from stored rows, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from precompute.methods import rsa
from precompute.methods.rsa import (
    RSAConfig,
    cross_model_similarity,
    layer_similarity,
    rdm,
    resample_to_grid,
    spearman,
    upper,
)
from precompute.model.load import load_model
from precompute.schema import conform
from precompute.types import Item, RunContext


def rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal matrix."""
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("distance", rsa.DISTANCES)
@pytest.mark.parametrize("norm", rsa.NORMALISATIONS)
def test_rdm_symmetric_zero_diagonal(distance, norm):
    x = np.random.default_rng(0).normal(size=(12, 7))
    r = rdm(x, distance, norm)
    assert r.shape == (12, 12)
    np.testing.assert_allclose(r, r.T, atol=0)
    assert (np.diag(r) == 0).all()
    assert (upper(r) > 0).all()


def test_rdm_matches_definition():
    x = np.random.default_rng(1).normal(size=(6, 4))
    cos = (x @ x.T) / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(rdm(x), 1 - cos - np.diag(np.diag(1 - cos)), atol=1e-12)
    np.testing.assert_allclose(upper(rdm(x, "correlation")), upper(1 - np.corrcoef(x)), atol=1e-12)


def test_rotated_and_rescaled_copy_has_rsa_one():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 16))
    y = (x @ rotation(16, rng)) * rng.uniform(0.5, 3.0, size=(20, 1))  # rotate, scale per stimulus
    np.testing.assert_allclose(rdm(x), rdm(y), atol=1e-10)
    sim = layer_similarity(np.stack([rdm(x)]), np.stack([rdm(y)]))
    assert sim[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_layer_similarity_self_is_one_and_symmetric():
    rng = np.random.default_rng(3)
    rdms = np.stack([rdm(rng.normal(size=(10, 5))) for _ in range(4)])
    sim = layer_similarity(rdms)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-12)
    np.testing.assert_allclose(sim, sim.T, atol=1e-12)
    assert sim[0, 1] == pytest.approx(spearmanr(upper(rdms[0]), upper(rdms[1])).statistic)


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(4)
    a = rng.normal(size=200)
    b = a + rng.normal(size=200)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    a_t, b_t = np.round(a), np.round(b)  # many ties
    assert spearman(a_t, b_t) == pytest.approx(spearmanr(a_t, b_t).statistic, abs=1e-12)


def test_resample_to_grid_identity_and_corners():
    sim = np.arange(12.0).reshape(3, 4)
    da, db = np.array([0.0, 0.5, 1.0]), np.array([0.0, 1 / 3, 2 / 3, 1.0])
    out = resample_to_grid(sim, da, db, [0.0, 1.0])
    np.testing.assert_allclose(out, [[0.0, 3.0], [8.0, 11.0]])
    np.testing.assert_allclose(resample_to_grid(sim[:, :3], da, da, da), sim[:, :3])


def test_bad_inputs_give_clear_errors():
    x = np.random.default_rng(5).normal(size=(6, 3))
    with pytest.raises(ValueError, match="at least 4"):
        rdm(x[:3])
    with pytest.raises(ValueError, match="[Dd]uplicate"):
        rdm(np.concatenate([x, x[:1]]))
    with pytest.raises(ValueError, match="all zeros"):
        rdm(np.concatenate([x, np.zeros((1, 3))]))
    with pytest.raises(ValueError, match="constant"):
        rdm(np.concatenate([x, np.ones((1, 3))]), "correlation")
    with pytest.raises(ValueError, match="Unknown distance"):
        rdm(x, "euclid")
    with pytest.raises(ValueError, match="all-equal"):
        spearman(np.ones(5), np.arange(5.0))


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-gpt2")


SENTENCES = [
    "The cat sat on the mat.",
    "Paris is the capital of France.",
    "Water boils at one hundred degrees.",
    "The dog sat on the log.",
    "Rome is the capital of Italy.",
    "Ice melts in the sun.",
    "The Eiffel Tower is in Paris.",
]


def test_process_and_cross_model_on_tiny_models(lm):
    items = [Item(f"s{i:02d}", t) for i, t in reversed(list(enumerate(SENTENCES)))]
    cfg = RSAConfig()
    ctx = RunContext("tiny-gpt2", "rsa", "test", "r0")
    out = rsa.process(lm, items, cfg, ctx)
    rdm_df, sim_df = conform("rdm", out["rdm"]), conform("similarity", out["similarity"])
    s = lm.n_layers + 1
    n = len(SENTENCES)
    assert len(rdm_df) == s * n * (n - 1) // 2
    assert (rdm_df["stimulus_a"] < rdm_df["stimulus_b"]).all()  # sorted ids, strict upper
    assert len(sim_df) == s * s and np.isfinite(sim_df["value"]).all()
    diag = sim_df[sim_df["layer_a"] == sim_df["layer_b"]]["value"]
    np.testing.assert_allclose(diag, 1.0, atol=1e-9)
    # the stored rows of a model against themselves reproduce the within-model matrix
    cross = cross_model_similarity(rdm_df, rdm_df)
    merged = cross.merge(sim_df, on=["layer_a", "layer_b"], suffixes=("", "_stored"))
    np.testing.assert_allclose(merged["value"], merged["value_stored"], atol=1e-9)
    # another architecture on the same stimuli: (L_A+1) x (L_B+1) rows, finite, on shared ids
    other = load_model("tiny-llama")
    ctx_b = RunContext("tiny-llama", "rsa", "test", "r1")
    rdm_b = rsa.process(other, items[:5], cfg, ctx_b)["rdm"]
    cross_ab = cross_model_similarity(rdm_df, rdm_b)
    assert len(cross_ab) == s * (other.n_layers + 1)
    assert (cross_ab["n_stimuli"] == 5).all() and np.isfinite(cross_ab["value"]).all()
    three = {"s02", "s03", "s04"}
    few = rdm_b[rdm_b["stimulus_a"].isin(three) & rdm_b["stimulus_b"].isin(three)]
    with pytest.raises(ValueError, match="share 3 stimuli"):
        cross_model_similarity(rdm_df, few)


def test_duplicate_and_too_few_stimuli(lm):
    cfg = RSAConfig()
    with pytest.raises(ValueError, match="identical"):
        rsa.live_rsa(lm, SENTENCES[:5] + SENTENCES[:1], cfg)
    with pytest.raises(ValueError, match="at least 4"):
        rsa.live_rsa(lm, SENTENCES[:3], cfg)
    ctx = RunContext("tiny-gpt2", "rsa", "test", "r0")
    items = [Item(f"s{i}", SENTENCES[i % 4]) for i in range(6)]
    with pytest.raises(ValueError, match="Duplicate stimuli"):
        rsa.process(lm, items, cfg, ctx)


def test_run_one_lines(lm):
    df = rsa.run_one(lm, "\n".join(SENTENCES[:6]), RSAConfig())
    assert len(df) == (lm.n_layers + 1) ** 2
    assert df["n_stimuli"].eq(6).all()


def test_live_rsa_and_precompute_give_the_same_similarity():
    """The RSA page's live panel (live_rsa) and the stored similarity (process) agree."""
    lm = load_model("tiny-gpt2")
    sents = [
        "The cat sat on the mat.",
        "A dog slept by the door.",
        "Paris is the capital of France.",
        "Water boils at one hundred degrees.",
        "The train left the station early.",
        "She wrote a letter to her friend.",
    ]
    cfg = RSAConfig(max_tokens=16)
    live = rsa.live_rsa(lm, sents, cfg)
    items = [Item(f"s{i:02d}", s) for i, s in enumerate(sents)]
    out = rsa.process(lm, items, cfg, RunContext(lm.name, "rsa", "t"))
    stored = out["similarity"].pivot(index="layer_a", columns="layer_b", values="value")
    np.testing.assert_allclose(stored.to_numpy(), live.similarity, rtol=0, atol=1e-12)
