/* testlib.c: see testlib.h. */
#define _GNU_SOURCE
#include "testlib.h"

#include "drdc/core/fsutil.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int tl_failures;
static int g_passed, g_failed;

void tl_run(const char *name, void (*fn)(void)) {
    tl_failures = 0;
    drdc_clear_error();
    fn();
    if (tl_failures) {
        g_failed++;
        fprintf(stderr, "FAIL %s (%d checks)\n", name, tl_failures);
    } else {
        g_passed++;
        fprintf(stderr, "ok   %s\n", name);
    }
}

static int g_skipped_parts;

void test_skip_part(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("SKIPPED part: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    g_skipped_parts++;
}

int test_summary(void) {
    if (g_skipped_parts) {
        printf("%d passed, %d failed, %d parts skipped (see SKIPPED above)\n", g_passed, g_failed, g_skipped_parts);
        return g_failed ? 1 : 77;
    }
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}

void test_skip(const char *why) {
    printf("SKIPPED: %s\n", why);
    exit(77);
}

int tl_contains(const char *hay, const char *needle) {
    if (!needle) return 1;
    return hay && strstr(hay, needle) != NULL;
}

const char *test_tmpdir(const char *name) {
    static char buf[1024];
    const char *root = getenv("DRDC_TEST_TMP");
    char rootbuf[512];
    if (!root || !*root) {
        snprintf(rootbuf, sizeof rootbuf, "/tmp/drdc-test-%d", (int)getpid());
        root = rootbuf;
    }
    snprintf(buf, sizeof buf, "%s/%s", root, name);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) fprintf(stderr, "cannot make %s\n", buf);
    return buf;
}

const char *test_shared_dir(void) {
    const char *s = getenv("DRDC_SHARED");
    struct stat st;
    if (s && *s && stat(s, &st) == 0 && S_ISDIR(st.st_mode)) return s;
    return NULL;
}

const char *test_source_dir(void) {
    const char *s = getenv("DRDC_SOURCE_DIR");
    return (s && *s) ? s : ".";
}

const char *test_drdc_bin(void) {
    const char *s = getenv("DRDC_BIN");
    return (s && *s) ? s : NULL;
}

int test_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    int rc = fclose(f);
    return (w == n && rc == 0) ? 0 : -1;
}

int test_system(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    fflush(stdout);
    int rc = system(cmd);
    if (rc == -1) return -1;
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

double test_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int bound_port(int listening, int *fd_out) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(listening ? INADDR_ANY : INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && (!listening || listen(fd, 4) == 0) &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0 && (!listening || !port)) close(fd);
    if (fd_out) *fd_out = listening && port ? fd : -1;
    return port;
}

int test_free_port(void) { return bound_port(0, NULL); }
int test_busy_port(int *fd) { return bound_port(1, fd); }

int test_spawn(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (len < 0 || len >= (int)sizeof cmd) return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid > 0 ? (int)pid : -1;
}

int test_wait_pid(int pid, double timeout_s, int *status) {
    double end = test_now() + timeout_s;
    do {
        if (waitpid(pid, status, WNOHANG) == pid) return 1;
        usleep(10000);
    } while (test_now() < end);
    return 0;
}

int test_tiny_setup(const char *dir, int categories, int train, int seed) {
    if (!test_drdc_bin()) return -1;
    if (test_system("'%s' synth --out '%s/data' --categories %d --train %d --test 2 --size 64 --seed %d >/dev/null",
                    test_drdc_bin(), dir, categories, train, seed) != 0 ||
        test_system("cp '%s/configs/tiny.json' '%s/'", test_source_dir(), dir) != 0) {
        fprintf(stderr, "set-up failed: synthetic data or tiny.json in %s\n", dir);
        return -1;
    }
    return 0;
}

