"""precompute/lenses: one read-out for every lens, a pickle-free artifact, and the import graph.

Issue 9: one lens read-out that every lens method uses; no method module imports another; library
code never imports a benchmark. Issue 12 item 8: lens files and training checkpoints are read
without pickle (safetensors only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from precompute.lenses.readout import lens_logits
from precompute.lenses.train import TrainConfig, Trainer, tokenize_docs
from precompute.lenses.tuned import TunedLens
from precompute.model.internals import residual_states
from precompute.types import Item

ROOT = Path(__file__).resolve().parent.parent
LENS_METHODS = ("logit_lens", "tuned_lens", "guess_refine", "lens_entropy", "probes")
OWNED = [
    *(ROOT / "precompute" / "lenses").glob("*.py"),
    *(ROOT / "precompute" / "methods" / f"{m}.py" for m in LENS_METHODS),
    *(
        ROOT / "precompute" / "methods" / f"{m}.py"
        for m in ("rsa", "representation_quality", "intrinsic_dimension", "neurons")
    ),
]


def _imports(path: Path) -> set[str]:
    """Every module a file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


@torch.inference_mode()
def test_read_out_of_the_last_state_is_the_models_output(tiny):
    ids = tiny.tokenize("The Eiffel Tower is located in the city of Paris")
    states, logits = residual_states(tiny, ids)
    torch.testing.assert_close(lens_logits(tiny, states[-1]).float(), logits, atol=1e-5, rtol=0)
    both = lens_logits(tiny, states)  # (S, T, V), every state at once
    torch.testing.assert_close(both[-1].float(), logits, atol=1e-5, rtol=0)


def test_checkpoint_is_safetensors_and_resumes_without_pickle(tiny_models, tmp_path):
    from safetensors import safe_open

    lm = tiny_models["tiny-gpt2"]
    cfg = TrainConfig(num_steps=2, tokens_per_step=16, max_seq_len=16)
    docs = tokenize_docs(lm, [Item(f"d{i}", "the cat sat on the mat " * 3) for i in range(4)], 16)
    ckpt = tmp_path / "ck.safetensors"
    Trainer(lm, docs, cfg, ckpt).train(stop_after=1)
    with safe_open(str(ckpt), framework="pt") as f:  # a plain safetensors file
        assert {"A.0", "b.0", "momentum.0"} <= set(f.keys())
    again = Trainer(lm, docs, cfg, ckpt)
    again.resume()
    assert again.step == 1 and again.opt.state_dict()["state"]


def test_lens_code_never_unpickles():
    for path in (ROOT / "precompute").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (path, line)


def test_zero_lens_round_trip_is_refused_for_another_model(tiny_models, tmp_path):
    TunedLens.zeros(tiny_models["tiny-neox"]).save(tmp_path / "neox")
    with pytest.raises(ValueError, match="trained for model 'tiny-neox'"):
        TunedLens.load(tmp_path / "neox", tiny_models["tiny-llama"])


def test_lens_methods_read_through_the_one_read_out():
    for name in LENS_METHODS:
        mods = _imports(ROOT / "precompute" / "methods" / f"{name}.py")
        assert "precompute.model.internals.final_norm" not in mods, name
        assert "precompute.model.internals.unembed" not in mods, name


def test_no_method_imports_another_method():
    methods = {p.stem for p in (ROOT / "precompute" / "methods").glob("*.py")} - {"__init__"}
    for path in (ROOT / "precompute" / "methods").glob("*.py"):
        bad = {
            m
            for m in _imports(path)
            if m.startswith("precompute.methods.") and m.split(".")[2] in methods
        }
        assert not bad, f"{path.name} imports method modules {sorted(bad)}"


def test_library_never_imports_a_benchmark():
    for path in (ROOT / "precompute").rglob("*.py"):
        rel = path.relative_to(ROOT / "precompute").parts
        if rel[0] == "bench" or rel == ("cli.py",):
            continue
        assert not any(m.startswith("precompute.bench") for m in _imports(path)), path


@pytest.mark.parametrize("path", OWNED, ids=lambda p: p.name)
def test_lens_and_representation_modules_stay_small(path):
    assert len(path.read_text().splitlines()) < 400, path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_bridge_states_and_lens_match_plain_transformers(name):
    """Issue 10 item 5: residual states and logit-lens KL from the bridge against transformers'
    own ``output_hidden_states`` forward of the same weights (KL of the reference in float64).

    Before float32 blocks summed in float64 (``fused.block_sum``), Gemma's KL differed by up to
    5e-3 relative: the states agreed to float32 rounding, but one float32 product over the 262k
    vocabulary rounded ``sum p_final * z``.
    """
    from transformers import AutoModelForCausalLM

    from precompute.lenses.readout import lens_from_states
    from precompute.model.load import cache_dir, load_model

    try:
        lm = load_model(name, device="cpu")
    except FileNotFoundError as err:
        pytest.skip(f"offline model not installed: {err}")
    folder = cache_dir() / "models" / name
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = lm.tokenize("The Eiffel Tower is located in the city of Paris, the capital of France.")
    with torch.inference_mode():
        out = ref(ids, output_hidden_states=True)
        states, logits = residual_states(lm, ids)  # (L+1, T, D), (T, V)
        hs = torch.stack(out.hidden_states[:-1])[:, 0]  # (L, T, D); HF's last one is normed
        scale = hs.abs().amax((1, 2), keepdim=True)  # Gemma's states reach 1e5
        assert float(((states[:-1] - hs).abs() / scale).max()) < 1e-5
        torch.testing.assert_close(logits, out.logits[0].float(), rtol=0, atol=1e-3)
        lp_final = torch.log_softmax(out.logits[0].double(), -1)  # (T, V)
        ours = lens_from_states(lm, states, logits, ids[0], k=1).kl  # (L+1, T)
        for i in range(lm.n_layers):
            z = ref.lm_head(ref.model.norm(hs[i])).double()  # (T, V)
            kl = (lp_final.exp() * (lp_final - torch.log_softmax(z, -1))).sum(-1)  # (T,)
            big = kl > 1e-3
            rel = ((ours[i].double() - kl).abs() / kl)[big]
            assert float(rel.max()) < 1e-3, (name, i, float(rel.max()))
