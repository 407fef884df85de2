"""Parsing manifests: multi-document YAML or JSON text, as documents with where they came from,
so that every problem can name its file and document. Pure: kube_l2tp.files.manifests reads the
files and directories.

Anything a file can hold must end in a one-line refusal, never a crash, a hang or gigabytes of
memory, so the parser is bounded (files are read up to files.manifests.MAX_FILE_BYTES): YAML is
composed here from libyaml's events (an iterative parser) with a bound on nesting (the C
composer recurses and segfaults on thousands of nested flow sequences) and on what aliases
expand to (billion laughs).

The dialect is YAML 1.2's core schema, as kubectl's parser reads it: `17:01` is a string, not
YAML 1.1's sexagesimal 1021; a whole float (3000.0, 1e3) is the integer kubectl's JSON round
trip makes of it; a duplicate mapping key is refused, as kubectl's strict decoding does. Plain
scalars that YAML 1.1 parsers (kubectl's included) read differently from YAML 1.2 (`yes`, `on`,
`0755`, `1_000`) are refused with "quote it" rather than guessed.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

# libyaml's parser when PyYAML was built with it (the wheels are): events come from C, and only
# the composition below is Python.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_DEPTH = 64  # an L2TP object nests 6 deep; kubectl's objects rarely pass 20
MAX_ALIASED = 100_000  # values that aliases may add to one document (each alias counts its size)
MAX_VALUES = 400_000  # values in one file, aliases included (4000 pairs: 224000; ~1 s)
# libyaml's scanner is quadratic in flow nesting (4000 levels: 0.3 s, 100000: minutes), before
# the composer below sees a single event: a cheap count of brackets refuses such files first.
MAX_BRACKETS = 1000
MAX_INT_DIGITS = 20  # the API server stores int64; anything longer cannot be a field value
ECHO = 60  # characters of a value that a message quotes back


@dataclass(frozen=True)
class Document:
    source: str  # "examples/site-a.yaml" (with "#N" for the N-th document of several)
    body: Any
    error: str = ""  # why the document (or the whole file) could not be read; body is None


class ManifestError(Exception):
    """A path that cannot be listed (missing, or a directory without manifests)."""


def echo(value: object, limit: int = ECHO) -> str:
    """repr() of a value, cut to ``limit`` characters: a 50 MB value is not printed back."""
    if isinstance(value, str) and len(value) > 4 * limit:
        value = value[: 4 * limit]  # repr of a huge string is not built just to be cut
    text = repr(value) if not isinstance(value, dict | list) else _short(value, limit)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: dict[Any, Any] | list[Any], limit: int) -> str:
    """A collection's opening, without walking all of it (it may be an alias bomb)."""
    if isinstance(value, list):
        head = ", ".join(echo(v, limit) for v in value[:3])
        return f"[{head}{', ...' if len(value) > 3 else ''}] ({len(value)} items)"
    keys = ", ".join(echo(k, limit) for k in list(value)[:3])
    return f"{{{keys}{', ...' if len(value) > 3 else ''}}} ({len(value)} keys)"


def parse(text: str, source: str) -> list[Document]:
    """Documents in ``text``; a ``kind: List`` (kubectl get -o yaml) is flattened."""
    return list(parse_documents(text, source))


def parse_documents(text: str, source: str) -> Iterator[Document]:
    """parse(), one document at a time: a document is named ``source#N`` when its file holds
    several, so each is yielded once the next one (or the end) is seen. A document that cannot
    be read is yielded with its error; one that breaks the file's syntax ends the file."""
    held: Document | None = None
    count = 0
    for body, error in _bodies(text, source):
        if held is not None:
            count += 1
            yield Document(f"{source}#{count}", held.body, held.error)
        held = Document(source, body, error)
    if held is not None:
        name = source if count == 0 else f"{source}#{count + 1}"
        yield Document(name, held.body, held.error)


