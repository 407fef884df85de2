"""The operator (kopf) against the API emulator: loopback sockets only, no root, no VM."""
