"""Issue 13, live answers in seconds: the fast paths give the reference numbers.

* the fused, cache-blocked lens read-out equals a plain float64 computation from
  ``lens_logits`` (every statistic, every block shape, both norm variants);
* the one-pass forward (``states_and_logits``) equals the bridge's ``residual_states``;
* a streamed causal trace ends with the scores of the non-streamed trace, and its first frame
  already holds cells.
"""

from __future__ import annotations

import pytest
import torch

from precompute.lenses import fused, readout
from precompute.lenses.readout import lens_from_states, lens_logits
from precompute.model.internals import residual_states
from precompute.model.replay import states_and_logits

PROMPT = "The Eiffel Tower is located in the city of Paris, which is the capital of France"


@torch.inference_mode()
def _reference(lm, states, logits, ids, k, variant):
    """Every statistic from the full logits, in float64."""
    z = lens_logits(lm, states, variant, final_state=states[-1]).double()  # (S, T, V)
    logp = torch.log_softmax(z, -1)
    logq = torch.log_softmax(logits.double(), -1)  # (T, V)
    q = logq.exp()
    kl = (q * (logq - logp)).sum(-1)
    ent = -(logp.exp() * logp).sum(-1)
    star = logq.argmax(-1)
    z_star = z.gather(-1, star.expand(z.shape[0], -1)[..., None])
    rank = 1 + (z > z_star).sum(-1)
    nxt = torch.cat([ids[1:], ids[:1]])
    ce_next = -logp.gather(-1, nxt.expand(z.shape[0], -1)[..., None])[..., 0]
    top = z.topk(k, -1)
    return dict(kl=kl, entropy=ent, rank=rank, ce_next=ce_next, top=top, logp=logp, star=star)


