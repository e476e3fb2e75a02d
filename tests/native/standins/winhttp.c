/* Stand-in for winhttp.dll: synchronous HTTPS/1.1 with OpenSSL, client certificates from the
 * Crypt32 stand-in whose keys live in the NCrypt stand-in.
 *
 * Semantics reproduced: session/connect/request handles (validated; closing a handle another thread
 * is blocked in aborts that call with ERROR_WINHTTP_OPERATION_CANCELLED), inherited timeouts, the
 * server certificate verified against the system trust store ("Windows Root store"; plus the PEM
 * file $MSIV2_STANDIN_ROOT_CA) with host name or IP checks, SECURITY_FLAG_IGNORE_* options, the
 * client certificate option (context duplicated; its key reached as SChannel does: through
 * CryptAcquireCertificatePrivateKey, i.e. by container name), ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED
 * when the server asks for a certificate and none is set, 12185/12186 when its key is missing or
 * unusable, status callbacks (SENDING_REQUEST after the handshake and before the request is written,
 * REQUEST_SENT, SECURE_FAILURE, HANDLE_CLOSING) on the calling thread, WINHTTP_OPTION_SERVER_CERT_CONTEXT,
 * header queries with ERROR_INSUFFICIENT_BUFFER size queries, chunked and Content-Length bodies.
 * Not emulated: proxies, connection reuse, HTTP/2, WINHTTP_FLAG_ASYNC, redirects (the options that
 * disable redirects, cookies and authentication are recorded for the tests to check).
 */
#include "standin.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define KIND_SESSION 1
#define KIND_CONNECT 2
#define KIND_REQUEST 3
#define HANDLE_MAGIC 0x57494e48u

#define WINHTTP_FLAG_ASYNC 0x10000000u
#define WINHTTP_FLAG_SECURE 0x00800000u
#define WINHTTP_OPTION_SECURITY_FLAGS 31
#define WINHTTP_OPTION_CONTEXT_VALUE 45
#define WINHTTP_OPTION_CLIENT_CERT_CONTEXT 47
#define WINHTTP_OPTION_DISABLE_FEATURE 63
#define WINHTTP_OPTION_SERVER_CERT_CONTEXT 78
#define WINHTTP_OPTION_SECURE_PROTOCOLS 84
#define WINHTTP_OPTION_REDIRECT_POLICY 88
#define WINHTTP_OPTION_ENABLE_HTTP_PROTOCOL 133
#define WINHTTP_OPTION_ENABLE_HTTP2_PLUS_CLIENT_CERT 161
#define WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_3 0x2000u
#define SECURITY_FLAG_IGNORE_UNKNOWN_CA 0x100u
#define SECURITY_FLAG_IGNORE_CERT_CN_INVALID 0x1000u
#define SECURITY_FLAG_IGNORE_CERT_DATE_INVALID 0x2000u
#define WINHTTP_QUERY_STATUS_CODE 19
#define WINHTTP_QUERY_STATUS_TEXT 20
#define WINHTTP_QUERY_RAW_HEADERS_CRLF 22
#define WINHTTP_QUERY_FLAG_NUMBER 0x20000000u
#define STATUS_SENDING_REQUEST 0x10u
#define STATUS_REQUEST_SENT 0x20u
#define STATUS_HANDLE_CLOSING 0x800u
#define STATUS_SECURE_FAILURE 0x10000u
#define FLAG_INVALID_CA 0x8u
#define FLAG_CERT_CN_INVALID 0x10u
#define FLAG_CERT_DATE_INVALID 0x20u

#define ERROR_NOT_SUPPORTED 50
#define ERROR_WINHTTP_TIMEOUT 12002
#define ERROR_WINHTTP_INVALID_URL 12005
#define ERROR_WINHTTP_NAME_NOT_RESOLVED 12007
#define ERROR_WINHTTP_INVALID_OPTION 12009
#define ERROR_WINHTTP_OPERATION_CANCELLED 12017
#define ERROR_WINHTTP_INCORRECT_HANDLE_TYPE 12018
#define ERROR_WINHTTP_INCORRECT_HANDLE_STATE 12019
#define ERROR_WINHTTP_CANNOT_CONNECT 12029
#define ERROR_WINHTTP_CONNECTION_ERROR 12030
#define ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED 12044
#define ERROR_WINHTTP_HEADER_NOT_FOUND 12150
#define ERROR_WINHTTP_INVALID_SERVER_RESPONSE 12152
#define ERROR_WINHTTP_SECURE_CHANNEL_ERROR 12157
#define ERROR_WINHTTP_SECURE_FAILURE 12175
#define ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY 12185
#define ERROR_WINHTTP_CLIENT_CERT_NO_ACCESS_PRIVATE_KEY 12186

#define MAX_HEADER_BYTES (64 * 1024)
#define MAX_BODY_BYTES (64 * 1024 * 1024)
#define READ_SLICE 8192

/* crypt32 / ncrypt stand-ins */
PCCERT_CONTEXT CertCreateCertificateContext(DWORD, const BYTE *, DWORD);
PCCERT_CONTEXT CertDuplicateCertificateContext(PCCERT_CONTEXT);
BOOL CertFreeCertificateContext(PCCERT_CONTEXT);
BOOL CryptAcquireCertificatePrivateKey(PCCERT_CONTEXT, DWORD, void *, HCRYPTPROV_OR_NCRYPT_KEY_HANDLE *, DWORD *,
                                       BOOL *);
