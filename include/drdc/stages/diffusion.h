/* diffusion.h: DRDC's diffusion refiner without the network (paper 4.2-4.3, DESIGN.md section 3).
 *
 * Provides
 * - the config rules of the schedule and the sampler (drdc_diffusion_check_config);
 * - the linear noise schedule (betas, alphas, abar) and q_sample (eq. 4);
 * - the inpainting masks of paper 4.2 (cells of n x n pixels split at random into K sets);
 * - the training batch of eq. (10) (x_t, t, condition x~_k, target eps) and its loss;
 * - the DDIM inpainting sampler with test-time conditioning (eqs. 7, 11-13) and the per-grid
 *   combination of eq. (8).
 * Equations (DESIGN.md section 3): (3)-(4) the schedule and x_t: drdc_schedule_init,
 * drdc_q_sample; (6)/(10) the refiner's training loss: drdc_diffusion_train_batch (x_t, t, x~_k,
 * eps) then drdc_diffusion_loss on the network's eps_theta; (7) x0_hat and (11)-(13) one reverse
 * step: drdc_ddim_step (run from tau by drdc_ddim_inpaint_runs); (8) the per-grid fold
 * x^_{n,t} = sum_k (1 - M_k) x^_{k,t}: drdc_diffusion_refine. The network eps_theta itself (5) is
 * unet.h's; (9) and (14)-(17) are fusion.h's.
 * The U-Net is not called directly: everything takes a network CALLBACK (drdc_eps_fn), as
 * stable-diffusion.cpp's samplers do, so the sampler can be tested with fake networks.
 *
 * Conventions
 * - Timesteps are 0-based as in guided-diffusion: t in [0, T), abar_t = prod_{s<=t} (1 - beta_s),
 *   so abar_0 = 1 - beta_0 < 1. The index -1 stands for the clean image: abar_{-1} = 1
 *   (DDIM's alpha_0 = 1; ermongroup/ddim's compute_alpha(t = -1), diffusers' set_alpha_to_one).
 * - Images are f32 [N,3,H,W] in [-1,1]; masks are f32 [.,1,H,W] with 1 = known, 0 = hidden.
 * - Random numbers come from a dt_generator (NULL: libtorch's default CPU generator); each
 *   function documents the order of its draws so runs are reproducible.
 * - Every tensor result is owned by the caller (dt_free); inputs are borrowed. */
#ifndef DRDC_DIFFUSION_H
#define DRDC_DIFFUSION_H

#include <stdint.h>

#include "drdc/core/config.h"
#include "drdc/core/error.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The U-Net as a callback: eps_theta(x_t, t, cond) (eq. 10's network, 6 channels in, 3 out).
 *   *eps_out  [N,3,H,W] f32, a new handle owned by the caller of the callback
 *   x_t       [N,3,H,W] f32 noisy image (borrowed)
 *   t         [N] i64 timesteps (borrowed; all equal inside the sampler)
 *   cond      [N,3,H,W] f32 condition x~_k (borrowed)
 * N may be any size the sampler chooses (see drdc_sampler_opts.chunk). The callback runs inside the
 * sampler's shim scopes (dt_scope_*): its temporaries and *eps_out are freed by the sampler; a
 * callback that keeps a tensor past its return must take it out of every open scope (call
 * dt_scope_keep on it dt_scope_depth() times). Under no-grad. A failure's message is passed up
 * with the step and timestep added. */
typedef drdc_status (*drdc_eps_fn)(dt_tensor *eps_out, void *ctx, dt_tensor x_t, dt_tensor t, dt_tensor cond);

/* ---- config rules ---------------------------------------------------------------------------- */

/* The refiner's schedule and sampler rules between config keys (DRDC_ERR_CONFIG naming the keys;
 * each key's own range is the config table's): beta_start < beta_end, max_train_t <= timesteps,
 * infer.tau < timesteps, infer.steps <= infer.tau, every infer.grids cell size divides
 * refiner.image_size, infer.K <= the cells of the coarsest grid. */
drdc_status drdc_diffusion_check_config(const drdc_refiner_config *r, const drdc_infer_config *in);

/* ---- schedule (eqs. 3-4) --------------------------------------------------------------------- */

typedef struct drdc_schedule {
    int T;              /* number of diffusion steps */
    double *betas;      /* [T] linear from beta_start to beta_end (double, as np.linspace) */
    double *abar64;     /* [T] cumprod of 1 - beta, in double */
    float *abar;        /* [T] abar64 rounded to float: the values every coefficient is taken from */
    dt_tensor abar_dev; /* [T] f32 abar on the schedule's device (for batched gathers) */
    dt_device device;
} drdc_schedule;

