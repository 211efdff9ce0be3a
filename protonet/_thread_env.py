"""Thread settings that must be in place before numpy (OpenBLAS) and numba's OpenMP pool load.

protonet runs BLAS (GEMMs) and numba loops (im2col, pooling) one after the other on the same
cores. That only works well if each pool gives its cores back as soon as its work ends instead
of spinning, so protonet turns spinning down, unless the user already chose:
- OPENBLAS_THREAD_TIMEOUT=4: OpenBLAS threads sleep after about 2^4 idle cycles.
- OMP_WAIT_POLICY=PASSIVE: numba's OpenMP threads sleep when they are idle.
OpenBLAS reads its variable only when it loads. If numpy was imported before protonet, the
setting comes too late. In that case BLAS_YIELDS is False and numba keeps to one thread (see
kernels/_jit.configure_threads).
"""
import os
import sys

BLAS_YIELDS = "numpy" not in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in os.environ
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
