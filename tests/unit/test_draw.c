/* test_draw.c: the drawing of stages/draw.h: text (its box, glyph pixel counts, the box for unknown
 * bytes, clipping at the border), mask outlines (exact boundary pixels, nearest-neighbour mask
 * scaling, thickness, untouched interiors), the colour bar (gradient ends, where the threshold
 * mark lands, out-of-range and NaN thresholds), panels (size from the documented layout, title
 * strips, errors) and sharp integer upscaling. Writes one example panel (panel.png in the test's
 * tmp dir) to look at. Expected counts come from the glyph drawings and geometry, not the code. */
#define _POSIX_C_SOURCE 200809L
#include "testlib.h"
#include "drdc/formats/image.h"
#include "drdc/stages/draw.h"
#include "drdc/stages/heatmap.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const float WHITE[3] = {1.0f, 1.0f, 1.0f};
static const float RED[3] = {1.0f, 0.0f, 0.0f};

/* An RGB image filled with one grey value. */
static drdc_image filled(int w, int h, int c, float v) {
    drdc_image img = {0};
    CHECK_OK(drdc_image_alloc(&img, w, h, c));
    if (img.data)
        for (size_t i = 0; i < (size_t)w * h * c; i++) img.data[i] = v;
    return img;
}

static const float *px(const drdc_image *img, int x, int y) { return img->data + ((size_t)y * img->w + x) * img->c; }

static int same_px(const drdc_image *a, const drdc_image *b, int x, int y) {
    return memcmp(px(a, x, y), px(b, x, y), (size_t)a->c * sizeof(float)) == 0;
}

static int is_rgb(const float *p, float r, float g, float b) { return p[0] == r && p[1] == g && p[2] == b; }

/* Pixels lit by text drawn in white at (0, 0) on a black image. */
static int lit_count(const char *text, int scale) {
    drdc_image img = filled(64, 32, 3, 0.0f);
    int n = 0;
    if (!img.data) return -1;
    drdc_draw_text(&img, 0, 0, text, scale, WHITE);
    for (int y = 0; y < img.h; y++)
        for (int x = 0; x < img.w; x++) n += px(&img, x, y)[0] != 0.0f;
    drdc_image_free(&img);
    return n;
}

/* ---- text -------------------------------------------------------------------------------------- */

static void test_text_changes_exactly_its_box(void) {
    CHECK(drdc_text_width("Wg", 2) == (2 * 6 - 1) * 2);
    CHECK(drdc_text_height(2) == 16);
    CHECK(drdc_text_width("", 3) == 0 && drdc_text_width(NULL, 3) == 0);
    drdc_image img = filled(60, 30, 3, 0.25f), ref = filled(60, 30, 3, 0.25f);
    if (!img.data || !ref.data) goto done;
    /* "W" lights columns 0 and 4 of the first glyph; "g" the descender row and column 4 of the last */
    const int x0 = 7, y0 = 5, bw = drdc_text_width("Wg", 2), bh = drdc_text_height(2);
    drdc_draw_text(&img, x0, y0, "Wg", 2, RED);
    int minx = INT_MAX, miny = INT_MAX, maxx = -1, maxy = -1, outside = 0;
    for (int y = 0; y < img.h; y++)
        for (int x = 0; x < img.w; x++) {
            if (same_px(&img, &ref, x, y)) continue;
            CHECK(is_rgb(px(&img, x, y), 1.0f, 0.0f, 0.0f));
            if (x < x0 || x >= x0 + bw || y < y0 || y >= y0 + bh) outside++;
            minx = x < minx ? x : minx;
            maxx = x > maxx ? x : maxx;
            miny = y < miny ? y : miny;
            maxy = y > maxy ? y : maxy;
        }
    CHECK(outside == 0);
    /* the changed pixels span the whole box, no more */
    CHECK(minx == x0 && maxx == x0 + bw - 1);
    CHECK(miny == y0 && maxy == y0 + bh - 1);
done:
    drdc_image_free(&img);
    drdc_image_free(&ref);
}

