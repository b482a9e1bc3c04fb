/* synth.c: the synthetic inspection dataset behind `drdc synth`, the demo and the tests.
 *
 * Each image is a scene: a foreground layer (texture or object colours), an object coverage
 * (alpha, antialiased; 1 everywhere for textures), a background layer, a lighting field and a
 * sensor-noise field. The image is (alpha*fg + (1-alpha)*bg) * light + noise, quantised to 8 bits.
 * A defect edits fg or alpha only and is composited with the same lighting and noise, so the
 * mask is computed by comparing against the normal counterpart (see synth.h). Two RNG streams per
 * image (scene, defect) make the normal counterpart reproducible. */
#define _POSIX_C_SOURCE 200809L
#include "drdc/data/synth.h"
#include "drdc/core/fsutil.h"
#include "drdc/core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#define PI_F ((float)M_PI)

/* ---- random numbers (drdc_splitmix64 streams) ---------------------------------------------- */

static float rng_uniform(uint64_t *r) { return (float)(drdc_splitmix64(r) >> 40) * (1.0f / 16777216.0f); }

static float rng_range(uint64_t *r, float a, float b) { return a + (b - a) * rng_uniform(r); }

static int rng_int(uint64_t *r, int n) { return (int)((drdc_splitmix64(r) >> 33) % (uint64_t)n); }

static float rng_normal(uint64_t *r) {
    float u1 = ((float)(drdc_splitmix64(r) >> 40) + 0.5f) * (1.0f / 16777216.0f);
    float u2 = rng_uniform(r);
    return sqrtf(-2.0f * logf(u1)) * cosf(2.0f * PI_F * u2);
}

/* ---- value noise ---------------------------------------------------------------------------- */

