/* image.c: host images (float32 HWC in [0,1]): loading through stb_image (8- and 16-bit PNG,
 * JPEG, BMP, ... -> RGB or 0/1 masks), the header-size checks done before any pixel memory is
 * allocated, antialiased bilinear resizing that matches PyTorch's
 * interpolate(mode="bilinear", align_corners=False, antialias=True), and atomic PNG writing.
 * Heatmap colouring lives in heatmap.c. */
#define _POSIX_C_SOURCE 200809L
#include "drdc/formats/image.h"
#include "drdc/core/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stb_image.h"
#include "stb_image_write.h"

/* ---- allocation --------------------------------------------------------------------------- */

static drdc_status check_dims(const char *what, int w, int h) {
    if (w <= 0 || h <= 0)
        return drdc_fail(DRDC_ERR_INPUT, "%s: invalid image size %dx%d", what, w, h);
    if (w > DRDC_IMAGE_MAX_SIDE || h > DRDC_IMAGE_MAX_SIDE ||
        (long long)w * (long long)h > DRDC_IMAGE_MAX_PIXELS)
        return drdc_fail(DRDC_ERR_INPUT,
                         "%s: image is %dx%d, above the limit (%d pixels per side, %lld pixels in all)",
                         what, w, h, DRDC_IMAGE_MAX_SIDE, (long long)DRDC_IMAGE_MAX_PIXELS);
    return DRDC_OK;
}

drdc_status drdc_image_alloc(drdc_image *img, int w, int h, int c) {
    if (!img) return drdc_fail(DRDC_ERR_INPUT, "drdc_image_alloc: NULL image");
    memset(img, 0, sizeof *img);
    if (c != 1 && c != 3)
        return drdc_fail(DRDC_ERR_INPUT, "drdc_image_alloc: %d channels (must be 1 or 3)", c);
    drdc_status st = DRDC_OK;
    TRY(check_dims("drdc_image_alloc", w, h));
    size_t n = (size_t)w * (size_t)h * (size_t)c;
    img->data = calloc(n, sizeof(float));
    if (!img->data)
        return drdc_fail(DRDC_ERR_NOMEM, "drdc_image_alloc: cannot allocate %dx%dx%d floats", w, h, c);
    img->w = w;
    img->h = h;
    img->c = c;
done:
    return st;
}

void drdc_image_free(drdc_image *img) {
    if (!img) return;
    free(img->data);
    memset(img, 0, sizeof *img);
}

/* ---- reading files ------------------------------------------------------------------------ */

/* Opens an image file for reading: a missing file or a folder is an i/o error, an empty file a
 * format error. */
static drdc_status open_image_file(const char *path, FILE **fp, long long *size) {
    *fp = NULL;
    *size = 0;
    if (!path) return drdc_fail(DRDC_ERR_INPUT, "image path is NULL");
    FILE *f = NULL;
    drdc_status st0 = drdc_fopen_input(path, &f);
    if (st0) return st0;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        int e = errno;
        fclose(f);
        return drdc_fail(DRDC_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(sb.st_mode)) {
        fclose(f);
        return drdc_fail(DRDC_ERR_IO, "%s: is a folder, not an image file", path);
    }
    if (sb.st_size == 0) {
        fclose(f);
        return drdc_fail(DRDC_ERR_FORMAT, "%s: empty file (0 bytes), not an image", path);
    }
    *fp = f;
    *size = (long long)sb.st_size;
    return DRDC_OK;
}

/* Reads the whole file. */
static drdc_status read_file(const char *path, unsigned char **buf, int *len) {
    *buf = NULL;
    *len = 0;
    FILE *f = NULL;
    unsigned char *b = NULL;
    long long size;
    drdc_status st = DRDC_OK;
    TRY(open_image_file(path, &f, &size));
    if (size > INT_MAX) {
        st = drdc_fail(DRDC_ERR_INPUT, "%s: file is %lld bytes, too large to decode", path, size);
        goto done;
    }
    size_t n = (size_t)size;
    b = malloc(n);
    if (!b) {
        st = drdc_fail(DRDC_ERR_NOMEM, "%s: cannot allocate %zu bytes to read it", path, n);
        goto done;
    }
    size_t got = fread(b, 1, n, f);
    if (got != n || ferror(f)) {
        st = drdc_fail(DRDC_ERR_IO, "%s: read error (%zu of %zu bytes)", path, got, n);
        goto done;
    }
    *buf = b;
    *len = (int)n;
    b = NULL;   /* now the caller's */
done:
    if (f) fclose(f);
    free(b);
    return st;
}

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static uint32_t le32(const unsigned char *p) {
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | (uint32_t)p[0];
}

