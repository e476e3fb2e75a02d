# ruff: noqa: E501 (the C text keeps the layout of NATIVE.md §5)
"""The cffi ``cdef`` text of the four Windows DLLs (NATIVE.md §5) and the tables checked against the headers.

Every Windows typedef is spelled with a fixed-width type, so the same text parses on Linux and on
Windows and yields the x64 layout on both (only ``wchar_t`` differs, and it appears behind pointers
only). :data:`STRUCTS`, :func:`int_constants` and the error tables feed the compile-only check
against the real mingw-w64 headers (``tests/native/static_check.py``, NATIVE.md Appendix A).

Additions to the verified §5 text are marked ``/* + */``: ``WinHttpQueryOption`` and the options and
status codes of the server-certificate check and of the disabled WinHTTP features.
"""

from __future__ import annotations

import re

COMMON_CDEF = """
typedef uint8_t   BYTE;
typedef uint16_t  WORD;
typedef uint32_t  DWORD;
typedef uint32_t  ULONG;
typedef int32_t   LONG;
typedef int       BOOL;
typedef int32_t   SECURITY_STATUS;
typedef uintptr_t ULONG_PTR;
typedef uintptr_t DWORD_PTR;
typedef wchar_t   WCHAR;
typedef const wchar_t *LPCWSTR;
typedef wchar_t  *LPWSTR;
typedef const char *LPCSTR;
typedef void     *LPVOID;
typedef void     *PVOID;
typedef BYTE     *PBYTE;
typedef DWORD    *LPDWORD;
"""

