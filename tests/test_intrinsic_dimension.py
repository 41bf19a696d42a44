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
from precompute.stats import id_resample as idr
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
    cfg = IntrinsicDimensionConfig(decimations="1,2", n_boot=50)
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
    # every estimate on all points but PCA-90 has its interval around it; subsets have none
    wide = df.pivot_table(index=["variant", "grp", "layer"], columns="metric", values="value")
    full = wide.loc["1/1"]
    boot = full[~full.index.get_level_values("grp").str.startswith("pca90")]
    assert boot["id_ci_lo"].notna().all() and (boot["n_resamples"] == 50).all()
    assert (boot["id_ci_lo"] <= boot["intrinsic_dim"]).all()
    assert (boot["intrinsic_dim"] <= boot["id_ci_hi"]).all()
    assert df.loc[df["variant"] != "1/1", "metric"].isin(idr_metrics()).sum() == 0


# ------------------------------------------------------------------------------------------------
# Half-sampling intervals (precompute/stats/id_resample.py)


def subspace(n: int, d: int = 5, ambient: int = 50, seed: int = 0) -> np.ndarray:
    """``n`` Gaussian points on a random d-dimensional linear subspace of R^ambient."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rotation(ambient, rng)[:d]


def test_subsample_neighbours_equal_a_fresh_search():
    x = sphere(300, 3, 8, seed=1)
    members = idr.halfsample_members(len(x), 6, 0.5, np.random.default_rng(0))
    for width in (64, 4):  # 4: most rows run out of members and are recomputed
        table = idr.neighbour_table(x, width)
        got = idr.subsample_neighbours(x, *table, members, 5)
        for b in range(len(members)):
            want = idm.nn_distances(x[members[b]], 5)
            np.testing.assert_allclose(got[b], want, rtol=1e-12)


def test_resampled_estimates_equal_the_estimators_on_each_subsample():
    x = sphere(400, 4, 12, seed=2)
    members = idr.halfsample_members(len(x), 4, 0.5, np.random.default_rng(1))
    reps = idr.resampled_estimates(x, idr.RESAMPLED, members, 0.1, 5)
    cfg = IntrinsicDimensionConfig()
    for est in idr.RESAMPLED:
        want = [idm.estimate(x[m], est, cfg) for m in members]
        np.testing.assert_allclose(reps[est], want, rtol=1e-9)


def _interval(x: np.ndarray, seed: int = 0, n_boot: int = 200) -> dict:
    cfg = IntrinsicDimensionConfig(decimations="1", n_boot=n_boot)
    recs = idm.state_records(x, cfg, 0, 1, "mean", seed)
    return {(r["grp"].split("|")[0], r["metric"]): r["value"] for r in recs}


@pytest.mark.parametrize("est", ["twonn", "twonn_ml", "mle"])
def test_interval_contains_the_estimate_covers_the_dimension_and_shrinks(est):
    small, large = _interval(subspace(250, seed=3)), _interval(subspace(2000, seed=3))
    for v in (small, large):
        assert v[(est, "id_ci_lo")] <= v[(est, "intrinsic_dim")] <= v[(est, "id_ci_hi")]
        assert v[(est, "id_ci_lo")] <= 5 <= v[(est, "id_ci_hi")]
        assert v[(est, "n_resamples")] == 200 and v[(est, "id_std")] > 0
    width = {
        k: v[(est, "id_ci_hi")] - v[(est, "id_ci_lo")] for k, v in (("s", small), ("l", large))
    }
    assert width["l"] < width["s"] / 2  # 8x the points: about sqrt(8) = 2.8x narrower


def test_interval_is_deterministic_under_the_seed_and_skips_pca90():
    x = subspace(300, seed=4)
    a, b, c = _interval(x, seed=0), _interval(x, seed=0), _interval(x, seed=1)
    assert a == b
    assert a[("twonn", "id_ci_lo")] != c[("twonn", "id_ci_lo")]
    assert a[("twonn", "intrinsic_dim")] == c[("twonn", "intrinsic_dim")]
    assert ("pca90", "id_ci_lo") not in a and ("participation_ratio", "id_ci_lo") in a
    assert _interval(x, n_boot=0).keys() == {k for k in a if k[1] not in idr_metrics()}


def idr_metrics() -> set[str]:
    """The metrics an interval adds."""
    return {"id_ci_lo", "id_ci_hi", "id_std", "n_resamples"}


def test_halfsample_interval_scale_and_errors():
    reps = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan])
    lo, hi, se = idr.halfsample_interval(10.0, reps, 100, 50)  # s = 1
    assert lo < 10.0 < hi and se == pytest.approx(np.std(reps[:5], ddof=1))
    lo3, hi3, _ = idr.halfsample_interval(10.0, reps, 100, 75)  # s = sqrt(3)
    assert hi3 - lo3 == pytest.approx(np.sqrt(3) * (hi - lo))
    with pytest.raises(ValueError, match="at least 2"):
        idr.halfsample_interval(1.0, np.array([np.nan, 1.0]), 10, 5)
    with pytest.raises(ValueError, match="Cannot resample"):
        idr.resampled_estimates(np.eye(4), ("pca90",), np.array([[0, 1]]), 0.1, 5)


def test_page_band_is_the_stored_interval_through_metrics_agg(monkeypatch):
    import duckdb

    from app import representation_views as rv
    from precompute.results.store import AGG_SQL

    cfg = IntrinsicDimensionConfig(decimations="1,2", n_boot=50)
    recs = []
    for layer in range(3):
        recs += idm.state_records(subspace(120, seed=layer), cfg, layer, 2, "mean", 0)
    metrics = RunContext("m", idm.METHOD.name, "wikitext", "r0").metrics(recs)
    con = duckdb.connect()
    con.register("metrics", conform("metrics", metrics))
    con.register("metrics_agg", con.execute(AGG_SQL).df())
    monkeypatch.setattr(rv.data, "query", lambda sql, params=None: con.execute(sql, params).df())
    full = rv.id_curves("twonn", "mean", "wikitext", "1/1").set_index("layer")
    rows = metrics[(metrics["grp"] == "twonn|mean") & (metrics["variant"] == "1/1")]
    want = rows.pivot_table(index="layer", columns="metric", values="value")
    np.testing.assert_allclose(full["ci_lo"], want["id_ci_lo"])
    np.testing.assert_allclose(full["ci_hi"], want["id_ci_hi"])
    assert (full["ci_lo"] < full["mean"]).all() and (full["mean"] < full["ci_hi"]).all()
    assert (full["n"] == 120).all() and (full["n_resamples"] == 50).all()
    note = rv.id_interval_note(full.reset_index())
    assert "50 random halves" in note and "n = 120 distinct points" in note
    halves = rv.id_curves("twonn", "mean", "wikitext", "1/2")
    assert (halves["n"] == 2).all() and halves["n_resamples"].isna().all()  # over subsets
