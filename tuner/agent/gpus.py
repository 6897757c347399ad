"""Which GPUs this machine offers: nvidia-smi, else CUDA_VISIBLE_DEVICES, else none."""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.errors import ConfigError

log = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = ("--query-gpu=index,name,memory.total", "--format=csv,noheader")
#: Per-GPU use now: ``0, NVIDIA H100 80GB HBM3, 37, 1423, 81559`` (%, MiB, MiB).
NVIDIA_SMI_STATS = (
    "--query-gpu=index,name,utilization.gpu,memory.used,memory.total",
    "--format=csv,noheader,nounits",
)


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


def _number(text: str) -> float | None:
    """``37`` or ``1423.5``; None for ``[N/A]``, ``[Not Supported]`` and the like."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_gpu_stats(text: str) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total
    --format=csv,noheader,nounits`` lines into ``GpuStat`` dicts (a value it cannot read is
    None). The name may itself hold commas: the numbers are the last three fields."""
    stats = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        used, total = _number(parts[-2]), _number(parts[-1])
        utilization = _number(parts[-3])
        stats.append({
            "index": int(parts[0]),
            "name": ", ".join(parts[1:-3])[:200],
            "utilization": None if utilization is None else min(utilization, 100.0),
            "memory_used_mb": used,
            "memory_total_mb": total,
        })
    return stats


def _run_nvidia_smi(args: Sequence[str], timeout_s: float = 20.0) -> str | None:
    """nvidia-smi's output; None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("event=nvidia_smi_failed error=%r", exc)
        return None
    if done.returncode != 0:
        log.info("event=nvidia_smi_failed rc=%d stderr=%r", done.returncode, done.stderr[-300:])
        return None
    return done.stdout


def query_nvidia_smi() -> list[Gpu] | None:
    """The GPUs nvidia-smi lists; None when it is missing or fails."""
    out = _run_nvidia_smi(NVIDIA_SMI_QUERY)
    return None if out is None else parse_nvidia_smi(out)


def read_gpu_stats(gpus: Sequence[Gpu]) -> list[dict[str, Any]] | None:
    """Use and memory of the agent's ``gpus`` now (every GPU when they are not named by
    index); None when nvidia-smi is missing or fails (unknown), [] for an agent without GPUs
    on a machine that has nvidia-smi."""
    out = _run_nvidia_smi(NVIDIA_SMI_STATS, timeout_s=10.0)
    if out is None:
        return None
    stats = parse_gpu_stats(out)
    mine = {gpu.index for gpu in gpus}
    if all(index.isdigit() for index in mine):
        stats = [s for s in stats if str(s["index"]) in mine]
    return stats


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
