"""msiv2_async: async Azure Managed Identity v2 tokens (IMDS issuecredential + mTLS PoP).

>>> token = await acquire_token("https://vault.azure.net")   # doctest: +SKIP
"""

from ._api import aclose_default_clients, acquire_token, default_client
from ._clock import Clock, FakeClock, SystemClock
from ._driver import Step
from ._errors import (
    BackendError,
    BackendNotFoundError,
    BindingMismatchError,
    CertificateIssuanceError,
    ConfigurationError,
    ImdsError,
    ImdsThrottledError,
    ImdsUnreachableError,
    ImdsV2NotSupportedError,
    MalformedResponseError,
    MsiV2Error,
    MsiV2TimeoutError,
    MsiV2UnavailableError,
    StsThrottledError,
    ThrottledError,
    TokenRequestError,
    UntrustedEndpointError,
)
from ._httpx import MtlsPopAuth, MtlsPopSyncTransport, MtlsPopTransport, create_mtls_client
from ._models import (
    BearerToken,
    BindingCertificate,
    Capabilities,
    ManagedIdentity,
    ManagedIdentitySource,
    MtlsPopToken,
)
from ._retry import NO_RETRY, RetryPolicy
from ._store import BindingStore, FileBindingStore, PersistedBinding
from .backends import BackendInfo, KeyBackend, SoftwareBackend, available_backends, get_backend
from .client import DEFAULT_SCOPE, MsiV2Client
from .sync import MsiV2SyncClient, acquire_token_sync, close_default_sync_clients

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SCOPE",
    "NO_RETRY",
    "BackendError",
    "BackendInfo",
    "BackendNotFoundError",
    "BearerToken",
    "BindingCertificate",
    "BindingMismatchError",
    "BindingStore",
    "Capabilities",
    "CertificateIssuanceError",
    "Clock",
    "ConfigurationError",
    "FakeClock",
    "FileBindingStore",
    "ImdsError",
    "ImdsThrottledError",
    "ImdsUnreachableError",
    "ImdsV2NotSupportedError",
    "KeyBackend",
    "MalformedResponseError",
    "ManagedIdentity",
    "ManagedIdentitySource",
    "MsiV2Client",
    "MsiV2Error",
    "MsiV2SyncClient",
    "MsiV2TimeoutError",
    "MsiV2UnavailableError",
    "MtlsPopAuth",
    "MtlsPopSyncTransport",
    "MtlsPopToken",
    "MtlsPopTransport",
    "PersistedBinding",
    "RetryPolicy",
    "SoftwareBackend",
    "Step",
    "StsThrottledError",
    "SystemClock",
    "ThrottledError",
    "TokenRequestError",
    "UntrustedEndpointError",
    "__version__",
    "aclose_default_clients",
    "acquire_token",
    "acquire_token_sync",
    "available_backends",
    "close_default_sync_clients",
    "create_mtls_client",
    "default_client",
    "get_backend",
]
