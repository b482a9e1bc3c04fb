/* fuzz_memfile.h: a helper for fuzz targets whose parser only reads from a path (.npy reader,
 * image loader): the input bytes are written to an anonymous in-memory file (memfd) that is
 * reachable as /proc/self/fd/N, so no disk file is created per execution. Falls back to a file
 * in $TMPDIR (or /tmp) when memfd_create is unavailable. Header-only, for the fuzz targets. */
#ifndef DRDC_FUZZ_MEMFILE_H
#define DRDC_FUZZ_MEMFILE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* One memory file per process, reused for every input. */
typedef struct fuzz_memfile {
    int fd;
    char path[64];
} fuzz_memfile;

/* Replaces the file's content with data[0..size); returns its path, or NULL on failure. */
static const char *fuzz_memfile_put(fuzz_memfile *mf, const uint8_t *data, size_t size) {
    if (mf->fd <= 0) {
        mf->fd = memfd_create("drdc-fuzz", 0);
        if (mf->fd < 0) {
            const char *tmp = getenv("TMPDIR");
            snprintf(mf->path, sizeof mf->path, "%s/drdc-fuzz-XXXXXX", tmp ? tmp : "/tmp");
            mf->fd = mkstemp(mf->path);
            if (mf->fd < 0) return NULL;
            unlink(mf->path); /* reached through /proc/self/fd like the memfd */
        }
        snprintf(mf->path, sizeof mf->path, "/proc/self/fd/%d", mf->fd);
    }
    if (ftruncate(mf->fd, 0) != 0) return NULL;
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(mf->fd, data + done, size - done, (off_t)done);
        if (w <= 0) return NULL;
        done += (size_t)w;
    }
    return mf->path;
}

#endif
