"""Causal tracing (METHODS.md B1): the invariants on tiny random models, fast == ROME reference."""

from __future__ import annotations

import pytest
import torch

from precompute.facts import subject_tokens
from precompute.methods.causal_tracing import (
    CausalTracingConfig,
    TraceCancelled,
    process,
    token_groups,
    trace,
    trace_reference,
    window_layers,
)
from precompute.model.load import load_model
from precompute.schema import conform
from precompute.types import Item, RunContext

PROMPT = "The cat sat on the mat and the dog"
SUBJECT = "cat sat"
SMALL = CausalTracingConfig(samples=3, window=2, noise_sigma=0.5, max_tokens=32)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run faster on one thread on a shared CPU; restore afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-neox", "tiny-llama"])
def lm(request):
    return load_model(request.param)


@pytest.fixture(scope="module")
def traces(lm):
    return trace(lm, PROMPT, SUBJECT, SMALL), trace_reference(lm, PROMPT, SUBJECT, SMALL)


def test_fast_equals_reference(traces):
    fast, ref = traces
    assert fast.p_corrupt == pytest.approx(ref.p_corrupt, abs=1e-6)
    for kind in ("hidden", "mlp", "attn"):
        assert torch.allclose(fast.scores[kind], ref.scores[kind], atol=1e-5, rtol=0), kind


def test_restoring_before_subject_gives_corrupted_probability(traces):
    _, ref = traces  # the reference really runs these restorations
    b, _ = ref.subject_range
    assert b > 0
    for kind, grid in ref.scores.items():
        assert torch.all(grid[:b] == ref.p_corrupt), kind


def test_restoring_last_layer_at_last_token_gives_clean_probability(traces):
    for r in traces:
        assert float(r.scores["hidden"][-1, -1]) == pytest.approx(r.p_clean, abs=1e-6)


def test_noise_hurts_and_restoring_subject_helps_somewhere(traces):
    fast, _ = traces
    b, e = fast.subject_range
    assert fast.p_corrupt != fast.p_clean
    assert not torch.all(fast.scores["hidden"][b:e] == fast.p_corrupt)


def test_zero_noise_gives_zero_effect(lm):
    cfg = CausalTracingConfig(samples=2, window=2, noise_scale=0.0, noise_sigma=1.0)
    r = trace(lm, PROMPT, SUBJECT, cfg)
    assert r.p_corrupt == pytest.approx(r.p_clean, abs=1e-6)
    for grid in r.scores.values():
        assert torch.allclose(grid, torch.full_like(grid, r.p_corrupt), atol=1e-6)


def test_subject_range_by_character_spans(lm):
    f = subject_tokens(lm, PROMPT, SUBJECT)
    toks = lm.token_strs(f.ids[0, f.start : f.end])
    assert "".join(toks).strip() == SUBJECT
    assert f.start > 0 and f.end < f.n_tokens


@pytest.mark.parametrize(
    ("prompt", "subject", "match"),
    [
        (PROMPT, "elephant", "does not occur"),
        ("The cat sat", "The cat sat", "whole prompt"),
        ("On the mat sat the cat", "cat", "ends with the subject"),
        (PROMPT, "  ", "empty"),
    ],
)
def test_bad_subjects_are_clear_errors(prompt, subject, match):
    lm = load_model("tiny-gpt2")
    with pytest.raises(ValueError, match=match):
        trace(lm, prompt, subject, SMALL)


def test_prompt_longer_than_live_limit_is_an_error():
    lm = load_model("tiny-gpt2")
    with pytest.raises(ValueError, match="at most 5"):
        trace(lm, PROMPT, SUBJECT, CausalTracingConfig(max_tokens=5, noise_sigma=0.5))


def test_cancel_stops_the_trace():
    lm = load_model("tiny-gpt2")
    seen = []

    def progress(frac):
        seen.append(frac)
        return False

    with pytest.raises(TraceCancelled):
        trace(lm, PROMPT, SUBJECT, SMALL, progress=progress)
    assert len(seen) == 1
    assert not lm.lock.locked()


def test_token_groups_and_windows():
    assert token_groups(8, 2, 5) == [
        "before",
        "before",
        "first_subject",
        "middle_subject",
        "last_subject",
        "first_subsequent",
        "further",
        "last",
    ]
    assert token_groups(4, 1, 2) == ["before", "last_subject", "first_subsequent", "last"]
    assert list(window_layers(0, 10, 30)) == list(range(0, 5))
    assert list(window_layers(29, 10, 30)) == list(range(24, 30))
    assert list(window_layers(3, 1, 30)) == [3]


