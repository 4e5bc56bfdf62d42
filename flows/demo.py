"""`make demo`: the whole pipeline on the embedded default (digits, moto S3 on loopback, Prefect).

1. Train a small CNN on the bundled digits (the parent a team would already serve).
2. Show the distribution-aware fit: one plan rebuilt with the Σ and the Frobenius objective.
3. Start the embedded S3 (a moto server on 127.0.0.1, ``infra/local``) and run the
   ``compress-model`` Prefect flow: fetch → check data (Great Expectations) → calibrate →
   search → rebuild → fine-tune → gate → publish → promote.
4. Print a summary: parent vs compressed, the gate verdict, S3 URIs, where the report and
   Data Docs are, and how to look at the registry.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from flows.train_parent import train_parent

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
for _key, _value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "false",
                     "PREFECT_HOME": str(Path(".lrflow/prefect").resolve()), "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(_key, _value)

OUT = Path(os.environ.get("LRF_DEMO_OUT", "demo-out"))
DATA = "sklearn:digits"

#: A plan mixing methods; layers not named stay dense (conv1 is too small to gain anything).
PLAN = {
    "conv2": {"method": "tucker2", "rank": [12, 12]},
    "conv3": {"method": "cp", "rank": 24},
    "fc1": {"method": "svd", "rank": 16},
}

#: The pipeline parameters of the demo (written to demo-out/pipeline.yaml for `lrf flow run`).
PIPELINE = {
    "name": "digits-cnn",
    "data": DATA,
    "search": {"max_drop": 1.0},
    "finetune": {"epochs": 3},
    "gate": {"max_drop": 1.0},
    "registry": {"alias": "production"},
}


def _run(argv: list[str]) -> None:
    from flows.cli import main

    print(f"\n$ lrf {shlex.join(argv)}", flush=True)
    status = main(argv)
    if status != 0:
        sys.exit(status)


def sigma_vs_frobenius(parent_path: Path) -> None:
    from lrf_core.data import load_dataset
    from lrf_core.model_io import load_model
    from lrf_core.zoo import accuracy

    (OUT / "plan.json").write_text(json.dumps(PLAN, indent=2) + "\n")
    print(f"\nOne hand-written plan ({json.dumps(PLAN)}), fitted two ways, no fine-tuning:")
    for objective in ("sigma", "frobenius"):
        _run(["rebuild", str(parent_path), "--plan", str(OUT / "plan.json"), "--data", DATA, "--objective", objective,
              "--out", str(OUT / f"compressed-{objective}.keras"), "--report", str(OUT / f"report-{objective}.json")])
    test = load_dataset(DATA, split="test")
    base = accuracy(load_model(parent_path), test)
    for objective in ("sigma", "frobenius"):
        acc = accuracy(load_model(OUT / f"compressed-{objective}.keras"), test)
        print(f"  {objective:<10} fit: held-out accuracy {acc:.2%} (drop {100 * (base - acc):.2f} points)")


def start_s3() -> str:
    from tasks import local_s3, s3io

    handle = local_s3.start_server(port=local_s3.port_from_env(), state_dir=local_s3.state_dir_from_env())
    os.environ.update(local_s3.server_env(handle))
    bucket = os.environ.get("LRF_REGISTRY_BUCKET", local_s3.DEFAULT_BUCKET)
    s3io.ensure_bucket(s3io.s3_client(handle.endpoint_url), bucket)
    print(f"\nEmbedded S3: moto server at {handle.endpoint_url} (pid {handle.pid}), registry bucket `{bucket}`")
    return bucket


def run_pipeline(parent_path: Path, bucket: str) -> dict:
    import logging

    import yaml

    from flows.flow_cli import print_result
    from flows.pipeline import compress_model
    from tasks.params import params_from_mapping

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    config = {**PIPELINE, "model": str(parent_path), "workspace": str(OUT / "work"),
              "registry": {**PIPELINE["registry"], "bucket": bucket}}
    params = params_from_mapping(config)
    (OUT / "pipeline.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    print(f"Running the compress-model Prefect flow (parameters: {OUT / 'pipeline.yaml'}) ...", flush=True)
    result = compress_model(params)
    print()
    print_result(result)
    return result


def main() -> None:
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    parent_path = train_parent(OUT / "parent.keras")
    sigma_vs_frobenius(parent_path)
    bucket = start_s3()
    result = run_pipeline(parent_path, bucket)
    print("\nLook around (the embedded S3 keeps running; `source .venv/bin/activate` puts lrf on PATH):")
    print('  eval "$(infra/local/s3.sh env)"                    # point this shell at the embedded S3')
    print(f"  lrf registry list --bucket {bucket}                # models, versions, aliases")
    print(f"  lrf registry show {result['name']} @production --bucket {bucket}")
    print(f"  lrf flow run {OUT / 'pipeline.yaml'}                # run again: finished steps are cached")
    print("  infra/local/s3.sh stop                             # stop it (moto keeps data in memory)")
    print(f"Demo finished in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
