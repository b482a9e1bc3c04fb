/* report.c: the self-contained HTML page of one evaluation (see report.h): tables, inline SVG
 * curves and the test images worst first, written with plain fprintf into an atomic file. */
#include "drdc/model/report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/core/fsutil.h"

/* Method colours (Okabe-Ito, readable by the colour-blind), reused in order. */
static const char *const COLOURS[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#E69F00", "#56B4E9", "#000000", "#F0E442"};
#define N_COLOURS (sizeof COLOURS / sizeof *COLOURS)

static const char *colour(int method) { return COLOURS[(size_t)method % N_COLOURS]; }

/* ---- text -------------------------------------------------------------------------------- */

/* s HTML-escaped (text and attribute values alike); NULL prints nothing. */
static void put_esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A relative path as a URL: every byte but unreserved characters and '/' percent-encoded. */
static void put_url(FILE *f, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~' || *p == '/')
            fputc(*p, f);
        else
            fprintf(f, "%%%02X", *p);
    }
}

/* A metric value: 4 decimals, or "n/a". */
static void put_value(FILE *f, double v) {
    if (isfinite(v))
        fprintf(f, "%.4f", v);
    else
        fputs("n/a", f);
}

/* k of n and its rate, "3/40 (7.5%)"; n = 0: "0/0". */
static void put_rate(FILE *f, int k, int n) {
    if (n > 0)
        fprintf(f, "%d/%d (%.1f%%)", k, n, 100.0 * k / n);
    else
        fprintf(f, "%d/%d", k, n);
}

/* Background of a metric cell: red below 0.5 through yellow to green at 1. */
static void put_shade(FILE *f, double v) {
    if (!isfinite(v)) return;
    double t = (v - 0.5) / 0.5;
    if (t < 0.0) t = 0.0;
    if (t > 1.0) t = 1.0;
    fprintf(f, " style=\"background:hsl(%d,65%%,86%%)\"", (int)(t * 120.0 + 0.5));
}

/* ---- input ------------------------------------------------------------------------------- */

static double value(const drdc_report *r, int method, int column, int metric) {
    return r->values[((size_t)method * (size_t)(r->n_categories + 1) + (size_t)column) *
                         (size_t)r->n_metrics + (size_t)metric];
}

static const drdc_report_threshold *thr(const drdc_report *r, int method, int category) {
    return &r->thresholds[(size_t)method * (size_t)r->n_categories + (size_t)category];
}

static const drdc_curves *curves_of(const drdc_curves *all, const drdc_report *r, int method,
                                    int category) {
    return all ? &all[(size_t)method * (size_t)r->n_categories + (size_t)category] : NULL;
}

static drdc_status check_report(const char *path, const drdc_report *r) {
    if (!path || !r) return drdc_fail(DRDC_ERR_INPUT, "report: NULL path or report");
    if (r->n_methods < 1 || !r->methods)
        return drdc_fail(DRDC_ERR_INPUT, "%s: report without methods", path);
    if (r->n_categories < 0 || (r->n_categories > 0 && !r->categories))
        return drdc_fail(DRDC_ERR_INPUT, "%s: report with %d categories and no names", path,
                         r->n_categories);
    if (r->n_metrics < 0 || (r->n_metrics > 0 && (!r->metrics || !r->values)))
        return drdc_fail(DRDC_ERR_INPUT, "%s: report with %d metrics and no titles or values",
                         path, r->n_metrics);
    if (r->n_about < 0 || (r->n_about > 0 && !r->about))
        return drdc_fail(DRDC_ERR_INPUT, "%s: report with %d about lines and no text", path,
                         r->n_about);
    if (r->n_images < 0 || (r->n_images > 0 && !r->images))
        return drdc_fail(DRDC_ERR_INPUT, "%s: report with %d images and no list", path,
                         r->n_images);
    if (r->n_images > 0 && (r->image_method < 0 || r->image_method >= r->n_methods))
        return drdc_fail(DRDC_ERR_INPUT, "%s: report image method %d is not one of the %d methods",
                         path, r->image_method, r->n_methods);
    for (int i = 0; i < r->n_images; i++)
        if (r->images[i].category < 0 || r->images[i].category >= r->n_categories)
            return drdc_fail(DRDC_ERR_INPUT, "%s: report image %d (%s) has category %d of %d",
                             path, i, r->images[i].path ? r->images[i].path : "?",
                             r->images[i].category, r->n_categories);
    return DRDC_OK;
}