/* Before stb_image sees the file: PNG's IHDR is read here directly, because stb_image refuses
 * very large PNG headers without saying the size. `head` is the file's first bytes. */
static drdc_status precheck_header(const char *path, const unsigned char *head, size_t head_len) {
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    /* Only the formats drdc documents reach stb_image (it also decodes TGA, PSD, GIF, HDR, PIC and
     * PNM, whose headerless or run-length data let a few bytes claim huge images: found slow by
     * fuzzing). */
    int is_png = head_len >= 8 && memcmp(head, png_sig, 8) == 0;
    int is_jpeg = head_len >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF;
    int is_bmp = head_len >= 2 && head[0] == 'B' && head[1] == 'M';
    if (!is_png && !is_jpeg && !is_bmp)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: not a readable image: %s, not PNG, JPEG or BMP", path,
                         head_len == 0 ? "empty file" : "unknown file signature");
    if (head_len < 24 || memcmp(head, png_sig, 8) != 0 || memcmp(head + 12, "IHDR", 4) != 0)
        return DRDC_OK;
    uint32_t pw = be32(head + 16), ph = be32(head + 20);
    if (pw == 0 || ph == 0)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: PNG header says %ux%u pixels", path, (unsigned)pw,
                         (unsigned)ph);
    if (pw > DRDC_IMAGE_MAX_SIDE || ph > DRDC_IMAGE_MAX_SIDE ||
        (unsigned long long)pw * ph > (unsigned long long)DRDC_IMAGE_MAX_PIXELS)
        return drdc_fail(DRDC_ERR_INPUT,
                         "%s: PNG header says %ux%u pixels; the limit is %d pixels per side and "
                         "%lld pixels in all",
                         path, (unsigned)pw, (unsigned)ph, DRDC_IMAGE_MAX_SIDE,
                         (long long)DRDC_IMAGE_MAX_PIXELS);
    return DRDC_OK;
}

/* Debian's stb_image (0.0~git20220908) writes one byte past a Huffman table when a JPEG DHT
 * segment declares more than 256 codes (found by fuzzing: tests/fuzz/regressions/image-1.bin).
 * So the DHT segments are checked here before stb sees them (walking the markers as stb does:
 * padding skipped, entropy-coded scans skipped, so DHT segments between progressive scans are
 * seen too): every table's 16 code counts must sum to at most 256 and fit in its segment.
 * Only segments wholly inside `len` bytes are checked
 * when `whole` is 0 (a prefix is enough for a probe); in a whole file a DHT segment that runs
 * past the end is refused too, since stb would read its missing bytes as zeros. */
