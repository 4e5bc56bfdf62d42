"""The pipeline's steps as plain functions: I/O around :mod:`lrf_core` calls.

Each step reads its inputs from records (paths pinned by sha256), writes its outputs into
``out_dir`` atomically, and returns a small record. The Prefect tasks (:mod:`tasks.prefect_tasks`)
and the DVC stages (``python -m tasks STEP``) run exactly these functions.

Order: fetch_model → fetch_data → check_data (Great Expectations) → calibrate → search →
rebuild → finetune → gate (+ Great Expectations on the gate metrics) → publish → promote.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import numpy as np

from lrf_core import __version__
from lrf_core.errors import DataError, LRFError
from tasks.files import load_npz, read_json, save_npz_atomic, write_atomic, write_json_atomic, write_report_outputs
from tasks.params import PipelineParams
from tasks.records import (
    CalibrationRecord, CheckRecord, DataRecord, FileRef, FinetuneRecord, GateRecord, ModelFileRecord, ModelRecord,
    PromoteRecord, PublishRecord, RecoveryChild, SearchChoice, SearchRecord,
)

logger = logging.getLogger(__name__)

__all__ = ["check_registry", "fetch_model", "fetch_data", "check_data", "calibrate", "search", "rebuild", "finetune", "gate",
           "publish", "promote", "StepError"]


class StepError(LRFError):
    """A step's input is missing or was changed after the step that wrote it."""


def _verified(ref: FileRef) -> Path:
    """The file of ``ref``, refusing one whose content changed since it was recorded."""
    from tasks.files import file_sha256

    path = Path(ref.path)
    if not path.exists():
        raise StepError(f"`{path}` is missing: a previous step's output was deleted. Re-run the pipeline from that step.")
    if file_sha256(path) != ref.sha256:
        raise StepError(f"`{path}` changed after it was recorded (sha256 differs). Re-run the pipeline from the step "
                        "that wrote it; never edit step outputs by hand.")
    return path


def _load_model(ref: FileRef, params: PipelineParams):
    from lrf_core.model_io import load_model

    _deterministic()
    return load_model(_verified(ref), safe_mode=not params.allow_unsafe_model)


