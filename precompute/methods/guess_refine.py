"""Guess, then refine (METHODS.md A5; Gupta et al. 2025, seed 001): how predictions evolve.

Per prompt, one forward pass; every residual state at the **last** position is read through the
logit lens and, when a trained lens for the model exists, the tuned lens (variant ``logit`` /
``tuned``). ``y*`` is the model's greedy next token. Rows of ``metrics``:

* ``bucket_fraction`` (grp = frequency bucket of the lens top-1: ``top10``, ``top100``,
  ``top1000``, ``rest``; ranks counted on the corpus, see :func:`frequency_ranks`): one 0/1 row per
  (prompt, layer, bucket), so the mean over prompts is the bucket's share (A5.1);
* ``flip_rate`` (grp = bucket of the layer's top-1, and ``all``): 1 when the layer's top-1 is not
  ``y*`` -- the "refined" rate (A5.2); 0 at the last layer by construction;
* ``earliest_layer_le_k`` / ``stable_layer_le_k`` (``layer = -1``; grp ``<group>|k=<k>``): the
  relative depth at which ``y*`` first reaches rank <= k / stays there (A5.3-A5.4). Groups:
  ``all`` and ``pred:<bucket>`` (frequency of ``y*``) for WikiText prefixes; ``single``, ``t0``,
  ``t1``, ``t2`` for fact answers (token index of a multi-token answer, teacher forced);
* multiple choice (dataset ``mcq``, items in ``data/prompts/mcq.json``): per layer ``format_ok``
  (every option letter in the lens top-k), ``option_mass``, ``decision_final`` (the lens's best
  option is the model's final choice), ``decision_gold``; per item ``format_settled`` and
  ``decision_settled`` (relative depth from which each stays true) (A5.5).

Part of speech (A5.3) needs spaCy's ``en_core_web_sm``, which is not on PyPI (checked: ``pip
download en-core-web-sm`` finds no distribution); the ``pred:<bucket>`` groups are the
frequency-based stand-in and are labelled as such.

The rank statistics themselves are pure functions in :mod:`precompute.stats.ranks`.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> logps, y = last_position_logprobs(lm, lm.tokenize("the cat sat"), {"logit": None})
    >>> logps["logit"].shape == (lm.n_layers + 1, lm.d_vocab)
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from precompute.lenses.readout import lens_logits
from precompute.lenses.tuned import TunedLens, find_lens
from precompute.methods import Method
from precompute.model.internals import residual_states
from precompute.model.load import LoadedModel
from precompute.stats.ranks import earliest_records, mcq_records, prompt_records, ranks_of
from precompute.types import BaseConfig, Item, RunContext

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
MCQ_FILE = ROOT / "data" / "prompts" / "mcq.json"
FACTS_FILE = ROOT / "data" / "prompts" / "facts.json"
OPTIONS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class GuessRefineConfig(BaseConfig):
    """Defaults: buckets 10/100/1000/rest, prompts >= 17 characters, ``seed`` 42 [GUPTA].

    ``n_prompts`` = 150 WikiText prefixes (GUPTA: up to 100,000 Wikipedia prefixes) and
    ``max_chars`` = 600 (prefix cut inside the first 600 characters) are ours, for a CPU.
    ``n_facts`` limits the fact set; ``max_answer_tokens`` = 3 (tokens 0..2) [GUPTA];
    ``mcq_k`` = 10 (format = all options in the top 10) [GUPTA, "<= 10"]; prompts longer than
    ``max_tokens`` = 200 keep their last tokens (ours; GUPTA truncates at 1024).
    """

    n_prompts: int = 150
    min_chars: int = 17
    max_chars: int = 600
    seed: int = 42
    n_facts: int = 400
    max_answer_tokens: int = 3
    mcq_k: int = 10
    max_tokens: int = 200
    use_tuned: bool = True
    lens_dir: str = ""


# ----------------------------------------------------------------------------------------------
# Frequency ranks.


def frequency_ranks(lm: LoadedModel, texts: list[str], vocab: int) -> tuple[torch.Tensor, dict]:
    """Rank of every token id by its count in ``texts`` (1 = most frequent; unseen = vocab + 1).

    Texts are tokenised by the model's tokenizer without special tokens; ties break by id.

    Returns:
        ``ranks`` ``(vocab,)`` int64 and a summary (token count, sha256 of the counted text).
    """
    counts: Counter[int] = Counter()
    n_tok = 0
    sha = hashlib.sha256()
    for text in texts:
        ids = lm.tokenizer(text, add_special_tokens=False).input_ids
        counts.update(ids)
        n_tok += len(ids)
        sha.update(text.encode())
    ranks = torch.full((vocab,), vocab + 1, dtype=torch.long)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    for r, (tok, _) in enumerate(ordered, start=1):
        if tok < vocab:
            ranks[tok] = r
    return ranks, {"tokens": n_tok, "distinct": len(counts), "sha256": sha.hexdigest()}


# ----------------------------------------------------------------------------------------------
# Model read-outs.


@torch.inference_mode()
def last_position_logprobs(
    lm: LoadedModel, ids: torch.Tensor, lenses: dict[str, TunedLens | None], max_tokens: int = 200
) -> tuple[dict[str, torch.Tensor], int]:
    """Lens log-probabilities ``(S, V)`` at the last position for each lens, and ``y*``.

    Prompts longer than ``max_tokens`` keep their last ``max_tokens`` tokens.
    """
    ids = ids[:, -max_tokens:]
    states, logits = residual_states(lm, ids)  # (S, T, D), (T, V)
    last = states[:, -1:, :]  # (S, 1, D)
    out = {}
    for variant, lens in lenses.items():
        st = last if lens is None else lens.translate(last)
        out[variant] = torch.log_softmax(lens_logits(lm, st).float(), -1)[:, 0]
    return out, int(logits[-1].argmax())


def _is_blank(lm: LoadedModel, tok: int) -> bool:
    return lm.tokenizer.decode([tok]).strip() == ""


def available_lenses(lm: LoadedModel, cfg: GuessRefineConfig) -> dict[str, TunedLens | None]:
    """``logit`` always; ``tuned`` when a lens trained for this model is saved (else refused)."""
    lenses: dict[str, TunedLens | None] = {"logit": None}
    if cfg.use_tuned:
        tuned = find_lens(lm, cfg.lens_dir or None)
        if tuned is not None:
            lenses["tuned"] = tuned
    return lenses


def baseline_prompts(items: list[Item], cfg: GuessRefineConfig) -> list[Item]:
    """Paragraph prefixes cut at a seeded random word boundary (>= ``min_chars``) [GUPTA]."""
    rng = random.Random(cfg.seed)
    pool = [it for it in items if "\n" not in it.text and len(it.text) > 200]
    rng.shuffle(pool)
    out = []
    for it in pool:
        text = it.text[: cfg.max_chars]
        cuts = [i for i, ch in enumerate(text) if ch == " " and i >= cfg.min_chars]
        if not cuts:
            continue
        out.append(Item(it.prompt_id, text[: rng.choice(cuts)]))
        if len(out) >= cfg.n_prompts:
            break
    return out


def run_baseline(lm, items, cfg, ctx, lenses) -> list[dict]:
    """Bucket shares, flips and earliest layers on WikiText prefixes."""
    ranks, _ = frequency_ranks(lm, [it.text for it in items], lm.d_vocab)
    recs = []
    for it in baseline_prompts(items, cfg):
        text = it.text
        logps, y = last_position_logprobs(lm, lm.tokenize(text), lenses, cfg.max_tokens)
        if _is_blank(lm, y):  # GUPTA: append a space and re-run; skip if still blank
            text = text + " "
            logps, y = last_position_logprobs(lm, lm.tokenize(text), lenses, cfg.max_tokens)
            if _is_blank(lm, y):
                continue
        for variant, logp in logps.items():
            recs += prompt_records(
                logp, y, ranks, lm.n_layers, "all", variant=variant, prompt_id=it.prompt_id
            )
    return recs


def answer_tokens(lm: LoadedModel, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of ``" " + answer`` and of ``answer`` (no special tokens)."""
    tok = lm.tokenizer
    return (
        tok(" " + answer, add_special_tokens=False).input_ids,
        tok(answer, add_special_tokens=False).input_ids,
    )


