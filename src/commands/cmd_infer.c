/* cmd_infer.c: `drdc infer`: scores one image or a folder tree of images with a trained model and
 * writes the decisions (verdict, defect mask, regions) and pictures. The scoring and deciding is the
 * model layer's (model/infer.c); this file is the options, the folder walk and the output files. */
#include "drdc/commands/commands.h"
#include "drdc/core/fsutil.h"
#include "drdc/core/progress.h"
#include "drdc/data/dataset.h"
#include "drdc/formats/csv.h"
#include "drdc/model/infer.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static struct {
    const char *model, *image, *images, *out, *out_dir, *overlay, *mask, *panel, *json, *jsonl, *csv, *method;
    const char *grids, *scales, *category, *device;
    int steps, tau, threads, masks, panels, quiet;
    double alpha, threshold;
    drdc_opt_multi set;
} A;

static const drdc_option OPTIONS[] = {
    {"--model", "FILE", DRDC_OPT_STRING, &A.model, "trained model", "runs/latest/model.safetensors", 0, 0},
    {"--image", "FILE", DRDC_OPT_STRING, &A.image, "one image to score", NULL, 0, 0},
    {"--out", "FILE", DRDC_OPT_STRING, &A.out, "heatmap PNG for --image (enlarged to at least 256 px)", NULL, 0, 0},
    {"--overlay", "FILE", DRDC_OPT_STRING, &A.overlay,
     "the heatmap over the image with the defect regions outlined, score and verdict, PNG", NULL, 0, 0},
    {"--mask", "FILE", DRDC_OPT_STRING, &A.mask, "binary defect mask PNG at the image's size (needs a pixel "
     "threshold)", NULL, 0, 0},
    {"--panel", "FILE", DRDC_OPT_STRING, &A.panel, "labelled panel PNG: image, map with colour bar, overlay", NULL, 0,
     0},
    {"--json", "FILE", DRDC_OPT_STRING, &A.json, "score, thresholds, verdict, regions, timings as JSON ('-': stdout)",
     NULL, 0, 0},
    {"--images", "DIR", DRDC_OPT_STRING, &A.images, "a folder of images to score, subfolders included", NULL, 0, 0},
    {"--out-dir", "DIR", DRDC_OPT_STRING, &A.out_dir,
     "output folder for --images: <relative path>.heat.png, .overlay.png (and .mask.png, .panel.png), scores.csv",
     NULL, 0, 0},
    {"--masks", NULL, DRDC_OPT_FLAG, &A.masks, "--images: also write each image's defect mask", NULL, 0, 0},
    {"--panels", NULL, DRDC_OPT_FLAG, &A.panels, "--images: also write each image's labelled panel", NULL, 0, 0},
    {"--csv", "FILE", DRDC_OPT_STRING, &A.csv, "--images: the CSV of every image ('-': stdout)",
     "<out-dir>/scores.csv", 0, 0},
    {"--jsonl", "FILE", DRDC_OPT_STRING, &A.jsonl, "--images: one JSON object per image as it finishes ('-': stdout)",
     NULL, 0, 0},
    {"--threshold", "T", DRDC_OPT_DOUBLE, &A.threshold, "image-score threshold instead of the calibrated one", NULL, 0,
     0},
    {"--category", "NAME", DRDC_OPT_STRING, &A.category,
     "the images' category: its own calibrated thresholds (when the model knows it)", NULL, 0, 0},
    {"--quiet", NULL, DRDC_OPT_FLAG, &A.quiet, "no progress line and no per-image lines", NULL, 0, 0},
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
    "Score images with a trained model: an anomaly score, a verdict against the calibrated threshold\n"
    "(the category's own with --category), and with a calibrated pixel threshold a defect mask and its\n"
    "regions; heatmaps on a fixed colour scale. A score that is not a finite number is the verdict\n"
    "'error', never 'normal'. --images walks subfolders; unreadable files are listed and skipped.\n"
    "Exit codes: 0 every image judged, 2 bad input, 3 some images could not be judged (unreadable\n"
    "files or error verdicts). --steps, --tau, --grids, --scales, --alpha and --set keep the\n"
    "thresholds calibrated with the trained settings (drdc eval --set recalibrates).",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_infer_spec(void) { return &SPEC; }

#define EXIT_SOME_FAILED 3

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

/* ---- one image's record: JSON and CSV ------------------------------------------------------------ */

static void add_number_or_null(cJSON *o, const char *key, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

/* The JSON object of one image: r NULL when it could not be scored (error names why). */
static cJSON *image_json(const drdc_inferer *c, const char *image, const drdc_infer_result *r, const char *error,
                         double write_s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", image);
    cJSON_AddStringToObject(o, "method", c->use_drdc ? "drdc" : "base");
    if (c->category) cJSON_AddStringToObject(o, "category", c->category);
    if (!r) {
        cJSON_AddNullToObject(o, "score");
        cJSON_AddStringToObject(o, "verdict", drdc_verdict_name(DRDC_VERDICT_ERROR));
        cJSON_AddStringToObject(o, "error", error ? error : "unknown error");
        return o;
    }
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
    add_number_or_null(o, "score", r->score);
    add_number_or_null(o, "threshold", r->thr.image);
    cJSON_AddStringToObject(o, "threshold_scope", r->thr.scope);
    cJSON_AddStringToObject(o, "verdict", drdc_verdict_name(r->verdict));
    if (r->verdict == DRDC_VERDICT_ERROR)
        cJSON_AddStringToObject(o, "error", isfinite(r->score) ? "no finite threshold" : "the score is not a finite "
                                "number (the model or the image produced NaN or infinity)");
    add_number_or_null(o, "pixel_threshold", r->thr.pixel);
    if (r->mask) {
        cJSON_AddNumberToObject(o, "defect_pixels", (double)r->defect_pixels);
        cJSON *regions = cJSON_AddArrayToObject(o, "regions");
        for (int i = 0; i < r->n_regions; i++) {
            const drdc_region *g = &r->regions[i];
            cJSON *ro = cJSON_CreateObject();
            cJSON_AddNumberToObject(ro, "area", (double)g->area);
            const int box[4] = {g->x0, g->y0, g->x1, g->y1};
            cJSON_AddItemToObject(ro, "bbox", cJSON_CreateIntArray(box, 4));
            add_number_or_null(ro, "peak", g->peak);
            cJSON_AddItemToArray(regions, ro);
        }
    }
    add_number_or_null(o, "base_score", r->base_score);
    cJSON_AddNumberToObject(o, "width", r->image.w);
    cJSON_AddNumberToObject(o, "height", r->image.h);
    cJSON_AddNumberToObject(o, "heatmap_lo", c->lo);
    cJSON_AddNumberToObject(o, "heatmap_hi", c->hi);
    cJSON *t = cJSON_AddObjectToObject(o, "timings_ms");
    cJSON_AddNumberToObject(t, "load", 1e3 * r->load_s);
    cJSON_AddNumberToObject(t, "base", 1e3 * r->base_s);
    cJSON_AddNumberToObject(t, "refiner", 1e3 * r->refine_s);
    cJSON_AddNumberToObject(t, "fusion", 1e3 * r->fusion_s);
    cJSON_AddNumberToObject(t, "write", 1e3 * write_s);
    return o;
}

/* Writes a JSON object to path ("-": stdout), pretty or on one line (JSON Lines). */
static drdc_status write_json(cJSON *o, const char *path) {
    char *text = cJSON_Print(o);
    if (!text) return drdc_fail(DRDC_ERR_NOMEM, "out of memory writing %s", path);
    size_t n = strlen(text);
    text[n] = '\n';   /* cJSON_Print leaves room for its NUL: replaced by a line end */
    drdc_status st = drdc_write_file_atomic(path, text, n + 1);
    free(text);
    return st;
}

static void csv_header(drdc_csv_writer *w) {
    const char *cols[] = {"path", "score", "threshold", "verdict", "defect_pixels", "regions", "error"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) drdc_csv_put(w, cols[i]);
    drdc_csv_end_row(w);
}

static void csv_row(drdc_csv_writer *w, const char *path, const drdc_infer_result *r, const char *error) {
    drdc_csv_put(w, path);
    if (r && isfinite(r->score)) drdc_csv_putf(w, "%.6g", r->score); else drdc_csv_put(w, "");
    if (r && isfinite(r->thr.image)) drdc_csv_putf(w, "%.6g", r->thr.image); else drdc_csv_put(w, "");
    drdc_csv_put(w, drdc_verdict_name(r ? r->verdict : DRDC_VERDICT_ERROR));
    if (r && r->mask) drdc_csv_putf(w, "%lld", (long long)r->defect_pixels); else drdc_csv_put(w, "");
    if (r && r->mask) drdc_csv_putf(w, "%d", r->n_regions); else drdc_csv_put(w, "");
    drdc_csv_put(w, r ? (r->verdict == DRDC_VERDICT_ERROR ? "non-finite score" : "") : error);
    drdc_csv_end_row(w);
}

/* ---- one image ------------------------------------------------------------------------------------ */

typedef struct outputs {
    const char *heat, *overlay, *mask, *panel;
} outputs;

/* Scores one image and writes its pictures. *scored says whether r holds a result (an unreadable
 * file leaves it 0 and returns the error). */
static drdc_status infer_one(const drdc_inferer *c, const char *path, const outputs *out, drdc_infer_result *r,
                             double *write_s) {
    drdc_status st = drdc_infer_image(c, path, r);
    if (st) return st;
    double t = drdc_now_seconds();
    drdc_picture_paths p = {out->heat, out->overlay, r->mask ? out->mask : NULL, out->panel};
    st = drdc_infer_write_pictures(c, r, &p);
    *write_s = drdc_now_seconds() - t;
    return st;
}

/* ---- a folder tree ---------------------------------------------------------------------------------- */

typedef struct file_list {
    char **rel;   /* paths relative to the root, sorted */
    int n, cap;
    int skipped;  /* files that are not PNG, JPEG or BMP */
} file_list;

static void file_list_free(file_list *l) {
    for (int i = 0; i < l->n; i++) free(l->rel[i]);
    free(l->rel);
    memset(l, 0, sizeof *l);
}

/* Lists the image files under root/rel (rel "" at the top), depth first; hidden entries and
 * symlinked folders are not entered. */
static drdc_status walk(file_list *l, const char *root, const char *rel, int depth) {
    char dir[8192];
    if (snprintf(dir, sizeof dir, "%s%s%s", root, rel[0] ? "/" : "", rel) >= (int)sizeof dir)
        return drdc_fail(DRDC_ERR_INPUT, "%s/%s: path too long", root, rel);
    if (depth > 64) return drdc_fail(DRDC_ERR_INPUT, "%s: folders nested more than 64 deep", dir);
    DIR *d = opendir(dir);
    if (!d) return drdc_fail(errno == ENOENT || errno == ENOTDIR ? DRDC_ERR_INPUT : DRDC_ERR_IO,
                             "%s: cannot open folder: %s", dir, strerror(errno));
    drdc_status st = DRDC_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char sub[8192], full[16384];
        if (snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name) >= (int)sizeof sub ||
            snprintf(full, sizeof full, "%s/%s", root, sub) >= (int)sizeof full) {
            st = drdc_fail(DRDC_ERR_INPUT, "%s/%s: path too long", dir, e->d_name);
            goto done;
        }
        struct stat lsb, sb;
        if (lstat(full, &lsb) != 0) continue;
        if (S_ISDIR(lsb.st_mode)) {
            TRY(walk(l, root, sub, depth + 1));
            continue;
        }
        if (stat(full, &sb) != 0 || S_ISDIR(sb.st_mode)) continue;   /* a dangling link, a linked folder */
        if (!drdc_is_image_file(e->d_name)) {
            l->skipped++;
            continue;
        }
        if (l->n == l->cap) {
            int cap = l->cap ? 2 * l->cap : 64;
            char **g = realloc(l->rel, sizeof *g * (size_t)cap);
            if (!g) {
                st = drdc_fail(DRDC_ERR_NOMEM, "out of memory listing %s", root);
                goto done;
            }
            l->rel = g;
            l->cap = cap;
        }
        if (!(l->rel[l->n] = strdup(sub))) {
            st = drdc_fail(DRDC_ERR_NOMEM, "out of memory listing %s", root);
            goto done;
        }
        l->n++;
    }
done:
    closedir(d);
    return st;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* out_dir/<rel><suffix> (the image's relative path with its extension kept, so 000.png and 000.jpg
 * never share outputs), its folder made. */
static drdc_status output_path(char *out, size_t cap, const char *rel, const char *suffix) {
    if (snprintf(out, cap, "%s/%s%s", A.out_dir, rel, suffix) >= (int)cap)
        return drdc_fail(DRDC_ERR_INPUT, "%s/%s%s: path too long", A.out_dir, rel, suffix);
    char dir[16384];
    snprintf(dir, sizeof dir, "%s", out);
    *strrchr(dir, '/') = '\0';
    return drdc_mkdirs(dir);
}

/* One folder run's state, for the sink. */
typedef struct folder_run {
    const drdc_inferer *c;
    const file_list *l;
    drdc_csv_writer *csv;
    drdc_atomic_file *jl;   /* NULL: no --jsonl */
    drdc_progress *prog;
    int anomalous, normal, failed, done;
} folder_run;

/* Each image as it finishes (in the folder's sorted order): its pictures, its CSV row and JSON line,
 * the counts. An unreadable file is listed and counted, never fatal. */
static drdc_status folder_sink(void *ctx, int i, const drdc_infer_result *r, drdc_status read_st,
                               const char *error) {
    folder_run *f = ctx;
    const char *rel = f->l->rel[i];
    drdc_status st = DRDC_OK;
    double write_s = 0;
    if (r) {
        char heat[16384], over[16384], mask[16384], panel[16384];
        TRY(output_path(heat, sizeof heat, rel, ".heat.png"));
        TRY(output_path(over, sizeof over, rel, ".overlay.png"));
        TRY(output_path(mask, sizeof mask, rel, ".mask.png"));
        TRY(output_path(panel, sizeof panel, rel, ".panel.png"));
        double t = drdc_now_seconds();
        drdc_picture_paths p = {heat, over, A.masks && r->mask ? mask : NULL, A.panels ? panel : NULL};
        drdc_status pic = drdc_infer_write_pictures(f->c, r, &p);
        write_s = drdc_now_seconds() - t;
        if (pic == DRDC_ERR_NOMEM || pic == DRDC_ERR_TORCH || pic == DRDC_ERR_STATE) return pic;   /* not the file's fault */
        if (pic) {
            error = drdc_last_error();
            r = NULL;
            read_st = pic;
        }
    }
    if (!r) {
        f->failed++;
        fprintf(stderr, "infer: skipped %s: %s\n", rel, error);
    } else if (r->verdict == DRDC_VERDICT_ERROR) {
        f->failed++;
        fprintf(stderr, "infer: %s: verdict error (the score is not a finite number)\n", rel);
    } else {
        f->anomalous += r->verdict == DRDC_VERDICT_ANOMALOUS;
        f->normal += r->verdict == DRDC_VERDICT_NORMAL;
    }
    (void)read_st;
    csv_row(f->csv, rel, r, error);
    if (f->jl) {
        cJSON *o = image_json(f->c, rel, r, error, write_s);
        char *text = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        if (!text || fprintf(f->jl->f, "%s\n", text) < 0 || fflush(f->jl->f) != 0)
            st = drdc_fail(DRDC_ERR_IO, "%s: cannot write", A.jsonl);
        free(text);
    }
    drdc_progress_update(f->prog, ++f->done, rel);
done:
    return st;
}

/* --images DIR: every image file under DIR, outputs mirroring the tree, scores.csv (or --csv),
 * --jsonl as each finishes. Pipelined (drdc_infer_files): data.workers loader threads decode the next
 * images while the model runs, infer.batch images per model call. Unreadable files are listed and
 * counted, never fatal. *failed gets the number of images without a normal/anomalous verdict. */
static drdc_status infer_folder(const drdc_inferer *c, int *failed) {
    file_list l = {0};
    drdc_csv_writer csv = {0};
    drdc_atomic_file jl = {0};
    drdc_progress prog = {0};
    char **paths = NULL;
    int jl_open = 0;
    *failed = 0;
    drdc_status st = DRDC_OK;
    TRY(walk(&l, A.images, "", 0));
    if (l.n == 0) {
        st = drdc_fail(DRDC_ERR_INPUT, "%s: no PNG, JPEG or BMP images (subfolders included)", A.images);
        goto done;
    }
    qsort(l.rel, (size_t)l.n, sizeof *l.rel, cmp_str);
    if (l.skipped && !A.quiet)
        fprintf(stderr, "infer: %d files under %s are not PNG, JPEG or BMP images: not scored\n", l.skipped, A.images);
    TRY(drdc_mkdirs(A.out_dir));
    if (A.jsonl) {
        TRY(drdc_stream_open(&jl, A.jsonl));
        jl_open = 1;
    }
    if (!(paths = calloc((size_t)l.n, sizeof *paths))) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory listing %s", A.images);
        goto done;
    }
    for (int i = 0; i < l.n; i++) {
        size_t len = strlen(A.images) + strlen(l.rel[i]) + 2;
        if (!(paths[i] = malloc(len))) {
            st = drdc_fail(DRDC_ERR_NOMEM, "out of memory listing %s", A.images);
            goto done;
        }
        snprintf(paths[i], len, "%s/%s", A.images, l.rel[i]);
    }
    csv_header(&csv);
    drdc_progress_begin(&prog, "infer images", l.n, A.quiet);
    folder_run run = {c, &l, &csv, jl_open ? &jl : NULL, &prog, 0, 0, 0, 0};
    drdc_infer_stats stats;
    st = drdc_infer_files(c, (const char *const *)paths, l.n, c->m.cfg.data.workers, folder_sink, &run, &stats);
    *failed = run.failed;
    if (st) goto done;
    drdc_progress_end(&prog);
    if (jl_open) {
        jl_open = 0;
        TRY(drdc_atomic_commit(&jl));
    }
    const char *text;
    size_t len;
    TRY(drdc_csv_writer_finish(&csv, &text, &len));
    char path[8192];
    snprintf(path, sizeof path, "%s/scores.csv", A.out_dir);
    TRY(drdc_write_file_atomic(A.csv ? A.csv : path, text, len));
    printf("%d images: %d anomalous, %d normal, %d not judged (unreadable or error verdict); threshold %.4g (%s); "
           "outputs in %s\n", l.n, run.anomalous, run.normal, *failed, drdc_inferer_thresholds(c).image,
           drdc_inferer_thresholds(c).scope, A.out_dir);
    if (!A.quiet)
        fprintf(stderr, "infer: %d images in %.1f s: %.2f images/s; the model was idle %.0f %% of the time (decoding "
                "%d loader threads ahead, %d images per model call; writing the outputs)\n", stats.images,
                stats.wall_s, stats.wall_s > 0 ? stats.images / stats.wall_s : 0, 100 * stats.idle_share,
                c->m.cfg.data.workers, c->m.cfg.infer.batch);
done:
    drdc_progress_end(&prog);
    if (jl_open) drdc_atomic_abort(&jl);
    drdc_csv_writer_free(&csv);
    for (int i = 0; paths && i < l.n; i++) free(paths[i]);
    free(paths);
    file_list_free(&l);
    return st;
}