@pytest.mark.parametrize("variant", ["recompute_ln", "cached_final_scale"])
@pytest.mark.parametrize("rows", [None, 1])  # default blocks; one position per block
@pytest.mark.parametrize("group", [None, 16])  # top-k searched in 5 or 20 vocabulary groups
@pytest.mark.parametrize("stat", [None, 1])  # statistics read a block at once; one row at a time
@torch.inference_mode()
def test_fused_readout_equals_plain_float64(tiny, variant, rows, group, stat, monkeypatch):
    if rows is not None:
        monkeypatch.setattr(readout, "BLOCK_ROWS", rows)
    if stat is not None:
        monkeypatch.setattr(fused, "STAT_ELEMS", stat)
    if group is not None:
        monkeypatch.setattr(fused, "TOPK_GROUP", group)
    ids = tiny.tokenize(PROMPT)
    states, logits = residual_states(tiny, ids)
    r = lens_from_states(tiny, states, logits, ids[0], k=5, variant=variant)
    ref = _reference(tiny, states, logits, ids[0], 5, variant)
    close = dict(atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(r.kl.double(), ref["kl"].clamp_min(0), **close)
    torch.testing.assert_close(r.entropy.double(), ref["entropy"], **close)
    torch.testing.assert_close(r.ce_next[:, :-1].double(), ref["ce_next"][:, :-1], **close)
    assert torch.isnan(r.ce_next[:, -1]).all()
    assert torch.equal(r.final_ids, ref["star"])
    p_star = ref["logp"].gather(-1, ref["star"].expand(len(states), -1)[..., None])[..., 0]
    torch.testing.assert_close(r.prob_final.double(), p_star.exp(), **close)
    torch.testing.assert_close(
        r.topk_probs.double(),
        ref["top"]
        .values.sub(
            torch.logsumexp(
                lens_logits(tiny, states, variant, final_state=states[-1]).double(), -1
            )[..., None]
        )
        .exp(),
        **close,
    )
    # Ids and ranks are exact wherever the float32 logits are not within rounding of a tie.
    same = r.topk_ids == ref["top"].indices
    gaps = (ref["top"].values[..., :-1] - ref["top"].values[..., 1:]).abs()
    tied = torch.zeros_like(same)
    tied[..., :-1] |= gaps < 1e-4
    tied[..., 1:] |= gaps < 1e-4
    assert (same | tied).all()
    assert (r.rank_final - ref["rank"]).abs().max() <= 1


def test_one_pass_forward_equals_bridge_states(tiny):
    ids = tiny.tokenize(PROMPT)
    states, logits = residual_states(tiny, ids)
    fast_states, fast_logits = states_and_logits(tiny, ids)
    torch.testing.assert_close(fast_states, states, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_logits, logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("token_range", ["all", "subject_last"])
def test_streamed_trace_ends_with_the_trace_and_starts_with_cells(tiny_models, token_range):
    from precompute.model.tracing import CausalTracingConfig, trace, trace_frames

    lm = tiny_models["tiny-llama"]
    prompt, subject = "The Eiffel Tower is located in the city of", "Eiffel Tower"
    cfg = CausalTracingConfig(kinds="hidden,mlp", noise_sigma=1.0, token_range=token_range)
    frames = list(trace_frames(lm, prompt, subject, cfg, threads=1))
    whole = trace(lm, prompt, subject, cfg)
    last = frames[-1]
    assert last.done == last.total == len(frames) - 1
    for kind, grid in whole.scores.items():
        torch.testing.assert_close(last.result.scores[kind], grid, atol=0, rtol=0, equal_nan=True)
        assert last.cells[kind].all()
    assert last.result.p_corrupt == whole.p_corrupt
    first = frames[1]  # after one step: one block's column has cells, the rest waits
    b, _ = first.result.subject_range
    hidden = first.cells["hidden"]
    assert hidden[:b].all() and hidden[-1].any() and not hidden[b:].all()
    done = [int(f.cells["hidden"].sum()) for f in frames]
    assert done == sorted(done)  # cells only fill in


def test_stopping_a_stream_runs_no_more_steps(tiny_models, monkeypatch):
    from precompute.model import tracing

    lm = tiny_models["tiny-gpt2"]
    cfg = tracing.CausalTracingConfig(kinds="hidden", noise_sigma=1.0)
    calls = []
    real = tracing.run_from
    monkeypatch.setattr(tracing, "run_from", lambda *a, **k: calls.append(1) or real(*a, **k))
    frames = tracing.trace_frames(lm, "The Eiffel Tower is in the city of", "Eiffel Tower", cfg)
    for fr in frames:
        if fr.done == 2:
            frames.close()
    assert len(calls) == 2 and fr.total > 2


def test_live_trace_draws_partial_heatmaps_in_streamlit(tiny_models, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import facts_views, live

    monkeypatch.setattr(live, "get_model", lambda name: tiny_models["tiny-llama"])
    monkeypatch.setattr(facts_views, "DRAW_EVERY_S", 0.0)  # every frame

    def page():
        import streamlit as st

        from app import facts_views

        prompt = "The Eiffel Tower is located in the city of"
        seen = []
        df = facts_views.live_trace("tiny-llama", prompt, (4, 16), ["hidden"], seen.append)
        st.session_state["n_rows"], st.session_state["seen"] = len(df), seen

    at = AppTest.from_function(page, default_timeout=120).run()
    assert not at.exception
    seen = at.session_state["seen"]
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert any(c.value.startswith("Partial trace:") for c in at.caption)
    assert at.session_state["n_rows"] > 0


def test_suffix_replay_equals_full_replay(tiny_models, monkeypatch):
    """Llama-like blocks replay from the subject on, the clean prefix's keys and values cached."""
    from precompute.model import tracing

    lm = tiny_models["tiny-llama"]
    cfg = tracing.CausalTracingConfig(noise_sigma=1.0, window=2)
    prompt, subject = "The Eiffel Tower is located in the city of", "located in"
    used = []
    real = tracing.prefix_kv
    monkeypatch.setattr(tracing, "prefix_kv", lambda *a: used.append(1) or real(*a))
    fast = tracing.trace(lm, prompt, subject, cfg)
    assert used and real(lm, tracing.capture(lm, lm.tokenize(prompt)), 2) is not None
    monkeypatch.setattr(tracing, "prefix_kv", lambda *a: None)
    full = tracing.trace(lm, prompt, subject, cfg)
    for kind, grid in full.scores.items():
        torch.testing.assert_close(fast.scores[kind], grid, atol=1e-6, rtol=0)


def test_readout_without_final_logits_reads_h_L_once(tiny):
    """``lens_readout`` takes the model's output from its own read-out of h_L: same numbers."""
    ids = tiny.tokenize(PROMPT)
    states, logits = residual_states(tiny, ids)
    fast = readout.lens_readout(tiny, ids, k=5)
    ref = lens_from_states(tiny, states, logits, ids[0], k=5)
    for name in ("kl", "entropy", "ce_final", "prob_final", "topk_probs"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), atol=2e-5, rtol=1e-4)
    assert torch.equal(fast.final_ids, ref.final_ids)
    assert float(fast.kl[-1].abs().max()) < 1e-5  # h_L read out is the model's output
