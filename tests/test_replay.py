"""The one block replay (precompute.model.replay) and its lock: invariants and cross-talk."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch

from precompute.model import interventions as iv
from precompute.model import replay

PROMPT = "The cat sat on the mat and the dog sat on the log. Paris is the capital of France."


@torch.inference_mode()
def test_block_stack_is_the_bridge_blocks_in_order(tiny):
    blocks = replay.block_stack(tiny)
    assert len(blocks) == tiny.n_layers
    assert all(b is tiny.bridge.blocks[i] for i, b in enumerate(blocks))


@torch.inference_mode()
def test_normal_run_reproduces_the_models_logits(tiny):
    ids = tiny.tokenize(PROMPT)
    rep = replay.capture(tiny, ids, names=["blocks.0.hook_resid_post"])
    hf = tiny.bridge.original_model(ids).logits[0].float()
    torch.testing.assert_close(rep.logits, hf, atol=1e-4, rtol=0)
    torch.testing.assert_close(replay.read_out(tiny, rep.states[-1]), hf, atol=1e-4, rtol=0)
    torch.testing.assert_close(rep.cache["blocks.0.hook_resid_post"].float(), rep.states[1])
    assert rep.states.shape == (tiny.n_layers + 1, ids.shape[1], tiny.d_model)
    assert not tiny.lock.locked()


@torch.inference_mode()
def test_run_from_block_i_equals_the_full_run(tiny):
    ids = tiny.tokenize(PROMPT)
    rep = replay.capture(tiny, ids)
    for i in range(tiny.n_layers + 1):
        x = rep.states[i][None].repeat(2, 1, 1)  # a batch of two identical rows
        full = replay.run_from(tiny, rep, x, i, last_only=False)
        torch.testing.assert_close(full[1], rep.logits, atol=1e-4, rtol=0)
        last = replay.run_from(tiny, rep, x, i)
        torch.testing.assert_close(last[0], rep.logits[-1], atol=1e-4, rtol=0)
        h = replay.run_blocks(tiny, rep, rep.states[0][None], range(i))
        torch.testing.assert_close(h[0], rep.states[i], atol=1e-4, rtol=0)


@torch.inference_mode()
def test_prefix_cache_equals_full_recompute(tiny):
    ids = tiny.tokenize(PROMPT)

    def bump_last(x, hook):  # only the last position changes (counted from the end)
        x = x.clone()
        x[1, -1] += 100 * torch.linspace(-1, 1, x.shape[-1], dtype=x.dtype)
        return x

    hooks = [("blocks.0.hook_resid_post", bump_last)]
    full = replay.run_rows(tiny, ids, 3, hooks, reuse_prefix=False)
    cached = replay.run_rows(tiny, ids, 3, hooks, reuse_prefix=True)
    assert full.shape == cached.shape == (3, 1, tiny.d_vocab)
    torch.testing.assert_close(cached.float(), full.float(), atol=1e-4, rtol=0)
    assert (full[1] - full[0]).abs().max() > 1e-5  # the hook did something
    torch.testing.assert_close(full[0, 0].float(), replay.forward(tiny, ids)[0, -1].float())


@torch.inference_mode()
def test_swapped_forward_leaves_the_model_as_it_was(tiny):
    ids = tiny.tokenize(PROMPT)
    before = replay.forward(tiny, ids)
    swapped = replay.forward(tiny, ids, swap=(0, 1))
    after = replay.forward(tiny, ids)
    assert (swapped - before).abs().max() > 1e-4
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    rep = replay.capture(tiny, ids)
    h = replay.run_blocks(tiny, rep, rep.states[0][None], [1, 0, *range(2, tiny.n_layers)])
    torch.testing.assert_close(replay.read_out(tiny, h)[0], swapped[0].float(), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------
# Cross-talk: 20 sessions on one shared model, thread switching forced, hook removal delayed


def _live_calls(lm):
    """Every live entry point of the block replay, as (name, call) pairs with small settings."""
    from precompute.methods.attention_knockout import knockout_fact
    from precompute.model.tracing import CausalTracingConfig, trace

    ids = lm.tokenize(PROMPT)
    fact = "The Eiffel Tower is located in the city of"
    ct = CausalTracingConfig(samples=2, window=2, noise_sigma=0.5, kinds="hidden,mlp")
    last = lm.n_layers - 1
    calls = []
    for ell in (0, last):
        for kind, comp in (("delete", "block"), ("delete", "mlp"), ("swap", "block")):
            if kind == "swap" and ell == last:
                continue
            one = iv.Intervention(kind, ell, comp)
            calls.append(
                (f"{kind}-{comp}-{ell}", lambda one=one: iv.intervened_logits(lm, ids, one)[1])
            )
    for w in (1, 3):
        calls.append(
            (
                f"knockout-W{w}",
                lambda w=w: torch.tensor(
                    knockout_fact(lm, fact, "Eiffel Tower", window=w).p_new["subject"]
                ),
            )
        )
        calls.append(
            (
                f"knockout-mask-W{w}",
                lambda w=w: torch.tensor(
                    knockout_fact(lm, fact, "Eiffel Tower", window=w, impl="mask").p_new["last"]
                ),
            )
        )
    calls.append(
        ("trace", lambda: torch.stack(list(trace(lm, fact, "Eiffel Tower", ct).scores.values())))
    )
    return calls


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-llama"])
def test_twenty_sessions_get_their_own_numbers(arch, tiny_models, monkeypatch):
    lm = tiny_models[arch]
    calls = _live_calls(lm)
    alone = {name: fn() for name, fn in calls}
    original_remove = torch.utils.hooks.RemovableHandle.remove

    def slow_remove(self):  # a hook left on a little longer invites another session to fire it
        time.sleep(0.001)
        original_remove(self)

    monkeypatch.setattr(torch.utils.hooks.RemovableHandle, "remove", slow_remove)
    mismatches, errors = [], []

    def session(k: int) -> None:
        for j in range(len(calls)):
            name, fn = calls[(k + j) % len(calls)]
            try:
                if not torch.equal(fn(), alone[name]):
                    mismatches.append((k, name))
            except Exception as err:  # noqa: BLE001 - every failure is counted
                errors.append((k, name, repr(err)))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=session, args=(k,)) for k in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert mismatches == []
    assert not lm.lock.locked()


def test_a_long_trace_lets_a_short_request_in_between_steps(tiny_models):
    """Each replay step takes and releases the model lock: a long trace does not hold it."""
    from precompute.model.tracing import CausalTracingConfig, trace

    lm = tiny_models["tiny-llama"]
    cfg = CausalTracingConfig(samples=2, window=2, noise_sigma=0.5, batch_seqs=2, kinds="hidden")
    prompt = "The Eiffel Tower is located in the city of"
    seen: list[float] = []
    started = threading.Event()

    def progress(frac: float) -> None:
        seen.append(frac)
        started.set()

    worker = threading.Thread(target=trace, args=(lm, prompt, "Eiffel Tower", cfg, None, progress))
    worker.start()
    assert started.wait(60)
    replay.forward(lm, lm.tokenize("A short lens request"))
    steps_when_served = len(seen)
    worker.join()
    assert seen[-1] == 1.0 and steps_when_served < len(seen)  # served while the trace still ran