/* ---- the command ---------------------------------------------------------------------------------- */

/* The folder of an output file must exist before any work, so a failure leaves nothing half-done. */
static drdc_status check_output(const char *flag, const char *path) {
    if (!path || strcmp(path, "-") == 0) return DRDC_OK;
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return drdc_fail(DRDC_ERR_INPUT, "%s: path too long (%zu bytes)", flag, strlen(path));
    char *slash = strrchr(dir, '/');
    if (!slash) return DRDC_OK;
    *slash = '\0';
    if (dir[0] && !drdc_is_dir(dir))
        return drdc_fail(DRDC_ERR_INPUT, "%s %s: folder %s does not exist", flag, path, dir);
    return DRDC_OK;
}

static drdc_status run_infer(const drdc_runtime *rt, int *failed) {
    const char *flags[] = {"--out", "--overlay", "--mask", "--panel", "--json", "--csv", "--jsonl"};
    const char *paths[] = {A.out, A.overlay, A.mask, A.panel, A.json, A.csv, A.jsonl};
    drdc_status st = DRDC_OK;
    for (int i = 0; i < 7; i++) TRY(check_output(flags[i], paths[i]));
    const char *path = A.model ? A.model : "runs/latest/model.safetensors";
    if (!A.model && !drdc_is_file(path))
        return drdc_fail(DRDC_ERR_INPUT, "no --model given and no %s: train one first (drdc train --config FILE) or "
                         "give --model FILE", path);
    char bufs[MAX_SETS][256];
    const char *sets[MAX_SETS];
    int n_sets = collect_sets(bufs, sets);
    drdc_inferer c;
    TRY(drdc_inferer_open(&c, path, A.method, sets, n_sets, rt));
    if (A.threshold > -INFINITY) c.threshold_override = A.threshold;
    if (A.category) {
        if (drdc_model_category(&c.m, A.category) < 0)
            fprintf(stderr, "warning: %s has no thresholds of its own for category '%s': using those of all "
                    "categories\n", path, A.category);
        c.category = A.category;
    }
    if (c.use_drdc && !A.quiet) fprintf(stderr, "drdc inference: %s\n", c.how);
    if (A.image) {
        drdc_infer_result r = {0};
        double write_s = 0;
        const outputs out = {A.out, A.overlay, A.mask, A.panel};
        st = infer_one(&c, A.image, &out, &r, &write_s);
        if (!st && A.json) {
            cJSON *o = image_json(&c, A.image, &r, NULL, write_s);
            st = o ? write_json(o, A.json) : drdc_fail(DRDC_ERR_NOMEM, "out of memory");
            cJSON_Delete(o);
        }
        if (!st && r.verdict == DRDC_VERDICT_ERROR) *failed = 1;
        if (!st && !A.quiet) {
            printf("%s: score %.4g, threshold %.4g (%s): %s (%s)", A.image, r.score, r.thr.image, r.thr.scope,
                   r.verdict == DRDC_VERDICT_ANOMALOUS ? "ANOMALOUS" : r.verdict == DRDC_VERDICT_NORMAL ? "normal"
                                                                                                        : "ERROR",
                   c.use_drdc ? "drdc" : "base");
            if (r.mask) printf(", %d defect regions, %lld defect pixels", r.n_regions, (long long)r.defect_pixels);
            printf("\n");
            if (A.out) printf("heatmap: %s (colour scale %.3g .. %.3g, turbo)\n", A.out, c.lo, c.hi);
        }
        drdc_infer_result_free(&r);
    } else {
        st = infer_folder(&c, failed);
    }
    drdc_inferer_close(&c);
done:
    return st;
}

