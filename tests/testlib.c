/* testlib.c: see testlib.h. */
#include "testlib.h"

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
