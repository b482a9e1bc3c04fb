/* heatmap.h: turning score maps into pictures: the fixed "turbo" colour map, colorize (raw values ->
 * RGB on a fixed range) and overlay (the coloured map over the image).
 *
 * Equations: none of DESIGN.md's (1)-(17); this only displays the maps of (2) and (14)-(17). */
#ifndef DRDC_HEATMAP_H
#define DRDC_HEATMAP_H

#include "drdc/core/error.h"
#include "drdc/formats/image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Heatmap colouring: value v maps to t = clamp((v - lo) / (hi - lo), 0, 1), then through the
 * fixed "turbo" colour map (Google's polynomial approximation; t = 0 dark blue, t = 1 dark
 * red). A heatmap is a c = 1 image of raw values; the result is RGB. */
void drdc_colormap_turbo(float t, float rgb[3]);
drdc_status drdc_heatmap_colorize(const drdc_image *heat, float lo, float hi, drdc_image *rgb_out);

/* Overlay: out = (1 - opacity * t) * image + opacity * t * colour(t), so normal regions keep the
 * image and anomalous ones show the colour. heat and image must have the same size. */
drdc_status drdc_heatmap_overlay(const drdc_image *image, const drdc_image *heat, float lo, float hi,
                                 float opacity, drdc_image *out);

#ifdef __cplusplus
}
#endif
#endif
