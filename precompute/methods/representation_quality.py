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

Example:
    >>> import numpy as np
    >>> round(entropy_from_eigs(np.ones(4)), 6) == round(np.log(4), 6)
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
from precompute.model.pooled import PooledStates, pooled_states
from precompute.types import BaseConfig, Item, RunContext

log = logging.getLogger(__name__)

#: Smallest eigenvalue share kept (relative to the largest); below it is rounding noise.
EIG_RTOL = 1e-10
#: Row norms below this (relative to the largest) count as zero rows (constant representations).
ZERO_RTOL = 1e-7


class DegenerateError(ValueError):
    """Representations too constant (or too few) for a metric; the message says which."""


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


# ---------------------------------------------------------------- entropy


def entropy_from_eigs(eigs: np.ndarray, alpha: float = 1.0) -> float:
    """Matrix Renyi entropy (nats) of a PSD spectrum, normalised to sum 1.

    ``S_alpha = log(sum p^alpha) / (1 - alpha)``; at ``alpha = 1`` the von Neumann limit
    ``-sum p log p`` (``repitl`` divides by zero there). Eigenvalues at or below
    ``EIG_RTOL x max`` are dropped.

    Raises:
        DegenerateError: No positive eigenvalue (an all-zero matrix).
    """
    eigs = np.asarray(eigs, dtype=np.float64)
    top = eigs.max(initial=0.0)
    if not top > 0:
        raise DegenerateError("The matrix has no positive eigenvalue (constant representations).")
    p = eigs[eigs > top * EIG_RTOL]
    p = p / p.sum()
    if abs(alpha - 1.0) < 1e-12:
        return float(-(p * np.log(p)).sum())
    return float(np.log((p**alpha).sum()) / (1.0 - alpha))


def gram_eigs(z: np.ndarray) -> np.ndarray:
    """Non-zero spectrum of ``Z Z^T`` via the smaller of ``Z Z^T`` and ``Z^T Z`` (float64)."""
    z = np.asarray(z, dtype=np.float64)
    k = z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z  # (min(T, D), min(T, D))
    return np.linalg.eigvalsh(k)


def preprocess(z: np.ndarray) -> np.ndarray:
    """Centre the rows (subtract the mean row) and scale each row to unit length (SKEAN).

    Raises:
        DegenerateError: Fewer than 2 rows, or a row that is zero after centring (constant rows).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise DegenerateError(f"Need at least 2 rows (tokens or prompts); got shape {z.shape}.")
    zc = z - z.mean(0, keepdims=True)
    norms = np.linalg.norm(zc, axis=1, keepdims=True)  # (T, 1)
    scale = max(float(np.abs(z).max()), 1e-300)
    if (norms <= ZERO_RTOL * scale * np.sqrt(z.shape[1])).any():
        raise DegenerateError(
            "Some rows equal the mean row after centring (constant representations): their "
            "direction is undefined, so the entropy would be NaN."
        )
    return zc / norms


def normalised_entropy(z: np.ndarray, alpha: float = 1.0) -> tuple[float, float]:
    """Entropy of the Gram of preprocessed rows: ``(raw nats, raw / log min(rows, D))``."""
    zp = preprocess(z)
    raw = entropy_from_eigs(gram_eigs(zp), alpha)
    return raw, raw / np.log(min(zp.shape))


def curvature(z: np.ndarray) -> float:
    """Mean angle (radians) between consecutive difference vectors of a token trajectory.

    Raises:
        DegenerateError: Fewer than 3 points, or no two consecutive non-zero differences.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 3:
        raise DegenerateError(f"Curvature needs T >= 3 points; got shape {z.shape}.")
    v = np.diff(z, axis=0)  # (T-1, D)
    n = np.linalg.norm(v, axis=1)  # (T-1,)
    ok = (n[:-1] > 0) & (n[1:] > 0)
    if not ok.any():
        raise DegenerateError("Curvature is undefined: consecutive states are identical.")
    cos = (v[:-1] * v[1:]).sum(1)[ok] / (n[:-1] * n[1:])[ok]
    return float(np.arccos(np.clip(cos, -1.0, 1.0)).mean())


# ---------------------------------------------------------------- augmentation invariance


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    if (n <= 0).any():
        raise DegenerateError("An embedding is all zeros (constant representations).")
    return x / n


def infonce(a: np.ndarray, b: np.ndarray, tau: float = 0.1, normalise: bool = True) -> float:
    """InfoNCE loss (nats) of two views ``(N, D)``: each row's positive is its other view.

    ``-mean_i log(exp(z_i.z_p / tau) / sum_{j != i} exp(z_i.z_j / tau))`` over the ``2N`` rows.
    """
    if a.shape != b.shape or len(a) < 2:
        raise DegenerateError(f"InfoNCE needs two views of >= 2 prompts; got {a.shape}, {b.shape}.")
    z = np.concatenate([a, b]).astype(np.float64)  # (2N, D)
    if normalise:
        z = _unit_rows(z)
    n = len(a)
    logits = z @ z.T / tau  # (2N, 2N)
    np.fill_diagonal(logits, -np.inf)
    pos = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    m = logits.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(1))
    return float((lse - logits[np.arange(2 * n), pos]).mean())