/* ---- image order ------------------------------------------------------------------------- */

/* 0 a miss, 1 a false alarm, 2 judged right. */
static int image_group(const drdc_report_image *im) {
    if (im->label && !im->verdict) return 0;
    if (!im->label && im->verdict) return 1;
    return 2;
}

/* Sort key inside the group, smaller first: misses and false alarms by how far the score lies
 * on the wrong side (largest first), the rest by how close it lies to the threshold. */
static double image_key(const drdc_report_image *im) {
    double d = im->score - im->threshold;
    double k = image_group(im) == 0 ? d : image_group(im) == 1 ? -d : fabs(d);
    return isnan(k) ? INFINITY : k;
}

static int compare_images(const void *pa, const void *pb) {
    const drdc_report_image *a = *(const drdc_report_image *const *)pa;
    const drdc_report_image *b = *(const drdc_report_image *const *)pb;
    int ga = image_group(a), gb = image_group(b);
    if (ga != gb) return ga < gb ? -1 : 1;
    double ka = image_key(a), kb = image_key(b);
    if (ka != kb) return ka < kb ? -1 : 1;
    if (a->category != b->category) return a->category < b->category ? -1 : 1;
    int c = strcmp(a->path ? a->path : "", b->path ? b->path : "");
    if (c) return c;
    return a < b ? -1 : a > b; /* the input order: qsort is not stable */
}

void drdc_report_order_images(const drdc_report_image *images, int n, int *order) {
    if (n <= 0) return;
    const drdc_report_image **p = malloc((size_t)n * sizeof *p);
    if (!p) { /* no memory for the sort: the input order, grouped by a stable pass per group */
        int k = 0;
        for (int g = 0; g < 3; g++)
            for (int i = 0; i < n; i++)
                if (image_group(&images[i]) == g) order[k++] = i;
        return;
    }
    for (int i = 0; i < n; i++) p[i] = &images[i];
    qsort(p, (size_t)n, sizeof *p, compare_images);
    for (int i = 0; i < n; i++) order[i] = (int)(p[i] - images);
    free(p);
}

/* ---- page parts -------------------------------------------------------------------------- */