static float lattice(uint64_t seed, int x, int y) {
    uint64_t h = drdc_mix64(seed ^ ((uint64_t)(uint32_t)x * 0x9E3779B97F4A7C15ULL) ^
                            ((uint64_t)(uint32_t)y * 0xC2B2AE3D27D4EB4FULL));
    return (float)(h >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
}

static float vnoise(uint64_t seed, float x, float y) {
    float fx = floorf(x), fy = floorf(y);
    int ix = (int)fx, iy = (int)fy;
    float tx = x - fx, ty = y - fy;
    tx = tx * tx * (3.0f - 2.0f * tx);
    ty = ty * ty * (3.0f - 2.0f * ty);
    float a = lattice(seed, ix, iy), b = lattice(seed, ix + 1, iy);
    float c = lattice(seed, ix, iy + 1), d = lattice(seed, ix + 1, iy + 1);
    return (a + (b - a) * tx) + ((c + (d - c) * tx) - (a + (b - a) * tx)) * ty;
}

/* Three octaves, roughly in [-1, 1]. */
static float fbm(uint64_t seed, float x, float y) {
    return (vnoise(seed, x, y) + 0.5f * vnoise(seed + 1, 2.0f * x, 2.0f * y) +
            0.25f * vnoise(seed + 2, 4.0f * x, 4.0f * y)) /
           1.75f;
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* ---- categories and defects ----------------------------------------------------------------- */

typedef enum { D_SCRATCH, D_CRACK, D_HOLE, D_STAIN, D_MISSING, D_COLOR } defect_kind;
static const char *const DEFECT_NAMES[] = {"scratch", "crack", "hole", "stain", "missing_piece", "color"};

enum { CAT_WEAVE, CAT_GRAIN, CAT_DISC, CAT_PLATE };
typedef struct {
    const char *name;
    int n_defects;
    defect_kind defects[4];
} category_info;
static const category_info CATEGORIES[DRDC_SYNTH_MAX_CATEGORIES] = {
    {"weave", 4, {D_HOLE, D_STAIN, D_COLOR, D_SCRATCH}},
    {"grain", 4, {D_SCRATCH, D_CRACK, D_STAIN, D_HOLE}},
    {"disc", 4, {D_SCRATCH, D_CRACK, D_MISSING, D_COLOR}},
    {"plate", 4, {D_SCRATCH, D_HOLE, D_MISSING, D_STAIN}},
};

int drdc_synth_category_count(void) { return DRDC_SYNTH_MAX_CATEGORIES; }

const char *drdc_synth_category_name(int i) {
    return (i >= 0 && i < DRDC_SYNTH_MAX_CATEGORIES) ? CATEGORIES[i].name : NULL;
}

int drdc_synth_defect_count(int category) {
    return (category >= 0 && category < DRDC_SYNTH_MAX_CATEGORIES) ? CATEGORIES[category].n_defects : 0;
}

const char *drdc_synth_defect_name(int category, int j) {
    if (category < 0 || category >= DRDC_SYNTH_MAX_CATEGORIES) return NULL;
    if (j < 0 || j >= CATEGORIES[category].n_defects) return NULL;
    return DEFECT_NAMES[CATEGORIES[category].defects[j]];
}

void drdc_synth_default_options(drdc_synth_options *o) {
    o->out_dir = NULL;
    o->n_categories = 4;
    o->n_train = 40;
    o->n_test = 20;
    o->size = 128;
    o->seed = 0;
}

/* ---- scenes ----------------------------------------------------------------------------------- */

#define N_PLATE_HOLES 5

typedef struct {
    int n;          /* side in pixels */
    float s;        /* n / 128: geometry scale */
    int category;
    float *fg, *bg; /* (n, n, 3) */
    float *alpha;   /* (n, n) object coverage */
    float *light;   /* (n, n) multiplicative lighting */
    float *noise;   /* (n, n, 3) additive noise */
    /* geometry, for placing defects */
    float cx, cy;            /* object centre */
    float radius, inner;     /* disc: outer and inner radius */
    float rot, ha, hb;       /* plate: rotation, half extents */
    float holes[N_PLATE_HOLES][3]; /* plate holes: local x, y, radius */
} scene;

static void scene_free(scene *sc) {
    free(sc->fg);
    free(sc->bg);
    free(sc->alpha);
    free(sc->light);
    free(sc->noise);
    memset(sc, 0, sizeof *sc);
}

static drdc_status scene_alloc(scene *sc, int n, int category) {
    memset(sc, 0, sizeof *sc);
    size_t np = (size_t)n * n;
    sc->n = n;
    sc->s = (float)n / 128.0f;
    sc->category = category;
    sc->fg = calloc(np * 3, sizeof(float));
    sc->bg = calloc(np * 3, sizeof(float));
    sc->alpha = calloc(np, sizeof(float));
    sc->light = calloc(np, sizeof(float));
    sc->noise = calloc(np * 3, sizeof(float));
    if (!sc->fg || !sc->bg || !sc->alpha || !sc->light || !sc->noise) {
        scene_free(sc);
        return drdc_fail(DRDC_ERR_NOMEM, "synth: cannot allocate a %dx%d scene", n, n);
    }
    return DRDC_OK;
}

static void render_weave(scene *sc, uint64_t *r) {
    const int n = sc->n;
    const float s = sc->s;
    float p = s * rng_range(r, 7.0f, 9.0f);
    float ang = rng_range(r, -0.12f, 0.12f);
    float u0 = rng_range(r, 0.0f, 2.0f * p), v0 = rng_range(r, 0.0f, 2.0f * p);
    float twist = rng_range(r, 0.0f, 2.0f * PI_F);
    float warp[3] = {0.78f, 0.70f, 0.55f}, weft[3];
    for (int k = 0; k < 3; k++) {
        warp[k] *= 1.0f + rng_range(r, -0.03f, 0.03f);
        weft[k] = warp[k] * rng_range(r, 0.86f, 0.96f);
    }
    uint64_t nseed = drdc_splitmix64(r);
    float c = cosf(ang), sn = sinf(ang);
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            float u = c * x + sn * y + u0, v = -sn * x + c * y + v0;
            float cu = floorf(u / p), cv = floorf(v / p);
            float fu = u / p - cu, fv = v / p - cv;
            int top = (int)(((long)cu + (long)cv) & 1);
            float across = top ? fv : fu, along = top ? u : v;
            const float *col = top ? weft : warp;
            float shade = 0.35f + 0.65f * sqrtf(fmaxf(0.0f, sinf(PI_F * across)));
            shade *= 1.0f + 0.06f * sinf(along * 2.0f * PI_F / (0.33f * p) + 6.0f * across + twist) +
                     0.07f * fbm(nseed, x / (6.0f * s), y / (6.0f * s));
            float *o = sc->fg + 3 * ((size_t)y * n + x);
            for (int k = 0; k < 3; k++) o[k] = col[k] * shade;
            sc->alpha[(size_t)y * n + x] = 1.0f;
        }
}

static void render_grain(scene *sc, uint64_t *r) {
    const int n = sc->n;
    const float s = sc->s;
    float ang = rng_range(r, -0.25f, 0.25f);
    float p = s * rng_range(r, 8.0f, 12.0f);
    float phase = rng_range(r, 0.0f, p), ph2 = rng_range(r, 0.0f, 2.0f * PI_F);
    float warp_amp = s * rng_range(r, 4.0f, 8.0f);
    float lightc[3] = {0.80f, 0.62f, 0.42f}, darkc[3] = {0.52f, 0.33f, 0.18f};
    float tint = rng_range(r, -0.05f, 0.05f);
    for (int k = 0; k < 3; k++) {
        lightc[k] *= 1.0f + tint;
        darkc[k] *= 1.0f + tint;
    }
    uint64_t s1 = drdc_splitmix64(r), s2 = drdc_splitmix64(r);
    float c = cosf(ang), sn = sinf(ang);
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            float u = c * x + sn * y, v = -sn * x + c * y;
            float w = v + warp_amp * fbm(s1, u / (40.0f * s), v / (25.0f * s)) +
                      2.5f * s * sinf(u / (30.0f * s) + ph2) + phase;
            float ring = w / p - floorf(w / p);
            float t = powf(ring, 2.5f);
            float streak = 0.05f * fbm(s2, u / (20.0f * s), v / (1.2f * s));
            float *o = sc->fg + 3 * ((size_t)y * n + x);
            for (int k = 0; k < 3; k++)
                o[k] = (lightc[k] + (darkc[k] - lightc[k]) * 0.75f * t) * (1.0f + streak);
            sc->alpha[(size_t)y * n + x] = 1.0f;
        }
}

