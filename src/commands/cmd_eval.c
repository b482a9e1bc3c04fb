/* cmd_eval.c: `drdc eval`: exact per-category metrics of a model's maps (or of maps made by any
 * other tool, --maps) on a labelled test set. */
#include "drdc/commands/commands.h"
#include "drdc/data/dataset.h"
#include "drdc/model/eval.h"
#include "drdc/core/fsutil.h"
#include "drdc/stages/fusion.h"
#include "drdc/data/loader.h"
#include "drdc/model/model.h"
#include "drdc/formats/npy.h"
#include "drdc/core/progress.h"
#include "drdc/shim/runtime.h"
#include "drdc/model/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    const char *model, *dataset, *data_root, *categories, *method, *json, *csv, *dump_maps, *vis, *maps, *device;
    int eval_size, threads, every, calib_images;
    drdc_opt_multi set;
} A;

static const drdc_option OPTIONS[] = {
    {"--model", "FILE", DRDC_OPT_STRING, &A.model, "trained model", "runs/latest/model.safetensors", 0, 0},
    {"--dataset", "KIND", DRDC_OPT_STRING, &A.dataset, "mvtec | mpdd | btad | visa | folder", "the model's", 0, 0},
    {"--data-root", "DIR", DRDC_OPT_STRING, &A.data_root, "dataset root", "the model's data.root", 0, 0},
    {"--categories", "LIST", DRDC_OPT_STRING, &A.categories, "comma-separated categories", "all", 0, 0},
    {"--method", "M", DRDC_OPT_STRING, &A.method,
     "base | drdc | both | all (all: base, the diffusion map alone (eqs. 14-16) and drdc)", "both", 0, 0},
    {"--maps", "DIR", DRDC_OPT_STRING, &A.maps,
     "score maps made elsewhere: DIR/<category>/<defect>/<image stem>.npy (float32, original size)", NULL, 0, 0},
    {"--eval-size", "N", DRDC_OPT_INT, &A.eval_size,
     "compare maps and masks at NxN (224 = UniAD protocol) instead of the original size", "original", 16, 8192},
    {"--json", "FILE", DRDC_OPT_STRING, &A.json, "write all metrics as JSON", NULL, 0, 0},
    {"--csv", "FILE", DRDC_OPT_STRING, &A.csv, "write one row per method and category", NULL, 0, 0},
    {"--dump-maps", "DIR", DRDC_OPT_STRING, &A.dump_maps, "save every map as .npy (the --maps layout)", NULL, 0, 0},
    {"--vis", "DIR", DRDC_OPT_STRING, &A.vis, "one PNG per test image: image, truth, each method's map", NULL, 0, 0},
    {"--set", "KEY=VALUE", DRDC_OPT_MULTI, &A.set,
     "override an inference key of the model, e.g. --set infer.steps=5 (repeatable; infer.* only); the model's "
     "normal statistics are then recomputed on its validation images with the new settings",
     NULL, 0, 0},
    {"--calib-images", "N", DRDC_OPT_INT, &A.calib_images,
     "with --set: recalibrate on N evenly spaced validation images", "all", 1, 1000000},
    {"--every", "K", DRDC_OPT_INT, &A.every,
     "evaluate only every K-th test image of each category (quick sweeps; the output says so)", "1", 1, 1000000},
    DRDC_OPTS_RUNTIME(&A.device, &A.threads),
};