NCRYPT_CDEF = """
typedef ULONG_PTR NCRYPT_HANDLE;
typedef ULONG_PTR NCRYPT_PROV_HANDLE;
typedef ULONG_PTR NCRYPT_KEY_HANDLE;

typedef struct _BCRYPT_PKCS1_PADDING_INFO { LPCWSTR pszAlgId; } BCRYPT_PKCS1_PADDING_INFO;
typedef struct _BCRYPT_PSS_PADDING_INFO   { LPCWSTR pszAlgId; ULONG cbSalt; } BCRYPT_PSS_PADDING_INFO;
typedef struct _BCRYPT_RSAKEY_BLOB {
    ULONG Magic; ULONG BitLength; ULONG cbPublicExp; ULONG cbModulus; ULONG cbPrime1; ULONG cbPrime2;
} BCRYPT_RSAKEY_BLOB;
typedef struct _NCryptBuffer     { ULONG cbBuffer; ULONG BufferType; PVOID pvBuffer; } NCryptBuffer;
typedef struct _NCryptBufferDesc { ULONG ulVersion; ULONG cBuffers; NCryptBuffer *pBuffers; } NCryptBufferDesc;
typedef struct _NCryptKeyName    { LPWSTR pszName; LPWSTR pszAlgid; DWORD dwLegacyKeySpec; DWORD dwFlags; } NCryptKeyName;

SECURITY_STATUS WINAPI NCryptOpenStorageProvider(NCRYPT_PROV_HANDLE *phProvider, LPCWSTR pszProviderName, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptOpenKey(NCRYPT_PROV_HANDLE hProvider, NCRYPT_KEY_HANDLE *phKey, LPCWSTR pszKeyName,
                                     DWORD dwLegacyKeySpec, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptCreatePersistedKey(NCRYPT_PROV_HANDLE hProvider, NCRYPT_KEY_HANDLE *phKey, LPCWSTR pszAlgId,
                                                LPCWSTR pszKeyName, DWORD dwLegacyKeySpec, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptSetProperty(NCRYPT_HANDLE hObject, LPCWSTR pszProperty, PBYTE pbInput, DWORD cbInput, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptGetProperty(NCRYPT_HANDLE hObject, LPCWSTR pszProperty, PBYTE pbOutput, DWORD cbOutput,
                                         DWORD *pcbResult, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptFinalizeKey(NCRYPT_KEY_HANDLE hKey, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptExportKey(NCRYPT_KEY_HANDLE hKey, NCRYPT_KEY_HANDLE hExportKey, LPCWSTR pszBlobType,
                                       NCryptBufferDesc *pParameterList, PBYTE pbOutput, DWORD cbOutput,
                                       DWORD *pcbResult, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptSignHash(NCRYPT_KEY_HANDLE hKey, void *pPaddingInfo, PBYTE pbHashValue, DWORD cbHashValue,
                                      PBYTE pbSignature, DWORD cbSignature, DWORD *pcbResult, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptVerifySignature(NCRYPT_KEY_HANDLE hKey, void *pPaddingInfo, PBYTE pbHashValue, DWORD cbHashValue,
                                             PBYTE pbSignature, DWORD cbSignature, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptDeleteKey(NCRYPT_KEY_HANDLE hKey, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptFreeObject(NCRYPT_HANDLE hObject);
SECURITY_STATUS WINAPI NCryptEnumKeys(NCRYPT_PROV_HANDLE hProvider, LPCWSTR pszScope, NCryptKeyName **ppKeyName,
                                      PVOID *ppEnumState, DWORD dwFlags);
SECURITY_STATUS WINAPI NCryptFreeBuffer(PVOID pvInput);

#define NCRYPT_SILENT_FLAG                   0x00000040
#define NCRYPT_MACHINE_KEY_FLAG              0x00000020
#define NCRYPT_OVERWRITE_KEY_FLAG            0x00000080
#define NCRYPT_PREFER_VIRTUAL_ISOLATION_FLAG 0x00010000
#define NCRYPT_USE_VIRTUAL_ISOLATION_FLAG    0x00020000
#define NCRYPT_USE_PER_BOOT_KEY_FLAG         0x00040000
#define NCRYPT_PERSIST_ONLY_FLAG             0x40000000
#define NCRYPT_PERSIST_FLAG                  0x80000000
#define NCRYPT_ALLOW_EXPORT_FLAG             0x00000001
#define NCRYPT_ALLOW_PLAINTEXT_EXPORT_FLAG   0x00000002
#define NCRYPT_ALLOW_DECRYPT_FLAG            0x00000001
#define NCRYPT_ALLOW_SIGNING_FLAG            0x00000002
#define NCRYPT_ALLOW_KEY_AGREEMENT_FLAG      0x00000004
#define NCRYPT_ALLOW_ALL_USAGES              0x00ffffff
#define NCRYPT_IMPL_HARDWARE_FLAG            0x00000001
#define NCRYPT_IMPL_SOFTWARE_FLAG            0x00000002
#define NCRYPT_IMPL_VIRTUAL_ISOLATION_FLAG   0x00000020
#define NCRYPT_PAD_PKCS1_FLAG                0x00000002
#define NCRYPT_PAD_PSS_FLAG                  0x00000008
#define BCRYPT_PAD_PSS                       0x00000008
#define BCRYPT_RSAPUBLIC_MAGIC               0x31415352
#define AT_KEYEXCHANGE                       1
#define AT_SIGNATURE                         2
"""

