/* Shared declarations of the Linux stand-ins for ncrypt.dll, crypt32.dll, winhttp.dll and
 * AttestationClientLib.dll. Types follow the fixed-width cdefs of msiv2_async._native._cdefs, so the
 * Python bindings call these libraries exactly as they call the real DLLs on Windows.
 * "Last error" is errno: cffi saves it per call and thread (ffi.errno), the Linux twin of
 * GetLastError/ffi.getwinerror(). wchar_t is UTF-32 here; the bindings never assume its width.
 */
#ifndef MSIV2_STANDIN_H
#define MSIV2_STANDIN_H

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define WINAPI
#define EXPORT __attribute__((visibility("default")))

typedef uint8_t BYTE;
typedef uint16_t WORD;
typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef int32_t LONG;
typedef int BOOL;
typedef int32_t SECURITY_STATUS;
typedef uintptr_t ULONG_PTR;
typedef uintptr_t DWORD_PTR;
typedef wchar_t WCHAR;
typedef const wchar_t *LPCWSTR;
typedef wchar_t *LPWSTR;
typedef const char *LPCSTR;
typedef void *LPVOID;
typedef void *PVOID;
typedef BYTE *PBYTE;
typedef DWORD *LPDWORD;

typedef ULONG_PTR NCRYPT_HANDLE;
typedef ULONG_PTR NCRYPT_PROV_HANDLE;
typedef ULONG_PTR NCRYPT_KEY_HANDLE;

typedef struct _BCRYPT_PKCS1_PADDING_INFO { LPCWSTR pszAlgId; } BCRYPT_PKCS1_PADDING_INFO;
typedef struct _BCRYPT_PSS_PADDING_INFO { LPCWSTR pszAlgId; ULONG cbSalt; } BCRYPT_PSS_PADDING_INFO;
typedef struct _BCRYPT_RSAKEY_BLOB {
    ULONG Magic; ULONG BitLength; ULONG cbPublicExp; ULONG cbModulus; ULONG cbPrime1; ULONG cbPrime2;
} BCRYPT_RSAKEY_BLOB;
typedef struct _NCryptBuffer { ULONG cbBuffer; ULONG BufferType; PVOID pvBuffer; } NCryptBuffer;
typedef struct _NCryptBufferDesc { ULONG ulVersion; ULONG cBuffers; NCryptBuffer *pBuffers; } NCryptBufferDesc;
typedef struct _NCryptKeyName { LPWSTR pszName; LPWSTR pszAlgid; DWORD dwLegacyKeySpec; DWORD dwFlags; } NCryptKeyName;

typedef void *HCERTSTORE;
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

typedef void *HINTERNET;
typedef uint16_t INTERNET_PORT;
typedef void (*WINHTTP_STATUS_CALLBACK)(HINTERNET, DWORD_PTR, DWORD, LPVOID, DWORD);

/* NCrypt SECURITY_STATUS values */
#define ERROR_SUCCESS 0
#define NTE_BAD_DATA ((SECURITY_STATUS)0x80090005)
#define NTE_BAD_SIGNATURE ((SECURITY_STATUS)0x80090006)
#define NTE_BAD_FLAGS ((SECURITY_STATUS)0x80090009)
#define NTE_BAD_KEY_STATE ((SECURITY_STATUS)0x8009000B)
#define NTE_NO_MEMORY ((SECURITY_STATUS)0x8009000E)
#define NTE_EXISTS ((SECURITY_STATUS)0x8009000F)
#define NTE_PERM ((SECURITY_STATUS)0x80090010)
#define NTE_NOT_FOUND ((SECURITY_STATUS)0x80090011)
#define NTE_BAD_PROVIDER ((SECURITY_STATUS)0x80090013)
#define NTE_BAD_KEYSET ((SECURITY_STATUS)0x80090016)
#define NTE_PROV_DLL_NOT_FOUND ((SECURITY_STATUS)0x8009001E)
#define NTE_INVALID_HANDLE ((SECURITY_STATUS)0x80090026)
#define NTE_INVALID_PARAMETER ((SECURITY_STATUS)0x80090027)
#define NTE_BUFFER_TOO_SMALL ((SECURITY_STATUS)0x80090028)
#define NTE_NOT_SUPPORTED ((SECURITY_STATUS)0x80090029)
#define NTE_NO_MORE_ITEMS ((SECURITY_STATUS)0x8009002A)
#define NTE_VBS_UNAVAILABLE ((SECURITY_STATUS)0x80890014) /* what MSAL.NET matches on non-VBS hosts */

