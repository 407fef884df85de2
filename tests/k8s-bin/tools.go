//go:build tools

// Package tools pins the two programs scripts/build-k8s-bin.sh builds, so that `go mod tidy`
// keeps their whole dependency graph in go.sum: kube-apiserver and etcd (whose module's root
// package is etcd's own main, calling etcdmain.Main).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