def run_facts(lm, items, cfg, lenses) -> list[dict]:
    """Earliest layers per answer token index, teacher forced, correct predictions only [GUPTA]."""
    recs = []
    for it in items[: cfg.n_facts]:
        answer = it.fields.get("answer") or it.fields.get("attribute") or it.fields.get("target")
        if not answer:
            continue
        ids = lm.tokenize(it.text)  # (1, T)
        logps, y = last_position_logprobs(lm, ids, lenses, cfg.max_tokens)
        spaced, bare = answer_tokens(lm, answer)
        gold = spaced if spaced and y == spaced[0] else bare if bare and y == bare[0] else None
        if gold is None:
            continue  # token 0 wrong: the fact is dropped
        gold = gold[: cfg.max_answer_tokens]
        multi = len(gold) > 1
        for j, g in enumerate(gold):
            if j > 0:
                ctx_ids = torch.cat([ids, ids.new_tensor([gold[:j]])], 1)
                logps, y = last_position_logprobs(lm, ctx_ids, lenses, cfg.max_tokens)
                if y != g:
                    continue
            group = f"t{j}" if multi else "single"
            for variant, logp in logps.items():
                recs += earliest_records(
                    ranks_of(logp, y),
                    lm.n_layers,
                    group,
                    variant=variant,
                    prompt_id=f"{it.prompt_id}#t{j}",
                )
    return recs