static const char STYLE[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;"
    "color:#1b1f24;background:#fff;margin:0}\n"
    "main{max-width:1180px;margin:0 auto;padding:18px 20px 40px}\n"
    "h1{font-size:24px;margin:0 0 6px}h2{font-size:19px;margin:30px 0 10px;padding-bottom:4px;"
    "border-bottom:2px solid #d0d7de}h3{font-size:15px;margin:16px 0 6px}\n"
    "ul.about{margin:4px 0 10px;padding:0;list-style:none;color:#444;font-size:13px}"
    "ul.about li{font-family:ui-monospace,'DejaVu Sans Mono',monospace}\n"
    "nav a{margin-right:14px;color:#0969da;text-decoration:none}\n"
    "table{border-collapse:collapse;margin:6px 0;font-size:13px;"
    "font-variant-numeric:tabular-nums}\n"
    ".wide{overflow-x:auto}\n"
    "th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}\n"
    "th{background:#f3f5f7;font-weight:600;white-space:normal}"
    "td.name,th.name{text-align:left}\n"
    "tr.mean td{border-top:2px solid #57606a;font-weight:600}\n"
    "td.best{font-weight:700}td.na{color:#8c959f}\n"
    ".bad{color:#b42318;font-weight:600}.warn{color:#9a5b00}"
    ".note{color:#57606a;font-size:13px}\nth.group,td.group{border-left:2px solid #8c959f}\n"
    ".swatch{display:inline-block;width:18px;height:4px;vertical-align:middle;margin-right:5px}\n"
    ".charts{display:flex;flex-wrap:wrap;gap:10px}\n"
    ".cat{border:1px solid #d0d7de;border-radius:6px;padding:4px 10px 10px;margin:10px 0}\n"
    "svg{background:#fff}svg text{font-size:11px;fill:#1b1f24}\n"
    ".img{border:1px solid #d0d7de;border-left:6px solid #8c959f;border-radius:4px;"
    "padding:6px 10px;margin:8px 0}\n"
    ".img.miss{border-left-color:#b42318}.img.alarm{border-left-color:#dd7a00}"
    ".img.ok{border-left-color:#1a7f37}\n"
    ".img .what{font-size:13px}.img .path{font-family:ui-monospace,'DejaVu Sans Mono',"
    "monospace;font-size:12px;color:#444;word-break:break-all}\n"
    ".img img{display:block;max-width:100%;max-height:300px;margin-top:6px}\n"
    ".badge{display:inline-block;min-width:86px;text-align:center;border-radius:3px;"
    "padding:0 6px;margin-right:8px;color:#fff;font-weight:700;font-size:12px}\n"
    ".badge.miss{background:#b42318}.badge.alarm{background:#dd7a00}"
    ".badge.ok{background:#1a7f37}\n"
    "details summary{cursor:pointer;font-weight:600;margin:10px 0}\n";

/* Method m's colour swatch and name. */
static void put_method(FILE *f, const drdc_report *r, int m) {
    fprintf(f, "<span class=\"swatch\" style=\"background:%s\"></span>", colour(m));
    put_esc(f, r->methods[m]);
}

static void put_legend_html(FILE *f, const drdc_report *r) {
    fputs("<p>", f);
    for (int m = 0; m < r->n_methods; m++) {
        fputs("<span style=\"margin-right:16px\">", f);
        put_method(f, r, m);
        fputs("</span>", f);
    }
    fputs("</p>\n", f);
}

/* Outcome of method m's thresholds over categories [c0, c1): counts summed over the categories
 * that have a threshold; have = how many do (0: n/a). */
typedef struct outcome {
    int have, n_good, n_false_rejects, n_defective, n_escapes;
    double threshold; /* the last category's */
} outcome;

static outcome outcome_of(const drdc_report *r, int m, int c0, int c1) {
    outcome o = {0, 0, 0, 0, 0, NAN};
    for (int c = c0; c < c1; c++) {
        const drdc_report_threshold *t = thr(r, m, c);
        if (isnan(t->threshold)) continue;
        o.have++;
        o.n_good += t->n_good;
        o.n_false_rejects += t->n_false_rejects;
        o.n_defective += t->n_defective;
        o.n_escapes += t->n_escapes;
        o.threshold = t->threshold;
    }
    return o;
}

/* Two cells: false rejects (amber when any) and escapes (red when any). */
static void put_outcome(FILE *f, const outcome *o) {
    if (!o->have) {
        fputs("<td class=\"na\">n/a</td><td class=\"na\">n/a</td>", f);
        return;
    }
    fprintf(f, "<td%s>", o->n_false_rejects ? " class=\"warn\"" : "");
    put_rate(f, o->n_false_rejects, o->n_good);
    fprintf(f, "</td><td%s>", o->n_escapes ? " class=\"bad\"" : "");
    put_rate(f, o->n_escapes, o->n_defective);
    fputs("</td>", f);
}

/* Overview: per method the mean of each metric, and the pooled threshold outcome. */
static void put_overview(FILE *f, const drdc_report *r) {
    fputs("<h2 id=\"overview\">Overview</h2>\n<div class=\"wide\"><table>\n"
          "<tr><th class=\"name\">method</th>", f);
    for (int k = 0; k < r->n_metrics; k++) {
        fputs("<th>", f);
        put_esc(f, r->metrics[k]);
        fputs("</th>", f);
    }
    if (r->thresholds) fputs("<th>false rejects</th><th>escapes</th>", f);
    fputs("</tr>\n", f);
    for (int m = 0; m < r->n_methods; m++) {
        fputs("<tr><td class=\"name\">", f);
        put_method(f, r, m);
        fputs("</td>", f);
        for (int k = 0; k < r->n_metrics; k++) {
            double v = value(r, m, r->n_categories, k);
            fputs(isfinite(v) ? "<td" : "<td class=\"na\"", f);
            put_shade(f, v);
            fputs(">", f);
            put_value(f, v);
            fputs("</td>", f);
        }
        if (r->thresholds) {
            outcome o = outcome_of(r, m, 0, r->n_categories);
            put_outcome(f, &o);
        }
        fputs("</tr>\n", f);
    }
    fputs("</table></div>\n<p class=\"note\">Metrics: mean over categories where defined. False "
          "rejects: good test images judged anomalous; escapes: defective test images judged "
          "normal (anomalous when score &ge; the calibrated threshold), all categories "
          "pooled.</p>\n", f);
}

/* The metrics table: one block of rows per category (one row per method), then the mean. */
static void put_metrics_table(FILE *f, const drdc_report *r) {
    fputs("<h2 id=\"metrics\">Metrics per category</h2>\n<div class=\"wide\"><table>\n"
          "<tr><th class=\"name\">category</th><th class=\"name\">method</th>", f);
    for (int k = 0; k < r->n_metrics; k++) {
        fputs("<th>", f);
        put_esc(f, r->metrics[k]);
        fputs("</th>", f);
    }
    fputs("</tr>\n", f);
    int any_note = 0;
    for (int c = 0; c <= r->n_categories; c++) {
        int is_mean = c == r->n_categories;
        const char *note = !is_mean && r->notes ? r->notes[c] : NULL;
        any_note |= note != NULL;
        for (int m = 0; m < r->n_methods; m++) {
            fputs(is_mean && m == 0 ? "<tr class=\"mean\">" : "<tr>", f);
            if (m == 0) {
                fprintf(f, "<td class=\"name\" rowspan=\"%d\">", r->n_methods);
                if (is_mean) {
                    fputs("<b>mean</b>", f);
                } else {
                    fputs("<b>", f);
                    put_esc(f, r->categories[c]);
                    fputs("</b>", f);
                    if (note) fputs(" *", f);
                }
                fputs("</td>", f);
            }
            fputs("<td class=\"name\">", f);
            put_esc(f, r->methods[m]);
            fputs("</td>", f);
            for (int k = 0; k < r->n_metrics; k++) {
                double v = value(r, m, c, k), best = -INFINITY;
                for (int o = 0; o < r->n_methods; o++)
                    if (isfinite(value(r, o, c, k)) && value(r, o, c, k) > best)
                        best = value(r, o, c, k);
                if (!isfinite(v)) {
                    fputs("<td class=\"na\"", f);
                    if (note) {
                        fputs(" title=\"", f);
                        put_esc(f, note);
                        fputs("\"", f);
                    }
                } else {
                    fputs(r->n_methods > 1 && v == best ? "<td class=\"best\"" : "<td", f);
                    put_shade(f, v);
                }
                fputs(">", f);
                put_value(f, v);
                fputs("</td>", f);
            }
            fputs("</tr>\n", f);
        }
    }
    fputs("</table></div>\n<p class=\"note\">Values in [0, 1], 4 decimals; bold: the best method of "
          "a category; mean: over the categories where a metric is defined.</p>\n", f);
    if (any_note) {
        fputs("<p class=\"note\">", f);
        for (int c = 0; c < r->n_categories; c++) {
            if (!r->notes[c]) continue;
            fputs("* <b>", f);
            put_esc(f, r->categories[c]);
            fputs("</b>: ", f);
            put_esc(f, r->notes[c]);
            fputs("<br>\n", f);
        }
        fputs("</p>\n", f);
    }
}

/* The threshold table: a row per category (then all pooled), per method its threshold, false
 * rejects and escapes. */
static void put_threshold_table(FILE *f, const drdc_report *r) {
    fputs("<h2 id=\"thresholds\">Image threshold</h2>\n<div class=\"wide\"><table>\n"
          "<tr><th class=\"name\" rowspan=\"2\">category</th>", f);
    for (int m = 0; m < r->n_methods; m++) {
        fputs("<th colspan=\"3\" class=\"group\" style=\"text-align:center\">", f);
        put_method(f, r, m);
        fputs("</th>", f);
    }
    fputs("</tr>\n<tr>", f);
    for (int m = 0; m < r->n_methods; m++)
        fputs("<th class=\"group\">threshold</th><th>false rejects</th><th>escapes</th>", f);
    fputs("</tr>\n", f);
    for (int c = 0; c <= r->n_categories; c++) {
        int pooled = c == r->n_categories;
        fputs(pooled ? "<tr class=\"mean\"><td class=\"name\"><b>all (pooled)</b></td>"
                     : "<tr><td class=\"name\"><b>", f);
        if (!pooled) {
            put_esc(f, r->categories[c]);
            fputs("</b></td>", f);
        }
        for (int m = 0; m < r->n_methods; m++) {
            outcome o = outcome_of(r, m, pooled ? 0 : c, pooled ? r->n_categories : c + 1);
            if (!o.have)
                fputs("<td class=\"group na\">n/a</td>", f);
            else if (pooled)
                fputs("<td class=\"group\"></td>", f);
            else
                fprintf(f, "<td class=\"group\">%.4f</td>", o.threshold);
            put_outcome(f, &o);
        }
        fputs("</tr>\n", f);
    }
    fputs("</table></div>\n<p class=\"note\">An image is judged anomalous when its score is &ge; the "
          "method's calibrated threshold. False rejects: good images judged anomalous, of all "
          "good test images; escapes: defective images judged normal, of all defective test "
          "images.</p>\n", f);
}

/* ---- charts ------------------------------------------------------------------------------ */

enum { CH_IMAGE_ROC, CH_IMAGE_PR, CH_PIXEL_ROC, CH_PRO, N_CHARTS };

#define SVG_W 276
#define SVG_H 250
#define PLOT_L 44
#define PLOT_R 12
#define PLOT_T 24
#define PLOT_B 38
#define PLOT_W (SVG_W - PLOT_L - PLOT_R)
#define PLOT_H (SVG_H - PLOT_T - PLOT_B)

static const drdc_curve *chart_curve(const drdc_report *r, int chart, int m, int c) {
    const drdc_curves *cv = curves_of(chart <= CH_IMAGE_PR ? r->image_curves : r->pixel_curves,
                                      r, m, c);
    if (!cv) return NULL;
    const drdc_curve *cu = chart == CH_IMAGE_ROC || chart == CH_PIXEL_ROC ? &cv->roc
                           : chart == CH_IMAGE_PR                         ? &cv->pr
                                                                          : &cv->pro;
    return cu->n >= 2 && cu->x && cu->y ? cu : NULL;
}

/* The PRO curves' FPR limit on category c (the first method that has one). */
static double pro_limit(const drdc_report *r, int c) {
    for (int m = 0; m < r->n_methods; m++) {
        const drdc_curves *cv = curves_of(r->pixel_curves, r, m, c);
        if (cv && cv->pro.n >= 2 && cv->pro_fpr_limit > 0.0) return cv->pro_fpr_limit;
    }
    return DRDC_AUPRO_FPR_LIMIT;
}

#define PLOT_PAD 4 /* inside the frame, so that a curve along an edge stays visible */

static double sx(double x, double xmax) { return PLOT_L + PLOT_PAD + x / xmax * (PLOT_W - 2 * PLOT_PAD); }
static double sy(double y) { return PLOT_T + PLOT_PAD + (1.0 - y) * (PLOT_H - 2 * PLOT_PAD); }

/* One chart of category c as an inline SVG: frame, grid, ticks, axis titles, the methods'
 * curves as polylines, a legend, and the chance diagonal (ROC) or the FPR limit (PRO). */
static void put_chart(FILE *f, const drdc_report *r, int chart, int c) {
    static const char *const titles[N_CHARTS] = {"Image ROC", "Image PR", "Pixel ROC", "PRO"};
    static const char *const xlab[N_CHARTS] = {"false positive rate", "recall",
                                               "false positive rate", "false positive rate"};
    static const char *const ylab[N_CHARTS] = {"true positive rate", "precision",
                                               "true positive rate", "per-region overlap"};
    double limit = chart == CH_PRO ? pro_limit(r, c) : 1.0;
    double xmax = chart == CH_PRO ? fmin(1.0, limit * 4.0 / 3.0) : 1.0;
    double xtick = xmax <= 0.5 ? 0.1 : 0.2;
    fprintf(f, "<svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
               "aria-label=\"", SVG_W, SVG_H, SVG_W, SVG_H);
    put_esc(f, titles[chart]);
    fputs(" of ", f);
    put_esc(f, r->categories[c]);
    fputs("\">\n", f);
    if (chart == CH_PRO)
        fprintf(f, "<text x=\"%d\" y=\"15\" font-weight=\"600\">PRO (FPR &le; %g)</text>\n",
                PLOT_L, limit);
    else
        fprintf(f, "<text x=\"%d\" y=\"15\" font-weight=\"600\">%s</text>\n", PLOT_L,
                titles[chart]);
    /* grid and ticks */
    for (int i = 0; i * xtick <= xmax + 1e-9; i++) {
        double x = sx(i * xtick, xmax);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e6e9ec\"/>"
                   "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                x, PLOT_T, x, PLOT_T + PLOT_H, x, PLOT_T + PLOT_H + 13, round(i * xtick * 10) / 10);
    }
    for (int i = 0; i <= 5; i++) {
        double y = sy(i * 0.2);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e6e9ec\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                PLOT_L, y, PLOT_L + PLOT_W, y, PLOT_L - 4, y + 4, round(i * 2.0) / 10);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
               "stroke=\"#57606a\"/>\n", PLOT_L, PLOT_T, PLOT_W, PLOT_H);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", PLOT_L + PLOT_W / 2,
            SVG_H - 6, xlab[chart]);
    fprintf(f, "<text transform=\"translate(11 %d) rotate(-90)\" text-anchor=\"middle\">%s"
               "</text>\n", PLOT_T + PLOT_H / 2, ylab[chart]);
    if (chart == CH_IMAGE_ROC || chart == CH_PIXEL_ROC)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#afb8c1\" "
                   "stroke-dasharray=\"4 3\"/>\n", sx(0, 1), sy(0), sx(1, 1), sy(1));
    if (chart == CH_PRO)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#b42318\" "
                   "stroke-dasharray=\"5 3\"/><text transform=\"translate(%.1f %d) rotate(-90)\" "
                   "text-anchor=\"middle\" style=\"fill:#b42318\">FPR limit %g</text>\n",
                sx(limit, xmax), PLOT_T, sx(limit, xmax), PLOT_T + PLOT_H, sx(limit, xmax) + 12,
                PLOT_T + PLOT_H / 2, limit);
    /* curves */
    int shown = 0;
    for (int m = 0; m < r->n_methods; m++) {
        const drdc_curve *cu = chart_curve(r, chart, m, c);
        if (!cu) continue;
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" "
                   "stroke-linejoin=\"round\" points=\"", colour(m));
        char prev[64] = "", pt[64];
        for (size_t i = 0; i < cu->n; i++) { /* a point on the same 0.1 px as the last: once */
            double x = fmin(fmax(cu->x[i], 0.0), xmax), y = fmin(fmax(cu->y[i], 0.0), 1.0);
            snprintf(pt, sizeof pt, "%.1f,%.1f", sx(x, xmax), sy(y));
            if (strcmp(pt, prev) == 0) continue;
            fprintf(f, "%s%s", i ? " " : "", pt);
            memcpy(prev, pt, sizeof pt);
        }
        fputs("\"/>\n", f);
        shown++;
    }
    /* legend where the curves leave room: lower right (ROC), lower left (PR), lower middle
     * (PRO: the strip right of the limit holds its label) */
    int lx = chart == CH_IMAGE_PR ? PLOT_L + 8
             : chart == CH_PRO    ? (int)sx(limit * 0.3, xmax)
                                  : PLOT_L + PLOT_W / 2 + 6;
    int ly = PLOT_T + PLOT_H - 8 - 14 * (shown - 1);
    for (int m = 0; m < r->n_methods; m++) {
        if (!chart_curve(r, chart, m, c)) continue;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                   "stroke-width=\"3\"/><text x=\"%d\" y=\"%d\">",
                lx, ly - 4, lx + 16, ly - 4, colour(m), lx + 20, ly);
        put_esc(f, r->methods[m]);
        fputs("</text>\n", f);
        ly += 14;
    }
    fputs("</svg>\n", f);
}

