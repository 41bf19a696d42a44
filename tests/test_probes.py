"""Linear probes (METHODS.md E2): chance on random labels, ~100 % on linear labels, controls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precompute.methods.probes import ProbesConfig, answer_from_states, probe_records, process
from precompute.model.internals import residual_states
from precompute.model.load import load_model
from precompute.stats.probing import keep_frequent, knows_layer, probe_layer
from precompute.types import Item, RunContext


def test_random_labels_give_chance_accuracy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 20))
    y = rng.integers(0, 3, size=300)
    r = probe_layer(x, y)
    assert abs(r.probe_acc.mean() - 1 / 3) < 0.1
    assert abs(r.control_acc.mean() - 1 / 3) < 0.1
    assert len(r.probe_acc) == 5


def test_linear_labels_give_near_perfect_accuracy_and_high_selectivity():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 10))
    w = rng.normal(size=(10, 3))
    y = (x @ w).argmax(1)  # a linear function of the features
    r = probe_layer(x, y)
    assert r.probe_acc.mean() > 0.95
    assert r.selectivity.mean() > 0.4
    assert r.probe_f1.mean() > 0.9


def test_majority_baseline_is_largest_class_share():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 4))
    y = np.array([0] * 70 + [1] * 30)
    r = probe_layer(x, y)
    assert r.majority_acc.mean() == pytest.approx(0.7, abs=0.02)


def test_bad_input_raises_clear_errors():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="two classes"):
        probe_layer(x, np.zeros(20, dtype=int))
    with pytest.raises(ValueError, match="examples per class"):
        probe_layer(x, np.array([0] * 17 + [1] * 3))
    with pytest.raises(ValueError, match="two classes with >= 10"):
        keep_frequent(["a"] * 12 + ["b"] * 3, 10)
    with pytest.raises(ValueError, match="NaN"):
        probe_layer(np.full((20, 3), np.nan), np.array([0, 1] * 10))


def test_keep_frequent_drops_rare_classes():
    mask = keep_frequent(["a"] * 10 + ["b"] * 10 + ["c"] * 2, 10)
    assert mask.sum() == 20 and not mask[-1]


def test_knows_layer_is_first_within_ninety_percent_of_best():
    assert knows_layer([0.1, 0.5, 0.86, 0.95, 0.9], 0.9) == 2
    assert knows_layer([1.0, 0.0]) == 0


def test_records_one_row_per_fold_and_knows_layer():
    rng = np.random.default_rng(5)
    n = 120
    y = rng.integers(0, 2, size=n)
    s = np.stack([rng.normal(size=(n, 6)) for _ in range(3)])  # (S, N, D)
    s[2, :, 0] += 6 * y  # decodable at the last state only
    cfg = ProbesConfig(min_per_class=5)
    df = RunContext("m", "probes", "d").metrics(probe_records(s, y, cfg, n_layers=2))
    acc = df[df.metric == "probe_acc"].groupby("layer")["value"].mean()
    assert acc[2] > 0.95 and acc[0] < 0.75
    knows = df[df.metric == "knows_layer"]
    assert knows["layer"].tolist() == [2]
    assert df["value"].notna().all()
    assert (df[df.metric == "probe_acc"].groupby("layer").size() == 5).all()


def test_min_per_class_below_folds_is_rejected():
    with pytest.raises(ValueError, match="n_folds"):
        probe_records(np.zeros((1, 10, 2)), np.zeros(10), ProbesConfig(min_per_class=2), 0)


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-llama"])
def test_answer_from_states_equals_model_argmax(arch):
    lm = load_model(arch)
    ids = lm.tokenize("The Eiffel Tower is located in the city of")
    states, logits = residual_states(lm, ids)
    assert answer_from_states(lm, states) == int(logits[-1].argmax())


def test_process_on_tiny_model_runs_end_to_end():
    lm = load_model("tiny-gpt2")
    words = ["cat", "dog", "mat", "log", "sun", "tower", "city", "water"]
    texts = [f"The {words[i % 8]} sat on the {words[(3 * i) % 8]}" for i in range(24)]
    items = [Item(f"p{i}", t) for i, t in enumerate(texts)]
    cfg = ProbesConfig(min_per_class=3, n_folds=3, max_tokens=16, max_iter=200)
    try:
        out = process(lm, items, cfg, RunContext(lm.name, "probes", "test"))
    except ValueError as err:  # a random model may give one answer to all prompts
        assert "classes" in str(err)
        return
    df = out["metrics"]
    assert set(df.layer) == set(range(lm.n_layers + 1))
    assert df["value"].notna().all()


@pytest.mark.slow
def test_smollm_last_state_decodes_its_own_answer():
    from precompute.datasets import load_facts

    lm = load_model("smollm2-135m")
    items, _ = load_facts()
    cfg = ProbesConfig(min_per_class=5, max_tokens=32)
    df = process(lm, items, cfg, RunContext(lm.name, "probes", "facts"))["metrics"]
    acc = df[df.metric == "probe_acc"].groupby("layer")["value"].mean()
    assert acc[lm.n_layers] > 0.8  # 0.92 on all 185 facts (62 kept, 10 answers)
    assert torch.isfinite(torch.tensor(df["value"].to_numpy())).all()


def test_template_baseline_guesses_from_the_relation_alone():
    from precompute.stats.probing import template_baseline

    groups = np.array(["capital"] * 20 + ["language"] * 20)
    y = np.array(["Paris"] * 20 + ["French"] * 20)
    assert template_baseline(y, groups).mean() == pytest.approx(1.0)
    rng = np.random.default_rng(6)
    y2 = rng.integers(0, 2, 40)
    s = rng.normal(size=(2, 40, 3))
    df = RunContext("m", "probes", "d").metrics(
        probe_records(s, y2, ProbesConfig(min_per_class=5), 1, groups)
    )
    assert (df[df.metric == "template_acc"].groupby("layer").size() == 5).all()


def test_within_relation_probes_cannot_read_the_template():
    """Answers fixed by the relation: the pooled probe wins from the template alone, the
    within-relation probe cannot (one class per relation: no relation is probed)."""
    rng = np.random.default_rng(7)
    groups = np.array(["capital"] * 30 + ["language"] * 30)
    y = np.array(["Paris"] * 30 + ["French"] * 30)
    s = rng.normal(size=(2, 60, 4))
    s[:, :30, 0] += 5.0  # the template shows in the states
    pooled = RunContext("m", "p", "d").metrics(probe_records(s, y, ProbesConfig(), 1, groups))
    tmpl = pooled[pooled.metric == "template_acc"]["value"].mean()
    assert tmpl == pytest.approx(1.0)
    within = ProbesConfig(label_scope="within_relation")
    with pytest.raises(ValueError, match="within-relation"):
        probe_records(s, y, within, 1, groups)
    # Two answers inside each relation, decodable at state 1 only: probed per relation.
    y2 = np.array([f"{g}-{v}" for g, v in zip(groups, rng.integers(0, 2, 60))])
    s[1, :, 1] += 6.0 * np.array([v.endswith("1") for v in y2])
    df = RunContext("m", "p", "d").metrics(
        probe_records(s, y2, ProbesConfig(label_scope="within_relation"), 1, groups, s[::-1])
    )
    acc = df[df.metric == "probe_acc"].groupby("layer")["value"].mean()
    assert acc[1] > 0.95 and acc[0] < 0.8
    assert set(df[df.metric == "probe_acc"]["prompt_id"].str.split("|").str[0]) == {
        "capital",
        "language",
    }
    assert "template_acc" not in set(df.metric)
    rand = df[df.metric == "random_init_acc"].groupby("layer")["value"].mean()
    assert rand[0] > 0.95 and rand[1] < 0.8  # the control probed the other states
    assert (df[df.metric == "n_relations"]["value"] == 2).all()


def test_random_twin_has_the_architecture_but_not_the_weights():
    from precompute.methods.probes import random_twin

    lm = load_model("tiny-llama")
    twin = random_twin(lm, seed=3)
    assert (twin.n_layers, twin.d_model, twin.d_vocab) == (lm.n_layers, lm.d_model, lm.d_vocab)
    ids = lm.tokenize("The Eiffel Tower is in Paris")
    a, _ = residual_states(lm, ids)
    b, _ = residual_states(twin, ids)
    assert a.shape == b.shape and not torch.allclose(a[1:], b[1:])
