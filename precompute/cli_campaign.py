"""The ``campaign`` commands: run a campaign file here or on Ray, and read its progress back.

Examples::

    python -m precompute campaign data/campaigns/offline.toml --data-dir ../shared/data
    python -m precompute campaign data/campaigns/seeds.toml --executor ray --address auto
    python -m precompute campaign status data/campaigns/offline.toml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction, default_work: Path, default_results: Path) -> None:
    """Register ``campaign`` and ``campaign-status`` on the main parser's subcommands."""
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
            sp.add_argument("--results", type=Path, default=default_results, help="results folder")
        sp.add_argument("--work-dir", type=Path, default=None, help="shared work folder")
        sp.add_argument("--data-dir", type=Path, default=None, help="folder with local datasets")
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=fn, default_work=default_work)


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
    work = Path(args.work_dir or campaign.work_dir or args.default_work).resolve()
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
    work = Path(args.work_dir or campaign.work_dir or args.default_work).resolve()
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
