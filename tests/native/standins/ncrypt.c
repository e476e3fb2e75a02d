/* Stand-in for ncrypt.dll: the NCrypt subset msiv2_async calls, with real RSA from OpenSSL libcrypto.
 *
 * Semantics reproduced: provider/key handles (validated; freed by NCryptFreeObject; NCryptDeleteKey
 * frees on success), named persisted keys per scope (user/machine) shared by every handle of the
 * process, NTE_BAD_KEYSET for a missing key, NTE_EXISTS for a create without overwrite, properties
 * with size queries and NTE_BUFFER_TOO_SMALL, "Virtual Iso"/"Impl Type"/"Per Boot Key" for keys
 * created with NCRYPT_USE_VIRTUAL_ISOLATION_FLAG, non-exportable private keys, RSASSA-PSS/PKCS#1
 * signing of a caller-supplied hash. VBS availability is a switch (env MSIV2_STANDIN_VBS=0 or
 * StandinNCryptSetVbs): without it, finalizing a KeyGuard key fails with 0x80890014 as MSAL.NET
 * observed. StandinNCryptReboot() emulates a reboot: per-boot keys can still be opened, but their
 * first cryptographic operation fails (NTE_BAD_KEY_STATE).
 */
#include "standin.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/bn.h>

#define KIND_PROVIDER 1
#define KIND_KEY 2

typedef struct stored_key {
    int refs;
    wchar_t *name; /* NULL: ephemeral */
    int machine;
    EVP_PKEY *pkey; /* NULL until finalized */
    DWORD export_policy, key_usage, length;
    int vbs, per_boot, deleted;
    unsigned boot;
    struct stored_key *next;
} stored_key;

typedef struct {
    uintptr_t id;
    int kind;
    int provider_kind; /* 1 software KSP, 2 platform */
    DWORD create_flags;
    int finalized;
    stored_key *key;
} entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static entry **g_entries;
static size_t g_count, g_capacity;
static uintptr_t g_next_id = 0x10000;
static stored_key *g_store;
static int g_vbs = -1;
static unsigned g_boot = 1;
static long g_sign_count, g_borrow_count, g_live_buffers;
static standin_fault g_faults[16];
static pthread_mutex_t g_fault_lock = PTHREAD_MUTEX_INITIALIZER;

static const wchar_t *SOFTWARE_KSP = L"Microsoft Software Key Storage Provider";
static const wchar_t *PLATFORM_KSP = L"Microsoft Platform Crypto Provider";

static int vbs_available(void) {
    if (g_vbs < 0) {
        const char *env = getenv("MSIV2_STANDIN_VBS");
        g_vbs = !(env && strcmp(env, "0") == 0);
    }
    return g_vbs;
}

static entry *find(uintptr_t id, int kind) {
    for (size_t i = 0; i < g_count; i++)
        if (g_entries[i]->id == id && (kind == 0 || g_entries[i]->kind == kind)) return g_entries[i];
    return NULL;
}

static entry *add_entry(int kind) {
    if (g_count == g_capacity) {
        size_t capacity = g_capacity ? g_capacity * 2 : 16;
        entry **grown = realloc(g_entries, capacity * sizeof(entry *));
        if (!grown) return NULL;
        g_entries = grown;
        g_capacity = capacity;
    }
    entry *e = calloc(1, sizeof(entry));
    if (!e) return NULL;
    e->id = g_next_id;
    g_next_id += 8;
    e->kind = kind;
    g_entries[g_count++] = e;
    return e;
}

static void unref_key(stored_key *k) {
    if (k && --k->refs == 0) {
        if (k->pkey) EVP_PKEY_free(k->pkey);
        free(k->name);
        free(k);
    }
}

static void remove_entry(entry *e) {
    for (size_t i = 0; i < g_count; i++) {
        if (g_entries[i] == e) {
            g_entries[i] = g_entries[--g_count];
            break;
        }
    }
    unref_key(e->key);
    free(e);
}