CRYPT32_CDEF = """
typedef void     *HCERTSTORE;
typedef ULONG_PTR HCRYPTPROV_LEGACY;
typedef ULONG_PTR HCRYPTPROV_OR_NCRYPT_KEY_HANDLE;

typedef struct _CERT_CONTEXT {
    DWORD dwCertEncodingType; BYTE *pbCertEncoded; DWORD cbCertEncoded; void *pCertInfo; HCERTSTORE hCertStore;
} CERT_CONTEXT;
typedef const CERT_CONTEXT *PCCERT_CONTEXT;
typedef struct _CRYPTOAPI_BLOB { DWORD cbData; BYTE *pbData; } CRYPT_DATA_BLOB;
typedef struct _CRYPT_KEY_PROV_INFO {
    LPWSTR pwszContainerName; LPWSTR pwszProvName; DWORD dwProvType; DWORD dwFlags;
    DWORD cProvParam; void *rgProvParam; DWORD dwKeySpec;
} CRYPT_KEY_PROV_INFO;
typedef struct _CERT_KEY_CONTEXT { DWORD cbSize; ULONG_PTR hCryptProvOrNCryptKey; DWORD dwKeySpec; } CERT_KEY_CONTEXT;

PCCERT_CONTEXT WINAPI CertCreateCertificateContext(DWORD dwCertEncodingType, const BYTE *pbCertEncoded, DWORD cbCertEncoded);
PCCERT_CONTEXT WINAPI CertDuplicateCertificateContext(PCCERT_CONTEXT pCertContext);
BOOL WINAPI CertFreeCertificateContext(PCCERT_CONTEXT pCertContext);
BOOL WINAPI CertSetCertificateContextProperty(PCCERT_CONTEXT pCertContext, DWORD dwPropId, DWORD dwFlags, const void *pvData);
BOOL WINAPI CertGetCertificateContextProperty(PCCERT_CONTEXT pCertContext, DWORD dwPropId, void *pvData, DWORD *pcbData);
HCERTSTORE WINAPI CertOpenStore(LPCSTR lpszStoreProvider, DWORD dwEncodingType, HCRYPTPROV_LEGACY hCryptProv,
                                DWORD dwFlags, const void *pvPara);
BOOL WINAPI CertCloseStore(HCERTSTORE hCertStore, DWORD dwFlags);
PCCERT_CONTEXT WINAPI CertEnumCertificatesInStore(HCERTSTORE hCertStore, PCCERT_CONTEXT pPrevCertContext);
BOOL WINAPI CertAddCertificateContextToStore(HCERTSTORE hCertStore, PCCERT_CONTEXT pCertContext, DWORD dwAddDisposition,
                                             PCCERT_CONTEXT *ppStoreContext);
BOOL WINAPI CertDeleteCertificateFromStore(PCCERT_CONTEXT pCertContext);
BOOL WINAPI CryptAcquireCertificatePrivateKey(PCCERT_CONTEXT pCert, DWORD dwFlags, void *pvParameters,
                                              HCRYPTPROV_OR_NCRYPT_KEY_HANDLE *phCryptProvOrNCryptKey,
                                              DWORD *pdwKeySpec, BOOL *pfCallerFreeProvOrNCryptKey);

#define X509_ASN_ENCODING                         0x00000001
#define PKCS_7_ASN_ENCODING                       0x00010000
#define CERT_KEY_PROV_INFO_PROP_ID                2
#define CERT_SHA1_HASH_PROP_ID                    3
#define CERT_KEY_CONTEXT_PROP_ID                  5
#define CERT_FRIENDLY_NAME_PROP_ID                11
#define CERT_NCRYPT_KEY_HANDLE_PROP_ID            78
#define CERT_HCRYPTPROV_OR_NCRYPT_KEY_HANDLE_PROP_ID 79
#define CERT_NCRYPT_KEY_HANDLE_TRANSFER_PROP_ID   99
#define CERT_SET_PROPERTY_IGNORE_PERSIST_ERROR_FLAG 0x80000000
#define CERT_SET_PROPERTY_INHIBIT_PERSIST_FLAG    0x40000000
#define CERT_NCRYPT_KEY_SPEC                      0xFFFFFFFF
#define CRYPT_MACHINE_KEYSET                      0x00000020
#define CRYPT_SILENT                              0x00000040
#define CERT_STORE_PROV_SYSTEM_W                  10
#define CERT_SYSTEM_STORE_CURRENT_USER            0x00010000
#define CERT_STORE_OPEN_EXISTING_FLAG             0x00004000
#define CERT_STORE_READONLY_FLAG                  0x00008000
#define CERT_STORE_ADD_NEW                        1
#define CERT_STORE_ADD_REPLACE_EXISTING           3
#define CERT_STORE_ADD_REPLACE_EXISTING_INHERIT_PROPERTIES 5
#define CERT_CLOSE_STORE_CHECK_FLAG               0x00000002
#define CRYPT_ACQUIRE_CACHE_FLAG                  0x00000001
#define CRYPT_ACQUIRE_SILENT_FLAG                 0x00000040
#define CRYPT_ACQUIRE_ONLY_NCRYPT_KEY_FLAG        0x00040000
"""