def lidar(views: np.ndarray, delta: float = 1e-4, alpha: float = 1.0) -> tuple[float, float]:
    """LiDAR (Thilak et al. 2024): entropy of the LDA matrix, classes = prompts.

    Args:
        views: ``(N, A, D)`` embeddings, ``A >= 2`` views of ``N >= 2`` prompts.
        delta: Ridge added to the within-class scatter.
        alpha: Renyi order.

    Returns:
        ``(raw nats, raw / log min(N, D))``.
    """
    views = np.asarray(views, dtype=np.float64)
    if views.ndim != 3 or views.shape[0] < 2 or views.shape[1] < 2:
        raise DegenerateError(f"LiDAR needs (N >= 2, A >= 2, D) views; got {views.shape}.")
    n, a, d = views.shape
    mu_i = views.mean(1)  # (N, D)
    mu = mu_i.mean(0)  # (D,)
    db = mu_i - mu  # (N, D)
    sigma_b = db.T @ db / n  # (D, D)
    dw = (views - mu_i[:, None]).reshape(n * a, d)  # (N*A, D)
    sigma_w = dw.T @ dw / (n * a) + delta * np.eye(d)  # (D, D)
    w_eig, w_vec = np.linalg.eigh(sigma_w)
    w_isqrt = (w_vec / np.sqrt(w_eig)) @ w_vec.T  # Sigma_w^{-1/2}
    lda = w_isqrt @ sigma_b @ w_isqrt
    raw = entropy_from_eigs(np.linalg.eigvalsh((lda + lda.T) / 2), alpha)
    return raw, raw / np.log(min(n, d))


def _trace_normed_gram(x: np.ndarray) -> np.ndarray:
    z = _unit_rows(x)
    k = z @ z.T  # (N, N)
    return k / np.trace(k)


def _hadamard_entropy(ka: np.ndarray, kb: np.ndarray, alpha: float) -> float:
    k = ka * kb
    return entropy_from_eigs(np.linalg.eigvalsh(k / np.trace(k)), alpha)


def dime(
    a: np.ndarray, b: np.ndarray, n_perm: int = 10, alpha: float = 1.0, seed: int = 0
) -> float:
    """Difference of matrix entropies (nats): ``E_P[S(K_A o P K_B P^T)] - S(K_A o K_B)``.

    Always on the ``N x N`` Gram matrices (permuting prompts, never features; METHODS.md E4).
    """
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise DegenerateError(f"DiME needs two views of >= 2 prompts; got {a.shape}, {b.shape}.")
    ka, kb = _trace_normed_gram(a), _trace_normed_gram(b)
    joint = _hadamard_entropy(ka, kb, alpha)
    rng = np.random.default_rng(seed)
    perm = []
    for _ in range(n_perm):
        p = rng.permutation(len(kb))
        perm.append(_hadamard_entropy(ka, kb[np.ix_(p, p)], alpha))
    return float(np.mean(perm) - joint)


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


