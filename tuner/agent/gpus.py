"""Which GPUs this machine offers: nvidia-smi, else CUDA_VISIBLE_DEVICES, else none."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from tuner.errors import ConfigError

log = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = ("--query-gpu=index,name,memory.total", "--format=csv,noheader")


@dataclass(frozen=True)
class Gpu:
    """One device: ``index`` is what goes into ``CUDA_VISIBLE_DEVICES``."""

    index: str
    name: str = ""
    memory: str = ""

    def describe(self) -> str:
        extra = ", ".join(part for part in (self.name, self.memory) if part)
        return f"{self.index}: {extra}" if extra else self.index


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """``0, NVIDIA H100 80GB HBM3, 81559 MiB`` lines into GPUs."""
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if parts and parts[0].isdigit():
            gpus.append(
                Gpu(
                    parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""
                )
            )
    return gpus


def query_nvidia_smi() -> list[Gpu] | None:
    """The GPUs nvidia-smi lists; None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("event=nvidia_smi_failed error=%r", exc)
        return None
    if done.returncode != 0:
        log.info("event=nvidia_smi_failed rc=%d stderr=%r", done.returncode, done.stderr[-300:])
        return None
    return parse_nvidia_smi(done.stdout)


def from_cuda_visible_devices(env: Mapping[str, str]) -> list[Gpu] | None:
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if not ids or ids[0] in ("-1", "NoDevFiles"):
        return []
    return [Gpu(i) for i in ids]


def detect_gpus(spec: str, env: Mapping[str, str] | None = None) -> list[Gpu]:
    """The GPUs to use for ``--gpus spec``: ``all`` (detect), ``none``, or ``0,1``.

    Raises:
        ConfigError: ``spec`` is none of these.
    """
    env = os.environ if env is None else env
    spec = spec.strip().lower()
    if spec in ("none", "", "cpu"):
        return []
    if spec in ("all", "auto"):
        found = query_nvidia_smi()
        if found is None:
            found = from_cuda_visible_devices(env)
        return found or []
    ids = [part.strip() for part in spec.split(",") if part.strip()]
    if not ids or not all(i.isdigit() or i.startswith("GPU-") for i in ids):
        raise ConfigError(
            f"--gpus is {spec!r}, but must be 'all', 'none' or a list of indices like '0,1'"
        )
    known = {gpu.index: gpu for gpu in query_nvidia_smi() or []}
    return [known.get(i, Gpu(i)) for i in ids]
