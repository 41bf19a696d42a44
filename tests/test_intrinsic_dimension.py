"""Intrinsic dimension (METHODS.md E1): manifolds give their dimension, invariances, skdim
agreement, bad inputs give clear errors, and the rows on a tiny model are complete and finite."""

from __future__ import annotations

import numpy as np
import pytest

from precompute.methods import intrinsic_dimension as idm
from precompute.methods.intrinsic_dimension import (
    IntrinsicDimensionConfig,
    levina_bickel,
    participation_ratio,
    pca_dim,
    twonn,
    twonn_ml,
    unique_points,
)
from precompute.model.load import load_model
from precompute.schema import conform
from precompute.types import Item, RunContext


def rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal ``(dim, dim)`` matrix."""
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def sphere(n: int, d: int, ambient: int, seed: int = 0) -> np.ndarray:
    """``n`` uniform points on the d-sphere (no boundary), rotated into R^ambient."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, d + 1))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return g @ rotation(ambient, rng)[: d + 1]


def cube(n: int, d: int, ambient: int, seed: int = 0) -> np.ndarray:
    """``n`` uniform points in [0, 1]^d, rotated into R^ambient."""
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, d)) @ rotation(ambient, rng)[:d]


@pytest.mark.parametrize("d", [2, 3, 5])
@pytest.mark.parametrize("fn", [twonn, twonn_ml, levina_bickel])
def test_sphere_gives_its_dimension(fn, d):
    x = sphere(2000, d, 24, seed=d)
    assert fn(x) == pytest.approx(d, rel=0.10)


@pytest.mark.parametrize("d", [2, 3])
def test_cube_gives_its_dimension(d):
    x = cube(2000, d, 16, seed=d)
    assert twonn(x) == pytest.approx(d, rel=0.10)
    assert pca_dim(x, 0.9) == d  # a linear d-dimensional set: exactly d components


def test_participation_ratio_of_isotropic_and_spiked_data():
    rng = np.random.default_rng(0)
    assert participation_ratio(rng.normal(size=(4000, 6))) == pytest.approx(6, rel=0.05)
    spiked = rng.normal(size=(4000, 6)) * np.array([10.0, 1, 1, 1, 1, 1])
    assert participation_ratio(spiked) < 1.2


@pytest.mark.parametrize("fn", [twonn, twonn_ml, levina_bickel, pca_dim, participation_ratio])
def test_invariant_to_rotation_translation_scaling(fn):
    rng = np.random.default_rng(3)
    x = sphere(500, 4, 12, seed=3)
    y = 3.7 * (x @ rotation(12, rng)) + rng.normal(size=12) * 5
    assert fn(y) == pytest.approx(fn(x), rel=1e-6)


def test_matches_scikit_dimension():
    skdim = pytest.importorskip(
        "skdim", reason="scikit-dimension==0.5.0 (requirements-dev.txt) is not installed"
    )
    import warnings

    x = cube(1500, 6, 20, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in (0.1, 0.02):
            ref = skdim.id.TwoNN(discard_fraction=f).fit(x).dimension_
            assert twonn(x, f) == pytest.approx(ref, rel=1e-6)
            ref_ml = skdim.id.TwoNN(discard_fraction=f, method="mle").fit(x).dimension_
            assert twonn_ml(x, f) == pytest.approx(ref_ml, rel=1e-6)
        ref_mle = skdim.id.MLE(K=5).fit(x, n_neighbors=5).dimension_
        assert levina_bickel(x, 5) == pytest.approx(ref_mle, rel=1e-6)


def test_duplicates_are_reported_then_removed():
    x = sphere(300, 2, 5)
    dup = np.concatenate([x, x[:10]])
    with pytest.raises(ValueError, match="duplicate"):
        twonn(dup)
    with pytest.raises(ValueError, match="[Dd]uplicate"):
        levina_bickel(dup)
    pts, n_dup = unique_points(dup)
    assert n_dup == 10 and len(pts) == 300
    assert twonn(pts) == pytest.approx(twonn(x))


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="at least 3"):
        twonn(np.eye(2))
    with pytest.raises(ValueError, match="constant"):
        pca_dim(np.ones((10, 4)))
    with pytest.raises(ValueError, match="NaN"):
        twonn(np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="discard_fraction"):
        twonn(sphere(100, 2, 4), discard_fraction=1.0)


def test_constant_states_skip_rows_without_nan():
    cfg = IntrinsicDimensionConfig(decimations="1")
    recs = idm.state_records(np.ones((20, 8)), cfg, 0, 4, "mean", seed=0)
    assert recs == []  # one distinct point: every estimator is skipped, with a log line
    few = sphere(8, 2, 4)  # fewer distinct points than min_points = 10
    assert idm.state_records(few, cfg, 0, 4, "mean", seed=0) == []


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-llama")


def test_process_rows_on_tiny_model(lm):
    items = [
        Item(f"s{i}", f"Sentence number {i} talks about the {w} near the river and the hill.")
        for i, w in enumerate(["cat", "dog", "bird", "tree", "house", "car", "boat", "river"] * 3)
    ]
    items.append(Item("dup", items[0].text))  # an exact duplicate stimulus
    cfg = IntrinsicDimensionConfig(decimations="1,2")
    ctx = RunContext("tiny-llama", "intrinsic_dimension", "test", "r0")
    df = idm.process(lm, items, cfg, ctx)["metrics"]
    conform("metrics", df)
    assert np.isfinite(df["value"]).all()
    ids = df[df["metric"] == "intrinsic_dim"]
    assert set(ids["grp"]) >= {f"{e}|{p}" for e in idm.ESTIMATORS for p in ("mean", "last")}
    assert set(ids["layer"]) == set(range(lm.n_layers + 1))
    assert set(ids["rel_depth"]) == {i / lm.n_layers for i in range(lm.n_layers + 1)}
    # n_points is stored beside every estimate; the duplicate stimulus was removed
    full = df[(df["variant"] == "1/1") & (df["grp"] == "twonn|mean")]
    n_pts = full[full["metric"] == "n_points"].set_index("layer")["value"]
    n_dup = full[full["metric"] == "n_duplicates"].set_index("layer")["value"]
    assert (n_pts == 24).all() and (n_dup == 1).all()
    halves = df[(df["variant"] == "1/2") & (df["grp"] == "twonn|mean")]
    halves = halves[halves["metric"] == "n_points"]
    assert set(halves["prompt_id"]) == {"subset-0", "subset-1"}
    assert (halves["value"] == 12).all()
