/* Stand-in for crypt32.dll: certificate contexts, their properties, system stores, key acquisition.
 *
 * Semantics reproduced: reference-counted CERT_CONTEXTs (Duplicate/Free), the DER copied on create
 * and validated (CRYPT_E_ASN1_BADTAG), properties with size queries (ERROR_MORE_DATA) and
 * CRYPT_E_NOT_FOUND, CRYPT_KEY_PROV_INFO returned as one self-contained buffer, the computed SHA-1
 * hash property, per-process system stores ("My", "Root", ...) where CertEnumCertificatesInStore
 * frees the previous context, CertAddCertificateContextToStore dispositions (incl. 5 = replace and
 * inherit properties), CertDeleteCertificateFromStore consuming its argument, read-only stores, and
 * CryptAcquireCertificatePrivateKey reopening the key by name through the NCrypt stand-in (or
 * returning a handle bound with CERT_NCRYPT_KEY_HANDLE_PROP_ID, owned by the context).
 * Failures set the last error (errno).
 */
#include "standin.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <strings.h>

#define X509_ASN_ENCODING 0x1
#define CERT_KEY_PROV_INFO_PROP_ID 2
#define CERT_SHA1_HASH_PROP_ID 3
#define CERT_FRIENDLY_NAME_PROP_ID 11
#define CERT_NCRYPT_KEY_HANDLE_PROP_ID 78
#define CERT_NCRYPT_KEY_SPEC 0xFFFFFFFFu
#define CERT_STORE_PROV_SYSTEM_W ((LPCSTR)10)
#define CERT_SYSTEM_STORE_LOCATION_MASK 0x00FF0000u
#define CERT_SYSTEM_STORE_CURRENT_USER 0x00010000u
#define CERT_STORE_OPEN_EXISTING_FLAG 0x4000u
#define CERT_STORE_READONLY_FLAG 0x8000u
#define CERT_CLOSE_STORE_CHECK_FLAG 0x2u
#define CRYPT_MACHINE_KEYSET 0x20u
#define CRYPT_ACQUIRE_CACHE_FLAG 0x1u
#define CRYPT_ACQUIRE_ONLY_NCRYPT_KEY_FLAG 0x40000u
#define CONTEXT_MAGIC 0x43455254u
#define STORE_MAGIC 0x53544f52u

SECURITY_STATUS NCryptOpenStorageProvider(NCRYPT_PROV_HANDLE *, LPCWSTR, DWORD);
SECURITY_STATUS NCryptOpenKey(NCRYPT_PROV_HANDLE, NCRYPT_KEY_HANDLE *, LPCWSTR, DWORD, DWORD);
SECURITY_STATUS NCryptFreeObject(NCRYPT_HANDLE);

typedef struct prop {
    DWORD id;
    BYTE *data;
    DWORD size;
    struct prop *next;
} prop;

struct store_obj;

typedef struct ctx_impl {
    CERT_CONTEXT pub; /* first: a PCCERT_CONTEXT is a pointer to the whole object */
    uint32_t magic;
    int refs;
    int in_store;
    uint64_t seq;
    prop *props;
    NCRYPT_KEY_HANDLE bound_key;  /* CERT_NCRYPT_KEY_HANDLE_PROP_ID: owned by the context */
    NCRYPT_KEY_HANDLE cached_key; /* CRYPT_ACQUIRE_CACHE_FLAG */
    struct store_obj *store;
    struct ctx_impl *next_in_store;
    struct ctx_impl *next_all, *prev_all;
} ctx_impl;

typedef struct store_obj {
    wchar_t name[64];
    ctx_impl *certs;
    uint64_t next_seq;
    struct store_obj *next;
} store_obj;

typedef struct {
    uint32_t magic;
    store_obj *obj;
    int readonly;
} store_handle;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static store_obj *g_stores;
static ctx_impl *g_all;
static long g_live_stores;
static int g_cert_info_dummy;

static ctx_impl *impl(PCCERT_CONTEXT context) {
    ctx_impl *c = (ctx_impl *)context;
    return c && c->magic == CONTEXT_MAGIC ? c : NULL;
}

