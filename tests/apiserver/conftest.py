"""The emulator's own tests: loopback sockets only, no root, no VM."""

from .fixtures import apiserver, empty_apiserver

__all__ = ["apiserver", "empty_apiserver"]
