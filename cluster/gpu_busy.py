"""How busy the GPU is while something runs: ``nvidia-smi``'s utilisation sampled in the background.

``utilization.gpu`` is the share of the last sample period in which at least one kernel ran. The busy
fraction is its mean from the first sample in which the GPU was busy to the last, so start-up before the
first kernel and shutdown after the last do not count; waits in between do.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

import torch

__all__ = ["GpuBusySampler"]


class GpuBusySampler:
    """A context manager: ``nvidia-smi -lms INTERVAL`` runs while the block runs, reading the utilisation of
    GPUs ``0 .. gpus - 1`` (as nvidia-smi numbers them); ``busy_fraction`` is ``None`` where there is no
    CUDA device or no ``nvidia-smi``."""

    def __init__(self, gpus: int = 1, interval_ms: int = 100):
        self.gpus, self.interval_ms = gpus, interval_ms
        self.samples: list[float] = []  # mean utilisation over the sampled GPUs, in [0, 1]
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "GpuBusySampler":
        binary = shutil.which("nvidia-smi")
        if binary is None or not torch.cuda.is_available():
            return self
        ids = ",".join(str(i) for i in range(self.gpus))
        self._proc = subprocess.Popen(
            [
                binary,
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                "-i",
                ids,
                "-lms",
                str(self.interval_ms),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        row: list[float] = []
        assert self._proc is not None and self._proc.stdout is not None  # started by __enter__ before this thread
        for line in self._proc.stdout:
            try:
                row.append(float(line.strip()) / 100.0)
            except ValueError:
                continue
            if len(row) == self.gpus:  # one line per GPU per sample
                self.samples.append(sum(row) / len(row))
                row = []

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)

    def busy_fraction(self) -> float | None:
        """Mean utilisation from the first busy sample to the last; ``None`` when nothing was sampled."""
        if self._proc is None:
            return None
        busy = [i for i, s in enumerate(self.samples) if s > 0]
        if not busy:
            return 0.0
        window = self.samples[busy[0] : busy[-1] + 1]
        return round(sum(window) / len(window), 3)
