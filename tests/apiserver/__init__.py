"""A realistic in-memory Kubernetes API server (kmock, extended): what is left of the stand-in.

The API tests run on a real kube-apiserver now (tests/realapi, tests/cluster, tests/controller).
The emulator stays where the real one does not go yet, or cannot: the end-to-end test in the VM
(tests/kernel/test_e2e_cluster.py) and the control-plane benchmark (tests/bench/controlplane.py)
still run on it, and it records what every watch was sent (`watches()`), which a real server
does not tell. It validates custom resources with the product's own validator, so a test that
passes on it proves nothing about what a real API server accepts.

`emulator` holds the API semantics, `server` runs it in a thread of its own, `fixtures` is the
pytest face (`apiserver`, `empty_apiserver`). Its own tests live beside it.
"""
