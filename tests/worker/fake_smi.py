"""A stand-in ``nvidia-smi``: a shell script on PATH that prints what the real one prints
on a machine with two H100s (one busy) and a MIG-mode A100, so that the agent's real
subprocess path runs where no GPU is."""

from __future__ import annotations

import stat
from pathlib import Path

#: ``nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total
#: --format=csv,noheader,nounits`` on a machine with two H100s (one busy) and a MIG-mode A100,
#: which reports its utilisation as ``[N/A]``.
SMI_STATS = """\
0, NVIDIA H100 80GB HBM3, 97, 70123, 81559
1, NVIDIA H100 80GB HBM3, 0, 4, 81559
2, NVIDIA A100-SXM4-40GB, [N/A], 1543, 40960
"""
#: ``nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader`` on the same one.
SMI_LIST = """\
0, NVIDIA H100 80GB HBM3, 81559 MiB
1, NVIDIA H100 80GB HBM3, 81559 MiB
2, NVIDIA A100-SXM4-40GB, 40960 MiB
"""


def fake_smi(directory: Path, body: str) -> Path:
    """An ``nvidia-smi`` in ``directory`` that runs the shell ``body`` (``$1`` is the query)."""
    exe = directory / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def smi_printing_samples(directory: Path) -> None:
    fake_smi(directory, (
        'case "$1" in\n'
        f"  *utilization*) cat <<'EOF'\n{SMI_STATS}EOF\n  ;;\n"
        f"  *) cat <<'EOF'\n{SMI_LIST}EOF\n  ;;\n"
        "esac\n"
    ))
