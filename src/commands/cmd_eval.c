/* cmd_eval.c: `drdc eval`: exact per-category metrics of a model's maps (or of maps made by any
 * other tool, --maps) on a labelled test set. */
#include "drdc/commands/commands.h"
#include "drdc/core/fsutil.h"
#include "drdc/data/dataset.h"
#include "drdc/formats/npy.h"
#include "drdc/model/calibrate.h"
#include "drdc/model/eval.h"
#include "drdc/model/model.h"
#include "drdc/shim/runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    const char *model, *dataset, *data_root, *categories, *method, *json, *csv, *dump_maps, *vis, *maps, *device;
    const char *report;
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
    {"--vis", "DIR", DRDC_OPT_STRING, &A.vis,
     "one labelled panel per test image: image with the truth outlined, each method's map with its colour bar, "
     "threshold and predicted regions, scores and verdicts", NULL, 0, 0},
    {"--report", "DIR", DRDC_OPT_STRING, &A.report,
     "DIR/index.html: one self-contained page (tables, ROC/PR/PRO curves, thresholds with false-reject and escape "
     "rates, test images worst first with their panels in DIR/panels)", NULL, 0, 0},
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
                            const double *vis_hi, char *model_json, drdc_threshold_source thresholds,
                            const char *const *about, int n_about) {
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
    /* the report's header lines: the caller's, then the subset when --every thins the test set */
    const char *about_all[8];
    int n_about_all = 0;
    for (int i = 0; i < n_about && n_about_all < 7; i++) about_all[n_about_all++] = about[i];
    char subset[160];
    if (A.every > 1) {
        drdc_dataset_keep_every(&ds, A.every);
        snprintf(subset, sizeof subset, "--every %d: a subset, test images 0, %d, %d, ... of each category", A.every,
                 A.every, 2 * A.every);
        printf("%s\n", subset);
        about_all[n_about_all++] = subset;
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
    char panels[8192];
    if (A.report) snprintf(panels, sizeof panels, "%s/panels", A.report);
    drdc_eval_options o = {A.eval_size, A.dump_maps, A.report ? panels : A.vis, vis_lo, vis_hi, 0,
                           thresholds, thresholds ? ctx : NULL, A.report != NULL};
    drdc_eval_result r;
    st = drdc_evaluate(&ds, n_methods, methods, source, ctx, &o, &r);
    if (!st) {
        r.model_json = model_json;   /* the result owns it now */
        model_json = NULL;
        drdc_eval_print_tables(stdout, &r);
        if (A.json) st = drdc_eval_write_json(&r, A.json);
        if (!st && A.csv) st = drdc_eval_write_csv(&r, A.csv);
        if (!st && A.report) st = drdc_eval_write_report(&r, A.report, "panels", about_all, n_about_all);
        if (!st && A.report) printf("report: %s/index.html\n", A.report);
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
    const char *about[1] = {A.maps};
    return run_eval(A.dataset, A.data_root, NULL, 1, methods, maps_source, (void *)A.maps, NULL, NULL, NULL, NULL,
                    about, 1);
}

/* --set: the infer.* overrides on the loaded model, then its normal statistics recomputed on its
 * validation images (the stored ones describe the trained settings). */
static drdc_status apply_overrides(drdc_model *m, const char *path) {
    drdc_status st = drdc_model_set_infer(m, A.set.values, A.set.n, path);
    if (st) return st;
    int n = 0;
    st = drdc_model_recalibrate(m, A.data_root, A.calib_images, &n);
    if (st) return drdc_error_context(st, "recalibration after --set");
    printf("recalibrated with the --set values on %d validation images (of the model's data split)\n", n);
    return DRDC_OK;
}

static drdc_status eval_model(const drdc_runtime *rt) {
    const char *path = A.model ? A.model : "runs/latest/model.safetensors";
    if (!A.model && !drdc_is_file(path))
        return drdc_fail(DRDC_ERR_INPUT, "no --model given and no %s: train one first (drdc train --config FILE) or "
                         "give --model FILE", path);
    drdc_model m;
    drdc_model_source *ms = NULL;
    drdc_status st = drdc_model_load(&m, path, rt->device);
    if (st) return st;
    if (A.set.n) TRY(apply_overrides(&m, path));
    const char *method = A.method ? A.method : (m.refiner_steps > 0 ? "both" : "base");
    if (!A.method && m.refiner_steps <= 0)
        fprintf(stderr, "warning: %s has no trained diffusion refiner (0 refiner steps): evaluating the base "
                "method only (train stage 2 for DRDC)\n", path);
    printf("model %s: %s backbone (%s), base %d epochs, refiner %d steps\n", path, m.cfg.backbone.arch,
           m.backbone_pretrained ? "pretrained" : "RANDOM", m.base_epochs, m.refiner_steps);
    unsigned want = strcmp(method, "all") == 0    ? DRDC_METHOD_BASE | DRDC_METHOD_DIFFUSION | DRDC_METHOD_DRDC
                    : strcmp(method, "both") == 0 ? DRDC_METHOD_BASE | DRDC_METHOD_DRDC
                    : strcmp(method, "drdc") == 0 ? DRDC_METHOD_DRDC
                                                  : DRDC_METHOD_BASE;
    st = drdc_model_source_new(&ms, &m, want);
    if (st) {
        drdc_error_context(st, "--method %s with %s", method, path);
        goto done;
    }
    if (want & DRDC_METHOD_DRDC) {
        char how[256];
        drdc_model_describe_drdc(&m, how, sizeof how);
        printf("drdc inference: %s\n", how);
    }
    const char *methods[3];
    double lo[3], hi[3];
    int n_methods = drdc_model_source_methods(ms, methods, lo, hi);
    char line[2][512];
    snprintf(line[0], sizeof line[0], "model: %s (%s backbone, base %d epochs, refiner %d steps)", path,
             m.cfg.backbone.arch, m.base_epochs, m.refiner_steps);
    drdc_model_describe_drdc(&m, line[1], sizeof line[1]);
    const char *about[2] = {line[0], line[1]};
    TRY(run_eval(A.dataset ? A.dataset : m.cfg.data.dataset, A.data_root ? A.data_root : m.cfg.data.root, &m.cfg.data,
                 n_methods, methods, drdc_model_source_maps, ms, m.stats.ready ? lo : NULL, m.stats.ready ? hi : NULL,
                 drdc_model_describe_json(&m, path), m.stats.ready ? drdc_model_source_thresholds : NULL, about,
                 (want & DRDC_METHOD_DRDC) ? 2 : 1));
done:
    drdc_model_source_free(ms);
    drdc_model_free(&m);
    return st;
}

int drdc_cmd_eval(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    int rc = drdc_cli_begin(&SPEC, argc, argv);
    if (rc >= 0) return rc;
    drdc_status st;
    if (A.method && strcmp(A.method, "base") && strcmp(A.method, "drdc") && strcmp(A.method, "both") &&
        strcmp(A.method, "all"))
        return drdc_cli_report("eval", drdc_fail(DRDC_ERR_USAGE, "--method must be base, drdc, both or all, not '%s'",
                                                 A.method));
    if (A.maps && A.model)
        return drdc_cli_report("eval", drdc_fail(DRDC_ERR_USAGE, "give --model or --maps, not both"));
    if (A.maps && (A.set.n || A.calib_images))
        return drdc_cli_report("eval", drdc_fail(DRDC_ERR_USAGE, "--set and --calib-images need --model, not --maps"));
    /* every path this command builds from these fits its buffers (4096+ bytes) when they are at most
     * 2048 bytes: longer ones are refused, never cut */
    const char *long_flags[] = {"--json", "--csv", "--report", "--vis", "--dump-maps", "--maps", "--data-root",
                                "--model", "--categories"};
    const char *long_vals[] = {A.json, A.csv, A.report, A.vis, A.dump_maps, A.maps, A.data_root, A.model, A.categories};
    for (size_t i = 0; i < sizeof long_flags / sizeof long_flags[0]; i++)
        if (long_vals[i] && strlen(long_vals[i]) > 2048)
            return drdc_cli_report("eval", drdc_fail(DRDC_ERR_USAGE, "%s: %zu bytes; at most 2048 (nothing is cut)",
                                                     long_flags[i], strlen(long_vals[i])));
    const char *flags[2] = {"--json", "--csv"};
    const char *outs[2] = {A.json, A.csv};
    for (int i = 0; i < 2; i++) {   /* an output that cannot be written is known before hours of work */
        if (!outs[i] || strcmp(outs[i], "-") == 0 || !strchr(outs[i], '/')) continue;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", outs[i]);
        *strrchr(dir, '/') = '\0';
        if (dir[0] && !drdc_is_dir(dir))
            return drdc_cli_report("eval", drdc_fail(DRDC_ERR_INPUT, "%s %s: folder %s does not exist", flags[i],
                                                     outs[i], dir));
    }
    if (A.report && A.vis)
        return drdc_cli_report("eval", drdc_fail(DRDC_ERR_USAGE, "--report writes its panels into DIR/panels: give "
                                                 "--report or --vis, not both"));
    if (A.report && (st = drdc_mkdirs(A.report))) return drdc_cli_report("eval", drdc_error_context(st, "--report"));
    if (A.maps) return drdc_cli_report("eval", eval_maps());
    drdc_runtime rt;
    st = drdc_runtime_init(&rt, A.device, A.threads);
    if (st) return drdc_cli_report("eval", st);
    st = eval_model(&rt);
    if (st == DRDC_ERR_NOMEM)
        drdc_error_hint(st, "out of memory: try --method base, or --device cpu");
    return drdc_cli_report("eval", st);
}
