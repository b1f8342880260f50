"""``set_deterministic`` switches PyTorch's deterministic mode without importing TorchDynamo."""

from __future__ import annotations

import subprocess
import sys

import torch

from steph.runtime import set_deterministic


def test_set_deterministic_sets_and_clears_the_flag() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        set_deterministic(before)


def test_set_deterministic_does_not_import_inductor() -> None:
    code = (
        "import sys, torch\n"
        "from steph.runtime import set_deterministic\n"
        "set_deterministic(True)\n"
        "assert torch.are_deterministic_algorithms_enabled()\n"
        "print('torch._inductor.config' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
