"""`lrf flow run|serve`: run the pipeline from a YAML file, or serve it on a schedule.

A YAML file holds one model's :class:`~tasks.params.PipelineParams`, or a fleet
(``defaults:`` plus ``models:``). ``run`` exits 0 when every model passed its gate, 4 when a
model was published as rejected; errors exit 2 (bad input) or 3 (search target missed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

EXIT_REJECTED = 4

__all__ = ["add_flow_parser", "cmd_flow", "EXIT_REJECTED"]


def add_flow_parser(sub, formatter_class) -> None:
    flow = sub.add_parser("flow", help="run or schedule the Prefect pipeline", formatter_class=formatter_class,
                          description=__doc__)
    actions = flow.add_subparsers(dest="flow_command", metavar="ACTION")
    actions.required = True
    run = actions.add_parser("run", help="run compress-model (or compress-fleet) once")
    run.add_argument("config", help="YAML: one model's parameters, or `defaults:` + `models:` for a fleet")
    run.add_argument("--dask", metavar="ADDRESS", default=None,
                     help="Dask scheduler address (default: env LRF_DASK_ADDRESS): a fleet runs its models there, "
                          "one model fits its layers there; else everything runs in this process")
    run.add_argument("--json", action="store_true", help="print the results as JSON")
    serve = actions.add_parser("serve", help="serve compress-model as a deployment with a cron schedule")
    serve.add_argument("config", help="YAML with one model's parameters")
    serve.add_argument("--cron", default="0 3 * * 0", help="cron schedule (default: Sundays 03:00)")
    serve.add_argument("--name", default=None, help="deployment name (default: the model name)")


def cmd_flow(args: argparse.Namespace) -> int:
    return _run(args) if args.flow_command == "run" else _serve(args)


def _is_fleet(path: str) -> bool:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
    return isinstance(data, dict) and "models" in data


def _run(args: argparse.Namespace) -> int:
    import os

    from flows.pipeline import compress_model, fleet_flow, load_fleet
    from tasks.params import load_params

    address = args.dask or os.environ.get("LRF_DASK_ADDRESS")
    if _is_fleet(args.config):
        results = fleet_flow(address)(load_fleet(args.config))
    else:
        results = [compress_model(load_params(args.config), dask_address=address)]
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        for result in results:
            print_result(result)
    return 0 if all(r["passed"] for r in results) else EXIT_REJECTED


def _bootstrap(attempt: dict) -> str:
    """" (P(drop < 1.5) = 0.93, P(held-out drop ≤ 1) = 0.81)": the gate's confidence on validation and
    the predicted held-out pass, each when the attempt recorded it."""
    parts = []
    if attempt.get("val_confidence") is not None:
        parts.append(f"P(drop < {attempt['val_bound']:g}) = {attempt['val_confidence']:.2f}")
    if attempt.get("heldout_pass_probability") is not None:
        parts.append(f"P(held-out drop ≤ {attempt['accept_max_drop']:g}) = {attempt['heldout_pass_probability']:.2f}")
    return f" ({', '.join(parts)})" if parts else ""


def print_result(result: dict, console=None) -> None:
    """A readable summary of one compress-model run (on ``console``, a rich Console; default stdout)."""
    from rich.console import Console
    from rich.table import Table

    s = result["summary"]
    table = Table(title=f"{result['name']}: gate {'PASSED' if result['passed'] else 'REJECTED'}", show_header=True)
    table.add_column("")
    table.add_column("parent", justify="right")
    table.add_column("compressed", justify="right")
    table.add_row("params", f"{s['parent_params']:,}", f"{s['child_params']:,} ({s['params_kept']:.1%})")
    table.add_row("MACs / image", f"{s['parent_macs']:,}", f"{s['child_macs']:,} ({s['macs_kept']:.1%})")
    table.add_row("held-out accuracy", f"{s['parent_test_accuracy']:.2%}", f"{s['child_test_accuracy']:.2%}")
    if s.get("latency_ratio") is not None:
        interval = s.get("latency_interval")  # the paired median's 95 % interval (older summaries: none)
        within = f" (95 %: {interval[0]:.2f}-{interval[1]:.2f})" if interval else ""
        table.add_row(f"latency (child / parent, batch {s.get('latency_batch', 1)})", "1.00",
                      f"{s['latency_ratio']:.2f}{within}")
    console = console or Console()
    console.print(table)
    for a in s.get("recovery", []):  # recovery budgets, largest first; the kept one ends the list
        verdict = "[green]kept[/]" if a["kept"] else "[yellow]refused[/]"
        console.print(f"  budget {a['max_drop_before_finetune']:g} points before the fine-tune: params "
                      f"{a['params_kept']:.1%} kept, validation drop {a['val_drop_after_finetune']:+.2f} after it"
                      f"{_bootstrap(a)}, {verdict}", soft_wrap=True)
    for c in s["checks"]:
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]not measured[/]"}[c["passed"]]
        value = "—" if c["value"] is None else f"{c['value']:.4g}"
        console.print(f"  {mark}  {c['name']} = {value} {c['op']} {c['threshold']:g} {c['note']}")
    for hint in s.get("hints", []):
        console.print(f"[yellow]hint:[/] {hint}")
    console.print(f"published: {result['uri']} ({result['status']})")
    console.print(f"alias:     {result['promotion']}")
    report_dir = Path(result["report_dir"])
    console.print(f"report:    {report_dir / 'report.md'}")
    console.print(f"data docs: {report_dir / 'validation' / 'data-docs' / 'index.html'}")


def _serve(args: argparse.Namespace) -> int:
    from flows.pipeline import compress_model
    from tasks.params import load_params

    params = load_params(args.config)
    deployment = compress_model.to_deployment(name=args.name or params.name, cron=args.cron,
                                              parameters={"params": params.model_dump(mode="json")})
    from prefect import serve

    serve(deployment)  # blocks; Ctrl-C stops serving
    return 0


