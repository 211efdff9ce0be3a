"""Where protonet runs, under pycaffe's process-level names.

protonet runs on the CPU only. pycaffe scripts written for a GPU call `set_mode_gpu()` and
`set_device(n)` before building nets; those calls say once in the log that the CPU is used and
the script goes on. NCCL (multi-GPU gradient exchange) is never available: `has_nccl()` is
False and `NCCL(solver, uid)` builds an object that does nothing, as in a Caffe built
without NCCL, unless the process is one rank of several (data-parallel over MPI).
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger("protonet")


def set_mode_cpu() -> None:
    """pycaffe's set_mode_cpu: protonet always runs on the CPU, so nothing changes."""


def set_mode_gpu() -> None:
    """pycaffe's set_mode_gpu: logs that protonet runs on the CPU and goes on."""
    log.info("set_mode_gpu: protonet has no GPU mode; running on the CPU")


def set_device(device_id: int) -> None:
    """pycaffe's set_device: logs that protonet runs on the CPU and goes on."""
    log.info("set_device(%d): protonet has no GPU devices; running on the CPU", int(device_id))


def has_nccl() -> bool:
    """pycaffe's has_nccl: False, as in a Caffe built without NCCL."""
    return False


class NCCL:
    """pycaffe's NCCL class as a Caffe built without NCCL has it: constructible, no methods.
    In a process that is one of several solvers (set_solver_count(K > 1), as under mpirun)
    NCCL(solver, uid) is protonet.parallel.mpi.MPISync instead: the same calls (bcast(),
    add_callback, after_backward) exchange gradients over MPI."""

    def __new__(cls, solver, uid=None):
        from .parallel import solver_count
        if solver_count() > 1:
            from .parallel.mpi import MPISync
            return MPISync(solver, uid)
        return super().__new__(cls)

    def __init__(self, solver, uid=None) -> None:
        self.solver = solver
        self.uid = uid

    @staticmethod
    def new_uid() -> str:
        """pycaffe's NCCL.new_uid(): a session id (MPI needs none)."""
        return ""


class Timer:
    """pycaffe's Timer: start(), stop(), and `ms`, the milliseconds between them (or up to
    now while running)."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._elapsed = 0.0

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        if self._start is not None:
            self._elapsed = time.perf_counter() - self._start
            self._start = None

    @property
    def ms(self) -> float:
        if self._start is not None:
            return (time.perf_counter() - self._start) * 1e3
        return self._elapsed * 1e3


def init_log(level: int = 0, stderr: bool = True) -> None:
    """pycaffe's init_log(level): glog-style lines on stderr from glog severity `level` up
    (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL)."""
    from .logs import configure
    configure(level=(logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
              [min(max(int(level), 0), 3)])


def log_info(message: str) -> None:
    """pycaffe's caffe.log(s): one INFO line in protonet's log."""
    log.info("%s", message)
