"""Break each SQL guard of tuner/storage/sql/guards.py in turn and list the tests that fail.

Every guard must fail at least two tests (the store contract on SQLite and on PostgreSQL,
and the service's tests over HTTP). The file is restored on every path. From the
repository root, with PostgreSQL up::

    .venv/bin/python scripts/guard_mutations.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

GUARDS = Path("tuner/storage/sql/guards.py")
TESTS = [
    "tests/storage/test_store_contract.py",
    "tests/api/test_plain_reports.py",
    "tests/api/test_protocol.py",
]
#: guard -> (its text in guards.py, the text that breaks it)
MUTANTS = {
    "lease: state": ("        JOB.state == literal(JobState.LEASED, JOB.state.type),\n", ""),
    "lease: token": ("        JOB.token_hash == TOKEN_HASH,\n", ""),
    "lease: expiry": ("        JOB.lease_expires_at >= NOW,", "        true(),"),
    "step is new": ("REPORT.step == STEP)", "REPORT.step == STEP + 1_000_000)"),
    "rung floor": ("        TRIAL.rung >= FLOOR,\n", ""),
    "stop asked": ("        TRIAL.stop_requested.is_(False),\n", ""),
    "cancelled": (
        "        EXP.state != literal(ExperimentState.CANCELLED, EXP.state.type),\n", ""
    ),
}


def main() -> int:
    original = GUARDS.read_text()
    env = {**os.environ, "HYPOTHESIS_PROFILE": "ci"}
    env.setdefault("TUNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    weak = []
    try:
        for name, (text, broken) in MUTANTS.items():
            assert text in original, f"{name}: {text!r} is not in {GUARDS}"
            mutated = original.replace(text, broken)
            if "true()," in broken:
                mutated = mutated.replace("import ColumnElement,", "import ColumnElement, true,")
            GUARDS.write_text(mutated)
            out = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                capture_output=True, text=True, env=env, check=False,
            ).stdout
            failed = sorted(set(re.findall(r"^FAILED (\S+)", out, re.MULTILINE)))
            sys.stdout.write(f"{name}: {len(failed)} tests fail\n")
            for test in failed:
                sys.stdout.write(f"    {test}\n")
            if len(failed) < 2:
                weak.append(name)
    finally:
        GUARDS.write_text(original)
    if weak:
        sys.stdout.write(f"guards that fewer than two tests catch: {weak}\n")
    return 1 if weak else 0


if __name__ == "__main__":
    sys.exit(main())