/* Builds the schedule: beta_i = beta_start + (beta_end - beta_start) * i / (T - 1) (T = 1:
 * beta_start), alpha_i = 1 - beta_i, abar = cumprod(alpha) in double, then float. Needs T >= 1,
 * 0 < beta_start <= beta_end < 1. Free with drdc_schedule_free. */
drdc_status drdc_schedule_init(drdc_schedule *s, int T, double beta_start, double beta_end, dt_device dev);
/* Same, from the refiner config (timesteps, beta_start, beta_end). */
drdc_status drdc_schedule_from_config(drdc_schedule *s, const drdc_refiner_config *rc, dt_device dev);
void drdc_schedule_free(drdc_schedule *s);  /* NULL-safe; zeroes *s */

/* abar_t as a double (the float value widened); t = -1 gives 1 (the clean image); t must be
 * in [-1, T). Out of range returns NAN. */
double drdc_schedule_abar(const drdc_schedule *s, int t);

/* Gathers abar_t for a batch: t [N] i64 (any device) -> *out [N,1,1,1] f32 on t's device. */
drdc_status drdc_schedule_gather(dt_tensor *out, const drdc_schedule *s, dt_tensor t);

/* Eq. (4): *x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, per sample.
 * x0, eps [N,C,H,W] f32; t [N] i64 in [0, T). */
drdc_status drdc_q_sample(dt_tensor *x_t, const drdc_schedule *s, dt_tensor x0, dt_tensor t, dt_tensor eps);

/* ---- inpainting masks (paper 4.2) ------------------------------------------------------------ */

/* Host version of the masks: writes K masks [K,H,W] (float, 1 known, 0 hidden) into out (K*H*W
 * floats) for cells of grid x grid pixels, from a permutation `perm` of the cell indices
 * (cells numbered row-major: cell (i, j) = i * (W / grid) + j). Cell perm[p] goes to hidden set
 * S_{p mod K}, so with C cells the first C mod K sets have one cell more than the others
 * (sizes differ by at most 1; equal when K divides C). A uniformly random perm gives a uniformly
 * random partition with those sizes. Checks H, W divisible by grid and 1 <= K <= C. */
drdc_status drdc_inpaint_masks_from_perm(float *out, int H, int W, int grid, int K, const int64_t *perm);

/* All K masks for one random partition: *masks [K,1,H,W] f32 on dev. Draws one
 * dt_randperm(C) from g (C = (H/grid) * (W/grid)). sum_k (1 - M_k) = 1 everywhere. */
drdc_status drdc_inpaint_masks(dt_tensor *masks, int H, int W, int grid, int K, dt_generator g, dt_device dev);

/* The condition x~ = M * x + (1 - M) * z: x, z [N,3,H,W], mask [N,1,H,W] (broadcast). */
drdc_status drdc_inpaint_condition(dt_tensor *cond, dt_tensor x, dt_tensor mask, dt_tensor z);

/* ---- training batch of eq. (10) -------------------------------------------------------------- */

typedef struct drdc_train_batch {
    dt_tensor x_t;   /* [B,3,H,W] f32 sqrt(abar_t) x0 + sqrt(1-abar_t) eps */
    dt_tensor t;     /* [B] i64 in [0, max_train_t) */
    dt_tensor cond;  /* [B,3,H,W] f32 x~_k = M_k x0 + (1 - M_k) z */
    dt_tensor eps;   /* [B,3,H,W] f32 the target noise */
    dt_tensor mask;  /* [B,1,H,W] f32 the M_k used for each sample (for inspection) */
} drdc_train_batch;

/* Builds one training batch from normal images x0 [B,3,H,W] f32 in [-1,1] (on any device; the
 * batch is on x0's device). Per sample b: a grid size grids[i] (i uniform in [0, n_grids)), a
 * uniformly random partition of its cells into K sets, a hidden set k uniform in [0, K), a
 * timestep t uniform in [0, max_train_t), z ~ N(0,I) for the hidden cells, eps ~ N(0,I).
 * Draw order from g: randint grid index [B], randint k [B], randint t [B], then for each b one
 * randperm (its grid's cell count), then randn z [B,3,H,W], then randn eps [B,3,H,W]. With a row
 * generator of B (dt_generator_new_rows, one generator per sample) each of these draws takes sample
 * b's part from sample b's generator, so sample b's batch depends on its generator alone (the
 * training stage's per-sample draws, the same however a data-parallel group splits the batch).
 * The caller runs the U-Net on (x_t, t, cond) and takes drdc_diffusion_loss(eps_theta, eps). Free
 * with drdc_train_batch_free. */
