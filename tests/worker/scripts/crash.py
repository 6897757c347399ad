"""A training script that cannot start: it imports a module that is not installed (as a
script written for torch does on a machine without torch)."""

print("loading the data...", flush=True)  # noqa: T201 - the output under test
import tuner_test_missing_module  # type: ignore[import-not-found]  # noqa: E402, F401
