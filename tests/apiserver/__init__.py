"""A realistic in-memory Kubernetes API server (kmock, extended) for the controller's tests.

No kube-apiserver can be installed on these machines; this package stands in for it on loopback.
`emulator` holds the API semantics, `server` runs it in a thread of its own, `fixtures` is the
pytest face (`apiserver`, `empty_apiserver`). Its own tests live beside it.
"""
