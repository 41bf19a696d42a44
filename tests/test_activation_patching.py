"""Activation patching (METHODS.md B3): identities on the tiny models, pairs, bad inputs, rows."""

from __future__ import annotations

import pytest
import torch

from precompute import schema
from precompute.facts import facts_in_order, subject_tokens
from precompute.methods.activation_patching import (
    EFFECT_METRIC,
    USES_METRIC,
    USES_REL_METRIC,
    USES_VARIANT,
    VARIANTS,
    Patch,
    PatchingConfig,
    patch_pair,
    patched_logits,
    process,
    swap_candidates,
    swap_subject,
)
from precompute.types import Item, RunContext

# In the tiny tokenizer " capital" and " layer" are single tokens: an aligned pair.
TEMPLATE = "The {} is located in the city of"
CLEAN, CORRUPT = "capital", "layer"
TOL = 1e-5  # float32 rounding between batch rows


def _pair(lm):
    return patch_pair(lm, TEMPLATE.format(CLEAN), CLEAN, CORRUPT, check=False)


def test_patching_clean_into_clean_changes_nothing(tiny):
    f = subject_tokens(tiny, TEMPLATE.format(CLEAN), CLEAN)
    last, n = f.n_tokens - 1, tiny.n_layers
    patches = [Patch("resid", i, last) for i in range(n + 1)]
    patches += [Patch("block_out", i, last) for i in range(n)]
    patches += [Patch("resid", i, f.start) for i in range(n + 1)]
    logits = patched_logits(tiny, f.ids, f.ids, patches)
    assert (logits - logits[0]).abs().max() <= TOL


def test_identities_of_the_variants(tiny):
    r = _pair(tiny)
    n = tiny.n_layers
    eff = r.effect_ld
    assert len(eff["resid_last"]) == n + 1 and len(eff["block_out_last"]) == n
    # h_L at the last position is the whole input of the unembedding: full restoration.
    assert eff["resid_last"][n] == pytest.approx(1.0, abs=1e-4)
    assert r.p_patched["resid_last"][n] == pytest.approx(r.p_clean, abs=TOL)
    # h_0 at the last position is the same token in both prompts: nothing to restore.
    assert eff["resid_last"][0] == pytest.approx(0.0, abs=1e-4)
    # Block 0's delta on top of an identical h_0 is the clean h_1.
    assert eff["block_out_last"][0] == pytest.approx(eff["resid_last"][1], abs=1e-4)
    # The final state at the subject only feeds that position's own logits: no effect.
    assert eff["resid_subject_last"][n] == pytest.approx(0.0, abs=1e-4)


def test_patching_before_the_first_differing_token_does_nothing(tiny):
    clean = subject_tokens(tiny, TEMPLATE.format(CLEAN), CLEAN)
    corr = swap_subject(tiny, clean, CORRUPT)
    assert clean.start >= 1
    n = tiny.n_layers
    patches = [Patch("resid", i, 0) for i in range(n + 1)] + [Patch("block_out", 1, 0)]
    logits = patched_logits(tiny, clean.ids, corr.ids, patches)
    assert (logits[2:] - logits[1]).abs().max() <= TOL


def test_uses_layer_is_the_first_state_over_half(tiny_models):
    r = _pair(tiny_models["tiny-gpt2"])
    r.effect_ld["resid_last"] = [0.0, 0.2, 0.6, 0.4, 1.0]
    assert r.uses_layer("resid_last") == 2
    r.effect_ld["block_out_last"] = [0.1, 0.7, 0.2, 0.1]
    assert r.uses_layer("block_out_last") == 1