static void put_curves(FILE *f, const drdc_report *r) {
    if (!r->image_curves && !r->pixel_curves) return;
    fputs("<h2 id=\"curves\">Curves</h2>\n", f);
    put_legend_html(f, r);
    for (int c = 0; c < r->n_categories; c++) {
        fputs("<div class=\"cat\"><h3>", f);
        put_esc(f, r->categories[c]);
        fputs("</h3>\n<div class=\"charts\">\n", f);
        int drawn = 0;
        for (int ch = 0; ch < N_CHARTS; ch++) {
            int any = 0;
            for (int m = 0; m < r->n_methods && !any; m++) any = chart_curve(r, ch, m, c) != NULL;
            if (!any) continue;
            put_chart(f, r, ch, c);
            drawn++;
        }
        fputs("</div>\n", f);
        if (drawn < N_CHARTS) {
            fputs("<p class=\"note\">Some curves are not drawn: their metrics are undefined "
                  "here", f);
            if (r->notes && r->notes[c]) {
                fputs(" (", f);
                put_esc(f, r->notes[c]);
                fputs(")", f);
            }
            fputs(".</p>\n", f);
        }
        fputs("</div>\n", f);
    }
}

/* ---- images ------------------------------------------------------------------------------ */

static void put_image(FILE *f, const drdc_report *r, const drdc_report_image *im, int rank) {
    static const char *const cls[3] = {"miss", "alarm", "ok"};
    static const char *const badge[3] = {"MISS", "FALSE ALARM", "OK"};
    int g = image_group(im);
    fprintf(f, "<div class=\"img %s\"><div class=\"what\"><span class=\"badge %s\">%s</span>"
               "<b>#%d</b> &middot; <b>", cls[g], cls[g], badge[g], rank);
    put_esc(f, r->categories[im->category]);
    fputs("</b> / ", f);
    put_esc(f, im->defect);
    fprintf(f, " &mdash; %s image judged %s &middot; score %.4f", im->label ? "defective" : "good",
            im->verdict ? "anomalous" : "normal", im->score);
    if (isfinite(im->threshold))
        fprintf(f, " vs threshold %.4f (%+.4f)", im->threshold, im->score - im->threshold);
    fputs("</div>\n<div class=\"path\">", f);
    put_esc(f, im->path);
    fputs("</div>\n", f);
    if (im->panel && *im->panel) {
        fputs("<img loading=\"lazy\" src=\"", f);
        put_url(f, im->panel);
        fputs("\" alt=\"panel of ", f);
        put_esc(f, im->path);
        fputs("\">\n", f);
    }
    fputs("</div>\n", f);
}

