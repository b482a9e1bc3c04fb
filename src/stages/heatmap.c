/* heatmap.c: heatmap colouring for drdc's outputs: the "turbo" colour map (Google's polynomial
 * approximation, Mikhailov 2019, Apache-2.0), colorize (raw values -> RGB) and overlay (blend a
 * coloured heatmap onto the image, weighted by the normalised value). */
#include "drdc/stages/heatmap.h"

#include <math.h>
#include <string.h>

/* Degree-5 polynomial fit of the turbo map per channel, coefficients for 1, t, ..., t^5
 * (from the reference GLSL "TurboColormap"). t = 0 gives (0.136, 0.091, 0.107): dark blue;
 * t = 1 gives (0.566, 0.05, 0): dark red. Luminance (Rec. 709) rises monotonically up to
 * t = 0.52 (green-yellow) and falls again towards the red end: turbo is not monotone. */
static const double k_red[6] = {0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396,
                                59.28637943};
static const double k_green[6] = {0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857,
                                  2.82956604};
static const double k_blue[6] = {0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912,
                                 27.34824973};

static float clamp01(float v) {
    if (!(v > 0.0f)) return 0.0f; /* also NaN -> 0 */
    return v > 1.0f ? 1.0f : v;
}

static double poly5(const double k[6], double t) {
    return k[0] + t * (k[1] + t * (k[2] + t * (k[3] + t * (k[4] + t * k[5]))));
}

void drdc_colormap_turbo(float t, float rgb[3]) {
    double x = clamp01(t);
    rgb[0] = clamp01((float)poly5(k_red, x));
    rgb[1] = clamp01((float)poly5(k_green, x));
    rgb[2] = clamp01((float)poly5(k_blue, x));
}

/* Normalised value: (v - lo) / (hi - lo) clamped to [0,1]. When hi <= lo (a constant map whose
 * range collapsed), values above lo give 1 and the rest 0. NaN gives 0. */
static float normalise(float v, float lo, float hi) {
    if (!(hi > lo)) return v > lo ? 1.0f : 0.0f;
    return clamp01((v - lo) / (hi - lo));
}

static drdc_status check_heat(const char *what, const drdc_image *heat) {
    if (!heat || !heat->data || heat->w <= 0 || heat->h <= 0)
        return drdc_fail(DRDC_ERR_INPUT, "%s: empty heatmap", what);
    if (heat->c != 1)
        return drdc_fail(DRDC_ERR_INPUT, "%s: heatmap has %d channels, want 1", what, heat->c);
    return DRDC_OK;
}

drdc_status drdc_heatmap_colorize(const drdc_image *heat, float lo, float hi, drdc_image *rgb_out) {
    if (!rgb_out) return drdc_fail(DRDC_ERR_INPUT, "heatmap colorize: NULL output");
    memset(rgb_out, 0, sizeof *rgb_out);
    drdc_status st = check_heat("heatmap colorize", heat);
    if (st) return st;
    if (isnan(lo) || isnan(hi))
        return drdc_fail(DRDC_ERR_NUMERIC, "heatmap colorize: range [%g, %g] is NaN", lo, hi);
    st = drdc_image_alloc(rgb_out, heat->w, heat->h, 3);
    if (st) return drdc_error_context(st, "heatmap colorize");
    size_t n = (size_t)heat->w * heat->h;
    for (size_t i = 0; i < n; i++) drdc_colormap_turbo(normalise(heat->data[i], lo, hi), rgb_out->data + 3 * i);
    return DRDC_OK;
}

drdc_status drdc_heatmap_overlay(const drdc_image *image, const drdc_image *heat, float lo, float hi,
                                 float opacity, drdc_image *out) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "heatmap overlay: NULL output");
    memset(out, 0, sizeof *out);
    drdc_status st = check_heat("heatmap overlay", heat);
    if (st) return st;
    if (!image || !image->data || (image->c != 1 && image->c != 3))
        return drdc_fail(DRDC_ERR_INPUT, "heatmap overlay: image must be a 1- or 3-channel image");
    if (image->w != heat->w || image->h != heat->h)
        return drdc_fail(DRDC_ERR_INPUT, "heatmap overlay: image is %dx%d but heatmap is %dx%d",
                         image->w, image->h, heat->w, heat->h);
    if (!(opacity >= 0.0f && opacity <= 1.0f))
        return drdc_fail(DRDC_ERR_INPUT, "heatmap overlay: opacity %g is outside [0, 1]", opacity);
    if (isnan(lo) || isnan(hi))
        return drdc_fail(DRDC_ERR_NUMERIC, "heatmap overlay: range [%g, %g] is NaN", lo, hi);
    st = drdc_image_alloc(out, image->w, image->h, 3);
    if (st) return drdc_error_context(st, "heatmap overlay");
    size_t n = (size_t)image->w * image->h;
    for (size_t i = 0; i < n; i++) {
        float t = normalise(heat->data[i], lo, hi);
        float col[3];
        drdc_colormap_turbo(t, col);
        float a = opacity * t;
        for (int k = 0; k < 3; k++) {
            float px = image->c == 3 ? image->data[3 * i + k] : image->data[i];
            out->data[3 * i + k] = (1.0f - a) * px + a * col[k];
        }
    }
    return DRDC_OK;
}