static stored_key *lookup(LPCWSTR name, int machine) {
    for (stored_key *k = g_store; k; k = k->next)
        if (!k->deleted && k->machine == machine && wcscmp(k->name, name) == 0) return k;
    return NULL;
}

static void unlink_key(stored_key *k) {
    for (stored_key **p = &g_store; *p; p = &(*p)->next) {
        if (*p == k) {
            *p = k->next;
            k->deleted = 1;
            unref_key(k);
            return;
        }
    }
}

static int stale(const stored_key *k) { return k->per_boot && k->boot != g_boot; }

static SECURITY_STATUS fault(const char *api) {
    return standin_take_fault(g_faults, 16, &g_fault_lock, api);
}

EXPORT SECURITY_STATUS WINAPI NCryptOpenStorageProvider(NCRYPT_PROV_HANDLE *phProvider, LPCWSTR pszProviderName,
                                                        DWORD dwFlags) {
    SECURITY_STATUS injected = fault("NCryptOpenStorageProvider");
    if (injected) return injected;
    if (!phProvider) return NTE_INVALID_PARAMETER;
    if (dwFlags) return NTE_BAD_FLAGS;
    int kind;
    if (!pszProviderName || wcscmp(pszProviderName, SOFTWARE_KSP) == 0) kind = 1;
    else if (wcscmp(pszProviderName, PLATFORM_KSP) == 0) kind = 2;
    else return NTE_PROV_DLL_NOT_FOUND;
    pthread_mutex_lock(&g_lock);
    entry *e = add_entry(KIND_PROVIDER);
    if (e) {
        e->provider_kind = kind;
        *phProvider = e->id;
    }
    pthread_mutex_unlock(&g_lock);
    return e ? ERROR_SUCCESS : NTE_NO_MEMORY;
}