SECURITY_STATUS NCryptFreeObject(NCRYPT_HANDLE);
EVP_PKEY *StandinNCryptBorrowPkey(NCRYPT_KEY_HANDLE, int32_t *);

typedef struct hobj {
    uint32_t magic;
    int kind;
    int refs;
    int closed;
    struct hobj *parent;
    int timeouts[4]; /* resolve, connect, send, receive (ms; <= 0: none) */
    WINHTTP_STATUS_CALLBACK callback;
    DWORD callback_flags;
    DWORD_PTR context;
    DWORD protocols;
    char *agent;
    char *host;
    int port;
    char *verb, *path;
    int secure;
    DWORD security_flags, disabled_features, redirect_policy;
    PCCERT_CONTEXT client_cert;
    char *extra_headers;
    int state; /* 0 open, 1 sent, 2 response received */
    int fd;
    SSL_CTX *ssl_ctx;
    SSL *ssl;
    int cert_error;
    unsigned char *peer_der;
    int peer_der_len;
    DWORD status;
    char *raw_headers;
    char *status_text;
    unsigned char *body;
    size_t body_len, body_pos;
} hobj;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static hobj **g_handles;
static size_t g_count, g_capacity;
static long g_requests_sent;
static DWORD g_last_disabled_features, g_last_security_flags;
static int g_ex_index = -1;

static void free_obj(hobj *h);

static void unref(hobj *h) {
    int gone;
    pthread_mutex_lock(&g_lock);
    gone = --h->refs == 0;
    pthread_mutex_unlock(&g_lock);
    if (gone) free_obj(h);
}

static void free_obj(hobj *h) {
    if (h->ssl) SSL_free(h->ssl);
    if (h->ssl_ctx) SSL_CTX_free(h->ssl_ctx);
    if (h->fd >= 0) close(h->fd);
    if (h->client_cert) CertFreeCertificateContext(h->client_cert);
    free(h->agent);
    free(h->host);
    free(h->verb);
    free(h->path);
    free(h->extra_headers);
    free(h->peer_der);
    free(h->raw_headers);
    free(h->status_text);
    free(h->body);
    hobj *parent = h->parent;
    h->magic = 0;
    free(h);
    if (parent) unref(parent);
}

static hobj *new_obj(int kind, hobj *parent) {
    hobj *h = calloc(1, sizeof(hobj));
    if (!h) return NULL;
    h->magic = HANDLE_MAGIC;
    h->kind = kind;
    h->refs = 1; /* the handle table's reference */
    h->fd = -1;
    h->parent = parent;
    if (parent) {
        memcpy(h->timeouts, parent->timeouts, sizeof(h->timeouts));
        h->callback = parent->callback;
        h->callback_flags = parent->callback_flags;
        h->protocols = parent->protocols;
        parent->refs++;
    } else {
        h->timeouts[1] = 60000;
        h->timeouts[2] = 30000;
        h->timeouts[3] = 30000;
    }
    if (g_count == g_capacity) {
        size_t capacity = g_capacity ? g_capacity * 2 : 32;
        hobj **grown = realloc(g_handles, capacity * sizeof(hobj *));
        if (!grown) {
            free(h);
            return NULL;
        }
        g_handles = grown;
        g_capacity = capacity;
    }
    g_handles[g_count++] = h;
    return h;
}

