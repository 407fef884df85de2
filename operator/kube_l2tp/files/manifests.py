"""Manifest files and directories read into documents (the parsing is api.manifests, pure).

Files are read up to MAX_FILE_BYTES; an unreadable, oversized or non-UTF-8 file is one Document
carrying its error, so the other files are still read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from kube_l2tp.api.manifests import Document, ManifestError, parse_documents

SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 8 * 1024 * 1024  # the benchmark's 4000 pairs in one file are 1.9 MB

__all__ = [
    "MAX_FILE_BYTES",
    "SUFFIXES",
    "Document",
    "ManifestError",
    "files_in",
    "iterate",
    "load",
    "read",
]


def files_in(paths: Iterable[Path]) -> list[Path]:
    """The given files, and every manifest file below the given directories, in a stable order."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
            if not found:
                raise ManifestError(f"{path}: no *.yaml, *.yml or *.json files in it")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        elif path.exists():  # a FIFO or a device would block or never end
            raise ManifestError(f"{path}: not a regular file")
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return out


def read(path: Path) -> Iterator[Document]:
    """One file's documents; an unreadable or oversized file is one Document with its error."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        yield Document(str(path), None, f"cannot read: {exc.strerror or exc}")
        return
    if len(data) > MAX_FILE_BYTES:
        yield Document(
            str(path),
            None,
            f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: refused; split it into smaller"
            " files",
        )
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield Document(str(path), None, f"not UTF-8 text (byte {exc.start}): save it as UTF-8")
        return
    yield from parse_documents(text, str(path))


def iterate(paths: Iterable[Path]) -> Iterator[Document]:
    """load(), a document at a time as the files are parsed: a caller that keeps only what it
    makes of each never holds every body at once. Raises ManifestError only for a path that
    does not exist or a directory without manifests; a file that cannot be read or parsed is
    a Document with an error, and the other files are read."""
    for path in files_in(paths):
        yield from read(path)


def load(paths: Iterable[Path]) -> list[Document]:
    return list(iterate(paths))
