/* fsutil.c: atomic writes, mkdir -p, whole-file reads (see fsutil.h). */
#include "drdc/core/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

drdc_status drdc_atomic_open(drdc_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    if (strlen(path) >= sizeof af->path) return drdc_fail(DRDC_ERR_INPUT, "%.200s...: path too long", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    static _Atomic unsigned counter;
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%d.%u", path, (int)getpid(), counter++);
    af->f = fopen(af->tmp, "wbx");   /* x: never reuse an existing file */
    if (!af->f)
        return drdc_fail(DRDC_ERR_IO, "%s: cannot create temporary file %s: %s", path, af->tmp, strerror(errno));
    return DRDC_OK;
}

static void fsync_parent(const char *path) {
    char buf[4096];
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
    if (!err && fsync(fileno(af->f)) != 0) err = errno;
    if (fclose(af->f) != 0 && !err) err = errno ? errno : EIO;
    af->f = NULL;
    if (!err && rename(af->tmp, af->path) != 0) err = errno;
    if (err) {
        unlink(af->tmp);
        return drdc_fail(DRDC_ERR_IO, "%s: cannot write: %s", af->path, strerror(err));
    }
    fsync_parent(af->path);
    return DRDC_OK;
}

void drdc_atomic_abort(drdc_atomic_file *af) {
    if (af->f) {
        fclose(af->f);
        af->f = NULL;
    }
    if (af->tmp[0]) unlink(af->tmp);
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

drdc_status drdc_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return drdc_fail(DRDC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
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