static drdc_status check_jpeg_dht(const char *path, const unsigned char *buf, size_t len, int whole) {
    if (len < 4 || buf[0] != 0xFF || buf[1] != 0xD8) return DRDC_OK;
    size_t pos = 2;
    while (pos + 4 <= len) {
        if (buf[pos] != 0xFF) {   /* padding between segments: stb scans on to the next 0xFF too */
            pos++;
            continue;
        }
        unsigned m = buf[pos + 1];
        if (m == 0xFF) {          /* fill byte */
            pos++;
            continue;
        }
        if (m == 0xD9) return DRDC_OK;   /* end of image */
        if (m == 0xD8 || m == 0x01 || m == 0x00 || (m >= 0xD0 && m <= 0xD7)) {   /* no length */
            pos += 2;
            continue;
        }
        size_t seg = ((size_t)buf[pos + 2] << 8) | buf[pos + 3];
        if (seg < 2) return DRDC_OK;
        if (pos + 2 + seg > len) {   /* a segment past the end: corrupt if this is the whole file */
            if (whole && m == 0xC4) return drdc_fail(DRDC_ERR_FORMAT, "%s: corrupt JPEG (Huffman table cut short)", path);
            return DRDC_OK;
        }
        if (m == 0xC4) {
            size_t q = pos + 4, end = pos + 2 + seg;
            while (q < end) {
                if (q + 17 > end) return drdc_fail(DRDC_ERR_FORMAT, "%s: corrupt JPEG (Huffman table cut short)", path);
                size_t codes = 0;
                for (int i = 1; i <= 16; i++) codes += buf[q + i];
                if (codes > 256 || q + 17 + codes > end)
                    return drdc_fail(DRDC_ERR_FORMAT, "%s: corrupt JPEG (Huffman table with %zu codes)", path, codes);
                q += 17 + codes;
            }
        }
        pos += 2 + seg;
        if (m == 0xDA)   /* start of scan: skip the entropy-coded data to the next real marker */
            while (pos + 1 < len && !(buf[pos] == 0xFF && buf[pos + 1] != 0x00 && !(buf[pos + 1] >= 0xD0 && buf[pos + 1] <= 0xD7)))
                pos++;
    }
    return DRDC_OK;
}

/* After stbi_info gave (w, h): the size limits, and a truncated uncompressed BMP (which
 * stb_image would decode without complaint, reading missing rows as 0). */
static drdc_status postcheck_header(const char *path, const unsigned char *head, size_t head_len,
                                    long long file_len, int w, int h) {
    if (w <= 0 || h <= 0 || w > DRDC_IMAGE_MAX_SIDE || h > DRDC_IMAGE_MAX_SIDE ||
        (long long)w * (long long)h > DRDC_IMAGE_MAX_PIXELS)
        return drdc_fail(DRDC_ERR_INPUT,
                         "%s: header says %dx%d pixels; the limit is %d pixels per side and %lld "
                         "pixels in all",
                         path, w, h, DRDC_IMAGE_MAX_SIDE, (long long)DRDC_IMAGE_MAX_PIXELS);
    if (head_len >= 34 && head[0] == 'B' && head[1] == 'M' && le32(head + 14) >= 40) {
        uint32_t off = le32(head + 10), comp = le32(head + 30);
        unsigned bpp = (unsigned)head[28] | ((unsigned)head[29] << 8);
        if ((comp == 0 || comp == 3) && bpp >= 1 && bpp <= 32) {
            unsigned long long stride = (((unsigned long long)w * bpp + 31) / 32) * 4;
            unsigned long long need = off + stride * (unsigned long long)h;
            if ((unsigned long long)file_len < need)
                return drdc_fail(DRDC_ERR_FORMAT,
                                 "%s: truncated BMP: %lld bytes, but %dx%d pixels at %u bits need %llu",
                                 path, file_len, w, h, bpp, need);
        }
    }
    return DRDC_OK;
}

static drdc_status info_failed(const char *path) {
    const char *why = stbi_failure_reason();
    return drdc_fail(DRDC_ERR_FORMAT, "%s: not a readable image (%s)", path,
                     why ? why : "unknown reason");
}

/* Reads only the header (through stb_image's FILE reader), not the whole file. */
drdc_status drdc_image_probe(const char *path, int *w, int *h) {
    FILE *f = NULL;
    long long size;
    int iw = 0, ih = 0, n = 0;
    drdc_status st = DRDC_OK;
    TRY(open_image_file(path, &f, &size));
    static _Thread_local unsigned char head[1 << 16];   /* JPEG Huffman tables sit in the first KBs */
    size_t head_len = fread(head, 1, sizeof head, f);
    TRY(precheck_header(path, head, head_len));
    TRY(check_jpeg_dht(path, head, head_len, (long long)head_len == size));
    rewind(f);
    if (!stbi_info_from_file(f, &iw, &ih, &n)) {
        st = info_failed(path);
        goto done;
    }
    TRY(postcheck_header(path, head, head_len, size, iw, ih));
    if (w) *w = iw;
    if (h) *h = ih;
done:
    if (f) fclose(f);
    return st;
}

