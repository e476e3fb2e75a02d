"""A faithful local emulator of Azure IMDS (MSI v2), the Entra mTLS STS and an mTLS-bound resource.

Requires the ``emulator`` extra (aiohttp). Typical use::

    with Emulator() as emu:
        os.environ.update(emu.env())
        ...  # run an msiv2_async client against emu.imds_url

TLS notes: the STS and the resource request a client certificate and trust only the emulator CA, so a
client certificate from another CA makes the TLS handshake fail (the server sends an alert; the
handler never runs), while a connection without a client certificate is answered by the handlers with
``AADSTS392200`` (STS, HTTP 400) or 401 (resource).
"""

from ._models import Fault, Identity
from ._server import DEFAULT_AUDIENCES, Emulator

__all__ = ["DEFAULT_AUDIENCES", "Emulator", "Fault", "Identity"]
