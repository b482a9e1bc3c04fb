/* config.h: the resolved drdc configuration.
 *
 * A config is JSON with the nested sections below; every key has a default (configs/mvtec.json
 * writes them all out at paper size). Loading checks every key: an unknown key, a wrong type or
 * an out-of-range value is a DRDC_ERR_CONFIG naming the key and the file; a JSON syntax error
 * names the file, line and column. `--set section.key=value` overrides apply after the file.
 * The resolved config serialises back to JSON (stored in every checkpoint, printed by train). */
#ifndef DRDC_CONFIG_H
#define DRDC_CONFIG_H

#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_MAX_LIST 16      /* longest list-valued key (categories, grids, scales, ...) */
#define DRDC_NAME_CAP 64
#define DRDC_PATH_CAP 1024

typedef struct drdc_data_config {
    char dataset[DRDC_NAME_CAP];      /* "mvtec" | "mpdd" | "btad" | "visa" | "folder"; default "mvtec" */
    char root[DRDC_PATH_CAP];         /* dataset root folder; default "demo-data" */
    int n_categories;                 /* 0 = every category found under root */
    char categories[DRDC_MAX_LIST][DRDC_NAME_CAP];
    int image_size;                   /* H = W fed to the models; multiple of 16; default 224 */
    double val_fraction;              /* share of train/good held out per category; default 0.1, in [0, 0.9] */
    int workers;                      /* decoding threads; default 2, >= 1 */
} drdc_data_config;

typedef struct drdc_backbone_config {
    char arch[DRDC_NAME_CAP];         /* "mobilenet_v2" | "efficientnet-b0..b7" | "efficientnet-lite0..4"; default "mobilenet_v2" */
    char weights[DRDC_PATH_CAP];      /* safetensors file; "" = random frozen backbone (warned loudly) */
    int n_blocks;                     /* feature blocks used; 0 = the architecture's default */
    int blocks[DRDC_MAX_LIST];        /* block indices (mobilenet_v2 default 1,3,6,13; b4 1,5,9,21) */
} drdc_backbone_config;

typedef struct drdc_base_config {     /* UniAD feature-reconstruction transformer (paper 3.1) */
    int hidden;                       /* default 256 */
    int heads;                        /* default 8; divides hidden */
    int enc_layers, dec_layers;       /* default 4, 4 */
    int ffn;                          /* default 1024 */
    double dropout;                   /* default 0.1, in [0,1) */
    int neighbor_mask;                /* neighbourhood size masked in attention; default 7; 0 = off; odd */
    double jitter_scale;              /* default 20; 0 = off */
    double jitter_prob;               /* default 1.0, in [0,1] */
    double lr, weight_decay, clip;    /* AdamW; defaults 1e-4, 1e-4, 0.1 */
    int epochs;                       /* default 1000 */
    int batch;                        /* default 8 */
    int lr_step;                      /* StepLR step in epochs; default 800 */
    double lr_gamma;                  /* default 0.1 */
} drdc_base_config;

typedef struct drdc_refiner_config {  /* inpainting U-Net (paper 4.5), trained by eq. (10) */
    int image_size;                   /* refiner resolution; default 224; multiple of every grid size */
    int channels;                     /* base channels; default 128 */
    int n_mult;                       /* levels */
    int channel_mult[DRDC_MAX_LIST];  /* default 1,1,2,2,4,4 */
    int res_blocks;                   /* per level; default 2 */
    int n_attention;
    int attention_res[DRDC_MAX_LIST]; /* resolutions with self-attention; default 28,14,7 */
    int head_channels;                /* channels per attention head; default 64 */
    double dropout;                   /* default 0.0 */
    int timesteps;                    /* T; default 1000 */
    double beta_start, beta_end;      /* linear schedule; default 1e-4, 0.02 */
    int max_train_t;                  /* train on t < max_train_t; default = timesteps */
    double lr, weight_decay, clip;    /* AdamW; defaults 1e-4, 0.0, 1.0 (0 = no clipping) */
    int steps;                        /* optimisation steps; default 100000 */
    int batch;                        /* default 8 */
    double ema_decay;                 /* default 0.999 */
    int ema_warmup;                   /* 1: the EMA's decay at update n (0-based) is min(ema_decay, (1 + n) / (10 + n)),
                                       * so a short run's EMA is not mostly its initial weights; default true
                                       * (false in model files written before the key existed) */
    int model_conditioning;           /* eq. (10): U-Net input concat(x_t, x~_k) (6 channels); 0 = x_t only
                                       * (3 channels; test-time conditioning alone, the ablation); default 1 */
} drdc_refiner_config;

