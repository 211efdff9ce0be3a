"""Caffe-style (glog) log lines, so Caffe's tools/extra/parse_log.py reads protonet's logs:

    I1122 15:16:21.123456  4242 solver.py:187] Iteration 100, lr = 0.00992565
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from .errors import OutputError


class GlogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        micros = int((record.created % 1) * 1e6)
        prefix = (f"{record.levelname[0]}{t.tm_mon:02d}{t.tm_mday:02d} "
                  f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros:06d} "
                  f"{record.process:5d} {record.filename}:{record.lineno}] ")
        return prefix + record.getMessage()


def configure(stream=None, level: int = logging.INFO, logfile=None) -> None:
    """Send the "protonet" logger's records to `stream` (stderr, as glog) and `logfile`."""
    logger = logging.getLogger("protonet")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(GlogFormatter())
    logger.addHandler(handler)
    if logfile:
        try:
            Path(logfile).parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(logfile)
        except OSError as e:
            raise OutputError(f"cannot write log file {logfile} ({e.strerror or e})") from None
        file_handler.setFormatter(GlogFormatter())
        logger.addHandler(file_handler)
    logger.propagate = False
