"""Adjacent layer swap (METHODS.md C2) on the tiny random models."""

from __future__ import annotations

import re

import pytest
import torch

from precompute.methods.layer_swap import LayerSwapConfig, process, run_one
from precompute.model import interventions as iv
from precompute.model.replay import forward
from precompute.schema import conform
from precompute.types import RunContext

PROMPT = "The cat sat on the mat and the dog sat on the log. Paris is the capital of France."


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_swapping_a_layer_with_itself_changes_nothing(tiny, method):
    ids = tiny.tokenize(PROMPT)
    ivs = [iv.Intervention("swap", ell, other=ell) for ell in range(tiny.n_layers)]
    m = iv.sweep(tiny, ids, ivs, method=method)
    torch.testing.assert_close(m["kl"], torch.zeros(len(ivs)), atol=1e-6, rtol=0)
    assert torch.all(m["top1_same"] == 1.0)
    torch.testing.assert_close(m["delta_loss"], torch.zeros(len(ivs)), atol=1e-5, rtol=0)


def test_fast_swap_equals_reference(tiny):
    ids = tiny.tokenize(PROMPT)
    ivs = iv.swap_all(tiny.n_layers) + [iv.Intervention("swap", 0, other=2)]
    fast = iv.sweep(tiny, ids, ivs, method="fast")
    ref = iv.sweep(tiny, ids, ivs, method="reference")
    for k in ref:
        torch.testing.assert_close(fast[k], ref[k], atol=1e-4, rtol=0)
    assert fast["kl"].min() > 1e-4  # a real swap of a random model changes the output


@torch.inference_mode()
def test_swapping_twice_restores_the_model(tiny):
    ids = tiny.tokenize(PROMPT)
    before = forward(tiny, ids)
    swapped = forward(tiny, ids, swap=(1, 2))
    after = forward(tiny, ids)
    assert (swapped - before).abs().max() > 1e-4
    torch.testing.assert_close(after, before, atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-llama"])
@torch.inference_mode()
def test_block_order_swap_equals_state_dict_swap(arch, tiny_models):
    from precompute.model.load import load_model

    lm = tiny_models[arch]
    ids = lm.tokenize(PROMPT)
    normal, swapped = iv.intervened_logits(lm, ids, iv.Intervention("swap", 1))
    other = load_model(arch, device="cpu")  # a fresh copy whose weights we exchange (LAD's way)
    hf = other.bridge.original_model
    sd = hf.state_dict()
    pattern = re.compile(r"\.(h|layers)\.([12])\.")
    swap = {"1": "2", "2": "1"}
    hf.load_state_dict(
        {pattern.sub(lambda m: f".{m[1]}.{swap[m[2]]}.", k): v.clone() for k, v in sd.items()}
    )
    torch.testing.assert_close(other.bridge(ids)[0], swapped, atol=1e-4, rtol=0)
    assert (normal - swapped).abs().max() > 1e-3


def test_pair_out_of_range_is_a_clear_error(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    ids = lm.tokenize(PROMPT)
    for ell in (-1, lm.n_layers - 1):
        with pytest.raises(ValueError, match="Cannot swap"):
            iv.sweep(lm, ids, [iv.Intervention("swap", ell)])


def test_one_token_prompt_is_a_clear_error(tiny_models):
    lm = tiny_models["tiny-neox"]
    with pytest.raises(ValueError, match="at least 2"):
        run_one(lm, PROMPT, LayerSwapConfig(max_tokens=1))


def test_blocks_of_different_shapes_cannot_be_swapped():
    from precompute.model.load import load_model

    lm = load_model("tiny-gpt2", device="cpu")
    iv.block_stack(lm)[2].register_parameter("extra", torch.nn.Parameter(torch.zeros(3)))
    with pytest.raises(ValueError, match="cannot be swapped"):
        iv.validate(lm, iv.Intervention("swap", 1))


def test_process_rows_conform(tiny_models, wikitext_dir):
    from precompute.datasets import load_wikitext

    lm = tiny_models["tiny-llama"]
    items, _ = load_wikitext(wikitext_dir, n=2)
    ctx = RunContext(model=lm.name, method="layer_swap", dataset="wikitext", run_id="t")
    df = conform("metrics", process(lm, items, LayerSwapConfig(max_tokens=24), ctx)["metrics"])
    assert set(df["layer_kind"]) == {"pair"} and set(df["variant"]) == {"adjacent"}
    assert sorted(df["layer"].unique()) == list(range(lm.n_layers - 1))
    assert len(df) == 2 * (lm.n_layers - 1) * len(iv.METRIC_UNITS)
    assert df["value"].notna().all()