WINHTTP_CDEF = """
typedef void    *HINTERNET;
typedef uint16_t INTERNET_PORT;
typedef void (WINAPI *WINHTTP_STATUS_CALLBACK)(HINTERNET hInternet, DWORD_PTR dwContext, DWORD dwInternetStatus,
                                               LPVOID lpvStatusInformation, DWORD dwStatusInformationLength);
typedef struct _WINHTTP_ASYNC_RESULT { DWORD_PTR dwResult; DWORD dwError; } WINHTTP_ASYNC_RESULT;

HINTERNET WINAPI WinHttpOpen(LPCWSTR pszAgentW, DWORD dwAccessType, LPCWSTR pszProxyW, LPCWSTR pszProxyBypassW, DWORD dwFlags);
HINTERNET WINAPI WinHttpConnect(HINTERNET hSession, LPCWSTR pswzServerName, INTERNET_PORT nServerPort, DWORD dwReserved);
HINTERNET WINAPI WinHttpOpenRequest(HINTERNET hConnect, LPCWSTR pwszVerb, LPCWSTR pwszObjectName, LPCWSTR pwszVersion,
                                    LPCWSTR pwszReferrer, LPCWSTR *ppwszAcceptTypes, DWORD dwFlags);
BOOL WINAPI WinHttpSetOption(HINTERNET hInternet, DWORD dwOption, LPVOID lpBuffer, DWORD dwBufferLength);
BOOL WINAPI WinHttpQueryOption(HINTERNET hInternet, DWORD dwOption, LPVOID lpBuffer, LPDWORD lpdwBufferLength); /* + */
BOOL WINAPI WinHttpSetTimeouts(HINTERNET hInternet, int nResolveTimeout, int nConnectTimeout, int nSendTimeout, int nReceiveTimeout);
BOOL WINAPI WinHttpAddRequestHeaders(HINTERNET hRequest, LPCWSTR lpszHeaders, DWORD dwHeadersLength, DWORD dwModifiers);
BOOL WINAPI WinHttpSendRequest(HINTERNET hRequest, LPCWSTR lpszHeaders, DWORD dwHeadersLength, LPVOID lpOptional,
                               DWORD dwOptionalLength, DWORD dwTotalLength, DWORD_PTR dwContext);
BOOL WINAPI WinHttpReceiveResponse(HINTERNET hRequest, LPVOID lpReserved);
BOOL WINAPI WinHttpQueryHeaders(HINTERNET hRequest, DWORD dwInfoLevel, LPCWSTR pwszName, LPVOID lpBuffer,
                                LPDWORD lpdwBufferLength, LPDWORD lpdwIndex);
BOOL WINAPI WinHttpQueryDataAvailable(HINTERNET hRequest, LPDWORD lpdwNumberOfBytesAvailable);
BOOL WINAPI WinHttpReadData(HINTERNET hRequest, LPVOID lpBuffer, DWORD dwNumberOfBytesToRead, LPDWORD lpdwNumberOfBytesRead);
BOOL WINAPI WinHttpCloseHandle(HINTERNET hInternet);
WINHTTP_STATUS_CALLBACK WINAPI WinHttpSetStatusCallback(HINTERNET hInternet, WINHTTP_STATUS_CALLBACK lpfnInternetCallback,
                                                        DWORD dwNotificationFlags, DWORD_PTR dwReserved);

#define WINHTTP_ACCESS_TYPE_DEFAULT_PROXY           0
#define WINHTTP_ACCESS_TYPE_NO_PROXY                1
#define WINHTTP_ACCESS_TYPE_AUTOMATIC_PROXY         4
#define WINHTTP_FLAG_ASYNC                          0x10000000
#define WINHTTP_FLAG_SECURE                         0x00800000
#define INTERNET_DEFAULT_HTTPS_PORT                 443
#define WINHTTP_OPTION_SECURITY_FLAGS               31
#define WINHTTP_OPTION_CONTEXT_VALUE                45
#define WINHTTP_OPTION_CLIENT_CERT_CONTEXT          47
#define WINHTTP_OPTION_DISABLE_FEATURE              63   /* + */
#define WINHTTP_OPTION_SERVER_CERT_CONTEXT          78   /* + */
#define WINHTTP_OPTION_SECURE_PROTOCOLS             84
#define WINHTTP_OPTION_REDIRECT_POLICY              88   /* + */
#define WINHTTP_OPTION_ENABLE_HTTP_PROTOCOL         133
#define WINHTTP_OPTION_ENABLE_HTTP2_PLUS_CLIENT_CERT 161
#define WINHTTP_OPTION_REDIRECT_POLICY_NEVER        0    /* + */
#define WINHTTP_DISABLE_COOKIES                     0x00000001   /* + */
#define WINHTTP_DISABLE_REDIRECTS                   0x00000002   /* + */
#define WINHTTP_DISABLE_AUTHENTICATION              0x00000004   /* + */
#define WINHTTP_PROTOCOL_FLAG_HTTP2                 0x00000001
#define SECURITY_FLAG_IGNORE_UNKNOWN_CA             0x00000100
#define SECURITY_FLAG_IGNORE_CERT_CN_INVALID        0x00001000
#define SECURITY_FLAG_IGNORE_CERT_DATE_INVALID      0x00002000
#define WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_2         0x00000800
#define WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_3         0x00002000
#define WINHTTP_QUERY_STATUS_CODE                   19
#define WINHTTP_QUERY_STATUS_TEXT                   20   /* + */
#define WINHTTP_QUERY_RAW_HEADERS_CRLF              22
#define WINHTTP_QUERY_FLAG_NUMBER                   0x20000000
#define WINHTTP_ADDREQ_FLAG_ADD                     0x20000000
#define WINHTTP_ADDREQ_FLAG_REPLACE                 0x80000000
#define WINHTTP_CALLBACK_STATUS_SENDING_REQUEST     0x00000010   /* + */
#define WINHTTP_CALLBACK_STATUS_REQUEST_SENT        0x00000020   /* + */
#define WINHTTP_CALLBACK_STATUS_HANDLE_CLOSING      0x00000800
#define WINHTTP_CALLBACK_STATUS_SECURE_FAILURE      0x00010000
#define WINHTTP_CALLBACK_STATUS_HEADERS_AVAILABLE   0x00020000
#define WINHTTP_CALLBACK_STATUS_DATA_AVAILABLE      0x00040000
#define WINHTTP_CALLBACK_STATUS_READ_COMPLETE       0x00080000
#define WINHTTP_CALLBACK_STATUS_WRITE_COMPLETE      0x00100000
#define WINHTTP_CALLBACK_STATUS_REQUEST_ERROR       0x00200000
#define WINHTTP_CALLBACK_STATUS_SENDREQUEST_COMPLETE 0x00400000
#define WINHTTP_CALLBACK_FLAG_SEND_REQUEST          0x00000030   /* + */
#define WINHTTP_CALLBACK_FLAG_SECURE_FAILURE        0x00010000   /* + */
#define WINHTTP_CALLBACK_FLAG_ALL_COMPLETIONS       0x017E0000
#define WINHTTP_CALLBACK_FLAG_ALL_NOTIFICATIONS     0xFFFFFFFF
#define WINHTTP_CALLBACK_FLAG_HANDLES               0x00000C00
#define WINHTTP_CALLBACK_STATUS_FLAG_CERT_REV_FAILED 0x00000001  /* + */
#define WINHTTP_CALLBACK_STATUS_FLAG_INVALID_CERT   0x00000002   /* + */
#define WINHTTP_CALLBACK_STATUS_FLAG_CERT_REVOKED   0x00000004   /* + */
#define WINHTTP_CALLBACK_STATUS_FLAG_INVALID_CA     0x00000008   /* + */
#define WINHTTP_CALLBACK_STATUS_FLAG_CERT_CN_INVALID 0x00000010  /* + */
#define WINHTTP_CALLBACK_STATUS_FLAG_CERT_DATE_INVALID 0x00000020 /* + */
#define API_RECEIVE_RESPONSE                        1
#define API_QUERY_DATA_AVAILABLE                    2
#define API_READ_DATA                               3
#define API_WRITE_DATA                              4
#define API_SEND_REQUEST                            5
#define ERROR_INSUFFICIENT_BUFFER                   122
#define ERROR_IO_PENDING                            997
#define ERROR_WINHTTP_TIMEOUT                       12002
#define ERROR_WINHTTP_INTERNAL_ERROR                12004   /* + */
#define ERROR_WINHTTP_INVALID_URL                   12005   /* + */
#define ERROR_WINHTTP_UNRECOGNIZED_SCHEME           12006   /* + */
#define ERROR_WINHTTP_NAME_NOT_RESOLVED             12007
#define ERROR_WINHTTP_INVALID_OPTION                12009   /* + */
#define ERROR_WINHTTP_OPERATION_CANCELLED           12017
#define ERROR_WINHTTP_INCORRECT_HANDLE_TYPE         12018   /* + */
#define ERROR_WINHTTP_INCORRECT_HANDLE_STATE        12019
#define ERROR_WINHTTP_CANNOT_CONNECT                12029
#define ERROR_WINHTTP_CONNECTION_ERROR              12030
#define ERROR_WINHTTP_SECURE_CERT_DATE_INVALID      12037   /* + */
#define ERROR_WINHTTP_SECURE_CERT_CN_INVALID        12038   /* + */
#define ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED       12044
#define ERROR_WINHTTP_SECURE_INVALID_CA             12045   /* + */
#define ERROR_WINHTTP_HEADER_NOT_FOUND              12150   /* + */
#define ERROR_WINHTTP_INVALID_SERVER_RESPONSE       12152   /* + */
#define ERROR_WINHTTP_SECURE_CHANNEL_ERROR          12157   /* + */
#define ERROR_WINHTTP_SECURE_INVALID_CERT           12169   /* + */
#define ERROR_WINHTTP_SECURE_FAILURE                12175
#define ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY    12185
#define ERROR_WINHTTP_CLIENT_CERT_NO_ACCESS_PRIVATE_KEY 12186
"""