/* A live handle of `kind` (0: any) with a reference taken for the caller, or NULL (last error set). */
static hobj *acquire(HINTERNET handle, int kind) {
    hobj *found = NULL;
    int wrong_type = 0;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_count; i++) {
        if (g_handles[i] == handle) {
            if (kind && g_handles[i]->kind != kind) wrong_type = 1;
            else {
                found = g_handles[i];
                found->refs++;
            }
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (!found) errno = wrong_type ? ERROR_WINHTTP_INCORRECT_HANDLE_TYPE : ERROR_INVALID_HANDLE;
    return found;
}

static int is_closed(hobj *h) { return __atomic_load_n(&h->closed, __ATOMIC_SEQ_CST); }

static char *narrow_n(LPCWSTR text, size_t n) {
    char *out = malloc(n + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) out[i] = (text[i] > 0 && text[i] < 128) ? (char)text[i] : '?';
    out[n] = 0;
    return out;
}

EXPORT HINTERNET WINAPI WinHttpOpen(LPCWSTR pszAgentW, DWORD dwAccessType, LPCWSTR pszProxyW, LPCWSTR pszProxyBypassW,
                                    DWORD dwFlags) {
    (void)dwAccessType;
    (void)pszProxyW;
    (void)pszProxyBypassW;
    if (dwFlags & WINHTTP_FLAG_ASYNC) FAIL_NULL(ERROR_NOT_SUPPORTED); /* the stand-in is synchronous only */
    pthread_mutex_lock(&g_lock);
    hobj *h = new_obj(KIND_SESSION, NULL);
    if (h) h->agent = pszAgentW ? standin_narrow(pszAgentW) : strdup("WinHTTP");
    pthread_mutex_unlock(&g_lock);
    if (!h) FAIL_NULL(ERROR_NOT_ENOUGH_MEMORY);
    return h;
}

EXPORT HINTERNET WINAPI WinHttpConnect(HINTERNET hSession, LPCWSTR pswzServerName, INTERNET_PORT nServerPort,
                                       DWORD dwReserved) {
    if (dwReserved || !pswzServerName || !*pswzServerName) FAIL_NULL(ERROR_INVALID_PARAMETER);
    hobj *session = acquire(hSession, KIND_SESSION);
    if (!session) return NULL;
    pthread_mutex_lock(&g_lock);
    hobj *h = new_obj(KIND_CONNECT, session);
    if (h) {
        h->host = standin_narrow(pswzServerName);
        h->port = nServerPort;
    }
    pthread_mutex_unlock(&g_lock);
    unref(session);
    if (!h) FAIL_NULL(ERROR_NOT_ENOUGH_MEMORY);
    return h;
}

EXPORT HINTERNET WINAPI WinHttpOpenRequest(HINTERNET hConnect, LPCWSTR pwszVerb, LPCWSTR pwszObjectName,
                                           LPCWSTR pwszVersion, LPCWSTR pwszReferrer, LPCWSTR *ppwszAcceptTypes,
                                           DWORD dwFlags) {
    (void)pwszReferrer;
    (void)ppwszAcceptTypes;
    if (pwszVersion && wcscmp(pwszVersion, L"HTTP/1.1") != 0) FAIL_NULL(ERROR_NOT_SUPPORTED);
    hobj *connect = acquire(hConnect, KIND_CONNECT);
    if (!connect) return NULL;
    pthread_mutex_lock(&g_lock);
    hobj *h = new_obj(KIND_REQUEST, connect);
    if (h) {
        h->verb = pwszVerb ? standin_narrow(pwszVerb) : strdup("GET");
        h->path = pwszObjectName ? standin_narrow(pwszObjectName) : strdup("/");
        h->secure = (dwFlags & WINHTTP_FLAG_SECURE) != 0;
    }
    pthread_mutex_unlock(&g_lock);
    unref(connect);
    if (!h) FAIL_NULL(ERROR_NOT_ENOUGH_MEMORY);
    return h;
}

static BOOL dword_option(DWORD *target, LPVOID lpBuffer, DWORD dwBufferLength) {
    if (!lpBuffer || dwBufferLength < sizeof(DWORD)) FAIL_BOOL(ERROR_INSUFFICIENT_BUFFER);
    memcpy(target, lpBuffer, sizeof(DWORD));
    return TRUE;
}

EXPORT BOOL WINAPI WinHttpSetOption(HINTERNET hInternet, DWORD dwOption, LPVOID lpBuffer, DWORD dwBufferLength) {
    hobj *h = acquire(hInternet, 0);
    if (!h) return FALSE;
    BOOL ok = TRUE;
    int32_t error = 0;
    DWORD value = 0;
    switch (dwOption) {
    case WINHTTP_OPTION_SECURE_PROTOCOLS:
        ok = dword_option(&h->protocols, lpBuffer, dwBufferLength);
        break;
    case WINHTTP_OPTION_CONTEXT_VALUE:
        if (!lpBuffer || dwBufferLength < sizeof(DWORD_PTR)) error = ERROR_INSUFFICIENT_BUFFER;
        else memcpy(&h->context, lpBuffer, sizeof(DWORD_PTR));
        break;
    case WINHTTP_OPTION_ENABLE_HTTP_PROTOCOL:
    case WINHTTP_OPTION_ENABLE_HTTP2_PLUS_CLIENT_CERT:
        ok = dword_option(&value, lpBuffer, dwBufferLength);
        break;
    case WINHTTP_OPTION_SECURITY_FLAGS:
    case WINHTTP_OPTION_DISABLE_FEATURE:
    case WINHTTP_OPTION_REDIRECT_POLICY:
    case WINHTTP_OPTION_CLIENT_CERT_CONTEXT:
        if (h->kind != KIND_REQUEST) error = ERROR_WINHTTP_INCORRECT_HANDLE_TYPE;
        else if (h->state != 0) error = ERROR_WINHTTP_INCORRECT_HANDLE_STATE;
        else if (dwOption == WINHTTP_OPTION_SECURITY_FLAGS) ok = dword_option(&h->security_flags, lpBuffer, dwBufferLength);
        else if (dwOption == WINHTTP_OPTION_REDIRECT_POLICY) ok = dword_option(&h->redirect_policy, lpBuffer, dwBufferLength);
        else if (dwOption == WINHTTP_OPTION_DISABLE_FEATURE) {
            ok = dword_option(&value, lpBuffer, dwBufferLength);
            h->disabled_features |= value;
        } else if (lpBuffer && dwBufferLength != sizeof(CERT_CONTEXT)) error = ERROR_INVALID_PARAMETER;
        else {
            if (h->client_cert) CertFreeCertificateContext(h->client_cert);
            h->client_cert = lpBuffer ? CertDuplicateCertificateContext((PCCERT_CONTEXT)lpBuffer) : NULL;
            if (lpBuffer && !h->client_cert) error = ERROR_INVALID_PARAMETER;
        }
        break;
    default:
        error = ERROR_WINHTTP_INVALID_OPTION;
    }
    unref(h);
    if (error) FAIL_BOOL(error);
    return ok;
}

EXPORT BOOL WINAPI WinHttpQueryOption(HINTERNET hInternet, DWORD dwOption, LPVOID lpBuffer, LPDWORD lpdwBufferLength) {
    if (!lpdwBufferLength) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    hobj *h = acquire(hInternet, 0);
    if (!h) return FALSE;
    int32_t error = 0;
    if (dwOption == WINHTTP_OPTION_SERVER_CERT_CONTEXT) {
        if (h->kind != KIND_REQUEST) error = ERROR_WINHTTP_INCORRECT_HANDLE_TYPE;
        else if (!h->peer_der) error = ERROR_WINHTTP_INCORRECT_HANDLE_STATE;
        else if (!lpBuffer || *lpdwBufferLength < sizeof(PCCERT_CONTEXT)) error = ERROR_INSUFFICIENT_BUFFER;
        else {
            PCCERT_CONTEXT context = CertCreateCertificateContext(1, h->peer_der, (DWORD)h->peer_der_len);
            if (!context) error = errno;
            else memcpy(lpBuffer, &context, sizeof(context));
        }
        *lpdwBufferLength = sizeof(PCCERT_CONTEXT);
    } else if (dwOption == WINHTTP_OPTION_SECURITY_FLAGS && h->kind == KIND_REQUEST) {
        if (!lpBuffer || *lpdwBufferLength < sizeof(DWORD)) error = ERROR_INSUFFICIENT_BUFFER;
        else memcpy(lpBuffer, &h->security_flags, sizeof(DWORD));
        *lpdwBufferLength = sizeof(DWORD);
    } else error = ERROR_WINHTTP_INVALID_OPTION;
    unref(h);
    if (error) FAIL_BOOL(error);
    return TRUE;
}

EXPORT BOOL WINAPI WinHttpSetTimeouts(HINTERNET hInternet, int nResolveTimeout, int nConnectTimeout, int nSendTimeout,
                                      int nReceiveTimeout) {
    if (nResolveTimeout < -1 || nConnectTimeout < -1 || nSendTimeout < -1 || nReceiveTimeout < -1)
        FAIL_BOOL(ERROR_INVALID_PARAMETER);
    hobj *h = acquire(hInternet, 0);
    if (!h) return FALSE;
    h->timeouts[0] = nResolveTimeout;
    h->timeouts[1] = nConnectTimeout;
    h->timeouts[2] = nSendTimeout;
    h->timeouts[3] = nReceiveTimeout;
    unref(h);
    return TRUE;
}

EXPORT BOOL WINAPI WinHttpAddRequestHeaders(HINTERNET hRequest, LPCWSTR lpszHeaders, DWORD dwHeadersLength,
                                            DWORD dwModifiers) {
    (void)dwModifiers;
    if (!lpszHeaders) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    hobj *h = acquire(hRequest, KIND_REQUEST);
    if (!h) return FALSE;
    size_t n = dwHeadersLength == 0xFFFFFFFFu ? wcslen(lpszHeaders) : dwHeadersLength;
    char *text = narrow_n(lpszHeaders, n);
    size_t old = h->extra_headers ? strlen(h->extra_headers) : 0;
    char *joined = realloc(h->extra_headers, old + n + 3);
    if (joined && text) {
        memcpy(joined + old, text, n + 1);
        if (n < 2 || strcmp(joined + old + n - 2, "\r\n") != 0) strcat(joined, "\r\n");
        h->extra_headers = joined;
    }
    free(text);
    unref(h);
    if (!joined) FAIL_BOOL(ERROR_NOT_ENOUGH_MEMORY);
    return TRUE;
}

EXPORT WINHTTP_STATUS_CALLBACK WINAPI WinHttpSetStatusCallback(HINTERNET hInternet,
                                                               WINHTTP_STATUS_CALLBACK lpfnInternetCallback,
                                                               DWORD dwNotificationFlags, DWORD_PTR dwReserved) {
    (void)dwReserved;
    hobj *h = acquire(hInternet, 0);
    if (!h) return (WINHTTP_STATUS_CALLBACK)(intptr_t)-1;
    WINHTTP_STATUS_CALLBACK previous = h->callback;
    h->callback = lpfnInternetCallback;
    h->callback_flags = lpfnInternetCallback ? dwNotificationFlags : 0;
    unref(h);
    return previous;
}

static void notify(hobj *h, DWORD status, void *info, DWORD length) {
    if (h->callback && (h->callback_flags & status)) h->callback(h, h->context, status, info, length);
}

/* Wait until fd is ready for `events`; 1 ready, 0 timeout, -1 cancelled (handle closed). */
static int wait_fd(hobj *h, int fd, short events, int timeout_ms) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (is_closed(h)) return -1;
        struct pollfd p = {fd, events, 0};
        int ready = poll(&p, 1, 50);
        if (ready > 0) return 1;
        if (ready < 0 && errno != EINTR) return 1; /* let the following I/O report the error */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (timeout_ms > 0 && elapsed >= timeout_ms) return 0;
    }
}