static drdc_status decode_failed(const char *path) {
    const char *why = stbi_failure_reason();
    if (why && strcmp(why, "outofmem") == 0)
        return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory while decoding", path);
    return drdc_fail(DRDC_ERR_FORMAT, "%s: corrupt or truncated image (%s)", path,
                     why ? why : "unknown reason");
}

/* Decoded pixels, 8 or 16 bit, `n` channels as stored (req_comp = 0 keeps them). */
typedef struct {
    int w, h, n, is16;
    void *px;
} raw_pixels;

static drdc_status decode(const char *path, int req_comp, raw_pixels *r) {
    memset(r, 0, sizeof *r);
    unsigned char *buf = NULL;
    int len, w, h, n;
    drdc_status st = DRDC_OK;
    TRY(read_file(path, &buf, &len));
    TRY(precheck_header(path, buf, (size_t)len));
    TRY(check_jpeg_dht(path, buf, (size_t)len, 1));
    if (!stbi_info_from_memory(buf, len, &w, &h, &n)) {
        st = info_failed(path);
        goto done;
    }
    TRY(postcheck_header(path, buf, (size_t)len, len, w, h));
    int dw = 0, dh = 0, dn = 0;
    r->is16 = stbi_is_16_bit_from_memory(buf, len);
    if (r->is16)
        r->px = stbi_load_16_from_memory(buf, len, &dw, &dh, &dn, req_comp);
    else
        r->px = stbi_load_from_memory(buf, len, &dw, &dh, &dn, req_comp);
    if (!r->px) {
        st = decode_failed(path);
        goto done;
    }
    if (dw != w || dh != h) {
        stbi_image_free(r->px);
        r->px = NULL;
        st = drdc_fail(DRDC_ERR_FORMAT, "%s: decoded size %dx%d differs from header %dx%d", path, dw, dh, w, h);
        goto done;
    }
    r->w = dw;
    r->h = dh;
    r->n = req_comp ? req_comp : dn;
done:
    free(buf);
    return st;
}

drdc_status drdc_image_load_rgb(const char *path, drdc_image *out) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output image", path ? path : "(null)");
    memset(out, 0, sizeof *out);
    raw_pixels r;
    drdc_status st = DRDC_OK;
    TRY(decode(path, 3, &r)); /* stb expands gray and palettes, drops alpha */
    st = drdc_image_alloc(out, r.w, r.h, 3);
    if (st) {
        drdc_error_context(st, "%s", path);
        goto done;
    }
    size_t n = (size_t)r.w * r.h * 3;
    if (r.is16) {
        const unsigned short *p = r.px;
        for (size_t i = 0; i < n; i++) out->data[i] = (float)p[i] / 65535.0f;
    } else {
        const unsigned char *p = r.px;
        for (size_t i = 0; i < n; i++) out->data[i] = (float)p[i] / 255.0f;
    }
done:
    stbi_image_free(r.px);
    return st;
}

drdc_status drdc_image_load_mask(const char *path, drdc_image *out) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output image", path ? path : "(null)");
    memset(out, 0, sizeof *out);
    raw_pixels r;
    drdc_status st = DRDC_OK;
    TRY(decode(path, 0, &r)); /* native channels: a 16-bit value 1 stays non-zero */
    st = drdc_image_alloc(out, r.w, r.h, 1);
    if (st) {
        drdc_error_context(st, "%s", path);
        goto done;
    }
    /* Colour channels only: alpha (gray+alpha: channel 1, RGBA: channel 3) does not count. */
    int ncol = (r.n == 2 || r.n == 4) ? r.n - 1 : r.n;
    size_t npx = (size_t)r.w * r.h;
    for (size_t i = 0; i < npx; i++) {
        int any = 0;
        for (int k = 0; k < ncol; k++) {
            unsigned v = r.is16 ? ((const unsigned short *)r.px)[i * r.n + k]
                                : ((const unsigned char *)r.px)[i * r.n + k];
            any |= v != 0;
        }
        out->data[i] = any ? 1.0f : 0.0f;
    }