static void test_text_glyphs_light_their_pixels(void) {
    /* counted from the drawings: I = 3 + 5 + 3, W = 3 * 2 + 3 * 3 + 2 */
    CHECK(lit_count("I", 1) == 11);
    CHECK(lit_count("W", 1) == 17);
    CHECK(lit_count("I", 1) != lit_count("W", 1));
    CHECK(lit_count("W", 2) == 17 * 4);   /* each font pixel a 2x2 block */
    CHECK(lit_count("IW", 1) == 11 + 17); /* glyphs do not overlap */
    CHECK(lit_count(" ", 3) == 0);
    /* bytes outside 32..126 draw a hollow 5x7 box: 5 + 5 + 2 * 5 */
    CHECK(lit_count("\x01", 1) == 20);
    CHECK(lit_count("\xe9", 1) == 20);
    CHECK(lit_count("\x01", 1) != lit_count("?", 1));
}

static void test_text_clipped_at_border(void) {
    /* the image's pixels sit inside a larger buffer whose guard zones must stay untouched */
    enum { W = 12, H = 10, GUARD = 4096 };
    for (int c = 1; c <= 3; c += 2) {
        size_t n = (size_t)W * H * c;
        float *buf = malloc((n + 2 * GUARD) * sizeof(float));
        CHECK(buf != NULL);
        if (!buf) return;
        for (size_t i = 0; i < n + 2 * GUARD; i++) buf[i] = 0.5f;
        drdc_image img = {W, H, c, buf + GUARD};
        const int xs[] = {-7, -3, 8, 11, 12, -40, INT_MAX - 3, INT_MIN + 2};
        const int ys[] = {-5, 6, 9, 10, -20, INT_MAX - 1, INT_MIN};
        for (size_t i = 0; i < sizeof xs / sizeof *xs; i++)
            for (size_t j = 0; j < sizeof ys / sizeof *ys; j++) {
                drdc_draw_text(&img, xs[i], ys[j], "Wg|_#@", 1, WHITE);
                drdc_draw_text(&img, xs[i], ys[j], "Wg", 3, WHITE);
                drdc_draw_text(&img, xs[i], ys[j], "M", 1000000, WHITE);
            }
        int guard_ok = 1, inside_changed = 0;
        for (size_t i = 0; i < GUARD; i++) guard_ok &= buf[i] == 0.5f && buf[GUARD + n + i] == 0.5f;
        for (size_t i = 0; i < n; i++) inside_changed += img.data[i] == 1.0f;
        CHECK(guard_ok);
        CHECK(inside_changed > 0); /* the partly visible text did draw */
        free(buf);
    }
}

/* ---- outlines ---------------------------------------------------------------------------------- */

/* Counts the pixels that differ from ref; CHECKs each changed one is red and on the ring
 * [lo, hi]^2 minus (lo + t, hi - t)^2, i.e. within t - 1 of the boundary of the square. */
static int changed_on_ring(const drdc_image *img, const drdc_image *ref, int lo, int hi, int t, int *off_ring) {
    int n = 0;
    *off_ring = 0;
    for (int y = 0; y < img->h; y++)
        for (int x = 0; x < img->w; x++) {
            int in_outer = x >= lo && x <= hi && y >= lo && y <= hi;
            int in_inner = x >= lo + t && x <= hi - t && y >= lo + t && y <= hi - t;
            if (same_px(img, ref, x, y)) {
                if (in_outer && !in_inner) (*off_ring)++; /* a ring pixel that was not drawn */
                continue;
            }
            n++;
            CHECK(is_rgb(px(img, x, y), 1.0f, 0.0f, 0.0f));
            if (!in_outer || in_inner) (*off_ring)++;
        }
    return n;
}