static int32_t wait_error(int result) {
    return result < 0 ? ERROR_WINHTTP_OPERATION_CANCELLED : ERROR_WINHTTP_TIMEOUT;
}

static int32_t tcp_connect(hobj *h, const char *host, int port) {
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, service, &hints, &found) != 0 || !found) return ERROR_WINHTTP_NAME_NOT_RESOLVED;
    int32_t error = ERROR_WINHTTP_CANNOT_CONNECT;
    for (struct addrinfo *a = found; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS) {
            int ready = wait_fd(h, fd, POLLOUT, h->timeouts[1]);
            int so_error = 0;
            socklen_t length = sizeof(so_error);
            if (ready == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length) == 0 && so_error == 0) {
                h->fd = fd;
                error = 0;
                break;
            }
            if (ready <= 0) error = wait_error(ready);
        }
        close(fd);
        if (error == ERROR_WINHTTP_OPERATION_CANCELLED || error == ERROR_WINHTTP_TIMEOUT) break;
    }
    freeaddrinfo(found);
    return error;
}

static int verify_callback(int preverified, X509_STORE_CTX *store) {
    if (preverified) return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    hobj *h = SSL_get_ex_data(ssl, g_ex_index);
    int error = X509_STORE_CTX_get_error(store);
    DWORD flags = h->security_flags;
    switch (error) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        return (flags & SECURITY_FLAG_IGNORE_UNKNOWN_CA) != 0;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return (flags & SECURITY_FLAG_IGNORE_CERT_DATE_INVALID) != 0;
    default:
        return 0;
    }
}

