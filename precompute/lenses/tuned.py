"""The tuned-lens artifact (METHODS.md A4): translators, their files, and the model they belong to.

For residual state ``h_i`` (``i = 0..L-1``) the lens reads ``U(norm_f(h + A_i h + b_i))``; the final
state ``h_L`` needs no translator. ``A_i`` and ``b_i`` start at zero, so an untrained tuned lens
*is* the logit lens, exactly.

Files: ``lens_dir/<model>/tuned_lens.safetensors`` + ``tuned_lens.json`` (model, ``d_model``,
``n_layers``, vocabulary size, tokenizer and unembedding hashes, training budget). Tensors are
read with ``safetensors`` only (no pickle). Translators may be stored low rank (truncated SVD) and
in float16 to keep the published folder small. A lens whose hashes do not match the model is
refused (:class:`LensMismatchError`).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> r = tuned_readout(lm, TunedLens.zeros(lm), lm.tokenize("the cat sat on the mat"))
    >>> float(r.kl[-1].abs().max()) < 1e-5
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from precompute.lenses.readout import LensReadout, lens_from_states
from precompute.model.internals import residual_states, unembed_weights
from precompute.model.load import LoadedModel

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LENS_DIR = ROOT / "data" / "results" / "lenses"
LENS_FILE = "tuned_lens.safetensors"
CONFIG_FILE = "tuned_lens.json"
FORMAT = "stagescope-tuned-lens-v1"
IDENTITY_KEYS = ("d_model", "n_layers", "d_vocab", "tokenizer_hash", "unembed_hash")
SAVE_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


class LensMismatchError(ValueError):
    """A saved lens does not belong to this model (architecture, tokenizer or unembedding)."""


_HASH_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # bridge -> identity


def model_identity(lm: LoadedModel) -> dict:
    """Name, shapes, and short hashes of the tokenizer vocabulary and the unembedding."""
    key = lm.bridge
    if key not in _HASH_CACHE:
        vocab = sorted(lm.tokenizer.get_vocab().items())
        tok_hash = hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]
        w, b = unembed_weights(lm)
        h = hashlib.sha256(w.detach().float().contiguous().cpu().numpy().tobytes())
        if b is not None:
            h.update(b.detach().float().cpu().numpy().tobytes())
        _HASH_CACHE[key] = dict(
            model=lm.name,
            d_model=lm.d_model,
            n_layers=lm.n_layers,
            d_vocab=int(w.shape[0]),
            tokenizer_hash=tok_hash,
            unembed_hash=h.hexdigest()[:16],
        )
    return dict(_HASH_CACHE[key])


def check_identity(saved: dict, lm: LoadedModel) -> None:
    """Refuse a lens trained for another model, tokenizer or unembedding.

    Raises:
        LensMismatchError: With what differs and how to get a matching lens.
    """
    ours = model_identity(lm)
    diffs = [
        f"{k}: lens has {saved.get(k)!r}, model has {ours[k]!r}"
        for k in IDENTITY_KEYS
        if saved.get(k) != ours[k]
    ]
    if diffs:
        raise LensMismatchError(
            f"This tuned lens was trained for model {saved.get('model')!r}, not for "
            f"{lm.name!r} ({'; '.join(diffs)}). A lens only reads the model, tokenizer and "
            f"unembedding it was trained on: train one with `python -m precompute run --model "
            f"{lm.name} --methods tuned_lens`."
        )


def write_folder_atomic(folder: Path, write: Callable[[Path], None]) -> None:
    """Create ``folder`` anew, atomically: ``write(tmp)`` fills a temporary folder, then rename.

    Files are made world-readable (the app may run as another user, e.g. uid 1000 in a Space).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write(tmp)
    for f in tmp.iterdir():
        f.chmod(0o644)
    tmp.chmod(0o755)
    if folder.exists():
        trash = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        os.replace(folder, trash)
        os.replace(tmp, folder)
        shutil.rmtree(trash)
    else:
        os.replace(tmp, folder)