static void test_outline_of_square_is_its_boundary(void) {
    uint8_t mask[30 * 30] = {0};
    for (int y = 10; y < 20; y++)
        for (int x = 10; x < 20; x++) mask[y * 30 + x] = 255;
    drdc_image img = filled(30, 30, 3, 0.5f), ref = filled(30, 30, 3, 0.5f);
    if (!img.data || !ref.data) goto done;
    CHECK_OK(drdc_draw_outline(&img, mask, 30, 30, RED, 1));
    int off = 0;
    CHECK(changed_on_ring(&img, &ref, 10, 19, 1, &off) == 36); /* 10 * 10 - 8 * 8 */
    CHECK(off == 0);
done:
    drdc_image_free(&img);
    drdc_image_free(&ref);
}

static void test_outline_scales_mask_by_nearest_neighbour(void) {
    /* a 3x3 mask with its centre set covers pixels 10..19 of a 30x30 image */
    const uint8_t mask[9] = {0, 0, 0, 0, 1, 0, 0, 0, 0};
    drdc_image img = filled(30, 30, 3, 0.5f), ref = filled(30, 30, 3, 0.5f);
    if (!img.data || !ref.data) goto done;
    CHECK_OK(drdc_draw_outline(&img, mask, 3, 3, RED, 1));
    int off = 0;
    CHECK(changed_on_ring(&img, &ref, 10, 19, 1, &off) == 36);
    CHECK(off == 0);
    /* thickness 3: each boundary pixel a 3x3 square around it: the ring 9..20 minus 12..17 */
    drdc_image_free(&img);
    img = filled(30, 30, 3, 0.5f);
    if (!img.data) goto done;
    CHECK_OK(drdc_draw_outline(&img, mask, 3, 3, RED, 3));
    CHECK(changed_on_ring(&img, &ref, 9, 20, 3, &off) == 12 * 12 - 6 * 6);
    CHECK(off == 0);
done:
    drdc_image_free(&img);
    drdc_image_free(&ref);
}

static void test_outline_of_filled_mask_leaves_interior(void) {
    uint8_t mask[7 * 5];
    memset(mask, 1, sizeof mask);
    drdc_image img = filled(30, 30, 3, 0.5f), ref = filled(30, 30, 3, 0.5f);
    if (!img.data || !ref.data) goto done;
    CHECK_OK(drdc_draw_outline(&img, mask, 7, 5, RED, 1));
    int off = 0;
    CHECK(changed_on_ring(&img, &ref, 0, 29, 1, &off) == 4 * 29); /* the image border */
    CHECK(off == 0);
    /* an empty mask draws nothing */
    memset(mask, 0, sizeof mask);
    drdc_image_free(&img);
    img = filled(30, 30, 3, 0.5f);
    if (!img.data) goto done;
    CHECK_OK(drdc_draw_outline(&img, mask, 7, 5, RED, 2));
    CHECK(memcmp(img.data, ref.data, 30 * 30 * 3 * sizeof(float)) == 0);
    /* errors name what is wrong */
    drdc_image gray = filled(4, 4, 1, 0.0f);
    CHECK_ERR(drdc_draw_outline(&gray, mask, 7, 5, RED, 1), DRDC_ERR_INPUT, "RGB");
    CHECK_ERR(drdc_draw_outline(&img, mask, 0, 5, RED, 1), DRDC_ERR_INPUT, "empty mask");
    CHECK_ERR(drdc_draw_outline(&img, mask, 7, 5, RED, 0), DRDC_ERR_INPUT, "thickness");
    drdc_image_free(&gray);
done:
    drdc_image_free(&img);
    drdc_image_free(&ref);
}

/* ---- colour bar -------------------------------------------------------------------------------- */

/* The columns of bar row y in [x, x + w) that are pure white or pure black (the mark). */
static int mark_columns(const drdc_image *img, int x, int w, int y, int *white_x) {
    int n = 0;
    *white_x = -1;
    for (int i = x; i < x + w; i++) {
        const float *p = px(img, i, y);
        if (is_rgb(p, 1, 1, 1)) *white_x = i;
        n += is_rgb(p, 1, 1, 1) || is_rgb(p, 0, 0, 0);
    }
    return n;
}

