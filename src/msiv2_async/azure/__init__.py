"""azure-core integration (extra ``azure``): credentials, an mtls_pop auth policy and mTLS transports.

An Azure SDK client (or an azure-core ``PipelineClient``) needs all three to call a resource with
``Authorization: mtls_pop <token>`` over mTLS: the credential gets the token, the policy writes the
``mtls_pop`` scheme and names the bound certificate, and the transport presents that certificate in the
TLS handshake (and follows its rotation). azure-core's own policies write ``Bearer`` and its own
transports take client certificates only as files, so neither can do it alone.
"""

try:
    import azure.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("msiv2_async.azure needs azure-core: pip install 'msiv2-async[azure]'") from exc

from ._credential import MsiV2Credential, MsiV2CredentialSync, MtlsPopTokenInfo
from ._policy import CERTIFICATE_OPTION, AsyncMtlsPopPolicy, MtlsPopPolicy
from ._transport import AsyncMtlsTransport, MtlsTransport

__all__ = [
    "CERTIFICATE_OPTION",
    "AsyncMtlsPopPolicy",
    "AsyncMtlsTransport",
    "MsiV2Credential",
    "MsiV2CredentialSync",
    "MtlsPopPolicy",
    "MtlsPopTokenInfo",
    "MtlsTransport",
]