static void render_disc(scene *sc, uint64_t *r) {
    const int n = sc->n;
    const float s = sc->s;
    sc->cx = 0.5f * n + s * rng_range(r, -5.0f, 5.0f);
    sc->cy = 0.5f * n + s * rng_range(r, -5.0f, 5.0f);
    sc->radius = s * rng_range(r, 40.0f, 44.0f);
    sc->inner = s * rng_range(r, 15.0f, 17.0f);
    float notch = rng_range(r, 0.0f, 2.0f * PI_F); /* the disc's rotation shows in its notch */
    float la = rng_range(r, 0.0f, 2.0f * PI_F);    /* light direction for the highlight */
    float brush_ph = rng_range(r, 0.0f, 2.0f * PI_F);
    float base = rng_range(r, 0.64f, 0.72f);
    uint64_t s1 = drdc_splitmix64(r), s2 = drdc_splitmix64(r);
    float nx = cosf(notch), ny = sinf(notch);
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            size_t i = (size_t)y * n + x;
            float px = x + 0.5f - sc->cx, py = y + 0.5f - sc->cy;
            float d = sqrtf(px * px + py * py);
            float th = atan2f(py, px);
            /* background: dark blue-grey, mottled */
            float b = 1.0f + 0.15f * fbm(s1, x / (12.0f * s), y / (12.0f * s));
            sc->bg[3 * i + 0] = 0.16f * b;
            sc->bg[3 * i + 1] = 0.18f * b;
            sc->bg[3 * i + 2] = 0.20f * b;
            /* coverage: ring minus a rectangular notch at the rim */
            float a = clampf(0.5f - (d - sc->radius), 0.0f, 1.0f) * clampf(0.5f - (sc->inner - d), 0.0f, 1.0f);
            float t = px * nx + py * ny, q = fabsf(-px * ny + py * nx);
            float sd_notch = fmaxf(sc->radius - 4.0f * s - t, q - 3.0f * s); /* < 0 inside */
            a *= clampf(0.5f + sd_notch, 0.0f, 1.0f);
            sc->alpha[i] = a;
            float shade = 1.0f + 0.05f * sinf(d * 1.7f / s + brush_ph) * (0.6f + 0.4f * fbm(s2, th * 3.0f, d / (8.0f * s))) +
                          0.14f * cosf(2.0f * (th - la));
            if (sc->radius - d < 2.5f * s) shade -= 0.18f;
            if (d - sc->inner < 2.5f * s) shade += 0.10f;
            sc->fg[3 * i + 0] = base * 0.98f * shade;
            sc->fg[3 * i + 1] = base * 1.00f * shade;
            sc->fg[3 * i + 2] = base * 1.03f * shade;
        }
}

/* Signed distance to a rounded rectangle centred at 0 (negative inside). */
static float sd_round_rect(float x, float y, float ha, float hb, float rc) {
    float qx = fabsf(x) - (ha - rc), qy = fabsf(y) - (hb - rc);
    float ox = fmaxf(qx, 0.0f), oy = fmaxf(qy, 0.0f);
    return sqrtf(ox * ox + oy * oy) + fminf(fmaxf(qx, qy), 0.0f) - rc;
}

/* Plate-local coordinates of pixel centre (x, y). */
static void plate_local(const scene *sc, float x, float y, float *u, float *v) {
    float c = cosf(sc->rot), sn = sinf(sc->rot);
    float px = x + 0.5f - sc->cx, py = y + 0.5f - sc->cy;
    *u = c * px + sn * py;
    *v = -sn * px + c * py;
}

static void plate_world(const scene *sc, float u, float v, float *x, float *y) {
    float c = cosf(sc->rot), sn = sinf(sc->rot);
    *x = sc->cx + c * u - sn * v - 0.5f;
    *y = sc->cy + sn * u + c * v - 0.5f;
}

