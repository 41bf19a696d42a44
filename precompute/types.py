"""Shared types: a method's config, an input item, a run's labels, and relative depth.

These live below every other module: datasets, methods, jobs and the app all import them, and they
import only the schema.

Example:
    >>> rel_depth(3, "resid", 6)
    0.5
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import pandas as pd

from precompute.schema import METRIC_COLUMNS


@dataclass(frozen=True)
class BaseConfig:
    """Base for method configs: frozen, hashable, round-trips through dicts.

    ``RENAMED`` maps old option names to new ones, so stored configs keep their values.
    """

    RENAMED: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict:
        """The config as a plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BaseConfig:
        """Build from a dict, ignoring unknown keys so older artifacts still load."""
        names = {f.name for f in fields(cls)}
        new = cls.RENAMED
        d = {new.get(k, k): v for k, v in d.items() if k not in new or new[k] not in d}
        return cls(**{k: v for k, v in d.items() if k in names})

    def config_hash(self) -> str:
        """Short, stable hash of the config (identifies a job with model and method)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def with_overrides(self, overrides: dict[str, str]) -> BaseConfig:
        """Return a copy with ``key=value`` strings parsed to each field's type and checked.

        Raises:
            ValueError: Unknown key, a value of the wrong type or out of range; the message
                names the allowed keys or values.
        """
        by_name = {f.name: f for f in fields(self)}
        parsed: dict[str, Any] = {}
        for key, raw in overrides.items():
            if key not in by_name:
                raise ValueError(
                    f"Unknown option {key!r}; valid options: {', '.join(sorted(by_name))}"
                )
            parsed[key] = _parse(key, type(getattr(self, key)), str(raw))
        out = replace(self, **parsed)
        for key in parsed:
            check_value(by_name[key], parsed[key])
        return out

    def validate(self) -> BaseConfig:
        """Check every field against its declared (or default) range; return ``self``.

        Raises:
            ValueError: A field is out of range; the message gives the allowed values.
        """
        for f in fields(self):
            check_value(f, getattr(self, f.name))
        return self


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def option(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field with its allowed values, checked by ``--set`` (``BaseConfig.with_overrides``).

    Example:
        ``variant: str = option("both", choices=("both", "raw", "recompute_ln"))``
    """
    meta = {"lo": lo, "hi": hi, "choices": tuple(choices) if choices else None}
    return field(default=default, metadata=meta)


def _parse(key: str, typ: type, raw: str) -> Any:
    if typ is bool:
        low = raw.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(f"Option {key}={raw!r} must be true or false (or 1/0, yes/no).")
    try:
        return typ(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Option {key}={raw!r} is not a valid {typ.__name__}.") from err


def check_value(f: Any, value: Any) -> None:
    """Check one field's value against its declared range or choices.

    Undeclared numbers default to: seeds >= 0, other integers >= 1 (sizes, counts, token caps:
    0 and negatives have no meaning), floats finite and >= 0.

    Raises:
        ValueError: With the allowed values.
    """
    meta = f.metadata or {}
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ValueError(
            f"Option {f.name}={value!r} is not allowed; use one of: {', '.join(choices)}."
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None:
        lo = 0.0 if isinstance(value, float) else (0 if "seed" in f.name else 1)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Option {f.name}={value!r} must be a finite number.")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        allowed = (
            f"between {lo} and {hi}"
            if lo is not None and hi is not None
            else f"at least {lo}"
            if lo is not None
            else f"at most {hi}"
        )
        raise ValueError(f"Option {f.name}={value!r} is out of range; it must be {allowed}.")


@dataclass(frozen=True)
class Item:
    """One unit of input: a document, an example prompt, or a fact."""

    prompt_id: str
    text: str
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """What a method needs to label its rows.

    ``offset`` is the dataset index of the chunk's first item (jobs set it per chunk), so a
    chunked method can pick ``items[::stride]`` of the whole dataset.
    """

    model: str
    method: str
    dataset: str
    run_id: str = "live"
    seed: int = 0
    offset: int = 0

    def metrics(self, records: list[dict]) -> pd.DataFrame:
        """Build a ``metrics`` frame from records, filling the common columns.

        Each record needs ``layer, layer_kind, n_layers, metric, value, unit`` and may set
        ``variant, prompt_id, position, rel_depth, grp``.
        """
        df = pd.DataFrame.from_records(records)
        if df.empty:
            return pd.DataFrame(columns=list(METRIC_COLUMNS))
        defaults = {
            "model": self.model,
            "method": self.method,
            "dataset": self.dataset,
            "run_id": self.run_id,
            "seed": self.seed,
            "variant": "",
            "prompt_id": "",
            "position": -1,
            "grp": "",
        }
        for col, val in defaults.items():
            df[col] = df[col].fillna(val) if col in df.columns else val
        if "rel_depth" not in df.columns:
            df["rel_depth"] = [
                rel_depth(int(layer), kind, int(n))
                for layer, kind, n in zip(df["layer"], df["layer_kind"], df["n_layers"])
            ]
        return df


def rel_depth(layer: int, layer_kind: str, n_layers: int) -> float:
    """Relative depth (METHODS.md 0.2): ``i/L`` for residual states, ``l/(L-1)`` for blocks."""
    if layer_kind == "resid":
        return layer / n_layers
    return layer / max(n_layers - 1, 1)
