"""Campaigns: many (model, method, dataset) jobs from one TOML file, run here or on a Ray cluster.

A campaign file names models, methods, datasets, config overrides and per-model resources::

    name = "offline"
    retries = 2                         # attempts per chunk after the first
    models = ["smollm2-135m", "gemma3-270m"]   # or [models.NAME] tables with gpus/cpus/memory_gb
    [resources]                         # defaults for every model (memory_gb: from the catalog)
    gpus = 0
    [methods.logit_lens]
    datasets = {wikitext = 32, examples = 0}   # dataset -> items (0: all); or a list of names
    set = {max_tokens = 96}                    # config overrides (as ``--set``)
    [methods.logit_lens.models.gemma3-270m]    # per-model overrides on top
    set = {max_tokens = 64}

``load_campaign`` checks every name and override before any work; ``plan`` expands the file into
jobs and their chunks (the chunk layout of ``jobs.run_job``). Chunks are computed and written by
``jobs.run_job`` only (atomic chunk folders), so any executor can be killed and rerun: finished
chunks are skipped, none is written twice. ``executors`` runs the plan; ``status`` reads the
progress back from the work folder.

Example:
    >>> default_resources("tiny-gpt2").gpus
    0.0
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from precompute.results.jobs import JobSpec, chunk_names
from precompute.types import BaseConfig

TOP_KEYS = {"name", "retries", "device", "models", "methods", "resources", "work_dir", "data_dir"}
RESOURCE_KEYS = {"gpus", "cpus", "memory_gb"}
METHOD_KEYS = {"datasets", "set", "models", "after"}
BYTES_PER_PARAM = 4  # jobs load float32 weights (lens numbers are compared to 1e-5)


class CampaignError(ValueError):
    """A campaign file or its cluster cannot work; the message says what to change."""


@dataclass(frozen=True)
class Resources:
    """What one chunk task of a model asks the scheduler for."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 1.0


@dataclass(frozen=True)
class JobPlan:
    """One job of a campaign and its chunks."""

    model: str
    method: str
    dataset: str
    config: BaseConfig
    n: int | None
    n_total: int
    starts: tuple[int, ...]
    resources: Resources
    names: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    @property
    def spec(self) -> JobSpec:
        """The job's identity in ``jobs``."""
        return JobSpec(self.model, self.method, self.dataset, self.config)

    @property
    def key(self) -> str:
        """Stable id of the job (its run id)."""
        return self.spec.run_id

    def chunk_dir(self, work_dir: Path, start: int) -> Path:
        """Folder of one chunk (present once the chunk is written)."""
        return self.spec.folder(work_dir) / "chunks" / self.names[self.starts.index(start)]


@dataclass(frozen=True)
class Campaign:
    """A parsed, checked campaign file."""

    name: str
    path: Path
    models: dict[str, Resources]
    methods: dict[str, dict]
    retries: int = 2
    device: str = "auto"
    work_dir: Path | None = None
    data_dir: Path | None = None


def default_resources(model: str, gpus: float = 0.0, cpus: float = 1.0) -> Resources:
    """Resources from the catalog size: float32 weights x 1.25 plus 2 GB of runtime, rounded up."""
    from precompute.model.catalog import resolve
    from precompute.model.load import TINY_ARCHS

    n_params = 0.0 if model in TINY_ARCHS else resolve(model).n_params
    memory = math.ceil(n_params * BYTES_PER_PARAM * 1.25 / 1e9 + 2)
    return Resources(cpus=float(cpus), gpus=float(gpus), memory_gb=float(memory))


