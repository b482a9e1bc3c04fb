/* cmd_infer.c: `drdc infer`: scores images and writes full-resolution heatmaps. */
#include "drdc/commands/commands.h"
#include "drdc/core/fsutil.h"
#include "drdc/core/progress.h"
#include "drdc/data/dataset.h"
#include "drdc/model/infer.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    const char *model, *image, *images, *out, *out_dir, *overlay, *json, *method, *grids, *scales, *device;
    int steps, tau, threads;
    double alpha;
    drdc_opt_multi set;
} A;

static const drdc_option OPTIONS[] = {
    {"--model", "FILE", DRDC_OPT_STRING, &A.model, "trained model", "runs/latest/model.safetensors", 0, 0},
    {"--image", "FILE", DRDC_OPT_STRING, &A.image, "one image to score", NULL, 0, 0},
    {"--out", "FILE", DRDC_OPT_STRING, &A.out, "heatmap PNG for --image", NULL, 0, 0},
    {"--overlay", "FILE", DRDC_OPT_STRING, &A.overlay, "heatmap drawn over the image, PNG", NULL, 0, 0},
    {"--json", "FILE", DRDC_OPT_STRING, &A.json, "score, threshold, verdict and timings as JSON", NULL, 0, 0},
    {"--images", "DIR", DRDC_OPT_STRING, &A.images, "a folder of images to score", NULL, 0, 0},
    {"--out-dir", "DIR", DRDC_OPT_STRING, &A.out_dir, "output folder for --images (heatmaps, scores.csv)", NULL, 0, 0},
    {"--method", "M", DRDC_OPT_STRING, &A.method, "base | drdc", "drdc", 0, 0},
    {"--steps", "N", DRDC_OPT_INT, &A.steps, "DDIM steps (overrides infer.steps)", NULL, 1, 1000},
    {"--tau", "T", DRDC_OPT_INT, &A.tau, "start timestep (overrides infer.tau)", NULL, 1, 100000},
    {"--grids", "LIST", DRDC_OPT_STRING, &A.grids, "grid sizes, e.g. 8,16 (overrides infer.grids)", NULL, 0, 0},
    {"--scales", "LIST", DRDC_OPT_STRING, &A.scales, "scales, e.g. 1,0.5,0.25 (overrides infer.scales)", NULL, 0, 0},
    {"--alpha", "A", DRDC_OPT_DOUBLE, &A.alpha, "weight of the diffusion map (overrides infer.alpha)", NULL, 0, 1},
    {"--set", "KEY=VALUE", DRDC_OPT_MULTI, &A.set, "override an inference key, e.g. --set infer.start=masked "
     "(repeatable; infer.* only)", NULL, 0, 0},
    DRDC_OPTS_RUNTIME(&A.device, &A.threads),
};

