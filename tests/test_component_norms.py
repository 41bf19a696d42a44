import pytest
import torch

from precompute.methods.component_norms import (
    HOOKS,
    ComponentNormsConfig,
    layer_summary,
    process,
    run_one,
    token_norms,
)
from precompute.types import Item, RunContext

PROMPT = "The cat sat on the mat and the dog sat on the log near Paris in France."


def cached(lm, ids):
    names = {t.format(i=i) for t in HOOKS.values() for i in range(lm.n_layers)}
    names |= {f"blocks.{i}.hook_resid_{s}" for i in range(lm.n_layers) for s in ("pre", "post")}
    with lm.lock:
        _, cache = lm.bridge.run_with_cache(ids, names_filter=lambda n: n in names)
    return cache


@pytest.mark.parametrize("arch", ["tiny-gpt2", "tiny-neox", "tiny-llama"])
def test_resid_post_is_pre_plus_writes(tiny_models, arch):
    """Sequential (GPT-2, Llama) and parallel (NeoX) blocks: the hooks are what is written."""
    lm = tiny_models[arch]
    cache = cached(lm, lm.tokenize(PROMPT))
    for i in range(lm.n_layers):
        pre, post = cache[f"blocks.{i}.hook_resid_pre"], cache[f"blocks.{i}.hook_resid_post"]
        attn = cache[HOOKS["attn"].format(i=i)]
        mlp = cache[HOOKS["mlp"].format(i=i)]
        torch.testing.assert_close(pre + attn + mlp, post, atol=1e-4, rtol=0)


def test_parallel_block_writes_read_the_same_input(tiny_models):
    """NeoX: attention and MLP both read resid_pre, so the MLP write is mlp(ln2(resid_pre))."""
    lm = tiny_models["tiny-neox"]
    ids = lm.tokenize(PROMPT)
    cache = cached(lm, ids)
    block = lm.bridge.original_model.gpt_neox.layers[1]
    pre = cache["blocks.1.hook_resid_pre"]
    with torch.inference_mode():
        mlp = block.mlp(block.post_attention_layernorm(pre))
    torch.testing.assert_close(mlp, cache["blocks.1.hook_mlp_out"], atol=1e-4, rtol=0)


def test_hook_norms_match_cache(tiny):
    ids = tiny.tokenize(PROMPT)
    norms = token_norms(tiny, ids)
    cache = cached(tiny, ids)
    for kind, tmpl in HOOKS.items():
        want = torch.stack([cache[tmpl.format(i=i)][0].norm(dim=-1) for i in range(tiny.n_layers)])
        torch.testing.assert_close(norms[kind], want, atol=1e-5, rtol=1e-5)
    s = layer_summary(norms)
    torch.testing.assert_close(s["mlp_out_norm"], norms["mlp"][:, 1:].mean(-1))
    torch.testing.assert_close(s["ratio_of_means"], s["attn_out_norm"] / s["mlp_out_norm"])
    assert torch.all(s["mean_of_ratios"] > 0)


def test_ratio_of_means_differs_from_mean_of_ratios():
    norms = {"attn": torch.tensor([[9.0, 1.0, 3.0]]), "mlp": torch.tensor([[1.0, 1.0, 2.0]])}
    s = layer_summary(norms)  # position 0 dropped
    assert float(s["ratio_of_means"][0]) == pytest.approx(4 / 3)
    assert float(s["mean_of_ratios"][0]) == pytest.approx(1.25)


def test_process_and_bad_input(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    ctx = RunContext(lm.name, "component_norms", "wikitext", "r1")
    # "" is under two tokens with or without a start token (a one-word prompt is not, with one).
    out = process(lm, [Item("a", PROMPT), Item("b", "")], ComponentNormsConfig(), ctx)["metrics"]
    assert set(out["prompt_id"]) == {"a"}
    assert len(out) == 4 * lm.n_layers
    assert set(out["unit"]) == {"norm", "ratio"}
    with pytest.raises(ValueError, match="two"):
        run_one(lm, "", ComponentNormsConfig())
    with pytest.raises(ValueError, match="two"):
        layer_summary({"attn": torch.ones(2, 1), "mlp": torch.ones(2, 1)})