drdc_status drdc_diffusion_train_batch(drdc_train_batch *out, const drdc_schedule *s, dt_tensor x0,
                                       const int *grids, int n_grids, int K, int max_train_t, dt_generator g);
void drdc_train_batch_free(drdc_train_batch *b);  /* NULL-safe; zeroes *b */

/* Eqs. (6)/(10): *loss = || eps - eps_theta(x_t, t, x~_k) ||^2, the mean over all elements (MSE),
 * a 0-dim tensor that autograd follows. eps_pred [N,3,H,W] f32 (the network's output), eps the
 * same shape (drdc_train_batch.eps). */
drdc_status drdc_diffusion_loss(dt_tensor *loss, dt_tensor eps_pred, dt_tensor eps);

/* ---- DDIM inpainting sampler (eqs. 7, 11-13, eta = 0) ---------------------------------------- */

/* Timesteps visited from tau in `steps` DDIM steps: t_i = floor(tau * (steps - i) / steps) for
 * i = 0..steps-1, i.e. tau, tau - tau/steps, ..., tau/steps (250, 225, ..., 25 for 250 / 10).
 * The step from t_i goes to t'_i = t_{i+1}; the last step goes to t' = -1, abar = 1 (DDIM's
 * alpha_0 = 1: the last update lands on the clean estimate itself, so x_final = M x + (1-M) x^).
 * Needs 1 <= steps <= tau. Writes `steps` ints into out. */
drdc_status drdc_ddim_timesteps(int *out, int tau, int steps);

/* Called once per visited timestep with the clean-image predictions of every run:
 * x0_hat [N,3,H,W] (borrowed, valid during the call), step = i, t = t_i. */
typedef drdc_status (*drdc_x0_fn)(void *ctx, int step, int t, dt_tensor x0_hat);

/* Where the reverse run starts at tau (DESIGN.md, test-time conditioning). */
typedef enum drdc_start {
    DRDC_START_IMAGE = 0,   /* x_tau = sqrt(abar) x + sqrt(1 - abar) eps0: the hidden cells keep the
                             * input's low frequencies (the default, DESIGN.md as corrected) */
    DRDC_START_MASKED = 1,  /* x_tau = sqrt(abar) x~_k + sqrt(1 - abar) eps0: the hidden cells start
                             * from the noise z (the earlier reading; kept as an ablation) */
} drdc_start;

typedef struct drdc_sampler_opts {
    int tau;            /* start timestep, 1 <= tau < T */
    int steps;          /* DDIM steps, 1 <= steps <= tau */
    drdc_start start;   /* what x_tau is made of */
    int clip_x0;        /* 1: clamp x0_hat to [-1,1] and re-derive eps from it (guided-diffusion's
                         * clip_denoised); 0: use the network's prediction as it is */
    int64_t chunk;      /* most images per callback call; 0 = all N in one call */
    dt_generator gen;   /* for every draw not given below (NULL: libtorch's default) */
} drdc_sampler_opts;

/* One DDIM step t -> t' (eta = 0) of N inpainting runs with test-time conditioning:
 *   e      = eps_fn(x_t, t, cond)                           (one call per chunk of <= o->chunk runs)
 *   x0_hat = (x_t - sqrt(1 - abar_t) e) / sqrt(abar_t)      (7)
 *   with o->clip_x0: x0_hat = clamp(x0_hat, -1, 1), e = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)
 *   on_x0(on_ctx, step, t, x0_hat) when on_x0 is not NULL
 *   known  = sqrt(abar_t') x + sqrt(1 - abar_t') eps'       (11)
 *   unknown= sqrt(abar_t') x0_hat + sqrt(1 - abar_t') e     (12)
 *   x_t'   = M known + (1 - M) unknown                      (13)
 * x_t, x, cond [N,3,H,W] f32, masks M [N,1,H,W] (1 known, 0 hidden); 0 <= t < T and
 * -1 <= t' < t (t' = -1: abar = 1, the clean image); eps_known [N,3,H,W] is eps', or NULL to draw
 * it from o->gen after the network call. step only labels the x0 callback and messages.
 * *x_next [N,3,H,W] f32 is x_t'. Runs in its own shim scope (memory does not grow with the steps);
 * autograd follows the caller's grad mode (the sampler runs it under no-grad). */