static drdc_status put_images(FILE *f, const drdc_report *r, const char *path) {
    if (r->n_images == 0) return DRDC_OK;
    int *order = malloc((size_t)r->n_images * sizeof *order);
    if (!order)
        return drdc_fail(DRDC_ERR_NOMEM, "%s: cannot allocate the order of %d images", path,
                         r->n_images);
    drdc_report_order_images(r->images, r->n_images, order);
    int count[3] = {0, 0, 0};
    for (int i = 0; i < r->n_images; i++) count[image_group(&r->images[i])]++;
    fputs("<h2 id=\"images\">Test images, worst first</h2>\n<p>Judged by <b>", f);
    put_esc(f, r->methods[r->image_method]);
    fprintf(f, "</b>: <span class=\"%s\">%d misses</span> (defective judged normal), "
               "<span class=\"%s\">%d false alarms</span> (good judged anomalous), %d judged "
               "right, of %d. Misses and false alarms come first, each by how far the score "
               "lies on the wrong side of the threshold; then the rest, closest to the threshold "
               "first. Panels: the image, its ground truth, then the map of ",
            count[0] ? "bad" : "", count[0], count[1] ? "bad" : "", count[1], count[2],
            r->n_images);
    for (int m = 0; m < r->n_methods; m++) {
        fputs(m == 0 ? "" : m + 1 < r->n_methods ? ", " : " and ", f);
        put_esc(f, r->methods[m]);
    }
    fputs(".</p>\n", f);
    int rank = 1;
    for (int i = 0; i < r->n_images; i++) {
        const drdc_report_image *im = &r->images[order[i]];
        if (image_group(im) == 2 && (i == 0 || image_group(&r->images[order[i - 1]]) != 2))
            fprintf(f, "<details%s><summary>%d images judged right (closest to the threshold "
                       "first)</summary>\n", count[0] + count[1] ? "" : " open", count[2]);
        put_image(f, r, im, rank++);
    }
    if (count[2]) fputs("</details>\n", f);
    free(order);
    return DRDC_OK;
}

