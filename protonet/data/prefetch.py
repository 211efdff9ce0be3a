"""A background thread that fills batch buffers ahead of the net (Caffe's prefetch).

Buffers cycle between a free queue and a full queue, so nothing is allocated per batch. The
thread is a daemon and stops when `close` is called (or the object is collected), so a process
never hangs at exit.
"""
from __future__ import annotations

import queue
import threading
import weakref
from typing import Callable


class Prefetcher:
    """Calls `produce(buffer)` on a thread for each free buffer; `get` hands full ones out."""

    def __init__(self, produce: Callable, buffers: list, name: str = "prefetch") -> None:
        self._produce = produce
        self._free: queue.Queue = queue.Queue()
        self._full: queue.Queue = queue.Queue()
        for b in buffers:
            self._free.put(b)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        weakref.finalize(self, Prefetcher._shutdown, self._stop, self._free)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                buffer = self._free.get(timeout=0.1)
            except queue.Empty:
                continue
            if buffer is None:
                return
            try:
                self._produce(buffer)
            except BaseException as e:  # handed to the consumer, raised in its thread
                self._error = e
                self._full.put(None)
                return
            self._full.put(buffer)

    def get(self):
        """The next full buffer (blocks until the thread has one)."""
        while True:
            try:
                buffer = self._full.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive() and self._full.empty():
                    raise RuntimeError("the prefetch thread stopped") from self._error
                continue
            if buffer is None:
                raise self._error  # type: ignore[misc]
            return buffer

    def release(self, buffer) -> None:
        """Give a consumed buffer back for refilling."""
        self._free.put(buffer)

    def close(self) -> list:
        """Stop the thread; return every buffer (full ones first, in order) for reuse."""
        Prefetcher._shutdown(self._stop, self._free)
        self._thread.join(timeout=10)
        left = []
        while not self._full.empty():
            b = self._full.get()
            if b is not None:
                left.append(b)
        while not self._free.empty():
            b = self._free.get()
            if b is not None:
                left.append(b)
        return left

    @staticmethod
    def _shutdown(stop: threading.Event, free: queue.Queue) -> None:
        stop.set()
        free.put(None)
