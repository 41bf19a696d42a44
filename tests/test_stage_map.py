import numpy as np
import pandas as pd
import pytest

from precompute.stats.segmentation import (
    normalise,
    segment,
    segment_models,
    signature_matrix,
    stage_boundaries,
)


def step_signal(levels, lengths, m=3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    cols = []
    for c in range(m):
        lv = np.roll(levels, c) if c else levels
        cols.append(np.concatenate([np.full(n, v, dtype=float) for v, n in zip(lv, lengths)]))
    x = np.stack(cols, 1)
    return x + noise * rng.standard_normal(x.shape)


@pytest.mark.parametrize("lengths", [(3, 7, 12, 8), (1, 5, 5, 1), (6, 6, 6, 6)])
def test_exact_step_signal_is_recovered(lengths):
    x = step_signal([0.0, 1.0, 0.3, 0.8], lengths)
    assert segment(x, 4) == list(np.cumsum(lengths)[:-1])


def test_noisy_step_signal_is_recovered():
    x = step_signal([0.0, 1.0, 0.2, 0.9], (5, 9, 10, 6), m=6, noise=0.08, seed=3)
    assert segment(x, 4) == [5, 14, 24]


def test_brute_force_agrees_on_small_inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 2))

    def sse(a, b):
        seg = x[a:b]
        return ((seg - seg.mean(0)) ** 2).sum()

    best = min(
        ((i, j, k) for i in range(1, 9) for j in range(i + 1, 9) for k in range(j + 1, 9)),
        key=lambda c: sse(0, c[0]) + sse(c[0], c[1]) + sse(c[1], c[2]) + sse(c[2], 9),
    )
    assert segment(x, 4) == list(best)


def test_segment_errors_and_min_size():
    with pytest.raises(ValueError, match="segments"):
        segment(np.zeros((3, 2)), 4)
    cuts = segment(step_signal([0, 1, 0, 1], (1, 4, 4, 3)), 4, min_size=2)
    assert all(b - a >= 2 for a, b in zip([0, *cuts], [*cuts, 12]))


def test_normalise_and_boundaries_on_a_model_frame():
    assert normalise(np.ones(4)) is None
    assert normalise(np.array([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    lengths = (2, 4, 3, 3)  # L = 12 blocks
    x = step_signal([0.0, 5.0, 1.0, 3.0], lengths, m=2)
    rows = []
    for key, col in zip(["prev5", "attn_mlp"], x.T):
        for layer, v in enumerate(col):
            rows.append(
                dict(model="m", key=key, n_layers=12, layer=layer, rel_depth=layer / 11, mean=v)
            )
    # a residual-indexed curve (i / L, L + 1 points) is interpolated onto the block grid
    for i in range(13):
        rows.append(
            dict(
                model="m", key="entropy", n_layers=12, layer=i, rel_depth=i / 12, mean=float(i >= 6)
            )
        )
    mat = signature_matrix(pd.DataFrame(rows), "m", ["prev5", "attn_mlp", "entropy", "pct_pred"])
    assert set(mat["key"]) == {"prev5", "attn_mlp", "entropy"}
    assert mat["value"].between(0, 1).all() and len(mat) == 3 * 12
    b = stage_boundaries(mat[mat["key"] != "entropy"])
    assert b["layer"].tolist() == [2, 6, 9]
    assert b["rel_depth"].tolist() == pytest.approx([1.5 / 11, 5.5 / 11, 8.5 / 11])


def _frame(model, key, values):
    n = len(values)
    return pd.DataFrame(
        dict(model=model, key=key, n_layers=n, layer=range(n), rel_depth=np.arange(n) / (n - 1))
    ).assign(mean=values)


def test_segment_models_keeps_models_apart_and_labels_keys():
    a = step_signal([0.0, 1.0, 0.3, 0.8], (2, 3, 3, 4), m=2)  # 12 layers
    b = step_signal([0.0, 1.0, 0.3, 0.8], (4, 6, 4, 4), m=2)  # 18 layers
    df = pd.concat(
        [_frame("a", k, col) for k, col in zip(["x", "y"], a.T)]
        + [_frame("b", k, col) for k, col in zip(["x", "y"], b.T)]
        + [_frame("b", "flat", np.ones(18))],  # constant: dropped
        ignore_index=True,
    )
    mat, bounds = segment_models(df, ["x", "y", "flat"], k=4, labels={"x": "signature x"})
    assert set(mat.loc[mat["key"] == "x", "signature"]) == {"signature x"}
    assert set(mat.loc[mat["key"] == "y", "signature"]) == {"y"}
    assert "flat" not in set(mat["key"])
    by_model = {m: g["layer"].tolist() for m, g in bounds.groupby("model")}
    assert by_model == {"a": [2, 5, 8], "b": [4, 10, 14]}


def test_segment_models_on_nothing_is_empty():
    mat, bounds = segment_models(pd.DataFrame(), ["x"])
    assert mat.empty and bounds.empty
