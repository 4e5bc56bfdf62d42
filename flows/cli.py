"""The `lrf` command line.

I/O lives here (reading models, plans and data; writing outputs atomically; printing);
the computing is done by :mod:`lrf_core`. Every error lrflow raises on purpose is
printed as one line ``lrf: error: ...`` with exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Optional, Sequence

from tasks.files import write_report_outputs, write_text_atomic
from tasks.params import LATENCY_BATCH_MAX, LATENCY_THREADS_MAX

EXIT_USAGE = 2
EXIT_TARGET = 3

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
    _add_compress_parser(sub, fmt)
    from flows.flow_cli import add_flow_parser
    from flows.registry_cli import add_registry_parser

    add_flow_parser(sub, fmt)
    add_registry_parser(sub, fmt)
    return parser


METHODS_HELP = "restrict methods per layer type, e.g. conv=svd,tucker2 dense=svd (one method = uniform model)"


def _add_compress_parser(sub, fmt) -> None:
    compress = sub.add_parser(
        "compress",
        help="choose method and rank per layer to meet a target, fine-tune once, write model + report",
        description="Search the factorization method and rank of every layer (or keep it dense) to meet the "
        "targets, rebuild the model, fine-tune it once, and write DIR/model.keras, report.json, report.md and "
        "pareto.png. Targets are fractions kept (--target-params 0.3 keeps 30 %% of the parameters) and an "
        "accuracy budget in points (--max-drop 1.0). A target that cannot be met exits with status 3, names "
        "the best reachable point, and writes nothing.",
        formatter_class=fmt,
    )
    compress.add_argument("model", help="model file: .keras, .h5, or a SavedModel directory")
    compress.add_argument("--data", required=True, metavar="URI", help="training data URI; split into calibration, "
                          "fine-tune and validation sets (its test split, when present, is reported as held-out)")
    compress.add_argument("--out", required=True, metavar="DIR", help="output directory")
    compress.add_argument("--target-params", type=float, metavar="F", help="keep at most this fraction of parameters")
    compress.add_argument("--target-macs", type=float, metavar="F", help="keep at most this fraction of MACs")
    compress.add_argument("--target-latency", type=float, metavar="F",
                          help="measured latency (TF CPU, at --latency-batch) at most this fraction of the parent's")
    compress.add_argument("--max-drop", type=float, metavar="D", help="accuracy budget in points against the parent")
    compress.add_argument("--recovery-budgets", nargs="+", default=["auto"], metavar="D",
                          help="with --max-drop: larger budgets (points, before the fine-tune) chosen too and fine-tuned "
                               "first, largest first; the first child within --max-drop on validation after its "
                               "fine-tune is kept (e.g. 4 2). 'auto' (default): those of 8 4 2 larger than --max-drop when no cost "
                               "target, rank rule or sequential selection is set, else none; 'none' switches them off")
    compress.add_argument("--methods", nargs="+", metavar="TYPE=IDS", help=METHODS_HELP)
    compress.add_argument("--selection", choices=("layerwise", "sequential"), default="layerwise",
                          help="sequential scores each layer with upstream layers already replaced")
    compress.add_argument("--refit", action="store_true", help="with --selection sequential: refit each layer on the "
                          "compressed network's inputs")
    compress.add_argument("--similarity", choices=("cka", "cosine", "mse"), default="cka",
                          help="feature-map similarity metric (default linear CKA)")
    compress.add_argument("--objective", choices=("sigma", "frobenius"), default="sigma")
    compress.add_argument("--ranks", metavar="RULE", help="baseline ranks instead of the search: energy:0.95 or vbmf")
    compress.add_argument("--mode", choices=("search", "dprp"), default="search",
                          help="dprp: dynamic rank pruning during training instead of the post-hoc search")
    compress.add_argument("--finetune-epochs", type=int, default=3, metavar="N", help="one-shot fine-tune epochs (default 3)")
    compress.add_argument("--distill", action="store_true", help="fine-tune with distillation from the parent's logits")
    compress.add_argument("--calibration-size", type=int, default=512, metavar="N")
    compress.add_argument("--grid-points", type=int, default=12, metavar="N", help="ranks tried per method (default 12)")
    compress.add_argument("--skip-layers", default="", metavar="A,B", help="layers to keep dense")
    compress.add_argument("--latency-guard", action="store_true",
                          help="time every candidate block and never choose one slower than the dense layer")
    compress.add_argument("--no-block-latency-rule", dest="block_latency_rule", action="store_false",
                          help="with --latency-guard: keep blocks timed slower than their dense layer as candidates "
                               "and let the whole child, timed against the parent, decide")
    compress.add_argument("--latency-batch", type=_batch_size, default=1, metavar="N",
                          help="batch size latency is timed at (guard, --target-latency, report): your serving batch; "
                               "at 1, per-op overhead makes factor chains of small layers slower (default 1)")
    compress.add_argument("--latency-threads", type=_thread_count, default=None, metavar="N",
                          help="intra-op threads latency is timed with, in a worker process: your serving thread "
                               "count (default: this process's TensorFlow default, one per core)")
    compress.add_argument("--seed", type=int, default=0)
    compress.add_argument("--allow-unsafe-model", action="store_true", help="load models with Lambda layers (trusted files only)")


# -- I/O helpers ----------------------------------------------------------------------------


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


def _parse_methods(values: Optional[Sequence[str]]) -> Optional[dict]:
    from lrf_core.errors import PlanError

    if not values:
        return None
    kinds = {"conv": "conv2d", "conv2d": "conv2d", "dense": "dense"}
    methods = {"conv2d": (), "dense": ()}
    for value in values:
        kind, _, ids = value.partition("=")
        if kind not in kinds or not ids:
            raise PlanError(f"--methods takes TYPE=ID,ID with TYPE conv or dense (e.g. conv=svd,tucker2). Received `{value}`.")
        methods[kinds[kind]] = tuple(i.strip() for i in ids.split(",") if i.strip())
    return methods


def _compress_data(uri: str, model, calibration_size: int, seed: int):
    from lrf_core.data import check_fits_model_input, load_dataset, split_dataset, stratified_sample
    from lrf_core.errors import DataError
    from lrf_core.search.compress import CompressData

    dataset = load_dataset(uri, split="train")
    check_fits_model_input(dataset, tuple(model.inputs[0].shape[1:]))
    train, val = split_dataset(dataset, (0.85, 0.15), seed=seed)
    try:
        test = load_dataset(uri, split="test")
    except DataError:
        test = None
    return CompressData(stratified_sample(train, calibration_size, seed=seed), train, val, test)


class _Progress:
    """A rich progress display with one bar per long phase."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), transient=False)
        self.tasks = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(phase, total=total)
        self.progress.update(self.tasks[phase], completed=done, total=total)


