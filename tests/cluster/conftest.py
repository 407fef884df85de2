"""The in-cluster agent against the realistic API emulator, with the in-memory kernel model:
no root, no VM (the kernel itself is covered by tests/kernel)."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "unit"))  # fakekernel

from apiserver.fixtures import apiserver  # noqa: E402

__all__ = ["apiserver"]
