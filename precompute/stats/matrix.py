"""Matrix statistics of representations: Renyi entropy of Gram spectra, curvature, invariance.

Pure numpy (no torch), shared by the representation methods (METHODS.md E4; Skean et al. 2025)
and their benchmark. Conventions (SKEAN): rows are tokens or prompts; :func:`preprocess` centres
the rows and scales each to unit length; entropies are in nats, eigenvalues in float64, those at or
below ``EIG_RTOL`` x the largest dropped as rounding noise. A matrix too constant for a statistic
raises :class:`DegenerateError` (never a NaN).

Example:
    >>> import numpy as np
    >>> round(entropy_from_eigs(np.ones(4)), 6) == round(np.log(4), 6)
    True
"""

from __future__ import annotations

import numpy as np

#: Smallest eigenvalue share kept (relative to the largest); below it is rounding noise.
EIG_RTOL = 1e-10
#: Row norms below this (relative to the largest) count as zero rows (constant representations).
ZERO_RTOL = 1e-7


class DegenerateError(ValueError):
    """Representations too constant (or too few) for a metric; the message says which."""


# ---------------------------------------------------------------- entropy and curvature


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


# ---------------------------------------------------------------- batched (S, T, D) stacks


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