static void test_colorbar_threshold_mark_position(void) {
    const int bx = 20, by = 25, bw = 101, bh = 12;
    const float lo = 0.0f, hi = 2.0f;
    const float thr[] = {0.5f, 1.5f, 0.0f, 2.0f, 7.0f, -INFINITY, 0.9f};
    for (size_t k = 0; k < sizeof thr / sizeof *thr; k++) {
        drdc_image img = filled(140, 60, 3, 0.5f);
        if (!img.data) return;
        CHECK_OK(drdc_draw_colorbar(&img, bx, by, bw, bh, lo, hi, thr[k]));
        float t = (thr[k] - lo) / (hi - lo);
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        int want = bx + (int)lroundf(t * (bw - 1)), got = -1;
        int n = mark_columns(&img, bx, bw, by + bh / 2, &got);
        CHECK(got == want);
        CHECK(n == (want == bx || want == bx + bw - 1 ? 2 : 3)); /* white with a black column each side */
        if (got != want) fprintf(stderr, "  threshold %g: mark at x %d, want %d\n", thr[k], got, want);
        drdc_image_free(&img);
    }
}

static void test_colorbar_gradient_labels_and_nan(void) {
    const int bx = 20, by = 25, bw = 101, bh = 12;
    drdc_image img = filled(140, 60, 3, 0.5f), ref = filled(140, 60, 3, 0.5f);
    if (!img.data || !ref.data) goto done;
    CHECK_OK(drdc_draw_colorbar(&img, bx, by, bw, bh, -1.0f, 3.0f, NAN));
    float c0[3], c1[3];
    drdc_colormap_turbo(0.0f, c0);
    drdc_colormap_turbo(1.0f, c1);
    CHECK(is_rgb(px(&img, bx, by), c0[0], c0[1], c0[2]));
    CHECK(is_rgb(px(&img, bx + bw - 1, by + bh - 1), c1[0], c1[1], c1[2]));
    int wx;
    CHECK(mark_columns(&img, bx, bw, by + bh / 2, &wx) == 0); /* NaN: no mark */
    /* lo and hi are printed under the ends; nothing above the bar without a threshold */
    const int m = drdc_colorbar_margin(bh);
    int below_left = 0, below_right = 0, above = 0, beside = 0;
    for (int y = 0; y < img.h; y++)
        for (int x = 0; x < img.w; x++) {
            if (same_px(&img, &ref, x, y)) continue;
            if (y >= by + bh && y < by + bh + m) {
                below_left += x < bx + bw / 2;
                below_right += x >= bx + bw / 2;
            }
            above += y < by;
            beside += x < bx || x >= bx + bw || y >= by + bh + m;
        }
    CHECK(below_left > 0 && below_right > 0);
    CHECK(above == 0 && beside == 0);
    /* with a threshold its label goes above the bar */
    CHECK_OK(drdc_draw_colorbar(&img, bx, by, bw, bh, -1.0f, 3.0f, 1.0f));
    for (int y = by - m; y < by; y++)
        for (int x = bx; x < bx + bw; x++) above += !same_px(&img, &ref, x, y);
    CHECK(above > 0);
    CHECK_ERR(drdc_draw_colorbar(&img, bx, by, bw, bh, 1.0f, 1.0f, 1.0f), DRDC_ERR_INPUT, "range");
    CHECK_ERR(drdc_draw_colorbar(&img, bx, by, bw, bh, NAN, 1.0f, 1.0f), DRDC_ERR_INPUT, "range");
done:
    drdc_image_free(&img);
    drdc_image_free(&ref);
}

