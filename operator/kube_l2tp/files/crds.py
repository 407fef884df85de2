"""crds/*.yaml written from api.crd (``--write``, `make crds`), or checked against it
(``--check``, `make lint`): ``python -m kube_l2tp.files.crds --write|--check --dir D
[--extra-dir D ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kube_l2tp.api import crd


def main(argv: list[str] | None = None) -> int:
    """Write crds/ (--write) or fail if it differs from api.crd (--check)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("crds"))
    parser.add_argument("--extra-dir", type=Path, action="append", default=[])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for directory in [args.dir, *args.extra_dir]:
        for name, definition in crd.all_crds().items():
            path = directory / name
            text = crd.dump(definition)
            if args.write:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            elif not path.exists() or path.read_text() != text:
                stale.append(str(path))
    if stale:
        print(f"out of date: {', '.join(stale)}; run `make crds`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
