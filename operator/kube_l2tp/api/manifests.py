"""Reading manifests: multi-document YAML or JSON files, or whole directories of them.

Pure apart from reading files; returns documents with where they came from, so that every
problem can name its file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's parser when PyYAML was built with it (the wheels are): 10x the pure-Python one, which
# took most of a 4000-pair directory's 28 s load natively (minutes under emulation).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Document:
    source: str  # "examples/site-a.yaml" (with "#N" for the N-th document of several)
    body: Any


class ManifestError(Exception):
    """A file that cannot be read or parsed; the message names the file and the line."""


def files_in(paths: Iterable[Path]) -> list[Path]:
    """The given files, and every manifest file below the given directories, in a stable order."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
            if not found:
                raise ManifestError(f"{path}: no *.yaml, *.yml or *.json files in it")
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return out


def parse(text: str, source: str) -> list[Document]:
    """Documents in ``text``; a ``kind: List`` (kubectl get -o yaml) is flattened."""
    return list(_documents(text, source))


def _documents(text: str, source: str) -> Iterator[Document]:
    """parse(), one document at a time: a document is named ``source#N`` when its file holds
    several, so each is yielded once the next one (or the end) is seen."""
    held: Any = _NONE
    count = 0
    for body in _bodies(text, source):
        if held is not _NONE:
            count += 1
            yield Document(f"{source}#{count}", held)
        held = body
    if held is not _NONE:
        yield Document(source if count == 0 else f"{source}#{count + 1}", held)


_NONE: Any = object()


def _bodies(text: str, source: str) -> Iterator[Any]:
    try:
        if source.endswith(".json"):
            loaded = json.loads(text)
            found: Iterable[Any] = loaded if isinstance(loaded, list) else [loaded]
        else:
            found = yaml.load_all(text, Loader=_LOADER)
        for body in found:
            if body is None:
                continue
            if isinstance(body, dict) and body.get("kind") == "List" and "items" in body:
                yield from body["items"]
            else:
                yield body
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{source}: not valid YAML/JSON: {exc}") from exc


def iterate(paths: Iterable[Path]) -> Iterator[Document]:
    """load(), a document at a time as the files are parsed: a caller that keeps only what it
    makes of each never holds every body at once. Raises ManifestError part way through."""
    for path in files_in(paths):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read: {exc}") from exc
        yield from _documents(text, str(path))


def load(paths: Iterable[Path]) -> list[Document]:
    return list(iterate(paths))