EXPORT SECURITY_STATUS WINAPI NCryptOpenKey(NCRYPT_PROV_HANDLE hProvider, NCRYPT_KEY_HANDLE *phKey, LPCWSTR pszKeyName,
                                            DWORD dwLegacyKeySpec, DWORD dwFlags) {
    (void)dwLegacyKeySpec;
    SECURITY_STATUS injected = fault("NCryptOpenKey");
    if (injected) return injected;
    if (!phKey || !pszKeyName) return NTE_INVALID_PARAMETER;
    if (dwFlags & ~(DWORD)(NCRYPT_SILENT_FLAG | NCRYPT_MACHINE_KEY_FLAG)) return NTE_BAD_FLAGS;
    SECURITY_STATUS status = ERROR_SUCCESS;
    pthread_mutex_lock(&g_lock);
    entry *provider = find(hProvider, KIND_PROVIDER);
    stored_key *k = provider ? lookup(pszKeyName, (dwFlags & NCRYPT_MACHINE_KEY_FLAG) != 0) : NULL;
    if (!provider) status = NTE_INVALID_HANDLE;
    else if (!k) status = NTE_BAD_KEYSET;
    else {
        entry *e = add_entry(KIND_KEY);
        if (!e) status = NTE_NO_MEMORY;
        else {
            e->key = k;
            k->refs++;
            e->finalized = 1;
            *phKey = e->id;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return status;
}

EXPORT SECURITY_STATUS WINAPI NCryptCreatePersistedKey(NCRYPT_PROV_HANDLE hProvider, NCRYPT_KEY_HANDLE *phKey,
                                                       LPCWSTR pszAlgId, LPCWSTR pszKeyName, DWORD dwLegacyKeySpec,
                                                       DWORD dwFlags) {
    (void)dwLegacyKeySpec;
    SECURITY_STATUS injected = fault("NCryptCreatePersistedKey");
    if (injected) return injected;
    if (!phKey || !pszAlgId) return NTE_INVALID_PARAMETER;
    if (wcscmp(pszAlgId, L"RSA") != 0) return NTE_NOT_SUPPORTED;
    DWORD allowed = NCRYPT_SILENT_FLAG | NCRYPT_MACHINE_KEY_FLAG | NCRYPT_OVERWRITE_KEY_FLAG |
                    NCRYPT_PREFER_VIRTUAL_ISOLATION_FLAG | NCRYPT_USE_VIRTUAL_ISOLATION_FLAG |
                    NCRYPT_USE_PER_BOOT_KEY_FLAG;
    if (dwFlags & ~allowed) return NTE_BAD_FLAGS;
    int machine = (dwFlags & NCRYPT_MACHINE_KEY_FLAG) != 0;
    SECURITY_STATUS status = ERROR_SUCCESS;
    pthread_mutex_lock(&g_lock);
    entry *provider = find(hProvider, KIND_PROVIDER);
    if (!provider) status = NTE_INVALID_HANDLE;
    else if (pszKeyName && lookup(pszKeyName, machine) && !(dwFlags & NCRYPT_OVERWRITE_KEY_FLAG)) status = NTE_EXISTS;
    else {
        stored_key *k = calloc(1, sizeof(stored_key));
        entry *e = k ? add_entry(KIND_KEY) : NULL;
        if (!e) {
            free(k);
            status = NTE_NO_MEMORY;
        } else {
            k->refs = 1;
            k->name = pszKeyName ? wcsdup(pszKeyName) : NULL;
            k->machine = machine;
            k->length = 2048;
            k->export_policy = 0;
            k->key_usage = NCRYPT_ALLOW_ALL_USAGES;
            k->vbs = (dwFlags & NCRYPT_USE_VIRTUAL_ISOLATION_FLAG) != 0;
            k->per_boot = (dwFlags & NCRYPT_USE_PER_BOOT_KEY_FLAG) != 0;
            e->key = k;
            e->create_flags = dwFlags;
            *phKey = e->id;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return status;
}

static SECURITY_STATUS set_dword(DWORD *field, PBYTE pbInput, DWORD cbInput) {
    if (!pbInput || cbInput != sizeof(DWORD)) return NTE_INVALID_PARAMETER;
    memcpy(field, pbInput, sizeof(DWORD));
    return ERROR_SUCCESS;
}

EXPORT SECURITY_STATUS WINAPI NCryptSetProperty(NCRYPT_HANDLE hObject, LPCWSTR pszProperty, PBYTE pbInput,
                                                DWORD cbInput, DWORD dwFlags) {
    SECURITY_STATUS injected = fault("NCryptSetProperty");
    if (injected) return injected;
    if (!pszProperty) return NTE_INVALID_PARAMETER;
    if (dwFlags & ~(NCRYPT_PERSIST_FLAG | NCRYPT_SILENT_FLAG)) return NTE_BAD_FLAGS;
    SECURITY_STATUS status;
    pthread_mutex_lock(&g_lock);
    entry *e = find(hObject, KIND_KEY);
    if (!e) status = NTE_INVALID_HANDLE;
    else if (e->finalized) status = NTE_NOT_SUPPORTED; /* the stand-in keeps finalized keys immutable */
    else if (wcscmp(pszProperty, L"Length") == 0) {
        DWORD length = 0;
        status = set_dword(&length, pbInput, cbInput);
        if (status == ERROR_SUCCESS && (length < 1024 || length > 16384 || length % 64)) status = NTE_INVALID_PARAMETER;
        if (status == ERROR_SUCCESS) e->key->length = length;
    } else if (wcscmp(pszProperty, L"Export Policy") == 0) status = set_dword(&e->key->export_policy, pbInput, cbInput);
    else if (wcscmp(pszProperty, L"Key Usage") == 0) status = set_dword(&e->key->key_usage, pbInput, cbInput);
    else status = NTE_NOT_SUPPORTED;
    pthread_mutex_unlock(&g_lock);
    return status;
}

static SECURITY_STATUS output(const void *value, DWORD size, PBYTE pbOutput, DWORD cbOutput, DWORD *pcbResult) {
    *pcbResult = size;
    if (!pbOutput) return ERROR_SUCCESS;
    if (cbOutput < size) return NTE_BUFFER_TOO_SMALL;
    memcpy(pbOutput, value, size);
    return ERROR_SUCCESS;
}

static SECURITY_STATUS output_dword(DWORD value, PBYTE pbOutput, DWORD cbOutput, DWORD *pcbResult) {
    return output(&value, sizeof(value), pbOutput, cbOutput, pcbResult);
}

static SECURITY_STATUS output_wstr(const wchar_t *value, PBYTE pbOutput, DWORD cbOutput, DWORD *pcbResult) {
    return output(value, (DWORD)((wcslen(value) + 1) * sizeof(wchar_t)), pbOutput, cbOutput, pcbResult);
}

EXPORT SECURITY_STATUS WINAPI NCryptGetProperty(NCRYPT_HANDLE hObject, LPCWSTR pszProperty, PBYTE pbOutput,
                                                DWORD cbOutput, DWORD *pcbResult, DWORD dwFlags) {
    (void)dwFlags;
    if (!pszProperty || !pcbResult) return NTE_INVALID_PARAMETER;
    SECURITY_STATUS status;
    pthread_mutex_lock(&g_lock);
    entry *e = find(hObject, 0);
    if (!e) status = NTE_INVALID_HANDLE;
    else if (e->kind == KIND_PROVIDER) {
        if (wcscmp(pszProperty, L"Name") == 0)
            status = output_wstr(e->provider_kind == 1 ? SOFTWARE_KSP : PLATFORM_KSP, pbOutput, cbOutput, pcbResult);
        else status = NTE_NOT_SUPPORTED;
    } else {
        stored_key *k = e->key;
        if (k->deleted && e->finalized) status = NTE_BAD_KEYSET;
        else if (wcscmp(pszProperty, L"Length") == 0) status = output_dword(k->length, pbOutput, cbOutput, pcbResult);
        else if (wcscmp(pszProperty, L"Export Policy") == 0)
            status = output_dword(k->export_policy, pbOutput, cbOutput, pcbResult);
        else if (wcscmp(pszProperty, L"Key Usage") == 0)
            status = output_dword(k->key_usage, pbOutput, cbOutput, pcbResult);
        else if (wcscmp(pszProperty, L"Algorithm Name") == 0) status = output_wstr(L"RSA", pbOutput, cbOutput, pcbResult);
        else if (wcscmp(pszProperty, L"Name") == 0)
            status = k->name ? output_wstr(k->name, pbOutput, cbOutput, pcbResult) : NTE_NOT_FOUND;
        else if (wcscmp(pszProperty, L"Impl Type") == 0)
            status = output_dword(NCRYPT_IMPL_SOFTWARE_FLAG | (k->vbs ? NCRYPT_IMPL_VIRTUAL_ISOLATION_FLAG : 0), pbOutput,
                                  cbOutput, pcbResult);
        else if (wcscmp(pszProperty, L"Virtual Iso") == 0)
            status = k->vbs && e->finalized ? output_dword(1, pbOutput, cbOutput, pcbResult) : NTE_NOT_FOUND;
        else if (wcscmp(pszProperty, L"Per Boot Key") == 0)
            status = output_dword(k->per_boot ? 1 : 0, pbOutput, cbOutput, pcbResult);
        else status = NTE_NOT_SUPPORTED;
    }
    pthread_mutex_unlock(&g_lock);
    return status;
}

EXPORT SECURITY_STATUS WINAPI NCryptFinalizeKey(NCRYPT_KEY_HANDLE hKey, DWORD dwFlags) {
    SECURITY_STATUS injected = fault("NCryptFinalizeKey");
    if (injected) return injected;
    if (dwFlags & ~(DWORD)NCRYPT_SILENT_FLAG) return NTE_BAD_FLAGS;
    pthread_mutex_lock(&g_lock);
    entry *e = find(hKey, KIND_KEY);
    DWORD length = e ? e->key->length : 0;
    int finalized = e ? e->finalized : 0, vbs = e ? e->key->vbs : 0;
    pthread_mutex_unlock(&g_lock);
    if (!e) return NTE_INVALID_HANDLE;
    if (finalized) return NTE_BAD_KEY_STATE;
    if (vbs && !vbs_available()) return NTE_VBS_UNAVAILABLE;
    EVP_PKEY *pkey = EVP_RSA_gen(length);
    if (!pkey) return NTE_NO_MEMORY;
    SECURITY_STATUS status = ERROR_SUCCESS;
    pthread_mutex_lock(&g_lock);
    e = find(hKey, KIND_KEY);
    if (!e) status = NTE_INVALID_HANDLE;
    else if (e->finalized) status = NTE_BAD_KEY_STATE;
    else {
        stored_key *k = e->key;
        stored_key *existing = k->name ? lookup(k->name, k->machine) : NULL;
        if (existing && !(e->create_flags & NCRYPT_OVERWRITE_KEY_FLAG)) status = NTE_EXISTS;
        else {
            if (existing) unlink_key(existing);
            k->pkey = pkey;
            pkey = NULL;
            k->boot = g_boot;
            e->finalized = 1;
            if (k->name) {
                k->refs++;
                k->next = g_store;
                g_store = k;
            }
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (pkey) EVP_PKEY_free(pkey);
    return status;
}

/* Look up a usable finalized key under g_lock. */
static SECURITY_STATUS usable_key(NCRYPT_KEY_HANDLE hKey, stored_key **out) {
    entry *e = find(hKey, KIND_KEY);
    if (!e) return NTE_INVALID_HANDLE;
    if (!e->finalized) return NTE_BAD_KEY_STATE;
    if (e->key->deleted && e->key->name) return NTE_BAD_KEYSET;
    if (stale(e->key)) return NTE_BAD_KEY_STATE;
    *out = e->key;
    return ERROR_SUCCESS;
}

static DWORD bn_bytes(EVP_PKEY *pkey, const char *param, BYTE *out) {
    BIGNUM *bn = NULL;
    if (!EVP_PKEY_get_bn_param(pkey, param, &bn)) return 0;
    DWORD n = (DWORD)BN_num_bytes(bn);
    if (out) BN_bn2bin(bn, out);
    BN_free(bn);
    return n;
}

EXPORT SECURITY_STATUS WINAPI NCryptExportKey(NCRYPT_KEY_HANDLE hKey, NCRYPT_KEY_HANDLE hExportKey, LPCWSTR pszBlobType,
                                              NCryptBufferDesc *pParameterList, PBYTE pbOutput, DWORD cbOutput,
                                              DWORD *pcbResult, DWORD dwFlags) {
    (void)pParameterList;
    (void)dwFlags;
    if (!pszBlobType || !pcbResult) return NTE_INVALID_PARAMETER;
    if (hExportKey) return NTE_NOT_SUPPORTED;
    stored_key *k = NULL;
    pthread_mutex_lock(&g_lock);
    SECURITY_STATUS status = usable_key(hKey, &k);
    if (status == ERROR_SUCCESS) {
        if (wcscmp(pszBlobType, L"RSAPUBLICBLOB") != 0) {
            status = NTE_NOT_SUPPORTED; /* private blobs: non-exportable (and never exported by the stand-in) */
        } else {
            DWORD cb_e = bn_bytes(k->pkey, OSSL_PKEY_PARAM_RSA_E, NULL);
            DWORD cb_n = bn_bytes(k->pkey, OSSL_PKEY_PARAM_RSA_N, NULL);
            DWORD size = (DWORD)sizeof(BCRYPT_RSAKEY_BLOB) + cb_e + cb_n;
            *pcbResult = size;
            if (pbOutput && cbOutput < size) status = NTE_BUFFER_TOO_SMALL;
            else if (pbOutput) {
                BCRYPT_RSAKEY_BLOB header = {BCRYPT_RSAPUBLIC_MAGIC, k->length, cb_e, cb_n, 0, 0};
                memcpy(pbOutput, &header, sizeof(header));
                bn_bytes(k->pkey, OSSL_PKEY_PARAM_RSA_E, pbOutput + sizeof(header));
                bn_bytes(k->pkey, OSSL_PKEY_PARAM_RSA_N, pbOutput + sizeof(header) + cb_e);
            }
        }
    }
    pthread_mutex_unlock(&g_lock);
    return status;
}

static const EVP_MD *hash_md(LPCWSTR name, DWORD cbHash) {
    const EVP_MD *md = NULL;
    if (!name) return NULL;
    if (wcscmp(name, L"SHA256") == 0) md = EVP_sha256();
    else if (wcscmp(name, L"SHA384") == 0) md = EVP_sha384();
    else if (wcscmp(name, L"SHA512") == 0) md = EVP_sha512();
    else if (wcscmp(name, L"SHA1") == 0) md = EVP_sha1();
    return md && (DWORD)EVP_MD_get_size(md) == cbHash ? md : NULL;
}

static SECURITY_STATUS setup(EVP_PKEY_CTX *ctx, void *pPaddingInfo, DWORD cbHash, DWORD dwFlags) {
    if (!pPaddingInfo) return NTE_INVALID_PARAMETER;
    if (dwFlags == NCRYPT_PAD_PSS_FLAG) {
        BCRYPT_PSS_PADDING_INFO *pss = pPaddingInfo;
        const EVP_MD *md = hash_md(pss->pszAlgId, cbHash);
        if (!md) return NTE_INVALID_PARAMETER;
        if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
            EVP_PKEY_CTX_set_signature_md(ctx, md) <= 0 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) <= 0 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, (int)pss->cbSalt) <= 0)
            return NTE_INVALID_PARAMETER;
        return ERROR_SUCCESS;
    }
    if (dwFlags == NCRYPT_PAD_PKCS1_FLAG) {
        BCRYPT_PKCS1_PADDING_INFO *pkcs1 = pPaddingInfo;
        const EVP_MD *md = hash_md(pkcs1->pszAlgId, cbHash);
        if (!md) return NTE_INVALID_PARAMETER;
        if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0 || EVP_PKEY_CTX_set_signature_md(ctx, md) <= 0)
            return NTE_INVALID_PARAMETER;
        return ERROR_SUCCESS;
    }
    return NTE_BAD_FLAGS;
}

EXPORT SECURITY_STATUS WINAPI NCryptSignHash(NCRYPT_KEY_HANDLE hKey, void *pPaddingInfo, PBYTE pbHashValue,
                                             DWORD cbHashValue, PBYTE pbSignature, DWORD cbSignature,
                                             DWORD *pcbResult, DWORD dwFlags) {
    SECURITY_STATUS injected = fault("NCryptSignHash");
    if (injected) return injected;
    if (!pcbResult || !pbHashValue) return NTE_INVALID_PARAMETER;
    stored_key *k = NULL;
    pthread_mutex_lock(&g_lock);
    SECURITY_STATUS status = usable_key(hKey, &k);
    if (status == ERROR_SUCCESS && !(k->key_usage & NCRYPT_ALLOW_SIGNING_FLAG)) status = NTE_PERM;
    if (status == ERROR_SUCCESS) {
        DWORD size = (DWORD)EVP_PKEY_get_size(k->pkey);
        *pcbResult = size;
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k->pkey, NULL);
        if (!ctx || EVP_PKEY_sign_init(ctx) <= 0) status = NTE_NO_MEMORY;
        else status = setup(ctx, pPaddingInfo, cbHashValue, dwFlags);
        if (status == ERROR_SUCCESS && pbSignature) {
            if (cbSignature < size) status = NTE_BUFFER_TOO_SMALL;
            else {
                size_t length = cbSignature;
                if (EVP_PKEY_sign(ctx, pbSignature, &length, pbHashValue, cbHashValue) <= 0) status = NTE_BAD_DATA;
                else {
                    *pcbResult = (DWORD)length;
                    g_sign_count++;
                }
            }
        }
        EVP_PKEY_CTX_free(ctx);
    }
    pthread_mutex_unlock(&g_lock);
    return status;
}

EXPORT SECURITY_STATUS WINAPI NCryptVerifySignature(NCRYPT_KEY_HANDLE hKey, void *pPaddingInfo, PBYTE pbHashValue,
                                                    DWORD cbHashValue, PBYTE pbSignature, DWORD cbSignature,
                                                    DWORD dwFlags) {
    if (!pbHashValue || !pbSignature) return NTE_INVALID_PARAMETER;
    stored_key *k = NULL;
    pthread_mutex_lock(&g_lock);
    SECURITY_STATUS status = usable_key(hKey, &k);
    if (status == ERROR_SUCCESS) {
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k->pkey, NULL);
        if (!ctx || EVP_PKEY_verify_init(ctx) <= 0) status = NTE_NO_MEMORY;
        else status = setup(ctx, pPaddingInfo, cbHashValue, dwFlags);
        if (status == ERROR_SUCCESS && EVP_PKEY_verify(ctx, pbSignature, cbSignature, pbHashValue, cbHashValue) != 1)
            status = NTE_BAD_SIGNATURE;
        EVP_PKEY_CTX_free(ctx);
    }
    pthread_mutex_unlock(&g_lock);
    return status;
}

