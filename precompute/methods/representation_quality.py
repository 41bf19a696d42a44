"""Representation quality per layer (METHODS.md E4; Skean et al. 2025, seed 002).

Each prompt's token states ``Z`` (``T x D``, position 0 dropped, METHODS.md 0.5) at every residual
state ``h_0..h_L`` are preprocessed as in SKEAN: centred over tokens, then each token row scaled to
unit length. On that:

* ``prompt_entropy``: matrix Renyi entropy of the ``T x T`` Gram ``Z Z^T`` (eigenvalues kept > 0
  and summed to 1), ``S_alpha = log(sum lambda^alpha) / (1 - alpha)`` with the ``alpha = 1`` limit
  ``-sum lambda log lambda`` (von Neumann) implemented explicitly; ``variant = maxEntropy`` divides
  by ``log min(T, D)`` (SKEAN's reported normalisation), ``variant = raw`` is in nats. No clamp of
  negative Gram entries (SKEAN's ``clamp_gram`` quirk is not reproduced).
* ``dataset_entropy``: each prompt's preprocessed rows mean-pooled into one vector, the ``N``
  vectors preprocessed the same way, entropy of the ``N x N`` Gram, normalised by ``log min(N, D)``.
* ``curvature_rad``: the paper's definition (Hosseini & Fedorenko 2023): differences
  ``v_k = z_{k+1} - z_k`` of consecutive token states, mean angle ``arccos cos(v_k, v_{k+1})`` in
  radians; ``T >= 3``; computed on the raw states (ours: the per-token normalisation of the other
  metrics would change the trajectory).
* Augmentation invariance, with pooled embeddings (mean of the preprocessed tokens) of augmented
  views of each prompt:

  - ``infonce`` (2 views, ``tau = 0.1``): the contrastive loss with the other view as positive, on
    L2-normalised embeddings (METHODS.md E4's default); lower = more invariant;
  - ``lidar`` (16 views in SKEAN, ``delta = 1e-4``): matrix entropy of
    ``Sigma_w^{-1/2} Sigma_b Sigma_w^{-1/2}`` (classes = prompts); ``maxEntropy`` divides by
    ``log min(N, D)`` (ours), ``raw`` in nats (``exp(raw)`` is LiDAR's effective rank);
  - ``dime`` (2 views, 10 permutations): ``E_P[S(K_A o P K_B P^T)] - S(K_A o K_B)`` with the
    ``N x N`` cosine Gram matrices (trace-normalised), in nats; higher = views share more.

Augmentations: nlpaug is not available offline, so :func:`augment` is our deterministic substitute
for SKEAN's ``Sequential([SplitAug(), RandomCharAug(), KeyboardAug()])``: one word split in two,
random character edits (swap, insert, delete, substitute) and keyboard typos (a QWERTY neighbour),
seeded per (prompt, view). Views ``0..A-1`` are all augmented; InfoNCE and DiME use views 0 and 1 of
the LiDAR views, so no pass is repeated. Eigenvalues are computed in float64.

Rows (``metrics``): per prompt ``prompt_entropy`` and ``curvature_rad``; per state
``dataset_entropy``, ``infonce``, ``lidar``, ``dime`` and ``n_prompts`` (the prompts that gave a
value); ``grp`` says the number of views (``views=2``, ``views=16``). A prompt whose states are
constant (every token row the same) gives no value at that state and is counted out -- never a NaN.

The matrix statistics themselves are pure functions in :mod:`precompute.stats.matrix`.

Example:
    >>> augment("The cat sat on the mat.", seed=1) != "The cat sat on the mat."
    True
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.model.pooled import pooled_states
from precompute.stats.matrix import (
    DegenerateError,
    curvature_batch,
    dime,
    entropy_batch,
    gram_eigs_batch,
    infonce,
    lidar,
    normalised_entropy,
    preprocess_batch,
)
from precompute.types import BaseConfig, Item, RunContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityConfig(BaseConfig):
    """Defaults from SKEAN (METHODS.md E4) unless marked ours.

    ``alpha = 1``, ``tau = 0.1``, ``delta = 1e-4``, 2 views for InfoNCE/DiME, 10 DiME permutations,
    16 LiDAR views [SKEAN]. ``n_items = 64`` and ``max_tokens = 64`` are ours (CPU budget; SKEAN
    uses 1,000 prompts of up to 2,048 tokens); the embedded CPU runs lower ``lidar_views`` (recorded
    in the run's config and in ``grp``). ``skip_first`` drops position 0 (ours, METHODS.md 0.5).
    """

    alpha: float = 1.0
    tau: float = 0.1
    delta: float = 1e-4
    lidar_views: int = 16
    dime_permutations: int = 10
    n_items: int = 64
    max_tokens: int = 64
    skip_first: bool = True
    seed: int = 0


# ---------------------------------------------------------------- augmentations

_KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    pos = {c: (r, i) for r, row in enumerate(_KEYBOARD_ROWS) for i, c in enumerate(row)}
    out = {}
    for c, (r, i) in pos.items():
        near = [
            row[j]
            for rr, row in enumerate(_KEYBOARD_ROWS)
            if abs(rr - r) <= 1
            for j in range(max(i - 1, 0), min(i + 2, len(row)))
            if row[j] != c
        ]
        out[c] = "".join(near)
    return out


_NEIGHBOURS = _keyboard_neighbours()
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def augment(text: str, seed: int, char_p: float = 0.05, typo_p: float = 0.05) -> str:
    """One augmented view of ``text``: a word split, character edits and keyboard typos.

    Deterministic for a given ``seed``; our offline substitute for nlpaug's ``SplitAug``,
    ``RandomCharAug`` and ``KeyboardAug`` applied in sequence (SKEAN).

    Args:
        text: The prompt.
        seed: Seed (derive it from the prompt id and view index).
        char_p: Share of alphabetic characters given a random edit (swap/insert/delete/substitute).
        typo_p: Share of letters replaced by a QWERTY neighbour (case kept).
    """
    rng = np.random.default_rng(seed)
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if sum(ch.isalpha() for ch in w) >= 4]
    if long_words:  # SplitAug: one word split in two
        i = long_words[rng.integers(len(long_words))]
        cut = int(rng.integers(1, len(words[i])))
        words[i] = words[i][:cut] + " " + words[i][cut:]
    chars = list(" ".join(words))
    out: list[str] = []
    k = 0
    while k < len(chars):  # RandomCharAug
        ch = chars[k]
        if ch.isalpha() and rng.random() < char_p:
            op = rng.integers(4)
            if op == 0 and k + 1 < len(chars) and chars[k + 1].isalpha():  # swap
                out += [chars[k + 1], ch]
                k += 2
                continue
            if op == 1:  # insert
                out += [ch, _LETTERS[rng.integers(26)]]
            elif op == 2:  # delete
                pass
            else:  # substitute
                out.append(_LETTERS[rng.integers(26)])
        else:
            out.append(ch)
        k += 1
    for k, ch in enumerate(out):  # KeyboardAug
        near = _NEIGHBOURS.get(ch.lower(), "")
        if near and rng.random() < typo_p:
            new = near[rng.integers(len(near))]
            out[k] = new.upper() if ch.isupper() else new
    aug = "".join(out)
    return aug if aug.strip() else text


def views_of(items: list[Item], n_views: int, seed: int = 0) -> list[str]:
    """Augmented views, prompt-major: ``[item0 view0, item0 view1, ..., item1 view0, ...]``."""
    return [augment(it.text, _seed(seed, it.prompt_id, v)) for it in items for v in range(n_views)]


# ---------------------------------------------------------------- one pass, many metrics


class TokenStats:
    """``on_states`` accumulator: per-prompt entropies, curvature and pooled preprocessed rows.

    Call it with each prompt's ``(L+1, T, D)`` states (the callback of
    :func:`precompute.model.pooled.pooled_states`); only ``(L+1, D)`` per prompt is kept.
    """

    def __init__(
        self, n_texts: int, n_states: int, d: int, cfg: QualityConfig, token_metrics: bool = True
    ):
        self.cfg = cfg
        self.token_metrics = token_metrics
        self.pooled = np.full((n_states, n_texts, d), np.nan)  # (S, N, D) float64
        self.records: dict[str, dict[tuple[int, int], float]] = {
            "prompt_entropy|maxEntropy": {},
            "prompt_entropy|raw": {},
            "curvature_rad": {},
        }

    def __call__(self, j: int, states: torch.Tensor, ids: torch.Tensor) -> None:
        """Reduce one prompt's states ``(S, T, D)``, every state at once."""
        z = states.double().cpu().numpy()  # (S, T, D)
        if self.cfg.skip_first:
            z = z[:, 1:]
        if z.shape[1] < 2:
            return
        zp, ok = preprocess_batch(z)  # (S, T, D), (S,)
        self.pooled[ok, j] = zp[ok].mean(1)
        if not self.token_metrics or not ok.any():
            return
        raw = entropy_batch(gram_eigs_batch(zp[ok]), self.cfg.alpha)  # (S_ok,)
        norm = raw / np.log(min(zp.shape[1:]))
        curv = curvature_batch(z[ok]) if z.shape[1] >= 3 else np.full(int(ok.sum()), np.nan)
        for i, h, hn, c in zip(np.flatnonzero(ok), raw, norm, curv):
            self.records["prompt_entropy|raw"][(int(i), j)] = float(h)
            self.records["prompt_entropy|maxEntropy"][(int(i), j)] = float(hn)
            if np.isfinite(c):
                self.records["curvature_rad"][(int(i), j)] = float(c)


