"""Command line: ``python -m precompute {run,build,list,run-one,publish,bench,models,campaign}``.

Examples::

    python -m precompute run --model smollm2-135m --methods logit_lens --data-dir ../shared/data
    python -m precompute build
    python -m precompute list --json
    python -m precompute run-one --model smollm2-135m --method logit_lens --prompt "Hi" --json
    python -m precompute publish --repo-id ORG/stagescope-results
    python -m precompute bench live-logit-lens --model smollm2-135m --json
    python -m precompute campaign data/campaigns/offline.toml --executor ray --address auto
    python -m precompute campaign status data/campaigns/offline.toml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "data" / "results"
DEFAULT_WORK = ROOT / ".stagescope" / "work"

log = logging.getLogger("precompute")


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        key, val = pair.split("=", 1)
        out[key.strip()] = val.strip()
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) the jobs of one model."""
    from precompute.datasets import check_dataset_name
    from precompute.methods import get_method
    from precompute.model.catalog import resolve
    from precompute.model.load import TINY_ARCHS, load_model
    from precompute.results.jobs import run_job

    # Every input is checked before the model loads or a folder is made.
    methods = [get_method(m.strip()) for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ValueError("--methods is empty: give one or more method names, comma-separated.")
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}.")
    if args.dataset:
        check_dataset_name(args.dataset)
    if args.model not in TINY_ARCHS:
        resolve(args.model)
    cfgs = {m.name: m.config_cls().with_overrides(_overrides(args.set)) for m in methods}
    lm = load_model(args.model, device=args.device, revision=args.revision)
    for method in methods:
        cfg = cfgs[method.name]
        n = args.n or getattr(cfg, "n_items", None)  # one name for the item count (issue 9)
        for dataset in (args.dataset or method.dataset, *method.extra_datasets):
            folder = run_job(
                lm,
                method,
                dataset,
                cfg,
                args.work_dir,
                args.data_dir,
                n_items=n if dataset == (args.dataset or method.dataset) else None,
                progress=not args.quiet,
            )
            log.info("done: %s", folder)
    if args.build:
        from precompute.results.store import build

        build(args.work_dir, args.results)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Merge finished jobs into the results folder."""
    from precompute.results.store import build

    counts = build(args.work_dir, args.results)
    sys.stdout.write(json.dumps(counts, indent=2) + "\n")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List (model, method) pairs present in the results."""
    from precompute.results.store import list_results

    rows = list_results(args.results)
    if args.json:
        sys.stdout.write(json.dumps(rows) + "\n")
    else:
        for r in rows:
            sys.stdout.write(f"{r['model']:<24} {r['method']:<24} {r['rows']:>10,}\n")
    return 0


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def cmd_run_one(args: argparse.Namespace) -> int:
    """Run one method on one prompt and print tidy rows."""
    from precompute.methods import get_method
    from precompute.model.load import load_model

    method = get_method(args.method)
    if method.run_one is None:
        raise ValueError(f"Method {method.name!r} has no single-prompt mode.")
    prompt = args.prompt
    if not prompt or not prompt.strip():
        raise ValueError("The prompt is empty: give some text with --prompt.")
    cfg = method.config_cls().with_overrides(_overrides(args.set))
    # Libraries print progress to stdout; keep stdout for the JSON alone.
    with contextlib.redirect_stdout(sys.stderr):
        lm = load_model(args.model, device=args.device, revision=args.revision)
        cap = getattr(cfg, "max_tokens", None)
        n_tokens = int(lm.tokenize(prompt).shape[1])  # capped only by the context window
        n_full = len(lm.tokenizer(prompt).input_ids)
        used = min(cap or n_tokens, n_tokens)
        if used < n_full:
            sys.stderr.write(
                f"note: the prompt has {n_full} tokens; only the first {used} were analysed "
                f"(raise it with --set max_tokens=N, up to the model's context of {n_tokens}).\n"
            )
        df = method.run_one(lm, prompt, cfg)
    records = [{k: _clean(v) for k, v in r.items()} for r in df.to_dict(orient="records")]
    if args.json:
        sys.stdout.write(json.dumps(records) + "\n")
    else:
        sys.stdout.write(df.to_string() + "\n")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Validate and upload the results to a Hugging Face dataset repo."""
    from precompute.results.publish import publish

    with tempfile.TemporaryDirectory() as tmp:
        sha = publish(args.results, args.repo_id, Path(tmp) / "stage", private=args.private)
    sys.stdout.write(
        f"Published {args.repo_id} at revision {sha}\n"
        f"Pin it: STAGESCOPE_HF_REPO={args.repo_id} STAGESCOPE_HF_REVISION={sha}\n"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark and print its figures."""
    from precompute.bench import get_bench

    fn = get_bench(args.name)
    # Libraries print progress to stdout ("Moving model to device"); keep stdout for the figures.
    with contextlib.redirect_stdout(sys.stderr):
        figures = fn(args.model, args)
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
    else:
        for k, v in figures.items():
            sys.stdout.write(f"{k}: {v}\n")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """Print the model catalog."""
    from precompute.model.catalog import CATALOG

    rows = [s.to_dict() for s in CATALOG.values()]
    sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    return 0


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _summary_text(info: dict) -> str:
    return (
        f"[{info['done']}/{info['chunks']} chunks done, {info['running']} running, "
        f"{info['failed']} failed | {info['jobs_done']}/{info['jobs']} jobs | {info['rows']:,} rows"
        f" | ETA {_eta(info['eta_s'])}]"
    )


