"""Skipping a test as n/a, with the bpf layer's own words, where the kernel lacks a feature.

The kernel matrix reads a skip that starts with "n/a:" as "not available on
this kernel", so a missing feature never passes for a failure or the reverse.
"""
import os

import pytest

from gespann.bpf.features import FeatureStatus


def require(*statuses: FeatureStatus) -> None:
    """Skip unless every feature is available; the reason is the FeatureUnsupportedError message."""
    for status in statuses:
        if not status.available:
            pytest.skip(f"n/a: {status.error()}")


def kernel_at_least(major: int, minor: int) -> bool:
    """For the few facts that are pure kernel history (a field added to an info struct), not features."""
    release = os.uname().release.split("-")[0].split("+")[0]
    return tuple(int(part) for part in release.split(".")[:2]) >= (major, minor)
