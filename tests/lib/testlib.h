/* testlib.h: the tiny test harness every C test uses.
 *
 *   static void test_something(void) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-6); CHECK_OK(call()); }
 *   int main(void) { RUN(test_something); return test_summary(); }
 *
 * A failing CHECK prints file:line and the expression and marks the test failed; the test
 * function goes on (so one run shows every failure). test_summary prints "N passed, N failed"
 * and returns 0 or 1 (77 when a part was skipped). test_skip(msg) prints why and exits 77
 * (ctest's SKIP_RETURN_CODE). */
#ifndef DRDC_TESTLIB_H
#define DRDC_TESTLIB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "drdc/core/error.h"

extern int tl_failures;       /* CHECK failures inside the current test */

#define CHECK(cond) \
    do { if (!(cond)) { tl_failures++; fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)

#define CHECK_NEAR(a, b, tol) \
    do { double tl_a = (a), tl_b = (b); if (!(tl_a - tl_b <= (tol) && tl_b - tl_a <= (tol))) { tl_failures++; \
        fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.9g, %s = %.9g, tol %g\n", __FILE__, __LINE__, #a, tl_a, #b, tl_b, (double)(tol)); } } while (0)

/* The call must return DRDC_OK; prints the error message otherwise. */
#define CHECK_OK(call) \
    do { drdc_status tl_st = (call); if (tl_st != DRDC_OK) { tl_failures++; \
        fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call, drdc_status_name(tl_st), drdc_last_error()); } } while (0)

/* The call must fail with status `want` and its message must contain `needle` (NULL: any). */
#define CHECK_ERR(call, want, needle) \
    do { drdc_status tl_st = (call); if (tl_st != (want)) { tl_failures++; \
        fprintf(stderr, "%s:%d: %s returned %s, want %s (%s)\n", __FILE__, __LINE__, #call, drdc_status_name(tl_st), drdc_status_name(want), drdc_last_error()); } \
        else if (!tl_contains(drdc_last_error(), (needle))) { tl_failures++; \
        fprintf(stderr, "%s:%d: %s: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, #call, drdc_last_error(), tl_str(needle)); } } while (0)

#define RUN(fn) tl_run(#fn, fn)

void tl_run(const char *name, void (*fn)(void));
/* "N passed, N failed[, N parts skipped]"; returns 1 on any failure, else 77 (ctest's skip) when a
 * part was skipped (test_skip_part), else 0: a test that could not check everything never passes. */
int test_summary(void);
void test_skip(const char *why);       /* the whole test: prints why, exits 77 */
void test_skip_part(const char *fmt, ...);   /* one part could not run (what is missing): printed, and
                                              * test_summary then reports the test as skipped */
int tl_contains(const char *hay, const char *needle);   /* needle NULL -> 1 */
static inline const char *tl_str(const char *s) { return s ? s : ""; }

/* A fresh empty folder for this test: $DRDC_TEST_TMP/<name> (or /tmp/drdc-test-<pid>/<name>). */
const char *test_tmpdir(const char *name);
/* $DRDC_SHARED (../shared beside the source tree), or NULL when absent. */
const char *test_shared_dir(void);
/* $DRDC_SOURCE_DIR, or "." */
const char *test_source_dir(void);
/* $DRDC_BIN: the drdc binary, or NULL. */
const char *test_drdc_bin(void);
/* Writes `n` bytes to path; returns 0 on success. */
int test_write_file(const char *path, const void *data, size_t n);
/* ---- golden tests against the PyTorch twins (tensors via the shim, files via safetensors) ---- */
#include "drdc/formats/safetensors.h"
#include "drdc/shim/shim.h"
/* 1 when s ends with suffix. */
int test_ends_with(const char *s, const char *suffix);
/* A float32 host copy of any tensor (caller frees); NULL on failure (a CHECK marks it). */
float *test_host_copy(dt_tensor t);
/* A file tensor converted to float32 (caller frees); NULL on failure. */
float *test_st_floats(const drdc_st_tensor *t);
/* 1 when both files hold the same tensors, byte for byte (a difference is printed); NULL files: 0. */
int test_st_same_tensors(const drdc_st_file *fa, const drdc_st_file *fb);
/* A CPU f32 tensor holding the file's tensor `name` (a CHECK marks a missing one). */
dt_tensor test_st_tensor(const drdc_st_file *f, const char *name);
/* Relative error max|got - want| / max|want| over n values, printed under `label`; CHECKs that
 * every value is finite and the error is below tol. */
double test_compare_arrays(const char *label, const float *got, const float *want, int64_t n, double tol);
/* Compares a tensor with the file's tensor `name`: rank, shape, then values as above. The
 * reference must not be all zero (a zero reference would let a broken path pass). */
double test_compare_tensor(const char *label, dt_tensor got, const drdc_st_file *f, const char *name, double tol);

/* ---- a tiny PNG builder (stored zlib blocks, own CRC) for image tests ---------------------- */
typedef struct test_buf {
    unsigned char *p;
    size_t n, cap;
} test_buf;
void test_put(test_buf *b, const void *d, size_t n);   /* appends (grows the buffer) */
void test_put8(test_buf *b, unsigned v);
void test_put32be(test_buf *b, uint32_t v);
void test_put32le(test_buf *b, uint32_t v);
void test_put16le(test_buf *b, unsigned v);
uint32_t test_crc32(const unsigned char *d, size_t n);  /* PNG's CRC-32 */
/* One chunk: length, type, data, CRC. */
void test_png_chunk(test_buf *b, const char *type, const unsigned char *d, size_t n);
/* zlib stream of stored (uncompressed) blocks. */
void test_zlib_stored(test_buf *z, const unsigned char *d, size_t n);
/* PNG from unfiltered scanlines `rows` (h rows of rowbytes each; NULL: no IDAT). plte: n_plte RGB entries. */
test_buf test_png_make(uint32_t w, uint32_t h, int depth, int ctype, const unsigned char *rows, size_t rowbytes,
                       const unsigned char *plte, int n_plte);
/* Writes the buffer to path and frees it; returns 0 on success. */
int test_buf_write(const char *path, test_buf *b);

/* Runs a shell command; returns its exit status (or -1). */
int test_system(const char *fmt, ...);

/* ---- processes and ports (tests that run several drdc processes at once) ------------------- */
double test_now(void);                  /* monotonic seconds */
/* A loopback TCP port bound and released a moment ago (0 on failure); listen: keep it bound and
 * listening instead, its socket in *fd (close it to free the port). */
int test_free_port(void);
int test_busy_port(int *fd);
/* Starts `sh -c CMD` in the background (CMD printf-style; begin it with exec to make the pid the
 * program's own); returns the pid, or -1. */
int test_spawn(const char *fmt, ...);
/* Waits at most timeout_s for process pid; 1 when it ended (*status set), 0 when still running. */
int test_wait_pid(int pid, double timeout_s, int *status);
/* For the e2e tests that train: `drdc synth` data (64 px, 2 test images each) in dir/data and
 * configs/tiny.json copied to dir. 0 on success (else it says what failed). */
int test_tiny_setup(const char *dir, int categories, int train, int seed);
/* 1 when the file at path contains needle (the whole file is read). */
int test_file_contains(const char *path, const char *needle);
/* Runs `drdc ARGS` (ARGS printf-style) with dir as the working folder, stdout and stderr into
 * dir/log; returns its exit code (-1 when the command does not fit its buffer or did not exit). */
int test_drdc_in(const char *dir, const char *log, const char *fmt, ...);
/* 1 when dir/log contains needle; a NULL needle is always there. */
int test_log_has(const char *dir, const char *log, const char *needle);

#endif
