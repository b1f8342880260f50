"""The repository root, for tests that read docs/, benchmarks/ or the packages' sources."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
