"""Skean et al. representation-quality metrics (METHODS.md E4): the analytic checks."""

from __future__ import annotations

import numpy as np
import pytest

from precompute.methods.representation_quality import QualityConfig, augment, process, views_of
from precompute.model.load import load_model
from precompute.stats.matrix import (
    DegenerateError,
    curvature,
    dime,
    entropy_from_eigs,
    gram_eigs,
    infonce,
    lidar,
    normalised_entropy,
    preprocess,
)
from precompute.types import Item, RunContext


def _rot(d: int, seed: int = 0) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


@pytest.mark.parametrize("t", [2, 5, 17])
def test_entropy_of_equal_eigenvalues_is_log_t(t):
    assert entropy_from_eigs(np.full(t, 3.0)) == pytest.approx(np.log(t), abs=1e-12)
    assert entropy_from_eigs(np.full(t, 3.0), alpha=2.0) == pytest.approx(np.log(t), abs=1e-12)


def test_rank_one_data_has_zero_entropy():
    rng = np.random.default_rng(0)
    z = np.outer(rng.normal(size=8), rng.normal(size=30))  # rank 1
    assert entropy_from_eigs(gram_eigs(z)) == pytest.approx(0.0, abs=1e-9)


def test_orthonormal_rows_after_centring_give_log_t_minus_one():
    t, d = 6, 20
    z = (np.eye(t) * 5.0) @ _rot(d)[:t] + 3.0  # orthogonal, equal-norm rows, shifted
    raw, norm = normalised_entropy(z)
    assert raw == pytest.approx(np.log(t - 1), abs=1e-9)
    assert norm == pytest.approx(np.log(t - 1) / np.log(t), abs=1e-9)


def test_renyi_entropy_is_continuous_at_alpha_one():
    eigs = np.random.default_rng(1).uniform(size=12)
    s1 = entropy_from_eigs(eigs, 1.0)
    assert entropy_from_eigs(eigs, 1.0 + 1e-4) == pytest.approx(s1, abs=1e-3)
    assert entropy_from_eigs(eigs, 1.0 - 1e-4) == pytest.approx(s1, abs=1e-3)


def test_gram_and_covariance_spectra_give_the_same_entropy():
    z = np.random.default_rng(2).normal(size=(7, 40))
    gram = np.linalg.eigvalsh(z @ z.T)
    cov = np.linalg.eigvalsh(z.T @ z)
    assert entropy_from_eigs(gram) == pytest.approx(entropy_from_eigs(cov), abs=1e-9)
    tall = np.random.default_rng(3).normal(size=(40, 7))  # T > D uses Z^T Z
    assert entropy_from_eigs(gram_eigs(tall)) == pytest.approx(
        entropy_from_eigs(np.linalg.eigvalsh(tall @ tall.T)), abs=1e-9
    )


def test_curvature_of_collinear_equally_spaced_points_is_zero():
    v = np.random.default_rng(4).normal(size=50)
    z = np.arange(10)[:, None] * v + 2.0
    assert curvature(z) == pytest.approx(0.0, abs=1e-6)


def test_curvature_of_iid_gaussian_points_is_two_pi_over_three():
    z = np.random.default_rng(5).normal(size=(200, 4000))
    assert curvature(z) == pytest.approx(2 * np.pi / 3, abs=0.02)


def test_curvature_needs_three_points():
    with pytest.raises(DegenerateError, match="T >= 3"):
        curvature(np.zeros((2, 5)))


def test_infonce_lower_for_identical_than_unrelated_views():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(32, 64))
    same = infonce(a, a.copy())
    unrelated = infonce(a, rng.normal(size=(32, 64)))
    assert same < 0.1 < np.log(2 * 32 - 1) - 1 < unrelated


def test_dime_zero_for_independent_views_positive_for_identical():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(40, 5))
    indep = dime(a, rng.normal(size=(40, 5)), n_perm=10)
    ident = dime(a, a.copy(), n_perm=10)
    assert abs(indep) < 0.05
    assert ident > 0.2


def test_lidar_rank_one_between_class_scatter_is_zero():
    rng = np.random.default_rng(8)
    n, a, d = 10, 6, 12
    means = np.outer(rng.normal(size=n), rng.normal(size=d))  # class means on a line
    views = means[:, None] + 0.1 * rng.normal(size=(n, a, d))
    views -= views.mean(1, keepdims=True) - means[:, None]  # exact class means
    raw, norm = lidar(views)
    assert raw == pytest.approx(0.0, abs=1e-6) and norm == pytest.approx(0.0, abs=1e-6)
    spread = rng.normal(size=(n, 1, d)) + 0.1 * rng.normal(size=(n, a, d))
    assert lidar(spread)[0] > 1.0


