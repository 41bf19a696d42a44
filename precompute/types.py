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
        """Return a copy with ``key=value`` strings parsed to each field's type.

        Raises:
            ValueError: Unknown key or a value of the wrong type, with the valid keys.
        """
        types = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        parsed: dict[str, Any] = {}
        for key, raw in overrides.items():
            if key not in types:
                raise ValueError(f"Unknown option {key!r}; valid options: {sorted(types)}")
            typ = types[key]
            try:
                if typ is bool:
                    parsed[key] = str(raw).lower() in ("1", "true", "yes")
                else:
                    parsed[key] = typ(raw)
            except (TypeError, ValueError) as err:
                raise ValueError(f"Option {key}={raw!r} is not a valid {typ.__name__}") from err
        return replace(self, **parsed)


@dataclass(frozen=True)
class Item:
    """One unit of input: a document, an example prompt, or a fact."""

    prompt_id: str
    text: str
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """What a method needs to label its rows."""

    model: str
    method: str
    dataset: str
    run_id: str = "live"
    seed: int = 0

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
