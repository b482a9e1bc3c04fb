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

/* The writer of every output file. A regular file (or a path that does not exist yet) is written
 * atomically: to ".tmp.<pid>.<n>" in the same folder (a short name, whatever the target's), then
 * commit flushes, fsyncs, renames over the target and fsyncs the folder; abort (or a failed commit)
 * removes the temporary file and leaves any old file untouched. A symlink is followed: its target
 * is replaced, the link stays. Anything that is not a regular file (a device such as /dev/stdout, a
 * FIFO, a socket) is written through, never replaced. "-" is standard output. While a temporary
 * file exists it is listed for drdc_remove_temp_files (SIGINT/SIGTERM). */
typedef enum drdc_write_mode { DRDC_WRITE_ATOMIC = 0, DRDC_WRITE_THROUGH = 1, DRDC_WRITE_STDOUT = 2 } drdc_write_mode;
typedef struct drdc_atomic_file {
    FILE *f;
    drdc_write_mode mode;
    int slot;              /* in the list of temporary files, or -1 */
    char path[4096];       /* the file written (a symlink's target) */
    char tmp[4200];
} drdc_atomic_file;

drdc_status drdc_atomic_open(drdc_atomic_file *af, const char *path);
/* The same for a stream that readers follow while it grows (JSON Lines): written straight into
 * path (created or truncated; symlinks followed), never through a temporary file. */
drdc_status drdc_stream_open(drdc_atomic_file *af, const char *path);
drdc_status drdc_atomic_commit(drdc_atomic_file *af);
void drdc_atomic_abort(drdc_atomic_file *af);

/* Removes every temporary file this process has open (async-signal-safe: for SIGINT/SIGTERM
 * handlers, before _exit). */
void drdc_remove_temp_files(void);

/* Writes n bytes to path through drdc_atomic_open (atomically for regular files; "-": stdout). */
drdc_status drdc_write_file_atomic(const char *path, const void *data, size_t n);

/* Opens a file the user gave as input, for reading. Anything that is not a regular file (a FIFO
 * would block forever, a device never end) is refused before a byte is read; a missing file, a
 * folder or one without read permission is the user's input error (DRDC_ERR_INPUT, naming it);
 * other failures are DRDC_ERR_IO. */
drdc_status drdc_open_input(const char *path, int *fd);
drdc_status drdc_fopen_input(const char *path, FILE **f);

/* Reads a whole file into a malloc'd buffer (NUL-terminated; *len excludes the NUL); the file is
 * opened with drdc_fopen_input. */
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