int test_file_contains(const char *path, const char *needle) {
    char *text = NULL;
    size_t n = 0;
    if (drdc_read_file(path, &text, &n)) return 0;
    int found = strstr(text, needle) != NULL;
    free(text);
    return found;
}

int test_drdc_in(const char *dir, const char *log, const char *fmt, ...) {
    char args[8192];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    if (len < 0 || len >= (int)sizeof args || !test_drdc_bin()) return -1;
    char cmd[12288];
    len = snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >'%s' 2>&1", dir, test_drdc_bin(), args, log);
    if (len < 0 || len >= (int)sizeof cmd) return -1;
    fflush(stdout);
    fflush(stderr);
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int test_log_has(const char *dir, const char *log, const char *needle) {
    if (!needle) return 1;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, log) >= (int)sizeof path) return 0;
    return test_file_contains(path, needle);
}

int test_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

float *test_host_copy(dt_tensor t) {
    dt_tensor f = NULL;
    float *buf = malloc(sizeof(float) * (size_t)(dt_numel(t) ? dt_numel(t) : 1));
    CHECK_OK(dt_to_dtype(&f, t, DT_F32));
    if (!f || !buf || dt_copy_to_host(f, buf, sizeof(float) * (size_t)dt_numel(t)) != DRDC_OK) {
        CHECK(!"host copy failed");
        free(buf);
        buf = NULL;
    }
    dt_free(f);
    return buf;
}

float *test_st_floats(const drdc_st_tensor *t) {
    float *buf = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    if (buf && drdc_st_to_f32(t, buf, (size_t)t->numel) != DRDC_OK) {
        free(buf);
        buf = NULL;
    }
    return buf;
}

int test_st_same_tensors(const drdc_st_file *fa, const drdc_st_file *fb) {
    int same = fa && fb && drdc_st_count(fa) == drdc_st_count(fb);
    for (int i = 0; same && i < drdc_st_count(fa); i++) {
        const drdc_st_tensor *ta = drdc_st_at(fa, i), *tb = drdc_st_find(fb, ta->name);
        same = tb && ta->nbytes == tb->nbytes && memcmp(ta->data, tb->data, ta->nbytes) == 0;
        if (!same) fprintf(stderr, "  tensor %s differs\n", ta->name);
    }
    return same;
}

dt_tensor test_st_tensor(const drdc_st_file *f, const char *name) {
    const drdc_st_tensor *t = NULL;
    CHECK_OK(drdc_st_get(f, name, &t));
    if (!t) return NULL;
    float *buf = test_st_floats(t);
    dt_tensor out = NULL;
    if (buf) CHECK_OK(dt_from_host(&out, buf, DT_F32, t->shape, t->ndim, (dt_device){DT_CPU, 0}));
    free(buf);
    return out;
}

double test_compare_arrays(const char *label, const float *got, const float *want, int64_t n, double tol) {
    double maxdiff = 0.0, maxref = 0.0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) finite = 0;
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > maxdiff || isnan(d)) maxdiff = d;
        if (fabs((double)want[i]) > maxref) maxref = fabs((double)want[i]);
    }
    double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
    printf("  %-62s max|diff| %.3e  max|ref| %.3e  rel %.3e\n", label, maxdiff, maxref, rel);
    CHECK(finite);
    CHECK(rel < tol);
    return rel;
}

double test_compare_tensor(const char *label, dt_tensor got, const drdc_st_file *f, const char *name, double tol) {
    const drdc_st_tensor *want = NULL;
    CHECK_OK(drdc_st_get(f, name, &want));
    CHECK(got != NULL);
    if (!want || !got) return INFINITY;
    int64_t shape[8] = {0};
    if (dt_ndim(got) != want->ndim) {
        fprintf(stderr, "  %s: rank %d, the twin's %s has rank %d\n", label, dt_ndim(got), name, want->ndim);
        CHECK(dt_ndim(got) == want->ndim);
        return INFINITY;
    }
    CHECK_OK(dt_shape(shape, 8, got));
    for (int d = 0; d < want->ndim; d++) CHECK(shape[d] == want->shape[d]);
    float *g = test_host_copy(got), *w = test_st_floats(want);
    double rel = INFINITY;
    if (g && w) {
        double maxref = 0.0;
        for (int64_t i = 0; i < want->numel; i++) maxref = fmax(maxref, fabs((double)w[i]));
        CHECK(maxref > 0.0);
        rel = test_compare_arrays(label, g, w, want->numel, tol);
    }
    free(g);
    free(w);
    return rel;
}

