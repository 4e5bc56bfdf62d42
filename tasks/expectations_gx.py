"""Run a list of checks as one Great Expectations 1.x suite on one pandas frame.

Everything that touches ``great_expectations`` lives here; :mod:`tasks.expectations` says
*what* is checked and how results read, this module only runs them. One call
(:func:`run_checks`) builds its own **ephemeral** Data Context with in-memory stores::

    context ─ pandas data source "lrflow" ─ dataframe asset ─ whole-dataframe batch definition
            ─ ExpectationSuite(checks)    ─ ValidationDefinition(batch definition, suite) ─ run

and, when asked, a local Data Docs site whose ``base_directory`` is the caller's directory.
Nothing is written anywhere else: no ``great_expectations.yml``, no ``gx/`` folder, nothing in
the working directory or the home directory.

Concurrency. A fresh context per call means no GE object (store, suite, data source) is shared
between calls, so suite and data-source names are fixed and readable, not uniquified. GE itself
still has process-wide state: ``gx.get_context`` makes the new context the process's "current"
context, and GE enters ``warnings.catch_warnings`` while it computes metrics, which is not
thread-safe. Every object here is created through its own context's factories, and GE 1.24
resolves such objects through their owning context rather than the current one (GX issue
#12209), but to stay on the safe side the GE part of a call holds one module lock: calls from
Prefect's task threads run their GE part one at a time (about 0.1-0.3 s each; building the frame
happens outside the lock).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import pandas as pd

__all__ = ["Check", "SuiteRun", "run_checks", "DOCS_SITE_NAME"]

logger = logging.getLogger(__name__)

#: Name of the local Data Docs site configured in each ephemeral context.
DOCS_SITE_NAME = "lrflow_local_docs"
#: Meta key that ties a GE result back to the lrflow check that produced it (GE does not
#: return results in the order the expectations were added).
CHECK_META_KEY = "lrflow_check"
#: GE's "SUMMARY" result format: counts plus up to 20 example values per expectation.
RESULT_FORMAT = "SUMMARY"

# GE keeps process-wide state (the current context, warning filters while computing):
# serialise the GE part of concurrent calls. Created at import, but it is only a lock.
_GX_LOCK = threading.Lock()


@dataclass(frozen=True)
class Check:
    """One expectation of a suite and what lrflow says about it.

    Attributes
    ----------
    key : str
        Stable id of the check within its suite (``"all_finite"``), stored in the expectation's
        meta so its result can be found again.
    expectation : str
        GE expectation type, snake_case (``"expect_column_values_to_be_in_set"``).
    kwargs : Mapping
        The expectation's arguments as GE takes them (``column``, ``value_set``, ``min_value`` ...).
    meaning : str
        What passing means, one line ("no image contains NaN or inf"); also the expectation's
        ``description`` in Data Docs.
    advice : str
        What to do when it fails.
    explain : callable, optional
        ``explain(result) -> str``: the observed detail ("3 images contain NaN or inf") from GE's
        ``result`` dict of this expectation. Not used by the runner.
    """

    key: str
    expectation: str
    kwargs: Mapping[str, Any]
    meaning: str
    advice: str = ""
    explain: Optional[Callable[[Mapping[str, Any]], str]] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.expectation.startswith("expect_"):
            raise ValueError(
                f"Check `{self.key}`: expected a GE expectation type such as "
                f"'expect_column_values_to_be_in_set'. Received {self.expectation!r}."
            )

    @property
    def column(self) -> Optional[str]:
        return self.kwargs.get("column")


@dataclass(frozen=True)
class SuiteRun:
    """What one GE run returns, reduced to plain data.

    Attributes
    ----------
    result_json : dict
        The suite validation result, ``ExpectationSuiteValidationResult.to_json_dict()``.
    by_check : dict
        Check key → that expectation's result as a JSON dict (``success``, ``result``,
        ``exception_info`` ...).
    docs_index : Path or None
        ``index.html`` of the Data Docs site, when one was built.
    seconds : float
        Wall time of the GE part (context, run, docs).
    """

    result_json: dict
    by_check: dict
    docs_index: Optional[Path]
    seconds: float


def run_checks(
    frame: pd.DataFrame,
    checks: Sequence[Check],
    *,
    suite_name: str,
    asset_name: str,
    meta: Optional[Mapping[str, Any]] = None,
    docs_dir: Optional[Path] = None,
) -> SuiteRun:
    """Validate ``frame`` against ``checks`` with a fresh ephemeral GE context.

    Parameters
    ----------
    frame : DataFrame
        The whole table is one batch (whole-dataframe batch definition).
    checks : sequence of Check
        Keys must be unique.
    suite_name, asset_name : str
        Shown in Data Docs. Use ``[A-Za-z0-9_]``: GE turns dots into folders.
    meta : mapping, optional
        JSON-friendly values stored on the suite (e.g. the dataset name).
    docs_dir : Path, optional
        Build a local Data Docs site here (created if missing). GE's index builder removes
        pages whose result is not in this context's store, so the site shows this run only:
        give every validation its own directory.

    Returns
    -------
    SuiteRun
    """
    keys = [check.key for check in checks]
    if len(set(keys)) != len(keys):
        raise ValueError(f"Check keys must be unique within a suite. Received {keys}.")
    started = time.perf_counter()
    with _GX_LOCK:
        context = _ephemeral_context(docs_dir)
        batch_definition = (
            context.data_sources.add_pandas(name="lrflow")
            .add_dataframe_asset(name=asset_name)
            .add_batch_definition_whole_dataframe("whole_frame")
        )
        suite = context.suites.add(_suite(suite_name, checks, meta or {}))
        definition = context.validation_definitions.add(
            _validation_definition(suite_name, batch_definition, suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT)
        docs_index = _build_docs(context, docs_dir) if docs_dir is not None else None
    by_check = {
        r.expectation_config.meta[CHECK_META_KEY]: r.to_json_dict() for r in result.results
    }
    seconds = time.perf_counter() - started
    logger.debug("GE suite %s ran in %.2f s", suite_name, seconds)
    return SuiteRun(
        result_json=result.to_json_dict(), by_check=by_check, docs_index=docs_index, seconds=seconds
    )


def _ephemeral_context(docs_dir: Optional[Path]):
    """A context with in-memory stores, no progress bars, no analytics, optional local docs."""
    import great_expectations as gx  # slow import (~2 s): only when a suite runs
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        # init_temp_docs_sites=False: GE's default ephemeral context configures a docs site in
        # a temporary directory; we configure ours only when the caller asks for docs.
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        # tqdm bars on stderr for every metric batch would bury the pipeline's logs.
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    if docs_dir is not None:
        context.add_data_docs_site(DOCS_SITE_NAME, _docs_site_config(Path(docs_dir)))
    return context


def _docs_site_config(docs_dir: Path) -> dict:
    return {
        "class_name": "SiteBuilder",
        # No "get started with GX Cloud" buttons in a pipeline report.
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            # Absolute: GE would resolve a relative path against the context root.
            "base_directory": str(docs_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _suite(name: str, checks: Sequence[Check], meta: Mapping[str, Any]):
    import great_expectations as gx

    return gx.ExpectationSuite(
        name=name, expectations=[_expectation(check) for check in checks], meta=dict(meta)
    )


def _expectation(check: Check):
    """The GE expectation object of ``check``, tagged with the check key."""
    import great_expectations.expectations as gxe

    class_name = "".join(part.capitalize() for part in check.expectation.split("_"))
    expectation_class = getattr(gxe, class_name, None)
    if expectation_class is None:
        raise ValueError(
            f"Check `{check.key}`: great_expectations has no expectation "
            f"`{check.expectation}` (class {class_name})."
        )
    return expectation_class(
        **dict(check.kwargs), meta={CHECK_META_KEY: check.key}, description=check.meaning
    )


def _validation_definition(suite_name: str, batch_definition, suite):
    import great_expectations as gx

    return gx.ValidationDefinition(name=f"{suite_name}_validation", data=batch_definition, suite=suite)


def _build_docs(context, docs_dir: Path) -> Path:
    docs_dir = Path(docs_dir).resolve()
    docs_dir.mkdir(parents=True, exist_ok=True)
    context.build_data_docs(site_names=[DOCS_SITE_NAME])
    index = docs_dir / "index.html"
    if not index.is_file():  # GE logs rendering errors instead of raising them
        raise RuntimeError(f"Great Expectations did not write Data Docs to `{index}`.")
    return index