static void render_plate(scene *sc, uint64_t *r) {
    const int n = sc->n;
    const float s = sc->s;
    sc->cx = 0.5f * n + s * rng_range(r, -5.0f, 5.0f);
    sc->cy = 0.5f * n + s * rng_range(r, -5.0f, 5.0f);
    sc->rot = rng_range(r, -0.25f, 0.25f);
    sc->ha = s * rng_range(r, 40.0f, 44.0f);
    sc->hb = s * rng_range(r, 30.0f, 34.0f);
    float rc = 6.0f * s;
    const float hx[N_PLATE_HOLES] = {-0.62f, 0.62f, -0.62f, 0.62f, 0.0f};
    const float hy[N_PLATE_HOLES] = {-0.55f, -0.55f, 0.55f, 0.55f, 0.0f};
    for (int h = 0; h < N_PLATE_HOLES; h++) {
        sc->holes[h][0] = hx[h] * sc->ha;
        sc->holes[h][1] = hy[h] * sc->hb;
        sc->holes[h][2] = s * (h == 4 ? rng_range(r, 8.0f, 10.0f) : rng_range(r, 5.0f, 6.0f));
    }
    float col[3] = {0.22f, 0.30f, 0.27f};
    for (int k = 0; k < 3; k++) col[k] *= 1.0f + rng_range(r, -0.06f, 0.06f);
    uint64_t s1 = drdc_splitmix64(r), s2 = drdc_splitmix64(r);
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            size_t i = (size_t)y * n + x;
            float b = 1.0f + 0.12f * fbm(s1, x / (10.0f * s), y / (10.0f * s));
            sc->bg[3 * i + 0] = 0.60f * b;
            sc->bg[3 * i + 1] = 0.58f * b;
            sc->bg[3 * i + 2] = 0.54f * b;
            float u, v;
            plate_local(sc, (float)x, (float)y, &u, &v);
            float sd = sd_round_rect(u, v, sc->ha, sc->hb, rc);
            float a = clampf(0.5f - sd, 0.0f, 1.0f);
            float rim = 0.0f;
            for (int h = 0; h < N_PLATE_HOLES; h++) {
                float du = u - sc->holes[h][0], dv = v - sc->holes[h][1];
                float dh = sqrtf(du * du + dv * dv) - sc->holes[h][2]; /* > 0 outside the hole */
                a *= clampf(0.5f + dh, 0.0f, 1.0f);
                if (dh < 2.0f * s) rim = 0.2f;
            }
            sc->alpha[i] = a;
            float shade = 1.0f + 0.06f * fbm(s2, u / (3.0f * s), v / (30.0f * s)) + rim;
            if (sd > -2.5f * s) shade += 0.25f;
            for (int k = 0; k < 3; k++) sc->fg[3 * i + k] = col[k] * shade;
        }
}

/* Lighting gradient, gain and sensor noise: common to every category. */
static void render_conditions(scene *sc, uint64_t *r) {
    const int n = sc->n;
    float gain = rng_range(r, 0.92f, 1.08f), g = rng_range(r, 0.0f, 0.25f);
    float la = rng_range(r, 0.0f, 2.0f * PI_F);
    float gx = g * cosf(la), gy = g * sinf(la);
    float sigma = rng_range(r, 0.008f, 0.02f);
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            size_t i = (size_t)y * n + x;
            sc->light[i] = gain * (1.0f + gx * ((x + 0.5f) / n - 0.5f) + gy * ((y + 0.5f) / n - 0.5f));
            float lum = sigma * rng_normal(r);
            for (int k = 0; k < 3; k++) sc->noise[3 * i + k] = lum + 0.35f * sigma * rng_normal(r);
        }
}

static void render_scene(scene *sc, uint64_t *r) {
    switch (sc->category) {
    case CAT_WEAVE: render_weave(sc, r); break;
    case CAT_GRAIN: render_grain(sc, r); break;
    case CAT_DISC: render_disc(sc, r); break;
    default: render_plate(sc, r); break;
    }
    render_conditions(sc, r);
}

/* 8-bit composite of (fg, alpha) over the scene's background, lighting and noise. */
static void composite(const scene *sc, const float *fg, const float *alpha, unsigned char *out) {
    size_t np = (size_t)sc->n * sc->n;
    for (size_t i = 0; i < np; i++) {
        float a = alpha[i];
        for (int k = 0; k < 3; k++) {
            float v = (a * fg[3 * i + k] + (1.0f - a) * sc->bg[3 * i + k]) * sc->light[i] + sc->noise[3 * i + k];
            out[3 * i + k] = (unsigned char)lrintf(clampf(v, 0.0f, 1.0f) * 255.0f);
        }
    }
}

/* ---- defects ---------------------------------------------------------------------------------- */

