"""Reading manifests a document at a time names each document as reading them whole did."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_l2tp.api import manifests
from kube_l2tp.files import manifests as manifest_files

ONE = "kind: A\nmetadata: {name: a}\n"
LIST = "kind: List\nitems:\n- {kind: A, metadata: {name: a}}\n- {kind: B, metadata: {name: b}}\n"


@pytest.mark.parametrize(
    ("text", "sources"),
    [
        (ONE, ["f.yaml"]),
        (ONE + "---\n" + ONE, ["f.yaml#1", "f.yaml#2"]),
        ("---\n" + ONE + "---\n---\n", ["f.yaml"]),  # empty documents do not count
        (LIST, ["f.yaml#1", "f.yaml#2"]),  # kubectl get -o yaml: flattened
        ("", []),
    ],
)
def test_documents_are_named_by_their_place_in_the_file(text: str, sources: list[str]) -> None:
    assert [d.source for d in manifests.parse(text, "f.yaml")] == sources


def test_iterate_yields_before_the_file_ends_and_names_where_it_breaks(tmp_path: Path) -> None:
    """Documents before a broken one are yielded; the broken one is a Document with its error
    (file, document and line), and the next file is still read."""
    (tmp_path / "a.yaml").write_text(ONE + "---\n" + ONE + "---\nkind: [unclosed\n")
    (tmp_path / "b.yaml").write_text(ONE)
    docs = list(manifest_files.iterate([tmp_path]))
    assert [(Path(d.source).name, bool(d.error)) for d in docs] == [
        ("a.yaml#1", False),
        ("a.yaml#2", False),
        ("a.yaml#3", True),
        ("b.yaml", False),
    ]
    assert docs[2].error.startswith("not valid YAML: ")
    assert "at line 8 column 1" in docs[2].error  # where libyaml noticed: the end


def test_a_directory_broken_half_way_keeps_what_the_agent_had(tmp_path: Path) -> None:
    """A file that breaks after valid documents must not leave those as the whole desired
    state (the rest would read as deleted): what it declared before stays, reported stale."""
    from kube_l2tp.agent.source import ManifestSource

    seed = Path(__file__).resolve().parents[2] / "examples/seed/site-a.yaml"
    good = seed.read_text()
    (tmp_path / "site-a.yaml").write_text(good)
    source = ManifestSource(tmp_path)
    before = source.load()
    assert before.resources.tunnels and before.resources.sessions
    (tmp_path / "site-a.yaml").write_text("kind: [unclosed\n" + good)
    after = source.load()
    assert set(after.resources.tunnels) == set(before.resources.tunnels)
    assert set(after.resources.sessions) == set(before.resources.sessions)
    assert after.stale == {"L2TPTunnel/site-a", "L2TPSession/site-a-1"}
    [problem] = after.unreadable
    assert problem.render().startswith(f"{tmp_path / 'site-a.yaml'}: not valid YAML: ")


def test_a_bad_file_on_a_fresh_start_does_not_block_the_good_ones(tmp_path: Path) -> None:
    from kube_l2tp.agent.source import ManifestSource

    seed = Path(__file__).resolve().parents[2] / "examples/seed/site-a.yaml"
    (tmp_path / "a.yaml").write_text(seed.read_text())
    (tmp_path / "b.yaml").write_text("kind: [unclosed\n")
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe")
    snapshot = ManifestSource(tmp_path).load()
    assert [t.name for t in snapshot.resources.tunnels] == ["site-a"]
    assert [Path(p.source).name for p in snapshot.unreadable] == ["b.yaml", "c.yaml"]


def test_a_fifo_or_device_is_refused_or_skipped_never_read(tmp_path: Path) -> None:
    """Reading a FIFO blocks until a writer comes, /dev/zero never ends: given by name they
    are refused at once; inside a directory they are not manifests."""
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(manifests.ManifestError, match="not a regular file"):
            manifest_files.files_in([path])
    (tmp_path / "a.yaml").write_text(ONE)
    assert manifest_files.files_in([tmp_path]) == [tmp_path / "a.yaml"]