typedef struct drdc_infer_config {    /* test-time conditioning and fusion (paper 4.3-4.4) */
    int tau;                          /* start timestep; default 250; < timesteps */
    char start[DRDC_NAME_CAP];        /* x_tau from "image" (the noised input image, default) or "masked" (the
                                       * noised condition x~_k, the ablation; what model files written before
                                       * the key existed were calibrated with) */
    int clip_x0;                      /* clamp the x0 prediction to [-1,1] and re-derive eps (guided-diffusion's
                                       * clip_denoised); default false */
    int steps;                        /* DDIM steps from tau; default 10 */
    int K;                            /* disjoint hidden sets; default 2 */
    int n_grids;
    int grids[DRDC_MAX_LIST];         /* cell sizes n in pixels; default 8,16 */
    int n_scales;
    double scales[DRDC_MAX_LIST];     /* default 1,0.5,0.25; each in (0,1] */
    int n_base_scales;
    double base_scales[DRDC_MAX_LIST]; /* scales of the base map (Table 5's "multi-scale in the base map"):
                                        * mean of Up(||Down_s(f) - Down_s(f^)||_2); default [1] = UniAD's map */
    int filter;                       /* mean filter f; default 7; odd */
    double alpha;                     /* weight of the diffusion map; default 0.9, in [0,1] */
    int pool;                         /* image-score average pool p; default 16 */
    char standardize[DRDC_NAME_CAP];  /* "normal" (validation statistics) | "none"; default "normal" */
    char diff_norm[DRDC_NAME_CAP];    /* "none" (the paper) | "image_mean": each image's filtered diffusion map
                                       * divided by its own spatial mean (not in the paper; RESULTS.md) */
    double threshold_quantile;        /* image-score threshold = this quantile of normal validation scores; default 0.99 */
    double pixel_quantile;            /* pixel threshold = this quantile of all normal validation map pixels; default 0.999 */
    int batch;                        /* images per inference batch; default 4 */
    char precision[DRDC_NAME_CAP];    /* "fp32" (default) | "bf16": the whole DRDC pass under bf16 autocast (CPU:
                                       * oneDNN, AMX where the CPU has it; CUDA autocast on GPU); maps, scores and
                                       * the fusion stay float32 */
    int batch_refiner;                /* 1: the refiner's inpainting runs of up to `batch` images go through the
                                       * U-Net together (faster on CPU and GPU, but an image's maps then depend on
                                       * the batch it came in, in the last bits); default false: one image at a
                                       * time, bit-identical anywhere */
} drdc_infer_config;

typedef struct drdc_train_config {
    int seed;                         /* default 133 */
    char out[DRDC_PATH_CAP];          /* run folder; default "" = runs/<name> */
    int checkpoint_every;             /* steps; default 500 */
    int log_every;                    /* steps between progress lines; default 10 */
    int bf16;                         /* autocast on CUDA; default false */
} drdc_train_config;

typedef struct drdc_config {
    char name[DRDC_NAME_CAP];         /* default: the config file's base name without .json */
    drdc_data_config data;
    drdc_backbone_config backbone;
    drdc_base_config base;
    drdc_refiner_config refiner;
    drdc_infer_config infer;
    drdc_train_config train;
} drdc_config;

/* Fills every field with its default. */
void drdc_config_defaults(drdc_config *cfg);

/* Loads a JSON file over the defaults, then validates. `path` as given; see drdc_config_find. */
drdc_status drdc_config_load(drdc_config *cfg, const char *path);

/* Parses JSON text (file name only for messages) over what cfg holds now, then validates. */
drdc_status drdc_config_parse(drdc_config *cfg, const char *json_text, const char *source_name);

/* The same for a config stored in a model file or checkpoint: a key added after that file was
 * written takes the value that reproduces the old behaviour (its "legacy" value: infer.start
 * "masked", infer.clip_x0 false, refiner.ema_warmup false), not the new default. */
drdc_status drdc_config_parse_stored(drdc_config *cfg, const char *json_text, const char *source_name);

/* Applies one "section.key=value" override (value parsed as JSON if it parses, else a string;
 * lists as JSON arrays or comma-separated "8,16"), then validates. */
drdc_status drdc_config_set(drdc_config *cfg, const char *assignment);

/* Sets a string key to `value` exactly as given (no JSON parsing): a value that does not fit is
 * DRDC_ERR_INPUT naming `what` (e.g. "--out") and its length; nothing is ever cut. */
drdc_status drdc_config_set_string(drdc_config *cfg, const char *key, const char *value, const char *what);

/* The config a --config argument names (drdc_config_find; the path found goes to path, cap bytes):
 * defaults, then that file, then every "section.key=value" of sets, then ONE validation of the
 * result (drdc_config_validate; the stages' rules are drdc_model_check_config's): keys that must
 * change together can be changed together with --set. Type and unknown-key errors still name the
 * file or --set. */
drdc_status drdc_config_resolve(drdc_config *cfg, const char *arg, const char *const *sets, int n_sets, char *path,
                                int cap);

/* Checks what the core knows of: every key's range and type, a non-empty name, no category
 * listed twice, data.image_size a multiple of 16. The rules of the networks (heads | hidden, the
 * U-Net's levels, tau < timesteps, ...) belong to their stages; drdc_model_check_config runs
 * this and all of them. Errors name the key. */
drdc_status drdc_config_validate(const drdc_config *cfg);

/* Resolves a --config argument: the path itself if it exists, else configs/<arg>, else
 * <exe dir>/../configs/<arg> and the install's share dir. Writes into out (cap bytes). */
drdc_status drdc_config_find(const char *arg, char *out, int cap);

/* Serialises the resolved config as pretty JSON (caller frees with free()). NULL on OOM. */
char *drdc_config_to_json(const drdc_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
