"""The operator (kopf) against the real kube-apiserver: loopback sockets only, no root, no VM."""