def test_process_rows_and_wrong_facts_are_explained():
    lm = load_model("tiny-llama")
    ctx = RunContext(model=lm.name, method="causal_tracing", dataset="facts")
    clean = trace(lm, PROMPT, SUBJECT, SMALL)
    right = Item("f-1", PROMPT, {"subject": SUBJECT, "answer": clean.answer.strip() or "x"})
    wrong = Item("f-2", PROMPT, {"subject": SUBJECT, "answer": "zebra"})
    cfg = CausalTracingConfig(samples=2, window=2, noise_sigma=0.5, kinds="hidden")
    out = process(lm, [right, wrong], cfg, ctx)
    m = conform("metrics", out["metrics"])
    correct = m[m["metric"] == "correct"].set_index("prompt_id")["value"]
    assert correct["f-2"] == 0.0
    assert set(m[m["prompt_id"] == "f-2"]["metric"]) >= {"p_clean", "correct"}
    assert m[(m["prompt_id"] == "f-2") & (m["metric"] == "p_restored")].empty
    if correct["f-1"] == 1.0:
        cells = m[(m["prompt_id"] == "f-1") & (m["metric"] == "p_restored") & (m["position"] >= 0)]
        assert len(cells) == clean.n_tokens * lm.n_layers
        agg = m[(m["prompt_id"] == "f-1") & (m["position"] == -1) & (m["layer_kind"] == "block")]
        assert {"last", "last_subject", "before"} <= set(agg["grp"])
        assert agg["rel_depth"].between(0, 1).all()
    assert not m["value"].isna().any()
    assert set(out["prompts"]["prompt_id"]) == {"f-1", "f-2"}
    checks = conform("fact_checks", out["fact_checks"]).set_index("prompt_id")
    assert not checks.loc["f-2", "correct"]
    assert checks.loc["f-2", "gold"] == "zebra"


@pytest.mark.slow
def test_smollm_knows_paris_and_fast_matches_reference():
    lm = load_model("smollm2-135m")
    cfg = CausalTracingConfig(kinds="hidden", token_range="subject_last")
    text = "The capital of France is the city of"
    fast = trace(lm, text, "France", cfg, answer="Paris")
    ref = trace_reference(lm, text, "France", cfg)
    assert fast.correct is True
    assert fast.p_corrupt < fast.p_clean
    keep = ~torch.isnan(ref.scores["hidden"])
    diff = (fast.scores["hidden"][keep] - ref.scores["hidden"][keep]).abs().max()
    assert float(diff) <= 1e-5
    assert float(fast.scores["hidden"][-1, -1]) == pytest.approx(fast.p_clean, abs=1e-5)


def test_sigma_is_measured_at_the_noise_hook(lm):
    from precompute.methods.causal_tracing import embedding_sigma

    f = subject_tokens(lm, PROMPT, SUBJECT)
    ids, b, e = f.ids, f.start, f.end
    with torch.inference_mode():
        _, cache = lm.bridge.run_with_cache(ids, names_filter=lambda n: n == "hook_embed")
    expected = float(cache["hook_embed"][0, b:e].float().std())
    assert embedding_sigma(lm, [(PROMPT, SUBJECT)]) == pytest.approx(expected, rel=1e-5)


def test_measured_sigma_does_not_deadlock_on_the_model_lock():
    lm = load_model("tiny-gpt2")
    cfg = CausalTracingConfig(samples=2, window=2, kinds="hidden", token_range="subject_last")
    r = trace(lm, "The capital of France is the city of", "France", cfg)
    assert r.sigma > 0 and not lm.lock.locked()