static prop *find_prop(ctx_impl *c, DWORD id) {
    for (prop *p = c->props; p; p = p->next)
        if (p->id == id) return p;
    return NULL;
}

static void drop_prop(ctx_impl *c, DWORD id) {
    for (prop **p = &c->props; *p; p = &(*p)->next) {
        if ((*p)->id == id) {
            prop *gone = *p;
            *p = gone->next;
            free(gone->data);
            free(gone);
            return;
        }
    }
}

static int put_prop(ctx_impl *c, DWORD id, const void *data, DWORD size) {
    BYTE *copy = malloc(size ? size : 1);
    prop *p = calloc(1, sizeof(prop));
    if (!copy || !p) {
        free(copy);
        free(p);
        return 0;
    }
    memcpy(copy, data, size);
    drop_prop(c, id);
    p->id = id;
    p->data = copy;
    p->size = size;
    p->next = c->props;
    c->props = p;
    return 1;
}

static ctx_impl *new_context(const BYTE *der, DWORD size) {
    ctx_impl *c = calloc(1, sizeof(ctx_impl));
    BYTE *copy = malloc(size);
    if (!c || !copy) {
        free(c);
        free(copy);
        return NULL;
    }
    memcpy(copy, der, size);
    c->pub.dwCertEncodingType = X509_ASN_ENCODING;
    c->pub.pbCertEncoded = copy;
    c->pub.cbCertEncoded = size;
    c->pub.pCertInfo = &g_cert_info_dummy;
    c->magic = CONTEXT_MAGIC;
    c->refs = 1;
    c->next_all = g_all;
    if (g_all) g_all->prev_all = c;
    g_all = c;
    return c;
}

static void release(ctx_impl *c) { /* under g_lock */
    if (--c->refs > 0) return;
    while (c->props) drop_prop(c, c->props->id);
    if (c->bound_key) NCryptFreeObject(c->bound_key);
    if (c->cached_key) NCryptFreeObject(c->cached_key);
    if (c->prev_all) c->prev_all->next_all = c->next_all;
    else g_all = c->next_all;
    if (c->next_all) c->next_all->prev_all = c->prev_all;
    free(c->pub.pbCertEncoded);
    c->magic = 0;
    free(c);
}

EXPORT PCCERT_CONTEXT WINAPI CertCreateCertificateContext(DWORD dwCertEncodingType, const BYTE *pbCertEncoded,
                                                          DWORD cbCertEncoded) {
    if (!(dwCertEncodingType & X509_ASN_ENCODING) || !pbCertEncoded) FAIL_NULL(ERROR_INVALID_PARAMETER);
    const unsigned char *cursor = pbCertEncoded;
    X509 *parsed = d2i_X509(NULL, &cursor, cbCertEncoded);
    if (!parsed || cursor != pbCertEncoded + cbCertEncoded) {
        X509_free(parsed);
        FAIL_NULL(CRYPT_E_ASN1_BADTAG);
    }
    X509_free(parsed);
    pthread_mutex_lock(&g_lock);
    ctx_impl *c = new_context(pbCertEncoded, cbCertEncoded);
    pthread_mutex_unlock(&g_lock);
    if (!c) FAIL_NULL(ERROR_NOT_ENOUGH_MEMORY);
    return &c->pub;
}

EXPORT PCCERT_CONTEXT WINAPI CertDuplicateCertificateContext(PCCERT_CONTEXT pCertContext) {
    pthread_mutex_lock(&g_lock);
    ctx_impl *c = impl(pCertContext);
    if (c) c->refs++;
    pthread_mutex_unlock(&g_lock);
    return c ? &c->pub : NULL;
}

EXPORT BOOL WINAPI CertFreeCertificateContext(PCCERT_CONTEXT pCertContext) {
    if (!pCertContext) return TRUE;
    pthread_mutex_lock(&g_lock);
    ctx_impl *c = impl(pCertContext);
    if (c) release(c);
    pthread_mutex_unlock(&g_lock);
    if (!c) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    return TRUE;
}