static const drdc_command SPEC = {
    "infer", "drdc infer [--model FILE] (--image FILE --out heat.png | --images DIR --out-dir DIR) [options]",
    "Score images with a trained model: an anomaly score, a verdict against the calibrated\n"
    "threshold, and a heatmap at the image's original size on a fixed colour scale. --steps, --tau,\n"
    "--grids, --scales, --alpha and --set keep the statistics and threshold calibrated with the\n"
    "trained settings (drdc eval --set recalibrates).",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_infer_spec(void) { return &SPEC; }

/* The overrides as "infer.KEY=VALUE" assignments for drdc_inferer_open: --set, then the flags (so a
 * flag wins over a --set of the same key). The config setter parses and checks the values. */
enum { MAX_SETS = 64 };
static int collect_sets(char bufs[][256], const char **sets) {
    int n = 0;
    for (int i = 0; i < A.set.n && n < MAX_SETS - 5; i++) sets[n++] = A.set.values[i];
    if (A.steps) snprintf(bufs[n], 256, "infer.steps=%d", A.steps), sets[n] = bufs[n], n++;
    if (A.tau) snprintf(bufs[n], 256, "infer.tau=%d", A.tau), sets[n] = bufs[n], n++;
    if (A.alpha >= 0) snprintf(bufs[n], 256, "infer.alpha=%.17g", A.alpha), sets[n] = bufs[n], n++;
    if (A.grids) snprintf(bufs[n], 256, "infer.grids=%.200s", A.grids), sets[n] = bufs[n], n++;
    if (A.scales) snprintf(bufs[n], 256, "infer.scales=%.200s", A.scales), sets[n] = bufs[n], n++;
    return n;
}

typedef struct image_result {
    drdc_infer_result r;
    double write_s;
} image_result;

/* Scores one image file and writes its heatmap (and overlay) at the original size. */
static drdc_status infer_one(const drdc_inferer *c, const char *path, const char *heat_out, const char *overlay_out,
                             image_result *ir) {
    drdc_status st = drdc_infer_image(c, path, &ir->r);
    double t = drdc_now_seconds();
    if (!st) st = drdc_infer_write_pictures(c, &ir->r, heat_out, overlay_out);
    ir->write_s = drdc_now_seconds() - t;
    return st;
}

static drdc_status write_json(const drdc_inferer *c, const char *image, const image_result *ir, const char *path) {
    const drdc_infer_result *r = &ir->r;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", image);
    cJSON_AddStringToObject(o, "method", c->use_drdc ? "drdc" : "base");
    if (c->use_drdc) {
        cJSON *d = cJSON_AddObjectToObject(o, "drdc");
        const drdc_infer_config *ic = &c->m.cfg.infer;
        cJSON_AddStringToObject(d, "start", ic->start);
        cJSON_AddNumberToObject(d, "tau", ic->tau);
        cJSON_AddNumberToObject(d, "steps", ic->steps);
        cJSON_AddNumberToObject(d, "K", ic->K);
        cJSON_AddBoolToObject(d, "clip_x0", ic->clip_x0);
        cJSON_AddNumberToObject(d, "alpha", ic->alpha);
    }
    cJSON_AddNumberToObject(o, "score", r->score);
    cJSON_AddNumberToObject(o, "threshold", c->threshold);
    cJSON_AddStringToObject(o, "verdict", r->score >= c->threshold ? "anomalous" : "normal");
    cJSON_AddNumberToObject(o, "base_score", r->base_score);
    if (c->use_drdc) cJSON_AddNumberToObject(o, "drdc_score", r->score);
    cJSON_AddNumberToObject(o, "heatmap_lo", c->lo);
    cJSON_AddNumberToObject(o, "heatmap_hi", c->hi);
    cJSON *t = cJSON_AddObjectToObject(o, "timings_ms");
    cJSON_AddNumberToObject(t, "load", 1e3 * r->load_s);
    cJSON_AddNumberToObject(t, "base", 1e3 * r->base_s);
    cJSON_AddNumberToObject(t, "refiner", 1e3 * r->refine_s);
    cJSON_AddNumberToObject(t, "fusion", 1e3 * r->fusion_s);
    cJSON_AddNumberToObject(t, "write", 1e3 * ir->write_s);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return drdc_fail(DRDC_ERR_NOMEM, "out of memory writing %s", path);
    drdc_status st = drdc_write_file_atomic(path, text, strlen(text));
    free(text);
    return st;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* --images DIR: every image file in DIR (sorted), heatmap + overlay each, and scores.csv. */
static drdc_status infer_folder(const drdc_inferer *c) {
    DIR *d = opendir(A.images);
    if (!d) return drdc_fail(DRDC_ERR_IO, "%s: cannot open folder: %s", A.images, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0, skipped = 0;
    struct dirent *e;
    drdc_status st = DRDC_OK;
    while (!st && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (!drdc_is_image_file(e->d_name)) {
            skipped++;
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **g = realloc(names, sizeof *names * cap);
            if (!g) st = drdc_fail(DRDC_ERR_NOMEM, "out of memory listing %s", A.images);
            else names = g;
        }
        if (!st && !(names[n++] = strdup(e->d_name))) st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    }
    closedir(d);
    if (!st && n == 0) st = drdc_fail(DRDC_ERR_INPUT, "%s: no PNG, JPEG or BMP images", A.images);
    if (!st) st = drdc_mkdirs(A.out_dir);
    size_t csv_cap = 64 + (size_t)n * 600, csv_len = 0;
    char *csv = st ? NULL : malloc(csv_cap);
    if (!st && !csv) st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    if (!st) {
        qsort(names, (size_t)n, sizeof *names, cmp_str);
        csv_len = (size_t)snprintf(csv, csv_cap, "name,score,threshold,verdict\n");
        if (skipped) fprintf(stderr, "infer: skipped %d files in %s that are not images\n", skipped, A.images);
    }
    drdc_progress prog;
    drdc_progress_begin(&prog, "infer images", n, 0);
    int anomalous = 0;
    for (int i = 0; !st && i < n; i++) {
        char in[4096], heat[4096], over[4096], stem[512];
        snprintf(in, sizeof in, "%s/%s", A.images, names[i]);
        drdc_path_stem(names[i], stem, sizeof stem);
        snprintf(heat, sizeof heat, "%s/%s_heat.png", A.out_dir, stem);
        snprintf(over, sizeof over, "%s/%s_overlay.png", A.out_dir, stem);
        image_result r;
        st = infer_one(c, in, heat, over, &r);
        drdc_infer_result_free(&r.r);
        if (st) break;
        int bad = r.r.score >= c->threshold;
        anomalous += bad;
        csv_len += (size_t)snprintf(csv + csv_len, csv_cap - csv_len, "%.400s,%.6g,%.6g,%s\n", names[i], r.r.score,
                                    c->threshold, bad ? "anomalous" : "normal");
        drdc_progress_update(&prog, i + 1, names[i]);
    }
    drdc_progress_end(&prog);
    if (!st) {
        char path[4096];
        snprintf(path, sizeof path, "%s/scores.csv", A.out_dir);
        st = drdc_write_file_atomic(path, csv, csv_len);
        if (!st) printf("%d images, %d anomalous (threshold %.4g); heatmaps, overlays and scores.csv in %s\n", n,
                        anomalous, c->threshold, A.out_dir);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(csv);
    return st;
}

/* The folder of an output file must exist before any work, so a failure leaves nothing half-done. */
static drdc_status check_output(const char *flag, const char *path) {
    if (!path) return DRDC_OK;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return DRDC_OK;
    *slash = '\0';
    if (dir[0] && !drdc_is_dir(dir))
        return drdc_fail(DRDC_ERR_INPUT, "%s %s: folder %s does not exist", flag, path, dir);
    return DRDC_OK;
}

static drdc_status run_infer(const drdc_runtime *rt) {
    drdc_status st = check_output("--out", A.out);
    if (!st) st = check_output("--overlay", A.overlay);
    if (!st) st = check_output("--json", A.json);
    if (st) return st;
    const char *path = A.model ? A.model : "runs/latest/model.safetensors";
    if (!A.model && !drdc_is_file(path))
        return drdc_fail(DRDC_ERR_INPUT, "no --model given and no %s: train one first (drdc train --config FILE) or "
                         "give --model FILE", path);
    char bufs[MAX_SETS][256];
    const char *sets[MAX_SETS];
    int n_sets = collect_sets(bufs, sets);
    drdc_inferer c;
    st = drdc_inferer_open(&c, path, A.method, sets, n_sets, rt);
    if (st) return st;
    if (c.use_drdc) fprintf(stderr, "drdc inference: %s\n", c.how);
    if (A.image) {
        image_result r;
        st = infer_one(&c, A.image, A.out, A.overlay, &r);
        if (!st && A.json) st = write_json(&c, A.image, &r, A.json);
        if (!st) {
            printf("%s: score %.4g, threshold %.4g: %s (%s)\n", A.image, r.r.score, c.threshold,
                   r.r.score >= c.threshold ? "ANOMALOUS" : "normal", c.use_drdc ? "drdc" : "base");
            if (A.out) printf("heatmap: %s (colour scale %.3g .. %.3g, turbo)\n", A.out, c.lo, c.hi);
        }
        drdc_infer_result_free(&r.r);
    } else {
        st = infer_folder(&c);
    }
    drdc_inferer_close(&c);
    return st;
}

int drdc_cmd_infer(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    A.alpha = -1;
    int rc = drdc_cli_begin(&SPEC, argc, argv);
    if (rc >= 0) return rc;
    drdc_status st;
    if (!A.image == !A.images)
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "give exactly one of --image FILE or --images DIR"));
    if (A.image && !A.out && !A.json)
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--image needs --out FILE (or --json FILE)"));
    if (A.images && !A.out_dir)
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--images needs --out-dir DIR"));
    if (A.method && strcmp(A.method, "base") && strcmp(A.method, "drdc"))
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--method must be base or drdc, not '%s'", A.method));
    drdc_runtime rt;
    st = drdc_runtime_init(&rt, A.device, A.threads);
    if (st) return drdc_cli_report("infer", st);
    st = run_infer(&rt);
    if (st == DRDC_ERR_NOMEM)
        drdc_error_hint(st, "out of memory: try fewer --steps or --grids, --method base, or --device cpu");
    return drdc_cli_report("infer", st);
}