def test_live_panel_equals_precompute_table(tiny_models, monkeypatch):
    """Page 30's live trace and the precomputed table give the same numbers for one fact."""
    from app import facts_views, live
    from precompute.model.replay import top_token

    lm = tiny_models["tiny-llama"]
    monkeypatch.setattr(live, "get_model", lambda name: lm)
    fact = subject_tokens(lm, PROMPT, SUBJECT)
    answer = lm.tokenizer.decode([top_token(lm, fact.ids)[0]]).strip()
    assert answer, "the tiny model's top token should not be blank for this prompt"
    item = Item("f-1", PROMPT, {"subject": SUBJECT, "answer": answer})
    ctx = RunContext(model=lm.name, method="causal_tracing", dataset="facts")
    table = conform(
        "metrics", process(lm, [item], CausalTracingConfig(kinds="hidden"), ctx)["metrics"]
    )
    cells = table[(table["metric"] == "p_restored") & (table["position"] >= 0)]
    stored = cells.set_index(["position", "layer"])["value"].sort_index()
    span = (PROMPT.index(SUBJECT), PROMPT.index(SUBJECT) + len(SUBJECT))
    live_rows = facts_views.live_trace(lm.name, PROMPT, span, ["hidden"], None)
    shown = live_rows.set_index(["position", "layer"])["p_restored"].sort_index()
    assert len(stored) == len(shown) == fact.n_tokens * lm.n_layers
    assert (stored - shown).abs().max() == 0.0


def test_failed_corruption_is_counted_not_averaged_and_window_scales():
    from precompute.facts import scaled_window
    from precompute.model.tracing import CORRUPTION_MAX_RATIO

    lm = load_model("tiny-llama")
    ctx = RunContext(model=lm.name, method="causal_tracing", dataset="facts")
    clean = trace(lm, PROMPT, SUBJECT, SMALL)
    item = Item("f-1", PROMPT, {"subject": SUBJECT, "answer": clean.answer.strip() or "x"})
    noiseless = CausalTracingConfig(samples=2, noise_scale=0.0, noise_sigma=1.0, kinds="hidden")
    r = trace(lm, PROMPT, SUBJECT, noiseless)
    assert r.p_corrupt > CORRUPTION_MAX_RATIO * r.p_clean and not r.corruption_ok
    assert r.window == scaled_window(lm.n_layers)  # "auto": about a fifth of the blocks
    m = conform("metrics", process(lm, [item], noiseless, ctx)["metrics"])
    facts = m[m["layer_kind"] == "fact"].set_index("metric")["value"]
    assert facts["corruption_ok"] == 0.0 and facts["window"] == scaled_window(lm.n_layers)
    averaged = m[(m["position"] == -1) & (m["layer_kind"] == "block")]
    assert averaged.empty  # recorded, but left out of the averages
    with pytest.raises(ValueError, match="auto"):
        trace(lm, PROMPT, SUBJECT, CausalTracingConfig(window="ten", noise_sigma=0.5))
    assert trace(lm, PROMPT, SUBJECT, CausalTracingConfig(window=1, noise_sigma=0.5)).window == 1


def test_stride_picks_items_of_the_whole_dataset(tiny_models, tmp_path):
    """``stride`` is ``items[::stride]`` of the dataset, as in knockout (one chunk: the file)."""
    import pandas as pd

    from precompute.datasets import load_facts
    from precompute.methods import get_method
    from precompute.results.jobs import run_job

    lm, method = tiny_models["tiny-gpt2"], get_method("causal_tracing")
    cfg = CausalTracingConfig(
        samples=2, kinds="hidden", token_range="subject_last", noise_sigma=0.5, stride=3
    )
    assert method.chunk_size is None  # n_correct and the round-robin need the whole file
    folder = run_job(lm, method, "facts", cfg, tmp_path, n_items=14, progress=False)
    tried = pd.concat(pd.read_parquet(p) for p in folder.glob("chunks/*/fact_checks.parquet"))
    items, _ = load_facts(14)
    assert sorted(tried["prompt_id"]) == [it.prompt_id for it in items[::3]]


def _items(relations: str) -> list[Item]:
    return [
        Item(f"f-{i}", PROMPT, {"subject": SUBJECT, "relation": r, "answer": "x"})
        for i, r in enumerate(relations)
    ]


def test_facts_are_tried_round_robin_over_relations():
    from precompute.methods.causal_tracing import tried_order

    items = _items("AAAABBC")  # a file ordered by relation
    ids = [it.prompt_id for it in tried_order(items, CausalTracingConfig())]
    assert ids == ["f-0", "f-4", "f-6", "f-1", "f-5", "f-2", "f-3"]  # A B C A B A A
    by_file = tried_order(items, CausalTracingConfig(order="file"))
    assert [it.prompt_id for it in by_file] == [f"f-{i}" for i in range(7)]
    strided = tried_order(items, CausalTracingConfig(stride=2), offset=1)  # f-1 A, f-3 A, f-5 B
    assert [it.prompt_id for it in strided] == ["f-1", "f-5", "f-3"]
    with pytest.raises(ValueError, match="order"):
        tried_order(items, CausalTracingConfig(order="random"))
    with pytest.raises(ValueError):
        CausalTracingConfig().with_overrides({"order": "random"})


