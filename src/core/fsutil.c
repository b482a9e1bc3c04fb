/* fsutil.c: atomic writes, mkdir -p, whole-file reads (see fsutil.h). */
#include "drdc/core/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- temporary files: every one this process has open is listed, so SIGINT/SIGTERM can remove them ---- */

#define MAX_TEMPS 64
static char g_temps[MAX_TEMPS][sizeof(((drdc_atomic_file *)0)->tmp)];
static volatile sig_atomic_t g_temp_used[MAX_TEMPS];

static int temp_register(const char *path) {
    for (int i = 0; i < MAX_TEMPS; i++)
        if (!g_temp_used[i]) {
            snprintf(g_temps[i], sizeof g_temps[i], "%s", path);
            g_temp_used[i] = 1;
            return i;
        }
    return -1;   /* more than MAX_TEMPS open at once: still written, not removed on a signal */
}

static void temp_unregister(int slot) {
    if (slot >= 0) g_temp_used[slot] = 0;
}

void drdc_remove_temp_files(void) {   /* async-signal-safe: unlink only */
    for (int i = 0; i < MAX_TEMPS; i++)
        if (g_temp_used[i]) {
            unlink(g_temps[i]);
            g_temp_used[i] = 0;
        }
}

/* The file a write to `path` lands on: path itself, or a symlink's final target. */
static int resolve_target(const char *path, char *out, size_t cap) {
    struct stat lst;
    if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
        char real[PATH_MAX];
        if (realpath(path, real) && strlen(real) < cap) {
            memcpy(out, real, strlen(real) + 1);
            return 1;
        }
    }
    if (strlen(path) >= cap) return 0;
    memcpy(out, path, strlen(path) + 1);
    return 1;
}

