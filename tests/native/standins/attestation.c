/* Stand-in for AttestationClientLib.dll (MAA KeyGuard attestation), cdecl exports as in the real DLL.
 *
 * Semantics reproduced (NATIVE.md §4.3): InitAttestationLib(NULL or Log NULL) prints "Invalid
 * arguments" and returns -8; the first registered logger stays until UninitAttestationLib (global,
 * unsynchronised state, like the DLL); the log callback runs synchronously on the calling thread,
 * and here also once from a second thread (joined before returning) so that the Python side proves
 * it can be called back from a foreign thread; NULL endpoint / key 0 / NULL out-pointer => -8; the
 * key claim is taken from the live key through the NCrypt stand-in (NCryptCreateClaim's role): a key
 * without "Virtual Iso" => -32 (ERRORCREATEKGATTESTATIONREPORT); the token is a malloc'ed JWT freed
 * only through FreeAttestationToken. The JWT is not signed by MAA (its signature is a placeholder);
 * exp = now + MSIV2_STANDIN_ATTEST_LIFETIME seconds (default 8 h). MSIV2_STANDIN_ATTEST_RESULT forces
 * a result code. Concurrent calls are counted so that tests can prove the caller serialises them.
 */
#include "standin.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

typedef void (*AttestationLogFunc)(void *ctx, const char *tag, int lvl, const char *func, int line, const char *msg);
typedef struct AttestationLogInfo { AttestationLogFunc Log; void *Ctx; } AttestationLogInfo;

SECURITY_STATUS NCryptGetProperty(NCRYPT_HANDLE, LPCWSTR, PBYTE, DWORD, DWORD *, DWORD);
SECURITY_STATUS NCryptExportKey(NCRYPT_KEY_HANDLE, NCRYPT_KEY_HANDLE, LPCWSTR, NCryptBufferDesc *, PBYTE, DWORD, DWORD *,
                                DWORD);

static AttestationLogInfo g_logger; /* deliberately unsynchronised, like the DLL */
static int g_has_logger;
static int g_in_flight, g_max_in_flight;
static long g_calls, g_live_tokens, g_foreign_thread_logs;
static int g_forced_result = 1;   /* 1 = not forced (0 is a valid result) */
static long g_lifetime = -1;

static void emit(int level, const char *function, int line, const char *format, ...) {
    char message[512];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    AttestationLogInfo logger = g_logger;
    if (g_has_logger && logger.Log) logger.Log(logger.Ctx, "AttestatationClientLib", level, function, line, message);
}

EXPORT int InitAttestationLib(AttestationLogInfo *info) {
    if (!info || !info->Log) {
        fprintf(stderr, "Invalid arguments\n");
        return -8;
    }
    if (!g_has_logger) {
        g_logger = *info;
        g_has_logger = 1;
    }
    return 0;
}

EXPORT void UninitAttestationLib(void) {
    g_has_logger = 0;
    memset(&g_logger, 0, sizeof(g_logger));
}

EXPORT void FreeAttestationToken(char *token) {
    if (token) {
        __atomic_sub_fetch(&g_live_tokens, 1, __ATOMIC_SEQ_CST);
        free(token);
    }
}

static void *worker(void *endpoint) {
    emit(3, "SendAttestationRequest", 214, "worker thread: POST %s/attest/keyguard", (const char *)endpoint);
    __atomic_add_fetch(&g_foreign_thread_logs, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void base64url(const unsigned char *data, size_t n, char *out) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)data[i] << 16 | (i + 1 < n ? (unsigned)data[i + 1] << 8 : 0) | (i + 2 < n ? data[i + 2] : 0);
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (i + 1 < n) out[o++] = alphabet[(v >> 6) & 63];
        if (i + 2 < n) out[o++] = alphabet[v & 63];
    }
    out[o] = 0;
}

static void json_text(const char *in, char *out, size_t capacity) {
    size_t o = 0;
    for (; *in && o + 2 < capacity; in++) {
        if (*in == '"' || *in == '\\') out[o++] = '\\';
        out[o++] = (*in >= 0x20) ? *in : '?';
    }
    out[o] = 0;
}

static int key_claim(NCRYPT_KEY_HANDLE key, char *name, size_t name_capacity, char *thumbprint) {
    DWORD value = 0, size = 0;
    if (NCryptGetProperty(key, L"Virtual Iso", (PBYTE)&value, sizeof(value), &size, 0) != 0 || value == 0) return -32;
    BYTE blob[4096];
    if (NCryptExportKey(key, 0, L"RSAPUBLICBLOB", NULL, blob, sizeof(blob), &size, 0) != 0) return -33;
    BCRYPT_RSAKEY_BLOB *header = (BCRYPT_RSAKEY_BLOB *)blob;
    unsigned char digest[32];
    unsigned int length = 0;
    EVP_Digest(blob + sizeof(*header) + header->cbPublicExp, header->cbModulus, digest, &length, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) sprintf(thumbprint + 2 * i, "%02x", digest[i]);
    wchar_t wide[128] = {0};
    name[0] = 0;
    if (NCryptGetProperty(key, L"Name", (PBYTE)wide, sizeof(wide) - sizeof(wchar_t), &size, 0) == 0) {
        size_t i = 0;
        for (; wide[i] && i + 1 < name_capacity; i++) name[i] = (wide[i] < 128) ? (char)wide[i] : '?';
        name[i] = 0;
    }
    return 0;
}

