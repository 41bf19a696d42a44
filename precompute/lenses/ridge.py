"""Closed-form start for the tuned lens: per-layer ridge regression (ours), chosen on validation KL.

Belrose et al. (2023) start every translator at zero (the logit lens) and train it by SGD on
``KL(p_final || lens_i)``. On a shared CPU that SGD is the whole cost (two ``N x D x V`` products
per layer and token), so we start from a least-squares fit instead; the KL fine-tune of
:mod:`precompute.lenses.train` (TL's objective and optimiser) then continues from it. The
least-squares start is **ours**, not TL's.

The fit, per residual state ``h_i`` (positions 0 dropped with ``skip_first``):

* target ``y = h_L * rms(h_i) / rms(h_L)``: the final residual rescaled to the input's size. The
  final norm is scale-free, so only the direction of the translated state matters; rescaling makes
  the identity map (the logit lens) a sensible point to shrink towards;
* ``W = argmin ||(X - mx) W - (Y - my)||^2 + lam ||W - I||^2``, ``b = my - mx W``, i.e.
  ``W = (C + lam I)^-1 (C_xy + lam I)`` from the centred second moments ``C``, ``C_xy`` (float64,
  accumulated over ``fit_tokens`` tokens of forward passes: no gradients, ``D x D`` solves);
  ``lam = alpha * trace(C) / D``; ``alpha -> inf`` is the logit lens;
* per layer, ``alpha`` is picked from ``ridge_grid`` (plus ``inf``, the logit lens itself) by the
  mean KL to the final distribution on ``val_tokens`` tokens of *training* paragraphs not used in
  the fit, so a layer's start is never worse than the logit lens on those tokens.

The translator in :class:`~precompute.lenses.tuned.TunedLens` form is ``A = (W - I)^T``, ``b``.

Example:
    >>> from precompute.model.load import load_model
    >>> from precompute.lenses.train import TrainConfig, tokenize_docs
    >>> from precompute.types import Item
    >>> lm = load_model("tiny-gpt2")
    >>> items = [Item(str(i), "the cat sat on the mat " * 6) for i in range(6)]
    >>> docs = tokenize_docs(lm, items, 32)
    >>> cfg = TrainConfig(init="ridge", fit_tokens=96, val_tokens=32)
    >>> fit, val = split_docs(docs, cfg.fit_tokens, cfg.val_tokens, skip=1)
    >>> lens, info = ridge_init(lm, fit, val, cfg)
    >>> len(info["alpha_per_layer"]) == lm.n_layers
    True
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from precompute.lenses.tuned import TunedLens, model_identity
from precompute.model.internals import final_norm, residual_states
from precompute.model.load import LoadedModel

log = logging.getLogger(__name__)


def parse_grid(text: str) -> list[float]:
    """``"1e-3,1e-2"`` -> ``[0.001, 0.01]`` (positive ridge multipliers)."""
    grid = [float(x) for x in str(text).split(",") if x.strip()]
    if not grid or min(grid) <= 0:
        raise ValueError(f"ridge_grid {text!r}: give positive numbers separated by commas.")
    return grid


def split_docs(docs: list[torch.Tensor], fit_tokens: int, val_tokens: int, skip: int):
    """Validation documents from the end of ``docs``, fit documents from the start (disjoint)."""
    val, n_val = [], 0
    for d in reversed(docs):
        if n_val >= val_tokens:
            break
        val.append(d)
        n_val += max(len(d) - skip, 0)
    rest = docs[: len(docs) - len(val)]
    fit, n_fit = [], 0
    for d in rest:
        if n_fit >= fit_tokens:
            break
        fit.append(d)
        n_fit += max(len(d) - skip, 0)
    if not fit:
        raise ValueError("No documents left for the ridge fit: lower val_tokens or add text.")
    return fit, val


def _rescaled_target(h: torch.Tensor, h_last: torch.Tensor) -> torch.Tensor:
    """``h_L`` rescaled to the RMS of each ``h_i``: ``(L, N, D)`` from ``(L, N, D)``, ``(N, D)``."""
    rms_i = h.pow(2).mean(-1, keepdim=True).sqrt()  # (L, N, 1)
    rms_last = h_last.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)  # (N, 1)
    return h_last[None] / rms_last[None] * rms_i


@torch.inference_mode()
def moments(lm: LoadedModel, docs: list[torch.Tensor], skip: int) -> dict:
    """Float64 sums over tokens of ``x``, ``y``, ``x^T x``, ``x^T y`` per layer, and the count."""
    n_l, d = lm.n_layers, lm.d_model
    acc = dict(
        n=0,
        sx=torch.zeros(n_l, d, dtype=torch.float64),
        sy=torch.zeros(n_l, d, dtype=torch.float64),
        sxx=torch.zeros(n_l, d, d, dtype=torch.float64),
        sxy=torch.zeros(n_l, d, d, dtype=torch.float64),
    )
    for k, ids in enumerate(docs):
        if k % 16 == 0:
            log.info("ridge fit: document %d/%d, %d tokens so far", k, len(docs), acc["n"])
        states, _ = residual_states(lm, ids.view(1, -1).to(lm.device))  # (L+1, T, D)
        h = states[:-1, skip:].double().cpu()  # (L, T', D)
        if h.shape[1] == 0:
            continue
        y = _rescaled_target(h, states[-1, skip:].double().cpu())  # (L, T', D)
        acc["n"] += h.shape[1]
        acc["sx"] += h.sum(1)
        acc["sy"] += y.sum(1)
        acc["sxx"] += h.transpose(1, 2) @ h
        acc["sxy"] += h.transpose(1, 2) @ y
    return acc


def solve(acc: dict, layer: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` ``(D, D)`` (``nn.Linear`` layout) and ``b`` ``(D,)`` of one layer for one ``alpha``."""
    n = acc["n"]
    mx, my = acc["sx"][layer] / n, acc["sy"][layer] / n
    c = acc["sxx"][layer] / n - torch.outer(mx, mx)
    cxy = acc["sxy"][layer] / n - torch.outer(mx, my)
    d = c.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    lam = alpha * float(torch.diagonal(c).sum()) / d
    w = torch.linalg.solve(c + lam * eye, cxy + lam * eye)  # (D, D): y = x W
    b = my - mx @ w
    return (w - eye).T.float().contiguous(), b.float()


