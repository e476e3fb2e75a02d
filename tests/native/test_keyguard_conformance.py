"""The core's backend conformance suite, run against the KeyGuard backend on the stand-ins."""

from __future__ import annotations

import pytest
from msiv2_async_keyguard import KeyGuardBackend
from native_support import Controls

from msiv2_async.testing import BackendConformance


class TestKeyGuardConformance(BackendConformance):
    # The first priority() call probes VBS by creating an ephemeral KeyGuard key (RSA-2048 key
    # generation in the stand-in); later calls are cached.
    priority_time_limit = 2.0

    @pytest.fixture
    def backend_factory(self, native: Controls) -> type[KeyGuardBackend]:
        return KeyGuardBackend
