"""The L2TP objects and nodes through the API, as plain dicts (the official client, blocking).

Used by `kube-l2tp cleanup` directly and by the operator from a worker thread, for what kopf's
handlers cannot do on the object they were called for: patching another object (a tunnel's
status from a session's change) and stripping the finalizers of a node that is gone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from kubernetes import client
from kubernetes import config as _config

from kube_l2tp.api import crd

config: Any = _config  # the loaders are untyped

PLURALS = {crd.TUNNEL_KIND: "l2tptunnels", crd.SESSION_KIND: "l2tpsessions"}
WEBHOOK_CONFIGURATIONS = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
MERGE = "application/merge-patch+json"
_RETRIES = 5


def api_client() -> Any:
    """In-cluster credentials when there are some, else KUBECONFIG (read now, not at import)."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=cfg
        )
    return client.ApiClient(cfg)


class Cluster:
    """Typed, narrow access to what kube-l2tp needs from the API server."""

    def __init__(self, api: Any = None) -> None:
        self._api = api if api is not None else api_client()
        # Any: answers are used as the raw JSON dicts they are, not the client's models.
        self._custom: Any = client.CustomObjectsApi(self._api)
        self._core: Any = client.CoreV1Api(self._api)

    def close(self) -> None:
        self._api.close()

    def objects(self, plural: str) -> list[dict[str, Any]]:
        answer = self._custom.list_cluster_custom_object(crd.GROUP, crd.VERSION, plural)
        items: list[dict[str, Any]] = answer.get("items", [])
        return items

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self._custom.get_cluster_custom_object(
                crd.GROUP, crd.VERSION, plural, name
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def nodes(self) -> list[str]:
        """Names of the nodes that exist now."""
        answer = self._core.list_node(_preload_content=False)
        return [n["metadata"]["name"] for n in json.loads(answer.data).get("items", [])]

    def delete(self, plural: str, name: str) -> bool:
        """Ask for deletion; False when it is already gone."""
        try:
            self._custom.delete_cluster_custom_object(crd.GROUP, crd.VERSION, plural, name)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def delete_webhook_configuration(self, plural: str, name: str) -> bool:
        """Delete an admission webhook configuration (one of WEBHOOK_CONFIGURATIONS); False
        when there is none. Other API errors (e.g. 403) are raised."""
        api: Any = client.AdmissionregistrationV1Api(self._api)
        delete = {
            "validatingwebhookconfigurations": api.delete_validating_webhook_configuration,
            "mutatingwebhookconfigurations": api.delete_mutating_webhook_configuration,
        }[plural]
        try:
            delete(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> bool:
        """Merge into .status; False when the object is gone."""
        try:
            self._custom.patch_cluster_custom_object_status(
                crd.GROUP, crd.VERSION, plural, name, {"status": status}, _content_type=MERGE
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_spec(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        self._custom.patch_cluster_custom_object(
            crd.GROUP, crd.VERSION, plural, name, {"spec": spec}, _content_type=MERGE
        )

    def remove_finalizers(
        self, plural: str, name: str, finalizers: Iterable[str]
    ) -> tuple[list[str], dict[str, Any] | None]:
        """Remove these finalizers (others stay), safe against concurrent writers.

        Returns the finalizers removed and the object as it was just before (for an Event).
        """
        unwanted = set(finalizers)
        for _ in range(_RETRIES):
            obj = self.get(plural, name)
            if obj is None:
                return [], None
            meta = obj["metadata"]
            present = list(meta.get("finalizers") or [])
            removed = [f for f in present if f in unwanted]
            if not removed:
                return [], obj
            kept = [f for f in present if f not in unwanted]
            patch = {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}}
            try:
                self._custom.patch_cluster_custom_object(
                    crd.GROUP, crd.VERSION, plural, name, patch, _content_type=MERGE
                )
            except client.ApiException as exc:
                if exc.status == 404:
                    return [], None
                if exc.status == 409:
                    continue  # someone else wrote in between: read again
                raise
            return removed, obj
        raise RuntimeError(f"{plural}/{name}: finalizers kept changing; gave up after retries")
