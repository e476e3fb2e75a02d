"""4. Cold acquire_token, per step, vs the sum of the same steps measured alone.

``ours`` is one ``acquire_token`` on a new client (client construction excluded): IMDS client set-up,
getplatformmetadata, key, CSR signature, issuecredential, mTLS context, token request with its handshake;
each step's time comes from the client's ``step_observer``. ``alone`` does the same steps one after the
other, blocking, with nothing around them: a raw HTTP exchange for each request (the request bytes come
from the library's own builders), the backend's ``open_key``/``sign`` called directly, the same mTLS
context built directly, and a bare ``ssl`` handshake + token request. Rounds interleave the two.

"existing_key": the backend already holds its key (``open_key`` returns at once, as with a persisted or
KeyGuard key). "fresh_key": the key is generated inside the measured call.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from msiv2_async import MsiV2Client, _binding, _csr, _imds, _sts
from msiv2_async._driver import Step
from msiv2_async._effects import HttpResponse
from msiv2_async._models import Binding, ManagedIdentity
from msiv2_async.backends import KeyBackend

from . import _raw
from ._setup import Target
from ._stats import ratio, summary

OUR_STEPS = ("imds_setup", "getplatformmetadata", "key", "csr_sign", "issuecredential", "mtls_setup", "token")
ALONE_STEPS = (
    "getplatformmetadata",
    "key",
    "csr_sign",
    "issuecredential",
    "mtls_setup",
    "handshake",
    "token",
)


def _http(response: _raw.RawResponse) -> HttpResponse:
    return HttpResponse(status=response.status, headers=response.headers, body=response.body)


def steps_alone(
    target: Target, backend: KeyBackend, identity: ManagedIdentity, scope: str
) -> dict[str, float]:
    """The bare flow, each step timed in milliseconds (``csr_sign`` = CSR build + sign)."""
    times: dict[str, float] = {}
    correlation_id = str(uuid.uuid4())
    base = target.imds_endpoint

    def timed(name: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = work()
        times[name] = (time.perf_counter() - started) * 1000
        return result

    response, timing = _raw.exchange(_imds.metadata_request(base, identity, correlation_id))
    times["getplatformmetadata"] = timing.total_ms
    metadata = _imds.parse_metadata(_http(response))
    key = timed("key", lambda: backend.open_key("MsiV2AsyncBench_cold"))

    def build_csr() -> bytes:
        info = _csr.request_info(
            client_id=metadata.client_id, tenant_id=metadata.tenant_id, cu_id=metadata.cu_id, key=key
        )
        return _csr.assemble(info, backend.sign(info))

    csr = timed("csr_sign", build_csr)
    request = _imds.issue_credential_request(base, identity, correlation_id, _csr.wire_form(csr), None)
    response, timing = _raw.exchange(request)
    times["issuecredential"] = timing.total_ms
    issued = _imds.parse_issued_credential(_http(response))
    context_factory = getattr(backend, "client_ssl_context", None)
    if not callable(context_factory):
        return times  # a backend without an ssl context (KeyGuard: WinHTTP) has no bare TLS counterpart
    context = timed("mtls_setup", lambda: context_factory(issued.certificate_der, target.tls))
    certificate = _binding.certificate_for_key(
        issued.certificate_der, key, backend=backend.name, now=datetime.now(timezone.utc)
    )
    endpoint = _sts.token_endpoint(issued.mtls_authentication_endpoint, issued.tenant_id, ("*:*",))
    binding = Binding(certificate, issued.client_id, issued.tenant_id, endpoint, False)
    response, timing = _raw.exchange(_sts.token_request(binding, scope, correlation_id), context)
    if response.status != 200:
        raise RuntimeError(f"bare token request failed: HTTP {response.status}")
    times["handshake"] = timing.connect_ms
    times["token"] = timing.request_ms
    return times


async def ours(target: Target, backend: KeyBackend, scope: str) -> tuple[float, dict[str, float]]:
    """One cold acquire_token on a new client: total ms and ms per step."""
    steps: list[Step] = []
    client = MsiV2Client(**target.client_kwargs, backend=backend, step_observer=steps.append)
    try:
        started = time.perf_counter()
        await client.acquire_token(scope)
        total = (time.perf_counter() - started) * 1000
    finally:
        await client.aclose()
    per_step: dict[str, float] = defaultdict(float)
    for step in steps:
        per_step[step.name] += step.milliseconds
    return total, dict(per_step)


async def _mode(
    target: Target, make_backend: Callable[[], KeyBackend], existing: bool, rounds: int, scope: str
) -> dict[str, Any]:
    identity = ManagedIdentity.system_assigned()
    totals: list[float] = []
    sums: list[float] = []
    our_steps: dict[str, list[float]] = defaultdict(list)
    alone: dict[str, list[float]] = defaultdict(list)

    def backend() -> KeyBackend:
        instance = make_backend()
        if existing:
            instance.open_key("MsiV2AsyncBench_cold")
        return instance

    for index in range(rounds):
        for contender in ("ours", "alone") if index % 2 == 0 else ("alone", "ours"):
            if contender == "ours":
                total, per_step = await ours(target, backend(), scope)
                totals.append(total)
                for name in OUR_STEPS:
                    our_steps[name].append(per_step.get(name, 0.0))
                our_steps["unattributed"].append(total - sum(per_step.values()))
            else:
                instance = backend()
                try:
                    times = steps_alone(target, instance, identity, scope)
                finally:
                    instance.close()
                for name, value in times.items():
                    alone[name].append(value)
                sums.append(sum(times.values()))
    total_stats = summary(totals, "ms")
    sum_stats = summary(sums, "ms")
    return {
        "ours_total": total_stats,
        "alone_sum": sum_stats,
        "ratio": ratio(total_stats["median"], sum_stats["median"]),
        "ours_steps": {name: summary(values, "ms") for name, values in our_steps.items()},
        "alone_steps": {name: summary(values, "ms") for name, values in alone.items()},
    }


async def run(
    target: Target, make_backend: Callable[[], KeyBackend], rounds: int, scope: str
) -> dict[str, Any]:
    """Section 4, with an existing key and with a fresh key."""
    return {
        "rounds": rounds,
        "baseline": "alone_sum",
        "note": "ours: csr_sign is the signature only (the CSR is built in the flow, counted in "
        "'unattributed' with parsing, validation and thread hand-offs); alone: csr_sign is build + sign, "
        "handshake is TCP connect + TLS handshake, token is the request on that connection",
        "existing_key": await _mode(target, make_backend, True, rounds, scope),
        "fresh_key": await _mode(target, make_backend, False, rounds, scope),
    }
