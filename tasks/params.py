"""Every knob of the pipeline, as one validated pydantic model.

The same model is the Prefect flow's parameter form (the UI renders it), the schema of
`lrf flow run CONFIG.yaml`, and the layout of the DVC ``params.yaml`` (so
``dvc exp run -S search.target_macs=0.3`` sets ``PipelineParams.search.target_macs``).
Unknown keys are errors, never silently ignored: a typo in a gate threshold must not
publish a model under the default threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lrf_core.errors import PlanError
from lrf_core.search.budgets import resolve_recovery_budgets
from lrf_core.search.latency_rule import check_block_latency_rule

__all__ = ["LATENCY_BATCH_MAX", "LATENCY_THREADS_MAX", "PipelineParams", "load_params", "params_from_mapping"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationParams(_Section):
    size: int = Field(256, ge=8, description="calibration examples, stratified by class (from the training split)")
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="share of the training split kept for validation")
    min_per_class: int = Field(5, ge=1, description="every class must have at least this many calibration examples")
    max_duplicate_fraction: float = Field(0.05, ge=0, le=1, description="largest share of exact duplicate images")
    value_range: tuple[float, float] = Field((0.0, 1.0), description="inputs must lie in [low, high]")


class SearchParams(_Section):
    target_params: Optional[float] = Field(None, gt=0, le=1, description="fraction of parameters to keep")
    target_macs: Optional[float] = Field(None, gt=0, le=1, description="fraction of MACs to keep")
    max_drop: Optional[float] = Field(None, ge=0, description="accuracy budget (points) the search aims for")
    methods_conv: tuple[str, ...] = ("svd", "tucker2", "cp", "spatial")
    methods_dense: tuple[str, ...] = ("svd", "tt", "tucker")
    selection: Literal["layerwise", "sequential"] = "layerwise"
    refit: bool = False
    similarity: Literal["cka", "cosine", "mse"] = "cka"
    objective: Literal["sigma", "frobenius"] = "sigma"
    grid_points: int = Field(12, ge=2)
    skip_layers: tuple[str, ...] = ()
    latency_guard: bool = Field(True, description="never choose a block measured slower than the dense layer")
    block_latency_rule: bool = Field(True, description="with the guard: drop each block timed slower than its dense "
                                                       "layer; false leaves the whole child, timed against the parent, "
                                                       "as the only judge")
    recovery_budgets: Union[Literal["auto"], tuple[float, ...]] = Field(
        "auto", description="larger budgets (points, before the fine-tune) chosen too and fine-tuned first; the first "
                            "child whose validation drop after the fine-tune is within max_drop is kept. \"auto\": "
                            "those of 8, 4, 2 larger than max_drop when only max_drop is set, else none; [] for none "
                            "(lrf_core/search/budgets.py)")

    @field_validator("recovery_budgets", mode="before")
    @classmethod
    def _auto_or_list(cls, value):
        if value is None or (isinstance(value, str) and value != "auto"):  # else pydantic lists both members' complaints
            raise ValueError(f'"auto" or a list of budgets in points (e.g. [4, 2]; [] for none), not {value!r}')
        return value

    @model_validator(mode="after")
    def _has_target(self) -> "SearchParams":
        if self.target_params is None and self.target_macs is None and self.max_drop is None:
            raise ValueError("set at least one of target_params, target_macs, max_drop")
        self.resolved_recovery_budgets()  # an explicit list that cannot be tried is refused here
        check_block_latency_rule(self.block_latency_rule, uses_latency=self.latency_guard)
        return self

    def resolved_recovery_budgets(self) -> tuple[float, ...]:
        """The recovery budgets tried, largest first (``"auto"`` resolved; see :func:`resolve_recovery_budgets`)."""
        return resolve_recovery_budgets(self.recovery_budgets, max_drop=self.max_drop,
                                        cost_targets=self.target_params is not None or self.target_macs is not None,
                                        rank_rule=False, selection=self.selection)


class FinetuneParams(_Section):
    epochs: int = Field(2, ge=0)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    distill: bool = False


#: Largest serving batch and intra-op thread count latency may be timed at (also ``lrf compress``'s bounds).
LATENCY_BATCH_MAX = 4096
LATENCY_THREADS_MAX = 1024


class GateParams(_Section):
    max_drop: float = Field(1.0, ge=0, description="largest top-1 drop (points) on the held-out split")
    tolerance: float = Field(0.5, ge=0, description="the bootstrap bound is max_drop + tolerance")
    confidence: float = Field(0.95, ge=0.5, lt=1)
    bootstrap_samples: int = Field(2000, ge=100)
    max_latency_ratio: float = Field(1.0, gt=0, description="child latency / parent latency")
    latency_tolerance: float = Field(0.05, ge=0, description="timing noise allowed on top of max_latency_ratio")
    measure_latency: bool = True
    latency_batch: int = Field(1, ge=1, le=LATENCY_BATCH_MAX,
                               description="batch size latency is timed at, for this check and the search's "
                                           "latency guard: set your serving batch")
    latency_threads: Optional[int] = Field(None, ge=1, le=LATENCY_THREADS_MAX,
                                           description="intra-op threads latency is timed with (a worker process): "
                                                       "set your serving thread count; null = this process's default")


class RegistryParams(_Section):
    bucket: str = Field("lrflow", min_length=3, description="registry bucket (LRF_REGISTRY_BUCKET in infra/local)")
    prefix: str = "lrflow"
    alias: str = Field("production", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    promote: bool = True
    endpoint_url: Optional[str] = Field(None, description="S3 endpoint; default: AWS_ENDPOINT_URL, else AWS")
    credentials_block: Optional[str] = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="name of a Prefect AwsCredentials block; default: the environment (AWS_* variables, profile, role)")


class PipelineParams(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", description="model name in the registry")
    model: str = Field(..., description="parent model: a path, s3://BUCKET/KEY or registry:NAME@ALIAS")
    data: str = Field("sklearn:digits", description="sklearn:digits | idx:DIR | npz:PATH | keras:NAME")
    seed: int = 0
    allow_unsafe_model: bool = Field(False, description="load models with Lambda layers (only from trusted files)")
    workspace: str = Field(".lrflow/work", description="local directory for step outputs (cached by content)")
    calibration: CalibrationParams = CalibrationParams()
    search: SearchParams = SearchParams(max_drop=1.0)
    finetune: FinetuneParams = FinetuneParams()
    gate: GateParams = GateParams()
    registry: RegistryParams = RegistryParams()

    @field_validator("workspace")
    @classmethod
    def _workspace(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("workspace must name a directory")
        return value


def _format_errors(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key `{where}` (check the spelling; allowed keys are in tasks/params.py)")
        else:
            lines.append(f"`{where}`: {e['msg'].rstrip('.')}")
    return "; ".join(lines)


def params_from_mapping(data: object, *, source: str = "parameters") -> PipelineParams:
    """Validate a mapping (YAML, Prefect form, DVC params) into :class:`PipelineParams`."""
    if not isinstance(data, dict):
        raise PlanError(f"{source}: expected a mapping of pipeline parameters, got {type(data).__name__}.")
    try:
        return PipelineParams.model_validate(data)
    except ValidationError as exc:
        raise PlanError(f"{source}: {_format_errors(exc)}.") from None


def load_params(path: str | Path, *, section: Optional[str] = None) -> PipelineParams:
    """Read a YAML file (optionally one top-level ``section`` of it) into :class:`PipelineParams`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"Parameters file `{path}` does not exist.") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"Parameters file `{path}` is not valid YAML: {exc}.") from None
    if section is not None:
        data = (data or {}).get(section) if isinstance(data, dict) else data
    return params_from_mapping(data, source=str(path))
