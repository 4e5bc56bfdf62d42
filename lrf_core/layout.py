"""Kernel and patch layout: the one place that fixes the flattening order.

METHODS.md (conventions): a Keras Conv2D kernel ``(kh, kw, S, T)`` is the matrix
``W ∈ R^{T×D}``, ``D = kh·kw·S``, obtained by transposing to ``(T, kh, kw, S)``
and flattening, so the column index is ``d = (h·kw + w)·S + s``. The im2col patch
``x ∈ R^D`` of an output position uses the same order, hence the layer output
before bias is exactly ``W @ x``. A Dense kernel ``(m, n)`` is ``W = kernelᵀ``.

Functions come in inverse pairs (``kernel_to_matrix`` / ``matrix_to_kernel``).
"""

from __future__ import annotations

import math

import numpy as np

from lrf_core.errors import LRFError

__all__ = [
    "kernel_to_matrix",
    "matrix_to_kernel",
    "conv_output_length",
    "same_padding",
    "extract_patches",
]


def kernel_to_matrix(kernel: np.ndarray) -> np.ndarray:
    """Keras kernel → matrix ``W``.

    Parameters
    ----------
    kernel : ndarray, shape ``(kh, kw, S, T)`` (Conv2D) or ``(m, n)`` (Dense)

    Returns
    -------
    W : ndarray, shape ``(T, kh·kw·S)`` or ``(n, m)``
    """
    kernel = np.asarray(kernel)
    if kernel.ndim == 4:
        kh, kw, s, t = kernel.shape
        return kernel.transpose(3, 0, 1, 2).reshape(t, kh * kw * s)
    if kernel.ndim == 2:
        return kernel.T
    raise LRFError(
        f"Expected a Conv2D kernel (kh, kw, S, T) or a Dense kernel (m, n). "
        f"Received an array of shape {kernel.shape}."
    )


def matrix_to_kernel(matrix: np.ndarray, kernel_shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`kernel_to_matrix` for a kernel of shape ``kernel_shape``."""
    matrix = np.asarray(matrix)
    if len(kernel_shape) == 4:
        kh, kw, s, t = kernel_shape
        if matrix.shape != (t, kh * kw * s):
            raise LRFError(
                f"Expected a matrix of shape {(t, kh * kw * s)} for kernel shape "
                f"{tuple(kernel_shape)}. Received {matrix.shape}."
            )
        return matrix.reshape(t, kh, kw, s).transpose(1, 2, 3, 0)
    if len(kernel_shape) == 2:
        m, n = kernel_shape
        if matrix.shape != (n, m):
            raise LRFError(f"Expected a matrix of shape {(n, m)}. Received {matrix.shape}.")
        return matrix.T
    raise LRFError(f"Unsupported kernel shape {tuple(kernel_shape)}.")


def conv_output_length(length: int, kernel: int, stride: int, padding: str, dilation: int = 1) -> int:
    """Output length of a convolution along one axis, as Keras/TF compute it."""
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return math.ceil(length / stride)
    if padding == "valid":
        return max(0, math.ceil((length - effective + 1) / stride))
    raise LRFError(f"Unsupported padding {padding!r}: expected 'same' or 'valid'.")


def same_padding(length: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) zero padding of TF's ``SAME`` along one axis (extra goes after)."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(length / stride)
    total = max((out - 1) * stride + effective - length, 0)
    return total // 2, total - total // 2


def extract_patches(
    images: np.ndarray,
    kernel_size: tuple[int, int],
    *,
    strides: tuple[int, int] = (1, 1),
    padding: str = "valid",
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """im2col: the input patch of every output position, flattened in ``W``'s column order.

    Parameters
    ----------
    images : ndarray, shape ``(N, H, W, S)`` (channels last)
    kernel_size, strides, dilation : pairs ``(along H, along W)``
    padding : ``"same"`` (zero padding exactly as TF) or ``"valid"``

    Returns
    -------
    patches : ndarray, shape ``(N, H', W', kh·kw·S)``; for a Conv2D with kernel ``K``,
        ``patches @ kernel_to_matrix(K).T`` equals the convolution output without bias.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise LRFError(f"Expected images of shape (N, H, W, S). Received {images.shape}.")
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    n, h, w, s = images.shape
    if padding == "same":
        pad_h, pad_w = same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw)
        images = np.pad(images, ((0, 0), pad_h, pad_w, (0, 0)))
    elif padding != "valid":
        raise LRFError(f"Unsupported padding {padding!r}: expected 'same' or 'valid'.")
    out_h = conv_output_length(h, kh, sh, padding, dh)
    out_w = conv_output_length(w, kw, sw, padding, dw)
    eff_h, eff_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    # windows: (N, H'', W'', S, eff_h, eff_w) as strided views, no copy until the final reshape
    windows = np.lib.stride_tricks.sliding_window_view(images, (eff_h, eff_w), axis=(1, 2))
    windows = windows[:, : (out_h - 1) * sh + 1 : sh, : (out_w - 1) * sw + 1 : sw, :, ::dh, ::dw]
    # → (N, H', W', kh, kw, S): the (h, w, s) order of the kernel matrix
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n, out_h, out_w, kh * kw * s)