EXPORT SECURITY_STATUS WINAPI NCryptDeleteKey(NCRYPT_KEY_HANDLE hKey, DWORD dwFlags) {
    SECURITY_STATUS injected = fault("NCryptDeleteKey");
    if (injected) return injected;
    if (dwFlags & ~(DWORD)NCRYPT_SILENT_FLAG) return NTE_BAD_FLAGS;
    SECURITY_STATUS status = ERROR_SUCCESS;
    pthread_mutex_lock(&g_lock);
    entry *e = find(hKey, KIND_KEY);
    if (!e) status = NTE_INVALID_HANDLE;
    else {
        if (e->finalized && e->key->name && !e->key->deleted) unlink_key(e->key);
        remove_entry(e); /* success frees the handle */
    }
    pthread_mutex_unlock(&g_lock);
    return status;
}

EXPORT SECURITY_STATUS WINAPI NCryptFreeObject(NCRYPT_HANDLE hObject) {
    SECURITY_STATUS status = ERROR_SUCCESS;
    pthread_mutex_lock(&g_lock);
    entry *e = find(hObject, 0);
    if (!e) status = NTE_INVALID_HANDLE;
    else remove_entry(e);
    pthread_mutex_unlock(&g_lock);
    return status;
}

typedef struct { uint32_t magic; size_t index; } enum_state;

