"""The `lrf` command line.

I/O lives here (reading models, plans and data; writing outputs atomically; printing);
the computing is done by :mod:`lrf_core`. Every error lrflow raises on purpose is
printed as one line ``lrf: error: ...`` with exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Optional, Sequence

EXIT_USAGE = 2

DESCRIPTION = """\
lrflow compresses trained Keras CNNs by low-rank factorization: each Conv2D or Dense
layer is replaced by a chain of smaller standard Keras layers (SVD, Tucker-2, CP,
spatial SVD, tensor-train, Tucker), fitted to keep the layer's output on real data.

Start with `lrf inspect MODEL` to see which layers can be factorized and what they
cost, then `lrf rebuild MODEL --plan PLAN.json --data DATA --out small.keras`.
"""

EPILOG = """\
examples:
  lrf inspect model.keras
  lrf inspect model.keras --json > layers.json
  lrf rebuild model.keras --plan plan.json --data sklearn:digits --out small.keras --report report.json

data URIs:  sklearn:digits (bundled) | idx:DIR (MNIST-format IDX files, e.g.
            /usr/share/datasets/fashion-mnist) | npz:PATH (arrays x, y)
models:     a .keras file, an .h5 file, or a Keras-2 SavedModel directory
"""

PLAN_HELP = """\
JSON object mapping layer names to {"method": ID, "rank": R}. R is an int, a list of
ints for multi-rank methods (tucker2: [r_S, r_T]; tt: [r_1, r_2]; dense tucker:
[r_in1, r_in2, r_out1, r_out2]) or "full". Example:
{"conv2": {"method": "tucker2", "rank": [8, 16]}, "fc1": {"method": "svd", "rank": 32}}
"""


def _build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="lrf", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    inspect = sub.add_parser(
        "inspect",
        help="list layers: type, kernel, params, MACs, eligible methods or why skipped",
        description="One row per layer: name, type, kernel shape, parameters, MACs per image, and the "
        "factorization methods that apply (or why the layer is skipped); totals at the end.",
        formatter_class=fmt,
    )
    inspect.add_argument("model", help="model file: .keras, .h5, or a SavedModel directory")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    inspect.add_argument("--allow-unsafe-model", action="store_true",
                         help="load models with Lambda layers (runs code stored in the file; trusted files only)")

    rebuild = sub.add_parser(
        "rebuild",
        help="factorize the layers named in a plan and save the smaller model",
        description="Replace each layer named in PLAN by its factor chain at the given rank, fitted to the "
        "layer's input distribution (Σ) when --data is given, and save the rebuilt model.",
        epilog="plan format:\n" + textwrap.indent(PLAN_HELP, "  "),
        formatter_class=fmt,
    )
    rebuild.add_argument("model", help="model file: .keras, .h5, or a SavedModel directory")
    rebuild.add_argument("--plan", required=True, metavar="PLAN.json", help="the compression plan (see below)")
    rebuild.add_argument("--data", metavar="URI", help="calibration data, e.g. sklearn:digits, idx:DIR, npz:PATH")
    rebuild.add_argument("--objective", choices=("sigma", "frobenius"),
                         help="fit to the layer's output on --data (sigma, the default with --data) "
                         "or to the weights alone (frobenius, the default without)")
    rebuild.add_argument("--calibration-size", type=int, default=512, metavar="N",
                         help="examples drawn (stratified by class) from --data (default 512)")
    rebuild.add_argument("--seed", type=int, default=0, help="seed for sampling and fitting (default 0)")
    rebuild.add_argument("--out", required=True, metavar="OUT.keras", help="where to write the rebuilt model")
    rebuild.add_argument("--report", metavar="REPORT.json", help="write per-layer errors and costs as JSON")
    rebuild.add_argument("--allow-unsafe-model", action="store_true",
                         help="load models with Lambda layers (trusted files only)")
    return parser


# -- I/O helpers ----------------------------------------------------------------------------


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory, so no partial file is ever left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_plan(path: str) -> Any:
    from lrf_core.errors import PlanError

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PlanError(f"Plan file `{path}` does not exist.") from None
    except json.JSONDecodeError as exc:
        raise PlanError(f"Plan file `{path}` is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None


def _calibration_inputs(uri: str, model, size: int, seed: int):
    from lrf_core.data import check_fits_model_input, load_dataset, stratified_sample

    dataset = load_dataset(uri, split="train")
    check_fits_model_input(dataset, tuple(model.inputs[0].shape[1:]))
    return stratified_sample(dataset, size, seed=seed).x


def _check_out_path(out: str) -> Path:
    from lrf_core.errors import LRFError

    path = Path(out)
    if path.suffix != ".keras":
        raise LRFError(f"--out must name a .keras file. Received `{out}`.")
    return path


# -- commands -------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    from lrf_core.graph import describe_model
    from lrf_core.model_io import load_model

    summary = describe_model(load_model(args.model, safe_mode=not args.allow_unsafe_model))
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary.name}: {len(summary.layers)} layers", title_justify="left")
    for column, justify in (("layer", "left"), ("type", "left"), ("kernel", "left"), ("params", "right"),
                            ("MACs", "right"), ("methods / why skipped", "left")):
        table.add_column(column, justify=justify)
    for r in summary.layers:
        kernel = "×".join(map(str, r.kernel_shape)) if r.kernel_shape else ""
        note = ", ".join(r.methods) if r.methods else (f"[dim]{r.skip_reason}[/dim]" if r.skip_reason else "")
        table.add_row(r.name, r.class_name, kernel, f"{r.params:,}", f"{r.macs:,}", note)
    total = summary.total
    table.add_section()
    eligible = sum(r.eligible for r in summary.layers)
    table.add_row("total", "", "", f"{total.params:,}", f"{total.macs:,}", f"{eligible} layers can be factorized")
    Console(width=max(100, Console().width)).print(table)
    print("MACs are multiply-accumulates per image (FLOPs ≈ 2 × MACs).")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from lrf_core.apply_plan import apply_plan
    from lrf_core.model_io import load_model, save_model_atomic

    out = _check_out_path(args.out)
    plan = _read_plan(args.plan)
    model = load_model(args.model, safe_mode=not args.allow_unsafe_model)
    calibration = _calibration_inputs(args.data, model, args.calibration_size, args.seed) if args.data else None
    result = apply_plan(model, plan, calibration=calibration, objective=args.objective, seed=args.seed)
    report = dict(result.report, source_model=str(args.model), data=args.data)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model_atomic(result.model, out)
    if args.report:
        write_text_atomic(Path(args.report), json.dumps(report, indent=2) + "\n")
    _print_rebuild_summary(report, out)
    return 0


def _print_rebuild_summary(report: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rebuilt {report['model']} (objective: {report['objective']})", title_justify="left")
    for column in ("layer", "method", "rank", "params", "MACs", "rel. weight err", "rel. output err"):
        table.add_column(column, justify="left" if column in ("layer", "method", "rank") else "right")
    for layer in report["layers"]:
        sigma = layer["sigma_error"]
        table.add_row(
            layer["layer"], layer["method"], str(tuple(layer["rank"])),
            f"{layer['params_before']:,} → {layer['params_after']:,}",
            f"{layer['macs_before']:,} → {layer['macs_after']:,}",
            f"{layer['frobenius_error']:.3g}", "—" if sigma is None else f"{sigma:.3g}",
        )
    total = report["total"]
    table.add_section()
    table.add_row("model", "", "", f"{total['params_before']:,} → {total['params_after']:,}",
                  f"{total['macs_before']:,} → {total['macs_after']:,}", "", "")
    Console(width=max(110, Console().width)).print(table)
    print(f"params kept {total['params_kept']:.1%}, MACs kept {total['macs_kept']:.1%}; saved {out}")


COMMANDS = {"inspect": cmd_inspect, "rebuild": cmd_rebuild}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from lrf_core.errors import LRFError

    try:
        return COMMANDS[args.command](args)
    except LRFError as exc:
        if args.debug:
            raise
        print(f"lrf: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
