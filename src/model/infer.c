/* infer.c: scoring image files with a trained model (infer.h). */
#include "drdc/model/infer.h"
#include "drdc/core/progress.h"
#include "drdc/data/loader.h"
#include "drdc/stages/draw.h"
#include "drdc/stages/heatmap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

drdc_thresholds drdc_inferer_thresholds(const drdc_inferer *inf) {
    drdc_thresholds t = drdc_model_thresholds(&inf->m, inf->use_drdc, inf->category);
    if (inf->threshold_override > -INFINITY) {
        t.image = inf->threshold_override;
        t.scope = "--threshold";
    }
    return t;
}

drdc_status drdc_inferer_open(drdc_inferer *inf, const char *path, const char *method, const char *const *sets,
                              int n_sets, const drdc_runtime *rt) {
    memset(inf, 0, sizeof *inf);
    inf->model_path = path;
    drdc_status st = drdc_model_load(&inf->m, path, rt->device);
    if (st) return st;
    drdc_model *m = &inf->m;
    if (method && strcmp(method, "drdc") == 0 && m->refiner_steps <= 0) {
        st = drdc_fail(DRDC_ERR_INPUT, "--method drdc needs the diffusion refiner, and %s has none (use --method base)",
                       path);
        goto done;
    }
    inf->use_drdc = method ? strcmp(method, "drdc") == 0 : m->refiner_steps > 0;
    if (!method && m->refiner_steps <= 0)
        fprintf(stderr, "warning: %s has no trained diffusion refiner (0 refiner steps): using --method base "
                "(train stage 2 for DRDC)\n", path);
    if (n_sets) TRY(drdc_model_set_infer(m, sets, n_sets, path));
    if (!m->stats.ready) {
        st = drdc_fail(DRDC_ERR_INPUT, "%s is not calibrated (training did not finish)", path);
        goto done;
    }
    if (inf->use_drdc && !m->stats.drdc_ready) {
        st = drdc_fail(DRDC_ERR_INPUT, "%s is not calibrated for DRDC (use --method base)", path);
        goto done;
    }
    inf->map_size = inf->use_drdc ? m->cfg.refiner.image_size : m->cfg.data.image_size;
    inf->load_size = drdc_model_input_size(m, inf->use_drdc);
    inf->lo = inf->use_drdc ? m->stats.drdc_lo : m->stats.score_lo;
    inf->hi = inf->use_drdc ? m->stats.drdc_hi : m->stats.score_hi;
    inf->threshold_override = -INFINITY;
    if (inf->use_drdc) drdc_model_describe_drdc(m, inf->how, sizeof inf->how);
done:
    if (st) drdc_inferer_close(inf);
    return st;
}

void drdc_inferer_close(drdc_inferer *inf) {
    drdc_model_free(&inf->m);
    memset(inf, 0, sizeof *inf);
}

void drdc_infer_result_free(drdc_infer_result *r) {
    drdc_image_free(&r->image);
    drdc_image_free(&r->map);
    free(r->mask);
    free(r->regions);
    memset(r, 0, sizeof *r);
}

static int cmp_region(const void *a, const void *b) {
    const drdc_region *x = a, *y = b;
    if (x->area != y->area) return x->area < y->area ? 1 : -1;
    return x->y0 != y->y0 ? (x->y0 > y->y0) - (x->y0 < y->y0) : (x->x0 > y->x0) - (x->x0 < y->x0);
}

drdc_status drdc_mask_regions(const uint8_t *mask, const float *map, int w, int h, drdc_region **regions, int *n) {
    *regions = NULL;
    *n = 0;
    size_t npx = (size_t)w * h;
    int32_t *stack = NULL;
    uint8_t *seen = calloc(npx ? npx : 1, 1);
    drdc_region *out = NULL;
    int cap = 0;
    drdc_status st = DRDC_OK;
    if (!seen || !(stack = malloc(sizeof *stack * (npx ? npx : 1)))) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory labelling a %dx%d mask", w, h);
        goto done;
    }
    for (size_t start = 0; start < npx; start++) {
        if (!mask[start] || seen[start]) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            drdc_region *g = realloc(out, sizeof *out * (size_t)cap);
            if (!g) {
                st = drdc_fail(DRDC_ERR_NOMEM, "out of memory for mask regions");
                goto done;
            }
            out = g;
        }
        drdc_region rg = {0, w, h, -1, -1, -INFINITY};
        size_t top = 0;
        stack[top++] = (int32_t)start;
        seen[start] = 1;
        while (top) {   /* flood fill, 8-connected */
            int32_t p = stack[--top];
            int x = p % w, y = p / w;
            rg.area++;
            rg.x0 = x < rg.x0 ? x : rg.x0, rg.x1 = x > rg.x1 ? x : rg.x1;
            rg.y0 = y < rg.y0 ? y : rg.y0, rg.y1 = y > rg.y1 ? y : rg.y1;
            if (map && map[p] > rg.peak) rg.peak = map[p];
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int nx = x + dx, ny = y + dy;
                    if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                    size_t q = (size_t)ny * w + nx;
                    if (mask[q] && !seen[q]) {
                        seen[q] = 1;
                        stack[top++] = (int32_t)q;
                    }
                }
        }
        out[(*n)++] = rg;
    }
    if (*n > 1) qsort(out, (size_t)*n, sizeof *out, cmp_region);
    *regions = out;
    out = NULL;
