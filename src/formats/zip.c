/* zip.c: the in-memory zip reader behind .pth files (see zip.h): end-of-central-directory search,
 * ZIP64 records and extra fields, local headers, CRC-32 of stored entries. */
#include "drdc/formats/zip.h"

#include <stdlib.h>
#include <string.h>

#include "drdc/formats/bytes.h"

/* ---- CRC-32 ---------------------------------------------------------------------------------- */

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t table[256];  /* built per call (2k steps, next to a whole entry): no shared state */
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t r = i;
        for (int j = 0; j < 8; j++) r = (r >> 1) ^ (0xEDB88320u & (0u - (r & 1)));
        table[i] = r;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

/* ---- central directory ----------------------------------------------------------------------- */

static drdc_status read_dir(drdc_zip *z) {
    const uint8_t *b = z->buf;
    size_t size = z->size;
    const char *src = z->src;
    if (size < 22) return drdc_fail(DRDC_ERR_FORMAT, "%s: truncated zip archive (%zu bytes)", src, size);
    size_t eocd = (size_t)-1;
    size_t lo = size - 22 > 65535 ? size - 22 - 65535 : 0;
    for (size_t i = size - 22 + 1; i-- > lo;) {
        if (drdc_rd32(b + i) == 0x06054b50u && i + 22 + drdc_rd16(b + i + 20) <= size) { eocd = i; break; }
    }
    if (eocd == (size_t)-1)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: zip end-of-central-directory record not found (truncated or not a zip archive)", src);
    uint64_t nent = drdc_rd16(b + eocd + 10), cdsize = drdc_rd32(b + eocd + 12), cdoff = drdc_rd32(b + eocd + 16);
    if (drdc_rd16(b + eocd + 4) != 0 || drdc_rd16(b + eocd + 6) != 0)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: multi-disk zip archives are not supported", src);
    if (eocd >= 20 && drdc_rd32(b + eocd - 20) == 0x07064b50u) {
        uint64_t z64 = drdc_rd64(b + eocd - 20 + 8);
        if (z64 > eocd - 20 || eocd - 20 - z64 < 56)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: ZIP64 end-of-central-directory offset %llu out of range", src, (unsigned long long)z64);
        const uint8_t *r = b + z64;
        if (drdc_rd32(r) != 0x06064b50u)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: ZIP64 end-of-central-directory record has a bad signature", src);
        nent = drdc_rd64(r + 32);
        cdsize = drdc_rd64(r + 40);
        cdoff = drdc_rd64(r + 48);
    } else if (nent == 0xFFFF || cdsize == 0xFFFFFFFFu || cdoff == 0xFFFFFFFFu) {
        return drdc_fail(DRDC_ERR_FORMAT, "%s: zip directory fields saturated but no ZIP64 locator", src);
    }
    if (cdoff > size || cdsize > size - cdoff)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: zip central directory [%llu, +%llu) outside the file of %zu bytes", src,
                         (unsigned long long)cdoff, (unsigned long long)cdsize, size);
    if (nent > cdsize / 46)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: zip central directory claims %llu entries in %llu bytes", src,
                         (unsigned long long)nent, (unsigned long long)cdsize);
    z->entries = calloc(nent ? (size_t)nent : 1, sizeof *z->entries);
    if (!z->entries) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory (zip directory)", src);
    size_t p = (size_t)cdoff, cdend = (size_t)(cdoff + cdsize);
    for (uint64_t e = 0; e < nent; e++) {
        if (cdend - p < 46 || drdc_rd32(b + p) != 0x02014b50u)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: zip central directory entry %llu is corrupt", src, (unsigned long long)e);
        drdc_zip_entry ze = {0};
        ze.flags = drdc_rd16(b + p + 8);
        ze.method = drdc_rd16(b + p + 10);
        ze.crc = drdc_rd32(b + p + 16);
        ze.csize = drdc_rd32(b + p + 20);
        ze.usize = drdc_rd32(b + p + 24);
        size_t nlen = drdc_rd16(b + p + 28), xlen = drdc_rd16(b + p + 30), clen = drdc_rd16(b + p + 32);
        uint64_t lho = drdc_rd32(b + p + 42);
        if (cdend - p - 46 < nlen + xlen + clen)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: zip central directory entry %llu runs past the directory", src, (unsigned long long)e);
        ze.name = (const char *)b + p + 46;
        ze.namelen = nlen;
        char nb[128];
        const char *shown_name = drdc_shown(ze.name, nlen, nb, sizeof nb);
        if (ze.usize == 0xFFFFFFFFu || ze.csize == 0xFFFFFFFFu || lho == 0xFFFFFFFFu) {
            /* ZIP64 extended information: the saturated fields, in this order */
            const uint8_t *x = b + p + 46 + nlen, *xe = x + xlen;
            int found = 0;
            while (xe - x >= 4) {
                uint16_t id = drdc_rd16(x), len = drdc_rd16(x + 2);
                if ((size_t)(xe - x - 4) < len) break;
                if (id == 0x0001) {
                    const uint8_t *f = x + 4, *fe = f + len;
                    if (ze.usize == 0xFFFFFFFFu) { if (fe - f < 8) break; ze.usize = drdc_rd64(f); f += 8; }
                    if (ze.csize == 0xFFFFFFFFu) { if (fe - f < 8) break; ze.csize = drdc_rd64(f); f += 8; }
                    if (lho == 0xFFFFFFFFu) { if (fe - f < 8) break; lho = drdc_rd64(f); f += 8; }
                    found = 1;
                    break;
                }
                x += 4 + len;
            }
            if (!found) return drdc_fail(DRDC_ERR_FORMAT, "%s: zip entry '%s': ZIP64 extra field missing or short", src, shown_name);
        }
        if (ze.flags & 1) return drdc_fail(DRDC_ERR_FORMAT, "%s: zip entry '%s' is encrypted", src, shown_name);
        if (lho > size || size - lho < 30 || drdc_rd32(b + lho) != 0x04034b50u)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: zip entry '%s': local header at %llu missing or corrupt", src, shown_name,
                             (unsigned long long)lho);
        uint64_t doff = lho + 30 + drdc_rd16(b + lho + 26) + drdc_rd16(b + lho + 28);
        if (doff > size || ze.csize > size - doff)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: zip entry '%s': data [%llu, +%llu) runs past the end of the file (%zu bytes; truncated?)",
                             src, shown_name, (unsigned long long)doff, (unsigned long long)ze.csize, size);
        ze.data_off = doff;
        z->entries[z->n_entries] = ze;
        size_t dummy;
        if (!drdc_strmap_find(&z->names, ze.name, ze.namelen, &dummy) &&
            drdc_strmap_put(&z->names, ze.name, ze.namelen, z->n_entries) != 0)
            return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory (zip directory)", src);
        z->n_entries++;
        p += 46 + nlen + xlen + clen;
    }
    return DRDC_OK;
}