done:
    stbi_image_free(r.px);
    return st;
}

/* ---- resizing ----------------------------------------------------------------------------- */

/* One axis of a separable resize: for output i, taps start[i] .. start[i]+count[i]-1 with
 * weights w[i*max_taps + j]. Computed in float with PyTorch's formulas
 * (aten/src/ATen/native/cpu/UpSampleKernel.cpp, _compute_weights_aa), which follow PIL. */
typedef struct {
    int *start, *count;
    float *w;
    int max_taps;
} axis_weights;

static float triangle(float x) {
    if (x < 0.0f) x = -x;
    return x < 1.0f ? 1.0f - x : 0.0f;
}

static void axis_weights_free(axis_weights *a) {
    free(a->start);
    free(a->count);
    free(a->w);
    memset(a, 0, sizeof *a);
}

static drdc_status axis_weights_build(int in, int out, axis_weights *a) {
    memset(a, 0, sizeof *a);
    float scale = (float)in / (float)out;
    float support = scale >= 1.0f ? 1.0f * scale : 1.0f; /* interp_size/2 = 1 for bilinear */
    float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
    a->max_taps = (int)ceilf(support) * 2 + 1;
    a->start = malloc((size_t)out * sizeof(int));
    a->count = malloc((size_t)out * sizeof(int));
    a->w = calloc((size_t)out * a->max_taps, sizeof(float));
    if (!a->start || !a->count || !a->w) {
        axis_weights_free(a);
        return drdc_fail(DRDC_ERR_NOMEM, "resize: cannot allocate weights for %d -> %d", in, out);
    }
    for (int i = 0; i < out; i++) {
        float center = scale * ((float)i + 0.5f);
        long xmin = (long)(center - support + 0.5f); /* truncation, as torch's int64 cast */
        if (xmin < 0) xmin = 0;
        long xmax = (long)(center + support + 0.5f);
        if (xmax > in) xmax = in;
        long xsize = xmax - xmin;
        if (xsize > a->max_taps) xsize = a->max_taps;
        if (xsize < 1) { /* cannot happen for in, out >= 1; keep a valid tap anyway */
            xmin = xmin >= in ? in - 1 : xmin;
            xsize = 1;
        }
        float *wt = a->w + (size_t)i * a->max_taps;
        float total = 0.0f;
        for (long j = 0; j < xsize; j++) {
            float v = triangle(((float)(j + xmin) - center + 0.5f) * invscale);
            wt[j] = v;
            total += v;
        }
        if (total != 0.0f)
            for (long j = 0; j < xsize; j++) wt[j] /= total;
        a->start[i] = (int)xmin;
        a->count[i] = (int)xsize;
    }
    return DRDC_OK;
}