drdc_status drdc_ddim_step(dt_tensor *x_next, const drdc_schedule *s, drdc_eps_fn eps_fn, void *eps_ctx,
                           dt_tensor x_t, int t, int t_next, dt_tensor x, dt_tensor masks, dt_tensor cond,
                           dt_tensor eps_known, const drdc_sampler_opts *o, int step, drdc_x0_fn on_x0,
                           void *on_ctx);

/* One batch of N independent inpainting runs (run r: image x[r], mask masks[r]).
 *   x       [N,3,H,W] f32 the image in [-1,1]
 *   masks   [N,1,H,W] f32 M (1 known, 0 hidden)
 *   z       [N,3,H,W] or NULL: the noise that fills the hidden cells of the condition
 *   eps0    [N,3,H,W] or NULL: the noise of x_tau
 *   eps_known [steps,N,3,H,W] or NULL: eps' of eq. (11) for each step
 * Draws (only those not given, in this order): randn z, randn eps0, then at each step i after
 * the network call randn eps' [N,3,H,W] (drawn also at the last step, where it is multiplied
 * by sqrt(1 - 1) = 0, so that the count of draws does not depend on the step).
 * The run: cond = M x + (1-M) z; x_tau = sqrt(abar_tau) x0 + sqrt(1 - abar_tau) eps0 with x0 = x
 * (start DRDC_START_IMAGE) or x0 = cond (DRDC_START_MASKED; z is drawn in both cases, so the draws
 * do not depend on the start); then for each t_i (drdc_ddim_timesteps) with t' = t'_i one
 * drdc_ddim_step (eqs. 7, 11-13; x0_hat goes to on_x0).
 * *x_final (may be NULL: not wanted) gets x at t' = -1 [N,3,H,W]. Runs under no-grad. */
drdc_status drdc_ddim_inpaint_runs(dt_tensor *x_final, const drdc_schedule *s, drdc_eps_fn eps_fn, void *eps_ctx,
                                   dt_tensor x, dt_tensor masks, dt_tensor z, dt_tensor eps0, dt_tensor eps_known,
                                   const drdc_sampler_opts *o, drdc_x0_fn on_x0, void *on_ctx);

typedef struct drdc_refine_opts {
    drdc_sampler_opts sampler;     /* tau, steps, chunk, gen */
    int K;                         /* hidden sets per partition, >= 1 */
    int n_grids;                   /* 1..DRDC_MAX_LIST */
    int grids[DRDC_MAX_LIST];      /* cell sizes n in pixels; each divides H and W */
    /* Optional given randomness (tests, twins); NULL = drawn from sampler.gen. G = n_grids. */
    dt_tensor masks;               /* [B,G,K,1,H,W] f32; else per (b, g) drdc_inpaint_masks, b outer */
    dt_tensor z;                   /* [B,G,K,3,H,W] f32 */
    dt_tensor eps0;                /* [B,G,K,3,H,W] f32 */
    dt_tensor eps_known;           /* [steps,B,G,K,3,H,W] f32 */
} drdc_refine_opts;

/* Fills opts from the inference config (tau, steps, start, clip_x0, K, grids); chunk 0, gen NULL,
 * no given noise. */
void drdc_refine_opts_from_config(drdc_refine_opts *o, const drdc_infer_config *ic);

/* The refiner's whole test-time pass for a batch of images x [B,3,H,W] f32 in [-1,1]:
 * every (image b, grid g, hidden set k) is one run, all N = B*G*K runs go through
 * drdc_ddim_inpaint_runs together (run index r = (b*G + g)*K + k; the callback sees N, or
 * chunks of sampler.chunk). Masks not given are drawn first (for b, for g: one randperm), then
 * the sampler's draws. Output:
 *   *x_hat   [B,G,S,3,H,W] f32 with S = steps: x^_{n,t} = sum_k (1 - M_k) x^_{k,t} (eq. 8) for
 *            grid g and visited timestep t_s (drdc_ddim_timesteps order)
 *   *x_final [B,G,K,3,H,W] f32 the runs' final x (t' = -1), or NULL when not wanted
 *   *masks_out [B,G,K,1,H,W] f32 the masks used, or NULL when not wanted
 * Memory: x_hat holds B*G*S images; the runs' per-step predictions are folded into it as they
 * come (nothing per run is kept beyond the current step). */
drdc_status drdc_diffusion_refine(dt_tensor *x_hat, dt_tensor *x_final, dt_tensor *masks_out, const drdc_schedule *s,
                                  drdc_eps_fn eps_fn, void *eps_ctx, dt_tensor x, const drdc_refine_opts *o);

#ifdef __cplusplus
}
#endif
#endif
