"""The agent's API writer compares with what the server has, not with a lagging watch copy."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from kubernetes.client.exceptions import ApiException

from kube_l2tp.k8s import conditions
from kube_l2tp.k8s.view import ApiObject
from kube_l2tp.k8s.writer import Writer


class FakeApi:
    """patch_cluster_custom_object(_status) on one stored object, resourceVersion bumped."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.calls: list[tuple[str, Any]] = []

    def _bump(self) -> dict[str, Any]:
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return copy.deepcopy(self.obj)

    def patch_cluster_custom_object(self, *args: Any) -> dict[str, Any]:
        body = args[-1]
        self.calls.append(("meta", body))
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.obj["metadata"]["finalizers"] = body["metadata"]["finalizers"]
        return self._bump()

    def patch_cluster_custom_object_status(self, *args: Any) -> dict[str, Any]:
        self.calls.append(("status", args[-1]))
        self.obj["status"] = {**self.obj.get("status", {}), **args[-1]["status"]}
        return self._bump()

    def copy(self) -> ApiObject:
        """The object as a watch would deliver it now."""
        return ApiObject.of("L2TPSession", copy.deepcopy(self.obj))


def session() -> dict[str, Any]:
    return {"metadata": {"name": "s", "resourceVersion": "10", "finalizers": ["other/x"]}}


def ready(status: str) -> dict[str, Any]:
    return {"conditions": [conditions.condition("Ready", status, "R")]}  # type: ignore[arg-type]


def test_a_lagging_copy_does_not_repeat_our_writes() -> None:
    api = FakeApi(session())
    writer = Writer(api, None, "node-a")  # type: ignore[arg-type]
    stale = api.copy()
    assert writer.add_finalizer(stale)
    writer.status(stale, ready("True"))
    assert [c[0] for c in api.calls] == ["meta", "status"]
    # the watch has delivered the finalizer write only, or nothing yet: nothing to write again
    after_meta = dataclasses.replace(stale, resource_version="11")
    for lagging in (stale, after_meta):
        assert writer.add_finalizer(lagging)
        writer.status(lagging, ready("True"))
    assert len(api.calls) == 2
    # the copy caught up: still nothing; a real change is written
    current = api.copy()
    writer.status(current, ready("True"))
    assert len(api.calls) == 2
    writer.status(current, ready("False"))
    assert api.calls[-1][0] == "status" and len(api.calls) == 3


def test_someone_elses_later_write_is_the_truth() -> None:
    api = FakeApi(session())
    writer = Writer(api, None, "node-a")  # type: ignore[arg-type]
    writer.status(api.copy(), ready("True"))
    api.obj["status"] = {}  # a person clears the status
    api._bump()
    writer.status(api.copy(), ready("True"))  # repaired
    assert [c[0] for c in api.calls] == ["status", "status"]
    assert conditions.is_true(api.obj["status"])


def test_finalizer_writes_are_compare_and_swap_on_the_copy_given() -> None:
    api = FakeApi(session())
    writer = Writer(api, None, "node-a")  # type: ignore[arg-type]
    stale = api.copy()
    api.obj["metadata"]["finalizers"] = ["other/x", "other/y"]  # another controller, meanwhile
    api._bump()
    assert not writer.add_finalizer(stale)  # 409: deferred, nothing dropped
    assert api.obj["metadata"]["finalizers"] == ["other/x", "other/y"]
    assert writer.add_finalizer(api.copy())
    assert api.obj["metadata"]["finalizers"] == ["other/x", "other/y", writer.finalizer]
    assert writer.remove_finalizer(api.copy())
    assert api.obj["metadata"]["finalizers"] == ["other/x", "other/y"]