def _bodies(text: str, source: str) -> Iterator[tuple[Any, str]]:
    """(body, "") per document, or (None, error); a List's items count as documents."""
    text = text.removeprefix("\ufeff")  # kubectl accepts a UTF-8 byte order mark
    found: Iterable[tuple[Any, str]]
    if _bracket_depth(text) > MAX_BRACKETS:
        found = [(None, f"brackets nested more than {MAX_BRACKETS} deep: refused")]
    elif source.endswith(".json"):
        found = _json(text)
    else:
        found = _Composer(text).documents()
    for body, error in found:
        if error:
            yield None, error
        elif body is None:
            continue
        elif isinstance(body, dict) and body.get("kind") == "List" and "items" in body:
            items = body["items"]
            if not isinstance(items, list):
                yield None, f"kind List: items must be a list of objects; got {echo(items)}"
                continue
            for item in items:
                yield item, ""
        else:
            yield body, ""


def _bracket_depth(text: str) -> int:
    """The deepest nesting of [ and { in ``text``, counting those in strings and comments too
    (so an upper bound of the real one); cheap when the text has few brackets."""
    if text.count("[") + text.count("{") <= MAX_BRACKETS:
        return 0
    brackets = re.sub(r"[^\[\]{}]+", "", text)
    steps = brackets.translate(_STEPS).encode()  # b"\x02" opens, b"\x00" closes
    return max(itertools.accumulate(b - 1 for b in steps))


_STEPS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})


def _json(text: str) -> Iterator[tuple[Any, str]]:
    """A JSON file: one object, or a list of them (kubectl's reader takes both)."""
    try:
        loaded = json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)
    except _RefusedError as exc:
        yield None, str(exc)
        return
    except json.JSONDecodeError as exc:
        yield None, f"not valid JSON: {exc}"
        return
    except (ValueError, RecursionError) as exc:  # ints beyond Python's limit; nesting
        yield None, f"not valid JSON: {str(exc)[:200]}"
        return
    for body in loaded if isinstance(loaded, list) else [loaded]:
        problem = shape_problem(body)
        yield (None, problem) if problem else (_whole(body), "")


class _RefusedError(ValueError):
    """Something the reader refuses (a duplicate key, NaN), with the reason."""


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RefusedError(f"duplicate key {echo(key)}: kubectl refuses it; keep one")
        out[key] = value
    return out


def _json_constant(name: str) -> Any:
    raise _RefusedError(f"{name} is not a JSON number: the API server refuses it")


