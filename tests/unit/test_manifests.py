"""Reading manifests a document at a time names each document as reading them whole did."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_l2tp.api import manifests

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


def test_iterate_yields_before_the_file_ends_and_fails_where_it_breaks(tmp_path: Path) -> None:
    """Documents before a broken one are yielded; the error names the file and comes before
    the reader would go on (so nothing after it is taken as the directory's content)."""
    (tmp_path / "a.yaml").write_text(ONE + "---\n" + ONE + "---\nkind: [unclosed\n")
    docs = manifests.iterate([tmp_path])
    assert next(docs).source.endswith("a.yaml#1")
    with pytest.raises(manifests.ManifestError, match=r"a\.yaml: not valid YAML"):
        list(docs)


def test_a_directory_broken_half_way_keeps_what_the_agent_had(tmp_path: Path) -> None:
    """The agent's source reads a document at a time; a file that breaks after valid documents
    must not leave those as the whole desired state (the rest would read as deleted)."""
    from kube_l2tp.agent.source import ManifestSource

    seed = Path(__file__).resolve().parents[2] / "examples/seed/site-a.yaml"
    good = seed.read_text()
    (tmp_path / "site-a.yaml").write_text(good)
    source = ManifestSource(tmp_path)
    before = source.load()
    assert before.resources.tunnels and before.resources.sessions
    (tmp_path / "site-a.yaml").write_text(good + "\n---\nkind: [unclosed\n")
    after = source.load()
    assert after.resources == before.resources
    assert [p.kind for p in after.problems] == ["Directory"]
    assert "not valid YAML" in after.problems[0].message
