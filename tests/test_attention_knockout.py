"""Attention knockout (METHODS.md B2): the invariants on the tiny models, bad inputs, rows."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from precompute import schema
from precompute.facts import subject_tokens, window_layers
from precompute.methods.attention_knockout import (
    BLOCK_SETS,
    KnockoutConfig,
    block_keys,
    clean_prediction,
    knockout_fact,
    process,
    result_records,
    run_one,
)
from precompute.model.knockout import IMPLS, Cut, knockout_logprobs
from precompute.types import Item, RunContext

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


def test_window_layers_follow_geva():
    assert list(window_layers(0, 9, 30)) == [0, 1, 2, 3, 4]
    assert list(window_layers(15, 9, 30)) == list(range(11, 20))
    assert list(window_layers(29, 9, 30)) == list(range(25, 30))
    assert list(window_layers(5, 4, 30)) == [3, 4, 5, 6]
    assert list(window_layers(5, 1, 30)) == [5]
    assert list(window_layers(5, 0, 30)) == []


def test_key_sets_partition_the_visible_keys():
    q, b, e = 9, 2, 5
    sets = [set(block_keys(g, b, e, q)) for g in BLOCK_SETS]
    assert set.union(*sets) == set(range(q + 1))
    assert sum(len(s) for s in sets) == q + 1
    with pytest.raises(ValueError, match="Unknown key set"):
        block_keys("everything", b, e, q)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_window_changes_nothing(tiny, impl):
    r = knockout_fact(tiny, PROMPT, SUBJECT, window=0, impl=impl)
    for g in BLOCK_SETS:
        assert r.p_new[g] == [r.p_base] * tiny.n_layers
        assert r.rel_diff[g] == [0.0] * tiny.n_layers


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_window_exact_across_chunks(tiny, impl):
    # Tiny chunks force several forward passes; padding keeps every pass the same shape.
    r = knockout_fact(tiny, PROMPT, SUBJECT, window=0, impl=impl, chunk_elems=1)
    assert all(v == 0.0 for g in BLOCK_SETS for v in r.rel_diff[g])


def test_mask_and_score_hook_agree(tiny):
    a = knockout_fact(tiny, PROMPT, SUBJECT, window=3, impl="score_hook")
    b = knockout_fact(tiny, PROMPT, SUBJECT, window=3, impl="mask")
    assert a.target_id == b.target_id
    for g in BLOCK_SETS:
        assert a.p_new[g] == pytest.approx(b.p_new[g], abs=1e-6, rel=1e-5)


def test_cached_prefix_matches_full_recompute(tiny):
    fact = subject_tokens(tiny, PROMPT, SUBJECT)
    q, n = fact.n_tokens - 1, tiny.n_layers
    cuts = [Cut((), ())] + [
        Cut(tuple(window_layers(c, 3, n)), tuple(block_keys(g, fact.start, fact.end, q)))
        for g in BLOCK_SETS
        for c in range(n)
    ]
    full = knockout_logprobs(tiny, fact.ids, cuts, use_cache=False)
    for impl in IMPLS:
        cached = knockout_logprobs(tiny, fact.ids, cuts, impl=impl, use_cache=True)
        assert torch.allclose(cached, full, atol=1e-5)


def test_knockout_changes_the_prediction(tiny):
    # Guard against hooks that never fire: cutting every earlier key in every layer matters.
    r = knockout_fact(tiny, PROMPT, SUBJECT, window=2 * tiny.n_layers)
    assert max(abs(v) for v in r.rel_diff["non_subject"]) > 1.0
    assert all(math.isfinite(v) for g in BLOCK_SETS for v in r.rel_diff[g])


@pytest.mark.parametrize("impl", IMPLS)
def test_blocking_a_future_key_changes_nothing(tiny, impl):
    fact = subject_tokens(tiny, PROMPT, SUBJECT)
    t = fact.n_tokens
    q = t - 3
    all_layers = tuple(range(tiny.n_layers))
    cuts = [Cut((), ()), Cut(all_layers, (t - 1,)), Cut(all_layers, (q + 1, t - 1))]
    logp = knockout_logprobs(tiny, fact.ids, cuts, query=q, impl=impl)
    assert torch.equal(logp[1], logp[0])
    assert torch.equal(logp[2], logp[0])
    # ... while blocking a past key at the same query does change it.
    past = knockout_logprobs(tiny, fact.ids, [Cut((), ()), Cut(all_layers, (0,))], query=q)
    assert not torch.equal(past[1], past[0])


def test_blocking_every_key_is_refused(tiny):
    fact = subject_tokens(tiny, PROMPT, SUBJECT)
    q = fact.n_tokens - 1
    with pytest.raises(ValueError, match="every key"):
        knockout_logprobs(tiny, fact.ids, [Cut((0,), tuple(range(q + 1)))])


def test_subject_span_from_offsets(tiny):
    fact = subject_tokens(tiny, PROMPT, SUBJECT)
    toks = tiny.token_strs(fact.ids)
    assert "".join(toks[fact.start : fact.end]).strip() == SUBJECT
    same = subject_tokens(tiny, PROMPT, char_span=(4, 16))
    assert (same.start, same.end) == (fact.start, fact.end)


def test_bad_subjects_are_explained(tiny):
    with pytest.raises(ValueError, match="does not occur"):
        subject_tokens(tiny, PROMPT, "Statue of Liberty")
    with pytest.raises(ValueError, match="whole prompt"):
        subject_tokens(tiny, "Eiffel Tower", "Eiffel Tower")
    with pytest.raises(ValueError, match="continue after the subject"):
        subject_tokens(tiny, "The city of Paris", "Paris")
    with pytest.raises(ValueError, match="empty"):
        subject_tokens(tiny, PROMPT, "  ")
    with pytest.raises(ValueError, match="limit"):
        subject_tokens(tiny, PROMPT * 20, SUBJECT, max_tokens=64)
    with pytest.raises(ValueError, match="window"):
        knockout_fact(tiny, PROMPT, SUBJECT, window=-1)


def _items(lm, answer_right: bool) -> list[Item]:
    fact = subject_tokens(lm, PROMPT, SUBJECT)
    target, _ = clean_prediction(lm, fact)
    predicted = lm.tokenizer.decode([target]).strip() or "?"
    answer = predicted if answer_right else predicted + "zzz-not-it"
    row = {
        "id": "f1",
        "subject": SUBJECT,
        "template": "The {} is located in the city of",
        "relation": "landmark_city",
        "answer": answer,
    }
    missing = dict(row, id="f2", subject="Big Ben")
    return [Item("f1", PROMPT, row), Item("f2", PROMPT, missing)]


def test_process_rows_and_wrong_facts(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    ctx = RunContext(lm.name, "attention_knockout", "facts", "run")
    cfg = KnockoutConfig(window=3)
    right = process(lm, _items(lm, True), cfg, ctx)
    for table, frame in right.items():
        schema.conform(table, frame)  # what the job writer does: no NaN in typed columns
    m = right["metrics"]
    knock = m[m["layer_kind"] == "window_center"]
    assert len(knock) == len(BLOCK_SETS) * 3 * lm.n_layers  # key sets x 3 metrics x L centres
    assert knock["rel_depth"].between(0, 1).all() and knock["value"].notna().all()
    assert set(knock["variant"]) == {"W3"}
    summ = m[m["layer_kind"] == "summary"].set_index(["prompt_id", "metric"])["value"]
    assert summ[("f1", "answer_correct")] == 1.0
    assert summ[("f2", "subject_found")] == 0.0  # not found: counted, not an error
    assert right["fact_checks"]["correct"].tolist() == [True]
    wrong = process(lm, _items(lm, False), cfg, ctx)
    wm = wrong["metrics"]
    assert not (wm["layer_kind"] == "window_center").any()  # a wrong fact is not knocked out
    assert wm.loc[wm["metric"] == "answer_correct", "value"].tolist() == [0.0]
    assert wrong["fact_checks"]["correct"].tolist() == [False]


def test_stride_and_n_correct_pick_the_facts_tried(tiny_models):
    """``items[::stride]`` in dataset order, stopping once ``n_correct`` facts were kept."""
    lm = tiny_models["tiny-gpt2"]
    ctx = RunContext(lm.name, "attention_knockout", "facts", "run")
    right, wrong = _items(lm, True)[0], _items(lm, False)[0]
    items = [
        Item(f"k{i}", PROMPT, (right if i % 3 else wrong).fields) for i in range(12)
    ]  # k0, k3, k6, k9 wrong
    m = process(lm, items, KnockoutConfig(window=1, stride=2, n_correct=3), ctx)["metrics"]
    tried = m[m["metric"] == "answer_correct"]
    assert tried["prompt_id"].tolist() == ["k0", "k2", "k4", "k6", "k8"]  # stops at 3 kept
    assert tried["value"].sum() == 3
    kept = set(m.loc[m["layer_kind"] == "window_center", "prompt_id"])
    assert kept == {"k2", "k4", "k8"}
    every = process(lm, items, KnockoutConfig(window=1, stride=2), ctx)["metrics"]
    assert (every["metric"] == "answer_correct").sum() == 6  # n_correct = 0: no limit


def test_facts_are_tried_round_robin_over_relations(tiny_models):
    """``order = "relations"`` (facts.facts_in_order): n_correct facts span the relations."""
    lm = tiny_models["tiny-gpt2"]
    ctx = RunContext(lm.name, "attention_knockout", "facts", "run")
    right = _items(lm, True)[0]
    items = [
        Item(f"{r}{i}", PROMPT, {**right.fields, "relation": r}) for r in "AB" for i in range(3)
    ]
    for order, want in (("relations", ["A0", "B0"]), ("dataset", ["A0", "A1"])):
        m = process(lm, items, KnockoutConfig(window=1, n_correct=2, order=order), ctx)["metrics"]
        assert m.loc[m["metric"] == "answer_correct", "prompt_id"].tolist() == want


def test_scaled_window_and_w1_beside_it(tiny_models):
    from precompute.facts import scaled_window

    lm = tiny_models["tiny-neox"]  # tiny-llama's top token is whitespace: never "correct"
    ctx = RunContext(lm.name, "attention_knockout", "facts", "run")
    m = process(lm, _items(lm, True)[:1], KnockoutConfig(), ctx)["metrics"]  # window "auto,1"
    knock = m[m["layer_kind"] == "window_center"]
    assert set(knock["variant"]) == {"Wauto", "W1"}
    windows = m[m["metric"] == "window"].set_index("variant")["value"]
    assert windows["Wauto"] == scaled_window(lm.n_layers) and windows["W1"] == 1
    w1 = knockout_fact(lm, PROMPT, SUBJECT, window=1).rel_diff["subject"]
    stored = knock[(knock["variant"] == "W1") & (knock["grp"] == "subject")]
    stored = stored[stored["metric"] == "relative_diff_pct"].sort_values("layer")["value"]
    assert stored.tolist() == w1
    with pytest.raises(ValueError, match="auto"):
        process(lm, _items(lm, True)[:1], KnockoutConfig(window="auto,zero"), ctx)


def test_first_position_is_its_own_key_set(tiny):
    r = knockout_fact(tiny, PROMPT, SUBJECT, window=2)
    assert not math.isnan(r.p_new["first"][0])  # "The" comes before the subject
    assert block_keys("first", 2, 4, 7) == [0] and 0 not in block_keys("non_subject", 2, 4, 7)
    assert block_keys("first", 0, 2, 7) == []  # a subject at position 0 leaves no first set
    # The start token sits at position 0, so a prompt that opens with the subject still has it.
    at0 = knockout_fact(tiny, "Eiffel Tower is located in the city of", "Eiffel Tower", window=2)
    assert at0.fact.start == 1 and at0.fact.ids[0, 0] == tiny.start_id
    assert not at0.subject_at_pos0 and not any(math.isnan(v) for v in at0.p_new["first"])
    empty = dataclasses.replace(at0, rel_diff={**at0.rel_diff, "first": [math.nan] * 4})
    rows = result_records(empty, tiny.n_layers, "f")
    assert "first" not in {row["grp"] for row in rows}  # an empty key set writes no rows


def test_run_one_with_marked_subject(tiny_models):
    lm = tiny_models["tiny-llama"]
    df = run_one(lm, "The [Eiffel Tower] is located in the city of", KnockoutConfig(window=2))
    assert set(df["grp"]) >= set(BLOCK_SETS)
    with pytest.raises(ValueError, match="brackets"):
        run_one(lm, PROMPT, KnockoutConfig())


@pytest.mark.slow
def test_smollm2_mask_equals_score_hook():
    from precompute.model.load import load_model

    lm = load_model("smollm2-135m", device="cpu")
    a = knockout_fact(lm, PROMPT, SUBJECT, window=9, impl="score_hook")
    b = knockout_fact(lm, PROMPT, SUBJECT, window=9, impl="mask")
    for g in BLOCK_SETS:
        assert a.p_new[g] == pytest.approx(b.p_new[g], abs=1e-5)


def test_live_panel_equals_precompute_table(tiny_models, monkeypatch):
    """Page 31's live knockout and the precomputed table give the same numbers for one fact."""
    from app import flow_views, live

    lm = tiny_models["tiny-gpt2"]
    monkeypatch.setattr(live, "get_model", lambda name: lm)
    items = _items(lm, True)[:1]
    ctx = RunContext(lm.name, "attention_knockout", "facts", "run")
    table = schema.conform("metrics", process(lm, items, KnockoutConfig(window=3), ctx)["metrics"])
    rel = table[table["metric"] == "relative_diff_pct"]
    stored = rel.set_index(["grp", "layer"])["value"].sort_index()
    start = PROMPT.index(SUBJECT)
    shown = flow_views.live_knockout(lm.name, PROMPT, (start, start + len(SUBJECT)), 3)
    shown = shown.set_index(["grp", "layer"])["mean"].sort_index()
    assert len(stored) == len(shown) == len(BLOCK_SETS) * lm.n_layers
    assert set(flow_views.EDGES) == set(BLOCK_SETS)  # every key set has a human label
    assert (stored - shown).abs().max() == 0.0
