/* cmd_infer.c: `drdc infer`: scores images and writes full-resolution heatmaps. */
#include "drdc/commands/commands.h"
#include "drdc/data/dataset.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/image.h"
#include "drdc/stages/heatmap.h"
#include "drdc/model/model.h"
#include "drdc/core/progress.h"
#include "drdc/shim/runtime.h"

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
    DRDC_OPTS_RUNTIME(&A.device, &A.threads),
};

static const drdc_command SPEC = {
    "infer", "drdc infer [--model FILE] (--image FILE --out heat.png | --images DIR --out-dir DIR) [options]",
    "Score images with a trained model: an anomaly score, a verdict against the calibrated\n"
    "threshold, and a heatmap at the image's original size on a fixed colour scale. --steps, --tau\n"
    "and --alpha keep the statistics and threshold calibrated with the trained settings (drdc eval\n"
    "--set recalibrates).",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_infer_spec(void) { return &SPEC; }

/* Parses "8,16" / "1,0.5" into an int or double list (cap entries). */
static drdc_status parse_list(const char *flag, const char *text, int is_int, int *ints, double *dbls, int *n) {
    char buf[512], *end;
    snprintf(buf, sizeof buf, "%s", text);
    *n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (*n >= DRDC_MAX_LIST) return drdc_fail(DRDC_ERR_USAGE, "%s: at most %d values", flag, DRDC_MAX_LIST);
        double v = strtod(tok, &end);
        if (end == tok || *end || (is_int && v != (int)v))
            return drdc_fail(DRDC_ERR_USAGE, "%s: '%s' is not a %s", flag, tok, is_int ? "whole number" : "number");
        if (is_int)
            ints[(*n)++] = (int)v;
        else
            dbls[(*n)++] = v;
    }
    if (*n == 0) return drdc_fail(DRDC_ERR_USAGE, "%s: empty list", flag);
    return DRDC_OK;
}

/* Applies --steps, --tau, --grids, --scales, --alpha to the model's inference settings. */
static drdc_status apply_overrides(drdc_config *cfg) {
    drdc_infer_config *ic = &cfg->infer;
    if (A.steps) ic->steps = A.steps;
    if (A.tau) ic->tau = A.tau;
    if (A.alpha >= 0) ic->alpha = A.alpha;
    drdc_status st = DRDC_OK;
    if (A.grids) st = parse_list("--grids", A.grids, 1, ic->grids, NULL, &ic->n_grids);
    if (!st && A.scales) st = parse_list("--scales", A.scales, 0, NULL, ic->scales, &ic->n_scales);
    if (!st) st = drdc_config_validate(cfg);
    return st;
}

typedef struct infer_ctx {
    drdc_model m;
    int use_drdc, size;   /* size: of the maps */
    int load_size;        /* images go in at load_size x load_size (drdc_model_input_size) */
    double lo, hi, threshold;
    char how[256];   /* the DRDC settings in words (drdc_model_describe_drdc) */
} infer_ctx;

typedef struct image_result {
    float score, base_score;
    double load_s, base_s, refine_s, fusion_s, write_s;
} image_result;

/* Scores one image file and writes its heatmap (and overlay) at the original size. */
static drdc_status infer_one(infer_ctx *c, const char *path, const char *heat_out, const char *overlay_out,
                             image_result *r) {
    drdc_image img = {0}, small = {0}, map = {0}, heat = {0}, colour = {0}, over = {0};
    dt_tensor host = NULL, chw = NULL, images = NULL, out_map = NULL, out_score = NULL, bscore = NULL;
    int S = c->size, I = c->load_size;
    double t0 = drdc_now_seconds();
    drdc_status st = drdc_image_load_rgb(path, &img);
    if (!st) st = drdc_image_resize(&img, I, I, &small);
    if (!st) st = drdc_image_alloc(&map, S, S, 1);
    const int64_t hwc[4] = {1, I, I, 3}, perm[4] = {0, 3, 1, 2};
    if (!st) st = dt_from_host(&host, small.data, DT_F32, hwc, 4, (dt_device){DT_CPU, 0});
    if (!st) st = dt_permute(&chw, host, perm, 4);                  /* [1,3,S,S] */
    if (!st) st = dt_to_device(&images, chw, c->m.dev);
    r->load_s = drdc_now_seconds() - t0;
    if (!st && c->use_drdc) {
        drdc_stage_times tm;
        st = drdc_model_drdc(&out_map, &out_score, NULL, &bscore, NULL, &c->m, images, 0, &tm);
        r->base_s = tm.base_s;
        r->refine_s = tm.refine_s;
        r->fusion_s = tm.fusion_s;
    } else if (!st) {
        double t1 = drdc_now_seconds();
        st = drdc_model_base(&out_map, &out_score, &c->m, images);
        if (!st) st = dt_synchronize(c->m.dev);
        r->base_s = drdc_now_seconds() - t1;
        r->refine_s = r->fusion_s = 0;
    }
    double t2 = drdc_now_seconds();
    if (!st) st = dt_copy_to_host(out_map, map.data, sizeof(float) * (size_t)S * S);
    if (!st) st = dt_copy_to_host(out_score, &r->score, sizeof(float));
    r->base_score = r->score;
    if (!st && bscore) st = dt_copy_to_host(bscore, &r->base_score, sizeof(float));
    if (!st) st = drdc_image_resize(&map, img.w, img.h, &heat);    /* the image's original size */
    if (!st && heat_out) st = drdc_heatmap_colorize(&heat, (float)c->lo, (float)c->hi, &colour);
    if (!st && heat_out) st = drdc_image_write_png(heat_out, &colour);
    if (!st && overlay_out) st = drdc_heatmap_overlay(&img, &heat, (float)c->lo, (float)c->hi, 0.6f, &over);
    if (!st && overlay_out) st = drdc_image_write_png(overlay_out, &over);
    r->write_s = drdc_now_seconds() - t2;
    dt_free(host);
    dt_free(chw);
    dt_free(images);
    dt_free(out_map);
    dt_free(out_score);
    dt_free(bscore);
    drdc_image_free(&img);
    drdc_image_free(&small);
    drdc_image_free(&map);
    drdc_image_free(&heat);
    drdc_image_free(&colour);
    drdc_image_free(&over);
    return st;
}

