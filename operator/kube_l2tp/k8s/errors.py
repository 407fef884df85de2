"""The API client's exceptions under the names the layers above catch them by.

controller/ and agent/ import no ``kubernetes`` (an import-linter contract): what they need to
catch from a call into k8s/ they import from here.
"""

from kubernetes.client.exceptions import ApiException as ApiError
from kubernetes.config.config_exception import ConfigException as NoClusterConfig

__all__ = ["ApiError", "NoClusterConfig"]
