"""The results schema: every table, its columns and types, in one versioned module.

Tables are tidy and long (METHODS.md 0.3). Jobs write *part* tables; ``precompute build`` merges
them and derives ``metrics_agg`` (mean, SEM and a 95 % interval over prompts) in DuckDB.

Schema versions are listed in CHANGELOG.md. Readers ignore columns they do not know, so an older app
can open newer results as long as the columns it uses keep their meaning.
"""

from __future__ import annotations

import pandas as pd

SCHEMA_VERSION = 1

#: The DuckDB file of a results folder (beside ``tables/*.parquet``).
DB_NAME = "stagescope.duckdb"

#: Columns shared by every per-layer metric row (METHODS.md 0.3) plus ``grp`` (a method-specific
#: grouping such as a frequency bucket or token group; "" when unused) and ``run_id``.
METRIC_COLUMNS: dict[str, str] = {
    "model": "string",
    "method": "string",
    "variant": "string",
    "dataset": "string",
    "prompt_id": "string",
    "position": "int64",
    "layer": "int64",
    "layer_kind": "string",
    "n_layers": "int64",
    "rel_depth": "float64",
    "grp": "string",
    "metric": "string",
    "value": "float64",
    "unit": "string",
    "seed": "int64",
    "run_id": "string",
}

TABLES: dict[str, dict[str, str]] = {
    # One row per (model, method, ..., prompt or token, layer, metric).
    "metrics": METRIC_COLUMNS,
    # Top-k read-outs of a lens at one (prompt, position, layer).
    "lens_topk": {
        "model": "string",
        "method": "string",
        "variant": "string",
        "dataset": "string",
        "prompt_id": "string",
        "position": "int64",
        "input_token": "string",
        "layer": "int64",
        "rel_depth": "float64",
        "k": "int64",
        "token_id": "int64",
        "token_str": "string",
        "prob": "float64",
        "run_id": "string",
    },
    # RSA (METHODS.md E3): representational dissimilarity matrices, long, strict upper triangle
    # (stimulus_a < stimulus_b, ids sorted) per (model, residual state); variant "pool|dist|norm".
    "rdm": {
        "model": "string",
        "method": "string",
        "variant": "string",
        "dataset": "string",
        "layer": "int64",
        "n_layers": "int64",
        "rel_depth": "float64",
        "stimulus_a": "string",
        "stimulus_b": "string",
        "value": "float64",
        "run_id": "string",
    },
    # RSA layer x layer similarity (METHODS.md E3): Spearman of two RDMs' upper triangles.
    "similarity": {
        "model": "string",
        "method": "string",
        "variant": "string",
        "dataset": "string",
        "model_a": "string",
        "model_b": "string",
        "layer_a": "int64",
        "layer_b": "int64",
        "rel_depth_a": "float64",
        "rel_depth_b": "float64",
        "similarity": "string",
        "compare": "string",
        "n_stimuli": "int64",
        "value": "float64",
        "run_id": "string",
    },
    # Prediction/suppression neurons (METHODS.md D3): moments over the vocabulary of the cosine
    # between each MLP neuron's output weights and every (normalised) unembedding column.
    "neurons": {
        "model": "string",
        "method": "string",
        "variant": "string",
        "layer": "int64",
        "n_layers": "int64",
        "rel_depth": "float64",
        "neuron": "int64",
        "vocab_mean": "float64",
        "vocab_var": "float64",
        "vocab_skew": "float64",
        "vocab_kurt": "float64",
        "is_prediction": "bool",
        "is_suppression": "bool",
        "run_id": "string",
    },
    # Facts (METHODS.md B1-B3): what the model answers on each fact's clean prompt, whether that
    # is the fact's answer, and the subject's token range, per (model, method, fact).
    "fact_checks": {
        "model": "string",
        "method": "string",
        "dataset": "string",
        "prompt_id": "string",
        "subject": "string",
        "gold": "string",
        "prediction": "string",
        "prediction_id": "int64",
        "p_prediction": "float64",
        "correct": "bool",
        "subject_start": "int64",
        "subject_end": "int64",
        "run_id": "string",
    },
    # The prompts as each model tokenised them.
    "prompts": {
        "model": "string",
        "dataset": "string",
        "prompt_id": "string",
        "text": "string",
        "n_tokens": "int64",
        "tokens_json": "string",
        "run_id": "string",
    },
}

#: Tables written by ``build`` only (not by jobs).
BUILT_TABLES: dict[str, dict[str, str]] = {
    "models": {
        "model": "string",
        "hf_id": "string",
        "family": "string",
        "n_params": "float64",
        "n_layers": "int64",
        "d_model": "int64",
        "d_vocab": "int64",
        "source": "string",
        "provenance_json": "string",
    },
    "runs": {
        "run_id": "string",
        "model": "string",
        "method": "string",
        "dataset": "string",
        "dataset_sha256": "string",
        "config_json": "string",
        "config_hash": "string",
        "provenance_json": "string",
        "code_version": "string",
        "schema_version": "int64",
        "started_at": "string",
        "finished_at": "string",
        "n_items": "int64",
    },
    "metrics_agg": {
        "model": "string",
        "method": "string",
        "variant": "string",
        "dataset": "string",
        "layer": "int64",
        "layer_kind": "string",
        "n_layers": "int64",
        "rel_depth": "float64",
        "grp": "string",
        "metric": "string",
        "unit": "string",
        "n": "int64",
        "mean": "float64",
        "sem": "float64",
        "ci_lo": "float64",
        "ci_hi": "float64",
    },
}

ALL_TABLES = {**TABLES, **BUILT_TABLES}

UNITS = {
    "nats",
    "bits",
    "prob",
    "rank",
    "fraction",
    "percent",
    "rad",
    "norm",
    "dim",
    "corr",
    "count",
    "ratio",
    "logit",
}


class SchemaError(ValueError):
    """A table does not match the schema."""


def conform(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Check a frame against the schema and return it with the schema's column order and types.

    Raises:
        SchemaError: Unknown table, missing columns, or an unknown unit.
    """
    if table not in ALL_TABLES:
        raise SchemaError(f"Unknown table {table!r}; known: {sorted(ALL_TABLES)}")
    cols = ALL_TABLES[table]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SchemaError(f"Table {table!r} is missing columns {missing}")
    out = df[list(cols)].astype(cols)
    if "unit" in cols and len(out):
        bad = set(out["unit"].unique()) - UNITS
        if bad:
            raise SchemaError(f"Table {table!r} has unknown units {sorted(bad)}")
    return out.reset_index(drop=True)


def empty(table: str) -> pd.DataFrame:
    """An empty frame with the table's columns and types."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in ALL_TABLES[table].items()})
