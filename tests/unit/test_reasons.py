"""Reasons and triggers are types: what a result or a metric says follows from an error's
outcome and the loop's trigger, never from the words of a message."""

from __future__ import annotations

import errno

import pytest
from fakekernel import FakeKernel
from prometheus_client import CollectorRegistry
from test_reconcile import from_objects, session, tunnel

from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.desired import Owned, desired_state
from kube_l2tp.core.reconcile import ObjectResult, Result, reconcile
from kube_l2tp.core.state import KernelError, Outcome, SessionConfig
from kube_l2tp.core.triggers import Trigger
from kube_l2tp.metrics.agent import AgentMetrics


class SessionsFail(FakeKernel):
    """Session creates fail with this error (tunnels work)."""

    def __init__(self, error: KernelError) -> None:
        super().__init__()
        self.error = error

    def create_session(self, cfg: SessionConfig) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        # l2tp_eth missing while l2tp_core is loaded: sessions cannot be made, tunnels can
        (
            KernelError("create session", errno.EPROTONOSUPPORT, Outcome.NOT_SUPPORTED, "hint"),
            Reason.KERNEL_UNSUPPORTED,
        ),
        # a message naming KernelUnsupported does not make the failure one
        (
            KernelError("create session", errno.EINVAL, Outcome.INVALID, "not KernelUnsupported"),
            Reason.KERNEL_ERROR,
        ),
        (KernelError("create session", errno.EPERM, Outcome.PERMISSION), Reason.KERNEL_ERROR),
    ],
)
def test_a_failed_write_is_judged_by_its_outcome(error: KernelError, reason: Reason) -> None:
    kernel = SessionsFail(error)
    desired = desired_state(from_objects([tunnel(), session()]), "site-a")
    result = reconcile(kernel, desired, Owned())
    assert result.results["L2TPTunnel/t1"].reason is Reason.PROGRAMMED
    failed = result.results["L2TPSession/s1"]
    assert not failed.ready and failed.reason is reason
    assert str(error) in failed.message


@pytest.mark.parametrize(
    ("trigger", "repairs"),
    [
        (Trigger.START, 0),
        (Trigger.KERNEL_EVENT, 3),
        (Trigger.PERIODIC_RESYNC, 3),
        (Trigger.MANIFESTS_CHANGED, 0),
        (Trigger.API_EVENT, 0),
    ],
)
def test_only_writes_of_reconciles_the_declared_state_did_not_start_repair_drift(
    trigger: Trigger, repairs: int
) -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, "node-a")
    done = ObjectResult("L2TPTunnel/t1", True, Reason.PROGRAMMED, "")
    metrics.observe(Result(writes=3, results={done.subject: done}), 0.01, trigger)
    labels = {"node": "node-a"}
    assert registry.get_sample_value("kube_l2tp_drift_repairs_total", labels) == repairs
    assert registry.get_sample_value("kube_l2tp_kernel_writes_total", labels) == 3