def token_records(stats: TokenStats, items: list[Item], n_layers: int) -> list[dict]:
    """Per-prompt rows of ``prompt_entropy`` and ``curvature_rad``."""
    recs = []
    for key, vals in stats.records.items():
        metric, _, variant = key.partition("|")
        unit = "rad" if metric == "curvature_rad" else ("nats" if variant == "raw" else "ratio")
        for (i, j), v in vals.items():
            recs.append(
                dict(
                    layer=i,
                    layer_kind="resid",
                    n_layers=n_layers,
                    metric=metric,
                    variant=variant,
                    value=v,
                    unit=unit,
                    prompt_id=items[j].prompt_id,
                )
            )
    return recs


def dataset_records(
    pooled: np.ndarray, views: np.ndarray | None, cfg: QualityConfig, n_layers: int
) -> list[dict]:
    """Per-state ``dataset_entropy``, ``infonce``, ``lidar``, ``dime`` and ``n_prompts`` rows.

    Args:
        pooled: ``(S, N, D)`` pooled preprocessed embeddings of the prompts (NaN rows = skipped).
        views: ``(S, N, A, D)`` pooled embeddings of ``A`` augmented views, or ``None``.
        cfg: Config.
        n_layers: ``L``.
    """
    recs = []
    base = dict(layer_kind="resid", n_layers=n_layers)

    def add(i, metric, value, unit, variant="", grp=""):
        if np.isfinite(value):
            recs.append(
                dict(
                    base,
                    layer=i,
                    metric=metric,
                    value=float(value),
                    unit=unit,
                    variant=variant,
                    grp=grp,
                )
            )

    for i in range(pooled.shape[0]):
        ok = np.isfinite(pooled[i]).all(1)
        add(i, "n_prompts", ok.sum(), "count")
        try:
            raw, norm = normalised_entropy(pooled[i][ok], cfg.alpha)
            add(i, "dataset_entropy", norm, "ratio", "maxEntropy")
            add(i, "dataset_entropy", raw, "nats", "raw")
        except DegenerateError as err:
            log.info("state %d: no dataset entropy (%s)", i, err)
        if views is None:
            continue
        v = views[i]  # (N, A, D)
        vok = np.isfinite(v).all((1, 2))
        v = v[vok]
        a = v.shape[1]
        try:
            add(i, "infonce", infonce(v[:, 0], v[:, 1], cfg.tau), "nats", grp="views=2")
            add(
                i,
                "dime",
                dime(v[:, 0], v[:, 1], cfg.dime_permutations, cfg.alpha, cfg.seed),
                "nats",
                grp="views=2",
            )
            raw, norm = lidar(v, cfg.delta, cfg.alpha)
            add(i, "lidar", norm, "ratio", "maxEntropy", f"views={a}")
            add(i, "lidar", raw, "nats", "raw", f"views={a}")
        except DegenerateError as err:
            log.info("state %d: no invariance metrics (%s)", i, err)
    return recs