EXPORT int AttestKeyGuardImportKey(const char *endpoint, const char *authToken, const char *clientPayload,
                                   NCRYPT_KEY_HANDLE keyHandle, char **token, const char *clientId) {
    (void)authToken;
    (void)clientPayload;
    int now_in_flight = __atomic_add_fetch(&g_in_flight, 1, __ATOMIC_SEQ_CST);
    int seen = __atomic_load_n(&g_max_in_flight, __ATOMIC_SEQ_CST);
    while (now_in_flight > seen && !__atomic_compare_exchange_n(&g_max_in_flight, &seen, now_in_flight, 0,
                                                                  __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    __atomic_add_fetch(&g_calls, 1, __ATOMIC_SEQ_CST);
    int result = 0;
    if (!endpoint || !keyHandle || !token) {
        fprintf(stderr, "Invalid arguments\n");
        result = -8;
        goto done;
    }
    emit(2, "AttestKeyGuardImportKey", 88, "attesting KeyGuard key for client %s", clientId ? clientId : "(none)");
    pthread_t thread;
    if (pthread_create(&thread, NULL, worker, (void *)endpoint) == 0) pthread_join(thread, NULL);
    const char *delay = getenv("MSIV2_STANDIN_ATTEST_DELAY_MS");
    usleep((useconds_t)(delay ? atoi(delay) : 20) * 1000);
    const char *forced = getenv("MSIV2_STANDIN_ATTEST_RESULT");
    if (g_forced_result != 1) result = g_forced_result;
    else if (forced && *forced) result = atoi(forced);
    if (!result && strncmp(endpoint, "https://", 8) != 0) result = -5;
    char name[128], thumbprint[65] = {0};
    if (!result) result = key_claim(keyHandle, name, sizeof(name), thumbprint);
    if (result) {
        emit(0, "AttestKeyGuardImportKey", 131, "Attestation failed with error code: %d", result);
        fprintf(stderr, "Attestation failed with error code: %d\n", result);
        goto done;
    }
    long lifetime = g_lifetime >= 0 ? g_lifetime : 8 * 3600;
    const char *lifetime_env = getenv("MSIV2_STANDIN_ATTEST_LIFETIME");
    if (g_lifetime < 0 && lifetime_env && *lifetime_env) lifetime = atol(lifetime_env);
    long now = (long)time(NULL);
    char safe_endpoint[300], safe_client[200], safe_name[200];
    json_text(endpoint, safe_endpoint, sizeof(safe_endpoint));
    json_text(clientId ? clientId : "", safe_client, sizeof(safe_client));
    json_text(name, safe_name, sizeof(safe_name));
    char header[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x-ms-standin\":true}";
    char payload[1200];
    int n = snprintf(payload, sizeof(payload),
                     "{\"iss\":\"%s\",\"iat\":%ld,\"nbf\":%ld,\"exp\":%ld,\"x-ms-attestation-type\":\"keyguard\","
                     "\"x-ms-keyguard\":{\"key_name\":\"%s\",\"modulus_sha256\":\"%s\"},\"client_id\":\"%s\"}",
                     safe_endpoint, now, now, now + lifetime, safe_name, thumbprint, safe_client);
    char *jwt = malloc(4 * sizeof(header) / 3 + 4 * (size_t)n / 3 + 32);
    base64url((const unsigned char *)header, strlen(header), jwt);
    strcat(jwt, ".");
    base64url((const unsigned char *)payload, (size_t)n, jwt + strlen(jwt));
    strcat(jwt, ".c3RhbmQtaW4");
    __atomic_add_fetch(&g_live_tokens, 1, __ATOMIC_SEQ_CST);
    *token = jwt;
    emit(2, "AttestKeyGuardImportKey", 170, "attestation succeeded");
done:
    __atomic_sub_fetch(&g_in_flight, 1, __ATOMIC_SEQ_CST);
    return result;
}

/* ---- stand-in only: test controls ---- */
EXPORT long StandinAttestCalls(void) { return g_calls; }
EXPORT int StandinAttestMaxConcurrency(void) { return g_max_in_flight; }
EXPORT long StandinAttestLiveTokens(void) { return g_live_tokens; }
EXPORT long StandinAttestForeignThreadLogs(void) { return g_foreign_thread_logs; }
EXPORT int StandinAttestLoggerRegistered(void) { return g_has_logger; }
EXPORT void StandinAttestSetResult(int result) { g_forced_result = result; }
EXPORT void StandinAttestSetLifetime(long seconds) { g_lifetime = seconds; }
EXPORT void StandinAttestReset(void) {
    g_calls = g_foreign_thread_logs = 0;
    g_max_in_flight = 0;
    g_forced_result = 1;
    g_lifetime = -1;
}