static int set_key_prov_info(ctx_impl *c, const CRYPT_KEY_PROV_INFO *info) {
    /* stored flat: the struct with its two strings after it; pointers fixed up on read */
    size_t container = info->pwszContainerName ? (wcslen(info->pwszContainerName) + 1) * sizeof(wchar_t) : 0;
    size_t provider = info->pwszProvName ? (wcslen(info->pwszProvName) + 1) * sizeof(wchar_t) : 0;
    size_t size = sizeof(CRYPT_KEY_PROV_INFO) + container + provider;
    BYTE *flat = calloc(1, size);
    if (!flat) return 0;
    CRYPT_KEY_PROV_INFO *copy = (CRYPT_KEY_PROV_INFO *)flat;
    *copy = *info;
    copy->cProvParam = 0;
    copy->rgProvParam = NULL;
    copy->pwszContainerName = container ? (LPWSTR)(uintptr_t)sizeof(CRYPT_KEY_PROV_INFO) : NULL; /* offsets */
    copy->pwszProvName = provider ? (LPWSTR)(uintptr_t)(sizeof(CRYPT_KEY_PROV_INFO) + container) : NULL;
    if (container) memcpy(flat + sizeof(CRYPT_KEY_PROV_INFO), info->pwszContainerName, container);
    if (provider) memcpy(flat + sizeof(CRYPT_KEY_PROV_INFO) + container, info->pwszProvName, provider);
    int ok = put_prop(c, CERT_KEY_PROV_INFO_PROP_ID, flat, (DWORD)size);
    free(flat);
    return ok;
}

EXPORT BOOL WINAPI CertSetCertificateContextProperty(PCCERT_CONTEXT pCertContext, DWORD dwPropId, DWORD dwFlags,
                                                     const void *pvData) {
    (void)dwFlags;
    int ok = 1;
    int32_t error = 0;
    pthread_mutex_lock(&g_lock);
    ctx_impl *c = impl(pCertContext);
    if (!c) error = ERROR_INVALID_PARAMETER;
    else if (dwPropId == CERT_SHA1_HASH_PROP_ID) error = E_ACCESSDENIED;
    else if (!pvData) {
        drop_prop(c, dwPropId);
        if (dwPropId == CERT_NCRYPT_KEY_HANDLE_PROP_ID && c->bound_key) {
            NCryptFreeObject(c->bound_key);
            c->bound_key = 0;
        }
    } else if (dwPropId == CERT_KEY_PROV_INFO_PROP_ID) ok = set_key_prov_info(c, pvData);
    else if (dwPropId == CERT_NCRYPT_KEY_HANDLE_PROP_ID) {
        if (c->bound_key) NCryptFreeObject(c->bound_key);
        c->bound_key = *(const NCRYPT_KEY_HANDLE *)pvData;
    } else {
        const CRYPT_DATA_BLOB *blob = pvData;
        ok = put_prop(c, dwPropId, blob->pbData, blob->cbData);
    }
    pthread_mutex_unlock(&g_lock);
    if (error) FAIL_BOOL(error);
    if (!ok) FAIL_BOOL(ERROR_NOT_ENOUGH_MEMORY);
    return TRUE;
}

