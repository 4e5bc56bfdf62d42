"""Benchmark: fit time and Σ-error of every method, plain vs Σ, on two large layers.

Layers: a 3×3×256×256 Conv2D (D = 2304) and a 4096×1024 Dense, three ranks per method.
Kernels and Σ are synthetic but structured like trained layers, since a random Gaussian
kernel has a flat spectrum and a white Σ makes both objectives identical:

* kernel: ``W = U diag(s) Vᵀ`` with ``s_i ∝ i^{-0.8}``;
* Σ (Conv2D): ``Σ = P ⊗ C``, with ``P`` the 9×9 exponential spatial correlation
  (ρ = 0.7 per pixel) of the 3×3 patch and ``C`` a channel covariance with spectrum
  ``∝ i^{-1.5}``; the Kronecker order matches the layout's ``(h, w, s)`` patch order;
* Σ (Dense): spectrum ``∝ i^{-1.5}`` in a random basis.

Writes ``bench/results/decompose.json`` (machine info and versions included) and prints a table.
Usage: ``python bench/decompose.py [--quick]`` (``--quick``: one rank per method).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from lrf_core import __version__  # noqa: E402
from lrf_core.covariance import covariance_factor, relative_frobenius_error, relative_sigma_error  # noqa: E402
from lrf_core.decompose.registry import METHODS  # noqa: E402
from lrf_core.layout import kernel_to_matrix, matrix_to_kernel  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "decompose.json"

RANKS = {
    ("conv2d", "svd"): [(32,), (64,), (128,)],
    ("conv2d", "tucker2"): [(32, 32), (64, 64), (128, 128)],
    ("conv2d", "cp"): [(64,), (128,), (256,)],
    ("conv2d", "spatial"): [(64,), (128,), (256,)],
    ("dense", "svd"): [(64,), (128,), (256,)],
    ("dense", "tt"): [(8, 8), (16, 16), (32, 32)],
    ("dense", "tucker"): [(16, 16, 8, 8), (32, 32, 16, 16), (48, 48, 24, 24)],
}


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def _structured_matrix(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    k = min(rows, cols)
    u, _ = np.linalg.qr(rng.normal(size=(rows, k)))
    v, _ = np.linalg.qr(rng.normal(size=(cols, k)))
    s = np.arange(1, k + 1, dtype=np.float64) ** -0.8
    return (u * s) @ v.T


def _spectrum_cov(n: int, rng: np.random.Generator, power: float = 1.5) -> np.ndarray:
    q = _orthogonal(n, rng)
    return (q * np.arange(1, n + 1, dtype=np.float64) ** -power) @ q.T


def conv_case(rng: np.random.Generator):
    kh = kw = 3
    s = t = 256
    w = _structured_matrix(t, kh * kw * s, rng)
    kernel = matrix_to_kernel(w, (kh, kw, s, t))
    coords = np.array([(h, x) for h in range(kh) for x in range(kw)], dtype=np.float64)
    dist = np.abs(coords[:, None, :] - coords[None, :, :]).sum(-1)
    spatial = 0.7**dist
    sigma = np.kron(spatial, _spectrum_cov(s, rng))
    return kernel, sigma


def dense_case(rng: np.random.Generator):
    m, n = 4096, 1024
    kernel = _structured_matrix(n, m, rng).T
    return kernel, _spectrum_cov(m, rng)


def _machine() -> dict:
    import keras
    import scipy
    import tensorly

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "tensorly": tensorly.__version__,
        "keras": keras.__version__,
        "lrflow": __version__,
    }


def run(quick: bool) -> dict:
    rng = np.random.default_rng(0)
    cases = {"conv2d": ("conv 3x3x256x256", *conv_case(rng)), "dense": ("dense 4096x1024", *dense_case(rng))}
    rows = []
    for kind, (label, kernel, sigma_matrix) in cases.items():
        started = time.perf_counter()
        sigma = covariance_factor(sigma_matrix)
        cholesky_s = time.perf_counter() - started
        w = kernel_to_matrix(kernel)
        for method in (m for m in METHODS if m.kind == kind):
            ranks = RANKS.get((kind, method.id), [])
            for rank in ranks[1:2] if quick else ranks:
                for objective in ("frobenius", "sigma") if method.supports_sigma else ("frobenius",):
                    started = time.perf_counter()
                    fact = method.fit(kernel, rank, sigma=sigma if objective == "sigma" else None)
                    seconds = time.perf_counter() - started
                    w_approx = kernel_to_matrix(method.reconstruct(fact))
                    row = {
                        "layer": label, "method": method.id, "rank": list(rank), "objective": objective,
                        "seconds": round(seconds, 3), "sweeps": len(fact.history),
                        "sigma_error": relative_sigma_error(w, w_approx, sigma),
                        "frobenius_error": relative_frobenius_error(w, w_approx),
                        "params_kept": _params_kept(method, kernel, rank),
                    }
                    rows.append(row)
                    print(f"{label:<18}{method.id:<9}{str(tuple(rank)):<18}{objective:<10}"
                          f"{seconds:>8.2f}s  Σ-err {row['sigma_error']:.4f}  F-err {row['frobenius_error']:.4f}"
                          f"  params kept {row['params_kept']:.3f}", flush=True)
        rows.append({"layer": label, "method": "cholesky(Σ)", "seconds": round(cholesky_s, 3)})
    return {"benchmark": "decompose", "machine": _machine(), "quick": quick, "results": rows}


def _params_kept(method, kernel, rank) -> float:
    from lrf_core.decompose.base import LayerGeometry

    kind = "conv2d" if kernel.ndim == 4 else "dense"
    geometry = LayerGeometry(kind=kind, kernel_shape=kernel.shape, use_bias=False)
    return method.cost(geometry, rank).params / geometry.dense_cost().params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one rank per method")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