def _check_keys(where: str, got: dict, allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise CampaignError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _model_name(name: str) -> str:
    from precompute.model.catalog import UnknownModelError, resolve
    from precompute.model.load import TINY_ARCHS

    if name in TINY_ARCHS:
        return name
    try:
        return resolve(name).name
    except UnknownModelError as err:
        raise CampaignError(str(err)) from None


def load_campaign(path: Path) -> Campaign:
    """Read and check a campaign file: every model, method and override is known.

    Raises:
        CampaignError: The file is missing or malformed, or names something unknown.
    """
    from precompute.methods import all_methods

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CampaignError(f"Campaign file {path} not found.") from None
    except tomllib.TOMLDecodeError as err:
        raise CampaignError(f"{path}: not valid TOML: {err}") from None
    _check_keys(str(path), raw, TOP_KEYS)
    defaults = raw.get("resources", {})
    _check_keys(f"{path} [resources]", defaults, RESOURCE_KEYS)
    models_raw = raw.get("models", [])
    if isinstance(models_raw, list):
        models_raw = {m: {} for m in models_raw}
    methods_raw = raw.get("methods", {})
    if isinstance(methods_raw, list):
        methods_raw = {m: {} for m in methods_raw}
    if not models_raw or not methods_raw:
        raise CampaignError(f"{path}: give at least one model and one method.")
    models = {}
    for name, res in models_raw.items():
        _check_keys(f"{path} [models.{name}]", res, RESOURCE_KEYS)
        key = _model_name(name)
        opts = {**defaults, **res}
        base = default_resources(key, opts.get("gpus", 0.0), opts.get("cpus", 1.0))
        models[key] = Resources(base.cpus, base.gpus, float(opts.get("memory_gb", base.memory_gb)))
    known = all_methods()
    unknown = sorted(set(methods_raw) - set(known))
    if unknown:
        raise CampaignError(f"{path}: unknown method(s) {unknown}; known: {', '.join(known)}")
    for name, entry in methods_raw.items():
        _check_keys(f"{path} [methods.{name}]", entry, METHOD_KEYS)
        for key, kinds in (("set", dict), ("models", dict), ("datasets", (list, dict))):
            if not isinstance(entry.get(key, {}), kinds):
                raise CampaignError(f"{path}: [methods.{name}] {key} must be a table")
        if not isinstance(entry.get("after", []), list):
            raise CampaignError(f"{path}: [methods.{name}] after must be a list of methods")
        for model, sub in entry.get("models", {}).items():
            _check_keys(f"{path} [methods.{name}.models.{model}]", sub, {"datasets", "set"})
            if _model_name(model) not in models:
                raise CampaignError(
                    f"{path}: [methods.{name}.models.{model}]: not a campaign model"
                )
        missing = sorted(set(entry.get("after", [])) - set(methods_raw))
        if missing:
            raise CampaignError(f"{path}: [methods.{name}] after {missing}: not campaign methods")
    campaign = Campaign(
        name=str(raw.get("name") or path.stem),
        path=path,
        models=models,
        methods={m: methods_raw[m] for m in _dependency_order(path, methods_raw)},
        retries=int(raw.get("retries", 2)),
        device=str(raw.get("device", "auto")),
        work_dir=Path(raw["work_dir"]) if raw.get("work_dir") else None,
        data_dir=Path(raw["data_dir"]) if raw.get("data_dir") else None,
    )
    for model in models:  # every override parses for every model, before any work
        for method in campaign.methods:
            _job_options(campaign, model, method)
    return campaign


def _job_options(campaign: Campaign, model: str, method_name: str):
    """(config, [(dataset, n)]) of one model x method, overrides applied."""
    from precompute.methods import get_method

    method = get_method(method_name)
    entry = campaign.methods[method_name]
    sub = {_model_name(k): v for k, v in entry.get("models", {}).items()}.get(model, {})
    renamed = getattr(method.config_cls, "RENAMED", {})  # old option names keep working
    overrides = {
        renamed.get(k, k): v for k, v in {**entry.get("set", {}), **sub.get("set", {})}.items()
    }
    try:
        cfg = method.config_cls().with_overrides(overrides)
    except ValueError as err:
        raise CampaignError(f"{campaign.path}: {method_name} on {model}: {err}") from None
    datasets = sub.get("datasets", entry.get("datasets"))
    if datasets is None:
        datasets = [method.dataset, *method.extra_datasets]
    if isinstance(datasets, list):  # like `run`: the first dataset takes the config's count
        first = getattr(cfg, "n_docs", None) or getattr(cfg, "n_items", None) or None
        pairs = [(d, first if i == 0 else None) for i, d in enumerate(datasets)]
    else:
        pairs = [(d, int(n) if int(n) > 0 else None) for d, n in datasets.items()]
    return cfg, pairs


def plan(campaign: Campaign, data_dir: Path | None = None) -> list[JobPlan]:
    """Expand a campaign into jobs, model by model (so workers keep a model loaded).

    Reads each dataset once to count its items (and fails here, before any work, if one is
    missing).
    """
    from precompute.datasets import DatasetError, load_dataset
    from precompute.methods import get_method

    data_dir = data_dir or campaign.data_dir
    counts: dict[tuple[str, int | None], int] = {}
    jobs = []
    for model, res in campaign.models.items():
        for method_name in campaign.methods:
            cfg, pairs = _job_options(campaign, model, method_name)
            size = get_method(method_name).chunk_size
            for dataset, n in pairs:
                if (dataset, n) not in counts:
                    try:
                        counts[dataset, n] = len(load_dataset(dataset, data_dir, n)[0])
                    except DatasetError as err:
                        raise CampaignError(f"{method_name} on {model}: {err}") from None
                total = counts[dataset, n]
                names = _chunk_names(total, size)
                starts = tuple(int(c.split("-")[0]) for c in names)
                after = tuple(campaign.methods[method_name].get("after", ()))
                jobs.append(
                    JobPlan(model, method_name, dataset, cfg, n, total, starts, res, names, after)
                )
    return jobs


def _chunk_names(n_items: int, chunk_size: int | None) -> tuple[str, ...]:
    """Chunk folder names of a job (item ranges ``start-end``), as ``jobs.run_job`` writes them."""
    return tuple(chunk_names(n_items, chunk_size or max(n_items, 1)))


def _dependency_order(path: Path, methods: dict[str, dict]) -> list[str]:
    """Methods with each one after those it names in ``after`` (file order otherwise).

    ``after`` is for methods that read another's output, e.g. ``guess_refine`` reads the tuned
    lens that ``tuned_lens`` trains for the same model.
    """
    order: list[str] = []

    def visit(name: str, seen: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in seen:
            raise CampaignError(f"{path}: methods wait on each other: {' -> '.join((*seen, name))}")
        for dep in methods[name].get("after", []):
            visit(dep, (*seen, name))
        order.append(name)

    for name in methods:
        visit(name, ())
    return order