EXPORT BOOL WINAPI CertGetCertificateContextProperty(PCCERT_CONTEXT pCertContext, DWORD dwPropId, void *pvData,
                                                     DWORD *pcbData) {
    if (!pcbData) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    BYTE sha1[20];
    const BYTE *value = NULL;
    DWORD size = 0;
    int32_t error = 0;
    int key_prov_info = 0;
    pthread_mutex_lock(&g_lock);
    ctx_impl *c = impl(pCertContext);
    prop *p = c ? find_prop(c, dwPropId) : NULL;
    if (!c) error = ERROR_INVALID_PARAMETER;
    else if (dwPropId == CERT_SHA1_HASH_PROP_ID) {
        unsigned int length = 0;
        EVP_Digest(c->pub.pbCertEncoded, c->pub.cbCertEncoded, sha1, &length, EVP_sha1(), NULL);
        value = sha1;
        size = length;
    } else if (dwPropId == CERT_NCRYPT_KEY_HANDLE_PROP_ID) {
        if (c->bound_key) {
            value = (const BYTE *)&c->bound_key;
            size = sizeof(c->bound_key);
        } else error = CRYPT_E_NOT_FOUND;
    } else if (!p) error = CRYPT_E_NOT_FOUND;
    else {
        value = p->data;
        size = p->size;
        key_prov_info = dwPropId == CERT_KEY_PROV_INFO_PROP_ID;
    }
    if (!error && pvData && *pcbData < size) error = ERROR_MORE_DATA;
    if (!error && pvData) {
        memcpy(pvData, value, size);
        if (key_prov_info) { /* offsets -> pointers into the caller's buffer */
            CRYPT_KEY_PROV_INFO *info = pvData;
            if (info->pwszContainerName) info->pwszContainerName = (LPWSTR)((BYTE *)pvData + (uintptr_t)info->pwszContainerName);
            if (info->pwszProvName) info->pwszProvName = (LPWSTR)((BYTE *)pvData + (uintptr_t)info->pwszProvName);
        }
    }
    if (!error || error == ERROR_MORE_DATA) *pcbData = size;
    pthread_mutex_unlock(&g_lock);
    if (error) FAIL_BOOL(error);
    return TRUE;
}

static store_obj *system_store(LPCWSTR name, int create) {
    for (store_obj *s = g_stores; s; s = s->next)
        if (wcscasecmp(s->name, name) == 0) return s;
    if (!create || wcslen(name) >= 64) return NULL;
    store_obj *s = calloc(1, sizeof(store_obj));
    if (!s) return NULL;
    wcscpy(s->name, name);
    s->next = g_stores;
    g_stores = s;
    return s;
}

EXPORT HCERTSTORE WINAPI CertOpenStore(LPCSTR lpszStoreProvider, DWORD dwEncodingType, HCRYPTPROV_LEGACY hCryptProv,
                                       DWORD dwFlags, const void *pvPara) {
    (void)dwEncodingType;
    (void)hCryptProv;
    if (lpszStoreProvider != CERT_STORE_PROV_SYSTEM_W || !pvPara) FAIL_NULL(ERROR_INVALID_PARAMETER);
    if ((dwFlags & CERT_SYSTEM_STORE_LOCATION_MASK) != CERT_SYSTEM_STORE_CURRENT_USER) FAIL_NULL(ERROR_ACCESS_DENIED);
    pthread_mutex_lock(&g_lock);
    if (!g_stores) {
        system_store(L"Root", 1);
        system_store(L"My", 1);
    }
    store_obj *obj = system_store(pvPara, !(dwFlags & CERT_STORE_OPEN_EXISTING_FLAG));
    store_handle *h = obj ? calloc(1, sizeof(store_handle)) : NULL;
    if (h) {
        h->magic = STORE_MAGIC;
        h->obj = obj;
        h->readonly = (dwFlags & CERT_STORE_READONLY_FLAG) != 0;
        g_live_stores++;
    }
    pthread_mutex_unlock(&g_lock);
    if (!obj) FAIL_NULL(ERROR_FILE_NOT_FOUND);
    if (!h) FAIL_NULL(ERROR_NOT_ENOUGH_MEMORY);
    return h;
}

static store_handle *store_of(HCERTSTORE handle) {
    store_handle *h = handle;
    return h && h->magic == STORE_MAGIC ? h : NULL;
}

EXPORT BOOL WINAPI CertCloseStore(HCERTSTORE hCertStore, DWORD dwFlags) {
    if (!hCertStore) return TRUE;
    int pending = 0;
    pthread_mutex_lock(&g_lock);
    store_handle *h = store_of(hCertStore);
    if (h) {
        if (dwFlags & CERT_CLOSE_STORE_CHECK_FLAG)
            for (ctx_impl *c = g_all; c; c = c->next_all)
                if (c->store == h->obj && c->refs > c->in_store) pending = 1;
        h->magic = 0;
        free(h);
        g_live_stores--;
    }
    pthread_mutex_unlock(&g_lock);
    if (!h) FAIL_BOOL(ERROR_INVALID_HANDLE);
    if (pending) FAIL_BOOL(CRYPT_E_PENDING_CLOSE);
    return TRUE;
}

