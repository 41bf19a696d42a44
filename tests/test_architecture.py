"""The architecture's rules, held by tests: one home per mechanism, small modules, no cycles upward.

These read source files with ``ast``; they import nothing from the project.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "precompute"
MAX_MODULE_LINES = 400
MAX_PAGE_LINES = 150


def _py_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module name a file imports (absolute names; ``from . import x`` resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _method_modules() -> set[str]:
    return {
        f"precompute.methods.{p.stem}"
        for p in (LIBRARY / "methods").glob("*.py")
        if not p.name.startswith("_")
    }


@pytest.mark.parametrize("path", sorted((LIBRARY / "methods").glob("*.py")), ids=lambda p: p.stem)
def test_no_method_imports_another_method(path):
    own = f"precompute.methods.{path.stem}"
    others = _method_modules() - {own}
    assert not (_imports(path) & others), f"{path.name} imports another method module"


@pytest.mark.parametrize("path", _py_files("precompute", "app", "scripts"), ids=str)
def test_modules_are_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {n} lines (> {MAX_MODULE_LINES})"


@pytest.mark.parametrize("path", _py_files("pages"), ids=lambda p: p.name)
def test_pages_are_thin(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_PAGE_LINES, f"{path.name} has {n} lines (> {MAX_PAGE_LINES})"


def test_library_never_imports_a_benchmark_or_streamlit():
    for path in _py_files("precompute"):
        if (LIBRARY / "bench") in path.parents or path.name in ("cli.py", "__main__.py"):
            continue
        bad = {n for n in _imports(path) if n.startswith("precompute.bench") or n == "streamlit"}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_pages_hold_no_sql():
    for path in _py_files("pages"):
        text = path.read_text()
        assert not re.search(r"\bSELECT\b", text), f"{path.name} holds SQL; queries live in app/"
        assert ".execute(" not in text, f"{path.name} runs SQL; queries live in app/ views"


def test_one_block_replay():
    """Only the replay module walks the model's block list or captures block inputs."""
    for path in _py_files("precompute"):
        if path.name == "replay.py":
            continue
        text = path.read_text()
        assert "BLOCK_PATHS" not in text, f"{path.relative_to(ROOT)} finds blocks itself"
        assert "register_forward_pre_hook" not in text, (
            f"{path.relative_to(ROOT)} captures block inputs itself (use precompute.model.replay)"
        )


def test_one_answer_rule_and_subject_finder():
    for path in _py_files("precompute"):
        if path.name == "facts.py":
            continue
        tree = ast.parse(path.read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        dup = defined & {"answer_matches", "find_subject", "subject_span", "window_layers"}
        assert not dup, (
            f"{path.relative_to(ROOT)} defines {sorted(dup)} (home: precompute/facts.py)"
        )


#: Synonyms retired by the one-name-per-idea rule: item count is ``n_items``, subsampling
#: ``stride``, window ``window``, token cap ``max_tokens``.
#: Methods without one item count: neurons reads weights only; guess_refine reads the whole
#: WikiText corpus (its frequency ranks are counted over all of it) and samples ``n_prompts``
#: prefixes from it, and reads at most ``n_facts`` facts in its second job.
NO_ITEM_COUNT = {"neurons", "guess_refine"}
RETIRED_CONFIG_NAMES = {"n_docs", "max_facts", "sample_every", "W", "n_tokens", "max_len"}


def test_one_name_per_config_idea():
    from dataclasses import fields

    from precompute.methods import all_methods

    for name, method in all_methods().items():
        names = {f.name for f in fields(method.config_cls)}
        assert not names & RETIRED_CONFIG_NAMES, (
            f"{name} config uses {names & RETIRED_CONFIG_NAMES}"
        )
        if method.name not in NO_ITEM_COUNT:
            assert "n_items" in names, f"{name} config has no n_items"