def view_embeddings(lm: LoadedModel, items: list[Item], cfg: QualityConfig) -> np.ndarray | None:
    """Pooled preprocessed embeddings ``(S, N, A, D)`` of ``A = max(2, lidar_views)`` views."""
    n_views = max(2, cfg.lidar_views)
    texts = views_of(items, n_views, cfg.seed)
    stats = TokenStats(len(texts), lm.n_layers + 1, lm.d_model, cfg, token_metrics=False)
    pooled_states(lm, texts, cfg.max_tokens, on_states=stats)
    s, _, d = stats.pooled.shape
    return stats.pooled.reshape(s, len(items), n_views, d)


def check_items(items: list[Item]) -> None:
    """Reject inputs the metrics cannot use (fewer than 2 prompts)."""
    if len(items) < 2:
        raise ValueError(
            f"Representation quality needs at least 2 prompts (dataset entropy, InfoNCE, LiDAR "
            f"and DiME compare prompts); got {len(items)}."
        )


def process(
    lm: LoadedModel, items: list[Item], cfg: QualityConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: one pass over the prompts, one over their views; every metric per state."""
    check_items(items)
    stats = TokenStats(len(items), lm.n_layers + 1, lm.d_model, cfg)
    pooled_states(lm, [it.text for it in items], cfg.max_tokens, on_states=stats)
    views = view_embeddings(lm, items, cfg)
    recs = token_records(stats, items, lm.n_layers)
    recs += dataset_records(stats.pooled, views, cfg, lm.n_layers)
    return {"metrics": ctx.metrics(recs)}


METHOD = Method(
    name="representation_quality",
    summary="Skean et al.: prompt and dataset entropy, curvature, InfoNCE, LiDAR, DiME per layer.",
    config_cls=QualityConfig,
    dataset="wikitext",
    process=process,
    chunk_size=None,
)