def test_n_correct_stops_after_that_many_correct_facts_and_wrong_ones_cost_no_trace(monkeypatch):
    from precompute.methods import causal_tracing as ct

    lm = load_model("tiny-llama")
    answer = trace(lm, PROMPT, SUBJECT, SMALL).answer.strip() or "x"
    items = _items("AABBCC")
    for it, right in zip(items, [1, 1, 0, 1, 1, 0], strict=True):
        it.fields["answer"] = answer if right else "zebra"
    steps: list[tuple[int, int]] = []
    real = ct.trace_frames

    def counted(*a, **k):
        for fr in real(*a, **k):
            steps.append((fr.done, fr.total))
            yield fr

    monkeypatch.setattr(ct, "trace_frames", counted)
    cfg = CausalTracingConfig(samples=2, window=2, noise_sigma=0.5, kinds="hidden", n_correct=3)
    ctx = RunContext(model=lm.name, method="causal_tracing", dataset="facts")
    m = conform("metrics", process(lm, items, cfg, ctx)["metrics"])
    correct = m[m["metric"] == "correct"].set_index("prompt_id")["value"].to_dict()
    # round-robin A B C A ...: f-0 right, f-2 wrong, f-4 right, f-1 right: three, then stop
    assert correct == {"f-0": 1.0, "f-2": 0.0, "f-4": 1.0, "f-1": 1.0}
    assert m[(m["prompt_id"] == "f-2") & (m["metric"] == "p_restored")].empty
    total = steps[0][1]
    assert [d for d, _ in steps].count(0) == 4  # four facts tried
    assert len(steps) == 4 + 3 * total  # the wrong one ran no restoration step
    assert cfg.to_dict()["n_correct"] == 3 and cfg.to_dict()["order"] == "relations"


@pytest.mark.parametrize(
    ("prompt", "subject", "window"),
    [
        ("Paris is the capital of the country of", "Paris", "auto"),  # subject first
        (PROMPT, SUBJECT, 1),
        (PROMPT, "mat and", "auto"),  # late subject
    ],
)
def test_replay_from_the_restored_token_equals_rome_on_llama_blocks(prompt, subject, window):
    """Llama-like blocks: each restoration computes positions p..T-1 only; ROME's numbers."""
    from precompute.model import tracing

    lm = load_model("tiny-llama")
    cfg = CausalTracingConfig(samples=3, window=window, noise_sigma=0.5, batch_seqs=9)
    fact = subject_tokens(lm, prompt, subject)
    assert tracing.prefix_kv(lm, tracing.capture(lm, fact.ids), fact.start) is not None
    fast, ref = trace(lm, prompt, subject, cfg), trace_reference(lm, prompt, subject, cfg)
    assert fast.p_corrupt == pytest.approx(ref.p_corrupt, abs=1e-6)
    for kind in ("hidden", "mlp", "attn"):
        torch.testing.assert_close(fast.scores[kind], ref.scores[kind], atol=1e-5, rtol=0)


def test_restorations_compute_only_their_token_on_from_their_first_block(monkeypatch):
    """Token-blocks run: the corrupted copies once from the subject on, then for a hidden
    restoration at (l, p) blocks l+1..L-1 on positions p..T-1, for S copies."""
    from precompute.model import trace_parts

    lm = load_model("tiny-llama")
    calls = []
    real = trace_parts._block

    def spy(lm_, rep, j, x, q0, *a):
        assert x.shape[1] == rep.states.shape[1] - q0  # exactly the positions q0..T-1
        calls.append((x.shape[0], x.shape[1]))
        return real(lm_, rep, j, x, q0, *a)

    monkeypatch.setattr(trace_parts, "_block", spy)
    cfg = CausalTracingConfig(samples=3, kinds="hidden", noise_sigma=0.5)
    r = trace(lm, PROMPT, SUBJECT, cfg)
    (b, _), n_tok, n_layers = r.subject_range, r.n_tokens, lm.n_layers
    corrupted = n_layers * 3 * (n_tok - b)
    restored = sum(
        (n_layers - ell - 1) * (n_tok - p) * 3 for p in range(b, n_tok) for ell in range(n_layers)
    )
    assert sum(rows * toks for rows, toks in calls) == corrupted + restored