def _whole(value: Any) -> Any:
    """Whole floats as integers in a loaded JSON value, as kubectl's reader makes them."""
    stack = [value]
    while stack:
        node = stack.pop()
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for key, sub in list(items):
            if isinstance(sub, float) and sub.is_integer():
                node[key] = int(sub)
            elif isinstance(sub, dict | list):
                stack.append(sub)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def shape_problem(value: Any, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> str:
    """Why ``value`` (from JSON, or a webhook's request) cannot be a manifest: nested deeper
    than ``max_depth``, more than ``max_values`` values (shared ones counted each time, as
    anything that walks it would), a key that is not a string, a number JSON cannot hold.
    "" when none. Iterative, so the check itself cannot overflow the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > max_values:
            return f"more than {max_values} values in one document: refused"
        if isinstance(node, dict | list):
            if depth > max_depth:
                return f"nested more than {max_depth} levels deep: refused"
            if isinstance(node, dict):
                for key in node:
                    if not isinstance(key, str):
                        return f"mapping key {echo(key)} is not a string"
                    if not key.isascii() and _surrogate(key):
                        return f"mapping key {echo(key)} {_surrogate(key)}"
                stack.extend((sub, depth + 1) for sub in node.values())
            else:
                stack.extend((sub, depth + 1) for sub in node)
        elif isinstance(node, str):
            if not node.isascii() and _surrogate(node):
                return f"{echo(node)} {_surrogate(node)}"
        elif isinstance(node, float) and not math.isfinite(node):
            return f"{node} is not a JSON number: the API server refuses it"
        elif isinstance(node, int) and not isinstance(node, bool) and node.bit_length() > 64:
            return "an integer beyond 64 bits: the API server stores int64"
    return ""


def _surrogate(text: str) -> str:
    """Why ``text`` is not Unicode text (a lone UTF-16 surrogate: JSON can write one), or ""."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds a lone UTF-16 surrogate at {exc.start}: not valid Unicode text"
    return ""


# --- YAML: libyaml's events composed here, bounded ---------------------------------------------

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"

_NULLS = {"", "~", "null", "Null", "NULL"}
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"[-+]?[0-9]+")
_INT8 = re.compile(r"0o[0-7]+")
_INT16 = re.compile(r"0x[0-9a-fA-F]+")
_FLOATS = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL = re.compile(r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
# Read differently by YAML 1.1 (PyYAML, kubectl's go-yaml v2) and YAML 1.2: refused, not guessed.
_YAML11_BOOL = re.compile(r"y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF")
_YAML11_INT = re.compile(
    r"[-+]?(0[0-9]+|0b[01_]+|[0-9][0-9_]*_[0-9_]*|0x[0-9a-fA-F_]*_[0-9a-fA-F_]*)"
)


class _Error(Exception):
    """A refusal inside one document; the reader skips to the document's end."""


@dataclass
class _Frame:
    value: dict[Any, Any] | list[Any]
    anchor: str | None
    depth: int
    size: int = 1  # values in this subtree, aliases expanded
    deepest: int = 0  # levels below this one, aliases expanded
    key: Any = None
    has_key: bool = False
    merges: list[dict[Any, Any]] | None = None


class _Composer:
    """Python values from libyaml's event stream, with every bound checked as it grows."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values = 0  # in the file

    def documents(self) -> Iterator[tuple[Any, str]]:
        events = yaml.parse(self.text, Loader=_LOADER)
        try:
            while True:
                try:
                    event = next(events)
                except StopIteration:
                    return
                if isinstance(event, yaml.DocumentStartEvent):
                    try:
                        yield self._document(events), ""
                    except _Error as exc:
                        yield None, str(exc)
                        self._skip_document(events)
        except yaml.YAMLError as exc:
            yield None, f"not valid YAML: {_one_line(exc)}"
        except (ValueError, RecursionError, MemoryError) as exc:
            yield None, f"not valid YAML: {str(exc)[:200]}"

    @staticmethod
    def _skip_document(events: Iterator[Any]) -> None:
        for event in events:
            if isinstance(event, yaml.DocumentEndEvent):
                return

    def _document(self, events: Iterator[Any]) -> Any:
        """One document's value; leaves the stream after its DocumentEndEvent."""
        anchors: dict[str, tuple[Any, int, int]] = {}  # name -> (value, size, depth)
        stack: list[_Frame] = []
        aliased = 0
        root: Any = None
        scalar_event = yaml.ScalarEvent
        for event in events:
            if type(event) is scalar_event:  # most events: checked first, and cheaply
                self.values += 1
                if self.values > MAX_VALUES:
                    self._count(0, stack, event)
                value = self._scalar(event, stack)
                if event.anchor is not None:
                    anchors[event.anchor] = (value, 1, 0)
                if not stack:
                    root = value
                    continue
                parent = stack[-1]
                parent.size += 1
                self._add(stack, value, event)
                continue
            if isinstance(event, yaml.DocumentEndEvent):
                return root
            depth = len(stack) + 1
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                if depth > MAX_DEPTH:
                    raise _Error(
                        f"{_where(stack, event)}: nested more than {MAX_DEPTH} levels deep"
                    )
                is_map = isinstance(event, yaml.MappingStartEvent)
                self._check_collection_tag(event.tag, _MAP if is_map else _SEQ, stack, event)
                self._count(1, stack, event)
                stack.append(_Frame({} if is_map else [], event.anchor, depth))
                continue
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                frame = stack.pop()
                if frame.merges:
                    for merged in frame.merges:
                        for key, sub in merged.items():
                            frame.value.setdefault(key, sub)  # type: ignore[union-attr]
                value, size, deepest = frame.value, frame.size, frame.deepest + 1
                if frame.anchor is not None:
                    anchors[frame.anchor] = (value, size, deepest)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:
                    raise _Error(
                        f"{_where(stack, event)}: alias *{event.anchor} refers to no complete"
                        " anchor (undefined, or an anchor inside itself)"
                    )
                value, size, deepest = anchors[event.anchor]
                aliased += size
                if aliased > MAX_ALIASED:
                    raise _Error(
                        f"{_where(stack, event)}: aliases expand to more than {MAX_ALIASED}"
                        " values in one document (an alias bomb?): refused"
                    )
                if depth - 1 + deepest > MAX_DEPTH:
                    raise _Error(
                        f"{_where(stack, event)}: nested more than {MAX_DEPTH} levels deep"
                        " (through aliases)"
                    )
                self._count(size, stack, event)
            else:
                continue
            if not stack:
                root = value
                continue
            parent = stack[-1]
            parent.size += size
            parent.deepest = max(parent.deepest, deepest)
            self._add(stack, value, event)
        raise _Error("the document does not end")  # libyaml always ends one; kept honest

    def _count(self, size: int, stack: list[_Frame], event: Any) -> None:
        self.values += size
        if self.values > MAX_VALUES:
            raise _Error(f"{_where(stack, event)}: more than {MAX_VALUES} values in one file")

    @staticmethod
    def _check_collection_tag(
        tag: str | None, expected: str, stack: list[_Frame], event: Any
    ) -> None:
        if tag not in (None, "!", expected):
            raise _Error(f"{_where(stack, event)}: unsupported tag {echo(tag)}")

    @staticmethod
    def _add(stack: list[_Frame], value: Any, event: Any) -> None:
        parent = stack[-1]
        if isinstance(parent.value, list):
            parent.value.append(value)
            return
        if not parent.has_key:
            if isinstance(value, dict | list):
                raise _Error(
                    f"{_where(stack, event)}: a mapping key must be a string, not a collection"
                )
            if not isinstance(value, str):
                raise _Error(
                    f"{_where(stack, event)}: mapping key {echo(value)} is not a string: quote it"
                )
            parent.key, parent.has_key = value, True
            return
        key = parent.key
        parent.has_key = False
        if key == "<<" and _is_merge(event, value):
            merges = value if isinstance(value, list) else [value]
            parent.merges = (parent.merges or []) + merges  # the first wins, as YAML says
            return
        if key in parent.value:
            raise _Error(
                f"{_where(stack, event)}: duplicate key {echo(key)}: kubectl refuses it"
                " (and a YAML 1.1 reader keeps only the last): keep one"
            )
        parent.value[key] = value

    def _scalar(self, event: Any, stack: list[_Frame]) -> Any:
        value: str = event.value
        tag = event.tag
        plain = event.implicit[0] and event.style in (None, "")
        if tag == "!" or (tag is None and not plain) or tag == _STR:
            return value
        if tag is None:
            return _plain_at(value, stack, event)
        resolved = _plain_at(value, stack, event)
        want = {_INT: int, _FLOAT: float, _BOOL: bool, _NULL: type(None)}.get(tag)
        if want is None:
            raise _Error(f"{_where(stack, event)}: unsupported tag {echo(tag)}")
        if want is float and isinstance(resolved, int):
            return resolved
        if not isinstance(resolved, want) or (want is int and isinstance(resolved, bool)):
            raise _Error(f"{_where(stack, event)}: {echo(value)} is not a valid {tag}")
        return resolved


def _is_merge(event: Any, value: Any) -> bool:
    """A YAML merge key's value: a mapping (usually an alias) or a list of them."""
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _plain_at(text: str, stack: list[_Frame], event: Any) -> Any:
    """_plain(), remembered for short texts (keys and values repeat across documents), with
    the place named only when it is refused."""
    if len(text) <= 100:
        value, why = _resolved(text)
    else:
        try:
            return _plain(text, "")
        except _Error as exc:
            value, why = None, str(exc).removeprefix(": ")
    if why:
        raise _Error(f"{_where(stack, event)}: {why}")
    return value


@lru_cache(maxsize=8192)
def _resolved(text: str) -> tuple[Any, str]:
    """(value, "") or (None, why refused): values are immutable, so sharing them is safe."""
    try:
        return _plain(text, ""), ""
    except _Error as exc:
        return None, str(exc).removeprefix(": ")


def _plain(text: str, where: str) -> Any:
    """A plain scalar under YAML 1.2's core schema, refusing what YAML 1.1 reads otherwise."""
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if len(text) > 100:  # no number is this long: one linear look, no backtracking regexes
        if text[-1] not in "0123456789.":
            return text
        if _INT10.fullmatch(text):
            raise _Error(f"{where}: an integer of {len(text)} digits: the API server stores int64")
    if _YAML11_BOOL.fullmatch(text):
        raise _Error(
            f"{where}: {text!r} is a boolean to YAML 1.1 readers (kubectl's) and a string to"
            f" YAML 1.2: quote it ('{text}'), or write true/false"
        )
    if _YAML11_INT.fullmatch(text):
        raise _Error(
            f"{where}: {echo(text)} is read differently by YAML 1.1 (kubectl's) and YAML 1.2"
            " readers (a leading 0 is octal to one, '_' a separator to one): write the"
            " number plainly, or quote it to make it a string"
        )
    number: int | float | None = None
    if _INT10.fullmatch(text):
        if len(text.lstrip("+-")) > MAX_INT_DIGITS:
            raise _Error(f"{where}: an integer of {len(text)} digits: the API server stores int64")
        number = int(text)
    elif _INT8.fullmatch(text) or _INT16.fullmatch(text):
        if len(text) > MAX_INT_DIGITS + 2:
            raise _Error(f"{where}: {echo(text)}: too large; the API server stores int64")
        number = int(text, 0)
    elif _FLOATS.fullmatch(text):
        number = float(text)
        if not math.isfinite(number):
            raise _Error(f"{where}: {echo(text)} is out of range for a number")
        if number.is_integer():
            number = int(number)  # what kubectl's YAML-to-JSON-to-object round trip makes of it
    elif _SPECIAL.fullmatch(text):
        raise _Error(
            f"{where}: {text} (infinity or NaN) has no JSON form: kubectl refuses it; quote it"
            " if it is a string"
        )
    else:
        return text
    if isinstance(number, int) and number.bit_length() > 64:
        raise _Error(f"{where}: {echo(text)} is beyond 64 bits: the API server stores int64")
    return number


def _where(stack: list[_Frame], event: Any) -> str:
    """Line and field of an event, for a message: "line 7 (spec.udp)"."""
    mark = getattr(event, "start_mark", None)
    line = f"line {mark.line + 1}" if mark is not None else "?"
    path = ""
    for frame in stack:
        if isinstance(frame.value, list):
            path += f"[{len(frame.value)}]"
        elif frame.has_key:
            key = frame.key if len(str(frame.key)) <= ECHO else echo(frame.key)
            path += f".{key}" if path else str(key)
    if len(path) > 2 * ECHO:
        path = path[: 2 * ECHO - 3] + "..."
    return f"{line} ({path})" if path else line


def _one_line(exc: yaml.YAMLError) -> str:
    """libyaml's message without its snippet of the file (which echoes the input)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1} column {mark.column + 1}"
    return " ".join(str(exc).split())[:200]