@torch.inference_mode()
def val_kl(lm: LoadedModel, x: torch.Tensor, logp: torch.Tensor, chunk: int = 128) -> float:
    """Mean ``KL(p || softmax(U(norm_f(x))))`` over rows of translated states ``x`` ``(N, D)``."""
    from precompute.lenses.train import unembed_kl_sum

    total = 0.0
    for r0 in range(0, x.shape[0], chunk):
        lp = logp[r0 : r0 + chunk]  # (n, V)
        p = lp.exp()
        neg_ent = torch.linalg.vecdot(p, lp.nan_to_num(0.0, 0.0, 0.0))  # (n,)
        total += float(unembed_kl_sum(lm, final_norm(lm, x[r0 : r0 + chunk]), p, neg_ent))
    return total / x.shape[0]


def ridge_init(
    lm: LoadedModel, fit: list[torch.Tensor], val: list[torch.Tensor], cfg
) -> tuple[TunedLens, dict]:
    """Fit every translator in closed form and pick its ridge on validation tokens.

    Args:
        lm: The model.
        fit: Token sequences of the fit.
        val: Validation token sequences (training paragraphs not in ``fit``).
        cfg: A :class:`~precompute.lenses.train.TrainConfig` (``fit_tokens``, ``val_tokens``,
            ``ridge_grid``, ``skip_first``).

    Returns:
        The lens and a summary (tokens used, chosen ``alpha`` and validation KL per layer).
    """
    from precompute.lenses.train import batch_states

    t0 = time.perf_counter()
    grid = parse_grid(cfg.ridge_grid)
    skip = 1 if cfg.skip_first else 0
    acc = moments(lm, fit, skip)
    states, logits, _ = batch_states(lm, val, cfg.skip_first)  # (L, Nv, D), (Nv, V)
    logp = torch.log_softmax(logits, -1)  # (Nv, V)
    del logits
    n_l, d = lm.n_layers, lm.d_model
    A, b = torch.zeros(n_l, d, d), torch.zeros(n_l, d)
    alphas, kl_ridge, kl_logit = [], [], []
    for i in range(n_l):
        h = states[i]  # (Nv, D)
        best = (val_kl(lm, h, logp), math.inf, None, None)
        kl_logit.append(best[0])
        for alpha in grid:
            a_i, b_i = solve(acc, i, alpha)
            kl = val_kl(lm, h + h @ a_i.T + b_i, logp)
            if kl < best[0]:
                best = (kl, alpha, a_i, b_i)
        kl_ridge.append(best[0])
        log.info("ridge layer %d: val KL %.3f (logit lens %.3f)", i, best[0], kl_logit[-1])
        alphas.append(best[1] if math.isfinite(best[1]) else None)  # None: the logit lens
        if best[2] is not None:
            A[i], b[i] = best[2], best[3]
    info = dict(
        rule="ridge to the rescaled final residual, alpha per layer by validation KL (ours)",
        fit_docs=len(fit),
        fit_tokens=acc["n"],
        val_docs=len(val),
        val_tokens=int(states.shape[1]),
        ridge_grid=grid,
        alpha_per_layer=alphas,
        val_kl_logit=[round(k, 5) for k in kl_logit],
        val_kl_ridge=[round(k, 5) for k in kl_ridge],
        seconds=round(time.perf_counter() - t0, 2),
    )
    return TunedLens(A, b, model_identity(lm)), info