def preprocess_batch(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`preprocess` of a stack ``(S, T, D)``; ``ok[s]`` is False for degenerate states."""
    zc = z - z.mean(1, keepdims=True)
    norms = np.linalg.norm(zc, axis=2, keepdims=True)  # (S, T, 1)
    scale = np.maximum(np.abs(z).max((1, 2)), 1e-300)[:, None, None]  # (S, 1, 1)
    bad = norms <= ZERO_RTOL * scale * np.sqrt(z.shape[2])
    ok = ~bad.any((1, 2))
    return zc / np.where(bad, 1.0, norms), ok


def gram_eigs_batch(z: np.ndarray) -> np.ndarray:
    """:func:`gram_eigs` of a stack ``(S, T, D)`` -> ``(S, min(T, D))``."""
    k = z @ z.transpose(0, 2, 1) if z.shape[1] <= z.shape[2] else z.transpose(0, 2, 1) @ z
    return np.linalg.eigvalsh(k)


def entropy_batch(eigs: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """:func:`entropy_from_eigs` of each row of ``(S, K)`` spectra (each must have a positive)."""
    top = eigs.max(1, keepdims=True)
    e = np.where(eigs > top * EIG_RTOL, eigs, 0.0)
    p = e / e.sum(1, keepdims=True)
    if abs(alpha - 1.0) < 1e-12:
        logp = np.log(np.where(p > 0, p, 1.0))
        return -(p * logp).sum(1)
    return np.log((np.where(p > 0, p, 0.0) ** alpha).sum(1)) / (1.0 - alpha)


def curvature_batch(z: np.ndarray) -> np.ndarray:
    """:func:`curvature` of a stack ``(S, T, D)`` -> ``(S,)`` (NaN where undefined)."""
    v = np.diff(z, axis=1)  # (S, T-1, D)
    n = np.linalg.norm(v, axis=2)  # (S, T-1)
    valid = (n[:, :-1] > 0) & (n[:, 1:] > 0)
    cos = (v[:, :-1] * v[:, 1:]).sum(2) / np.where(valid, n[:, :-1] * n[:, 1:], 1.0)
    ang = np.where(valid, np.arccos(np.clip(cos, -1.0, 1.0)), 0.0)
    cnt = valid.sum(1)
    return np.where(cnt > 0, ang.sum(1) / np.maximum(cnt, 1), np.nan)


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


# ---------------------------------------------------------------- benchmark


def bench_representations(model_name: str, args) -> dict:
    """Every method of issue 5 on the same stimuli in one run, against its forward passes alone.

    Stimuli: the first ``BENCH_N`` team facts (probes need the model's answers as labels); the
    quality metrics use ``BENCH_VIEWS`` augmented views (ours: fewer than SKEAN's 16 for the CPU).
    ``forward_seconds`` times the forward passes alone (originals and views); ``total_seconds``
    runs intrinsic dimension, probes, RSA and representation quality from one pass over the
    originals (one copy of the pooled states, token-level metrics reduced on the fly) and one over
    the views; ``ratio = total / forward``.
    """
    import time

    from precompute.datasets import load_facts
    from precompute.methods import intrinsic_dimension as idim
    from precompute.methods import probes, rsa
    from precompute.model.internals import residual_states
    from precompute.model.load import load_model

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    items, _ = load_facts(n=BENCH_N)
    qcfg = QualityConfig(lidar_views=BENCH_VIEWS, max_tokens=64)
    pcfg = probes.ProbesConfig(min_per_class=5, max_tokens=64)
    texts = [it.text for it in items]
    view_texts = views_of(items, max(2, qcfg.lidar_views), qcfg.seed)

    t0 = time.perf_counter()
    for text in texts + view_texts:
        residual_states(lm, lm.tokenize(text, max_tokens=qcfg.max_tokens))
    forward = time.perf_counter() - t0

    ctx = RunContext(lm.name, "bench", "facts")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stats = TokenStats(len(items), lm.n_layers + 1, lm.d_model, qcfg)
    answers: dict[int, int] = {}
    collect = probes.answer_collector(lm, answers)

    def on_states(j, states, ids):
        stats(j, states, ids)
        collect(j, states, ids)

    ps = pooled_states(lm, texts, qcfg.max_tokens, on_states=on_states)
    views = view_embeddings(lm, items, qcfg)
    timings["passes_with_reductions"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    n_rows = len(idim.id_frame(ps, idim.IntrinsicDimensionConfig(), ctx))
    timings["intrinsic_dimension"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    labels = probes.labels_for(lm, items, [answers[j] for j in range(len(items))], "model_answer")
    try:
        n_rows += len(probes.probe_records(ps.last, np.array(labels), pcfg, lm.n_layers))
    except ValueError as err:  # too few examples per answer on this model
        log.warning("probes skipped in the bench: %s", err)
    timings["probes"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    ids = [it.prompt_id for it in items]
    rsa_note = "all states"
    try:
        res = rsa.rsa_from_pooled(ps, ids, rsa.RSAConfig())
    except ValueError as err:  # h_0 of facts whose first token (excluded) is the subject
        rsa_note = f"h_1..h_L only ({err})"
        without_h0 = PooledStates(ps.mean[1:], ps.last[1:], ps.n_tokens, ps.truncated)
        res = rsa.rsa_from_pooled(without_h0, ids, rsa.RSAConfig())
    n_rows += res.similarity.size
    timings["rsa"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    n_rows += len(token_records(stats, items, lm.n_layers))
    n_rows += len(dataset_records(stats.pooled, views, qcfg, lm.n_layers))
    timings["representation_quality"] = time.perf_counter() - t1
    total = time.perf_counter() - t0
    return {
        "model": lm.name,
        "device": str(lm.device),
        "n_stimuli": len(items),
        "n_views": max(2, qcfg.lidar_views),
        "n_forward_passes": len(texts) + len(view_texts),
        "forward_seconds": round(forward, 3),
        "total_seconds": round(total, 3),
        "ratio": round(total / forward, 3),
        "seconds_by_step": {k: round(v, 3) for k, v in timings.items()},
        "rows": int(n_rows),
        "rsa_states": rsa_note,
        "methods": ["intrinsic_dimension", "probes", "rsa", "representation_quality"],
    }


#: Bench sizes (ours): stimuli and augmented views per stimulus.
BENCH_N = 64
BENCH_VIEWS = 4


METHOD = Method(
    name="representation_quality",
    summary="Skean et al.: prompt and dataset entropy, curvature, InfoNCE, LiDAR, DiME per layer.",
    config_cls=QualityConfig,
    dataset="wikitext",
    process=process,
    chunk_size=None,
    benches={"representations": bench_representations},
)