EXPORT PCCERT_CONTEXT WINAPI CertEnumCertificatesInStore(HCERTSTORE hCertStore, PCCERT_CONTEXT pPrevCertContext) {
    ctx_impl *next = NULL;
    int32_t error = CRYPT_E_NOT_FOUND;
    pthread_mutex_lock(&g_lock);
    store_handle *h = store_of(hCertStore);
    ctx_impl *previous = impl(pPrevCertContext);
    if (!h) error = ERROR_INVALID_HANDLE;
    else {
        uint64_t after = previous ? previous->seq : 0;
        for (ctx_impl *c = h->obj->certs; c; c = c->next_in_store)
            if (c->seq > after && (!next || c->seq < next->seq)) next = c;
        if (next) next->refs++;
    }
    if (previous) release(previous); /* the enumeration frees the previous context */
    pthread_mutex_unlock(&g_lock);
    if (!next) FAIL_NULL(error);
    return &next->pub;
}

static void unlink_from_store(ctx_impl *c) { /* under g_lock */
    if (!c->in_store) return;
    for (ctx_impl **p = &c->store->certs; *p; p = &(*p)->next_in_store) {
        if (*p == c) {
            *p = c->next_in_store;
            break;
        }
    }
    c->in_store = 0;
    release(c);
}

static ctx_impl *same_certificate(store_obj *s, ctx_impl *c) {
    for (ctx_impl *x = s->certs; x; x = x->next_in_store)
        if (x->pub.cbCertEncoded == c->pub.cbCertEncoded &&
            memcmp(x->pub.pbCertEncoded, c->pub.pbCertEncoded, c->pub.cbCertEncoded) == 0)
            return x;
    return NULL;
}

EXPORT BOOL WINAPI CertAddCertificateContextToStore(HCERTSTORE hCertStore, PCCERT_CONTEXT pCertContext,
                                                    DWORD dwAddDisposition, PCCERT_CONTEXT *ppStoreContext) {
    int32_t error = 0;
    ctx_impl *added = NULL;
    pthread_mutex_lock(&g_lock);
    store_handle *h = store_of(hCertStore);
    ctx_impl *c = impl(pCertContext);
    ctx_impl *existing = h && c ? same_certificate(h->obj, c) : NULL;
    if (!h) error = ERROR_INVALID_HANDLE;
    else if (!c || dwAddDisposition < 1 || dwAddDisposition > 5) error = ERROR_INVALID_PARAMETER;
    else if (h->readonly) error = E_ACCESSDENIED;
    else if (existing && dwAddDisposition == 1) error = CRYPT_E_EXISTS;
    else if (existing && dwAddDisposition == 2) {
        added = existing;
    } else {
        added = new_context(c->pub.pbCertEncoded, c->pub.cbCertEncoded);
        if (!added) error = ERROR_NOT_ENOUGH_MEMORY;
        else {
            for (prop *p = c->props; p; p = p->next) put_prop(added, p->id, p->data, p->size);
            if (existing && dwAddDisposition == 5)
                for (prop *p = existing->props; p; p = p->next)
                    if (!find_prop(added, p->id)) put_prop(added, p->id, p->data, p->size);
            if (existing && dwAddDisposition != 4) unlink_from_store(existing);
            added->store = h->obj;
            added->in_store = 1;
            added->seq = ++h->obj->next_seq;
            added->next_in_store = h->obj->certs;
            h->obj->certs = added;
            added->refs = 1; /* the store's reference */
        }
    }
    if (added && ppStoreContext) {
        added->refs++;
        *ppStoreContext = &added->pub;
    }
    pthread_mutex_unlock(&g_lock);
    if (error) FAIL_BOOL(error);
    return TRUE;
}

EXPORT BOOL WINAPI CertDeleteCertificateFromStore(PCCERT_CONTEXT pCertContext) {
    pthread_mutex_lock(&g_lock);
    ctx_impl *c = impl(pCertContext);
    if (c) {
        unlink_from_store(c);
        release(c); /* always frees the context it is given */
    }
    pthread_mutex_unlock(&g_lock);
    if (!c) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    return TRUE;
}

