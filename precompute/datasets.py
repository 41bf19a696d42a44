"""Datasets for precompute: where the inputs come from, and their hashes.

* ``wikitext``: WikiText-2 raw test paragraphs. Read from ``--data-dir`` (file
  ``wikitext-2-raw-test.txt``); without it, the same split is fetched from the Hugging Face Hub.
* ``examples``: the team's example prompts in ``data/prompts/examples.json``.
* ``known_1000``: the ROME facts, from ``--data-dir/known_1000.json`` or the Hub.
* ``facts``: the team's own facts in ``data/prompts/facts.json``.
* ``facts_known``: ``facts`` then ``known_1000``, deduplicated (:func:`load_facts_known`): the
  fact pool for samples larger than the team's file (knockout's 300 correctly answered facts).

Every loader returns ``(items, sha256)`` so a run records exactly which data it saw.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from precompute.types import Item

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
PROMPTS_DIR = ROOT / "data" / "prompts"
WIKITEXT_FILE = "wikitext-2-raw-test.txt"
KNOWN_FILE = "known_1000.json"
HUB_SOURCES = {
    # dataset: (repo_id, filename) on the Hugging Face Hub (repo_type="dataset")
    "wikitext": ("Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet"),
    "known_1000": ("stagescope/known_1000", "known_1000.json"),
}


class DatasetError(ValueError):
    """A dataset cannot be found or read; the message says where it looked."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hub_file(dataset: str) -> Path:
    from huggingface_hub import hf_hub_download

    repo_id, filename = HUB_SOURCES[dataset]
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
    except Exception as err:  # network, auth, missing file: all mean "not available"
        raise DatasetError(
            f"Dataset {dataset!r} was not found locally and could not be fetched from the Hub "
            f"({repo_id}/{filename}): {err}. Pass --data-dir with the file in it."
        ) from err


def wikitext_paragraphs(text: str, min_chars: int = 200) -> list[str]:
    """Paragraphs of WikiText raw text: non-heading lines of at least ``min_chars`` characters."""
    paras = []
    for line in text.splitlines():
        line = line.strip()
        if len(line) < min_chars or re.match(r"^=.*=$", line):
            continue
        paras.append(line)
    return paras


def load_wikitext(data_dir: Path | None, n: int | None = None) -> tuple[list[Item], str]:
    """The first ``n`` WikiText-2 test paragraphs (≥ 200 characters, headings removed)."""
    path = Path(data_dir) / WIKITEXT_FILE if data_dir else None
    if path is not None and path.exists():
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    else:
        if data_dir:
            log.warning("%s not found; trying the Hugging Face Hub", path)
        import pandas as pd

        frame = pd.read_parquet(_hub_file("wikitext"))
        text = "\n".join(frame["text"].tolist())
        raw = text.encode()
    paras = wikitext_paragraphs(text)[:n]
    items = [Item(prompt_id=f"wt2-{i:04d}", text=p) for i, p in enumerate(paras)]
    return items, _sha256(raw)


def load_examples(n: int | None = None) -> tuple[list[Item], str]:
    """The team's example prompts."""
    raw = (PROMPTS_DIR / "examples.json").read_bytes()
    rows = json.loads(raw)
    items = [Item(prompt_id=r["id"], text=r["text"], fields=r) for r in rows][:n]
    return items, _sha256(raw)


def load_known(data_dir: Path | None, n: int | None = None) -> tuple[list[Item], str]:
    """ROME's known_1000 facts (prompt, subject, attribute)."""
    path = Path(data_dir) / KNOWN_FILE if data_dir else None
    if path is None or not path.exists():
        path = _hub_file("known_1000")
    raw = path.read_bytes()
    rows = json.loads(raw)
    items = [Item(prompt_id=f"known-{r['known_id']:04d}", text=r["prompt"], fields=r) for r in rows]
    return items[:n], _sha256(raw)


def load_facts(n: int | None = None) -> tuple[list[Item], str]:
    """The team's facts (subject, relation template, answer)."""
    raw = (PROMPTS_DIR / "facts.json").read_bytes()
    rows = json.loads(raw)
    items = [
        Item(prompt_id=r["id"], text=r["template"].format(r["subject"]), fields=r) for r in rows
    ]
    return items[:n], _sha256(raw)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def load_facts_known(data_dir: Path | None, n: int | None = None) -> tuple[list[Item], str]:
    """The team's facts, then ROME's known_1000 facts not already among them.

    Each item reads through the one fact prompt of ``precompute.facts`` (``fact_parts``): its
    fields hold ``subject``, ``answer`` (known_1000's ``attribute``), ``relation`` (known_1000's
    Wikidata ``relation_id``) and ``source`` (``facts`` or ``known_1000``) beside the original
    fields. A fact is dropped when an earlier one has the same prompt or the same subject and
    answer (whitespace and case ignored), so the team's wording wins. Prompt ids are the sources'
    own (``fact-0001``, ``known-0000``): stable, and the same as in ``facts`` and ``known_1000``.
    Which facts a model answers correctly is decided by the methods (``facts.answer_matches``).

    Returns:
        ``(items, sha256)``; the hash covers both files.
    """
    from precompute.facts import fact_parts

    facts, h_facts = load_facts()
    known, h_known = load_known(data_dir)
    seen: set[tuple[str, ...]] = set()
    items = []
    for source, group in (("facts", facts), ("known_1000", known)):
        for it in group:
            prompt, subject, answer, relation = fact_parts(it)
            keys = {("prompt", _norm(prompt)), ("fact", _norm(subject), _norm(answer))}
            if keys & seen:
                continue
            seen |= keys
            fields = dict(it.fields, subject=subject, answer=answer, relation=relation)
            items.append(Item(it.prompt_id, prompt, dict(fields, source=source)))
    return items[:n], _sha256(f"facts:{h_facts} known_1000:{h_known}".encode())


#: Dataset names ``load_dataset`` knows.
DATASETS = ("wikitext", "examples", "known_1000", "facts", "facts_known")


def check_dataset_name(name: str) -> str:
    """Reject an unknown dataset name before anything is read or created.

    Raises:
        DatasetError: The name is not one of :data:`DATASETS`.
    """
    if name not in DATASETS:
        raise DatasetError(f"Unknown dataset {name!r}; use one of: {', '.join(DATASETS)}.")
    return name


def load_dataset(name: str, data_dir: Path | None = None, n: int | None = None):
    """Load a dataset by name; returns ``(items, sha256)``.

    Raises:
        DatasetError: Unknown name, or the data cannot be found.
    """
    if name == "wikitext":
        return load_wikitext(data_dir, n)
    if name == "examples":
        return load_examples(n)
    if name == "known_1000":
        return load_known(data_dir, n)
    if name == "facts":
        return load_facts(n)
    if name == "facts_known":
        return load_facts_known(data_dir, n)
    raise DatasetError(f"Unknown dataset {name!r}; known: {', '.join(DATASETS)}")
