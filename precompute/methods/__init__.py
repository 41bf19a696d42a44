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

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd


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

    Benchmarks live apart, in ``precompute.bench`` (one module each).
    """

    name: str
    summary: str
    config_cls: type
    dataset: str
    process: Callable[..., dict[str, pd.DataFrame]]
    run_one: Callable[..., pd.DataFrame] | None = None
    chunk_size: int | None = 8
    extra_datasets: tuple[str, ...] = ()


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
