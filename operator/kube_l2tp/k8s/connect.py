"""API clients from the in-cluster service account, else KUBECONFIG (for tests and laptops)."""

from __future__ import annotations

import os

from kubernetes import client
from kubernetes import config as kube_config


def clients() -> tuple[client.CustomObjectsApi, client.CoreV1Api]:
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        # KUBECONFIG read now, not when the kubernetes package was imported
        kube_config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi(), client.CoreV1Api()
