"""Guess then refine (METHODS.md A5): no flips at the last layer, shares sum to 1, oracle flat."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from precompute.lenses.tuned import TunedLens
from precompute.methods import guess_refine as G
from precompute.stats import ranks as R
from precompute.types import Item, RunContext


def _frame(recs):
    return pd.DataFrame.from_records(recs)


def test_buckets_and_earliest():
    assert [R.bucket_of(r) for r in (1, 10, 11, 100, 101, 1000, 1001, 10**6)] == [
        "top10",
        "top10",
        "top100",
        "top100",
        "top1000",
        "top1000",
        "rest",
        "rest",
    ]
    assert R.earliest([False, True, False, True, True]) == (1, 3)
    assert R.earliest([False, False]) == (2, 2)


def test_frequency_ranks_count_the_corpus(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    ranks, info = G.frequency_ranks(lm, [" the the the cat", " the cat dog"], lm.d_vocab)
    the = lm.tokenizer(" the", add_special_tokens=False).input_ids[0]
    assert int(ranks[the]) == 1
    assert info["tokens"] > 0 and len(info["sha256"]) == 64
    assert int(ranks.max()) == lm.d_vocab + 1  # unseen tokens fall in "rest"


def _real_prompts(lm, n=12):
    texts = [
        "The cat sat on the mat and the dog sat on the log",
        "Paris is the capital of",
        "Water boils at one hundred degrees and ice melts in the",
        "The Eiffel Tower is in",
    ]
    out = []
    for i in range(n):
        ids = lm.tokenize(texts[i % len(texts)])[:, : 4 + i % 6]
        logps, y = G.last_position_logprobs(lm, ids, {"logit": None})
        out.append((logps["logit"], y))
    return out


def test_flip_rate_zero_at_last_layer_and_shares_sum_to_one(tiny):
    ranks = torch.randint(1, 2000, (tiny.d_vocab,))
    recs = []
    for i, (logp, y) in enumerate(_real_prompts(tiny)):
        recs += R.prompt_records(logp, y, ranks, tiny.n_layers, "all", prompt_id=f"p{i}")
    df = _frame(recs)
    flips = df[(df.metric == "flip_rate") & (df.grp == "all")].groupby("layer")["value"].mean()
    assert flips.loc[tiny.n_layers] == 0.0
    shares = df[df.metric == "bucket_fraction"].groupby(["layer", "grp"])["value"].mean()
    sums = shares.groupby(level="layer").sum()
    assert len(sums) == tiny.n_layers + 1
    assert (sums - 1.0).abs().max() < 1e-12
    # Per-bucket flip rows partition the "all" rows: one bucket row per (prompt, layer).
    by_bucket = df[(df.metric == "flip_rate") & (df.grp != "all")]
    assert len(by_bucket) == len(df[(df.metric == "flip_rate") & (df.grp == "all")])


def test_oracle_lens_gives_flat_curves(tiny):
    ranks = torch.randint(1, 2000, (tiny.d_vocab,))
    recs = []
    for i, (logp, y) in enumerate(_real_prompts(tiny)):
        oracle = logp[-1:].expand_as(logp)  # p_final at every layer
        recs += R.prompt_records(oracle, y, ranks, tiny.n_layers, "all", prompt_id=f"p{i}")
        recs += R.mcq_records(oracle, [1, 2, 3, 4], 0, 10, tiny.n_layers, prompt_id=f"p{i}")
    df = _frame(recs)
    df["grp"] = df["grp"].fillna("")
    for metric in ("bucket_fraction", "flip_rate", "format_ok", "decision_final", "option_mass"):
        per_layer = df[df.metric == metric].groupby(["grp", "layer"])
        spread = per_layer["value"].mean().groupby(level=0).agg(lambda s: s.max() - s.min())
        assert spread.abs().max() < 1e-6, metric
    assert (df[df.metric == "flip_rate"]["value"] == 0).all()
    early = df[
        df.metric.isin(
            ["earliest_layer_le_k", "stable_layer_le_k", "decision_settled", "decision_first"]
        )
    ]
    assert (early["value"] == 0).all()


def test_mcq_records_settle_and_decide():
    v = 20
    logp = torch.full((5, v), -10.0)
    logp[:, 0] = 0.0  # a non-option token leads early on
    logp[:2, [1, 2, 3, 4]] = -12.0  # options below every other token at states 0, 1
    logp[2:, [1, 2, 3, 4]] = torch.tensor([1.0, 2.0, 0.5, 0.2])  # options enter the top 10 at 2
    logp[4, 1] = 3.0  # the final decision is option 0 ("A")
    logp = torch.log_softmax(logp, -1)
    df = _frame(R.mcq_records(logp, [1, 2, 3, 4], 0, 4, 4)).set_index("metric")
    assert df.loc["format_settled", "value"] == pytest.approx(2 / 4)
    assert df.loc["decision_settled", "value"] == pytest.approx(4 / 4)
    assert df.loc["model_correct", "value"] == 1.0


def test_mcq_file_is_well_formed():
    items, prefix, sha = G.load_mcq()
    assert len(items) >= 30 and prefix.count("Answer:") == 2 and len(sha) == 64
    assert {it["answer"] for it in items} == set(G.OPTIONS)
    assert len({it["id"] for it in items}) == len(items)


def test_process_wikitext_and_facts_with_both_lenses(tiny_models, tmp_path):
    lm = tiny_models["tiny-llama"]
    TunedLens.zeros(lm).save(tmp_path / lm.name)  # an (untrained) tuned lens is available
    cfg = G.GuessRefineConfig(n_prompts=6, lens_dir=str(tmp_path))
    words = ["the", "cat", "sat", "on", "the", "mat", "and", "dog", "log", "near", "Paris"]
    items = [
        Item(f"wt-{i}", " ".join(words[(i + j) % len(words)] for j in range(60))) for i in range(10)
    ]
    df = G.process(lm, items, cfg, RunContext(lm.name, "guess_refine", "wikitext"))["metrics"]
    assert set(df["variant"]) == {"logit", "tuned"}
    assert set(df["dataset"]) == {"wikitext", "mcq"}
    assert not df["value"].isna().any()
    # The untrained tuned lens is the logit lens, so both variants agree row for row.
    a = df[df.variant == "logit"].drop(columns="variant").reset_index(drop=True)
    b = df[df.variant == "tuned"].drop(columns="variant").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    facts = json.loads((G.FACTS_FILE).read_text())[:5] if G.FACTS_FILE.exists() else []
    fitems = [Item(f["id"], f["template"].format(f["subject"]), f) for f in facts]
    out = G.process(lm, fitems, cfg, RunContext(lm.name, "guess_refine", "facts"))["metrics"]
    assert set(out.columns) >= {"metric", "grp"}  # a random model is rarely right: may be empty
    with pytest.raises(ValueError, match="guess_refine runs on"):
        G.process(lm, items, cfg, RunContext(lm.name, "guess_refine", "examples"))


def test_facts_teacher_forcing_records_token_groups(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    # Make the fact "correct" by construction: take the model's own greedy continuation.
    ids = lm.tokenize("Paris is the capital of")
    ans = []
    cur = ids
    for _ in range(2):
        _, y = G.last_position_logprobs(lm, cur, {"logit": None})
        ans.append(y)
        cur = torch.cat([cur, cur.new_tensor([[y]])], 1)
    answer = lm.tokenizer.decode(ans)
    spaced, bare = G.answer_tokens(lm, answer.removeprefix(" "))
    item = Item("f0", "Paris is the capital of", {"answer": answer.removeprefix(" ")})
    df = _frame(G.run_facts(lm, [item], G.GuessRefineConfig(), {"logit": None}))
    if spaced[: len(ans)] == ans or bare[: len(ans)] == ans:
        groups = {g.split("|")[0] for g in df["grp"]}
        assert "t0" in groups or "single" in groups