/* an end within 1e-4 of the range of zero is labelled 0: the bar of [-1.8e-7, 6.72] is the bar of [0, 6.72] */
static void test_colorbar_near_zero_end_is_zero(void) {
    drdc_image a = filled(140, 60, 3, 0.5f), b = filled(140, 60, 3, 0.5f), c = filled(140, 60, 3, 0.5f);
    if (!a.data || !b.data || !c.data) goto done;
    CHECK_OK(drdc_draw_colorbar(&a, 20, 25, 101, 12, -1.804e-7f, 6.72f, NAN));
    CHECK_OK(drdc_draw_colorbar(&b, 20, 25, 101, 12, 0.0f, 6.72f, NAN));
    CHECK_OK(drdc_draw_colorbar(&c, 20, 25, 101, 12, -0.01f, 6.72f, NAN));   /* a real negative end stays */
    int differ_ab = 0, differ_bc = 0;
    for (int y = 0; y < a.h; y++)
        for (int x = 0; x < a.w; x++) differ_ab += !same_px(&a, &b, x, y), differ_bc += !same_px(&b, &c, x, y);
    CHECK(differ_ab == 0);
    CHECK(differ_bc > 0);
done:
    drdc_image_free(&a);
    drdc_image_free(&b);
    drdc_image_free(&c);
}

/* ---- panels ------------------------------------------------------------------------------------ */

static void test_panel_size_and_title_strips(void) {
    drdc_image a = filled(64, 48, 3, 0.6f), map = filled(32, 32, 1, 0.0f), b = filled(16, 32, 3, 0.3f);
    drdc_image p1 = {0}, p2 = {0};
    if (!a.data || !map.data || !b.data) goto done;
    for (int i = 0; i < 32 * 32; i++) map.data[i] = i % 32 < 16 ? 0.0f : 1.0f; /* left half 0, right half 1 */
    drdc_panel_column cols[3] = {
        {"image", &a, 0, 0, NAN, NULL, NULL, 0, 0},
        {"score map", &map, 0.0f, 1.0f, 0.4f, NULL, NULL, 0, 0},
        {"crop", &b, 0, 0, NAN, NULL, NULL, 0, 0},
    };
    const int height = 64, s = 1, gap = 4 * s;
    CHECK(drdc_panel_text_scale(height) == s);
    CHECK(drdc_panel_text_scale(256) * 8 >= 8 && drdc_text_height(drdc_panel_text_scale(256)) >= 8);
    CHECK_OK(drdc_panel_render(&p1, cols, 3, height, "score 1.234, threshold 0.987: ANOMALOUS"));
    /* widths round(64 * 64 / 48) = 85, 64, 32 */
    int want_w = gap + (85 + gap) + (64 + gap) + (32 + gap);
    int want_h = gap + 8 * s + gap + 8 * s + s + height + (2 * drdc_colorbar_margin(6 * s) + 6 * s) + gap;
    CHECK(p1.w == want_w && p1.h == want_h && p1.c == 3);
    for (int i = 0; i < 3; i++) cols[i].title = (i == 1) ? "" : NULL;
    CHECK_OK(drdc_panel_render(&p2, cols, 3, height, "score 1.234, threshold 0.987: ANOMALOUS"));
    CHECK(p2.w == p1.w && p2.h == p1.h);
    if (!p1.data || !p2.data || p1.w != p2.w || p1.h != p2.h) goto done;
    /* the title strip differs over every column; the caption and the images are the same */
    const int y_title = gap + 8 * s + gap, y_image = y_title + 8 * s + s;
    int x0 = gap;
    const int widths[3] = {85, 64, 32};
    for (int i = 0; i < 3; i++) {
        int diff = 0;
        for (int y = y_title; y < y_title + 8 * s; y++)
            for (int x = x0; x < x0 + widths[i]; x++) diff += !same_px(&p1, &p2, x, y);
        CHECK(diff > 0);
        x0 += widths[i] + gap;
    }
    size_t row = (size_t)p1.w * 3;
    CHECK(memcmp(p1.data, p2.data, (size_t)y_title * row * sizeof(float)) == 0);
    CHECK(memcmp(p1.data + y_image * row, p2.data + y_image * row, (size_t)(p1.h - y_image) * row * sizeof(float)) == 0);
    /* the first column shows the image itself, the map column its values in turbo colours */
    CHECK_NEAR(px(&p1, gap + 40, y_image + 30)[1], 0.6, 1e-5);
    float c0[3], c1[3];
    drdc_colormap_turbo(0.0f, c0);
    drdc_colormap_turbo(1.0f, c1);
    for (int k = 0; k < 3; k++) {
        CHECK_NEAR(px(&p1, gap + 85 + gap + 5, y_image + 30)[k], c0[k], 1e-5);
        CHECK_NEAR(px(&p1, gap + 85 + gap + 58, y_image + 30)[k], c1[k], 1e-5);
    }
done:
    drdc_image_free(&a);
    drdc_image_free(&map);
    drdc_image_free(&b);
    drdc_image_free(&p1);
    drdc_image_free(&p2);
}

