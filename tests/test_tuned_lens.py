"""Tuned lens (METHODS.md A4): identities, the optimiser step, training, artifacts, resuming."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from precompute.lenses import train as TR
from precompute.lenses import tuned as TL
from precompute.lenses.readout import lens_readout
from precompute.methods import tuned_lens as T
from precompute.model.internals import final_norm, unembed
from precompute.types import Item, RunContext

TEXTS = [
    "The cat sat on the mat and the dog sat on the log.",
    "Paris is the capital of France. Rome is the capital of Italy.",
    "The Eiffel Tower is located in the city of Paris.",
    "Water boils at one hundred degrees. Ice melts in the sun.",
    "Stagescope shows how a language model uses its depth, layer by layer.",
]


def _items(n: int, offset: int = 0) -> list[Item]:
    return [
        Item(f"d{i}", TEXTS[(i + offset) % len(TEXTS)] + " " + TEXTS[(i + 1) % 5]) for i in range(n)
    ]


def test_untrained_tuned_lens_is_the_logit_lens_exactly(tiny):
    ids = tiny.tokenize("the cat sat on the mat and the dog sat")
    tuned = TL.tuned_readout(tiny, TL.TunedLens.zeros(tiny), ids)
    logit = lens_readout(tiny, ids)
    for name in ("kl", "entropy", "ce_next", "prob_final", "topk_probs"):
        a, b = getattr(tuned, name), getattr(logit, name)
        assert torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0)), name
    assert torch.equal(tuned.topk_ids, logit.topk_ids)


def test_fused_kl_matches_autograd(tiny):
    torch.manual_seed(0)
    x = torch.randn(6, tiny.d_model, requires_grad=True)
    logp = torch.log_softmax(torch.randn(6, tiny.d_vocab) * 3, -1)
    p = logp.exp()
    with TR.frozen(tiny):
        got = TR.unembed_kl_sum(tiny, x, p, (p * logp).sum(-1))
        got.backward()
        g_got = x.grad.clone()
        x.grad = None
        ref = torch.nn.functional.kl_div(
            torch.log_softmax(unembed(tiny, x), -1), logp, log_target=True, reduction="sum"
        )
        ref.backward()
    assert float(got) == pytest.approx(float(ref), rel=1e-5)
    torch.testing.assert_close(g_got, x.grad, rtol=1e-4, atol=1e-6)
    assert all(p.requires_grad for p in tiny.bridge.parameters())  # frozen() restores flags


def _reference_grads(lm, A, b, docs):
    """Gradient of sum_i mean_t KL(final || lens_i) by plain autograd (no fused kernel)."""
    states, logits, _ = TR.batch_states(lm, docs, True)  # (L, N, D), (N, V)
    logp = torch.log_softmax(logits, -1)
    A = [a.detach().clone().requires_grad_(True) for a in A]
    b = [c.detach().clone().requires_grad_(True) for c in b]
    with TR.frozen(lm):
        total = 0.0
        for i in range(lm.n_layers):
            h = states[i]
            z = unembed(lm, final_norm(lm, h + h @ A[i].T + b[i]))
            kl = torch.nn.functional.kl_div(
                torch.log_softmax(z, -1), logp, log_target=True, reduction="batchmean"
            )
            total = total + kl
        total.backward()
    return [a.grad for a in A] + [c.grad for c in b]


def test_optimizer_steps_match_hand_nesterov_sgd(tiny_models):
    lm = tiny_models["tiny-llama"]
    cfg = T.TunedLensConfig(num_steps=4, tokens_per_step=12, max_seq_len=16, skip_first=True)
    docs = TR.tokenize_docs(lm, _items(6), cfg.max_seq_len)
    tr = TR.Trainer(lm, docs, cfg)
    torch.manual_seed(1)
    with torch.no_grad():  # a fixed, non-zero starting state
        for p in tr.params:
            p.copy_(torch.randn_like(p) * 0.01)
    params = [p.detach().clone() for p in tr.params]
    bufs = None
    lr, mu, wd = cfg.lr, cfg.momentum, cfg.weight_decay
    for step in range(2):  # the second step exercises the momentum buffer
        n = lm.n_layers
        batch = [docs[i] for i in tr.schedule[step]]
        g = _reference_grads(lm, params[:n], params[n:], batch)
        norm = torch.sqrt(sum(x.pow(2).sum() for x in g))
        coef = min(1.0, cfg.clip / (float(norm) + 1e-6))
        lr_t = lr * (1 - step / cfg.num_steps)
        d = [gi * coef + wd * p for gi, p in zip(g, params)]
        bufs = d if bufs is None else [mu * bi + di for bi, di in zip(bufs, d)]
        params = [p - lr_t * (di + mu * bi) for p, di, bi in zip(params, d, bufs)]
        tr.train_step()
        for got, want in zip(tr.params, params):
            torch.testing.assert_close(got.detach(), want, rtol=1e-4, atol=1e-7)


def test_training_beats_logit_lens_on_held_out_text(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    cfg = T.TunedLensConfig(
        num_steps=10,
        tokens_per_step=96,
        max_seq_len=48,
        n_train_docs=20,
        n_eval_docs=5,
        eval_max_tokens=48,
        save_rank=0,
        save_dtype="float32",
        lens_dir=str(tmp_path / "lenses"),
        ckpt_dir=str(tmp_path / "ckpt"),
    )
    items = _items(20) + _items(5, offset=2)
    ctx = RunContext(lm.name, "tuned_lens", "wikitext", "r1")
    df = T.process(lm, items, cfg, ctx)["metrics"]
    kl = df[df.metric == "kl_to_final"].groupby(["variant", "layer"])["value"].mean().unstack(0)
    assert len(kl) == lm.n_layers + 1
    assert (kl["tuned"] <= kl["logit"] + 1e-6).all(), kl
    assert kl["tuned"].iloc[:-1].mean() < kl["logit"].iloc[:-1].mean()
    assert kl["tuned"].iloc[-1] == pytest.approx(0.0, abs=1e-5)
    assert set(df["variant"]) == {"logit", "tuned"}
    assert not df["value"].isna().any()
    meta = json.loads((tmp_path / "lenses" / lm.name / TL.CONFIG_FILE).read_text())
    assert meta["model"] == lm.name and meta["training"]["budget"] == "cpu"
    assert meta["training"]["steps_done"] == 10
    # The compare page's live frame (compare_frame) gives the stored numbers for the same text.
    lens = TL.find_lens(lm, tmp_path / "lenses")
    stored = df[df.metric == "kl_to_final"].set_index(["prompt_id", "variant", "layer"])["value"]
    for item in items[20:]:
        live = T.compare_frame(lm, lens, item.text, cfg.eval_max_tokens)
        live = live[live.position >= 1].groupby(["lens", "layer"])["kl_to_final"].mean()
        for (variant, layer), value in live.items():
            assert stored[(item.prompt_id, variant, layer)] == pytest.approx(value, abs=1e-6)


def test_lens_for_another_model_is_refused(tiny_models, tmp_path):
    gpt2, llama = tiny_models["tiny-gpt2"], tiny_models["tiny-llama"]
    TL.TunedLens.zeros(gpt2).save(tmp_path / "g")
    with pytest.raises(TL.LensMismatchError, match="trained for model 'tiny-gpt2'"):
        TL.TunedLens.load(tmp_path / "g", llama)
    # Same shapes, another tokenizer: refused too.
    meta = json.loads((tmp_path / "g" / TL.CONFIG_FILE).read_text())
    meta["tokenizer_hash"] = "0" * 16
    (tmp_path / "g" / TL.CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(TL.LensMismatchError, match="tokenizer_hash"):
        TL.TunedLens.load(tmp_path / "g", gpt2)
    with pytest.raises(FileNotFoundError, match="No tuned lens"):
        TL.TunedLens.load(tmp_path / "missing", gpt2)


def test_save_load_round_trip_full_and_low_rank(tiny_models, tmp_path):
    lm = tiny_models["tiny-neox"]
    torch.manual_seed(0)
    lens = TL.TunedLens.zeros(lm)
    u = torch.randn(lm.n_layers, lm.d_model, 3)
    lens.A = torch.bmm(u, u.transpose(1, 2)) * 0.01  # rank 3
    lens.b = torch.randn(lm.n_layers, lm.d_model)
    lens.save(tmp_path / "full", rank=0, dtype="float32")
    back = TL.TunedLens.load(tmp_path / "full", lm)
    assert torch.equal(back.A, lens.A) and torch.equal(back.b, lens.b)
    meta = lens.save(tmp_path / "low", rank=3, dtype="float32")
    low = TL.TunedLens.load(tmp_path / "low", lm)
    torch.testing.assert_close(low.A, lens.A, rtol=0, atol=1e-5)
    assert min(meta["energy_kept_per_layer"]) == pytest.approx(1.0, abs=1e-6)


def test_interrupted_training_resumes_where_it_stopped(tiny_models, tmp_path):
    lm = tiny_models["tiny-llama"]
    cfg = T.TunedLensConfig(num_steps=4, tokens_per_step=24, max_seq_len=24, ckpt_every=1)
    items = _items(8)
    whole, _ = TR.train_lens(lm, items, cfg, ckpt=None)
    ckpt = tmp_path / "ck.safetensors"
    part, s1 = TR.train_lens(lm, items, cfg, ckpt=ckpt, stop_after=2)  # "killed" after 2 steps
    assert s1["steps_done"] == 2 and ckpt.exists()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files
    resumed, s2 = TR.train_lens(lm, items, cfg, ckpt=ckpt)
    assert s2["steps_done"] == 4
    torch.testing.assert_close(resumed.A, whole.A, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(resumed.b, whole.b, rtol=1e-5, atol=1e-7)


def test_bad_inputs_are_clear(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    ctx = RunContext(lm.name, "tuned_lens", "wikitext")
    with pytest.raises(ValueError, match="held-out"):
        T.process(lm, _items(3), T.TunedLensConfig(n_train_docs=5), ctx)
    with pytest.raises(ValueError, match="budget"):
        T.TunedLensConfig(budget="gpu-ish").resolved()
    with pytest.raises(ValueError, match="residual states"):
        TL.TunedLens.zeros(lm).translate(torch.zeros(2, 3, lm.d_model))
    assert T.TunedLensConfig(budget="paper").resolved().tokens_per_step == 2**18


@pytest.mark.slow
def test_smollm2_zero_lens_and_shipped_lens():
    from precompute.model.load import load_model

    lm = load_model("smollm2-135m", device="cpu")
    ids = lm.tokenize("The Eiffel Tower is located in the city of")
    tuned = TL.tuned_readout(lm, TL.TunedLens.zeros(lm), ids)
    assert torch.equal(tuned.kl, lens_readout(lm, ids).kl)
    shipped = TL.find_lens(lm)
    if shipped is None:
        pytest.skip("no trained smollm2 lens in data/results/lenses")
    assert shipped.meta["model"] == "smollm2-135m" and shipped.A.shape == (30, 576, 576)
    text = (
        "The small museum by the harbour opened in the spring. Its first exhibition showed "
        "old maps of the coast, letters from sailors and a model of the lighthouse."
    )
    r = TL.tuned_readout(lm, shipped, lm.tokenize(text))
    logit = lens_readout(lm, lm.tokenize(text))
    assert r.kl[1:10, 1:].mean() < logit.kl[1:10, 1:].mean()  # early layers read better
    assert float(r.kl[-1].abs().max()) < 1e-4


SHARED_DATA = TL.ROOT.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_embedded_lens_beats_logit_lens_on_held_out_text(model):
    """The shipped lens beats the logit lens at every state but the last, on held-out text.

    The paragraphs are those its training run held out (issue 10); the lens is read as stored.
    """
    from precompute.datasets import load_wikitext
    from precompute.model.load import load_model

    if not (SHARED_DATA / "wikitext-2-raw-test.txt").exists():
        pytest.skip(f"WikiText-2 test file not in {SHARED_DATA}")
    lm = load_model(model, device="cpu")
    lens = TL.find_lens(lm)
    assert lens is not None, f"no embedded tuned lens for {model}"
    cfg = lens.meta["training"]["config"]
    first = cfg["n_train_docs"]
    items, _ = load_wikitext(SHARED_DATA, n=first + cfg["n_eval_docs"])
    recs = []
    for item in items[first : first + 4]:  # held out: never trained on, never in the ridge fit
        recs += T.eval_records(lm, lens, item, 32)
    df = pd.DataFrame(recs)
    kl = df[df.metric == "kl_to_final"].groupby(["variant", "layer"])["value"].mean().unstack(0)
    assert len(kl) == lm.n_layers + 1
    assert (kl["tuned"].iloc[:-1] < kl["logit"].iloc[:-1]).all(), kl


def test_ridge_start_solves_its_normal_equations_and_never_loses_on_validation(tiny_models):
    from precompute.lenses import ridge as R

    lm = tiny_models["tiny-llama"]
    cfg = TR.TrainConfig(init="ridge", fit_tokens=120, val_tokens=30, max_seq_len=32)
    docs = TR.tokenize_docs(lm, _items(12), cfg.max_seq_len)
    fit, val = R.split_docs(docs, cfg.fit_tokens, cfg.val_tokens, 1)
    assert not {id(d) for d in fit} & {id(d) for d in val}
    acc = R.moments(lm, fit, 1)
    A, b = R.solve(acc, 1, alpha=0.1)
    n, d = acc["n"], lm.d_model
    c = acc["sxx"][1] / n - torch.outer(acc["sx"][1], acc["sx"][1]) / n**2
    cxy = acc["sxy"][1] / n - torch.outer(acc["sx"][1], acc["sy"][1]) / n**2
    lam = 0.1 * float(torch.diagonal(c).sum()) / d
    w = A.double().T + torch.eye(d, dtype=torch.float64)
    grad = c @ w - cxy + lam * (w - torch.eye(d, dtype=torch.float64))  # d/dW of the objective
    assert float(grad.abs().max()) < 1e-4 * float(cxy.abs().max())
    A_big, _ = R.solve(acc, 1, alpha=1e9)  # infinite ridge: back to the logit lens
    assert float(A_big.abs().max()) < 1e-5
    lens, info = R.ridge_init(lm, fit, val, cfg)
    assert all(r <= g for r, g in zip(info["val_kl_ridge"], info["val_kl_logit"]))
    assert info["fit_tokens"] >= cfg.fit_tokens and info["val_tokens"] >= cfg.val_tokens
    best, kept = R.keep_better(lm, lens, TL.TunedLens.zeros(lm), val, True)
    for i, k in enumerate(kept["kept_per_layer"]):  # zero lens vs ridge start: keeps the better
        src = lens if k == "start" else TL.TunedLens.zeros(lm)
        assert torch.equal(best.A[i], src.A[i]) and torch.equal(best.b[i], src.b[i])
    assert kept["kept_per_layer"].count("start") >= 1
