/* fsutil.h: small file-system helpers shared by every writer: atomic writes (a crash never
 * leaves a torn file), mkdir -p, path pieces. */
#ifndef DRDC_FSUTIL_H
#define DRDC_FSUTIL_H

#include <stddef.h>
#include <stdio.h>
#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An atomic writer: opens "<path>.tmp.<pid>.<n>" in the same folder; commit flushes, fsyncs,
 * renames over path and fsyncs the folder; abort (or a failed commit) removes the temporary
 * file and leaves any old file at path untouched. */
typedef struct drdc_atomic_file {
    FILE *f;
    char path[4096];
    char tmp[4200];
} drdc_atomic_file;

drdc_status drdc_atomic_open(drdc_atomic_file *af, const char *path);
drdc_status drdc_atomic_commit(drdc_atomic_file *af);
void drdc_atomic_abort(drdc_atomic_file *af);

/* Writes n bytes to path atomically. */
drdc_status drdc_write_file_atomic(const char *path, const void *data, size_t n);

/* Reads a whole file into a malloc'd buffer (NUL-terminated; *len excludes the NUL). */
drdc_status drdc_read_file(const char *path, char **data, size_t *len);

/* mkdir -p. */
drdc_status drdc_mkdirs(const char *path);

/* 1 if path is an existing regular file / folder. */
int drdc_is_file(const char *path);
int drdc_is_dir(const char *path);

/* The file name without folder and extension ("a/b/007.png" -> "007"). */
void drdc_path_stem(const char *path, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
