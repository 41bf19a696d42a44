"""Publish results to a Hugging Face dataset repo, and fetch them back at a pinned revision.

Publishing validates everything before the first upload: every table is read back and checked
against the schema, the DuckDB file opens, the manifest's row counts match. The dataset card is
built by a pure function (:func:`dataset_card`). The upload is one commit through an injected client
(``huggingface_hub.HfApi`` by default), so tests can run without the Hub.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from precompute import schema
from precompute.schema import DB_NAME

log = logging.getLogger(__name__)

PUBLISH_PATTERNS = ["tables/*.parquet", DB_NAME, "manifest.json", "README.md", "lenses/**"]


class PublishError(ValueError):
    """The results are not fit to publish; nothing was uploaded."""


def dataset_card(repo_id: str, counts: dict[str, int], models: pd.DataFrame) -> str:
    """The dataset card (README.md) with YAML ``configs`` exposing each table to the viewer."""
    configs = "\n".join(
        f"- config_name: {t}\n  data_files:\n  - split: train\n    path: tables/{t}.parquet"
        + ("\n  default: true" if t == "metrics_agg" else "")
        for t in sorted(counts)
    )
    model_lines = "\n".join(
        f"| {r.model} | {r.family} | {r.n_layers} | {r.source} |" for r in models.itertuples()
    )
    table_lines = "\n".join(f"| `{t}` | {n:,} |" for t, n in sorted(counts.items()))
    return f"""---
license: mit
pretty_name: Stagescope results
tags:
- interpretability
- logit-lens
configs:
{configs}
---

# Stagescope results ({repo_id})

Tidy result tables computed by the Stagescope precompute jobs: how language models use their
depth (logit lens and the other methods of the Stagescope app). Schema version
{schema.SCHEMA_VERSION}. Every row carries a `run_id`; the `runs` table says how each run was made
(model source and revision or GGUF file, dataset and its SHA-256, config, code and library
versions).

Pin a revision (the commit sha) when you point the app at this repo:
`STAGESCOPE_HF_REPO={repo_id} STAGESCOPE_HF_REVISION=<sha>`.

## Tables

| table | rows |
|---|---|
{table_lines}

## Models

| model | family | blocks | source |
|---|---|---|---|
{model_lines}

Text data: WikiText-2 (CC BY-SA 3.0); facts from ROME's known_1000 (MIT) and the Stagescope team.
"""


def validate(results_dir: Path) -> dict[str, int]:
    """Check every table against the schema and the manifest; return row counts.

    Raises:
        PublishError: With every problem found.
    """
    results_dir = Path(results_dir)
    problems, counts = [], {}
    manifest_path = results_dir / "manifest.json"
    if not manifest_path.exists():
        raise PublishError(f"{manifest_path} is missing: run `python -m precompute build` first.")
    manifest = json.loads(manifest_path.read_text())
    for table in schema.ALL_TABLES:
        path = results_dir / "tables" / f"{table}.parquet"
        if not path.exists():
            problems.append(f"missing {path}")
            continue
        try:
            frame = schema.conform(table, pd.read_parquet(path))
        except Exception as err:  # any read or schema failure blocks the upload
            problems.append(f"{path}: {err}")
            continue
        counts[table] = len(frame)
        if manifest.get("rows", {}).get(table) != len(frame):
            problems.append(
                f"{table}: {len(frame)} rows but the manifest says "
                f"{manifest.get('rows', {}).get(table)}"
            )
    if counts.get("metrics", 0) == 0:
        problems.append("the metrics table is empty")
    try:
        con = duckdb.connect(
            str(results_dir / DB_NAME),
            read_only=True,
            config={  # the same settings as the app's (a file is opened one way per process)
                "enable_external_access": False,
                "autoload_known_extensions": False,
                "autoinstall_known_extensions": False,
                "lock_configuration": True,
            },
        )
        con.execute("SELECT count(*) FROM metrics").fetchone()
        con.close()
    except Exception as err:  # a DuckDB file that does not open must not be published
        problems.append(f"{DB_NAME}: {err}")
    if problems:
        raise PublishError("Not publishing; fix these first:\n- " + "\n- ".join(problems))
    return counts


def stage(results_dir: Path, staging: Path, repo_id: str) -> Path:
    """Build the folder that is uploaded: tables, DuckDB file, manifest, card (and lenses)."""
    counts = validate(results_dir)
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "tables").mkdir(parents=True)
    for table in schema.ALL_TABLES:
        shutil.copy2(results_dir / "tables" / f"{table}.parquet", staging / "tables")
    shutil.copy2(results_dir / DB_NAME, staging / DB_NAME)
    shutil.copy2(results_dir / "manifest.json", staging / "manifest.json")
    if (results_dir / "lenses").exists():
        shutil.copytree(results_dir / "lenses", staging / "lenses")
    models = pd.read_parquet(results_dir / "tables" / "models.parquet")
    (staging / "README.md").write_text(dataset_card(repo_id, counts, models))
    return staging


def publish(
    results_dir: Path,
    repo_id: str,
    staging: Path,
    client: Any = None,
    private: bool = False,
    message: str = "Publish Stagescope results",
) -> str:
    """Validate, stage and upload in one commit; return the commit sha to pin.

    Args:
        results_dir: The results folder (``tables/``, DuckDB file, manifest).
        repo_id: ``org/name`` of the dataset repo.
        staging: Temporary folder for the upload.
        client: An ``HfApi``-like object (``create_repo``, ``upload_folder``); default ``HfApi()``.
        private: Create the repo as private.
        message: Commit message.
    """
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    folder = stage(results_dir, staging, repo_id)
    if client is None:
        from huggingface_hub import HfApi

        from precompute.model.catalog import hub_reachable

        if not hub_reachable():
            raise PublishError(
                "The Hugging Face Hub cannot be reached (offline, or HF_HUB_OFFLINE is set); "
                "nothing was uploaded. Connect and run `publish` again."
            )
        client = HfApi()
    try:
        client.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = client.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=message,
            delete_patterns=["tables/*.parquet"],
        )
    except Exception as err:  # network, auth, quota: one line; the upload is one commit
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise PublishError(
            f"The upload to {repo_id} failed ({type(err).__name__}: {first}); the repo was not "
            "changed (one commit or none). Check the token (`hf auth login`) and the network, "
            "then run `publish` again."
        ) from err
    sha = getattr(info, "oid", None) or str(info)
    return sha


def fetch(repo_id: str, revision: str, downloader: Any = None) -> Path:
    """Download published results at a pinned revision (cached by huggingface_hub).

    Returns:
        The local folder holding ``tables/``, the DuckDB file and the manifest.
    """
    kw = {}
    if downloader is None:
        from huggingface_hub import snapshot_download as downloader

        from precompute.model.catalog import hub_reachable

        if not hub_reachable():  # the cached copy or a quick failure, never minutes of retries
            kw["local_files_only"] = True
    path = downloader(
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        allow_patterns=PUBLISH_PATTERNS,
        **kw,
    )
    return Path(path)
