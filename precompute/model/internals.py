"""Shared access to a model's internals: residual states, the final norm, the unembedding.

Residual states follow METHODS.md 0.1: ``h_0`` is the embedding output and ``h_i`` the output of
block ``i-1``, so there are ``L+1`` states and ``h_L`` is *before* the final norm (taken from the
last block's ``hook_resid_post``, never from HF ``hidden_states[-1]``, which is already normed).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> states, logits = residual_states(lm, lm.tokenize("the cat sat"))
    >>> states.shape[0] == lm.n_layers + 1
    True
"""

from __future__ import annotations

import torch

from precompute.model.load import LoadedModel

NORM_VARIANTS = ("recompute_ln", "cached_final_scale")


def resid_hook_names(n_layers: int) -> list[str]:
    """Hook names of ``h_0 .. h_L`` in order."""
    return [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"
    ]


@torch.inference_mode()
def residual_states(lm: LoadedModel, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one forward pass and return every residual state and the model's logits.

    Args:
        lm: Loaded model.
        ids: Token ids, shape ``(1, T)``.

    Returns:
        ``states`` of shape ``(L+1, T, D)`` (pre final norm) and ``logits`` of shape ``(T, V)``.
    """
    names = resid_hook_names(lm.n_layers)
    wanted = set(names)
    with lm.lock:
        logits, cache = lm.bridge.run_with_cache(ids, names_filter=lambda n: n in wanted)
    states = torch.stack([cache[n][0] for n in names])  # (L+1, T, D)
    return states.float(), logits[0].float()  # (T, V)


def norm_stats(lm: LoadedModel, h: torch.Tensor) -> torch.Tensor:
    """The final norm's scale statistic per row: sigma (LayerNorm) or rms (RMSNorm).

    Args:
        lm: Loaded model (its final norm's type and epsilon).
        h: ``(..., D)``.

    Returns:
        ``(..., 1)``.
    """
    mod = getattr(lm.bridge.ln_final, "original_component", lm.bridge.ln_final)
    eps = float(getattr(mod, "eps", getattr(mod, "variance_epsilon", 1e-5)))
    h = h.float()
    if is_layernorm(lm):
        return (h.var(-1, keepdim=True, unbiased=False) + eps).sqrt()
    return (h.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def is_layernorm(lm: LoadedModel) -> bool:
    """True when the final norm centres (LayerNorm), False for RMSNorm."""
    return str(getattr(lm.bridge.cfg, "normalization_type", "LN")).upper().startswith("LN")


def final_norm(
    lm: LoadedModel,
    h: torch.Tensor,
    variant: str = "recompute_ln",
    final_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the model's final norm to residual states.

    Args:
        lm: Loaded model.
        h: Residual states ``(..., T, D)``.
        variant: ``recompute_ln`` recomputes the norm's statistics on each state (the true logit
            lens). ``cached_final_scale`` divides by the *final* state's scale at the same position,
            as TransformerLens < 2.18 ``accumulated_resid(apply_ln=True)`` did (LAD-faithful).
        final_state: ``h_L`` ``(T, D)``; required for ``cached_final_scale``.

    Returns:
        Normed states, same shape as ``h``.
    """
    if variant not in NORM_VARIANTS:
        raise ValueError(f"Unknown norm variant {variant!r}; use one of {NORM_VARIANTS}.")
    normed = lm.bridge.ln_final(h)
    if variant == "recompute_ln":
        return normed
    if final_state is None:
        raise ValueError("cached_final_scale needs the final residual state.")
    ratio = norm_stats(lm, h) / norm_stats(lm, final_state)  # (..., T, 1)
    mod = getattr(lm.bridge.ln_final, "original_component", lm.bridge.ln_final)
    bias = getattr(mod, "bias", None)
    if bias is None or not is_layernorm(lm):
        return normed * ratio
    return (normed - bias) * ratio + bias


def unembed(lm: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Logits from normed states ``(..., D) -> (..., V)``, as the model computes its own.

    Includes the unembedding bias when the model has one, and Gemma-2's final logit soft-cap.
    """
    logits = lm.bridge.unembed(x)
    cap = logit_softcap(lm)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def logit_softcap(lm: LoadedModel) -> float | None:
    """The final logit soft-cap (Gemma-2), or ``None`` when the model has none."""
    cfg = getattr(getattr(lm.bridge, "original_model", None), "config", None)
    return getattr(cfg, "final_logit_softcapping", None) or None


def unembed_weights(lm: LoadedModel) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unembedding as Hugging Face stores it: weight ``(V, D)`` and optional bias ``(V,)``."""
    mod = getattr(lm.bridge.unembed, "original_component", lm.bridge.unembed)
    return mod.weight, getattr(mod, "bias", None)
