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


def test_stride_picks_items_of_the_whole_dataset_across_chunks(tiny_models, tmp_path):
    """``stride`` is ``items[::stride]`` of the dataset, as in knockout, whatever the chunks."""
    import pandas as pd

    from precompute.datasets import load_facts
    from precompute.methods import get_method
    from precompute.results.jobs import run_job

    lm, method = tiny_models["tiny-gpt2"], get_method("causal_tracing")
    cfg = CausalTracingConfig(
        samples=2, kinds="hidden", token_range="subject_last", noise_sigma=0.5, stride=3
    )
    assert method.chunk_size and method.chunk_size % cfg.stride  # chunks cut across the stride
    folder = run_job(lm, method, "facts", cfg, tmp_path, n_items=14, progress=False)
    tried = pd.concat(pd.read_parquet(p) for p in folder.glob("chunks/*/fact_checks.parquet"))
    items, _ = load_facts(14)
    assert sorted(tried["prompt_id"]) == [it.prompt_id for it in items[::3]]