ATTEST_CDEF = """
typedef ULONG_PTR NCRYPT_KEY_HANDLE;
typedef void (*AttestationLogFunc)(void *ctx, const char *tag, int lvl, const char *func, int line, const char *msg);
typedef struct AttestationLogInfo { AttestationLogFunc Log; void *Ctx; } AttestationLogInfo;
int  InitAttestationLib(AttestationLogInfo *info);
int  AttestKeyGuardImportKey(const char *endpoint, const char *authToken, const char *clientPayload,
                             NCRYPT_KEY_HANDLE keyHandle, char **token, const char *clientId);
void FreeAttestationToken(char *token);
void UninitAttestationLib(void);
"""

ALL_CDEFS = {"ncrypt": NCRYPT_CDEF, "crypt32": CRYPT32_CDEF, "winhttp": WINHTTP_CDEF, "attest": ATTEST_CDEF}

# Wide-string names (cannot be #define'd in a cdef).
WSTR = {
    "MS_KEY_STORAGE_PROVIDER": "Microsoft Software Key Storage Provider",
    "MS_PLATFORM_CRYPTO_PROVIDER": "Microsoft Platform Crypto Provider",
    "NCRYPT_RSA_ALGORITHM": "RSA",
    "BCRYPT_SHA256_ALGORITHM": "SHA256",
    "BCRYPT_RSAPUBLIC_BLOB": "RSAPUBLICBLOB",
    "NCRYPT_LENGTH_PROPERTY": "Length",
    "NCRYPT_EXPORT_POLICY_PROPERTY": "Export Policy",
    "NCRYPT_KEY_USAGE_PROPERTY": "Key Usage",
    "NCRYPT_ALGORITHM_PROPERTY": "Algorithm Name",
    "NCRYPT_NAME_PROPERTY": "Name",
    "NCRYPT_UNIQUE_NAME_PROPERTY": "Unique Name",
    "NCRYPT_IMPL_TYPE_PROPERTY": "Impl Type",
    "NCRYPT_USE_VIRTUAL_ISOLATION_PROPERTY": "Virtual Iso",
    "NCRYPT_USE_PER_BOOT_KEY_PROPERTY": "Per Boot Key",
}

