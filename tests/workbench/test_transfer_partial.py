"""benchmarks/transfer.py --from-partial: the tables of the draws finished so far."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from test_benchmark_tools import load


def _draw(sharing: float, seed: int, cs: list[float], steph: list[float]) -> dict:
    return {
        "sharing": sharing,
        "seed": seed,
        "oracle": {"values": [0.8] * len(cs)},
        "methods": {
            "cancer-specific": {"run": "cancer-specific", "values": cs},
            "STEPH": {"run": "steph", "values": steph},
        },
    }


def test_from_partial_pools_the_finished_draws_per_sharing_value(tmp_path: Path) -> None:
    transfer = load("transfer")
    partial = tmp_path / "a.partial.jsonl"
    partial.write_text(
        json.dumps(_draw(0.0, 0, [0.6, 0.7], [0.65, 0.75]))
        + "\n"
        + json.dumps(_draw(0.0, 1, [0.5, 0.6], [0.7, 0.5]))
        + "\n"
    )
    done = tmp_path / "b.json"
    one = _draw(1.0, 0, [0.6, 0.6], [0.7, 0.8])
    done.write_text(json.dumps({"results": [{"sharing": 1.0, "seeds": [0], "runs": [one]}]}))
    text = transfer.from_partial([partial, done])
    assert text.startswith("Finished draws: sharing 0: seeds [0, 1], sharing 1: seeds [0].")
    steph = next(line for line in text.splitlines() if line.startswith("| STEPH |"))
    pooled = [0.65, 0.75, 0.7, 0.5]
    assert f"{statistics.fmean(pooled):.4f} ({statistics.stdev(pooled):.3f})" in steph
    gains = next(line for line in text.splitlines()[::-1] if line.startswith("| STEPH |"))
    assert "+0.0500 (3/4)" in gains and "+0.1500 (2/2)" in gains