done:
    if (st) *n = 0;
    free(out);
    free(stack);
    free(seen);
    return st;
}

/* Verdict, mask and regions of a scored image. */
static drdc_status decide(const drdc_inferer *inf, drdc_infer_result *r) {
    r->thr = drdc_inferer_thresholds(inf);
    r->verdict = drdc_verdict_of(r->score, r->thr.image);
    if (r->verdict == DRDC_VERDICT_ERROR || !isfinite(r->thr.pixel)) return DRDC_OK;
    size_t npx = (size_t)r->map.w * r->map.h;
    if (!(r->mask = malloc(npx ? npx : 1))) return drdc_fail(DRDC_ERR_NOMEM, "out of memory for a defect mask");
    for (size_t i = 0; i < npx; i++) {
        r->mask[i] = r->map.data[i] >= r->thr.pixel;
        r->defect_pixels += r->mask[i];
    }
    return drdc_mask_regions(r->mask, r->map.data, r->map.w, r->map.h, &r->regions, &r->n_regions);
}

/* HWC [0,1] image -> CHW floats (the loader's layout). */
static void to_chw(const drdc_image *img, float *chw) {
    size_t plane = (size_t)img->w * img->h;
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) chw[(size_t)c * plane + p] = img->data[p * 3 + (size_t)c];
}

/* The model on n images [n,3,I,I] (host CHW floats): maps [n][S*S], scores and base scores [n] on
 * the host; times (summed over the n images) into *tm. */
static drdc_status score_batch(const drdc_inferer *inf, const float *chw, int n, float *maps, float *scores,
                               float *base_scores, drdc_stage_times *tm) {
    const drdc_model *m = &inf->m;
    const int S = inf->map_size, I = inf->load_size;
    dt_tensor images = NULL, out_map = NULL, out_score = NULL, bscore = NULL;
    drdc_status st = DRDC_OK;
    memset(tm, 0, sizeof *tm);
    TRY(drdc_model_upload(&images, m, chw, n, 3, I));              /* [n,3,I,I] */
    if (inf->use_drdc) {
        TRY(drdc_model_drdc(&out_map, &out_score, NULL, &bscore, NULL, m, images, 0, tm));
    } else {
        double t1 = drdc_now_seconds();
        TRY(drdc_model_base(&out_map, &out_score, m, images));
        TRY(dt_synchronize(m->dev));
        tm->base_s = drdc_now_seconds() - t1;
    }
    TRY(dt_copy_to_host(out_map, maps, sizeof(float) * (size_t)n * S * S));
    TRY(dt_copy_to_host(out_score, scores, sizeof(float) * (size_t)n));
    if (bscore)
        TRY(dt_copy_to_host(bscore, base_scores, sizeof(float) * (size_t)n));
    else
        memcpy(base_scores, scores, sizeof(float) * (size_t)n);
done:
    dt_free(images);
    dt_free(out_map);
    dt_free(out_score);
    dt_free(bscore);
    return st;
}

/* r->image holds the image: its map (S x S) back to the image's size, the scores, the decision. */
static drdc_status finish(const drdc_inferer *inf, drdc_infer_result *r, const float *map_s, float score,
                          float base_score) {
    const int S = inf->map_size;
    drdc_image map = {0};
    drdc_status st = DRDC_OK;
    r->score = score;
    r->base_score = base_score;
    TRY(drdc_image_alloc(&map, S, S, 1));
    memcpy(map.data, map_s, sizeof(float) * (size_t)S * S);
    TRY(drdc_image_resize(&map, r->image.w, r->image.h, &r->map)); /* the image's original size */
    TRY(decide(inf, r));
done:
    drdc_image_free(&map);
    return st;
}