static DWORD failure_flags(long verify_result) {
    switch (verify_result) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return FLAG_CERT_CN_INVALID;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return FLAG_CERT_DATE_INVALID;
    default:
        return FLAG_INVALID_CA;
    }
}

/* SChannel's side of client authentication: the certificate's key, reopened through Crypt32/NCrypt. */
static int client_cert_callback(SSL *ssl, void *arg) {
    (void)arg;
    hobj *h = SSL_get_ex_data(ssl, g_ex_index);
    if (!h->client_cert) {
        h->cert_error = ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED;
        return 0;
    }
    const unsigned char *der = h->client_cert->pbCertEncoded;
    X509 *certificate = d2i_X509(NULL, &der, h->client_cert->cbCertEncoded);
    HCRYPTPROV_OR_NCRYPT_KEY_HANDLE key = 0;
    DWORD spec = 0;
    BOOL caller_free = FALSE;
    if (!CryptAcquireCertificatePrivateKey(h->client_cert, 0x40040u, NULL, &key, &spec, &caller_free)) {
        int32_t reason = errno;
        X509_free(certificate);
        h->cert_error = reason == CRYPT_E_NO_KEY_PROPERTY ? ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY
                                                          : ERROR_WINHTTP_CLIENT_CERT_NO_ACCESS_PRIVATE_KEY;
        return 0;
    }
    int32_t status = 0;
    EVP_PKEY *pkey = StandinNCryptBorrowPkey(key, &status);
    if (caller_free) NCryptFreeObject(key);
    int ok = certificate && pkey && SSL_use_certificate(ssl, certificate) == 1 && SSL_use_PrivateKey(ssl, pkey) == 1 &&
             SSL_check_private_key(ssl) == 1;
    X509_free(certificate);
    EVP_PKEY_free(pkey);
    if (!ok) h->cert_error = ERROR_WINHTTP_CLIENT_CERT_NO_ACCESS_PRIVATE_KEY;
    return ok;
}

static int is_ip_address(const char *host) {
    unsigned char buffer[16];
    return inet_pton(AF_INET, host, buffer) == 1 || inet_pton(AF_INET6, host, buffer) == 1;
}

static int32_t tls_handshake(hobj *h, const char *host) {
    h->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!h->ssl_ctx) return ERROR_WINHTTP_SECURE_CHANNEL_ERROR;
    SSL_CTX_set_min_proto_version(h->ssl_ctx, TLS1_2_VERSION);
    if (h->protocols && !(h->protocols & WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_3))
        SSL_CTX_set_max_proto_version(h->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_default_verify_paths(h->ssl_ctx);
    const char *extra_root = getenv("MSIV2_STANDIN_ROOT_CA");
    if (extra_root && *extra_root) SSL_CTX_load_verify_locations(h->ssl_ctx, extra_root, NULL);
    SSL_CTX_set_verify(h->ssl_ctx, SSL_VERIFY_PEER, verify_callback);
    SSL_CTX_set_cert_cb(h->ssl_ctx, client_cert_callback, NULL);
    h->ssl = SSL_new(h->ssl_ctx);
    if (!h->ssl) return ERROR_WINHTTP_SECURE_CHANNEL_ERROR;
    SSL_set_ex_data(h->ssl, g_ex_index, h);
    if (!(h->security_flags & SECURITY_FLAG_IGNORE_CERT_CN_INVALID)) {
        X509_VERIFY_PARAM *param = SSL_get0_param(h->ssl);
        if (is_ip_address(host)) X509_VERIFY_PARAM_set1_ip_asc(param, host);
        else X509_VERIFY_PARAM_set1_host(param, host, 0);
    }
    if (!is_ip_address(host)) SSL_set_tlsext_host_name(h->ssl, host);
    SSL_set_fd(h->ssl, h->fd);
    for (;;) {
        ERR_clear_error();
        int result = SSL_connect(h->ssl);
        if (result == 1) break;
        int reason = SSL_get_error(h->ssl, result);
        if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) {
            int ready = wait_fd(h, h->fd, reason == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, h->timeouts[3]);
            if (ready <= 0) return wait_error(ready);
            continue;
        }
        if (h->cert_error) return h->cert_error;
        long verify = SSL_get_verify_result(h->ssl);
        if (verify != X509_V_OK) {
            DWORD flags = failure_flags(verify);
            notify(h, STATUS_SECURE_FAILURE, &flags, sizeof(flags));
            return ERROR_WINHTTP_SECURE_FAILURE;
        }
        return ERROR_WINHTTP_CONNECTION_ERROR; /* e.g. the server refused our certificate with an alert */
    }
    X509 *peer = SSL_get1_peer_certificate(h->ssl);
    if (peer) {
        h->peer_der_len = i2d_X509(peer, &h->peer_der);
        X509_free(peer);
    }
    return 0;
}