/* ---- the page ---------------------------------------------------------------------------- */

drdc_status drdc_report_write(const char *html_path, const drdc_report *r) {
    drdc_status st = check_report(html_path, r);
    if (st) return st;
    drdc_atomic_file af;
    st = drdc_atomic_open(&af, html_path);
    if (st) return st;
    FILE *f = af.f;
    const char *title = r->title && *r->title ? r->title : "drdc evaluation";
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>", f);
    put_esc(f, title);
    fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n<h1>", STYLE);
    put_esc(f, title);
    fputs("</h1>\n<ul class=\"about\">\n", f);
    for (int i = 0; i < r->n_about; i++) {
        fputs("<li>", f);
        put_esc(f, r->about[i]);
        fputs("</li>\n", f);
    }
    fputs("</ul>\n<nav><a href=\"#overview\">Overview</a><a href=\"#metrics\">Metrics</a>", f);
    if (r->thresholds) fputs("<a href=\"#thresholds\">Threshold</a>", f);
    if (r->image_curves || r->pixel_curves) fputs("<a href=\"#curves\">Curves</a>", f);
    if (r->n_images) fputs("<a href=\"#images\">Images</a>", f);
    fputs("</nav>\n", f);
    put_overview(f, r);
    put_metrics_table(f, r);
    if (r->thresholds) put_threshold_table(f, r);
    put_curves(f, r);
    TRY(put_images(f, r, html_path));
    fputs("</main>\n</body>\n</html>\n", f);
    TRY(drdc_atomic_commit(&af)); /* a failed write shows here (ferror) */
done:
    if (af.f) drdc_atomic_abort(&af); /* commit closes the file, also when it fails */
    return st;
}