def _whole_number(what: str, high: int):
    """argparse type: ``what`` as a whole number from 1 to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(f"a {what} is a whole number from 1 to {high}, not {text!r}")
        return value

    return parse


_batch_size = _whole_number("batch size", LATENCY_BATCH_MAX)  # gate.latency_batch's bounds
_thread_count = _whole_number("thread count", LATENCY_THREADS_MAX)  # gate.latency_threads's


def _recovery_spec(words: list[str]):
    """``--recovery-budgets`` words as :func:`resolve_recovery_budgets` takes them: "auto", () or floats."""
    from lrf_core.errors import PlanError

    if words == ["auto"]:
        return "auto"
    if words == ["none"]:
        return ()
    try:
        return tuple(float(w) for w in words)
    except ValueError:
        raise PlanError(f"--recovery-budgets takes 'auto', 'none' or budgets in points (e.g. 4 2), not "
                        f"{' '.join(words)!r}.") from None


def cmd_compress(args: argparse.Namespace) -> int:
    import tensorflow as tf

    from lrf_core.finetune import FinetuneConfig
    from lrf_core.model_io import load_model
    from lrf_core.report_render import pareto_figure, render_markdown
    from lrf_core.search.allocate import CostTargets
    from lrf_core.search.budgets import resolve_recovery_budgets
    from lrf_core.search.compress import CompressConfig, TargetNotMetError, compress
    from tasks.latency_worker import latency_functions

    tf.config.experimental.enable_op_determinism()  # --seed makes runs repeat
    out = Path(args.out)
    # before the model and data load: a budget that cannot be tried is refused at once
    recovery_budgets = resolve_recovery_budgets(
        _recovery_spec(args.recovery_budgets), max_drop=args.max_drop, rank_rule=args.ranks is not None,
        cost_targets=any(t is not None for t in (args.target_params, args.target_macs, args.target_latency)),
        selection=args.selection)
    model = load_model(args.model, safe_mode=not args.allow_unsafe_model)
    data = _compress_data(args.data, model, args.calibration_size, args.seed)
    methods = _parse_methods(args.methods)
    config = CompressConfig(
        **({"methods": methods} if methods else {}),
        targets=CostTargets(args.target_params, args.target_macs, args.target_latency),
        max_drop=args.max_drop, selection=args.selection, refit=args.refit, similarity=args.similarity,
        objective=args.objective, grid_points=args.grid_points, ranks=args.ranks,
        skip_layers=tuple(n for n in args.skip_layers.split(",") if n),
        finetune=FinetuneConfig(epochs=args.finetune_epochs, distill=args.distill, seed=args.seed),
        latency_guard=args.latency_guard, block_latency_rule=args.block_latency_rule, seed=args.seed,
        recovery_budgets=recovery_budgets,
    )
    if args.mode == "dprp":
        return _compress_dprp(args, model, data, out)
    try:
        # whole-model latency is always measured for the report; blocks only when they can decide
        with latency_functions(tuple(model.inputs[0].shape[1:]), args.latency_batch, args.latency_threads) as (
                latency_fn, model_latency_fn), _Progress() as progress:
            result = compress(model, data, config, latency_fn=latency_fn if config.uses_latency else None,
                              model_latency_fn=model_latency_fn, progress=progress)
    except TargetNotMetError as exc:
        print(f"lrf: target not met: {exc}", file=sys.stderr)
        return EXIT_TARGET
    report = dict(result.report, source_model=str(args.model), data=args.data)
    if not result.met:
        failed = [t for t in report["targets"] if not t["met"]]
        text = "; ".join(f"{t['name']} {t['achieved']:.4g} (wanted ≤ {t['target']:.4g})" for t in failed)
        print(f"lrf: target not met after fine-tune: {text}. Best reachable point: params kept "
              f"{report['child']['params'] / report['parent']['params']:.1%}, MACs kept "
              f"{report['child']['macs'] / report['parent']['macs']:.1%}. No model written.", file=sys.stderr)
        return EXIT_TARGET
    write_report_outputs(out, result.model, report, render_markdown(report), pareto_figure(report))
    _print_compress_summary(report, out)
    return 0


def _compress_dprp(args, model, data, out: Path) -> int:
    from lrf_core.dprp import DPRPConfig, train_dprp
    from lrf_core.graph import model_cost

    result = train_dprp(model, data.train, data.val, DPRPConfig(seed=args.seed))
    report = {
        "mode": "dprp", "model": model.name, "source_model": str(args.model), "data": args.data,
        "params_before": result.params_before, "params_after": result.params_after,
        "macs_before": model_cost(model).macs, "macs_after": model_cost(result.model).macs,
        "val_accuracy_parent": result.val_accuracy_parent, "val_accuracy": result.val_accuracy,
        "history": [dataclasses.asdict(h) for h in result.history],
        "skipped_layers": [list(item) for item in result.skipped],
    }
    text = (f"# DPRP report: `{model.name}`\n\nparams {result.params_before:,} → {result.params_after:,}; "
            f"validation accuracy {result.val_accuracy_parent:.2%} → {result.val_accuracy:.2%}.\n")
    write_report_outputs(out, result.model, report, text, None)
    print(text)
    return 0


def _print_compress_summary(report: dict, out: Path) -> None:
    parent, child = report["parent"], report["child"]
    print(f"\nparams {parent['params']:,} → {child['params']:,} ({child['params'] / parent['params']:.1%} kept), "
          f"MACs {parent['macs']:,} → {child['macs']:,} ({child['macs'] / parent['macs']:.1%} kept)")
    print(f"validation accuracy {parent['val_accuracy']:.2%} → {child['val_accuracy']:.2%}", end="")
    if "test_accuracy" in parent:
        print(f"; held-out {parent['test_accuracy']:.2%} → {child['test_accuracy']:.2%}", end="")
    print()
    methods = sorted({r["method"] for r in report["layers"] if r["status"] == "factorized"})
    print(f"factorized {sum(r['status'] == 'factorized' for r in report['layers'])} of {len(report['layers'])} "
          f"eligible layers with {', '.join(methods) or 'nothing'}; wrote {out}/model.keras, report.json, report.md, pareto.png")


def cmd_flow(args: argparse.Namespace) -> int:
    from flows.flow_cli import cmd_flow as run

    return run(args)


def cmd_registry(args: argparse.Namespace) -> int:
    from flows.registry_cli import cmd_registry as run

    return run(args)


COMMANDS = {"inspect": cmd_inspect, "rebuild": cmd_rebuild, "compress": cmd_compress, "flow": cmd_flow,
            "registry": cmd_registry}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.debug:
        # Every rebuilt candidate model traces its own predict function; TensorFlow's retracing
        # warnings about that are expected here and would bury the output a user reads.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
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
