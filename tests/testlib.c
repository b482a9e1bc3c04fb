/* testlib.c: see testlib.h. */
#include "testlib.h"

#include <stdarg.h>
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
