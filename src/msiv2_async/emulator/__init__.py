"""A faithful local emulator of Azure IMDS (MSI v2 and v1), the Entra mTLS STS and an mTLS-bound resource.

Requires the ``emulator`` extra (aiohttp). Typical use::

    with Emulator() as emu:
        os.environ.update(emu.env())
        ...  # run an msiv2_async client against emu.imds_url

TLS notes: the STS and the resource request a client certificate and trust only the emulator CA, so a
client certificate from another CA makes the TLS handshake fail (the server sends an alert; the
handler never runs), while a connection without a client certificate is answered by the handlers with
``AADSTS392200`` (STS, HTTP 400) or 401 (resource).

Endpoints (:data:`ENDPOINTS`, the names faults are queued on and requests counted under):
``getplatformmetadata`` and ``issuecredential`` (IMDS v2), ``v1_token`` (IMDS ``GET
/metadata/identity/oauth2/token?api-version=...&resource=...``, an MSI v1 bearer token), ``token`` (STS)
and ``resource``. IMDS answers 400 to a request without ``Metadata: true`` (which is what discovery probes
rely on) or with ``X-Forwarded-For``, and counts them (``metadata_header_missing``, ``forwarded_for``,
``rejected_requests`` = their sum in :attr:`Emulator.stats`).

Fault injection
---------------
``emu.inject(endpoint, *faults)`` queues :class:`Fault` objects; each takes one later request. A fault
either scripts the answer (``status``, ``headers``, ``body`` or ``body_size``) or alters the normal one
(``response_fields``, ``certificate``, ``token``), and ``action`` says how it travels: ``respond``,
``hang``, ``slowloris`` (one byte per ``interval``), ``reset`` (RST mid-body), ``endless`` (a chunked
body that never ends) or ``handshake_reject``. See :class:`Fault` for every field and value.

TLS faults: ``emu.sts_tls`` / ``emu.resource_tls`` = ``"normal"``, ``"unknown_ca"``,
``"wrong_hostname"`` or ``"tls11_only"`` (:data:`TLS_MODES`), and ``emu.reject_client_certificates(n)``
(the next n STS handshakes end with an ``unknown ca`` alert; counted as
``stats["token_handshake_rejections"]``).

Secrets: every access token has a ``uti`` claim ``SENTINEL-AT-<random>``; :meth:`Emulator.sentinels`
lists every token, signature part and sentinel handed out, so tests can grep logs and files for leaks.

Control API
-----------
The same is reachable over plain HTTP on the IMDS listener, from loopback clients only, under
``/_emulator/`` (:attr:`Emulator.control_url`); control requests are never counted:

=======  ======================  ==========================================================================
GET      /_emulator/stats        200, the counters
POST     /_emulator/faults       ``{"endpoint": name, "faults": [fault, ...]}`` → 204 (all or none queued)
DELETE   /_emulator/faults       204, every queue emptied
POST     /_emulator/reset        204, counters zeroed, faults and pending handshake rejections dropped
GET      /_emulator/settings     200, the settings below
PUT      /_emulator/settings     any of the settings → 204 (all or none applied)
GET      /_emulator/sentinels    200, ``{"sentinels": [...]}``
=======  ======================  ==========================================================================

A fault in JSON has the :class:`Fault` field names: ``status`` (int or null), ``headers`` (object of
strings), ``body`` (string), ``delay``, ``interval`` (numbers), ``server_header`` (string or null),
``action``, ``certificate``, ``token`` (strings or null), ``body_size`` (int or null),
``certificate_seconds`` (int) and ``response_fields`` (object; the value ``{"$remove": true}`` deletes a
key). Settings: ``certificate_lifetime_seconds``, ``token_lifetime_seconds`` (numbers),
``require_attestation`` (bool), ``sts_tls``, ``resource_tls`` (TLS modes) and
``reject_client_certificates`` (int ≥ 0). Unknown fields, wrong types and unknown values get 400
``{"error": "invalid_request", "error_description": "..."}``. Examples, with ``msiv2-async emulator
--imds-port 8080`` running::

    C=http://127.0.0.1:8080/_emulator
    # IMDS throttles once, then hangs
    curl -X POST $C/faults -d '{"endpoint": "getplatformmetadata",
        "faults": [{"status": 429, "headers": {"Retry-After": "5"}}, {"action": "hang"}]}'
    # the next certificate is already expired; the token after that is bound to another certificate
    curl -X POST $C/faults -d '{"endpoint": "issuecredential", "faults": [{"certificate": "expired"}]}'
    curl -X POST $C/faults -d '{"endpoint": "token", "faults": [{"token": "wrong_cnf"}]}'
    # metadata with a non-GUID clientId and no cuId
    curl -X POST $C/faults -d '{"endpoint": "getplatformmetadata",
        "faults": [{"response_fields": {"clientId": "x", "cuId": {"$remove": true}}}]}'
    # the STS presents an untrusted certificate; then rejects the next client certificate
    curl -X PUT $C/settings -d '{"sts_tls": "unknown_ca"}'
    curl -X PUT $C/settings -d '{"sts_tls": "normal", "reject_client_certificates": 1}'
    curl $C/stats
    curl -X POST $C/reset
"""

from ._models import (
    ACTIONS,
    CERTIFICATE_VARIANTS,
    COUNTERS,
    ENDPOINTS,
    REMOVE,
    TLS_MODES,
    TOKEN_VARIANTS,
    Fault,
    Identity,
)
from ._server import DEFAULT_AUDIENCES, Emulator

__all__ = [
    "ACTIONS",
    "CERTIFICATE_VARIANTS",
    "COUNTERS",
    "DEFAULT_AUDIENCES",
    "ENDPOINTS",
    "REMOVE",
    "TLS_MODES",
    "TOKEN_VARIANTS",
    "Emulator",
    "Fault",
    "Identity",
]
