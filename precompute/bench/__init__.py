"""Benchmarks, apart from the library: one module each, behind ``python -m precompute bench``.

A benchmark module in this package defines ``NAME`` (the command-line name, e.g. ``"layer-sweep"``)
and ``run(model_name, args) -> dict`` returning JSON-serialisable figures. Library code never
imports this package; benchmarks import the library.

Example:
    >>> isinstance(all_benches(), dict)
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

_REGISTRY: dict[str, Callable[..., dict]] = {}


def all_benches() -> dict[str, Callable[..., dict]]:
    """Every benchmark by command-line name (modules are imported on first call)."""
    if not _REGISTRY:
        for info in pkgutil.iter_modules(__path__):
            if info.name.startswith("_") or info.name == "util":
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            name, run = getattr(module, "NAME", None), getattr(module, "run", None)
            if isinstance(name, str) and callable(run):
                _REGISTRY[name] = run
    return dict(sorted(_REGISTRY.items()))


def get_bench(name: str) -> Callable[..., dict]:
    """Look up a benchmark by name.

    Raises:
        ValueError: Unknown name; the message lists the known benchmarks.
    """
    benches = all_benches()
    if name not in benches:
        raise ValueError(f"Unknown benchmark {name!r}; known: {', '.join(benches) or 'none'}")
    return benches[name]