def load_mcq(path: Path = MCQ_FILE) -> tuple[list[dict], str, str]:
    """Load the team's multiple-choice items, the few-shot prefix made of its ``shots``, sha256.

    Raises:
        ValueError: A malformed item (the message names it).
    """
    raw = path.read_bytes()
    data = json.loads(raw)
    for it in data["shots"] + data["items"]:
        if len(it.get("options", [])) != len(OPTIONS) or it.get("answer") not in OPTIONS:
            raise ValueError(f"MCQ item {it.get('id')!r} needs 4 options and an answer in A-D.")
    prefix = "".join(mcq_prompt(s) + f" {s['answer']}\n\n" for s in data["shots"])
    return data["items"], prefix, hashlib.sha256(raw).hexdigest()


def mcq_prompt(item: dict) -> str:
    """``Question: ... A) ... B) ... C) ... D) ... Answer:``."""
    opts = "\n".join(f"{o}) {t}" for o, t in zip(OPTIONS, item["options"]))
    return f"Question: {item['question']}\n{opts}\nAnswer:"


def run_mcq(lm, cfg, lenses, path: Path = MCQ_FILE) -> list[dict]:
    """Format and decision layers on the team's multiple-choice items (dataset ``mcq``)."""
    if not path.exists():
        log.warning("No %s: multiple-choice rows skipped", path)
        return []
    items, prefix, _ = load_mcq(path)
    option_ids = [lm.tokenizer(" " + o, add_special_tokens=False).input_ids[-1] for o in OPTIONS]
    recs = []
    for it in items:
        ids = lm.tokenize(prefix + mcq_prompt(it))
        logps, _ = last_position_logprobs(lm, ids, lenses, cfg.max_tokens)
        gold = OPTIONS.index(it["answer"])
        for variant, logp in logps.items():
            recs += mcq_records(
                logp,
                option_ids,
                gold,
                cfg.mcq_k,
                lm.n_layers,
                variant=variant,
                prompt_id=it["id"],
                dataset="mcq",
            )
    return recs


def process(
    lm: LoadedModel, items: list[Item], cfg: GuessRefineConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """WikiText job: frequency analyses + multiple choice; facts / known_1000 job: answer tokens."""
    lenses = available_lenses(lm, cfg)
    if ctx.dataset == "wikitext":
        if not items:
            raise ValueError("No WikiText paragraphs: guess_refine needs the corpus.")
        recs = run_baseline(lm, items, cfg, ctx, lenses) + run_mcq(lm, cfg, lenses)
    elif ctx.dataset in ("facts", "known_1000"):
        recs = run_facts(lm, items, cfg, lenses)
    else:
        raise ValueError(
            f"guess_refine runs on wikitext, facts or known_1000, not {ctx.dataset!r}."
        )
    for r in recs:
        r.setdefault("dataset", ctx.dataset)
    return {"metrics": ctx.metrics(recs)}


METHOD = Method(
    name="guess_refine",
    summary="Guess then refine: frequency buckets, flip rates, earliest layers, answer format.",
    config_cls=GuessRefineConfig,
    dataset="wikitext",
    process=process,
    run_one=None,
    chunk_size=None,
    extra_datasets=("facts" if FACTS_FILE.exists() else "known_1000",),
)
