"""Numba kernels: plain loops over arrays, `out` written in place. No protobuf, no Blob, no
validation (layers validate); every kernel is compiled through `_jit.jit`."""