def test_unaligned_or_bad_pairs_are_explained(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    clean = subject_tokens(lm, TEMPLATE.format(CLEAN), CLEAN)
    with pytest.raises(ValueError, match="as many tokens"):
        swap_subject(lm, clean, "Eiffel Tower")
    with pytest.raises(ValueError, match="does not occur"):
        patch_pair(lm, TEMPLATE.format(CLEAN), "Paris", CORRUPT)
    with pytest.raises(ValueError, match="same number of tokens"):
        patched_logits(lm, clean.ids, clean.ids[:, :-1], [])
    with pytest.raises(ValueError, match="outside"):
        patched_logits(lm, clean.ids, clean.ids, [Patch("resid", lm.n_layers + 1, 0)])
    # A pair whose two prompts give the same answer has nothing to restore: refused with check.
    with pytest.raises(ValueError, match="predict"):
        patch_pair(lm, TEMPLATE.format(CLEAN), CLEAN, CLEAN)


def _facts(lm, subjects, right=True):
    rows = []
    for i, s in enumerate(subjects):
        f = subject_tokens(lm, TEMPLATE.format(s), s)
        logits = patched_logits(lm, f.ids, f.ids, [])
        pred = lm.tokenizer.decode([int(logits[0].argmax())]).strip() or "?"
        rows.append(
            {
                "id": f"f{i}",
                "subject": s,
                "template": TEMPLATE,
                "relation": "r",
                "answer": pred if right else pred + "zzz",
            }
        )
    return [Item(r["id"], TEMPLATE.format(r["subject"]), r) for r in rows]


def test_swap_candidates_same_relation_only():
    rows = [("a", "r1"), ("b", "r2"), ("c", "r1"), ("d", "r1")]
    items = [Item(s, s, {"subject": s, "relation": r, "answer": "x"}) for s, r in rows]
    assert swap_candidates(items, 2, 8) == ["d", "a"]
    assert swap_candidates(items, 1, 8) == []


def test_process_rows(tiny_models):
    lm = tiny_models["tiny-neox"]
    items = _facts(lm, ["capital", "layer", "sat"])
    ctx = RunContext(lm.name, "activation_patching", "facts", "run")
    out = process(lm, items, PatchingConfig(n_pairs=1, candidates=2), ctx)
    for table, frame in out.items():
        schema.conform(table, frame)  # what the job writer does: no NaN in typed columns
    m = out["metrics"]
    summ = m[m["layer_kind"] == "summary"]
    assert (summ.loc[summ["metric"] == "answer_correct", "value"] == 1.0).all()
    found = summ[summ["metric"] == "pair_found"]
    assert len(found) >= 1
    curves = m[m["layer_kind"] != "summary"]
    if (found["value"] == 1.0).any():
        assert set(curves["variant"]) == set(VARIANTS)
        assert EFFECT_METRIC in set(curves["metric"])
        uses = summ[(summ["metric"] == USES_REL_METRIC) & (summ["variant"] == USES_VARIANT)]
        assert uses["value"].between(0, 1).all()
        assert USES_METRIC in set(summ["metric"])
        assert curves["value"].notna().all()
    assert out["fact_checks"]["correct"].all()
    wrong = process(lm, _facts(lm, ["capital", "layer"], right=False), PatchingConfig(), ctx)
    assert not (wrong["metrics"]["layer_kind"] != "summary").any()  # wrong facts: no curves
    assert not wrong["fact_checks"]["correct"].any()


def test_cached_prefix_matches_full_recompute(tiny):
    clean = subject_tokens(tiny, TEMPLATE.format(CLEAN), CLEAN)
    corr = swap_subject(tiny, clean, CORRUPT)
    last, n = clean.n_tokens - 1, tiny.n_layers
    patches = [Patch("resid", i, last) for i in range(n + 1)]
    patches += [Patch("block_out", i, last) for i in range(n)] + [Patch("resid", 2, clean.start)]
    full = patched_logits(tiny, clean.ids, corr.ids, patches, use_cache=False)
    cached = patched_logits(tiny, clean.ids, corr.ids, patches, batch_rows=4, use_cache=True)
    assert torch.allclose(cached, full, atol=TOL)


def test_patched_logits_rows_are_clean_then_corrupted(tiny_models):
    lm = tiny_models["tiny-llama"]
    clean = subject_tokens(lm, TEMPLATE.format(CLEAN), CLEAN)
    corr = swap_subject(lm, clean, CORRUPT)
    both = patched_logits(lm, clean.ids, corr.ids, [])
    with lm.lock, torch.inference_mode():
        ref_clean = lm.bridge(clean.ids)[0, -1]
        ref_corr = lm.bridge(corr.ids)[0, -1]
    assert torch.allclose(both[0], ref_clean, atol=TOL)
    assert torch.allclose(both[1], ref_corr, atol=TOL)


def _rel_items(rows):
    return [Item(s, s, {"subject": s, "relation": r, "answer": "x"}) for s, r in rows]


def test_facts_in_order_round_robin_over_relations():
    items = _rel_items([("a", "A"), ("b", "A"), ("c", "A"), ("d", "B"), ("e", "B"), ("f", "C")])
    assert facts_in_order(items) == [0, 3, 5, 1, 4, 2]  # first of each relation, then second...
    assert facts_in_order(items, stride=2) == [0, 4, 2]  # stride on the file first: 0, 2, 4
    assert facts_in_order(items, "dataset", 2) == [0, 2, 4]
    assert facts_in_order([]) == []
    with pytest.raises(ValueError, match="relations"):
        facts_in_order(items, "random")
    with pytest.raises(ValueError, match="relations, dataset"):
        PatchingConfig().with_overrides({"order": "random"})


def test_sixty_pairs_span_the_team_relations_without_a_model(monkeypatch):
    """On the team's fact file (sorted by relation), 60 pairs cover every relation."""
    from types import SimpleNamespace

    import precompute.methods.activation_patching as ap
    from precompute.datasets import load_dataset
    from precompute.facts import fact_parts, summary_record

    items, _ = load_dataset("facts")
    relation = {it.prompt_id: fact_parts(it)[3] for it in items}
    assert len(set(relation.values())) >= 6
    first = facts_in_order(items)[:60]
    assert {relation[items[i].prompt_id] for i in first} == set(relation.values())

    # process() with the model faked out: every fact answered, every other one without a partner
    fact = SimpleNamespace(ids=None, text="")
    monkeypatch.setattr(ap, "subject_tokens", lambda *a, **k: fact)
    monkeypatch.setattr(ap, "top_token", lambda *a: (0, 1.0))
    monkeypatch.setattr(ap, "answer_matches", lambda *a: True)
    monkeypatch.setattr(ap, "fact_check_row", lambda *a: {"x": 1})
    monkeypatch.setattr(ap, "prompt_row", lambda *a: {"x": 1})
    monkeypatch.setattr(ap, "find_pair", lambda lm, it, i, cfg: (i if i % 2 else None, ""))
    monkeypatch.setattr(
        ap, "result_records", lambda r, n, pid: [summary_record(pid, n, "p_clean", 1.0, "prob")]
    )
    lm, ctx = SimpleNamespace(n_layers=4), RunContext("m", "activation_patching", "facts")

    def relations(order: str) -> set[str]:
        m = process(lm, items, PatchingConfig(order=order), ctx)["metrics"]
        pairs = m.loc[(m["metric"] == "pair_found") & (m["value"] == 1.0), "prompt_id"]
        assert len(pairs) == 60
        return {relation[p] for p in pairs}

    assert relations("relations") == set(relation.values())  # all 12
    assert len(relations("dataset")) < len(set(relation.values()))  # file order: the first ones