def start_lens(lm: LoadedModel, docs: list[torch.Tensor], cfg, ckpt: Path | None):
    """The SGD start and the documents of SGD and validation.

    Returns:
        ``(init, info, train_docs, val_docs)``: with ``init="zero"`` (TL) ``None, None, docs, []``;
        with ``"ridge"`` the fit (kept beside ``ckpt`` so resuming skips it), its summary, the fit
        documents (SGD continues on them) and the validation documents (never trained on).
    """
    if cfg.init == "zero":
        return None, None, docs, []
    fit, val = split_docs(docs, cfg.fit_tokens, cfg.val_tokens, 1 if cfg.skip_first else 0)
    folder = None if ckpt is None else ckpt.with_name(f"{ckpt.stem}.init")
    if folder is not None and folder.exists():
        saved = TunedLens.load(folder, lm)
        return saved, saved.meta.get("ridge"), fit, val
    lens, info = ridge_init(lm, fit, val, cfg)
    if folder is not None:
        lens.meta["ridge"] = info
        lens.save(folder, rank=0, dtype="float32")
    return lens, info, fit, val


@torch.inference_mode()
def keep_better(
    lm: LoadedModel, start: TunedLens, tuned: TunedLens, val: list[torch.Tensor], skip_first: bool
) -> tuple[TunedLens, dict]:
    """Per layer, the SGD result or its start, whichever has the lower validation KL (ours)."""
    from precompute.lenses.train import batch_states

    states, logits, _ = batch_states(lm, val, skip_first)  # (L, Nv, D), (Nv, V)
    logp = torch.log_softmax(logits, -1)
    del logits
    A, b, kept, kl_start, kl_sgd = tuned.A.clone(), tuned.b.clone(), [], [], []
    for i in range(lm.n_layers):
        h = states[i]
        kl_start.append(val_kl(lm, h + h @ start.A[i].T + start.b[i], logp))
        kl_sgd.append(val_kl(lm, h + h @ tuned.A[i].T + tuned.b[i], logp))
        kept.append("sgd" if kl_sgd[-1] <= kl_start[-1] else "start")
        if kept[-1] == "start":
            A[i], b[i] = start.A[i], start.b[i]
    info = dict(
        val_kl_start=[round(k, 5) for k in kl_start],
        val_kl_sgd=[round(k, 5) for k in kl_sgd],
        kept_per_layer=kept,
    )
    return TunedLens(A, b, dict(tuned.meta)), info
