"""GPU readings: nvidia-smi's CSV parsed as it prints it, the readings of the agent's own
GPUs, and unknown (None) where nvidia-smi is missing or fails. A stand-in ``nvidia-smi`` on
PATH (tests/worker/fake_smi.py) runs the real subprocess path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.worker.fake_smi import SMI_STATS, fake_smi, smi_printing_samples
from tuner.agent.gpus import Gpu, detect_gpus, parse_gpu_stats, read_gpu_stats
from tuner.wire import GpuStat


def test_parse_gpu_stats_reads_each_gpu_and_unknown_values_as_none() -> None:
    stats = parse_gpu_stats(SMI_STATS)
    assert stats == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "utilization": 97.0,
         "memory_used_mb": 70123.0, "memory_total_mb": 81559.0},
        {"index": 1, "name": "NVIDIA H100 80GB HBM3", "utilization": 0.0,
         "memory_used_mb": 4.0, "memory_total_mb": 81559.0},
        {"index": 2, "name": "NVIDIA A100-SXM4-40GB", "utilization": None,
         "memory_used_mb": 1543.0, "memory_total_mb": 40960.0},
    ]
    for stat_ in stats:  # what the server accepts
        GpuStat.model_validate(stat_)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("No devices were found\n", []),
        ("0, Weird, Name, With Commas, 5, 10, 20\n",
         [{"index": 0, "name": "Weird, Name, With Commas", "utilization": 5.0,
           "memory_used_mb": 10.0, "memory_total_mb": 20.0}]),
        ("0, GPU, [Not Supported], [N/A], [Unknown Error]\n",
         [{"index": 0, "name": "GPU", "utilization": None, "memory_used_mb": None,
           "memory_total_mb": None}]),
        ("0, GPU, 5\n", []),
    ],
    ids=["empty", "no-devices", "comma-in-name", "nothing-readable", "short-line"],
)
def test_parse_gpu_stats_edge_cases(text: str, expected: list[dict[str, object]]) -> None:
    assert parse_gpu_stats(text) == expected


def test_read_gpu_stats_keeps_the_agents_own_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi_printing_samples(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")  # the stand-in comes first
    assert [g["index"] for g in read_gpu_stats([Gpu("0"), Gpu("2")]) or []] == [0, 2]
    assert read_gpu_stats([]) == []  # a CPU agent on a GPU machine: none of them is its own
    every = read_gpu_stats([Gpu("GPU-0a1b")])  # named by UUID: every GPU's readings
    assert every is not None and len(every) == 3
    assert [g.index for g in detect_gpus("all")] == ["0", "1", "2"]


def test_read_gpu_stats_is_unknown_without_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    assert read_gpu_stats([Gpu("0")]) is None
    assert read_gpu_stats([]) is None


def test_read_gpu_stats_is_unknown_when_nvidia_smi_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_smi(tmp_path, 'echo "NVIDIA-SMI has failed: no driver" >&2\nexit 9\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert read_gpu_stats([Gpu("0")]) is None