@dataclass
class TunedLens:
    """Translators ``A`` ``(L, D, D)`` (``nn.Linear`` layout: ``y = h A^T``) and ``b`` ``(L, D)``.

    Attributes:
        A: One matrix per residual state ``h_0..h_{L-1}``.
        b: One bias per state.
        meta: Identity of the model it belongs to, and how it was trained and stored.
    """

    A: torch.Tensor
    b: torch.Tensor
    meta: dict = field(default_factory=dict)

    @classmethod
    def zeros(cls, lm: LoadedModel) -> TunedLens:
        """Return the untrained lens (equal to the logit lens)."""
        d, n = lm.d_model, lm.n_layers
        return cls(torch.zeros(n, d, d), torch.zeros(n, d), model_identity(lm))

    def translate(self, states: torch.Tensor) -> torch.Tensor:
        """Apply translator ``i`` to state ``i``; a final state ``h_L`` (if given) passes through.

        Args:
            states: ``(S, T, D)`` with ``S = L`` or ``L + 1``.

        Returns:
            Translated states, same shape.
        """
        n = self.A.shape[0]
        if states.shape[0] not in (n, n + 1):
            raise ValueError(f"Expected {n} or {n + 1} residual states, got {states.shape[0]}.")
        A = self.A.to(states.dtype)
        b = self.b.to(states.dtype)
        h = states[:n]  # (L, T, D)
        out = h + torch.baddbmm(b[:, None, :], h, A.transpose(1, 2))  # (L, T, D)
        if states.shape[0] == n + 1:
            out = torch.cat([out, states[n:]])
        return out

    def save(self, folder: Path, rank: int = 0, dtype: str = "float16") -> dict:
        """Write the lens atomically; ``rank > 0`` stores each ``A_i`` as a rank-``r`` SVD.

        Returns:
            The written JSON config.
        """
        from safetensors.torch import save_file

        if dtype not in SAVE_DTYPES:
            raise ValueError(f"save dtype {dtype!r}: use one of {sorted(SAVE_DTYPES)}")
        tdt = SAVE_DTYPES[dtype]
        n, d, _ = self.A.shape
        tensors: dict[str, torch.Tensor] = {"b": self.b.to(tdt).contiguous()}
        kept = []
        if 0 < rank < d:
            u, s, vh = torch.linalg.svd(self.A.double())  # (L, D, D), (L, D), (L, D, D)
            tensors["A_left"] = (u[:, :, :rank] * s[:, None, :rank]).to(tdt).contiguous()
            tensors["A_right"] = vh[:, :rank, :].to(tdt).contiguous()
            total = s.pow(2).sum(-1).clamp_min(1e-30)
            kept = (s[:, :rank].pow(2).sum(-1) / total).tolist()
        else:
            tensors["A"] = self.A.to(tdt).contiguous()
            rank = d
        meta = dict(
            self.meta,
            format=FORMAT,
            rank=rank,
            dtype=dtype,
            energy_kept_per_layer=[round(k, 6) for k in kept] or None,
        )

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp / LENS_FILE), metadata={"format": FORMAT})
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))

        write_folder_atomic(folder, write)
        return meta

    @classmethod
    def load(cls, folder: Path, lm: LoadedModel | None = None) -> TunedLens:
        """Read a saved lens; with ``lm``, refuse it unless it was trained for that model.

        Raises:
            FileNotFoundError: No lens in ``folder``.
            LensMismatchError: The lens belongs to another model or tokenizer, or is not ours.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG_FILE).exists() or not (folder / LENS_FILE).exists():
            raise FileNotFoundError(f"No tuned lens in {folder} (expected {CONFIG_FILE}).")
        meta = json.loads((folder / CONFIG_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise LensMismatchError(f"{folder} holds format {meta.get('format')!r}, not {FORMAT}.")
        if lm is not None:
            check_identity(meta, lm)
        t = load_file(str(folder / LENS_FILE))
        A = (  # (L, D, D)
            t["A"].float() if "A" in t else torch.bmm(t["A_left"].float(), t["A_right"].float())
        )
        return cls(A, t["b"].float(), meta)


def lens_folder(lm_name: str, lens_dir: str | Path | None = None) -> Path:
    """Where the lens of a model lives (``data/results/lenses/<model>`` by default)."""
    root = Path(lens_dir) if lens_dir else DEFAULT_LENS_DIR
    return root / lm_name.replace("/", "__")


def find_lens(lm: LoadedModel, lens_dir: str | Path | None = None) -> TunedLens | None:
    """Return the saved lens for ``lm``, or ``None`` if there is none (a mismatch raises)."""
    folder = lens_folder(lm.name, lens_dir)
    if not (folder / CONFIG_FILE).exists():
        return None
    return TunedLens.load(folder, lm)


def tuned_readout(lm: LoadedModel, lens: TunedLens, ids: torch.Tensor, k: int = 10) -> LensReadout:
    """Tuned-lens read-outs of one prompt ``(1, T)``, same fields as the logit lens."""
    states, logits = residual_states(lm, ids)  # (L+1, T, D), (T, V)
    return lens_from_states(lm, lens.translate(states), logits, ids[0], k=k)
