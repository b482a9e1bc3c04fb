/* error.h: drdc's one error channel.
 *
 * Library code never exits: a function that can fail returns a drdc_status and, on failure,
 * leaves a message in a thread-local buffer (drdc_last_error). Callers add context on the way
 * up with drdc_error_context ("loading model.safetensors: " + inner message). Only main and
 * the command functions turn a status into an exit code (drdc_exit_code).
 * The status values are append-only: never renumber them.
 *
 * The one idiom for a function with cleanup: a status `st`, each fallible call wrapped in TRY, one
 * `done:` label where everything is released:
 *     drdc_status st = DRDC_OK;
 *     TRY(drdc_read_file(path, &text, &n));
 *     TRY(parse(text));
 * done:
 *     free(text);
 *     return st;
 * Argument checks before anything is acquired may `return drdc_fail(...)` directly. */
#ifndef DRDC_ERROR_H
#define DRDC_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum drdc_status {
    DRDC_OK = 0,
    DRDC_ERR_IO = 1,      /* a file could not be opened, read, written, renamed */
    DRDC_ERR_FORMAT = 2,  /* a file is not what it claims (corrupt image, bad safetensors) */
    DRDC_ERR_INPUT = 3,   /* bad user input: value out of range, missing data, bad layout */
    DRDC_ERR_CONFIG = 4,  /* a config key is unknown, mistyped or out of range */
    DRDC_ERR_USAGE = 5,   /* command-line usage */
    DRDC_ERR_TORCH = 6,   /* libtorch raised an exception (shape mismatch, device, ...) */
    DRDC_ERR_NOMEM = 7,   /* out of host or device memory */
    DRDC_ERR_STATE = 8,   /* internal invariant or unsupported operation */
    DRDC_ERR_NUMERIC = 9, /* NaN or infinity where a finite value is needed */
} drdc_status;

/* Sets the thread-local message (printf-style) and returns st, so that
 *   return drdc_fail(DRDC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
 * reads naturally. */
drdc_status drdc_fail(drdc_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prepends context to the current message: "ctx: old message". Returns st unchanged. */
drdc_status drdc_error_context(drdc_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Appends " (hint)" to the current message. Returns st unchanged. */
drdc_status drdc_error_hint(drdc_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Runs call; on failure leaves the function through its `done:` label with st set. */
#define TRY(call)                  \
    do {                           \
        st = (call);               \
        if (st) goto done;         \
    } while (0)

/* The last message set on this thread ("" if none). Valid until the next drdc_fail. */
const char *drdc_last_error(void);
void drdc_clear_error(void);

/* A short name for a status ("io error", "format error", ...). */
const char *drdc_status_name(drdc_status st);

/* Exit code for a status: 0 ok; 2 for usage, input, config and format errors (the user can fix
 * them by changing what they gave); 1 for everything else (runtime failures). */
int drdc_exit_code(drdc_status st);

#ifdef __cplusplus
}
#endif
#endif
