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

from precompute import cli_campaign

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

    counts = build(args.work_dir, args.results, keep_superseded=args.keep_superseded)
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
        n_full = 1 + len(lm.tokenizer(prompt, add_special_tokens=False).input_ids)  # + start
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
    sp.add_argument(
        "--keep-superseded",
        action="store_true",
        help="keep older runs of a (model, method, dataset) beside the newest (default: replace)",
    )
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

    cli_campaign.add_parsers(sub, DEFAULT_WORK, DEFAULT_RESULTS)

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