#define NCRYPT_SILENT_FLAG 0x40
#define NCRYPT_MACHINE_KEY_FLAG 0x20
#define NCRYPT_OVERWRITE_KEY_FLAG 0x80
#define NCRYPT_PREFER_VIRTUAL_ISOLATION_FLAG 0x00010000
#define NCRYPT_USE_VIRTUAL_ISOLATION_FLAG 0x00020000
#define NCRYPT_USE_PER_BOOT_KEY_FLAG 0x00040000
#define NCRYPT_PERSIST_FLAG 0x80000000u
#define NCRYPT_PERSIST_ONLY_FLAG 0x40000000u
#define NCRYPT_ALLOW_EXPORT_FLAG 0x1
#define NCRYPT_ALLOW_PLAINTEXT_EXPORT_FLAG 0x2
#define NCRYPT_ALLOW_SIGNING_FLAG 0x2
#define NCRYPT_ALLOW_ALL_USAGES 0x00ffffff
#define NCRYPT_IMPL_SOFTWARE_FLAG 0x2
#define NCRYPT_IMPL_VIRTUAL_ISOLATION_FLAG 0x20
#define NCRYPT_PAD_PKCS1_FLAG 0x2
#define NCRYPT_PAD_PSS_FLAG 0x8
#define BCRYPT_RSAPUBLIC_MAGIC 0x31415352

/* Win32 last-error values */
#define ERROR_FILE_NOT_FOUND 2
#define ERROR_ACCESS_DENIED 5
#define ERROR_INVALID_HANDLE 6
#define ERROR_NOT_ENOUGH_MEMORY 8
#define ERROR_INVALID_PARAMETER 87
#define ERROR_INSUFFICIENT_BUFFER 122
#define ERROR_MORE_DATA 234
#define CRYPT_E_NOT_FOUND ((int32_t)0x80092004)
#define CRYPT_E_EXISTS ((int32_t)0x80092005)
#define CRYPT_E_NO_KEY_PROPERTY ((int32_t)0x8009200B)
#define CRYPT_E_PENDING_CLOSE ((int32_t)0x8009200F)
#define CRYPT_E_ASN1_BADTAG ((int32_t)0x8009310B)
#define E_ACCESSDENIED ((int32_t)0x80070005)

#define TRUE 1
#define FALSE 0

/* Set the "last error" and return a failure value. */
#define FAIL_BOOL(code) do { errno = (int)(code); return FALSE; } while (0)
#define FAIL_NULL(code) do { errno = (int)(code); return NULL; } while (0)

/* Windows-only fault injection shared by the stand-ins: the next `count` calls of `api` fail with `status`. */
typedef struct { char api[64]; int32_t status; int count; } standin_fault;

static inline int32_t standin_take_fault(standin_fault *faults, int n, pthread_mutex_t *lock, const char *api) {
    int32_t status = 0;
    pthread_mutex_lock(lock);
    for (int i = 0; i < n; i++) {
        if (faults[i].count > 0 && strcmp(faults[i].api, api) == 0) {
            faults[i].count--;
            status = faults[i].status;
            break;
        }
    }
    pthread_mutex_unlock(lock);
    return status;
}

static inline void standin_add_fault(standin_fault *faults, int n, pthread_mutex_t *lock,
                                     const char *api, int32_t status, int count) {
    pthread_mutex_lock(lock);
    for (int i = 0; i < n; i++) {
        if (faults[i].count <= 0) {
            strncpy(faults[i].api, api, sizeof(faults[i].api) - 1);
            faults[i].api[sizeof(faults[i].api) - 1] = 0;
            faults[i].status = status;
            faults[i].count = count;
            break;
        }
    }
    pthread_mutex_unlock(lock);
}

/* UTF-32 wide string -> freshly allocated UTF-8 (ASCII range is all these names use; others become '?'). */
static inline char *standin_narrow(LPCWSTR text) {
    if (!text) return NULL;
    size_t n = wcslen(text);
    char *out = malloc(n + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) out[i] = (text[i] > 0 && text[i] < 128) ? (char)text[i] : '?';
    out[n] = 0;
    return out;
}

#endif