drdc_status drdc_infer_image(const drdc_inferer *inf, const char *path, drdc_infer_result *r) {
    memset(r, 0, sizeof *r);
    const int S = inf->map_size, I = inf->load_size;
    drdc_image small = {0};
    float *chw = NULL, *map = NULL, score = 0, base_score = 0;
    double t0 = drdc_now_seconds();
    drdc_status st = drdc_image_load_rgb(path, &r->image);
    if (st) goto done;
    TRY(drdc_image_resize(&r->image, I, I, &small));               /* as the loader does */
    chw = malloc(sizeof(float) * 3 * (size_t)I * I);
    map = malloc(sizeof(float) * (size_t)S * S);
    if (!chw || !map) {
        st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    to_chw(&small, chw);
    r->load_s = drdc_now_seconds() - t0;
    drdc_stage_times tm;
    TRY(score_batch(inf, chw, 1, map, &score, &base_score, &tm));
    r->base_s = tm.base_s, r->refine_s = tm.refine_s, r->fusion_s = tm.fusion_s;
    TRY(finish(inf, r, map, score, base_score));
done:
    free(chw);
    free(map);
    drdc_image_free(&small);
    return st;
}

drdc_status drdc_infer_files(const drdc_inferer *inf, const char *const *paths, int n, int workers,
                             drdc_infer_sink sink, void *ctx, drdc_infer_stats *stats) {
    memset(stats, 0, sizeof *stats);
    if (n < 1) return DRDC_OK;
    const int S = inf->map_size, I = inf->load_size, B = inf->m.cfg.infer.batch;
    const size_t plane = (size_t)3 * I * I;
    drdc_sample *samples = calloc((size_t)n, sizeof *samples);
    float *chw = malloc(sizeof(float) * plane * (size_t)B), *maps = malloc(sizeof(float) * (size_t)S * S * B);
    float *scores = malloc(sizeof(float) * 2 * (size_t)B);
    int *slot = malloc(sizeof(int) * (size_t)B);
    drdc_loader *ld = NULL;
    drdc_status st = DRDC_OK;
    if (!samples || !chw || !maps || !scores || !slot) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory for %d images of %dx%d", B, I, I);
        goto done;
    }
    for (int i = 0; i < n; i++) samples[i] = (drdc_sample){paths[i], NULL, "good", 0, 0};
    drdc_loader_options lo;
    drdc_loader_options_default(&lo);
    lo.image_size = I;
    lo.batch_size = B;
    lo.workers = workers;
    lo.prefetch = 2;
    lo.keep_going = 1;     /* an unreadable file is reported, never fatal */
    lo.keep_original = 1;  /* the pictures and maps are at each image's own size */
    const double t_start = drdc_now_seconds();
    TRY(drdc_loader_create(&ld, samples, n, &lo));
    TRY(drdc_loader_start_epoch(ld, 0));
    const drdc_batch *b;
    double t_wait = drdc_now_seconds();
    while (!(st = drdc_loader_next(ld, &b)) && b) {
        const double waited = drdc_now_seconds() - t_wait;
        int k = 0;   /* the batch's readable images, packed */
        for (int i = 0; i < b->n; i++)
            if (b->status[i] == DRDC_OK) {
                memcpy(chw + (size_t)k * plane, b->images + (size_t)i * plane, sizeof(float) * plane);
                slot[i] = k++;
            }
        drdc_stage_times tm = {0, 0, 0};
        if (k) {
            const double t0 = drdc_now_seconds();
            TRY(score_batch(inf, chw, k, maps, scores, scores + B, &tm));
            stats->model_s += drdc_now_seconds() - t0;
        }
        for (int i = 0; i < b->n; i++) {
            const int idx = b->index[i];
            if (b->status[i] != DRDC_OK) {
                TRY(sink(ctx, idx, NULL, b->status[i], b->error[i] ? b->error[i] : drdc_status_name(b->status[i])));
                continue;
            }
            drdc_infer_result r;
            memset(&r, 0, sizeof r);
            r.image = b->original[i];   /* taken over from the batch (loader.h allows it) */
            memset((drdc_image *)&b->original[i], 0, sizeof r.image);
            r.load_s = waited / b->n;
            r.base_s = tm.base_s / k, r.refine_s = tm.refine_s / k, r.fusion_s = tm.fusion_s / k;
            st = finish(inf, &r, maps + (size_t)slot[i] * S * S, scores[slot[i]], scores[B + slot[i]]);
            if (!st) st = sink(ctx, idx, &r, DRDC_OK, NULL);
            drdc_infer_result_free(&r);
            if (st) goto done;
        }
        stats->images += b->n;
        t_wait = drdc_now_seconds();
    }
    if (st) goto done;
    stats->wall_s = drdc_now_seconds() - t_start;
    stats->idle_share = stats->wall_s > 0 ? 1.0 - stats->model_s / stats->wall_s : 0;
    if (stats->idle_share < 0) stats->idle_share = 0;
done:
    drdc_loader_free(ld);
    free(samples);
    free(chw);
    free(maps);
    free(scores);
    free(slot);
    return st;
}