/* A point on the object (or anywhere on a texture), `margin` pixels inside its edges. */
static void pick_point(const scene *sc, uint64_t *r, float margin, float *x, float *y) {
    const float n = (float)sc->n;
    if (sc->category == CAT_DISC) {
        float lo = sc->inner + margin, hi = sc->radius - margin;
        if (hi < lo) lo = hi = 0.5f * (sc->inner + sc->radius);
        float d = rng_range(r, lo, hi), th = rng_range(r, 0.0f, 2.0f * PI_F);
        *x = sc->cx + d * cosf(th) - 0.5f;
        *y = sc->cy + d * sinf(th) - 0.5f;
        return;
    }
    if (sc->category == CAT_PLATE) {
        float u = 0.0f, v = 0.0f;
        for (int tries = 0; tries < 200; tries++) {
            float mu = fmaxf(sc->ha - margin, 1.0f), mv = fmaxf(sc->hb - margin, 1.0f);
            u = rng_range(r, -mu, mu);
            v = rng_range(r, -mv, mv);
            int clear = 1;
            for (int h = 0; h < N_PLATE_HOLES; h++) {
                float du = u - sc->holes[h][0], dv = v - sc->holes[h][1];
                if (sqrtf(du * du + dv * dv) < sc->holes[h][2] + margin) clear = 0;
            }
            if (clear) break;
        }
        plate_world(sc, u, v, x, y);
        return;
    }
    float m = fminf(margin, 0.4f * n);
    *x = rng_range(r, m, n - 1.0f - m);
    *y = rng_range(r, m, n - 1.0f - m);
}

static float seg_dist(float px, float py, float ax, float ay, float bx, float by) {
    float dx = bx - ax, dy = by - ay;
    float l2 = dx * dx + dy * dy;
    float t = l2 > 0.0f ? ((px - ax) * dx + (py - ay) * dy) / l2 : 0.0f;
    t = clampf(t, 0.0f, 1.0f);
    float ex = px - (ax + t * dx), ey = py - (ay + t * dy);
    return sqrtf(ex * ex + ey * ey);
}

/* Paints the pixels within width/2 of segment a-b: fg = fg * mul + add (per channel). */
static void paint_segment(const scene *sc, float *fg, float ax, float ay, float bx, float by, float width,
                          const float mul[3], const float add[3]) {
    const int n = sc->n;
    float h = 0.5f * width;
    int x0 = (int)floorf(fminf(ax, bx) - h - 1), x1 = (int)ceilf(fmaxf(ax, bx) + h + 1);
    int y0 = (int)floorf(fminf(ay, by) - h - 1), y1 = (int)ceilf(fmaxf(ay, by) + h + 1);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > n - 1) x1 = n - 1;
    if (y1 > n - 1) y1 = n - 1;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            if (seg_dist((float)x, (float)y, ax, ay, bx, by) > h) continue;
            float *o = fg + 3 * ((size_t)y * n + x);
            for (int k = 0; k < 3; k++) o[k] = o[k] * mul[k] + add[k];
        }
}

/* Irregular blob: normalised radius at pixel (x, y) (< 1 inside). */
static float blob_radius(float x, float y, float cx, float cy, float rad, float ph1, float ph2) {
    float dx = x - cx, dy = y - cy;
    float th = atan2f(dy, dx);
    float rr = rad * (1.0f + 0.18f * sinf(3.0f * th + ph1) + 0.10f * sinf(5.0f * th + ph2));
    return sqrtf(dx * dx + dy * dy) / rr;
}

static void defect_scratch(const scene *sc, uint64_t *r, float *fg) {
    const float s = sc->s;
    float x, y;
    pick_point(sc, r, 4.0f * s, &x, &y);
    float len = s * rng_range(r, 18.0f, 45.0f), ang = rng_range(r, 0.0f, 2.0f * PI_F);
    float width = fmaxf(1.0f, s * rng_range(r, 1.0f, 2.0f));
    float mul[3], add[3];
    if (rng_uniform(r) < 0.5f) { /* bright scratch: bare metal or fibres pulled up */
        for (int k = 0; k < 3; k++) { mul[k] = 0.35f; add[k] = 0.6f; }
    } else {
        for (int k = 0; k < 3; k++) { mul[k] = 0.35f; add[k] = 0.0f; }
    }
    float dx = 0.5f * len * cosf(ang), dy = 0.5f * len * sinf(ang);
    paint_segment(sc, fg, x - dx, y - dy, x + dx, y + dy, width, mul, add);
}

static void crack_walk(const scene *sc, uint64_t *r, float *fg, float x, float y, float ang, int steps,
                       float wmax, int branches) {
    const float s = sc->s;
    const float mul[3] = {0.25f, 0.25f, 0.25f}, add[3] = {0.0f, 0.0f, 0.0f};
    for (int i = 0; i < steps; i++) {
        float len = s * rng_range(r, 2.5f, 5.0f);
        ang += rng_range(r, -0.6f, 0.6f);
        float nx = x + len * cosf(ang), ny = y + len * sinf(ang);
        float width = rng_range(r, 1.0f, wmax);
        paint_segment(sc, fg, x, y, nx, ny, width, mul, add);
        if (branches > 0 && rng_uniform(r) < 0.2f) {
            float side = rng_uniform(r) < 0.5f ? -1.0f : 1.0f;
            crack_walk(sc, r, fg, nx, ny, ang + side * rng_range(r, 0.5f, 1.1f), 4 + rng_int(r, 5),
                       fmaxf(1.0f, wmax - 1.0f), 0);
            branches--;
        }
        x = nx;
        y = ny;
    }
}

