"""Unit tests: no root, no VM, no API server. Makes tests/unit importable for shared fakes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