static const drdc_command SPEC = {
    "eval", "drdc eval [--model FILE | --maps DIR] [--dataset KIND] [--data-root DIR] [options]",
    "Evaluate per category and on average: image AUROC, pixel AUROC, AUPRO (FPR <= 0.3), image and\n"
    "pixel AP, image and pixel F1-max, all exact (sort-based, ties as scikit-learn). Maps are\n"
    "compared with the masks at each image's original size unless --eval-size is given.",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_eval_spec(void) { return &SPEC; }

/* --maps: DIR/<category>/<defect>/<stem>.npy, float32, the image's original size; the image
 * score is the map's maximum. */
static drdc_status maps_source(void *ctx, const drdc_dataset *ds, const drdc_sample *s, drdc_image *maps,
                               float *scores) {
    const char *dir = ctx;
    char path[4096];
    drdc_eval_map_path(path, sizeof path, dir, NULL, ds->categories[s->category].name, s);
    int iw, ih, h, w;
    drdc_status st = drdc_image_probe(s->image_path, &iw, &ih);
    if (st) return st;
    float *data = NULL;
    st = drdc_npy_read_map(path, &data, &h, &w);
    if (st) return st;
    if (w != iw || h != ih) {
        free(data);
        return drdc_fail(DRDC_ERR_INPUT, "%s: map is %dx%d (WxH) but its image %s is %dx%d; maps must have "
                         "the image's original size", path, w, h, s->image_path, iw, ih);
    }
    float mx = data[0];
    for (size_t i = 1; i < (size_t)w * h; i++) mx = data[i] > mx ? data[i] : mx;
    maps[0] = (drdc_image){w, h, 1, data};
    scores[0] = mx;
    return DRDC_OK;
}

/* Splits "a,b,c" into at most cap names pointing into buf. */
static int split_list(char *buf, const char **names, int cap) {
    int n = 0;
    for (char *tok = strtok(buf, ","); tok && n < cap; tok = strtok(NULL, ","))
        if (*tok) names[n++] = tok;
    return n;
}

/* Opens the dataset (kind, root, categories from the options, else the defaults given), runs
 * the evaluation and writes the tables, JSON and CSV. */
static drdc_status run_eval(const char *kind, const char *root, const drdc_data_config *model_data, int n_methods,
                            const char *const *methods, drdc_map_source source, void *ctx, const double *vis_lo,
                            const double *vis_hi, char *model_json) {
    char cats_buf[4096];
    const char *cats[256];
    int n_cats = 0;
    if (A.categories) {
        snprintf(cats_buf, sizeof cats_buf, "%s", A.categories);
        n_cats = split_list(cats_buf, cats, 256);
    } else if (model_data) {
        for (int i = 0; i < model_data->n_categories && i < 256; i++) cats[n_cats++] = model_data->categories[i];
    }
    drdc_dataset ds;
    drdc_status st = drdc_dataset_open(&ds, kind, root, n_cats, n_cats ? cats : NULL);
    if (st) return st;
    if (A.every > 1) {
        drdc_dataset_keep_every(&ds, A.every);
        printf("--every %d: a subset, test images 0, %d, %d, ... of each category\n", A.every, A.every, 2 * A.every);
    }
    if (ds.n_skipped)
        fprintf(stderr, "warning: skipped %d files that are not PNG/JPEG/BMP images, e.g. %s\n", ds.n_skipped,
                ds.first_skipped);
    char names[256] = "";
    for (int k = 0; k < n_methods; k++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", k ? (k + 1 < n_methods ? ", " : " and ") : "",
                 methods[k]);
    printf("evaluating %s on %s (%s layout), %d categories, maps compared at %s\n", names, ds.root, ds.layout,
           ds.n_categories, A.eval_size ? "--eval-size" : "each image's original size");
    fflush(stdout);
    drdc_eval_options o = {A.eval_size, A.dump_maps, A.vis, vis_lo, vis_hi, 0};
    drdc_eval_result r;
    st = drdc_evaluate(&ds, n_methods, methods, source, ctx, &o, &r);
    if (!st) {
        r.model_json = model_json;   /* the result owns it now */
        model_json = NULL;
        drdc_eval_print_tables(stdout, &r);
        if (A.json) st = drdc_eval_write_json(&r, A.json);
        if (!st && A.csv) st = drdc_eval_write_csv(&r, A.csv);
        drdc_eval_result_free(&r);
    }
    drdc_dataset_free(&ds);
    free(model_json);
    return st;
}

static drdc_status eval_maps(void) {
    if (!A.dataset) return drdc_fail(DRDC_ERR_USAGE, "--maps needs --dataset KIND");
    if (!A.data_root) return drdc_fail(DRDC_ERR_USAGE, "--maps needs --data-root DIR");
    const char *methods[] = {"maps"};
    return run_eval(A.dataset, A.data_root, NULL, 1, methods, maps_source, (void *)A.maps, NULL, NULL, NULL);
}

/* --model: the maps of one category's test images are computed in batches the first time one of
 * them is asked for, and kept until the next category. Methods: "base" (UniAD's map at
 * data.image_size), "diffusion" (the diffusion map of eqs. 14-16 alone; its image score is the
 * same pooled maximum) and "drdc" (the fused map), the last two at refiner.image_size. */
enum { SRC_BASE, SRC_DIFF, SRC_DRDC, N_SRC };
static const char *const SRC_NAMES[N_SRC] = {"base", "diffusion", "drdc"};

typedef struct model_source {
    const drdc_model *m;
    int want[N_SRC];
    int size;              /* maps are size x size */
    int load_size;         /* images are loaded at load_size x load_size (drdc_model_input_size) */
    int category;          /* category cached, -1 none */
    float *maps[N_SRC];    /* [n][size*size] per method */
    float *scores[N_SRC];  /* [n] */
} model_source;

static drdc_status fill_category(model_source *ms, const drdc_dataset *ds, int c) {
    const drdc_category *cat = &ds->categories[c];
    int S = ms->size, I = ms->load_size, n = cat->n_test;
    size_t plane = (size_t)S * S;
    ms->category = -1;
    for (int k = 0; k < N_SRC; k++) {
        free(ms->maps[k]);
        free(ms->scores[k]);
        ms->maps[k] = ms->scores[k] = NULL;
        if (!ms->want[k]) continue;
        ms->maps[k] = malloc(sizeof(float) * (size_t)n * plane);
        ms->scores[k] = malloc(sizeof(float) * (size_t)n);
        if (!ms->maps[k] || !ms->scores[k]) return drdc_fail(DRDC_ERR_NOMEM, "out of memory for %d maps", n);
    }
    drdc_loader_options lo;
    drdc_loader_options_default(&lo);
    lo.image_size = I;
    lo.batch_size = ms->m->cfg.infer.batch;
    lo.workers = ms->m->cfg.data.workers;
    drdc_loader *ld = NULL;
    drdc_status st = drdc_loader_create(&ld, cat->test, cat->n_test, &lo);
    if (!st) st = drdc_loader_start_epoch(ld, 0);
    const drdc_batch *b;
    /* the category's maps come first, in batches: their own progress line (DRDC takes minutes) */
    char label[320];
    snprintf(label, sizeof label, "maps of %s", cat->name);
    drdc_progress prog;
    drdc_progress_begin(&prog, label, n, 0);
    int n_done = 0;
    while (!st && !(st = drdc_loader_next(ld, &b)) && b) {
        const int64_t shape[4] = {b->n, 3, I, I};
        dt_tensor host = NULL, images = NULL, out[2 * N_SRC] = {NULL};   /* map, score per method */
        st = dt_from_host(&host, b->images, DT_F32, shape, 4, (dt_device){DT_CPU, 0});
        if (!st) st = dt_to_device(&images, host, ms->m->dev);
        if (!st && (ms->want[SRC_DRDC] || ms->want[SRC_DIFF])) {
            st = drdc_model_drdc(&out[2 * SRC_DRDC], &out[2 * SRC_DRDC + 1], &out[2 * SRC_BASE], &out[2 * SRC_BASE + 1],
                                 ms->want[SRC_DIFF] ? &out[2 * SRC_DIFF] : NULL, ms->m, images, 0, NULL);
            if (!st && ms->want[SRC_DIFF])
                st = drdc_fusion_image_score(&out[2 * SRC_DIFF + 1], out[2 * SRC_DIFF], ms->m->cfg.infer.pool);
        } else if (!st) {
            st = drdc_model_base(&out[2 * SRC_BASE], &out[2 * SRC_BASE + 1], ms->m, images);
        }
        int first = b->index[0];   /* unshuffled: the batch holds samples first .. first + n - 1 */
        for (int k = 0; !st && k < N_SRC; k++) {
            if (!ms->want[k] || !out[2 * k]) continue;
            st = dt_copy_to_host(out[2 * k], ms->maps[k] + (size_t)first * plane, sizeof(float) * b->n * plane);
            if (!st) st = dt_copy_to_host(out[2 * k + 1], ms->scores[k] + first, sizeof(float) * (size_t)b->n);
        }
        dt_free(host);
        dt_free(images);
        for (int k = 0; k < 2 * N_SRC; k++) dt_free(out[k]);
        n_done += b->n;
        if (!st) drdc_progress_update(&prog, n_done, NULL);
    }
    drdc_progress_end(&prog);
    drdc_loader_free(ld);
    if (!st) ms->category = c;
    return st;
}

static drdc_status model_source_fn(void *ctx, const drdc_dataset *ds, const drdc_sample *s, drdc_image *maps,
                                   float *scores) {
    model_source *ms = ctx;
    int S = ms->size;
    if (ms->category != s->category) {
        drdc_status st = fill_category(ms, ds, s->category);
        if (st) return st;
    }
    int i = (int)(s - ds->categories[s->category].test), m = 0;
    for (int k = 0; k < N_SRC; k++) {
        if (!ms->want[k]) continue;
        drdc_status st = drdc_image_alloc(&maps[m], S, S, 1);
        if (st) return st;
        memcpy(maps[m].data, ms->maps[k] + (size_t)i * S * S, sizeof(float) * (size_t)S * S);
        scores[m++] = ms->scores[k][i];
    }
    return DRDC_OK;
}

/* --set: applies the infer.* overrides to the loaded model and recomputes its normal statistics
 * (standardisation, thresholds, colour ranges) on its validation images, which the stored ones
 * no longer describe. */
static drdc_status apply_overrides(drdc_model *m, const char *path) {
    for (int i = 0; i < A.set.n; i++)
        if (strncmp(A.set.values[i], "infer.", 6) != 0)
            return drdc_fail(DRDC_ERR_USAGE, "--set %s: only infer.* keys can change after training (the other keys "
                             "describe the trained networks of %s)", A.set.values[i], path);
    drdc_status st = DRDC_OK;
    for (int i = 0; i < A.set.n && !st; i++) st = drdc_config_set(&m->cfg, A.set.values[i]);
    if (!st) st = drdc_config_validate(&m->cfg);
    if (st) return drdc_error_context(st, "--set");
    drdc_data_config dc = m->cfg.data;
    if (A.data_root) snprintf(dc.root, sizeof dc.root, "%s", A.data_root);
    drdc_dataset ds;
    if ((st = drdc_dataset_open_config(&ds, &dc))) return drdc_error_context(st, "recalibration after --set");
    drdc_sample_list train = {0}, val = {0};
    st = drdc_dataset_split(&ds, dc.val_fraction, (uint64_t)m->cfg.train.seed, &train, &val);
    if (!st && A.calib_images > 0 && A.calib_images < val.n) {   /* evenly spaced, so every category counts */
        for (int i = 0; i < A.calib_images; i++) val.items[i] = val.items[(int64_t)i * val.n / A.calib_images];
        val.n = A.calib_images;
    }
    if (!st) st = drdc_calibrate(m, &val, 0);
    if (!st)
        printf("recalibrated with the --set values on %d validation images (of the model's data split)\n", val.n);
    drdc_sample_list_free(&train);
    drdc_sample_list_free(&val);
    drdc_dataset_free(&ds);
    return st ? drdc_error_context(st, "recalibration after --set") : DRDC_OK;
}

static drdc_status eval_model(const drdc_runtime *rt) {
    const char *path = A.model ? A.model : "runs/latest/model.safetensors";
    if (!A.model && !drdc_is_file(path))
        return drdc_fail(DRDC_ERR_INPUT, "no --model given and no %s: train one first (drdc train --config FILE) or "
                         "give --model FILE", path);
    drdc_model m;
    drdc_status st = drdc_model_load(&m, path, rt->device);
    if (st) return st;
    if (A.set.n && (st = apply_overrides(&m, path))) {
        drdc_model_free(&m);
        return st;
    }
    const char *method = A.method ? A.method : (m.refiner_steps > 0 ? "both" : "base");
    if (!A.method && m.refiner_steps <= 0)
        fprintf(stderr, "warning: %s has no trained diffusion refiner (0 refiner steps): evaluating the base "
                "method only (train stage 2 for DRDC)\n", path);
    printf("model %s: %s backbone (%s), base %d epochs, refiner %d steps\n", path, m.cfg.backbone.arch,
           m.backbone_pretrained ? "pretrained" : "RANDOM", m.base_epochs, m.refiner_steps);
    model_source ms = {&m, {0}, 0, 0, -1, {NULL}, {NULL}};
    int all = strcmp(method, "all") == 0;
    ms.want[SRC_BASE] = all || strcmp(method, "drdc") != 0;
    ms.want[SRC_DIFF] = all;
    ms.want[SRC_DRDC] = all || strcmp(method, "base") != 0;
    if (ms.want[SRC_DRDC] && m.refiner_steps <= 0) {
        drdc_model_free(&m);
        return drdc_fail(DRDC_ERR_INPUT, "--method %s needs the diffusion refiner, and %s has none (train stage 2, or "
                         "use --method base)", method, path);
    }
    ms.size = ms.want[SRC_DRDC] ? m.cfg.refiner.image_size : m.cfg.data.image_size;
    ms.load_size = drdc_model_input_size(&m, ms.want[SRC_DRDC]);
    if (ms.want[SRC_DRDC]) {
        char how[256];
        drdc_model_describe_drdc(&m, how, sizeof how);
        printf("drdc inference: %s\n", how);
    }
    /* the calibrated colour range of each method's maps (the diffusion map has no threshold) */
    double src_lo[N_SRC] = {m.stats.score_lo, 0, m.stats.drdc_lo}, src_hi[N_SRC] = {m.stats.score_hi, 0, m.stats.drdc_hi};
    drdc_colour_range(&(drdc_norm_stats){m.stats.diff_mean, m.stats.diff_std}, NAN, &src_lo[SRC_DIFF], &src_hi[SRC_DIFF]);
    const char *methods[N_SRC];
    double lo[N_SRC], hi[N_SRC];
    int n_methods = 0;
    for (int k = 0; k < N_SRC; k++) {
        if (!ms.want[k]) continue;
        lo[n_methods] = src_lo[k];
        hi[n_methods] = src_hi[k];
        methods[n_methods++] = SRC_NAMES[k];
    }
    if (!st)
        st = run_eval(A.dataset ? A.dataset : m.cfg.data.dataset, A.data_root ? A.data_root : m.cfg.data.root,
                      &m.cfg.data, n_methods, methods, model_source_fn, &ms, m.stats.ready ? lo : NULL,
                      m.stats.ready ? hi : NULL, drdc_model_describe_json(&m, path));
    for (int k = 0; k < N_SRC; k++) {
        free(ms.maps[k]);
        free(ms.scores[k]);
    }
    drdc_model_free(&m);
    return st;
}

int drdc_cmd_eval(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    int help = 0;
    drdc_status st = drdc_cli_parse(&SPEC, argc, argv, &help);
    if (st) return drdc_cli_report("eval", st);
    if (help) {
        drdc_cli_print_help(stdout, &SPEC);
        return 0;
    }
    if (A.method && strcmp(A.method, "base") && strcmp(A.method, "drdc") && strcmp(A.method, "both") &&
        strcmp(A.method, "all"))
        return drdc_cli_report("eval", drdc_fail(DRDC_ERR_USAGE, "--method must be base, drdc, both or all, not '%s'",
                                                 A.method));
    if (A.maps && A.model)
        return drdc_cli_report("eval", drdc_fail(DRDC_ERR_USAGE, "give --model or --maps, not both"));
    if (A.maps && (A.set.n || A.calib_images))
        return drdc_cli_report("eval", drdc_fail(DRDC_ERR_USAGE, "--set and --calib-images need --model, not --maps"));
    if (A.maps) return drdc_cli_report("eval", eval_maps());
    drdc_runtime rt;
    st = drdc_runtime_init(&rt, A.device, A.threads);
    if (st) return drdc_cli_report("eval", st);
    st = eval_model(&rt);
    if (st == DRDC_ERR_NOMEM)
        drdc_error_hint(st, "out of memory: try --method base, or --device cpu");
    return drdc_cli_report("eval", st);
}
