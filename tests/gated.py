"""A python-source dataset whose items wait for a gate file: holds a real driver mid-job on purpose.
Ray workers import it from this folder (the driver's PYTHONPATH names it)."""

from __future__ import annotations

import os
import time

import numpy as np


class Gated:
    """``n`` small images (label i % 2) that each wait until ``gate`` exists (at most ``timeout`` s)."""

    classes = ["even", "odd"]

    def __init__(self, n: int, gate: str, timeout: float = 120.0):
        self.n, self.gate, self.timeout = n, gate, timeout

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        return np.full((8, 8, 3), 10 * i, np.uint8), i % 2
