"""pooled_states: one pass per text, mean without position 0 and last token, equal to the states."""

from __future__ import annotations

import numpy as np
import pytest

from precompute.model.internals import residual_states
from precompute.model.load import load_model
from precompute.model.pooled import pooled_states

TEXTS = [
    "The cat sat on the mat and the dog sat on the log.",
    "Paris is the capital of France.",
    "Water boils at one hundred degrees.",
]


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-neox")


def test_pools_equal_the_residual_states(lm):
    seen = []

    def keep(j, states, ids):
        seen.append((j, states, ids))

    ps = pooled_states(lm, TEXTS, max_tokens=8, on_states=keep)
    assert ps.mean.shape == ps.last.shape == (lm.n_layers + 1, len(TEXTS), lm.d_model)
    assert ps.mean.dtype == np.float32
    assert [j for j, _, _ in seen] == [0, 1, 2]
    for j, text in enumerate(TEXTS):
        ids = lm.tokenize(text, max_tokens=8)
        states, _ = residual_states(lm, ids)  # (S, T, D)
        np.testing.assert_allclose(ps.mean[:, j], states[:, 1:].mean(1).numpy(), atol=1e-6)
        np.testing.assert_allclose(ps.last[:, j], states[:, -1].numpy(), atol=1e-6)
        np.testing.assert_allclose(seen[j][1].numpy(), states.numpy(), atol=1e-6)
        assert ps.n_tokens[j] == ids.shape[1]
        assert ps.truncated[j] == (lm.tokenize(text).shape[1] > 8)
    assert ps.pooled("last") is ps.last


def test_bad_inputs(lm):
    with pytest.raises(ValueError, match="at least one text"):
        pooled_states(lm, [])
    with pytest.raises(ValueError, match="at least 2"):
        pooled_states(lm, TEXTS, max_tokens=1)
    with pytest.raises(ValueError, match="Unknown pooling"):
        pooled_states(lm, TEXTS[:1]).pooled("max")


@pytest.mark.slow
def test_real_model_rsa_and_id_rows():
    from precompute.methods import intrinsic_dimension as idm
    from precompute.methods import rsa
    from precompute.types import Item, RunContext

    real = load_model("smollm2-135m", device="cpu")
    texts = [
        f"{w} is a word that people use when they talk about {w}s."
        for w in [
            "cat",
            "dog",
            "river",
            "house",
            "music",
            "winter",
            "number",
            "garden",
            "train",
            "letter",
            "mountain",
            "bread",
        ]
    ]
    ps = pooled_states(real, texts, max_tokens=32)
    assert np.isfinite(ps.mean).all() and ps.mean.shape == (31, 12, 576)
    res = rsa.rsa_from_pooled(ps, [f"s{i:02d}" for i in range(12)], rsa.RSAConfig())
    np.testing.assert_allclose(np.diag(res.similarity), 1.0, atol=1e-9)
    ctx = RunContext("smollm2-135m", "intrinsic_dimension", "test")
    df = idm.id_frame(ps, idm.IntrinsicDimensionConfig(decimations="1"), ctx)
    assert len(df) and np.isfinite(df["value"]).all()
    items = [Item(f"s{i:02d}", t) for i, t in enumerate(texts)]
    out = rsa.process(real, items, rsa.RSAConfig(max_tokens=32), RunContext("m", "rsa", "t"))
    assert len(out["similarity"]) == 31 * 31
