/* testlib.c: see testlib.h. */
#include "testlib.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

int test_summary(void) {
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
    int rc = system(cmd);
    if (rc == -1) return -1;
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
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