EXPORT SECURITY_STATUS WINAPI NCryptEnumKeys(NCRYPT_PROV_HANDLE hProvider, LPCWSTR pszScope, NCryptKeyName **ppKeyName,
                                             PVOID *ppEnumState, DWORD dwFlags) {
    (void)pszScope;
    if (!ppKeyName || !ppEnumState) return NTE_INVALID_PARAMETER;
    int machine = (dwFlags & NCRYPT_MACHINE_KEY_FLAG) != 0;
    SECURITY_STATUS status = NTE_NO_MORE_ITEMS;
    pthread_mutex_lock(&g_lock);
    if (!find(hProvider, KIND_PROVIDER)) status = NTE_INVALID_HANDLE;
    else {
        enum_state *state = *ppEnumState;
        if (!state) {
            state = calloc(1, sizeof(enum_state));
            state->magic = 0x454e554d;
            *ppEnumState = state;
            g_live_buffers++;
        }
        size_t position = 0;
        for (stored_key *k = g_store; k; k = k->next) {
            if (k->machine != machine) continue;
            if (position++ < state->index) continue;
            size_t name_size = (wcslen(k->name) + 1) * sizeof(wchar_t);
            NCryptKeyName *item = calloc(1, sizeof(NCryptKeyName) + name_size + 4 * sizeof(wchar_t));
            item->pszName = (LPWSTR)(item + 1);
            memcpy(item->pszName, k->name, name_size);
            item->pszAlgid = (LPWSTR)((BYTE *)item->pszName + name_size);
            wcscpy(item->pszAlgid, L"RSA");
            item->dwFlags = machine ? NCRYPT_MACHINE_KEY_FLAG : 0;
            *ppKeyName = item;
            g_live_buffers++;
            state->index++;
            status = ERROR_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return status;
}

EXPORT SECURITY_STATUS WINAPI NCryptFreeBuffer(PVOID pvInput) {
    if (!pvInput) return NTE_INVALID_PARAMETER;
    pthread_mutex_lock(&g_lock);
    g_live_buffers--;
    pthread_mutex_unlock(&g_lock);
    free(pvInput);
    return ERROR_SUCCESS;
}

/* ---- stand-in only: what SChannel/KeyIso do inside Windows, and test controls ---- */

/* The key of a handle for the TLS stack of the WinHTTP stand-in (KeyIso signing on SChannel's behalf). */
EXPORT EVP_PKEY *StandinNCryptBorrowPkey(NCRYPT_KEY_HANDLE hKey, int32_t *status) {
    stored_key *k = NULL;
    EVP_PKEY *pkey = NULL;
    pthread_mutex_lock(&g_lock);
    *status = usable_key(hKey, &k);
    if (*status == ERROR_SUCCESS && EVP_PKEY_up_ref(k->pkey)) {
        pkey = k->pkey;
        g_borrow_count++;
    }
    pthread_mutex_unlock(&g_lock);
    return pkey;
}

EXPORT void StandinNCryptReboot(void) {
    pthread_mutex_lock(&g_lock);
    g_boot++;
    pthread_mutex_unlock(&g_lock);
}

EXPORT void StandinNCryptSetVbs(int available) { g_vbs = available ? 1 : 0; }

EXPORT void StandinNCryptReset(void) {
    pthread_mutex_lock(&g_lock);
    while (g_store) unlink_key(g_store);
    g_sign_count = g_borrow_count = 0;
    g_vbs = -1;
    pthread_mutex_unlock(&g_lock);
    pthread_mutex_lock(&g_fault_lock);
    memset(g_faults, 0, sizeof(g_faults));
    pthread_mutex_unlock(&g_fault_lock);
}

EXPORT void StandinNCryptFailNext(const char *api, int32_t status, int count) {
    standin_add_fault(g_faults, 16, &g_fault_lock, api, status, count);
}

EXPORT long StandinNCryptLiveHandles(void) { return (long)g_count; }
EXPORT long StandinNCryptLiveBuffers(void) { return g_live_buffers; }
EXPORT long StandinNCryptSignCount(void) { return g_sign_count; }
EXPORT long StandinNCryptBorrowCount(void) { return g_borrow_count; }

EXPORT long StandinNCryptKeyCount(void) {
    long n = 0;
    pthread_mutex_lock(&g_lock);
    for (stored_key *k = g_store; k; k = k->next) n++;
    pthread_mutex_unlock(&g_lock);
    return n;
}