int drdc_cmd_infer(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    A.alpha = -1;
    A.threshold = -INFINITY;
    int rc = drdc_cli_begin(&SPEC, argc, argv);
    if (rc >= 0) return rc;
    drdc_status st;
    if (!A.image == !A.images)
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "give exactly one of --image FILE or --images DIR"));
    if (A.image && !A.out && !A.json && !A.overlay && !A.mask && !A.panel)
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--image needs an output: --out FILE, --json FILE, "
                                                  "--overlay, --mask or --panel"));
    if (A.images && !A.out_dir)
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--images needs --out-dir DIR"));
    if (A.image && (A.out_dir || A.masks || A.panels || A.csv || A.jsonl))
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--out-dir, --masks, --panels, --csv and --jsonl go "
                                                  "with --images DIR"));
    if (A.images && (A.out || A.overlay || A.mask || A.panel || A.json))
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--out, --overlay, --mask, --panel and --json go with "
                                                  "--image FILE (a folder writes into --out-dir)"));
    if (A.method && strcmp(A.method, "base") && strcmp(A.method, "drdc"))
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--method must be base or drdc, not '%s'", A.method));
    const char *long_flags[] = {"--images", "--out-dir", "--model", "--category"};
    const char *long_vals[] = {A.images, A.out_dir, A.model, A.category};
    for (int i = 0; i < 4; i++)   /* the paths built from these fit their buffers; longer ones are refused, not cut */
        if (long_vals[i] && strlen(long_vals[i]) > 4000)
            return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "%s: %zu bytes; at most 4000 (nothing is cut)",
                                                      long_flags[i], strlen(long_vals[i])));
    if (A.threshold > -INFINITY && !isfinite(A.threshold))
        return drdc_cli_report("infer", drdc_fail(DRDC_ERR_USAGE, "--threshold must be a finite number"));
    drdc_runtime rt;
    st = drdc_runtime_init(&rt, A.device, A.threads);
    if (st) return drdc_cli_report("infer", st);
    int failed = 0;
    st = run_infer(&rt, &failed);
    if (st == DRDC_ERR_NOMEM)
        drdc_error_hint(st, "out of memory: try fewer --steps or --grids, --method base, or --device cpu");
    if (st) return drdc_cli_report("infer", st);
    return failed ? EXIT_SOME_FAILED : 0;
}
