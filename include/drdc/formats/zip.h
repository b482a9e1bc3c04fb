/* zip.h: a read-only view of a zip archive held in memory, as torch.save writes them (pth.c's
 * container for torch >= 1.6): the central directory, ZIP64 included (extra fields, end-of-
 * central-directory locator and record), and the bytes of STORED entries, CRC-32 checked. There is
 * no decompression: a DEFLATE entry is a clear error. Multi-disk and encrypted archives are
 * refused. The input is untrusted: every offset and size is checked against the buffer; errors are
 * DRDC_ERR_FORMAT (DRDC_ERR_NOMEM) with a message that starts with the source name. */
#ifndef DRDC_ZIP_H
#define DRDC_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "drdc/core/error.h"
#include "drdc/core/strmap.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One central-directory entry, with its ZIP64 sizes resolved. */
typedef struct drdc_zip_entry {
    const char *name;     /* borrowed from the archive bytes; not NUL-terminated */
    size_t namelen;
    uint64_t data_off;    /* where the entry's bytes start (after its local header) */
    uint64_t csize, usize;
    uint16_t method, flags;
    uint32_t crc;
} drdc_zip_entry;

typedef struct drdc_zip {
    const char *src;              /* names the archive in messages */
    const uint8_t *buf;           /* the whole archive, borrowed */
    size_t size;
    drdc_zip_entry *entries;      /* (n_entries) in directory order */
    size_t n_entries;
    drdc_strmap names;            /* name -> index of the first entry of that name */
} drdc_zip;

/* Reads the central directory of buf[0..size), which must outlive z. On failure z is left empty
 * (drdc_zip_close is still safe). */
drdc_status drdc_zip_open(drdc_zip *z, const uint8_t *buf, size_t size, const char *src);

/* The first entry called name[0..namelen), or NULL. */
const drdc_zip_entry *drdc_zip_find(const drdc_zip *z, const char *name, size_t namelen);

/* The bytes of a STORED entry (pointing into the archive), after checking method, sizes and
 * CRC-32. */
drdc_status drdc_zip_stored(const drdc_zip *z, const drdc_zip_entry *e, const uint8_t **data, size_t *len);

void drdc_zip_close(drdc_zip *z);   /* safe on a zeroed struct; leaves it zeroed */

#ifdef __cplusplus
}
#endif
#endif
