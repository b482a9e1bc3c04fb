/* fusion.h: DRDC's spatio-temporal heatmap fusion (paper 4.4, DESIGN.md eqs. 14-17), the image
 * score, and the normal statistics used to standardise the maps before blending.
 *
 * Pipeline for a batch of B images (x in [-1,1], x_hat from drdc_diffusion_refine):
 *   h_diff   = drdc_fusion_diffusion_map(x, x_hat, scales)           eqs. (14)-(15)  [B,1,H,W]
 *   h_diff_f = drdc_fusion_mean_filter(h_diff, f)                    eq. (16)        [B,1,H,W]
 *   heat     = drdc_fusion_blend(h_diff_f, h_base, a, stats)         eq. (17)        [B,1,H,W]
 *   score    = drdc_fusion_image_score(heat, p)                      max of avg pool [B]
 * drdc_fusion_diffusion_heat does the first two, drdc_fusion_final the last two.
 * Normal statistics: after training, run h_diff_f and h_base of the normal validation images
 * through a drdc_stats_acc each; drdc_stats_get gives the (mean, std) that drdc_fusion_blend
 * standardises with. drdc_quantile picks the image-score threshold from validation scores.
 * Every tensor result is owned by the caller (dt_free); inputs are borrowed.
 *
 * Equations (DESIGN.md section 3): (9) H_{n,t} = ||x - x^_{n,t}||_2 over RGB and (14)-(15) its
 * multi-scale mean H_diff: drdc_fusion_diffusion_map ((9) is its scale-1 term); (16) H'_diff:
 * drdc_fusion_mean_filter; (17) H = a H'_diff + (1 - a) H_base: drdc_fusion_blend; the image
 * score (max of the p x p average pool of H): drdc_fusion_image_score. */
#ifndef DRDC_FUSION_H
#define DRDC_FUSION_H

#include <stdint.h>

#include "drdc/core/config.h"
#include "drdc/core/error.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Mean and standard deviation of a map's pixel values over normal images. */
typedef struct drdc_norm_stats {
    double mean;
    double std;   /* population standard deviation (divides by n); must be > 0 to standardise */
} drdc_norm_stats;

typedef struct drdc_fusion_opts {
    int n_scales;                     /* 1..DRDC_MAX_LIST */
    double scales[DRDC_MAX_LIST];     /* each in (0,1]; Down_s goes to floor(H*s) x floor(W*s), at least 1 */
    int filter;                       /* mean filter size f, odd, >= 1 (1 = no smoothing) */
    double alpha;                     /* weight a of the diffusion map, in [0,1] */
    int pool;                         /* image-score average pool p >= 1 (clamped to the map size) */
    int standardize;                  /* 1: standardise both maps with the stats below; 0: "none" */
    int diff_norm;                    /* 1 ("image_mean"): h_diff_f / its own spatial mean per image; 0: "none" */
    drdc_norm_stats diff_stats;       /* of h_diff_f over normal validation images */
    drdc_norm_stats base_stats;       /* of h_base over normal validation images */
} drdc_fusion_opts;

/* The fusion's config rules (DRDC_ERR_CONFIG naming the keys): infer.filter is odd, infer.filter
 * and infer.pool are at most image_size (data.image_size, the size of the maps). */
drdc_status drdc_fusion_check_config(const drdc_infer_config *in, int image_size);

/* Fills opts from the inference config (scales, filter, alpha, pool, standardize "normal" | "none").
 * The statistics are set to mean 0, std 1 (the identity) until the caller fills them in.
 * An unknown standardize value is DRDC_ERR_CONFIG naming infer.standardize. */
drdc_status drdc_fusion_opts_from_config(drdc_fusion_opts *o, const drdc_infer_config *ic);

/* Eqs. (14)-(15): for every grid g, timestep s and scale sc,
 *   H_{g,s,sc} = Up( || Down_sc(x) - Down_sc(x_hat[:, g, s]) ||_2 over RGB )
 * with Down = area (adaptive average pooling) to floor(H*sc) x floor(W*sc) (at least 1) and
 * Up = bilinear, align_corners false, back to H x W (both skipped at scale 1, where they are the
 * identity); then the mean of all G*S*n_scales maps. Area pooling is linear, so Down(x) -
 * Down(x_hat) is computed as Down(x - x_hat).
 *   x      [B,3,H,W] f32;  x_hat [B,G,S,3,H,W] f32  ->  *h_diff [B,1,H,W] f32 */