def _campaign_event(quiet: bool):
    """Terminal progress: one line per chunk on stderr."""

    def show(kind: str, job, start: int, info: dict) -> None:
        if quiet:
            return
        if kind == "start":
            sys.stderr.write(
                f"campaign: {info['jobs']} jobs, {info['chunks']} chunks, "
                f"{info['done']} already done (skipped)\n"
            )
            return
        what = f"{job.model} {job.method} {job.dataset} @{start}"
        if kind == "done":
            sys.stderr.write(f"{_summary_text(info)} {what}: {info['chunk_rows']:,} rows\n")
        else:
            sys.stderr.write(f"{kind}: {what}: {info['error']}\n")

    return show


def cmd_campaign(args: argparse.Namespace) -> int:
    """Run a campaign file (models x methods x datasets) here or on a Ray cluster."""
    from precompute.results import executors
    from precompute.results.campaign import load_campaign, plan
    from precompute.results.progress import status

    if args.file == "status" and args.status_file:
        args.file = args.status_file
        return cmd_campaign_status(args)
    if args.status_file:
        raise ValueError(f"Unexpected argument {args.status_file!r}: give one campaign file.")
    campaign = load_campaign(args.file)
    work = Path(args.work_dir or campaign.work_dir or DEFAULT_WORK).resolve()
    data = args.data_dir or campaign.data_dir
    data = Path(data).resolve() if data else None
    jobs = plan(campaign, data)
    # Libraries print to stdout while models load; keep stdout for the summary (and --json).
    with contextlib.redirect_stdout(sys.stderr):
        if args.executor == "ray":
            import ray

            executors.connect(args.address)
            try:
                executors.check_resources(campaign)
                executors.run_ray(campaign, jobs, work, data, _campaign_event(args.quiet))
            finally:
                ray.shutdown()
        else:
            executors.run_local(campaign, jobs, work, data, _campaign_event(args.quiet))
    report = status(campaign, work, data)
    out = json.dumps(report["summary"]) if args.json else _summary_text(report["summary"])
    sys.stdout.write(out + "\n")
    failed = [(k, s, e) for k, j in report["jobs"].items() for s, e in j["failed"].items()]
    for key, start, error in failed:
        sys.stderr.write(f"failed: {key} @{start}: {error}\n")
    if failed:
        sys.stderr.write("Some chunks failed: fix the cause and rerun (done chunks are kept).\n")
        return 1
    if args.build:
        from precompute.results.store import build

        build(work, args.results)
    return 0


