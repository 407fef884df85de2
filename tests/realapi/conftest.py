"""Tests against a real kube-apiserver and etcd on loopback (no root, no VM, no kubelet); the
fixtures (real_api, api, kubectl) are in tests/conftest.py."""