drdc_status drdc_fusion_diffusion_map(dt_tensor *h_diff, dt_tensor x, dt_tensor x_hat, const double *scales,
                                      int n_scales);

/* Eq. (16): f x f mean filter, stride 1, same-size output. At the border the window is cut to
 * the pixels inside the image and averaged over those only (zero padding with
 * count_include_pad = False, as torch's avg_pool2d), so borders are not darkened.
 *   h [B,1,H,W] (any channel count) -> *out same shape. f odd, >= 1 (any map size works). */
drdc_status drdc_fusion_mean_filter(dt_tensor *out, dt_tensor h, int f);

/* (h - mean) / std; stats NULL: a copy of h ("none"). std must be finite and > 0. */
drdc_status drdc_fusion_standardize(dt_tensor *out, dt_tensor h, const drdc_norm_stats *stats);

/* Eq. (17): *heat = a * std(h_diff_f) + (1 - a) * std(h_base), where std() standardises with the
 * given stats, or is the identity when the stats are NULL. h_diff_f, h_base [B,1,H,W] f32. */
drdc_status drdc_fusion_blend(dt_tensor *heat, dt_tensor h_diff_f, dt_tensor h_base, double alpha,
                              const drdc_norm_stats *diff_stats, const drdc_norm_stats *base_stats);

/* Image score (UniAD): max over the map of an average pool p x p, stride 1, no padding, with
 * p = min(p, H, W). heat [B,1,H,W] -> *score [B] f32. */
drdc_status drdc_fusion_image_score(dt_tensor *score, dt_tensor heat, int pool);

/* Eqs. (14)-(16) with the options' scales and filter: *h_diff_f [B,1,H,W]; with diff_norm, each
 * image's map is then divided by its own spatial mean (+ 1e-12): the image's overall error level
 * (how much fine texture it has to restore) no longer sets its score, only where the error stands
 * out within the image does. */
drdc_status drdc_fusion_diffusion_heat(dt_tensor *h_diff_f, dt_tensor x, dt_tensor x_hat, const drdc_fusion_opts *o);

/* Eq. (17) with the options' alpha and statistics (when standardize), then the image score:
 * *heat [B,1,H,W], *score [B] (either may be NULL when not wanted). */
drdc_status drdc_fusion_final(dt_tensor *heat, dt_tensor *score, dt_tensor h_diff_f, dt_tensor h_base,
                              const drdc_fusion_opts *o);

/* ---- normal statistics ------------------------------------------------------------------------ */

/* Running count, mean and sum of squared deviations (Chan et al.'s parallel merge of Welford
 * statistics, all in double): add any number of maps, then read the mean and std. */
typedef struct drdc_stats_acc {
    int64_t n;      /* pixel values seen */
    double mean;    /* their mean */
    double m2;      /* sum of squared deviations from the mean */
} drdc_stats_acc;

void drdc_stats_reset(drdc_stats_acc *a);
/* Adds every element of maps (any shape, float dtype, any device). A NaN or infinity is
 * DRDC_ERR_NUMERIC and leaves the accumulator unchanged. */
drdc_status drdc_stats_add(drdc_stats_acc *a, dt_tensor maps);
/* Adds host values. */
drdc_status drdc_stats_add_host(drdc_stats_acc *a, const float *v, int64_t n);
/* Mean and population std of everything added. No values, or std 0 (constant maps), is
 * DRDC_ERR_NUMERIC: such statistics cannot standardise. */
drdc_status drdc_stats_get(const drdc_stats_acc *a, drdc_norm_stats *out);

/* The q-quantile of v[0..n) (copied, not reordered) with linear interpolation between order
 * statistics, as numpy.quantile's default: position q * (n - 1) in the sorted values.
 * q in [0,1], n >= 1, values finite. */
drdc_status drdc_quantile(double *out, const double *v, int64_t n, double q);

#ifdef __cplusplus
}
#endif
#endif