static void test_panel_errors(void) {
    drdc_image map = filled(8, 8, 1, 0.5f), out = {0};
    if (!map.data) return;
    drdc_panel_column cols[2] = {
        {"ok", &map, 0.0f, 1.0f, NAN, NULL, NULL, 0, 0},
        {"flat", &map, 1.0f, 1.0f, NAN, NULL, NULL, 0, 0},
    };
    CHECK_ERR(drdc_panel_render(&out, cols, 2, 64, NULL), DRDC_ERR_INPUT, "column 1 (\"flat\")");
    CHECK(out.data == NULL && out.w == 0);
    CHECK_ERR(drdc_panel_render(&out, cols, 0, 64, NULL), DRDC_ERR_INPUT, "columns");
    CHECK_ERR(drdc_panel_render(&out, cols, 1, 0, NULL), DRDC_ERR_INPUT, "height");
    const uint8_t m[4] = {1, 0, 0, 1};
    cols[1] = (drdc_panel_column){"masked", &map, 0.0f, 1.0f, NAN, m, NULL, 0, 2};
    CHECK_ERR(drdc_panel_render(&out, cols, 2, 64, NULL), DRDC_ERR_INPUT, "masks");
    drdc_image_free(&map);
}

/* The example panel to look at: a textured part with a dark scratch, its anomaly map, the map over
 * the image, ground truth and prediction outlined. */
static void test_panel_example_png(void) {
    enum { W = 96, H = 96 };
    drdc_image part = filled(W, H, 3, 0.0f), map = filled(W / 4, H / 4, 1, 0.0f), over = {0}, out = {0};
    uint8_t truth[W * H], pred[W * H];
    if (!part.data || !map.data) goto done;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float v = 0.55f + 0.08f * sinf(x * 0.7f) * cosf(y * 0.5f);
            int scratch = abs((x - 30) - (y - 40) / 2) <= 1 && y > 30 && y < 70;
            float *p = part.data + ((size_t)y * W + x) * 3;
            p[0] = scratch ? 0.15f : v;
            p[1] = scratch ? 0.12f : v * 0.95f;
            p[2] = scratch ? 0.10f : v * 0.85f;
            truth[y * W + x] = (uint8_t)(abs((x - 30) - (y - 40) / 2) <= 3 && y > 28 && y < 72);
        }
    for (int y = 0; y < H / 4; y++)
        for (int x = 0; x < W / 4; x++) {
            float dx = x * 4 + 2 - 35.0f, dy = y * 4 + 2 - 50.0f;
            map.data[y * (W / 4) + x] = 0.2f + 1.6f * expf(-(dx * dx / 60.0f + dy * dy / 300.0f));
        }
    /* the prediction: the full-resolution map above the threshold */
    drdc_image map_full = {0};
    CHECK_OK(drdc_image_resize(&map, W, H, &map_full));
    if (map_full.data) {
        for (int i = 0; i < W * H; i++) pred[i] = map_full.data[i] > 0.987f;
        CHECK_OK(drdc_heatmap_overlay(&part, &map_full, 0.2f, 1.8f, 0.6f, &over));
    }
    drdc_image_free(&map_full);
    if (!over.data) goto done;
    drdc_panel_column cols[3] = {
        {"image + truth", &part, 0, 0, NAN, truth, NULL, W, H},
        {"anomaly map", &map, 0.2f, 1.8f, 0.987f, NULL, pred, W, H},
        {"overlay", &over, 0, 0, NAN, truth, pred, W, H},
    };
    CHECK_OK(drdc_panel_render(&out, cols, 3, 256, "score 1.234, threshold 0.987: ANOMALOUS"));
    CHECK(out.h > 256 && out.w > 3 * 256);
    if (out.data) {
        char path[1024];
        snprintf(path, sizeof path, "%s/panel.png", test_tmpdir("draw_panel"));
        CHECK_OK(drdc_image_write_png(path, &out));
        printf("example panel: %s\n", path);
    }
