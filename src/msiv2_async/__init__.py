"""msiv2_async: async Azure Managed Identity v2 tokens (IMDS issuecredential + mTLS PoP).

>>> token = await acquire_token("https://vault.azure.net")   # doctest: +SKIP
"""

from ._errors import (
    BackendError,
    BackendNotFoundError,
    BindingMismatchError,
    CertificateIssuanceError,
    ConfigurationError,
    ImdsError,
    ImdsUnreachableError,
    ImdsV2NotSupportedError,
    MalformedResponseError,
    MsiV2Error,
    MsiV2TimeoutError,
    MsiV2UnavailableError,
    TokenRequestError,
    UntrustedEndpointError,
)
from ._models import BindingCertificate, ManagedIdentity, MtlsPopToken
from .backends import BackendInfo, KeyBackend, SoftwareBackend, available_backends, get_backend
from .client import DEFAULT_SCOPE, MsiV2Client, Step, acquire_token

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SCOPE",
    "BackendError",
    "BackendInfo",
    "BackendNotFoundError",
    "BindingCertificate",
    "BindingMismatchError",
    "CertificateIssuanceError",
    "ConfigurationError",
    "ImdsError",
    "ImdsUnreachableError",
    "ImdsV2NotSupportedError",
    "KeyBackend",
    "MalformedResponseError",
    "ManagedIdentity",
    "MsiV2Client",
    "MsiV2Error",
    "MsiV2TimeoutError",
    "MsiV2UnavailableError",
    "MtlsPopToken",
    "SoftwareBackend",
    "Step",
    "TokenRequestError",
    "UntrustedEndpointError",
    "__version__",
    "acquire_token",
    "available_backends",
    "get_backend",
]