drdc_status drdc_zip_open(drdc_zip *z, const uint8_t *buf, size_t size, const char *src) {
    memset(z, 0, sizeof *z);
    z->src = src;
    z->buf = buf;
    z->size = size;
    drdc_status st = read_dir(z);
    if (st) drdc_zip_close(z);
    return st;
}

const drdc_zip_entry *drdc_zip_find(const drdc_zip *z, const char *name, size_t namelen) {
    size_t idx;
    return drdc_strmap_find(&z->names, name, namelen, &idx) ? &z->entries[idx] : NULL;
}

drdc_status drdc_zip_stored(const drdc_zip *z, const drdc_zip_entry *e, const uint8_t **data, size_t *len) {
    char nb[128];
    const char *nm = drdc_shown(e->name, e->namelen, nb, sizeof nb);
    if (e->method == 8)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: zip entry '%s' is DEFLATE-compressed; only stored (uncompressed) entries are "
                         "supported, as torch.save writes them (re-save the file with torch.save)", z->src, nm);
    if (e->method != 0)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: zip entry '%s' uses compression method %u; only stored entries are supported",
                         z->src, nm, e->method);
    if (e->csize != e->usize)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: zip entry '%s' is stored but its sizes differ (%llu vs %llu)", z->src, nm,
                         (unsigned long long)e->csize, (unsigned long long)e->usize);
    const uint8_t *d = z->buf + e->data_off;
    uint32_t crc = crc32_of(d, (size_t)e->csize);
    if (crc != e->crc)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: zip entry '%s' is corrupt (CRC-32 %08x, directory says %08x)", z->src, nm, crc, e->crc);
    *data = d;
    *len = (size_t)e->csize;
    return DRDC_OK;
}

void drdc_zip_close(drdc_zip *z) {
    free(z->entries);
    drdc_strmap_free(&z->names);
    memset(z, 0, sizeof *z);
}
