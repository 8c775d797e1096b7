"""Deployment tooling: a container engine on this machine as the deployment tests use it."""
