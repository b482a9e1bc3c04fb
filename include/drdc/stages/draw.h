/* draw.h: pictures a line engineer can read: text in an embedded 5x7 bitmap font, the outline of
 * a binary mask, a turbo colour bar with its threshold, panels that put the image, its maps and
 * their masks side by side under titles and a caption, and sharp enlargement of small inputs.
 * Colouring itself (the turbo map, colorize, overlay) lives in heatmap.h.
 *
 * Every drawing function clips at the image border: nothing is ever written outside the image.
 * Equations: none of DESIGN.md's (1)-(17); this only displays the maps of (2) and (14)-(17). */
#ifndef DRDC_DRAW_H
#define DRDC_DRAW_H

#include <stdint.h>
#include "drdc/core/error.h"
#include "drdc/formats/image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- text ------------------------------------------------------------------------------------
 * A glyph is 5x8 font pixels (capitals and digits 7 high, row 8 for the descenders of g j p q y),
 * a character advances 6 font pixels; every font pixel is a scale x scale block of image pixels
 * (scale < 1 counts as 1). Printable ASCII 32..126 is drawn; any other byte draws as a hollow box.
 * One line: '\n' is not special. */

/* Draws text with its top-left corner at (x, y) in colour rgb (c = 1 images get the mean of rgb).
 * Only the set pixels of the glyphs change, all inside the box (x, y, drdc_text_width,
 * drdc_text_height); pixels outside the image are skipped. NULL img, data or text: nothing. */
void drdc_draw_text(drdc_image *img, int x, int y, const char *text, int scale, const float rgb[3]);
/* The box text takes: width (6 * length - 1) * scale (0 for ""), height 8 * scale. */
int drdc_text_width(const char *text, int scale);
int drdc_text_height(int scale);

/* ---- outlines --------------------------------------------------------------------------------
 * Draws over img (c = 3) the boundary of a binary mask (mw x mh bytes, row-major, non-zero =
 * inside), scaled to the image's size by nearest neighbour (image pixel x samples mask column
 * floor((x + 0.5) * mw / w)). A pixel is on the boundary when it is inside and has a 4-neighbour
 * outside or beyond the image border. Each boundary pixel is painted as a thickness x thickness
 * square around it (offsets -(t-1)/2 .. t/2, clipped): thickness 1 is the boundary itself. Pixels
 * off the outline are left untouched. */
drdc_status drdc_draw_outline(drdc_image *img, const uint8_t *mask, int mw, int mh, const float rgb[3],
                              int thickness);

/* ---- colour bar ------------------------------------------------------------------------------
 * A horizontal turbo gradient filling the box (x, y, w, h): column i shows
 * turbo(i / (w - 1)), i.e. the value lo + (hi - lo) * i / (w - 1). Labels are drawn outside the
 * box, in text of scale drdc_colorbar_text_scale(h): lo and hi ("%.4g") under its left and right
 * ends, and, above the bar, "thr <value>" at the threshold's mark. The mark is a vertical line at
 * column x + round((threshold - lo) / (hi - lo) * (w - 1)), white with a black column on each
 * side, from the label gap above the bar down to the bar's bottom. A threshold below lo or above
 * hi (infinities included) is marked at that end, its label pointing out of the bar
 * ("< thr 0.1", "thr 5 >"); NaN: no mark and no label. Text is black over light backgrounds and
 * white over dark ones (the mean luminance where it goes). lo and hi must be finite, hi > lo;
 * img must be RGB. The bar and the labels are clipped at the image border. */
drdc_status drdc_draw_colorbar(drdc_image *img, int x, int y, int w, int h, float lo, float hi,
                               float threshold);
/* The text scale of a bar h pixels high: max(1, h / 6). */
int drdc_colorbar_text_scale(int h);
/* The rows the labels take above and below a bar h pixels high (each side): a text line and a
 * gap of one text-scale unit. */
int drdc_colorbar_margin(int h);

/* ---- panels ----------------------------------------------------------------------------------
 * One column of a panel. image is RGB (shown as it is) or c = 1 (a raw map, coloured with turbo
 * on [lo, hi], which must be finite with hi > lo, and given a colour bar with the threshold).
 * truth and pred are optional masks (NULL: none) of mask_w x mask_h bytes, non-zero = inside,
 * outlined on this column: ground truth in magenta, the prediction in white (the two colours
 * the turbo map never takes, so they read on maps and images alike). */
typedef struct drdc_panel_column {
    const char *title;          /* drawn above the column; NULL or "": an empty strip */
    const drdc_image *image;    /* RGB, or c = 1 raw map */
    float lo, hi;               /* colour range of a map (ignored for RGB) */
    float threshold;            /* marked on a map's colour bar; NAN: none */
    const uint8_t *truth;       /* optional ground-truth mask, outlined in magenta */
    const uint8_t *pred;        /* optional predicted mask, outlined in white */
    int mask_w, mask_h;         /* size of truth and pred */
} drdc_panel_column;

#define DRDC_PANEL_MAX_COLUMNS 64

/* Composes n columns (1 .. DRDC_PANEL_MAX_COLUMNS) side by side into a new RGB image out, on a
 * dark background. With s = drdc_panel_text_scale(height) (text 8 * s pixels high) and
 * gap = 4 * s, the rows top to bottom are: gap; the caption strip (8 * s, on a lighter band: the
 * caption, NULL: none, and a legend of the mask colours at its right when any column has a
 * mask); gap; the titles (8 * s, each centred over its column); s; the columns, scaled
 * bilinearly to `height` pixels high keeping their aspect (width max(1, round(w * height / h)));
 * when any column is a map, the colour-bar strip (2 * drdc_colorbar_margin(6 * s) + 6 * s: each
 * map's bar, 6 * s high and as wide as its column, under it); gap. Width:
 * gap + sum(column width + gap). Text wider than its place is cut to the characters that fit.
 * On failure out is left empty. */
drdc_status drdc_panel_render(drdc_image *out, const drdc_panel_column *cols, int n, int height,
                              const char *caption);
/* The text scale of a panel of that height: max(1, height / 128) (16-pixel text at 256). */
int drdc_panel_text_scale(int height);

/* ---- small inputs ----------------------------------------------------------------------------
 * When the shorter side of in is below min_side, out is in enlarged k = ceil(min_side / shorter)
 * times by pixel repetition (out(x, y) = in(x / k, y / k), so small pictures stay sharp);
 * otherwise (min_side <= shorter side) out is a copy. out is a new image (free it). */
drdc_status drdc_image_upscale_min(const drdc_image *in, int min_side, drdc_image *out);

#ifdef __cplusplus
}
#endif
#endif