static void defect_crack(const scene *sc, uint64_t *r, float *fg) {
    float x, y;
    pick_point(sc, r, 6.0f * sc->s, &x, &y);
    crack_walk(sc, r, fg, x, y, rng_range(r, 0.0f, 2.0f * PI_F), 10 + rng_int(r, 9), 3.0f, 1 + rng_int(r, 2));
}

static void defect_hole(const scene *sc, uint64_t *r, float *fg, float *alpha) {
    const int n = sc->n;
    const float s = sc->s;
    float rad = s * (sc->category == CAT_PLATE ? rng_range(r, 4.5f, 7.0f) : rng_range(r, 3.5f, 7.0f));
    float x, y;
    pick_point(sc, r, rad + 3.0f * s, &x, &y);
    float ph1 = rng_range(r, 0.0f, 2.0f * PI_F), ph2 = rng_range(r, 0.0f, 2.0f * PI_F);
    float rim = 1.5f * s;
    for (int py = 0; py < n; py++)
        for (int px = 0; px < n; px++) {
            float rn = blob_radius((float)px, (float)py, x, y, rad, ph1, ph2);
            size_t i = (size_t)py * n + px;
            if (sc->category == CAT_PLATE) { /* a hole through the part: background shows */
                if (rn < 1.0f) alpha[i] = 0.0f;
            } else if (rn < 1.0f) { /* a hole in the material: dark */
                fg[3 * i + 0] = 0.06f;
                fg[3 * i + 1] = 0.05f;
                fg[3 * i + 2] = 0.05f;
            } else if (rn < 1.0f + rim / rad) { /* frayed, darkened rim */
                for (int k = 0; k < 3; k++) fg[3 * i + k] *= 0.6f;
            }
        }
}

static void defect_stain(const scene *sc, uint64_t *r, float *fg) {
    const int n = sc->n;
    const float s = sc->s;
    float rad = s * rng_range(r, 6.0f, 14.0f);
    float x, y;
    pick_point(sc, r, 0.5f * rad, &x, &y);
    float ph1 = rng_range(r, 0.0f, 2.0f * PI_F), ph2 = rng_range(r, 0.0f, 2.0f * PI_F);
    static const float tints[3][3] = {{0.35f, 0.22f, 0.08f}, {0.10f, 0.10f, 0.12f}, {0.85f, 0.80f, 0.45f}};
    int cx = (int)clampf(x, 0.0f, n - 1.0f), cy = (int)clampf(y, 0.0f, n - 1.0f);
    const float *c = fg + 3 * ((size_t)cy * n + cx);
    float lum = 0.3f * c[0] + 0.59f * c[1] + 0.11f * c[2];
    const float *tint = lum < 0.4f ? tints[2] : tints[rng_int(r, 2)];
    float strength = rng_range(r, 0.5f, 0.75f);
    for (int py = 0; py < n; py++)
        for (int px = 0; px < n; px++) {
            float rn = blob_radius((float)px, (float)py, x, y, rad, ph1, ph2);
            if (rn > 2.0f) continue;
            float k = strength * expf(-2.0f * rn * rn);
            float *o = fg + 3 * ((size_t)py * n + px);
            for (int ch = 0; ch < 3; ch++) o[ch] += (tint[ch] - o[ch]) * k;
        }
}

static void defect_missing(const scene *sc, uint64_t *r, float *alpha) {
    const int n = sc->n;
    const float s = sc->s;
    float x, y, rad;
    if (sc->category == CAT_DISC) { /* a bite out of the rim */
        float th = rng_range(r, 0.0f, 2.0f * PI_F);
        rad = s * rng_range(r, 9.0f, 16.0f);
        float d = sc->radius + s * rng_range(r, -2.0f, 2.0f);
        x = sc->cx + d * cosf(th) - 0.5f;
        y = sc->cy + d * sinf(th) - 0.5f;
    } else { /* a broken corner or edge of the plate */
        int corner = rng_int(r, 4);
        float u = (corner & 1 ? 1.0f : -1.0f) * sc->ha * rng_range(r, 0.55f, 1.0f);
        float v = (corner & 2 ? 1.0f : -1.0f) * sc->hb;
        rad = s * rng_range(r, 10.0f, 16.0f);
        plate_world(sc, u, v, &x, &y);
    }
    float ph1 = rng_range(r, 0.0f, 2.0f * PI_F), ph2 = rng_range(r, 0.0f, 2.0f * PI_F);
    for (int py = 0; py < n; py++)
        for (int px = 0; px < n; px++)
            if (blob_radius((float)px, (float)py, x, y, rad, ph1, ph2) < 1.0f) alpha[(size_t)py * n + px] = 0.0f;
}