/* ---- a tiny PNG builder (testlib.h) -------------------------------------------------------- */

void test_put(test_buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
void test_put8(test_buf *b, unsigned v) { unsigned char c = (unsigned char)v; test_put(b, &c, 1); }
void test_put32be(test_buf *b, uint32_t v) {
    unsigned char c[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
    test_put(b, c, 4);
}
void test_put32le(test_buf *b, uint32_t v) {
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    test_put(b, c, 4);
}
void test_put16le(test_buf *b, unsigned v) { test_put8(b, v & 255); test_put8(b, (v >> 8) & 255); }

uint32_t test_crc32(const unsigned char *d, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= d[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

void test_png_chunk(test_buf *b, const char *type, const unsigned char *d, size_t n) {
    test_put32be(b, (uint32_t)n);
    size_t start = b->n;
    test_put(b, type, 4);
    if (n) test_put(b, d, n);
    test_put32be(b, test_crc32(b->p + start, n + 4));
}

/* zlib stream of stored (uncompressed) blocks. */
void test_zlib_stored(test_buf *z, const unsigned char *d, size_t n) {
    test_put8(z, 0x78);
    test_put8(z, 0x01);
    size_t off = 0;
    do {
        size_t len = n - off > 65535 ? 65535 : n - off;
        test_put8(z, off + len == n ? 1 : 0);
        test_put8(z, len & 255); test_put8(z, len >> 8);
        test_put8(z, ~len & 255); test_put8(z, (~len >> 8) & 255);
        test_put(z, d + off, len);
        off += len;
    } while (off < n);
    uint32_t a = 1, bsum = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + d[i]) % 65521;
        bsum = (bsum + a) % 65521;
    }
    test_put32be(z, (bsum << 16) | a);
}

/* PNG from unfiltered scanlines `rows` (h rows of rowbytes each). plte: n_plte RGB entries. */
test_buf test_png_make(uint32_t w, uint32_t h, int depth, int ctype, const unsigned char *rows, size_t rowbytes,
                      const unsigned char *plte, int n_plte) {
    test_buf b = {0};
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    test_put(&b, sig, 8);
    unsigned char ihdr[13];
    for (int i = 0; i < 4; i++) {
        ihdr[i] = (unsigned char)(w >> (24 - 8 * i));
        ihdr[4 + i] = (unsigned char)(h >> (24 - 8 * i));
    }
    ihdr[8] = (unsigned char)depth;
    ihdr[9] = (unsigned char)ctype;
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    test_png_chunk(&b, "IHDR", ihdr, 13);
    if (plte) test_png_chunk(&b, "PLTE", plte, (size_t)n_plte * 3);
    if (rows) {
        test_buf raw = {0}, z = {0};
        for (uint32_t y = 0; y < h; y++) {
            test_put8(&raw, 0); /* filter: none */
            test_put(&raw, rows + y * rowbytes, rowbytes);
        }
        test_zlib_stored(&z, raw.p, raw.n);
        test_png_chunk(&b, "IDAT", z.p, z.n);
        free(raw.p);
        free(z.p);
    }
    test_png_chunk(&b, "IEND", NULL, 0);
    return b;
}

int test_buf_write(const char *path, test_buf *b) {
    int rc = test_write_file(path, b->p, b->n);
    free(b->p);
    b->p = NULL;
    return rc;
}
