"""Method registry: one module per method, discovered automatically.

To add a method, add a module here that defines ``METHOD = Method(...)``; the CLI (``run``,
``run-one``, ``list``) and the job runner find it by name. The same functions serve precompute jobs
and the app's live panels, so a live number and a published number come from one function.

Example:
    >>> from precompute.methods import get_method
    >>> get_method("logit_lens").name
    'logit_lens'
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import pandas as pd

from precompute.schema import METRIC_COLUMNS


@dataclass(frozen=True)
class BaseConfig:
    """Base for method configs: frozen, hashable, round-trips through dicts."""

    def to_dict(self) -> dict:
        """The config as a plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BaseConfig:
        """Build from a dict, ignoring unknown keys so older artifacts still load."""
        names = {f.name for f in fields(cls)}
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


@dataclass(frozen=True)
class Method:
    """A registered analysis.

    Attributes:
        name: Name used on the command line and in the ``method`` column.
        summary: One line for ``--help`` and the app.
        config_cls: Frozen dataclass of defaults (a ``BaseConfig``).
        dataset: Default dataset name (see ``precompute.datasets``).
        process: ``(model, items, config, ctx) -> {table: frame}`` for one chunk of items.
        run_one: ``(model, prompt, config) -> frame`` of tidy rows for one prompt (``run-one``,
            live).
        chunk_size: Items per resumable chunk; ``None`` processes all items at once.
        extra_datasets: Datasets that are also run by ``precompute run`` (e.g. example prompts).
        benches: Benchmarks by name for ``precompute bench NAME``: ``(model_name, args) -> dict``
            of figures, printed as JSON.
    """

    name: str
    summary: str
    config_cls: type
    dataset: str
    process: Callable[..., dict[str, pd.DataFrame]]
    run_one: Callable[..., pd.DataFrame] | None = None
    chunk_size: int | None = 8
    extra_datasets: tuple[str, ...] = ()
    benches: dict[str, Callable[..., dict]] = field(default_factory=dict)


_REGISTRY: dict[str, Method] = {}


def _discover() -> None:
    if _REGISTRY:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        method = getattr(module, "METHOD", None)
        if isinstance(method, Method):
            _REGISTRY[method.name] = method


def all_methods() -> dict[str, Method]:
    """Every registered method by name."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> Method:
    """Look up a method by name.

    Raises:
        ValueError: Unknown name; the message lists the known methods.
    """
    methods = all_methods()
    if name not in methods:
        raise ValueError(f"Unknown method {name!r}; known methods: {', '.join(methods)}")
    return methods[name]