# SECURITY_STATUS values of NCrypt (unsigned view).
HRESULTS = {
    "NTE_BAD_DATA": 0x80090005,
    "NTE_BAD_SIGNATURE": 0x80090006,
    "NTE_BAD_FLAGS": 0x80090009,
    "NTE_BAD_KEY_STATE": 0x8009000B,
    "NTE_NO_KEY": 0x8009000D,
    "NTE_NO_MEMORY": 0x8009000E,
    "NTE_EXISTS": 0x8009000F,
    "NTE_PERM": 0x80090010,
    "NTE_NOT_FOUND": 0x80090011,
    "NTE_BAD_PROVIDER": 0x80090013,
    "NTE_BAD_KEYSET": 0x80090016,
    "NTE_KEYSET_NOT_DEF": 0x80090019,
    "NTE_PROV_DLL_NOT_FOUND": 0x8009001E,
    "NTE_FAIL": 0x80090020,
    "NTE_SILENT_CONTEXT": 0x80090022,
    "NTE_INVALID_HANDLE": 0x80090026,
    "NTE_INVALID_PARAMETER": 0x80090027,
    "NTE_BUFFER_TOO_SMALL": 0x80090028,
    "NTE_NOT_SUPPORTED": 0x80090029,
    "NTE_NO_MORE_ITEMS": 0x8009002A,
    "NTE_DEVICE_NOT_READY": 0x80090030,
    "NTE_USER_CANCELLED": 0x80090036,
}