void drdc_infer_caption(const drdc_infer_result *r, char *out, size_t cap) {
    const char *v = r->verdict == DRDC_VERDICT_ANOMALOUS ? "ANOMALOUS" : r->verdict == DRDC_VERDICT_NORMAL ? "normal"
                                                                                                        : "ERROR";
    int n = snprintf(out, cap, "score %.4g, threshold %.4g (%s): %s", r->score, r->thr.image, r->thr.scope, v);
    if (r->mask && n > 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, ", %d region%s", r->n_regions, r->n_regions == 1 ? "" : "s");
}

enum { MIN_PICTURE_SIDE = 256 };

/* The overlay picture: heat over the image, the predicted regions outlined in white, enlarged for
 * small images, under a caption band. */
static drdc_status overlay_picture(const drdc_inferer *inf, const drdc_infer_result *r, drdc_image *out) {
    drdc_image over = {0}, big = {0};
    drdc_status st = DRDC_OK;
    static const float white[3] = {1, 1, 1}, grey[3] = {0.16f, 0.16f, 0.18f};
    TRY(drdc_heatmap_overlay(&r->image, &r->map, (float)inf->lo, (float)inf->hi, 0.6f, &over));
    TRY(drdc_image_upscale_min(&over, MIN_PICTURE_SIDE, &big));
    if (r->mask) TRY(drdc_draw_outline(&big, r->mask, r->map.w, r->map.h, white, big.w >= 512 ? 2 : 1));
    char caption[256];
    drdc_infer_caption(r, caption, sizeof caption);
    int scale = big.w >= 640 ? 2 : 1, band = drdc_text_height(scale) + 8;
    TRY(drdc_image_alloc(out, big.w, big.h + band, 3));
    for (size_t i = 0; i < (size_t)big.w * band; i++)
        for (int c = 0; c < 3; c++) out->data[i * 3 + c] = grey[c];
    memcpy(out->data + (size_t)big.w * band * 3, big.data, sizeof(float) * (size_t)big.w * big.h * 3);
    drdc_draw_text(out, 4, 4, caption, scale, r->verdict == DRDC_VERDICT_NORMAL ? white : (const float[3]){1, 0.4f, 0.3f});
done:
    drdc_image_free(&over);
    drdc_image_free(&big);
    return st;
}

drdc_status drdc_infer_write_pictures(const drdc_inferer *inf, const drdc_infer_result *r,
                                      const drdc_picture_paths *p) {
    drdc_image colour = {0}, big = {0}, over = {0}, bw = {0}, panel = {0}, plain = {0};
    drdc_status st = DRDC_OK;
    if (p->mask) {
        if (!r->mask) {
            st = drdc_fail(DRDC_ERR_INPUT, "%s: no defect mask: %s", p->mask,
                           r->verdict == DRDC_VERDICT_ERROR ? "the image got an error verdict"
                                                             : "the model has no calibrated pixel threshold "
                                                               "(retrain or recalibrate it with this drdc)");
            goto done;
        }
        TRY(drdc_image_alloc(&bw, r->map.w, r->map.h, 1));
        for (size_t i = 0; i < (size_t)r->map.w * r->map.h; i++) bw.data[i] = r->mask[i];
        TRY(drdc_image_write_png(p->mask, &bw));
    }
    if (p->heat) {
        TRY(drdc_heatmap_colorize(&r->map, (float)inf->lo, (float)inf->hi, &colour));
        TRY(drdc_image_upscale_min(&colour, MIN_PICTURE_SIDE, &big));
        TRY(drdc_image_write_png(p->heat, &big));
    }
    if (p->overlay) {
        TRY(overlay_picture(inf, r, &over));
        TRY(drdc_image_write_png(p->overlay, &over));
    }
    if (p->panel) {
        TRY(drdc_heatmap_overlay(&r->image, &r->map, (float)inf->lo, (float)inf->hi, 0.6f, &plain));
        char caption[256];
        drdc_infer_caption(r, caption, sizeof caption);
        const char *method = inf->use_drdc ? "anomaly map (drdc)" : "anomaly map (base)";
        const drdc_panel_column cols[3] = {
            {"image", &r->image, 0, 0, NAN, NULL, NULL, 0, 0},
            {method, &r->map, (float)inf->lo, (float)inf->hi, (float)r->thr.pixel, NULL, r->mask, r->map.w, r->map.h},
            {"overlay", &plain, 0, 0, NAN, NULL, r->mask, r->map.w, r->map.h},
        };
        TRY(drdc_panel_render(&panel, cols, 3, MIN_PICTURE_SIDE, caption));
        TRY(drdc_image_write_png(p->panel, &panel));
    }
done:
    drdc_image_free(&colour);
    drdc_image_free(&big);
    drdc_image_free(&over);
    drdc_image_free(&bw);
    drdc_image_free(&panel);
    drdc_image_free(&plain);
    return st;
}
