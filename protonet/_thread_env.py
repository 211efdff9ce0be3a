"""Settings for numba's OpenMP thread pool, made before it starts (at the first parallel
kernel, so this works whatever the user imported first):
OMP_WAIT_POLICY=PASSIVE, so numba's idle threads sleep instead of spinning on cores that
BLAS GEMMs on protonet's own threads (kernels/threads.py) and other programs need.
Unless the user already chose.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