EXPORT BOOL WINAPI CryptAcquireCertificatePrivateKey(PCCERT_CONTEXT pCert, DWORD dwFlags, void *pvParameters,
                                                     HCRYPTPROV_OR_NCRYPT_KEY_HANDLE *phKey, DWORD *pdwKeySpec,
                                                     BOOL *pfCallerFree) {
    (void)pvParameters;
    if (!phKey) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    wchar_t container[256] = {0}, provider[256] = {0};
    DWORD key_spec = 0, key_flags = 0;
    int32_t error = 0;
    NCRYPT_KEY_HANDLE ready = 0;
    int cached = 0;
    pthread_mutex_lock(&g_lock);
    ctx_impl *c = impl(pCert);
    prop *info = c ? find_prop(c, CERT_KEY_PROV_INFO_PROP_ID) : NULL;
    if (!c) error = ERROR_INVALID_PARAMETER;
    else if (c->bound_key) ready = c->bound_key;
    else if (c->cached_key) ready = c->cached_key;
    else if (!info) error = CRYPT_E_NO_KEY_PROPERTY;
    else {
        CRYPT_KEY_PROV_INFO *i = (CRYPT_KEY_PROV_INFO *)info->data;
        if (i->dwProvType != 0 && (dwFlags & CRYPT_ACQUIRE_ONLY_NCRYPT_KEY_FLAG)) error = NTE_BAD_PROVIDER;
        else {
            if (i->pwszContainerName)
                wcsncpy(container, (wchar_t *)(info->data + (uintptr_t)i->pwszContainerName), 255);
            if (i->pwszProvName) wcsncpy(provider, (wchar_t *)(info->data + (uintptr_t)i->pwszProvName), 255);
            key_spec = i->dwKeySpec;
            key_flags = i->dwFlags;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (error) FAIL_BOOL(error);
    if (!ready) {
        NCRYPT_PROV_HANDLE prov = 0;
        SECURITY_STATUS status = NCryptOpenStorageProvider(&prov, provider[0] ? provider : NULL, 0);
        if (status) FAIL_BOOL(status);
        DWORD open_flags = NCRYPT_SILENT_FLAG | ((key_flags & CRYPT_MACHINE_KEYSET) ? NCRYPT_MACHINE_KEY_FLAG : 0);
        status = NCryptOpenKey(prov, &ready, container, key_spec, open_flags);
        NCryptFreeObject(prov);
        if (status) FAIL_BOOL(status);
        if (dwFlags & CRYPT_ACQUIRE_CACHE_FLAG) {
            pthread_mutex_lock(&g_lock);
            if (impl(pCert) && !c->cached_key) {
                c->cached_key = ready;
                cached = 1;
            }
            pthread_mutex_unlock(&g_lock);
        }
    } else cached = 1;
    *phKey = ready;
    if (pdwKeySpec) *pdwKeySpec = CERT_NCRYPT_KEY_SPEC;
    if (pfCallerFree) *pfCallerFree = !cached;
    return TRUE;
}

/* ---- stand-in only: test controls ---- */

/* References held by callers (not by stores): 0 when every context was freed. */
EXPORT long StandinCrypt32OutstandingRefs(void) {
    long n = 0;
    pthread_mutex_lock(&g_lock);
    for (ctx_impl *c = g_all; c; c = c->next_all) n += c->refs - c->in_store;
    pthread_mutex_unlock(&g_lock);
    return n;
}

EXPORT long StandinCrypt32LiveStores(void) { return g_live_stores; }

EXPORT long StandinCrypt32StoreCount(LPCWSTR name) {
    long n = 0;
    pthread_mutex_lock(&g_lock);
    store_obj *s = system_store(name, 0);
    for (ctx_impl *c = s ? s->certs : NULL; c; c = c->next_in_store) n++;
    pthread_mutex_unlock(&g_lock);
    return n;
}

EXPORT void StandinCrypt32Reset(void) {
    pthread_mutex_lock(&g_lock);
    for (store_obj *s = g_stores; s; s = s->next)
        while (s->certs) unlink_from_store(s->certs);
    pthread_mutex_unlock(&g_lock);
}