def cmd_campaign_status(args: argparse.Namespace) -> int:
    """Progress of a campaign, read back from the work folder."""
    from precompute.results.campaign import load_campaign
    from precompute.results.progress import status

    campaign = load_campaign(args.file)
    work = Path(args.work_dir or campaign.work_dir or DEFAULT_WORK).resolve()
    report = status(campaign, work, args.data_dir or campaign.data_dir)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
        return 0
    for j in report["jobs"].values():
        state = "done" if len(j["done"]) == j["chunks"] else "failed" if j["failed"] else ""
        state = state or ("running" if j["running"] else "todo")
        sys.stdout.write(
            f"{j['model']:<16} {j['method']:<22} {j['dataset']:<10} {state:<8} "
            f"{len(j['done']):>4}/{j['chunks']:<4} chunks {j['rows']:>10,} rows\n"
        )
        for start, error in j["failed"].items():
            sys.stdout.write(f"    chunk @{start} failed: {error}\n")
    summary = report["summary"]
    sys.stdout.write(f"{_summary_text(summary)} driver: {summary['driver']}\n")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m precompute",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, model: bool = True) -> None:
        if model:
            sp.add_argument("--model", required=True, help="catalog name or Hugging Face id")
            sp.add_argument("--device", default="auto", help="auto, cpu or cuda")
            sp.add_argument(
                "--revision", default=None, help="Hub revision (commit, tag) to pin; recorded"
            )
        sp.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder")

    sp = sub.add_parser("run", help="run or resume the jobs of one model")
    common(sp)
    sp.add_argument("--methods", required=True, help="comma-separated method names")
    sp.add_argument("--data-dir", type=Path, default=None, help="folder with local datasets")
    sp.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    sp.add_argument("--dataset", default=None, help="override the method's dataset")
    sp.add_argument("--n", type=int, default=None, help="number of items (documents, facts)")
    sp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config default"
    )
    sp.add_argument("--build", action="store_true", help="build the results when done")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("build", help="merge finished jobs into the results")
    common(sp, model=False)
    sp.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    sp.set_defaults(func=cmd_build)

    sp = sub.add_parser("list", help="list (model, method) pairs in the results")
    common(sp, model=False)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("run-one", help="one method on one prompt")
    common(sp)
    sp.add_argument("--method", required=True)
    sp.add_argument("--prompt", required=True)
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_run_one)

    sp = sub.add_parser("publish", help="upload the results to a Hugging Face dataset repo")
    common(sp, model=False)
    sp.add_argument("--repo-id", required=True, help="ORG/NAME of the dataset repo")
    sp.add_argument("--private", action="store_true")
    sp.set_defaults(func=cmd_publish)

    sp = sub.add_parser("bench", help="run a benchmark and print its figures")
    sp.add_argument("name")
    sp.add_argument("--model", default="smollm2-135m")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--data-dir", type=Path, default=None)
    sp.add_argument("--n", type=int, default=None, help="items, for benchmarks that take a size")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_bench)

    for name, fn in (("campaign", cmd_campaign), ("campaign-status", cmd_campaign_status)):
        sp = sub.add_parser(
            name,
            help="run a campaign file (models x methods) here or on Ray"
            if fn is cmd_campaign
            else "progress of a campaign, read from the work folder",
        )
        sp.add_argument(
            "file", help="campaign TOML (data/campaigns/*.toml); `campaign status FILE`"
        )
        if fn is cmd_campaign:
            sp.add_argument("status_file", nargs="?", help=argparse.SUPPRESS)
            sp.add_argument("--executor", choices=["local", "ray"], default="local")
            sp.add_argument("--address", default="auto", help="Ray address HOST:PORT, or auto")
            sp.add_argument("--build", action="store_true", help="build the results when done")
            sp.add_argument("--quiet", action="store_true", help="no progress lines")
            sp.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder")
        sp.add_argument("--work-dir", type=Path, default=None, help="shared work folder")
        sp.add_argument("--data-dir", type=Path, default=None, help="folder with local datasets")
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=fn)

    sp = sub.add_parser("models", help="print the model catalog")
    sp.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors print one clear line and exit 2."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from precompute.datasets import DatasetError
    from precompute.model.catalog import UnknownModelError
    from precompute.results.publish import PublishError
    from precompute.schema import SchemaError

    try:
        return args.func(args)
    except (
        UnknownModelError,
        DatasetError,
        PublishError,
        SchemaError,
        ValueError,
        FileNotFoundError,
    ) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished chunks are kept; rerun to resume.\n")
        return 130
    except Exception as err:  # anything else: one line, the traceback only with -v
        if args.verbose:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        sys.stderr.write(f"error: {type(err).__name__}: {first} (rerun with -v for the details)\n")
        return 1