static void defect_color(const scene *sc, uint64_t *r, float *fg) {
    const int n = sc->n;
    const float s = sc->s;
    float rad = s * rng_range(r, 7.0f, 14.0f);
    float x, y;
    pick_point(sc, r, 0.5f * rad, &x, &y);
    float ph1 = rng_range(r, 0.0f, 2.0f * PI_F), ph2 = rng_range(r, 0.0f, 2.0f * PI_F);
    static const float tints[3][3] = {{1.25f, 0.80f, 0.55f}, {0.60f, 0.85f, 1.35f}, {0.75f, 1.25f, 0.70f}};
    const float *tint = tints[rng_int(r, 3)];
    for (int py = 0; py < n; py++)
        for (int px = 0; px < n; px++)
            if (blob_radius((float)px, (float)py, x, y, rad, ph1, ph2) < 1.0f) {
                float *o = fg + 3 * ((size_t)py * n + px);
                for (int k = 0; k < 3; k++) o[k] = clampf(o[k] * tint[k], 0.0f, 1.0f);
            }
}

/* ---- rendering one image ---------------------------------------------------------------------- */

drdc_status drdc_synth_render(int category, int defect, int size, uint64_t seed, drdc_image *img,
                              drdc_image *mask) {
    if (img) memset(img, 0, sizeof *img);
    if (mask) memset(mask, 0, sizeof *mask);
    if (!img) return drdc_fail(DRDC_ERR_INPUT, "synth: NULL output image");
    if (category < 0 || category >= DRDC_SYNTH_MAX_CATEGORIES)
        return drdc_fail(DRDC_ERR_INPUT, "synth: category %d out of range 0..%d", category,
                         DRDC_SYNTH_MAX_CATEGORIES - 1);
    if (defect < -1 || defect >= CATEGORIES[category].n_defects)
        return drdc_fail(DRDC_ERR_INPUT, "synth: defect %d out of range -1..%d for category %s", defect,
                         CATEGORIES[category].n_defects - 1, CATEGORIES[category].name);
    if (size < 32 || size > 4096)
        return drdc_fail(DRDC_ERR_INPUT, "synth: size %d out of range 32..4096", size);

    scene sc;
    unsigned char *normal = NULL, *bad = NULL;
    float *fg2 = NULL, *alpha2 = NULL;
    drdc_status st = DRDC_OK;
    TRY(scene_alloc(&sc, size, category));   /* on failure sc is left zeroed */
    size_t np = (size_t)size * size;
    normal = malloc(np * 3);
    if (!normal) goto nomem;
    uint64_t rs = drdc_mix64(seed ^ 0x5CE7E5CE7E5CE7E5ULL);
    render_scene(&sc, &rs);
    composite(&sc, sc.fg, sc.alpha, normal);

    if (defect >= 0) {
        bad = malloc(np * 3);
        fg2 = malloc(np * 3 * sizeof(float));
        alpha2 = malloc(np * sizeof(float));
        if (!bad || !fg2 || !alpha2) goto nomem;
        uint64_t rd = drdc_mix64(seed ^ 0xDEFEC7DEFEC7DEFEULL);
        defect_kind kind = CATEGORIES[category].defects[defect];
        size_t min_pixels = np / 2000 > 8 ? np / 2000 : 8;
        size_t changed = 0;
        for (int attempt = 0; attempt < 50 && changed < min_pixels; attempt++) {
            memcpy(fg2, sc.fg, np * 3 * sizeof(float));
            memcpy(alpha2, sc.alpha, np * sizeof(float));
            switch (kind) {
            case D_SCRATCH: defect_scratch(&sc, &rd, fg2); break;
            case D_CRACK: defect_crack(&sc, &rd, fg2); break;
            case D_HOLE: defect_hole(&sc, &rd, fg2, alpha2); break;
            case D_STAIN: defect_stain(&sc, &rd, fg2); break;
            case D_MISSING: defect_missing(&sc, &rd, alpha2); break;
            case D_COLOR: defect_color(&sc, &rd, fg2); break;
            }
            composite(&sc, fg2, alpha2, bad);
            /* Revert changes below the threshold: the mask is then exactly the changed pixels. */
            changed = 0;
            for (size_t i = 0; i < np; i++) {
                int dmax = 0;
                for (int k = 0; k < 3; k++) {
                    int d = abs((int)bad[3 * i + k] - (int)normal[3 * i + k]);
                    if (d > dmax) dmax = d;
                }
                if (dmax < DRDC_SYNTH_MASK_THRESHOLD)
                    memcpy(bad + 3 * i, normal + 3 * i, 3);
                else
                    changed++;
            }
        }
        if (changed < min_pixels) {
            st = drdc_fail(DRDC_ERR_STATE, "synth: %s/%s (seed %llu): defect stayed invisible after 50 tries",
                           CATEGORIES[category].name, DEFECT_NAMES[kind], (unsigned long long)seed);
            goto done;
        }
    }

    const unsigned char *px = bad ? bad : normal;
    TRY(drdc_image_alloc(img, size, size, 3));
    for (size_t i = 0; i < np * 3; i++) img->data[i] = (float)px[i] / 255.0f;
    if (mask) {
        st = drdc_image_alloc(mask, size, size, 1);
        if (st) {
            drdc_image_free(img);
            goto done;
        }
        if (bad)
            for (size_t i = 0; i < np; i++)
                mask->data[i] = memcmp(bad + 3 * i, normal + 3 * i, 3) != 0 ? 1.0f : 0.0f;
    }
    goto done;
nomem:
    st = drdc_fail(DRDC_ERR_NOMEM, "synth: out of memory rendering a %dx%d image", size, size);
done:
    free(normal);
    free(bad);
    free(fg2);
    free(alpha2);
    scene_free(&sc);
    return st;
}