static int32_t write_all(hobj *h, const char *data, size_t length) {
    size_t done = 0;
    while (done < length) {
        ERR_clear_error();
        int n = SSL_write(h->ssl, data + done, (int)(length - done));
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        int reason = SSL_get_error(h->ssl, n);
        if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) {
            int ready = wait_fd(h, h->fd, reason == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, h->timeouts[2]);
            if (ready <= 0) return wait_error(ready);
            continue;
        }
        return ERROR_WINHTTP_CONNECTION_ERROR;
    }
    return 0;
}

/* Read up to `capacity` bytes; returns bytes read, 0 at EOF, or -error. */
static long read_some(hobj *h, unsigned char *buffer, size_t capacity) {
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(h->ssl, buffer, (int)capacity);
        if (n > 0) return n;
        int reason = SSL_get_error(h->ssl, n);
        if (reason == SSL_ERROR_ZERO_RETURN) return 0;
        if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) {
            int ready = wait_fd(h, h->fd, reason == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, h->timeouts[3]);
            if (ready <= 0) return -wait_error(ready);
            continue;
        }
        if (reason == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) return 0; /* peer closed without close_notify */
        return -ERROR_WINHTTP_CONNECTION_ERROR;
    }
}

/* A caller-supplied header replaces the one WinHTTP would add. */
static int has_header(const char *headers, const char *name) {
    size_t n = strlen(name);
    for (const char *line = headers; line && *line; line = strstr(line, "\r\n") ? strstr(line, "\r\n") + 2 : NULL)
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') return 1;
    return 0;
}

EXPORT BOOL WINAPI WinHttpSendRequest(HINTERNET hRequest, LPCWSTR lpszHeaders, DWORD dwHeadersLength, LPVOID lpOptional,
                                      DWORD dwOptionalLength, DWORD dwTotalLength, DWORD_PTR dwContext) {
    if (dwOptionalLength > dwTotalLength || (dwOptionalLength && !lpOptional)) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    if (dwTotalLength != dwOptionalLength) FAIL_BOOL(ERROR_NOT_SUPPORTED); /* no WinHttpWriteData here */
    hobj *h = acquire(hRequest, KIND_REQUEST);
    if (!h) return FALSE;
    int32_t error = 0;
    char *headers = NULL;
    if (h->state != 0) error = ERROR_WINHTTP_INCORRECT_HANDLE_STATE;
    else if (!h->secure) error = ERROR_NOT_SUPPORTED; /* https only */
    else {
        h->state = 1;
        h->context = dwContext;
        if (lpszHeaders) headers = narrow_n(lpszHeaders, dwHeadersLength == 0xFFFFFFFFu ? wcslen(lpszHeaders) : dwHeadersLength);
        pthread_mutex_lock(&g_lock);
        if (g_ex_index < 0) g_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        pthread_mutex_unlock(&g_lock);
        const char *host = h->parent->host;
        int port = h->parent->port ? h->parent->port : 443;
        error = tcp_connect(h, host, port);
        if (!error) error = tls_handshake(h, host);
        if (!error) {
            notify(h, STATUS_SENDING_REQUEST, NULL, 0);
            if (is_closed(h)) error = ERROR_WINHTTP_OPERATION_CANCELLED;
        }
        if (!error) {
            const char *agent = h->parent->parent->agent;
            size_t size = strlen(h->verb) + strlen(h->path) + strlen(host) + strlen(agent) + 256 +
                          (h->extra_headers ? strlen(h->extra_headers) : 0) + (headers ? strlen(headers) : 0);
            char *request = malloc(size + dwOptionalLength);
            int own_agent = has_header(h->extra_headers, "User-Agent") || has_header(headers, "User-Agent");
            int length = snprintf(request, size, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%s%s%s", h->verb, h->path, host,
                                  port, own_agent ? "" : "User-Agent: ", own_agent ? "" : agent, own_agent ? "" : "\r\n",
                                  h->extra_headers ? h->extra_headers : "", headers ? headers : "");
            if (length > 2 && !(request[length - 1] == '\n' && request[length - 2] == '\r') && headers && *headers)
                length += snprintf(request + length, size - (size_t)length, "\r\n");
            if (dwTotalLength || strcmp(h->verb, "POST") == 0 || strcmp(h->verb, "PUT") == 0)
                length += snprintf(request + length, size - (size_t)length, "Content-Length: %u\r\n", dwTotalLength);
            length += snprintf(request + length, size - (size_t)length, "Connection: close\r\n\r\n");
            memcpy(request + length, lpOptional, dwOptionalLength);
            error = write_all(h, request, (size_t)length + dwOptionalLength);
            free(request);
            if (!error) {
                DWORD sent = (DWORD)length + dwOptionalLength;
                pthread_mutex_lock(&g_lock);
                g_requests_sent++;
                g_last_disabled_features = h->disabled_features;
                g_last_security_flags = h->security_flags;
                pthread_mutex_unlock(&g_lock);
                notify(h, STATUS_REQUEST_SENT, &sent, sizeof(sent));
            }
        }
        if (!error && is_closed(h)) error = ERROR_WINHTTP_OPERATION_CANCELLED;
    }
    free(headers);
    unref(h);
    if (error) FAIL_BOOL(error);
    return TRUE;
}