# HRESULTs of Crypt32 and SChannel, and the generic ones (unsigned view).
CRYPT_HRESULTS = {
    "E_ACCESSDENIED": 0x80070005,
    "E_OUTOFMEMORY": 0x8007000E,
    "E_INVALIDARG": 0x80070057,
    "CRYPT_E_NOT_FOUND": 0x80092004,
    "CRYPT_E_EXISTS": 0x80092005,
    "CRYPT_E_NO_KEY_PROPERTY": 0x8009200B,
    "CRYPT_E_PENDING_CLOSE": 0x8009200F,
    "CRYPT_E_ASN1_BADTAG": 0x8009310B,
    "SEC_E_INTERNAL_ERROR": 0x80090304,
    "SEC_E_UNKNOWN_CREDENTIALS": 0x8009030D,
    "SEC_E_NO_CREDENTIALS": 0x8009030E,
    "SEC_E_WRONG_PRINCIPAL": 0x80090322,
    "SEC_E_UNTRUSTED_ROOT": 0x80090325,
    "SEC_E_ILLEGAL_MESSAGE": 0x80090326,
    "SEC_E_CERT_UNKNOWN": 0x80090327,
    "SEC_E_CERT_EXPIRED": 0x80090328,
}

# Win32 error codes (GetLastError) the bindings name; WinHTTP's 12xxx codes are #defines in WINHTTP_CDEF.
WIN32_ERRORS = {
    "ERROR_FILE_NOT_FOUND": 2,
    "ERROR_ACCESS_DENIED": 5,
    "ERROR_INVALID_HANDLE": 6,
    "ERROR_NOT_ENOUGH_MEMORY": 8,
    "ERROR_INVALID_DATA": 13,
    "ERROR_NOT_SUPPORTED": 50,
    "ERROR_INVALID_PARAMETER": 87,
    "ERROR_MORE_DATA": 234,
    "ERROR_NOT_FOUND": 1168,
    "ERROR_MOD_NOT_FOUND": 126,
    "ERROR_BAD_EXE_FORMAT": 193,
}