def _deterministic() -> None:
    """Same inputs, same outputs: the search and the fine-tune use deterministic TF kernels."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


# -- fetch ------------------------------------------------------------------------------------


def _registry_client(params: PipelineParams):
    from tasks.credentials import registry_client

    return registry_client(params.registry.endpoint_url, params.registry.credentials_block)


def check_registry(params: PipelineParams) -> str:
    """Fail fast, before any compute, when the registry bucket is missing or unreachable."""
    from tasks import s3io

    s3io.require_bucket(_registry_client(params), params.registry.bucket)
    return s3io.object_uri(params.registry.bucket, params.registry.prefix)


def fetch_model(params: PipelineParams, out_dir: Path) -> ModelRecord:
    """Copy the parent (local path, ``s3://``, or ``registry:NAME@ALIAS``) into ``out_dir`` and load it once.

    Loading here (``safe_mode``) refuses a corrupt or unsafe model before anything else runs.
    """
    from lrf_core.graph import describe_model, model_cost
    from lrf_core.model_io import load_model

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "parent.keras"
    _download_model(params, target)
    try:
        model = load_model(target, safe_mode=not params.allow_unsafe_model)
    except LRFError as exc:  # name the user's model, not the workspace copy
        raise type(exc)(str(exc).replace(str(target), params.model)) from None
    describe_model(model)  # refuses subclassed models with the reason
    cost = model_cost(model)
    return ModelRecord(file=FileRef.of(target), source=params.model, name=model.name, params=cost.params,
                       macs=cost.macs, input_shape=tuple(model.inputs[0].shape[1:]))


def _download_model(params: PipelineParams, target: Path) -> None:
    from tasks import registry, s3io

    uri = params.model
    if registry.is_registry_ref(uri):
        ref = registry.parse_registry_ref(uri)
        client = _registry_client(params)
        bucket, prefix = params.registry.bucket, params.registry.prefix
        version = registry.resolve_ref(client, bucket, prefix, ref)
        manifest = registry.read_manifest(client, bucket, prefix, ref.name, version)
        entry = manifest.files.get("model.keras")
        if entry is None:
            raise StepError(f"{uri} (version {version}) has no model.keras.")
        key = s3io.join_key(registry.version_key(prefix, ref.name, version), "model.keras")
        s3io.download_file(client, bucket, key, target, expected_sha256=entry.sha256)
    elif uri.startswith("s3://"):
        location = s3io.parse_s3_uri(uri, require_key=True)
        s3io.download_file(_registry_client(params), location.bucket, location.key, target)
    elif "://" in uri:
        raise StepError(f"Parent model `{uri}`: unsupported URI scheme `{uri.split('://')[0]}://`. Use a local path, "
                        "s3://BUCKET/KEY or registry:NAME@ALIAS (copy the file to S3 or disk first).")
    else:
        source = Path(uri)
        if not source.is_file():
            raise StepError(f"Parent model `{uri}` does not exist. Give a .keras file, s3://BUCKET/KEY or "
                            "registry:NAME@ALIAS.")
        write_atomic(target, lambda tmp: shutil.copyfile(source, tmp))


def fetch_data(params: PipelineParams, out_dir: Path) -> DataRecord:
    """Read the training and held-out splits as they are (no content checks: check_data does those)."""
    from lrf_core.data import load_arrays

    train = load_arrays(params.data, split="train")
    try:
        test = load_arrays(params.data, split="test")
    except DataError as exc:
        raise DataError(f"The accuracy gate needs a held-out split that calibration and fine-tuning never see, "
                        f"and `{params.data}` has none ({exc}). Use data with a test split (npz: x_test/y_test).")
    refs = {}
    for split, raw in (("train", train), ("test", test)):
        path = out_dir / f"{split}.npz"
        save_npz_atomic(path, {"x": np.asarray(raw.x), "y": np.asarray(raw.y), "num_classes": np.int64(raw.num_classes)})
        refs[split] = FileRef.of(path)
    return DataRecord(source=params.data, train=refs["train"], test=refs["test"], num_classes=int(train.num_classes),
                      train_examples=len(train.y), test_examples=len(test.y))


# -- checks and calibration ---------------------------------------------------------------------


def _raw(ref: FileRef, name: str):
    from lrf_core.data import RawData

    arrays = load_npz(_verified(ref))
    return RawData(x=arrays["x"], y=arrays["y"], name=name, num_classes=int(arrays["num_classes"]))


def check_data(params: PipelineParams, model: ModelRecord, data: DataRecord, out_dir: Path) -> CheckRecord:
    """The calibration-data suite on the training split the calibration set is drawn from.

    Raises :class:`tasks.expectations.CalibrationCheckError` naming every failed
    expectation; the result and Data Docs are written first, so they can be inspected.
    """
    from tasks import expectations

    raw = _raw(data.train, f"{data.source}#train")
    cal = params.calibration
    outcome = expectations.validate_calibration(
        raw, input_shape=tuple(model.input_shape), num_classes=data.num_classes, min_per_class=cal.min_per_class,
        max_duplicate_fraction=cal.max_duplicate_fraction, value_range=tuple(cal.value_range),
        docs_dir=out_dir / "data-docs",
    )
    expectations.write_outcome(outcome, out_dir / "calibration.json")
    record = CheckRecord(suite=outcome.suite, success=outcome.success, result=FileRef.of(out_dir / "calibration.json"),
                         docs_dir=str(out_dir / "data-docs"), failed=tuple(outcome.failed_descriptions))
    expectations.raise_if_failed(outcome)
    return record


def _splits(params: PipelineParams, data: DataRecord, calibration: Optional[CalibrationRecord] = None):
    """The deterministic train / val / held-out split (and the calibration set, once drawn)."""
    from lrf_core.data import Dataset, split_dataset
    from lrf_core.search.compress import CompressData

    def dataset(ref: FileRef, name: str) -> Dataset:
        raw = _raw(ref, name)
        return Dataset(x=raw.x, y=raw.y, name=raw.name, num_classes=raw.num_classes)

    full = dataset(data.train, f"{data.source}#train")
    val_fraction = params.calibration.val_fraction
    train, val = split_dataset(full, (1.0 - val_fraction, val_fraction), seed=params.seed)
    test = dataset(data.test, f"{data.source}#test")
    cal = dataset(calibration.calibration, "calibration") if calibration else train
    return CompressData(cal, train, val, test)


def calibrate(params: PipelineParams, model: ModelRecord, data: DataRecord, out_dir: Path) -> CalibrationRecord:
    """Draw the calibration set (stratified, from the fine-tune split) and collect every layer's Σ statistics."""
    from lrf_core.calibration import collect_statistics
    from lrf_core.data import stratified_sample
    from lrf_core.graph import describe_model

    parent = _load_model(model.file, params)
    splits = _splits(params, data)
    calib = stratified_sample(splits.train, min(params.calibration.size, len(splits.train)), seed=params.seed)
    layers = [r.name for r in describe_model(parent).layers if r.geometry is not None]
    stats = collect_statistics(parent, calib.x, layers)
    save_npz_atomic(out_dir / "calibration.npz", {"x": calib.x, "y": calib.y, "num_classes": np.int64(calib.num_classes)})
    arrays = {}
    for name, s in stats.items():
        arrays.update({f"{name}/second_moment": s.second_moment, f"{name}/mean": s.mean, f"{name}/count": np.int64(s.count)})
    save_npz_atomic(out_dir / "stats.npz", arrays)
    return CalibrationRecord(calibration=FileRef.of(out_dir / "calibration.npz"), stats=FileRef.of(out_dir / "stats.npz"),
                             layers=tuple(layers), examples=len(calib))


def _load_stats(ref: FileRef, layers):
    from lrf_core.covariance import InputStatistics

    arrays = load_npz(_verified(ref))
    return {n: InputStatistics(arrays[f"{n}/second_moment"], arrays[f"{n}/mean"], int(arrays[f"{n}/count"])) for n in layers}


# -- search, rebuild, fine-tune -----------------------------------------------------------------


def compress_config(params: PipelineParams):
    """The :class:`CompressConfig` of the search knobs (validated again by lrf_core)."""
    from lrf_core.finetune import FinetuneConfig
    from lrf_core.search.allocate import CostTargets
    from lrf_core.search.compress import CompressConfig

    s, f = params.search, params.finetune
    return CompressConfig(
        methods={"conv2d": tuple(s.methods_conv), "dense": tuple(s.methods_dense)},
        targets=CostTargets(params=s.target_params, macs=s.target_macs), max_drop=s.max_drop,
        selection=s.selection, refit=s.refit, similarity=s.similarity, objective=s.objective,
        grid_points=s.grid_points, skip_layers=tuple(s.skip_layers), latency_guard=s.latency_guard,
        block_latency_rule=s.block_latency_rule, recovery_budgets=s.resolved_recovery_budgets(), seed=params.seed,
        finetune=FinetuneConfig(epochs=f.epochs, learning_rate=f.learning_rate, distill=f.distill, seed=params.seed),
    )


def search(params: PipelineParams, model: ModelRecord, data: DataRecord, calibration: CalibrationRecord,
           out_dir: Path, *, dask_address: Optional[str] = None) -> SearchRecord:
    """Choose and fit every layer's factorization; write the decision (JSON + arrays) and the search report.

    With ``dask_address`` the per-layer fitting runs on that Dask cluster (:mod:`tasks.distributed`);
    the decision does not depend on it. A missed target raises
    :class:`lrf_core.search.compress.TargetNotMetError` (the flow stops, nothing is published).
    """
    from lrf_core.search import compress as core
    from tasks.distributed import layer_map_on

    parent = _load_model(model.file, params)
    splits = _splits(params, data, calibration)
    stats = _load_stats(calibration.stats, calibration.layers)
    config = compress_config(params)
    with _latency_functions(model.input_shape, params.gate, config.latency_guard) as (block_fn, models_fn), \
            layer_map_on(dask_address) as layer_map:
        searched = core.search(parent, splits, config, stats=stats, latency_fn=block_fn, model_latency_fn=models_fn,
                               layer_map=layer_map)
    # recovery choices first, each in its own directory: the base choice's files stay where they always were
    recovery = tuple(_write_choice(r, out_dir / _recovery_dir(r.max_drop)) for r in searched.recovery)
    return SearchRecord(**dict(_write_choice(searched, out_dir)), recovery=recovery)


def _latency_functions(input_shape, gate, wanted: bool):
    """``(block_fn, models_fn)`` at the serving batch and, with ``gate.latency_threads``, thread
    count (a worker process); ``(None, None)`` when nothing is to be timed."""
    if not wanted:
        return nullcontext((None, None))
    from tasks.latency_worker import latency_functions

    return latency_functions(tuple(input_shape), gate.latency_batch, gate.latency_threads)


def _recovery_dir(max_drop: float) -> str:
    return f"recovery-{max_drop:g}"


def _write_choice(searched, out_dir: Path) -> SearchChoice:
    """Write one search choice (decision JSON + arrays, report) and record what it keeps."""
    from lrf_core.decision import decision_to_data

    out_dir.mkdir(parents=True, exist_ok=True)
    meta, arrays = decision_to_data(searched.fitted)
    save_npz_atomic(out_dir / "decision.npz", arrays)
    write_json_atomic(out_dir / "decision.json", meta)
    write_json_atomic(out_dir / "search-report.json", searched.report)
    totals = searched.totals
    params_after = totals.params + sum(r["params_after"] - r["params_before"] for r in searched.report["layers"])
    macs_after = totals.macs + sum(r["macs_after"] - r["macs_before"] for r in searched.report["layers"])
    return SearchChoice(max_drop=searched.max_drop, decision=FileRef.of(out_dir / "decision.json"),
                        arrays=FileRef.of(out_dir / "decision.npz"), report=FileRef.of(out_dir / "search-report.json"),
                        factorized=tuple(searched.fitted), params_kept=params_after / totals.params,
                        macs_kept=macs_after / max(totals.macs, 1))


def rebuild(params: PipelineParams, model: ModelRecord, searched: SearchRecord, out_dir: Path) -> ModelFileRecord:
    """The parent with the decided chains in place (standard Keras layers only), before fine-tuning.

    With recovery choices, each is rebuilt too (``recovery-<budget>/child.keras``).
    """
    from lrf_core.decision import decision_from_data
    from lrf_core.model_io import save_model_atomic
    from lrf_core.rebuild import rebuild_model

    parent = _load_model(model.file, params)

    def build(choice, directory: Path):
        chosen = decision_from_data(read_json(_verified(choice.decision)), load_npz(_verified(choice.arrays)))
        child = rebuild_model(parent, chosen)
        directory.mkdir(parents=True, exist_ok=True)
        save_model_atomic(child, directory / "child.keras")
        return FileRef.of(directory / "child.keras"), int(child.count_params())

    recovery = tuple(RecoveryChild(max_drop=c.max_drop, model=build(c, out_dir / _recovery_dir(c.max_drop))[0])
                     for c in searched.recovery)
    ref, count = build(searched, out_dir)
    return ModelFileRecord(model=ref, params=count, recovery=recovery)


def finetune(params: PipelineParams, model: ModelRecord, data: DataRecord, calibration: CalibrationRecord,
             child: ModelFileRecord, out_dir: Path) -> FinetuneRecord:
    """One-shot fine-tune on the training split, early-stopped on validation (never the held-out split).

    With recovery choices they are fine-tuned first, largest budget first, and the first that
    passes the gate's own accuracy criterion on validation (drop within ``search.max_drop`` and
    ``gate.max_drop``, the paired bootstrap's confidence at ``gate.tolerance`` /
    ``gate.confidence``, and the held-out drop check predicted to pass at ``gate.confidence``) is kept (:func:`lrf_core.search.compress.finetune_first_within`); every
    attempt goes to ``recovery.json``.
    """
    from lrf_core.model_io import save_model_atomic
    from lrf_core.search.compress import finetune_first_within

    config = compress_config(params)
    splits = _splits(params, data, calibration)
    rungs = [(c.max_drop, lambda c=c: _load_model(c.model, params)) for c in child.recovery]
    rungs.append((params.search.max_drop, lambda: _load_model(child.model, params)))
    kept, student, result, tried = finetune_first_within(
        lambda: _load_model(model.file, params), rungs, splits, config,
        accept=replace(_gate_config(params), max_drop=min(params.search.max_drop, params.gate.max_drop))
        if child.recovery else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model_atomic(student, out_dir / "model.keras")
    write_json_atomic(out_dir / "finetune.json", asdict(result))
    recovery = None
    if tried:
        write_json_atomic(out_dir / "recovery.json", tried)
        recovery = FileRef.of(out_dir / "recovery.json")
    return FinetuneRecord(model=FileRef.of(out_dir / "model.keras"), result=FileRef.of(out_dir / "finetune.json"),
                          val_accuracy_before=result.val_accuracy_before, val_accuracy_after=result.val_accuracy_after,
                          kept_max_drop=rungs[kept][0] if tried else None, recovery=recovery)


# -- gate -------------------------------------------------------------------------------------


def _tflite_bytes(model) -> bytes:
    import contextlib
    import io

    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel signature
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _gate_config(params: PipelineParams):
    """The gate's thresholds from ``params.gate`` and the search's cost targets."""
    from lrf_core.gate import GateConfig

    g = params.gate
    targets = {k: v for k, v in (("params_kept", params.search.target_params), ("macs_kept", params.search.target_macs))
               if v is not None}
    return GateConfig(max_drop=g.max_drop, tolerance=g.tolerance, confidence=g.confidence,
                      bootstrap_samples=g.bootstrap_samples, max_latency_ratio=g.max_latency_ratio,
                      latency_tolerance=g.latency_tolerance, targets=targets, seed=params.seed)


def gate(params: PipelineParams, model: ModelRecord, data: DataRecord, calibration: CalibrationRecord,
         searched: SearchRecord, tuned: FinetuneRecord, check: CheckRecord, out_dir: Path) -> GateRecord:
    """Compare parent and compressed model on the held-out split; write the report and every file to publish.

    The verdict (:mod:`lrf_core.gate`) and the gate-metrics suite (Great Expectations) must
    both pass. Writes ``model.keras``, ``model.tflite``, ``report.json`` (last), ``report.md``,
    ``pareto.png``, ``validation/*.json`` and ``validation/data-docs/``.
    """
    from lrf_core.finetune import FinetuneResult
    from lrf_core.gate import gate_verdict
    from lrf_core.graph import model_cost
    from lrf_core.report_render import pareto_figure, render_markdown
    from lrf_core.search.allocate import ModelTotals
    from lrf_core.search.compress import evaluate_final
    from tasks import expectations

    parent, child = _load_model(model.file, params), _load_model(tuned.model, params)
    splits = _splits(params, data, calibration)
    p_cost, c_cost = model_cost(parent), model_cost(child)
    report = read_json(_verified(_kept_choice(searched, tuned).report))
    if tuned.recovery is not None:
        report["recovery"] = read_json(_verified(tuned.recovery))
    ft = FinetuneResult(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in read_json(_verified(tuned.result)).items()})
    config = compress_config(params)
    with _latency_functions(model.input_shape, params.gate, params.gate.measure_latency) as (_, latency_fn):
        evaluate_final(report, parent, child, splits, config, ModelTotals(p_cost.params, p_cost.macs), ft, latency_fn)
    latency = report["child"].get("latency_ratio")  # median of paired rounds and its interval
    latency_ratio = latency["median"] if latency else None

    g, gate_config = params.gate, _gate_config(params)
    params_kept, macs_kept = c_cost.params / p_cost.params, c_cost.macs / max(p_cost.macs, 1)
    predict = lambda m: np.asarray(m.predict(splits.test.x, batch_size=256, verbose=0), dtype=np.float64)  # noqa: E731
    verdict = gate_verdict(predict(parent), predict(child), splits.test.y, gate_config,
                           params_kept=params_kept, macs_kept=macs_kept,
                           latency_ratio=latency_ratio)
    validation = out_dir / "validation"
    metrics = expectations.validate_gate_metrics(
        {"accuracy_drop_points": verdict.drop_points, "params_kept": params_kept,
         "macs_kept": macs_kept,
         "compressed": min(params_kept, macs_kept),
         **({"latency_ratio": latency_ratio} if latency_ratio else {})},
        max_drop=gate_config.max_drop, compression_target=dict(gate_config.targets) or None,
        max_latency_ratio=gate_config.max_latency_ratio + gate_config.latency_tolerance,
        docs_dir=validation / "data-docs",
    )
    expectations.write_outcome(metrics, validation / "gate.json")
    shutil.copyfile(_verified(check.result), validation / "calibration.json")
    passed = verdict.passed and metrics.success
    report["gate"] = {**verdict.as_dict(), "expectations_success": metrics.success, "passed": passed,
                      "failed_expectations": list(metrics.failed_descriptions),
                      "hints": [h for h in (guard_hint(report, g.latency_batch),) if h]}
    report["lineage"] = _lineage(params, model, data, calibration)

    write_atomic(out_dir / "model.tflite", lambda tmp: tmp.write_bytes(_tflite_bytes(child)))
    markdown = render_markdown(report) + _gate_markdown(report["gate"], gate_config)
    write_report_outputs(out_dir, child, report, markdown, pareto_figure(report))
    files = {key: FileRef.of(out_dir / key) for key in ("model.keras", "model.tflite", "report.md", "pareto.png")}
    files.update(_tree(validation, "validation"))
    files.update(_tree(Path(check.docs_dir), "validation/calibration-docs"))
    files["report.json"] = FileRef.of(out_dir / "report.json")
    summary = {
        "passed": passed, "drop_points": verdict.drop_points, "parent_test_accuracy": verdict.parent_accuracy,
        "child_test_accuracy": verdict.child_accuracy, "params_kept": params_kept,
        "macs_kept": macs_kept, "latency_ratio": latency_ratio, "latency_batch": g.latency_batch,
        "latency_interval": [latency["low"], latency["high"]] if latency else None,
        "parent_params": p_cost.params, "child_params": c_cost.params, "parent_macs": p_cost.macs, "child_macs": c_cost.macs,
        "checks": [asdict(c) for c in verdict.checks],
        "recovery": report.get("recovery", []),
        "hints": report["gate"]["hints"],
    }
    return GateRecord(passed=passed, out_dir=str(out_dir), files=files, summary=json.loads(json.dumps(summary)))


def _kept_choice(searched: SearchRecord, tuned: FinetuneRecord):
    """The search choice whose child the fine-tune step kept (the base one without recovery)."""
    if tuned.kept_max_drop is None or tuned.kept_max_drop == searched.max_drop:
        return searched
    return next(c for c in searched.recovery if c.max_drop == tuned.kept_max_drop)


def guard_hint(report: dict, latency_batch: int) -> Optional[str]:
    """What to do when the latency guard left nothing factorized (``None`` otherwise).

    ``report``: the kept choice's search report (``layers``, ``candidate_counts``, ``latency_guard``).
    At batch 1 per-op overhead can make every factor chain of a small model slower than its
    layer (bench/REPORT.md: the ResNet- and MobileNetV2-style zoo models), and the gate then
    refuses a child that is the parent; the user should learn why, and what would change it.
    """
    if any(r.get("status") == "factorized" for r in report.get("layers", [])):
        return None
    dropped = sum(c.get("dropped_latency", 0) for c in (report.get("candidate_counts") or {}).values())
    reverted = len((report.get("latency_guard") or {}).get("reverted", []))
    if not (dropped or reverted):
        return None
    return (f"Nothing was factorized: timed at batch {latency_batch}, the latency guard dropped {dropped} candidate "
            f"block(s) slower than their layer and sent {reverted} layer(s) back to dense for a child slower than "
            "the parent. If you serve batched, set gate.latency_batch to your batch; "
            + ("search.block_latency_rule: false lets the whole child decide (one chain's extra call can be paid "
               "for by another's saving); " if dropped else "")
            + "otherwise this model has no faster low-rank form on this hardware (search.latency_guard: false "
              "trades latency for size).")


def _tree(root: Path, key_prefix: str) -> dict[str, FileRef]:
    return {f"{key_prefix}/{p.relative_to(root).as_posix()}": FileRef.of(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _gate_markdown(gate: dict, config) -> str:
    verdict = "PASSED" if gate["passed"] else "REJECTED"
    lines = ["", f"## Accuracy gate: {verdict}", "",
             f"Held-out split, {gate['examples']} examples: parent {gate['parent_accuracy']:.2%}, "
             f"compressed {gate['child_accuracy']:.2%}.", "", "| check | value | threshold | result |", "|---|---|---|---|"]
    for c in gate["checks"]:
        value = "—" if c["value"] is None else f"{c['value']:.4g}"
        result = {True: "pass", False: "**FAIL**", None: "not measured"}[c["passed"]]
        lines.append(f"| {c['name']} {c['note']} | {value} | {c['op']} {c['threshold']:g} | {result} |")
    for failed in gate.get("failed_expectations", []):
        lines.append(f"\nGreat Expectations: {failed}")
    for hint in gate.get("hints", []):
        lines.append(f"\n**Hint:** {hint}")
    return "\n".join(lines) + "\n"


def _lineage(params: PipelineParams, model: ModelRecord, data: DataRecord, calibration: CalibrationRecord) -> dict:
    import keras
    import tensorflow as tf

    return {
        "parent_model": {"source": model.source, "sha256": model.file.sha256},
        "data": {"source": data.source, "train_sha256": data.train.sha256, "test_sha256": data.test.sha256},
        "calibration_set_sha256": calibration.calibration.sha256,
        "params": _redacted(params.model_dump(mode="json")),
        "recovery_budgets": list(params.search.resolved_recovery_budgets()),  # what "auto" stood for
        "versions": {"lrflow": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
    }


def _redacted(dumped: dict) -> dict:
    """Parameters for the lineage, with any ``user:password@`` removed from the endpoint URL.

    Credentials belong in the environment; one pasted into a URL must not be published.
    """
    from urllib.parse import urlsplit, urlunsplit

    url = dumped.get("registry", {}).get("endpoint_url")
    if url and "@" in (urlsplit(url).netloc or ""):
        parts = urlsplit(url)
        netloc = "***@" + parts.netloc.rsplit("@", 1)[1]
        dumped = {**dumped, "registry": {**dumped["registry"], "endpoint_url": urlunsplit(parts._replace(netloc=netloc))}}
    return dumped


# -- publish and promote ------------------------------------------------------------------------


def publish(params: PipelineParams, gated: GateRecord) -> PublishRecord:
    """Publish every gate output as an immutable version (manifest last); a failed gate publishes it as rejected.

    The version id is derived from the content, so re-running an identical flow publishes
    nothing new and returns the same version.
    """
    from tasks import registry, s3io

    files = {key: _verified(ref) for key, ref in gated.files.items()}
    report = read_json(files["report.json"])
    version = registry.content_version(files)
    client = _registry_client(params)
    record = registry.publish_version(
        client, params.registry.bucket, params.registry.prefix, params.name, version, files,
        status="passed" if gated.passed else "rejected", gate=gated.summary, lineage=report["lineage"], exist_ok=True,
    )
    return PublishRecord(uri=record.uri, version=record.version, status=record.status, files=len(files))


def promote(params: PipelineParams, published: PublishRecord) -> PromoteRecord:
    """Move the alias to the published version, only if its gate passed."""
    from tasks import registry, s3io

    alias = params.registry.alias
    if published.status != "passed":
        return PromoteRecord(alias=alias, version=None, promoted=False,
                             reason=f"version {published.version} was rejected by the gate; the alias is unchanged")
    if not params.registry.promote:
        return PromoteRecord(alias=alias, version=None, promoted=False, reason="promotion is off (registry.promote)")
    client = _registry_client(params)
    bucket, prefix = params.registry.bucket, params.registry.prefix
    current = registry.find_alias(client, bucket, prefix, params.name, alias)
    if current is not None and current.version == published.version:
        return PromoteRecord(alias=alias, version=published.version, promoted=False,
                             reason=f"{alias} already points at {published.version}")
    registry.promote(client, bucket, prefix, params.name, alias, published.version)
    return PromoteRecord(alias=alias, version=published.version, promoted=True,
                         reason=f"{alias} → {published.version}")
