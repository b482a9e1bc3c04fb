/* error.c: the thread-local error message behind drdc_fail / drdc_last_error. */
#include "drdc/core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DRDC_ERROR_CAP 2048
static _Thread_local char g_msg[DRDC_ERROR_CAP];

drdc_status drdc_fail(drdc_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return st;
}

drdc_status drdc_error_context(drdc_status st, const char *fmt, ...) {
    char ctx[DRDC_ERROR_CAP];
    char old[DRDC_ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    /* ctx + ": " + old, cut to the buffer (written by hand: snprintf would warn of truncation) */
    size_t n = strlen(ctx), cap = sizeof g_msg - 1;
    if (n > cap) n = cap;
    memcpy(g_msg, ctx, n);
    for (const char *p = ": "; *p && n < cap; p++) g_msg[n++] = *p;
    for (const char *p = old; *p && n < cap; p++) g_msg[n++] = *p;
    g_msg[n] = '\0';
    return st;
}

drdc_status drdc_error_hint(drdc_status st, const char *fmt, ...) {
    char hint[DRDC_ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hint, sizeof hint, fmt, ap);
    va_end(ap);
    size_t n = strlen(g_msg), cap = sizeof g_msg - 1;
    for (const char *p = " ("; *p && n < cap; p++) g_msg[n++] = *p;
    for (const char *p = hint; *p && n < cap; p++) g_msg[n++] = *p;
    if (n < cap) g_msg[n++] = ')';
    g_msg[n] = '\0';
    return st;
}

const char *drdc_last_error(void) { return g_msg; }

void drdc_clear_error(void) { g_msg[0] = '\0'; }

const char *drdc_status_name(drdc_status st) {
    switch (st) {
    case DRDC_OK: return "ok";
    case DRDC_ERR_IO: return "i/o error";
    case DRDC_ERR_FORMAT: return "format error";
    case DRDC_ERR_INPUT: return "input error";
    case DRDC_ERR_CONFIG: return "config error";
    case DRDC_ERR_USAGE: return "usage error";
    case DRDC_ERR_TORCH: return "libtorch error";
    case DRDC_ERR_NOMEM: return "out of memory";
    case DRDC_ERR_STATE: return "internal error";
    case DRDC_ERR_NUMERIC: return "numeric error";
    }
    return "error";
}

int drdc_exit_code(drdc_status st) {
    switch (st) {
    case DRDC_OK: return 0;
    case DRDC_ERR_USAGE:
    case DRDC_ERR_INPUT:
    case DRDC_ERR_CONFIG:
    case DRDC_ERR_FORMAT: return 2;
    default: return 1;
    }
}
