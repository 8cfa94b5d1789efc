"""Kubernetes test infrastructure: an HTTP API emulator (on kmock) and a "kubelet"."""
