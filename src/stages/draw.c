/* draw.c: drawing for pictures a line engineer can read: text in an embedded 5x7 bitmap font,
 * mask outlines, the turbo colour bar with its threshold mark, side-by-side panels (image, maps,
 * masks, titles, caption) and sharp integer enlargement of small inputs. Colour (the turbo map,
 * colorize) comes from heatmap.c; every write is clipped to the image. */
#include "drdc/stages/draw.h"
#include "drdc/stages/heatmap.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the font --------------------------------------------------------------------------------
 * Origin and licence: drawn by hand for drdc in the manner of the classic 5x7 dot-matrix
 * (character-LCD) fonts, not copied from any font file; dedicated to the public domain (CC0),
 * so it may be reused anywhere. One glyph per printable ASCII character 32..126: 8 rows top to
 * bottom, 5 bits per row, bit 4 (0x10) the leftmost column. Capitals and digits use rows 0-6,
 * lower case x-height rows 2-6, row 7 only the descenders of g j p q y (and ','). */
#define FONT_W 5
#define FONT_H 8
#define FONT_ADVANCE 6
#define FONT_MAX_SCALE 4096 /* larger scales are clamped (a glyph already covers any image) */

static const uint8_t k_font[95][FONT_H] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* space */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04, 0x00}, /* ! */
    {0x0A, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00}, /* " */
    {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A, 0x00}, /* # */
    {0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04, 0x00}, /* $ */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0x00}, /* % */
    {0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D, 0x00}, /* & */
    {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ' */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0x00}, /* ( */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0x00}, /* ) */
    {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00, 0x00}, /* asterisk */
    {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00, 0x00}, /* + */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}, /* , */
    {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00, 0x00}, /* - */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C, 0x00}, /* . */
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00, 0x00}, /* / */
    {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E, 0x00}, /* 0 */
    {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00}, /* 1 */
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F, 0x00}, /* 2 */
    {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E, 0x00}, /* 3 */
    {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02, 0x00}, /* 4 */
    {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E, 0x00}, /* 5 */
    {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E, 0x00}, /* 6 */
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00}, /* 7 */
    {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E, 0x00}, /* 8 */
    {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C, 0x00}, /* 9 */
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00, 0x00}, /* : */
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08, 0x00}, /* ; */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02, 0x00}, /* < */
    {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00, 0x00}, /* = */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08, 0x00}, /* > */
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00}, /* ? */
    {0x0E, 0x11, 0x01, 0x0D, 0x15, 0x15, 0x0E, 0x00}, /* @ */
    {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11, 0x00}, /* A */
    {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E, 0x00}, /* B */
    {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E, 0x00}, /* C */
    {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C, 0x00}, /* D */
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F, 0x00}, /* E */
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10, 0x00}, /* F */
    {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F, 0x00}, /* G */
    {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11, 0x00}, /* H */
    {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00}, /* I */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C, 0x00}, /* J */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0x00}, /* K */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F, 0x00}, /* L */
    {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11, 0x00}, /* M */
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x00}, /* N */
    {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E, 0x00}, /* O */
    {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10, 0x00}, /* P */
    {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D, 0x00}, /* Q */
    {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11, 0x00}, /* R */
    {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E, 0x00}, /* S */
    {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00}, /* T */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E, 0x00}, /* U */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04, 0x00}, /* V */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A, 0x00}, /* W */
    {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11, 0x00}, /* X */
    {0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04, 0x00}, /* Y */
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F, 0x00}, /* Z */
    {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E, 0x00}, /* [ */
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00, 0x00}, /* backslash */
    {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E, 0x00}, /* ] */
    {0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ^ */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F, 0x00}, /* _ */
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ` */
    {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F, 0x00}, /* a */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E, 0x00}, /* b */
    {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E, 0x00}, /* c */
    {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F, 0x00}, /* d */
    {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E, 0x00}, /* e */
    {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08, 0x00}, /* f */
    {0x00, 0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E}, /* g */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00}, /* h */
    {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E, 0x00}, /* i */
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x12, 0x0C}, /* j */
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0x00}, /* k */
    {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00}, /* l */
    {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11, 0x00}, /* m */
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00}, /* n */
    {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E, 0x00}, /* o */
    {0x00, 0x00, 0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10}, /* p */
    {0x00, 0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x01}, /* q */
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0x00}, /* r */
    {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E, 0x00}, /* s */
    {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06, 0x00}, /* t */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D, 0x00}, /* u */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04, 0x00}, /* v */
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A, 0x00}, /* w */
    {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x00}, /* x */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}, /* y */
    {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F, 0x00}, /* z */
    {0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02, 0x00}, /* { */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00}, /* | */
    {0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08, 0x00}, /* } */
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00, 0x00}, /* ~ */
};

/* Any other byte: a hollow box, as tall as a capital. */
static const uint8_t k_box[FONT_H] = {0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F, 0x00};

static int clamp_scale(int scale) {
    if (scale < 1) return 1;
    return scale > FONT_MAX_SCALE ? FONT_MAX_SCALE : scale;
}

/* ---- pixels ------------------------------------------------------------------------------------ */

/* Fills the rectangle (x, y, w, h) clipped to the image; c = 1 images get the mean of rgb.
 * Coordinates are long long so that offsets of large scales cannot overflow. */
static void fill_rect(drdc_image *img, long long x, long long y, long long w, long long h, const float rgb[3]) {
    long long x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    long long x1 = x + w > img->w ? img->w : x + w, y1 = y + h > img->h ? img->h : y + h;
    if (x0 >= x1 || y0 >= y1) return;
    const float gray = (rgb[0] + rgb[1] + rgb[2]) / 3.0f;
    for (long long yy = y0; yy < y1; yy++) {
        float *p = img->data + ((size_t)yy * img->w + (size_t)x0) * img->c;
        for (long long xx = x0; xx < x1; xx++, p += img->c) {
            if (img->c == 3) {
                p[0] = rgb[0];
                p[1] = rgb[1];
                p[2] = rgb[2];
            } else {
                p[0] = gray;
            }
        }
    }
}

static const float k_white[3] = {1.0f, 1.0f, 1.0f};
static const float k_black[3] = {0.0f, 0.0f, 0.0f};

/* Black ink over a light area (mean Rec. 709 luminance above 0.5), white over a dark or empty one. */
static const float *ink_for(const drdc_image *img, long long x, long long y, long long w, long long h) {
    long long x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    long long x1 = x + w > img->w ? img->w : x + w, y1 = y + h > img->h ? img->h : y + h;
    if (x0 >= x1 || y0 >= y1) return k_white;
    double sum = 0.0;
    for (long long yy = y0; yy < y1; yy++)
        for (long long xx = x0; xx < x1; xx++) {
            const float *p = img->data + ((size_t)yy * img->w + (size_t)xx) * img->c;
            sum += img->c == 3 ? 0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2] : p[0];
        }
    return sum / (double)((x1 - x0) * (y1 - y0)) > 0.5 ? k_black : k_white;
}

/* ---- text -------------------------------------------------------------------------------------- */

/* Draws the first n bytes of text (the one text routine; drdc_draw_text passes the whole string). */
static void draw_text_n(drdc_image *img, long long x, long long y, const char *text, size_t n, int scale,
                        const float rgb[3]) {
    if (!img || !img->data || !text || !rgb || (img->c != 1 && img->c != 3)) return;
    const long long s = clamp_scale(scale);
    for (size_t i = 0; i < n && text[i]; i++) {
        const long long gx = x + (long long)i * FONT_ADVANCE * s;
        if (gx >= img->w) break; /* this glyph and the rest are right of the image */
        if (gx + FONT_W * s <= 0) continue;
        const unsigned char ch = (unsigned char)text[i];
        const uint8_t *g = (ch >= 32 && ch <= 126) ? k_font[ch - 32] : k_box;
        for (int r = 0; r < FONT_H; r++)
            for (int col = 0; col < FONT_W; col++)
                if (g[r] >> (FONT_W - 1 - col) & 1) fill_rect(img, gx + col * s, y + r * s, s, s, rgb);
    }
}

void drdc_draw_text(drdc_image *img, int x, int y, const char *text, int scale, const float rgb[3]) {
    if (text) draw_text_n(img, x, y, text, strlen(text), scale, rgb);
}

int drdc_text_width(const char *text, int scale) {
    size_t n = text ? strlen(text) : 0;
    if (n == 0) return 0;
    long long w = ((long long)n * FONT_ADVANCE - 1) * clamp_scale(scale);
    return w > INT_MAX ? INT_MAX : (int)w;
}

int drdc_text_height(int scale) { return FONT_H * clamp_scale(scale); }

/* How many characters of text fit in `width` pixels at this scale (at most strlen). */
static size_t chars_that_fit(const char *text, long long width, int scale) {
    size_t n = text ? strlen(text) : 0;
    long long s = clamp_scale(scale);
    long long fit = width < 0 ? 0 : (width + s) / (FONT_ADVANCE * s);
    return (long long)n < fit ? n : (size_t)fit;
}

static long long width_of(size_t n, int scale) {
    return n ? ((long long)n * FONT_ADVANCE - 1) * clamp_scale(scale) : 0;
}

/* ---- outlines ---------------------------------------------------------------------------------- */

drdc_status drdc_draw_outline(drdc_image *img, const uint8_t *mask, int mw, int mh, const float rgb[3],
                              int thickness) {
    if (!img || !img->data || img->w <= 0 || img->h <= 0 || img->c != 3)
        return drdc_fail(DRDC_ERR_INPUT, "draw outline: the image must be a non-empty RGB image");
    if (!mask || mw <= 0 || mh <= 0)
        return drdc_fail(DRDC_ERR_INPUT, "draw outline: empty mask (%dx%d)", mw, mh);
    if (!rgb) return drdc_fail(DRDC_ERR_INPUT, "draw outline: NULL colour");
    if (thickness < 1 || thickness > img->w + img->h)
        return drdc_fail(DRDC_ERR_INPUT, "draw outline: thickness %d is outside [1, %d]", thickness,
                         img->w + img->h);
    drdc_status st = DRDC_OK;
    const int w = img->w, h = img->h;
    uint8_t *in = malloc((size_t)w * h);
    int *mx = malloc((size_t)w * sizeof *mx);
    if (!in || !mx) {
        st = drdc_fail(DRDC_ERR_NOMEM, "draw outline: cannot allocate a %dx%d mask", w, h);
        goto done;
    }
    /* nearest neighbour: pixel centre (x + 0.5) * mw / w, floored */
    for (int x = 0; x < w; x++) mx[x] = (int)(((2LL * x + 1) * mw) / (2LL * w));
    for (int y = 0; y < h; y++) {
        const uint8_t *mrow = mask + (size_t)(((2LL * y + 1) * mh) / (2LL * h)) * mw;
        for (int x = 0; x < w; x++) in[(size_t)y * w + x] = mrow[mx[x]] != 0;
    }
    const int off = -(thickness - 1) / 2;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *p = in + (size_t)y * w + x;
            if (!*p) continue;
            int edge = x == 0 || y == 0 || x == w - 1 || y == h - 1 || !p[-1] || !p[1] || !p[-w] || !p[w];
            if (edge) fill_rect(img, (long long)x + off, (long long)y + off, thickness, thickness, rgb);
        }
done:
    free(in);
    free(mx);
    return st;
}

/* ---- colour bar -------------------------------------------------------------------------------- */

int drdc_colorbar_text_scale(int h) { return h / 6 > 1 ? h / 6 : 1; }

int drdc_colorbar_margin(int h) {
    int s = drdc_colorbar_text_scale(h);
    return drdc_text_height(s) + s;
}

/* Draws a label of text (its box at lx, ly) in the ink that reads over what is there. */
static void draw_label(drdc_image *img, long long lx, long long ly, const char *text, int s) {
    long long lw = width_of(strlen(text), s);
    draw_text_n(img, lx, ly, text, strlen(text), s, ink_for(img, lx, ly, lw, drdc_text_height(s)));
}

drdc_status drdc_draw_colorbar(drdc_image *img, int x, int y, int w, int h, float lo, float hi, float threshold) {
    if (!img || !img->data || img->w <= 0 || img->h <= 0 || img->c != 3)
        return drdc_fail(DRDC_ERR_INPUT, "draw colour bar: the image must be a non-empty RGB image");
    if (w < 1 || h < 1) return drdc_fail(DRDC_ERR_INPUT, "draw colour bar: empty bar %dx%d", w, h);
    if (!isfinite(lo) || !isfinite(hi) || !(hi > lo))
        return drdc_fail(DRDC_ERR_INPUT, "draw colour bar: range [%g, %g] is not finite and increasing", lo, hi);
    const int s = drdc_colorbar_text_scale(h), th = drdc_text_height(s), gap = s;
    for (int i = 0; i < w; i++) {
        float col[3];
        drdc_colormap_turbo(w > 1 ? (float)i / (float)(w - 1) : 0.0f, col);
        fill_rect(img, (long long)x + i, y, 1, h, col);
    }
    char lo_s[32], hi_s[32];
    const float zero = 1e-4f * (hi - lo);   /* an end this close to 0 is 0 (a min-max map's -1.8e-07) */
    snprintf(lo_s, sizeof lo_s, "%.4g", fabsf(lo) < zero ? 0.0f : lo);
    snprintf(hi_s, sizeof hi_s, "%.4g", fabsf(hi) < zero ? 0.0f : hi);
    const long long below = (long long)y + h + gap;
    draw_label(img, x, below, lo_s, s);
    draw_label(img, (long long)x + w - width_of(strlen(hi_s), s), below, hi_s, s);
    if (isnan(threshold)) return DRDC_OK;

    /* threshold: position on the bar, clipped to its ends when outside [lo, hi] */
    double t = ((double)threshold - lo) / ((double)hi - lo);
    int side = 0;
    if (!(t >= 0.0)) {
        t = 0.0;
        side = -1;
    } else if (t > 1.0) {
        t = 1.0;
        side = 1;
    }
    const long long xm = x + llround(t * (w - 1));
    fill_rect(img, xm - 1, (long long)y - gap, 1, (long long)h + gap, k_black);
    fill_rect(img, xm + 1, (long long)y - gap, 1, (long long)h + gap, k_black);
    fill_rect(img, xm, (long long)y - gap, 1, (long long)h + gap, k_white);
    char label[48];
    snprintf(label, sizeof label, side < 0 ? "< thr %.4g" : side > 0 ? "thr %.4g >" : "thr %.4g", threshold);
    const long long lw = width_of(strlen(label), s);
    long long lx = side < 0 ? x : side > 0 ? (long long)x + w - lw : xm - lw / 2;
    if (lx + lw > (long long)x + w) lx = (long long)x + w - lw;
    if (lx < x) lx = x;
    draw_label(img, lx, (long long)y - gap - th, label, s);
    return DRDC_OK;
}

/* ---- panels ------------------------------------------------------------------------------------ */

static const float k_panel_bg[3] = {0.12f, 0.12f, 0.13f};
static const float k_caption_bg[3] = {0.22f, 0.22f, 0.24f};
static const float k_panel_text[3] = {0.95f, 0.95f, 0.95f};
static const float k_truth_rgb[3] = {1.0f, 0.0f, 1.0f};
static const float k_pred_rgb[3] = {1.0f, 1.0f, 1.0f};

int drdc_panel_text_scale(int height) { return height / 128 > 1 ? height / 128 : 1; }

/* Copies src (RGB) into dst (RGB) with its top-left corner at (x, y), clipped. */
static void blit(drdc_image *dst, const drdc_image *src, int x, int y) {
    for (int r = 0; r < src->h; r++) {
        long long yy = (long long)y + r;
        if (yy < 0 || yy >= dst->h) continue;
        for (int c = 0; c < src->w; c++) {
            long long xx = (long long)x + c;
            if (xx < 0 || xx >= dst->w) continue;
            memcpy(dst->data + ((size_t)yy * dst->w + (size_t)xx) * 3, src->data + ((size_t)r * src->w + c) * 3,
                   3 * sizeof(float));
        }
    }
}

static drdc_status check_column(const drdc_panel_column *col, int i) {
    const char *t = col->title ? col->title : "";
    const drdc_image *im = col->image;
    if (!im || !im->data || im->w <= 0 || im->h <= 0 || (im->c != 1 && im->c != 3))
        return drdc_fail(DRDC_ERR_INPUT, "panel column %d (\"%s\"): no image, or not RGB or a 1-channel map", i, t);
    if (im->c == 1 && (!isfinite(col->lo) || !isfinite(col->hi) || !(col->hi > col->lo)))
        return drdc_fail(DRDC_ERR_INPUT, "panel column %d (\"%s\"): map range [%g, %g] is not finite and increasing",
                         i, t, col->lo, col->hi);
    if ((col->truth || col->pred) && (col->mask_w <= 0 || col->mask_h <= 0))
        return drdc_fail(DRDC_ERR_INPUT, "panel column %d (\"%s\"): masks given with size %dx%d", i, t, col->mask_w,
                         col->mask_h);
    return DRDC_OK;
}

/* The column as it is shown: scaled to (w, height), a map coloured, its masks outlined. */
static drdc_status render_column(const drdc_panel_column *col, int w, int height, int s, drdc_image *shown) {
    drdc_status st = DRDC_OK;
    drdc_image scaled = {0};
    TRY(drdc_image_resize(col->image, w, height, &scaled));
    if (scaled.c == 1) {
        TRY(drdc_heatmap_colorize(&scaled, col->lo, col->hi, shown));
    } else {
        *shown = scaled;
        memset(&scaled, 0, sizeof scaled);
    }
    if (col->truth) TRY(drdc_draw_outline(shown, col->truth, col->mask_w, col->mask_h, k_truth_rgb, s));
    if (col->pred) TRY(drdc_draw_outline(shown, col->pred, col->mask_w, col->mask_h, k_pred_rgb, s));
done:
    drdc_image_free(&scaled);
    if (st) drdc_image_free(shown);
    return st;
}

drdc_status drdc_panel_render(drdc_image *out, const drdc_panel_column *cols, int n, int height,
                              const char *caption) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "panel: NULL output");
    memset(out, 0, sizeof *out);
    if (!cols || n < 1 || n > DRDC_PANEL_MAX_COLUMNS)
        return drdc_fail(DRDC_ERR_INPUT, "panel: %d columns (want 1 to %d)", cols ? n : 0, DRDC_PANEL_MAX_COLUMNS);
    if (height < 1 || height > DRDC_IMAGE_MAX_SIDE)
        return drdc_fail(DRDC_ERR_INPUT, "panel: height %d is outside [1, %d]", height, DRDC_IMAGE_MAX_SIDE);
    drdc_status st = DRDC_OK;
    int widths[DRDC_PANEL_MAX_COLUMNS];
    int any_map = 0, any_truth = 0, any_pred = 0;
    const int s = drdc_panel_text_scale(height), th = drdc_text_height(s), gap = 4 * s;
    long long total_w = gap;
    for (int i = 0; i < n; i++) {
        st = check_column(&cols[i], i);
        if (st) return st;
        long long cw = llround((double)cols[i].image->w * height / cols[i].image->h);
        if (cw > DRDC_IMAGE_MAX_SIDE)
            return drdc_fail(DRDC_ERR_INPUT, "panel column %d: %dx%d scaled to height %d is too wide", i,
                             cols[i].image->w, cols[i].image->h, height);
        widths[i] = cw < 1 ? 1 : (int)cw;
        total_w += widths[i] + gap;
        any_map |= cols[i].image->c == 1;
        any_truth |= cols[i].truth != NULL;
        any_pred |= cols[i].pred != NULL;
    }
    /* rows: gap, caption, gap, titles, s, images, [bar strip], gap */
    const int bar_h = 6 * s, bar_margin = drdc_colorbar_margin(bar_h);
    const int y_caption = gap, y_title = y_caption + th + gap, y_image = y_title + th + s;
    const int y_bar = y_image + height + bar_margin;
    const long long total_h =
        (long long)y_image + height + (any_map ? 2LL * bar_margin + bar_h : 0) + gap;
    if (total_w > DRDC_IMAGE_MAX_SIDE || total_h > DRDC_IMAGE_MAX_SIDE)
        return drdc_fail(DRDC_ERR_INPUT, "panel: %d columns at height %d make %lldx%lld pixels (limit %d per side)",
                         n, height, total_w, total_h, DRDC_IMAGE_MAX_SIDE);
    drdc_image shown = {0};
    TRY(drdc_image_alloc(out, (int)total_w, (int)total_h, 3));
    fill_rect(out, 0, 0, out->w, out->h, k_panel_bg);
    fill_rect(out, 0, 0, out->w, y_caption + th + gap / 2, k_caption_bg); /* sets the caption apart */

    /* legend of the mask colours at the right of the caption line, the caption left of it */
    long long legend_x = out->w - gap;
    if (any_pred) {
        legend_x -= width_of(strlen("prediction"), s);
        draw_text_n(out, legend_x, y_caption, "prediction", strlen("prediction"), s, k_pred_rgb);
        legend_x -= 2 * FONT_ADVANCE * s;
    }
    if (any_truth) {
        legend_x -= width_of(strlen("truth"), s);
        draw_text_n(out, legend_x, y_caption, "truth", strlen("truth"), s, k_truth_rgb);
        legend_x -= 2 * FONT_ADVANCE * s;
    }
    if (caption)
        draw_text_n(out, gap, y_caption, caption, chars_that_fit(caption, legend_x - gap, s), s, k_panel_text);

    long long x0 = gap;
    for (int i = 0; i < n; i++) {
        const drdc_panel_column *col = &cols[i];
        if (col->title) {
            size_t nt = chars_that_fit(col->title, widths[i], s);
            draw_text_n(out, x0 + (widths[i] - width_of(nt, s)) / 2, y_title, col->title, nt, s, k_panel_text);
        }
        TRY(render_column(col, widths[i], height, s, &shown));
        blit(out, &shown, (int)x0, y_image);
        drdc_image_free(&shown);
        if (col->image->c == 1) {   /* inset by a gap each side: the end labels of neighbours stay apart */
            const int inset = widths[i] > 4 * gap ? gap : 0;
            TRY(drdc_draw_colorbar(out, (int)x0 + inset, y_bar, widths[i] - 2 * inset, bar_h, col->lo, col->hi,
                                   col->threshold));
        }
        x0 += widths[i] + gap;
    }
done:
    drdc_image_free(&shown);
    if (st) {
        drdc_image_free(out);
        return drdc_error_context(st, "panel");
    }
    return DRDC_OK;
}

/* ---- small inputs ------------------------------------------------------------------------------ */

drdc_status drdc_image_upscale_min(const drdc_image *in, int min_side, drdc_image *out) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "upscale: NULL output");
    memset(out, 0, sizeof *out);
    if (!in || !in->data || in->w <= 0 || in->h <= 0 || (in->c != 1 && in->c != 3))
        return drdc_fail(DRDC_ERR_INPUT, "upscale: empty input image");
    const int shorter = in->w < in->h ? in->w : in->h;
    long long k = min_side > shorter ? ((long long)min_side + shorter - 1) / shorter : 1;
    if ((long long)in->w * k > DRDC_IMAGE_MAX_SIDE || (long long)in->h * k > DRDC_IMAGE_MAX_SIDE)
        return drdc_fail(DRDC_ERR_INPUT, "upscale: %dx%d enlarged %lld times to reach %d exceeds %d pixels per side",
                         in->w, in->h, k, min_side, DRDC_IMAGE_MAX_SIDE);
    drdc_status st = drdc_image_alloc(out, (int)(in->w * k), (int)(in->h * k), in->c);
    if (st) return drdc_error_context(st, "upscale");
    const size_t c = (size_t)in->c;
    for (int y = 0; y < out->h; y++) {
        const float *srow = in->data + (size_t)(y / k) * in->w * c;
        float *orow = out->data + (size_t)y * out->w * c;
        for (int x = 0; x < out->w; x++) memcpy(orow + x * c, srow + (size_t)(x / k) * c, c * sizeof(float));
    }
    return DRDC_OK;
}