drdc_status drdc_image_resize(const drdc_image *src, int w, int h, drdc_image *dst) {
    if (!src || !dst) return drdc_fail(DRDC_ERR_INPUT, "resize: NULL image");
    if (src == dst) return drdc_fail(DRDC_ERR_INPUT, "resize: source and destination are the same");
    if (!src->data || src->w <= 0 || src->h <= 0 || src->c <= 0)
        return drdc_fail(DRDC_ERR_INPUT, "resize: empty source image (%dx%dx%d)", src->w, src->h,
                         src->c);
    memset(dst, 0, sizeof *dst);
    drdc_status st = drdc_image_alloc(dst, w, h, src->c);
    if (st) return drdc_error_context(st, "resize %dx%d -> %dx%d", src->w, src->h, w, h);
    const int c = src->c, iw = src->w, ih = src->h;

    /* Horizontal pass (the contiguous dimension) first, then vertical, as PyTorch does; an
     * axis whose size does not change is skipped (its weights would be the identity). */
    const float *cur = src->data;
    float *tmp = NULL;
    axis_weights ax = {0}, ay = {0};
    if (w != iw) {
        TRY(axis_weights_build(iw, w, &ax));
        float *o = (h == ih) ? dst->data : malloc((size_t)ih * w * c * sizeof(float));
        if (!o) {
            st = drdc_fail(DRDC_ERR_NOMEM, "resize: cannot allocate %dx%d intermediate", w, ih);
            goto done;
        }
        for (int y = 0; y < ih; y++) {
            const float *row = cur + (size_t)y * iw * c;
            float *orow = o + (size_t)y * w * c;
            for (int x = 0; x < w; x++) {
                const float *wt = ax.w + (size_t)x * ax.max_taps;
                const float *s = row + (size_t)ax.start[x] * c;
                for (int k = 0; k < c; k++) {
                    float acc = s[k] * wt[0];
                    for (int j = 1; j < ax.count[x]; j++) acc += s[(size_t)j * c + k] * wt[j];
                    orow[(size_t)x * c + k] = acc;
                }
            }
        }
        if (o != dst->data) tmp = o;
        cur = o;
    }
    if (h != ih) {
        TRY(axis_weights_build(ih, h, &ay));
        size_t rowlen = (size_t)w * c;
        for (int y = 0; y < h; y++) {
            const float *wt = ay.w + (size_t)y * ay.max_taps;
            const float *s = cur + (size_t)ay.start[y] * rowlen;
            float *orow = dst->data + (size_t)y * rowlen;
            for (size_t i = 0; i < rowlen; i++) {
                float acc = s[i] * wt[0];
                for (int j = 1; j < ay.count[y]; j++) acc += s[(size_t)j * rowlen + i] * wt[j];
                orow[i] = acc;
            }
        }
    } else if (w == iw) {
        memcpy(dst->data, src->data, (size_t)w * h * c * sizeof(float));
    }
done:
    axis_weights_free(&ax);
    axis_weights_free(&ay);
    free(tmp);
    if (st) drdc_image_free(dst);
    return st;
}

/* ---- PNG writing -------------------------------------------------------------------------- */

typedef struct {
    FILE *f;
    int failed;
} png_sink;

static void png_sink_write(void *ctx, void *data, int size) {
    png_sink *s = ctx;
    if (s->failed || size <= 0) return;
    if (fwrite(data, 1, (size_t)size, s->f) != (size_t)size) s->failed = errno ? errno : EIO;
}

drdc_status drdc_image_write_png(const char *path, const drdc_image *img) {
    if (!path) return drdc_fail(DRDC_ERR_INPUT, "write png: NULL path");
    if (!img || !img->data || img->w <= 0 || img->h <= 0)
        return drdc_fail(DRDC_ERR_INPUT, "%s: cannot write an empty image", path);
    if (img->c != 1 && img->c != 3)
        return drdc_fail(DRDC_ERR_INPUT, "%s: cannot write a %d-channel image as PNG (1 or 3)", path,
                         img->c);
    size_t n = (size_t)img->w * img->h * img->c;
    unsigned char *px = malloc(n);
    if (!px) return drdc_fail(DRDC_ERR_NOMEM, "%s: cannot allocate %zu bytes of pixels", path, n);
    drdc_status st = DRDC_OK;
    for (size_t i = 0; i < n; i++) {
        float v = img->data[i];
        if (isnan(v)) {
            size_t p = i / (size_t)img->c;
            st = drdc_fail(DRDC_ERR_NUMERIC, "%s: pixel (%zu, %zu) is NaN; refusing to write", path,
                           p % (size_t)img->w, p / (size_t)img->w);
            goto done;
        }
        v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        px[i] = (unsigned char)lrintf(v * 255.0f);
    }

    drdc_atomic_file af;
    TRY(drdc_atomic_open(&af, path));
    png_sink sink = {af.f, 0};
    errno = 0;
    int ok = stbi_write_png_to_func(png_sink_write, &sink, img->w, img->h, img->c, px, img->w * img->c);
    if (!ok || sink.failed) {
        int e = sink.failed;
        drdc_atomic_abort(&af);
        st = ok ? drdc_fail(DRDC_ERR_IO, "%s: write failed: %s", path, strerror(e))
                : drdc_fail(DRDC_ERR_NOMEM, "%s: PNG encoder failed (out of memory?)", path);
        goto done;
    }
    TRY(drdc_atomic_commit(&af));
done:
    free(px);
    return st;
}