/* ---- writing the dataset ---------------------------------------------------------------------- */

static uint64_t image_seed(uint64_t seed, int category, int split, int index) {
    return drdc_mix64(drdc_mix64(drdc_mix64(seed ^ 0xA0761D6478BD642FULL) ^ (uint64_t)category) ^ ((uint64_t)split << 32 | (uint32_t)index));
}

static int digits_for(int count) {
    int d = 3, lim = 1000;
    while (count > lim && d < 9) {
        d++;
        lim *= 10;
    }
    return d;
}

/* Renders and writes one image (and its mask when defect >= 0). */
static drdc_status write_one(const char *dir, const char *mask_dir, int digits, int index, int category,
                             int defect, int size, uint64_t seed) {
    drdc_image img = {0}, mask = {0};
    char path[4200];
    drdc_status st = DRDC_OK;
    TRY(drdc_synth_render(category, defect, size, seed, &img, defect >= 0 ? &mask : NULL));
    snprintf(path, sizeof path, "%s/%0*d.png", dir, digits, index);
    TRY(drdc_image_write_png(path, &img));
    if (defect >= 0) {
        snprintf(path, sizeof path, "%s/%0*d_mask.png", mask_dir, digits, index);
        TRY(drdc_image_write_png(path, &mask));
    }
done:
    drdc_image_free(&img);
    drdc_image_free(&mask);
    return st;
}

drdc_status drdc_synth_write(const drdc_synth_options *o) {
    if (!o || !o->out_dir || !*o->out_dir) return drdc_fail(DRDC_ERR_INPUT, "synth: no output folder given");
    if (o->n_categories < 1 || o->n_categories > DRDC_SYNTH_MAX_CATEGORIES)
        return drdc_fail(DRDC_ERR_INPUT, "synth: %d categories requested; 1..%d available", o->n_categories,
                         DRDC_SYNTH_MAX_CATEGORIES);
    if (o->n_train < 1) return drdc_fail(DRDC_ERR_INPUT, "synth: n_train %d must be at least 1", o->n_train);
    if (o->n_test < 0) return drdc_fail(DRDC_ERR_INPUT, "synth: n_test %d must not be negative", o->n_test);
    if (o->size < 32 || o->size > 4096)
        return drdc_fail(DRDC_ERR_INPUT, "synth: size %d out of range 32..4096", o->size);
    if (strlen(o->out_dir) > 3000) return drdc_fail(DRDC_ERR_INPUT, "synth: output folder path too long");

    char dir[4096], mdir[4096];
    drdc_status st = DRDC_OK;
    int n_bad = o->n_test / 2, n_good = o->n_test - n_bad;
    for (int c = 0; c < o->n_categories; c++) {
        const category_info *ci = &CATEGORIES[c];
        snprintf(dir, sizeof dir, "%s/%s/train/good", o->out_dir, ci->name);
        TRY(drdc_mkdirs(dir));
        int dg = digits_for(o->n_train);
        for (int i = 0; i < o->n_train; i++) TRY(write_one(dir, NULL, dg, i, c, -1, o->size, image_seed(o->seed, c, 0, i)));

        snprintf(dir, sizeof dir, "%s/%s/test/good", o->out_dir, ci->name);
        TRY(drdc_mkdirs(dir));
        dg = digits_for(n_good);
        for (int i = 0; i < n_good; i++) TRY(write_one(dir, NULL, dg, i, c, -1, o->size, image_seed(o->seed, c, 1, i)));

        for (int d = 0; d < ci->n_defects && d < n_bad; d++) {
            int count = (n_bad - d + ci->n_defects - 1) / ci->n_defects; /* images m = d, d+nd, ... */
            const char *dname = DEFECT_NAMES[ci->defects[d]];
            snprintf(dir, sizeof dir, "%s/%s/test/%s", o->out_dir, ci->name, dname);
            snprintf(mdir, sizeof mdir, "%s/%s/ground_truth/%s", o->out_dir, ci->name, dname);
            TRY(drdc_mkdirs(dir));
            TRY(drdc_mkdirs(mdir));
            dg = digits_for(count);
            for (int i = 0; i < count; i++) {
                int m = d + i * ci->n_defects;
                TRY(write_one(dir, mdir, dg, i, c, d, o->size, image_seed(o->seed, c, 2, m)));
            }
        }
    }
done:
    return st;
}