static drdc_status write_json(const infer_ctx *c, const char *image, const image_result *r, const char *path) {
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
    cJSON_AddNumberToObject(t, "write", 1e3 * r->write_s);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return drdc_fail(DRDC_ERR_NOMEM, "out of memory writing %s", path);
    drdc_status st = drdc_write_file_atomic(path, text, strlen(text));
    free(text);
    return st;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* --images DIR: every image file in DIR (sorted), heatmap + overlay each, and scores.csv. */
static drdc_status infer_folder(infer_ctx *c) {
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
        if (st) break;
        int bad = r.score >= c->threshold;
        anomalous += bad;
        csv_len += (size_t)snprintf(csv + csv_len, csv_cap - csv_len, "%.400s,%.6g,%.6g,%s\n", names[i], r.score,
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
    drdc_status st0 = check_output("--out", A.out);
    if (!st0) st0 = check_output("--overlay", A.overlay);
    if (!st0) st0 = check_output("--json", A.json);
    if (st0) return st0;
    const char *path = A.model ? A.model : "runs/latest/model.safetensors";
    if (!A.model && !drdc_is_file(path))
        return drdc_fail(DRDC_ERR_INPUT, "no --model given and no %s: train one first (drdc train --config FILE) or "
                         "give --model FILE", path);
    infer_ctx c;
    memset(&c, 0, sizeof c);
    drdc_status st = drdc_model_load(&c.m, path, rt->device);
    if (st) return st;
    if (A.method && strcmp(A.method, "drdc") == 0 && c.m.refiner_steps <= 0)
        st = drdc_fail(DRDC_ERR_INPUT, "--method drdc needs the diffusion refiner, and %s has none (use --method base)",
                       path);
    c.use_drdc = A.method ? strcmp(A.method, "drdc") == 0 : c.m.refiner_steps > 0;
    if (!A.method && c.m.refiner_steps <= 0)
        fprintf(stderr, "warning: %s has no trained diffusion refiner (0 refiner steps): using --method base "
                "(train stage 2 for DRDC)\n", path);
    if (!st) st = apply_overrides(&c.m.cfg);
    if (!st && !c.m.stats.ready) st = drdc_fail(DRDC_ERR_INPUT, "%s is not calibrated (training did not finish)", path);
    if (!st && c.use_drdc && !c.m.stats.drdc_ready)
        st = drdc_fail(DRDC_ERR_INPUT, "%s is not calibrated for DRDC (use --method base)", path);
    c.size = c.use_drdc ? c.m.cfg.refiner.image_size : c.m.cfg.data.image_size;
    c.load_size = drdc_model_input_size(&c.m, c.use_drdc);
    c.lo = c.use_drdc ? c.m.stats.drdc_lo : c.m.stats.score_lo;
    c.hi = c.use_drdc ? c.m.stats.drdc_hi : c.m.stats.score_hi;
    c.threshold = c.use_drdc ? c.m.stats.drdc_threshold : c.m.stats.base_threshold;
    if (!st && c.use_drdc) {
        drdc_model_describe_drdc(&c.m, c.how, sizeof c.how);
        fprintf(stderr, "drdc inference: %s\n", c.how);
    }
    if (!st && A.image) {
        image_result r;
        st = infer_one(&c, A.image, A.out, A.overlay, &r);
        if (!st && A.json) st = write_json(&c, A.image, &r, A.json);
        if (!st) {
            printf("%s: score %.4g, threshold %.4g: %s (%s)\n", A.image, r.score, c.threshold,
                   r.score >= c.threshold ? "ANOMALOUS" : "normal", c.use_drdc ? "drdc" : "base");
            if (A.out) printf("heatmap: %s (colour scale %.3g .. %.3g, turbo)\n", A.out, c.lo, c.hi);
        }
    } else if (!st) {
        st = infer_folder(&c);
    }
    drdc_model_free(&c.m);
    return st;
}

int drdc_cmd_infer(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    A.alpha = -1;
    int help = 0;
    drdc_status st = drdc_cli_parse(&SPEC, argc, argv, &help);
    if (st) return drdc_cli_report("infer", st);
    if (help) {
        drdc_cli_print_help(stdout, &SPEC);
        return 0;
    }
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