drdc_status drdc_atomic_open(drdc_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    af->slot = -1;
    if (strcmp(path, "-") == 0) {   /* standard output */
        af->f = stdout;
        af->mode = DRDC_WRITE_STDOUT;
        snprintf(af->path, sizeof af->path, "(standard output)");
        return DRDC_OK;
    }
    if (!resolve_target(path, af->path, sizeof af->path))
        return drdc_fail(DRDC_ERR_INPUT, "%.200s...: path too long (%zu bytes)", path, strlen(path));
    struct stat sb;
    if (stat(af->path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        if (S_ISDIR(sb.st_mode)) return drdc_fail(DRDC_ERR_IO, "%s: is a folder, not a file", path);
        /* a device, FIFO or socket (e.g. /dev/stdout): written through, as the user asked */
        af->f = fopen(af->path, "wb");
        if (!af->f) return drdc_fail(DRDC_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
        af->mode = DRDC_WRITE_THROUGH;
        return DRDC_OK;
    }
    /* a regular file (or none yet): a temporary file in the same folder, renamed over it at commit.
     * Its name does not grow with the target's, so any legal target name works. */
    static _Atomic unsigned counter;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", af->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = '\0';
    else
        dir[0] = '\0';
    if (snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%d.%u", dir, (int)getpid(), counter++) >= (int)sizeof af->tmp)
        return drdc_fail(DRDC_ERR_INPUT, "%.200s...: path too long", path);
    af->slot = temp_register(af->tmp);
    af->f = fopen(af->tmp, "wbx");   /* x: never reuse an existing file */
    if (!af->f) {
        int e = errno;
        temp_unregister(af->slot);
        return drdc_fail(DRDC_ERR_IO,
                         "%s: cannot create temporary file %s: %s", path, af->tmp, strerror(e));
    }
    af->mode = DRDC_WRITE_ATOMIC;
    return DRDC_OK;
}

drdc_status drdc_stream_open(drdc_atomic_file *af, const char *path) {
    drdc_status st = drdc_atomic_open(af, path);
    if (st || af->mode != DRDC_WRITE_ATOMIC) return st;
    drdc_atomic_abort(af);   /* a regular file: written in place instead */
    af->f = fopen(af->path, "wb");
    if (!af->f) return drdc_fail(DRDC_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    af->mode = DRDC_WRITE_THROUGH;
    af->slot = -1;
    return DRDC_OK;
}

static void fsync_parent(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    int fd = open(dirname(buf), O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

drdc_status drdc_atomic_commit(drdc_atomic_file *af) {
    if (!af->f) return drdc_fail(DRDC_ERR_STATE, "%s: file not open", af->path);
    int err = 0;
    if (fflush(af->f) != 0 || ferror(af->f)) err = errno ? errno : EIO;
    if (af->mode == DRDC_WRITE_STDOUT) {
        af->f = NULL;
        return err ? drdc_fail(DRDC_ERR_IO, "standard output: cannot write: %s", strerror(err)) : DRDC_OK;
    }
    if (!err && af->mode == DRDC_WRITE_ATOMIC && fsync(fileno(af->f)) != 0) err = errno;
    /* test hook: DRDC_TEST_WRITE_DELAY_MS holds every finished temporary file that long before the
     * rename, so a test can interrupt the process while one exists */
    const char *delay = getenv("DRDC_TEST_WRITE_DELAY_MS");
    if (delay && af->mode == DRDC_WRITE_ATOMIC) usleep((useconds_t)(1000 * atoi(delay)));
    if (fclose(af->f) != 0 && !err) err = errno ? errno : EIO;
    af->f = NULL;
    if (af->mode == DRDC_WRITE_THROUGH)
        return err ? drdc_fail(DRDC_ERR_IO, "%s: cannot write: %s", af->path, strerror(err)) : DRDC_OK;
    if (!err && rename(af->tmp, af->path) != 0) err = errno;
    if (err) unlink(af->tmp);
    temp_unregister(af->slot);
    if (err) return drdc_fail(DRDC_ERR_IO, "%s: cannot write: %s", af->path, strerror(err));
    fsync_parent(af->path);
    return DRDC_OK;
}

void drdc_atomic_abort(drdc_atomic_file *af) {
    if (af->f && af->mode != DRDC_WRITE_STDOUT) fclose(af->f);
    af->f = NULL;
    if (af->mode == DRDC_WRITE_ATOMIC && af->tmp[0]) {
        unlink(af->tmp);
        temp_unregister(af->slot);
    }
}

drdc_status drdc_write_file_atomic(const char *path, const void *data, size_t n) {
    drdc_atomic_file af;
    drdc_status st = DRDC_OK;
    TRY(drdc_atomic_open(&af, path));
    if (n && fwrite(data, 1, n, af.f) != n) {
        int e = errno;
        drdc_atomic_abort(&af);
        st = drdc_fail(DRDC_ERR_IO, "%s: cannot write: %s", path, strerror(e));
        goto done;
    }
    TRY(drdc_atomic_commit(&af));
done:
    return st;
}

drdc_status drdc_open_input(const char *path, int *fd) {
    *fd = -1;
    if (!path) return drdc_fail(DRDC_ERR_INPUT, "input path is NULL");
    int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);   /* O_NONBLOCK: opening a FIFO must not wait */
    if (f < 0) {
        int e = errno;
        return drdc_fail(e == ENOENT || e == ENOTDIR || e == EACCES || e == EISDIR || e == ELOOP || e == ENAMETOOLONG
                             ? DRDC_ERR_INPUT : DRDC_ERR_IO,
                         "%s: cannot open: %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int e = errno;
        close(f);
        return drdc_fail(DRDC_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        const char *what = S_ISDIR(sb.st_mode) ? "a folder" : S_ISFIFO(sb.st_mode) ? "a FIFO" : S_ISCHR(sb.st_mode) ||
                           S_ISBLK(sb.st_mode) ? "a device" : S_ISSOCK(sb.st_mode) ? "a socket" : "not a regular file";
        return drdc_fail(DRDC_ERR_INPUT, "%s: is %s, not a regular file: refused", path, what);
    }
    int flags = fcntl(f, F_GETFL);
    if (flags >= 0) fcntl(f, F_SETFL, flags & ~O_NONBLOCK);
    *fd = f;
    return DRDC_OK;
}

drdc_status drdc_fopen_input(const char *path, FILE **out) {
    *out = NULL;
    int fd;
    drdc_status st = drdc_open_input(path, &fd);
    if (st) return st;
    *out = fdopen(fd, "rb");
    if (!*out) {
        int e = errno;
        close(fd);
        return drdc_fail(DRDC_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    return DRDC_OK;
}

drdc_status drdc_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = NULL;
    drdc_status st0 = drdc_fopen_input(path, &f);
    if (st0) return st0;
    /* a regular file's size + 2 (the NUL, and room to see the end in one read); grows if the file does */
    size_t cap = 1 << 16, n = 0;
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && (uintmax_t)sb.st_size < SIZE_MAX / 2)
        cap = (size_t)sb.st_size + 2;
    char *buf = malloc(cap);
    errno = 0;
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!nb) {
            free(buf);
            buf = NULL;
        } else {
            buf = nb;
            cap *= 2;
        }
    }
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    if (!buf) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory reading the file", path);
    if (err) {
        free(buf);
        return drdc_fail(DRDC_ERR_IO, "%s: read error: %s", path, strerror(err));
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return DRDC_OK;
}

drdc_status drdc_mkdirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return drdc_fail(DRDC_ERR_INPUT, "%.200s...: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return drdc_fail(DRDC_ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    if (!drdc_is_dir(path)) return drdc_fail(DRDC_ERR_IO, "%s: exists and is not a folder", path);
    return DRDC_OK;
}

int drdc_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int drdc_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void drdc_path_stem(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (n >= cap) n = cap - 1;
    memcpy(out, base, n);
    out[n] = 0;
}