# struct name -> fields whose offsets are checked against the real headers.
STRUCTS = {
    "BCRYPT_PKCS1_PADDING_INFO": ["pszAlgId"],
    "BCRYPT_PSS_PADDING_INFO": ["pszAlgId", "cbSalt"],
    "BCRYPT_RSAKEY_BLOB": ["Magic", "BitLength", "cbPublicExp", "cbModulus", "cbPrime1", "cbPrime2"],
    "NCryptBuffer": ["cbBuffer", "BufferType", "pvBuffer"],
    "NCryptBufferDesc": ["ulVersion", "cBuffers", "pBuffers"],
    "NCryptKeyName": ["pszName", "pszAlgid", "dwLegacyKeySpec", "dwFlags"],
    "CERT_CONTEXT": ["dwCertEncodingType", "pbCertEncoded", "cbCertEncoded", "pCertInfo", "hCertStore"],
    "CRYPT_DATA_BLOB": ["cbData", "pbData"],
    "CRYPT_KEY_PROV_INFO": [
        "pwszContainerName",
        "pwszProvName",
        "dwProvType",
        "dwFlags",
        "cProvParam",
        "rgProvParam",
        "dwKeySpec",
    ],
    "CERT_KEY_CONTEXT": ["cbSize", "hCryptProvOrNCryptKey", "dwKeySpec"],
    "WINHTTP_ASYNC_RESULT": ["dwResult", "dwError"],
    "AttestationLogInfo": ["Log", "Ctx"],
}

# Scalar typedefs whose size and signedness are checked against the headers (WCHAR differs by design).
SCALAR_TYPEDEFS = [
    "BYTE",
    "WORD",
    "DWORD",
    "ULONG",
    "LONG",
    "BOOL",
    "SECURITY_STATUS",
    "ULONG_PTR",
    "DWORD_PTR",
    "NCRYPT_HANDLE",
    "NCRYPT_PROV_HANDLE",
    "NCRYPT_KEY_HANDLE",
    "HCRYPTPROV_LEGACY",
    "HCRYPTPROV_OR_NCRYPT_KEY_HANDLE",
    "INTERNET_PORT",
]

_DEFINE = re.compile(r"^#define\s+(\w+)\s+(\S+)", re.M)
_DUPLICATE_KEY_HANDLE = "typedef ULONG_PTR NCRYPT_KEY_HANDLE;"


def cdef_text(*parts: str) -> str:
    """The cdef text of ``parts`` (names of :data:`ALL_CDEFS`) after the common typedefs, as one FFI needs it."""
    texts = [COMMON_CDEF]
    for part in parts:
        text = ALL_CDEFS[part]
        if part == "attest" and "ncrypt" in parts:
            text = text.replace(_DUPLICATE_KEY_HANDLE, "")
        texts.append(text)
    return "\n".join(texts)


def int_constants() -> dict[str, int]:
    """Every ``#define NAME value`` of the cdefs, as ``{name: value}``."""
    found: dict[str, int] = {}
    for text in ALL_CDEFS.values():
        for match in _DEFINE.finditer(text):
            found[match.group(1)] = int(match.group(2), 0)
    return found


def error_names() -> dict[int, str]:
    """Unsigned error code -> symbolic name, over every table above and the WinHTTP ``ERROR_*`` defines."""
    names: dict[int, str] = {}
    for table in (WIN32_ERRORS, HRESULTS, CRYPT_HRESULTS):
        for name, value in table.items():
            names.setdefault(value, name)
    for name, value in int_constants().items():
        if name.startswith("ERROR_"):
            names.setdefault(value, name)
    names[0x80890014] = "VBS_KEY_ISOLATION_UNAVAILABLE"
    return names