def test_constant_representations_raise_a_clear_message():
    with pytest.raises(DegenerateError, match="constant"):
        preprocess(np.ones((5, 8)))
    with pytest.raises(DegenerateError, match="constant"):
        entropy_from_eigs(np.zeros(4))
    with pytest.raises(DegenerateError, match="zeros"):
        infonce(np.zeros((3, 4)), np.zeros((3, 4)))
    assert issubclass(DegenerateError, ValueError)


def test_augment_is_deterministic_and_changes_text():
    text = "The Eiffel Tower is located in the city of Paris"
    assert augment(text, 3) == augment(text, 3)
    views = {augment(text, s) for s in range(8)}
    assert len(views) > 4 and text not in views
    items = [Item("a", text), Item("b", "Water boils at one hundred degrees")]
    v = views_of(items, 3)
    assert len(v) == 6 and v == views_of(items, 3)


def test_process_tiny_model_no_nans_and_every_metric():
    lm = load_model("tiny-llama")
    texts = [
        "The cat sat on the mat and the dog sat on the log.",
        "Paris is the capital of France. Rome is the capital of Italy.",
        "The Eiffel Tower is located in the city of Paris.",
        "Water boils at one hundred degrees. Ice melts in the sun.",
        "Stagescope shows how a language model uses its depth.",
        "the the the the the",  # repeated tokens: constant rows at h_0 are skipped, not NaN
    ]
    items = [Item(f"p{i}", t) for i, t in enumerate(texts)]
    cfg = QualityConfig(lidar_views=3, max_tokens=24, dime_permutations=3)
    df = process(lm, items, cfg, RunContext(lm.name, "representation_quality", "t"))["metrics"]
    assert df["value"].notna().all() and np.isfinite(df["value"]).all()
    want = {"prompt_entropy", "dataset_entropy", "curvature_rad", "infonce", "lidar", "dime"}
    assert want <= set(df.metric)
    norm = df[(df.variant == "maxEntropy")]
    assert norm["value"].between(0, 1 + 1e-9).all()
    assert set(df[df.metric == "lidar"].grp) == {"views=3"}


def test_process_rejects_a_single_prompt():
    lm = load_model("tiny-gpt2")
    with pytest.raises(ValueError, match="at least 2 prompts"):
        process(lm, [Item("a", "one prompt")], QualityConfig(), RunContext("m", "q", "d"))


def test_batched_token_metrics_equal_the_scalar_functions():
    from precompute.stats.matrix import (
        curvature_batch,
        entropy_batch,
        gram_eigs_batch,
        preprocess_batch,
    )

    rng = np.random.default_rng(9)
    z = rng.normal(size=(4, 7, 12))
    z[2] = 1.5  # a constant state: flagged, never NaN
    zp, ok = preprocess_batch(z)
    assert ok.tolist() == [True, True, False, True]
    h = entropy_batch(gram_eigs_batch(zp[ok]), 1.0)
    h2 = entropy_batch(gram_eigs_batch(zp[ok]), 2.0)
    c = curvature_batch(z[ok])
    for k, s in enumerate(np.flatnonzero(ok)):
        assert h[k] == pytest.approx(normalised_entropy(z[s])[0], abs=1e-10)
        renyi2 = entropy_from_eigs(gram_eigs(preprocess(z[s])), 2.0)
        assert h2[k] == pytest.approx(renyi2, abs=1e-10)
        assert c[k] == pytest.approx(curvature(z[s]), abs=1e-10)


@pytest.mark.slow
def test_smollm_quality_metrics_are_finite_and_in_range():
    lm = load_model("smollm2-135m")
    texts = [
        "The Eiffel Tower is located in the city of Paris, in France.",
        "Water boils at one hundred degrees Celsius at sea level.",
        "The cat sat on the mat while the dog slept by the door.",
        "Mount Everest is the highest mountain above sea level.",
    ]
    items = [Item(f"p{i}", t) for i, t in enumerate(texts)]
    cfg = QualityConfig(lidar_views=2, max_tokens=24, dime_permutations=3)
    df = process(lm, items, cfg, RunContext(lm.name, "representation_quality", "t"))["metrics"]
    assert np.isfinite(df["value"]).all()
    curv = df[df.metric == "curvature_rad"]["value"]
    assert curv.between(0, np.pi).all()
    assert df[df.variant == "maxEntropy"]["value"].between(0, 1 + 1e-9).all()