static char *find_header(char *headers, const char *name) {
    size_t n = strlen(name);
    for (char *line = strstr(headers, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        char *start = line + 2;
        if (strncasecmp(start, name, n) == 0 && start[n] == ':') {
            start += n + 1;
            while (*start == ' ' || *start == '\t') start++;
            return start;
        }
    }
    return NULL;
}

static int32_t append(hobj *h, const unsigned char *data, size_t n) {
    if (h->body_len + n > MAX_BODY_BYTES) return ERROR_WINHTTP_INVALID_SERVER_RESPONSE;
    unsigned char *grown = realloc(h->body, h->body_len + n + 1);
    if (!grown) return ERROR_NOT_ENOUGH_MEMORY;
    memcpy(grown + h->body_len, data, n);
    h->body = grown;
    h->body_len += n;
    return 0;
}

/* Read the whole response after the header block; `pending` holds bytes already read past it. */
static int32_t read_body(hobj *h, unsigned char *pending, size_t pending_len) {
    char *length_header = find_header(h->raw_headers, "Content-Length");
    char *encoding = find_header(h->raw_headers, "Transfer-Encoding");
    int chunked = encoding && strncasecmp(encoding, "chunked", 7) == 0;
    unsigned char *raw = malloc(pending_len + 1);
    size_t raw_len = pending_len, raw_cap = pending_len + 1;
    memcpy(raw, pending, pending_len);
    long want = length_header && !chunked ? atol(length_header) : -1;
    unsigned char buffer[READ_SLICE];
    int32_t error = 0;
    for (;;) {
        if (want >= 0 && (long)raw_len >= want) break;
        if (chunked && raw_len >= 5 && memcmp(raw + raw_len - 5, "0\r\n\r\n", 5) == 0) break;
        if (raw_len > MAX_BODY_BYTES) {
            error = ERROR_WINHTTP_INVALID_SERVER_RESPONSE;
            break;
        }
        long n = read_some(h, buffer, sizeof(buffer));
        if (n < 0) {
            error = (int32_t)-n;
            break;
        }
        if (n == 0) {
            if (want > 0 || chunked) error = ERROR_WINHTTP_CONNECTION_ERROR;
            break;
        }
        if (raw_len + (size_t)n + 1 > raw_cap) {
            raw_cap = (raw_len + (size_t)n + 1) * 2;
            raw = realloc(raw, raw_cap);
        }
        memcpy(raw + raw_len, buffer, (size_t)n);
        raw_len += (size_t)n;
    }
    if (!error && !chunked) error = append(h, raw, want >= 0 && (long)raw_len > want ? (size_t)want : raw_len);
    if (!error && chunked) {
        size_t at = 0;
        for (;;) {
            char *end = NULL;
            raw[raw_len] = 0;
            unsigned long size = strtoul((char *)raw + at, &end, 16);
            char *line_end = strstr((char *)raw + at, "\r\n");
            if (!line_end) {
                error = ERROR_WINHTTP_INVALID_SERVER_RESPONSE;
                break;
            }
            at = (size_t)(line_end - (char *)raw) + 2;
            if (size == 0) break;
            if (at + size + 2 > raw_len) {
                error = ERROR_WINHTTP_INVALID_SERVER_RESPONSE;
                break;
            }
            error = append(h, raw + at, size);
            if (error) break;
            at += size + 2;
        }
    }
    free(raw);
    return error;
}

EXPORT BOOL WINAPI WinHttpReceiveResponse(HINTERNET hRequest, LPVOID lpReserved) {
    if (lpReserved) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    hobj *h = acquire(hRequest, KIND_REQUEST);
    if (!h) return FALSE;
    int32_t error = 0;
    if (h->state != 1) error = ERROR_WINHTTP_INCORRECT_HANDLE_STATE;
    else {
        unsigned char *buffer = malloc(MAX_HEADER_BYTES + 1);
        size_t length = 0;
        char *end = NULL;
        while (!end) {
            if (length >= MAX_HEADER_BYTES) {
                error = ERROR_WINHTTP_INVALID_SERVER_RESPONSE;
                break;
            }
            long n = read_some(h, buffer + length, MAX_HEADER_BYTES - length);
            if (n <= 0) {
                error = n == 0 ? ERROR_WINHTTP_INVALID_SERVER_RESPONSE : (int32_t)-n;
                break;
            }
            length += (size_t)n;
            buffer[length] = 0;
            end = strstr((char *)buffer, "\r\n\r\n");
        }
        unsigned major = 0, minor = 0, status = 0;
        int text_at = 0;
        if (!error && sscanf((char *)buffer, "HTTP/%u.%u %u %n", &major, &minor, &status, &text_at) < 3)
            error = ERROR_WINHTTP_INVALID_SERVER_RESPONSE;
        if (!error) {
            size_t header_length = (size_t)(end - (char *)buffer) + 4;
            h->raw_headers = strndup((char *)buffer, header_length);
            char *line_end = strstr((char *)buffer, "\r\n");
            h->status_text = text_at ? strndup((char *)buffer + text_at, (size_t)(line_end - (char *)buffer - text_at))
                                     : strdup("");
            h->status = status;
            if (strcmp(h->verb, "HEAD") != 0 && status != 204 && status != 304)
                error = read_body(h, buffer + header_length, length - header_length);
            if (!error) h->state = 2;
        }
        free(buffer);
    }
    if (!error && is_closed(h)) error = ERROR_WINHTTP_OPERATION_CANCELLED;
    unref(h);
    if (error) FAIL_BOOL(error);
    return TRUE;
}

static BOOL output_text(const char *text, LPVOID lpBuffer, LPDWORD lpdwBufferLength) {
    size_t chars = strlen(text);
    DWORD size = (DWORD)((chars + 1) * sizeof(wchar_t));
    if (!lpBuffer || *lpdwBufferLength < size) {
        *lpdwBufferLength = size;
        FAIL_BOOL(ERROR_INSUFFICIENT_BUFFER);
    }
    wchar_t *out = lpBuffer;
    for (size_t i = 0; i <= chars; i++) out[i] = (unsigned char)text[i];
    *lpdwBufferLength = (DWORD)(chars * sizeof(wchar_t));
    return TRUE;
}

EXPORT BOOL WINAPI WinHttpQueryHeaders(HINTERNET hRequest, DWORD dwInfoLevel, LPCWSTR pwszName, LPVOID lpBuffer,
                                       LPDWORD lpdwBufferLength, LPDWORD lpdwIndex) {
    (void)pwszName;
    (void)lpdwIndex;
    if (!lpdwBufferLength) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    hobj *h = acquire(hRequest, KIND_REQUEST);
    if (!h) return FALSE;
    BOOL ok = FALSE;
    int32_t error = 0;
    DWORD level = dwInfoLevel & 0xFFFF;
    if (h->state != 2) error = ERROR_WINHTTP_INCORRECT_HANDLE_STATE;
    else if (level == WINHTTP_QUERY_STATUS_CODE && (dwInfoLevel & WINHTTP_QUERY_FLAG_NUMBER)) {
        if (!lpBuffer || *lpdwBufferLength < sizeof(DWORD)) {
            *lpdwBufferLength = sizeof(DWORD);
            error = ERROR_INSUFFICIENT_BUFFER;
        } else {
            memcpy(lpBuffer, &h->status, sizeof(DWORD));
            *lpdwBufferLength = sizeof(DWORD);
            ok = TRUE;
        }
    } else if (level == WINHTTP_QUERY_RAW_HEADERS_CRLF) ok = output_text(h->raw_headers, lpBuffer, lpdwBufferLength);
    else if (level == WINHTTP_QUERY_STATUS_TEXT) ok = output_text(h->status_text, lpBuffer, lpdwBufferLength);
    else error = ERROR_WINHTTP_HEADER_NOT_FOUND;
    unref(h);
    if (error) FAIL_BOOL(error);
    return ok;
}

EXPORT BOOL WINAPI WinHttpQueryDataAvailable(HINTERNET hRequest, LPDWORD lpdwNumberOfBytesAvailable) {
    hobj *h = acquire(hRequest, KIND_REQUEST);
    if (!h) return FALSE;
    int32_t error = h->state != 2 ? ERROR_WINHTTP_INCORRECT_HANDLE_STATE : 0;
    if (!error && lpdwNumberOfBytesAvailable) {
        size_t left = h->body_len - h->body_pos;
        *lpdwNumberOfBytesAvailable = (DWORD)(left < READ_SLICE ? left : READ_SLICE);
    }
    unref(h);
    if (error) FAIL_BOOL(error);
    return TRUE;
}

EXPORT BOOL WINAPI WinHttpReadData(HINTERNET hRequest, LPVOID lpBuffer, DWORD dwNumberOfBytesToRead,
                                   LPDWORD lpdwNumberOfBytesRead) {
    if (!lpBuffer) FAIL_BOOL(ERROR_INVALID_PARAMETER);
    hobj *h = acquire(hRequest, KIND_REQUEST);
    if (!h) return FALSE;
    int32_t error = h->state != 2 ? ERROR_WINHTTP_INCORRECT_HANDLE_STATE : 0;
    if (!error) {
        size_t left = h->body_len - h->body_pos;
        size_t n = left < dwNumberOfBytesToRead ? left : dwNumberOfBytesToRead;
        memcpy(lpBuffer, h->body + h->body_pos, n);
        h->body_pos += n;
        if (lpdwNumberOfBytesRead) *lpdwNumberOfBytesRead = (DWORD)n;
    }
    unref(h);
    if (error) FAIL_BOOL(error);
    return TRUE;
}

EXPORT BOOL WINAPI WinHttpCloseHandle(HINTERNET hInternet) {
    hobj *h = NULL;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_count; i++) {
        if (g_handles[i] == hInternet) {
            h = g_handles[i];
            g_handles[i] = g_handles[--g_count];
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (!h) FAIL_BOOL(ERROR_INVALID_HANDLE);
    __atomic_store_n(&h->closed, 1, __ATOMIC_SEQ_CST);
    HINTERNET value = h;
    notify(h, STATUS_HANDLE_CLOSING, &value, sizeof(value));
    unref(h); /* freed now, or when the call blocked in it returns */
    return TRUE;
}

/* ---- stand-in only: test controls ---- */
EXPORT long StandinWinHttpLiveHandles(void) { return (long)g_count; }
EXPORT long StandinWinHttpRequestsSent(void) { return g_requests_sent; }
EXPORT DWORD StandinWinHttpLastDisabledFeatures(void) { return g_last_disabled_features; }
EXPORT DWORD StandinWinHttpLastSecurityFlags(void) { return g_last_security_flags; }
EXPORT void StandinWinHttpReset(void) {
    pthread_mutex_lock(&g_lock);
    g_requests_sent = 0;
    g_last_disabled_features = g_last_security_flags = 0;
    pthread_mutex_unlock(&g_lock);
}