done:
    drdc_image_free(&part);
    drdc_image_free(&map);
    drdc_image_free(&over);
    drdc_image_free(&out);
}

/* ---- small inputs ------------------------------------------------------------------------------ */

static void test_upscale_integer_repeats(void) {
    drdc_image in = {0}, out = {0};
    CHECK_OK(drdc_image_alloc(&in, 3, 2, 3));
    if (!in.data) return;
    for (int i = 0; i < 3 * 2 * 3; i++) in.data[i] = (float)i / 17.0f;
    /* shorter side 2 below 7: k = ceil(7 / 2) = 4 */
    CHECK_OK(drdc_image_upscale_min(&in, 7, &out));
    CHECK(out.w == 12 && out.h == 8 && out.c == 3);
    if (out.data && out.w == 12 && out.h == 8)
        for (int y = 0; y < out.h; y++)
            for (int x = 0; x < out.w; x++) CHECK(memcmp(px(&out, x, y), px(&in, x / 4, y / 4), 3 * sizeof(float)) == 0);
    drdc_image_free(&out);
    /* an exact multiple: k = 3 */
    CHECK_OK(drdc_image_upscale_min(&in, 6, &out));
    CHECK(out.w == 9 && out.h == 6);
    drdc_image_free(&out);
    /* large enough already: a copy of its own */
    CHECK_OK(drdc_image_upscale_min(&in, 2, &out));
    CHECK(out.w == 3 && out.h == 2 && out.c == 3 && out.data != in.data);
    if (out.data) CHECK(memcmp(out.data, in.data, 3 * 2 * 3 * sizeof(float)) == 0);
    drdc_image_free(&out);
    /* one channel */
    drdc_image g = filled(1, 5, 1, 0.25f);
    if (g.data) g.data[4] = 0.75f;
    CHECK_OK(drdc_image_upscale_min(&g, 4, &out));
    CHECK(out.w == 4 && out.h == 20 && out.c == 1);
    if (out.data && out.h == 20) CHECK(out.data[16 * 4 + 3] == 0.75f && out.data[15 * 4] == 0.25f);
    drdc_image_free(&out);
    CHECK_ERR(drdc_image_upscale_min(&in, 1 << 20, &out), DRDC_ERR_INPUT, "exceeds");
    CHECK(out.data == NULL);
    drdc_image_free(&g);
    drdc_image_free(&in);
}

int main(void) {
    RUN(test_text_changes_exactly_its_box);
    RUN(test_text_glyphs_light_their_pixels);
    RUN(test_text_clipped_at_border);
    RUN(test_outline_of_square_is_its_boundary);
    RUN(test_outline_scales_mask_by_nearest_neighbour);
    RUN(test_outline_of_filled_mask_leaves_interior);
    RUN(test_colorbar_threshold_mark_position);
    RUN(test_colorbar_gradient_labels_and_nan);
    RUN(test_colorbar_near_zero_end_is_zero);
    RUN(test_panel_size_and_title_strips);
    RUN(test_panel_errors);
    RUN(test_panel_example_png);
    RUN(test_upscale_integer_repeats);
    return test_summary();
}
