/* dataset.c: indexes anomaly-detection datasets (MVTec AD / MPDD, BTAD, VisA, plain folder)
 * into per-category lists of image paths, labels, defect types and mask paths, plus the
 * seeded train/validation split. VisA's split file is read with formats/csv.c. No pixels are
 * read here (see loader.c). Layout rules and the skipping policy are documented in dataset.h. */
#define _POSIX_C_SOURCE 200809L
#include "drdc/data/dataset.h"
#include "drdc/core/fsutil.h"
#include "drdc/core/rng.h"
#include "drdc/formats/csv.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char GOOD[] = "good";
static const char ANOMALY[] = "anomaly";

/* ---- small helpers --------------------------------------------------------------------------- */

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *path_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    while (na > 1 && a[na - 1] == '/') na--;
    char *p = malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    p[na] = '/';
    memcpy(p + na + 1, b, nb + 1);
    return p;
}

static char *path_join3(const char *a, const char *b, const char *c) {
    char *ab = path_join(a, b);
    if (!ab) return NULL;
    char *abc = path_join(ab, c);
    free(ab);
    return abc;
}

static drdc_status oom(const char *what) {
    return drdc_fail(DRDC_ERR_NOMEM, "out of memory while indexing %s", what);
}

/* The extension of a file name (after the last '.' of the base name), or "". */
static const char *file_ext(const char *name) {
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strrchr(base, '.');
    return (dot && dot != base) ? dot + 1 : "";
}

int drdc_is_image_file(const char *path) {
    const char *e = file_ext(path);
    return !strcasecmp(e, "png") || !strcasecmp(e, "jpg") || !strcasecmp(e, "jpeg") ||
           !strcasecmp(e, "bmp");
}

static int is_tif(const char *path) {
    const char *e = file_ext(path);
    return !strcasecmp(e, "tif") || !strcasecmp(e, "tiff");
}

/* A growable list of owned strings. */
typedef struct strvec {
    char **v;
    int n, cap;
} strvec;

static int sv_push_owned(strvec *sv, char *s) {
    if (!s) return -1;
    if (sv->n == sv->cap) {
        int cap = sv->cap ? sv->cap * 2 : 16;
        char **v = realloc(sv->v, (size_t)cap * sizeof *v);
        if (!v) { free(s); return -1; }
        sv->v = v;
        sv->cap = cap;
    }
    sv->v[sv->n++] = s;
    return 0;
}

static int sv_push(strvec *sv, const char *s) { return sv_push_owned(sv, xstrdup(s)); }

static void sv_free(strvec *sv) {
    for (int i = 0; i < sv->n; i++) free(sv->v[i]);
    free(sv->v);
    memset(sv, 0, sizeof *sv);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void sv_sort(strvec *sv) {
    if (sv->n > 1) qsort(sv->v, (size_t)sv->n, sizeof *sv->v, cmp_str);
}

static int sv_find(const strvec *sv, const char *s) {
    for (int i = 0; i < sv->n; i++)
        if (!strcmp(sv->v[i], s)) return i;
    return -1;
}

void drdc_string_list_free(char **names, int n) {
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Records one skipped entry of a dataset folder. */
static void note_skip(drdc_dataset *ds, const char *path, int tif) {
    ds->n_skipped++;
    if (tif) ds->n_skipped_tif++;
    if (!ds->first_skipped) ds->first_skipped = xstrdup(path);
}

/* Sorted names of the non-hidden sub-folders of dir. */
static drdc_status list_subdirs(const char *dir, strvec *out) {
    DIR *d = opendir(dir);
    if (!d) return drdc_fail(DRDC_ERR_IO, "%s: cannot list folder: %s", dir, strerror(errno));
    struct dirent *e;
    drdc_status st = DRDC_OK;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char *p = path_join(dir, e->d_name);
        if (!p) { st = oom(dir); break; }
        int isd = drdc_is_dir(p);
        free(p);
        if (isd && sv_push(out, e->d_name)) { st = oom(dir); break; }
    }
    closedir(d);
    if (st == DRDC_OK) sv_sort(out);
    return st;
}

/* Sorted full paths of the image files in dir. With ds, everything else is counted as
 * skipped; without (ground-truth folders), silently ignored. */
static drdc_status list_images(drdc_dataset *ds, const char *dir, strvec *out) {
    DIR *d = opendir(dir);
    if (!d) return drdc_fail(DRDC_ERR_IO, "%s: cannot list folder: %s", dir, strerror(errno));
    struct dirent *e;
    drdc_status st = DRDC_OK;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = path_join(dir, e->d_name);
        if (!p) { st = oom(dir); break; }
        if (e->d_name[0] != '.' && drdc_is_image_file(e->d_name) && drdc_is_file(p)) {
            if (sv_push_owned(out, p)) { st = oom(dir); break; }
            continue;
        }
        if (ds) note_skip(ds, p, is_tif(e->d_name) && e->d_name[0] != '.');
        free(p);
    }
    closedir(d);
    if (st == DRDC_OK) sv_sort(out);
    return st;
}

/* ---- dataset building ------------------------------------------------------------------------ */

static void category_free(drdc_category *c) {
    for (int i = 0; i < c->n_train; i++) free((void *)c->train[i].image_path);
    for (int i = 0; i < c->n_test; i++) {
        free((void *)c->test[i].image_path);
        free((void *)c->test[i].mask_path);
    }
    free(c->train);
    free(c->test);
    drdc_string_list_free(c->defect_types, c->n_defect_types);
    free(c->name);
    free(c->dir);
    memset(c, 0, sizeof *c);
}

void drdc_dataset_free(drdc_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n_categories; i++) category_free(&ds->categories[i]);
    free(ds->categories);
    free(ds->root);
    free(ds->first_skipped);
    memset(ds, 0, sizeof *ds);
}

void drdc_dataset_keep_every(drdc_dataset *ds, int k) {
    if (k <= 1) return;
    for (int c = 0; c < ds->n_categories; c++) {
        drdc_category *cat = &ds->categories[c];
        int n = 0;
        cat->n_test_good = cat->n_test_defect = 0;
        for (int i = 0; i < cat->n_test; i++) {
            drdc_sample s = cat->test[i];
            if (i % k != 0) {
                free((void *)s.image_path);
                free((void *)s.mask_path);
                continue;
            }
            cat->test[n++] = s;
            if (s.label) cat->n_test_defect++;
            else cat->n_test_good++;
        }
        cat->n_test = n;
    }
}

int drdc_dataset_find_category(const drdc_dataset *ds, const char *name) {
    for (int i = 0; i < ds->n_categories; i++)
        if (!strcmp(ds->categories[i].name, name)) return i;
    return -1;
}

/* Appends a sample to an array (grown by doubling). Takes ownership of img and mask. */
static int push_sample(drdc_sample **arr, int *n, int *cap, char *img, char *mask,
                       const char *defect, int label, int category) {
    if (!img) { free(mask); return -1; }
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 32;
        drdc_sample *a = realloc(*arr, (size_t)nc * sizeof *a);
        if (!a) { free(img); free(mask); return -1; }
        *arr = a;
        *cap = nc;
    }
    drdc_sample *s = &(*arr)[(*n)++];
    s->image_path = img;
    s->mask_path = mask;
    s->defect = defect;
    s->label = label;
    s->category = category;
    return 0;
}

/* push_sample into c's test list, counting the sample as good or defect. */
static int push_test(drdc_category *c, int ci, int *cap, char *img, char *mask, const char *defect, int label) {
    if (push_sample(&c->test, &c->n_test, cap, img, mask, defect, label, ci)) return -1;
    if (label) c->n_test_defect++;
    else c->n_test_good++;
    return 0;
}

/* Base name without extension of a path (malloc'd). */
static char *stem_of(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = (dot && dot != base) ? (size_t)(dot - base) : strlen(base);
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, base, n);
    s[n] = '\0';
    return s;
}

/* Finds the mask of the image with stem `stem` among the ground-truth files `gt` (full paths):
 * <stem>_mask.<ext> first (MVTec naming), else <stem>.<ext>. Returns an index or -1. */
static int find_mask(const strvec *gt, const char *stem) {
    size_t ns = strlen(stem);
    int plain = -1;
    for (int i = 0; i < gt->n; i++) {
        const char *slash = strrchr(gt->v[i], '/');
        const char *base = slash ? slash + 1 : gt->v[i];
        const char *dot = strrchr(base, '.');
        size_t nb = dot ? (size_t)(dot - base) : strlen(base);
        if (strncmp(base, stem, ns) != 0) continue;
        if (nb == ns + 5 && !strncmp(base + ns, "_mask", 5)) return i;
        if (nb == ns && plain < 0) plain = i;
    }
    return plain;
}

/* Adds the images of one test folder (`defect` NULL: good) to category c. gt_dir: the folder
 * holding this defect's masks, or NULL when the category has no masks at all. */
static drdc_status add_test_folder(drdc_dataset *ds, drdc_category *c, int ci, int *cap,
                                   const char *dir, const char *defect, const char *gt_dir) {
    strvec imgs = {0}, gt = {0};
    drdc_status st = DRDC_OK;
    TRY(list_images(ds, dir, &imgs));
    if (defect && gt_dir && drdc_is_dir(gt_dir)) TRY(list_images(NULL, gt_dir, &gt));
    for (int i = 0; i < imgs.n; i++) {
        char *mask = NULL;
        if (defect && gt_dir) {
            char *stem = stem_of(imgs.v[i]);
            if (!stem) {
                st = oom(dir);
                goto done;
            }
            int k = find_mask(&gt, stem);
            if (k < 0) {
                st = drdc_fail(DRDC_ERR_INPUT,
                               "defect image %s has no ground-truth mask (looked for %s/%s_mask.png "
                               "or %s/%s.png, any image extension)",
                               imgs.v[i], gt_dir, stem, gt_dir, stem);
                free(stem);
                goto done;
            }
            free(stem);
            mask = xstrdup(gt.v[k]);
            if (!mask) {
                st = oom(dir);
                goto done;
            }
        }
        int failed = push_test(c, ci, cap, imgs.v[i], mask, defect ? defect : GOOD, defect ? 1 : 0);
        imgs.v[i] = NULL;   /* now owned by the sample (freed by push_sample when it failed) */
        if (failed) {
            st = oom(dir);
            goto done;
        }
    }
done:
    sv_free(&imgs);
    sv_free(&gt);
    return st;
}

/* Scans one category folder of the mvtec/mpdd, btad or folder layouts into c.
 *   train_rel: train folder relative to dir ("train/good", "train/ok", "good")
 *   good_name: name of the normal test folder ("good" or "ok")
 *   masks_optional: a missing ground_truth folder means "no masks" rather than an error */
static drdc_status scan_category(drdc_dataset *ds, drdc_category *c, int ci, const char *dir,
                                 const char *train_rel, const char *good_name, int masks_optional) {
    drdc_status st = DRDC_OK;
    char *train_dir = path_join(dir, train_rel);
    char *test_dir = path_join(dir, "test");
    char *gt_root = path_join(dir, "ground_truth");
    char *p = NULL, *gd = NULL;   /* one test folder and its ground_truth folder */
    strvec train = {0}, tests = {0};
    int cap = 0;
    if (!train_dir || !test_dir || !gt_root) { st = oom(dir); goto done; }
    if (!drdc_is_dir(dir)) {
        st = drdc_fail(DRDC_ERR_INPUT, "category folder %s not found", dir);
        goto done;
    }
    if (!drdc_is_dir(train_dir)) {
        st = drdc_fail(DRDC_ERR_INPUT, "category %s: training folder %s not found", c->name, train_dir);
        goto done;
    }
    TRY(list_images(ds, train_dir, &train));
    if (train.n == 0) {
        st = drdc_fail(DRDC_ERR_INPUT, "category %s: no images in %s (normal training images are required)",
                       c->name, train_dir);
        goto done;
    }
    c->train = calloc((size_t)train.n, sizeof *c->train);
    if (!c->train) { st = oom(dir); goto done; }
    for (int i = 0; i < train.n; i++) {
        c->train[i] = (drdc_sample){train.v[i], NULL, GOOD, 0, ci};
        train.v[i] = NULL;
    }
    c->n_train = train.n;

    int has_gt = drdc_is_dir(gt_root);
    c->has_masks = has_gt || !masks_optional;
    if (!drdc_is_dir(test_dir)) goto done;   /* no test images: allowed, counts say so */
    TRY(list_subdirs(test_dir, &tests));
    int g = sv_find(&tests, good_name);
    if (g >= 0) {
        p = path_join(test_dir, good_name);
        if (!p) { st = oom(dir); goto done; }
        TRY(add_test_folder(ds, c, ci, &cap, p, NULL, NULL));
        free(p);
        p = NULL;
    }
    for (int i = 0; i < tests.n; i++) {
        if (i == g) continue;
        int before = c->n_test;
        p = path_join(test_dir, tests.v[i]);
        gd = path_join(gt_root, tests.v[i]);
        char *name = xstrdup(tests.v[i]);
        if (!p || !gd || !name) { free(name); st = oom(dir); goto done; }
        /* The defect name must outlive the samples: keep it in defect_types first. */
        char **types = realloc(c->defect_types, (size_t)(c->n_defect_types + 1) * sizeof *types);
        if (!types) { free(name); st = oom(dir); goto done; }
        c->defect_types = types;
        c->defect_types[c->n_defect_types++] = name;
        TRY(add_test_folder(ds, c, ci, &cap, p, name, c->has_masks ? gd : NULL));
        free(p);
        free(gd);
        p = gd = NULL;
        if (c->n_test == before) {   /* an empty defect folder lists no defect type */
            free(c->defect_types[--c->n_defect_types]);
        }
    }
done:
    free(train_dir);
    free(test_dir);
    free(gt_root);
    free(p);
    free(gd);
    sv_free(&train);
    sv_free(&tests);
    return st;
}

static int str_in(const char *s, const char *const *list, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, list[i])) return 1;
    return 0;
}

/* "a, b, c" into buf (truncated with "..." when long). */
static void join_names(char *buf, size_t cap, char *const *names, int n) {
    size_t len = 0;
    buf[0] = '\0';
    if (n == 0) { snprintf(buf, cap, "none"); return; }
    for (int i = 0; i < n; i++) {
        int w = snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", names[i]);
        if (w < 0 || (size_t)w >= cap - len) {
            if (cap > 4) strcpy(buf + cap - 4, "...");
            return;
        }
        len += (size_t)w;
    }
}

static int valid_layout(const char *layout) {
    return !strcmp(layout, "mvtec") || !strcmp(layout, "mpdd") || !strcmp(layout, "btad") ||
           !strcmp(layout, "visa") || !strcmp(layout, "folder");
}

static drdc_status check_root(const char *layout, const char *root) {
    if (!layout || !valid_layout(layout))
        return drdc_fail(DRDC_ERR_INPUT, "unknown dataset layout '%s' (expected mvtec, mpdd, btad, visa or folder)",
                         layout ? layout : "(null)");
    if (!root || !*root) return drdc_fail(DRDC_ERR_INPUT, "dataset root is empty");
    if (!drdc_is_dir(root)) return drdc_fail(DRDC_ERR_INPUT, "dataset root %s not found (or not a folder)", root);
    return DRDC_OK;
}

static int has_subdir(const char *dir, const char *name) {
    char *p = path_join(dir, name);
    int r = p && drdc_is_dir(p);
    free(p);
    return r;
}

/* Base name of a folder path, ignoring trailing slashes. */
static char *dir_basename(const char *root) {
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && root[b - 1] != '/') b--;
    char *s = malloc(n - b + 1);
    if (!s) return NULL;
    memcpy(s, root + b, n - b);
    s[n - b] = '\0';
    return s;
}

/* Category names of the folder-based layouts (not visa). */
static drdc_status available_folders(const char *layout, const char *root, strvec *out) {
    if (!strcmp(layout, "folder")) {
        if (has_subdir(root, "good")) {
            char *b = dir_basename(root);
            if (!b || sv_push_owned(out, b)) return oom(root);
            return DRDC_OK;
        }
    }
    strvec subs = {0};
    drdc_status st = DRDC_OK;
    TRY(list_subdirs(root, &subs));
    for (int i = 0; i < subs.n; i++) {
        int keep = 0;
        if (!strcmp(layout, "folder")) {
            char *p = path_join(root, subs.v[i]);
            keep = p && has_subdir(p, "good");
            free(p);
        } else {
            static const char *const marks[] = {"train", "test", "ground_truth"};
            for (int m = 0; m < 3 && !keep; m++) {
                char *p = path_join3(root, subs.v[i], marks[m]);
                if (!p) { st = oom(root); goto done; }
                keep = drdc_is_dir(p);
                free(p);
            }
        }
        if (keep && sv_push(out, subs.v[i])) { st = oom(root); goto done; }
    }
done:
    sv_free(&subs);
    return st;
}

/* Resolves the chosen category names against the available ones into `chosen` (copies). */
static drdc_status choose(const char *root, const strvec *avail, int n_chosen,
                          const char *const *chosen_in, strvec *chosen) {
    char list[1024];
    if (n_chosen <= 0) {
        if (avail->n == 0)
            return drdc_fail(DRDC_ERR_INPUT, "no category folders found under dataset root %s", root);
        for (int i = 0; i < avail->n; i++)
            if (sv_push(chosen, avail->v[i])) return oom(root);
        return DRDC_OK;
    }
    for (int i = 0; i < n_chosen; i++) {
        const char *name = chosen_in[i];
        if (!name || !*name) return drdc_fail(DRDC_ERR_INPUT, "empty category name in the chosen list");
        if (str_in(name, chosen_in, i))
            return drdc_fail(DRDC_ERR_INPUT, "category '%s' is listed twice", name);
        if (sv_find(avail, name) < 0) {
            join_names(list, sizeof list, avail->v, avail->n);
            return drdc_fail(DRDC_ERR_INPUT, "unknown category '%s' under %s (available: %s)", name, root, list);
        }
        if (sv_push(chosen, name)) return oom(root);
    }
    return DRDC_OK;
}

/* ---- VisA -------------------------------------------------------------------------------------- */

static int col_index(const drdc_csv *csv, const char *name) {
    int n = drdc_csv_row_fields(csv, 0);
    for (int i = 0; i < n; i++) {
        const char *f = drdc_csv_field(csv, 0, i);
        /* tolerate surrounding spaces in header names */
        while (*f == ' ') f++;
        size_t l = strlen(f);
        while (l && f[l - 1] == ' ') l--;
        if (l == strlen(name) && !strncasecmp(f, name, l)) return i;
    }
    return -1;
}

static char *visa_path(const char *root, const char *rel) {
    return rel[0] == '/' ? xstrdup(rel) : path_join(root, rel);
}

typedef struct visa_cols {
    int object, split, label, image, mask;
} visa_cols;

static drdc_status visa_header(const drdc_csv *csv, const char *path, visa_cols *c) {
    if (csv->n_rows == 0) return drdc_fail(DRDC_ERR_FORMAT, "%s: empty file (expected a header row)", path);
    c->object = col_index(csv, "object");
    c->split = col_index(csv, "split");
    c->label = col_index(csv, "label");
    c->image = col_index(csv, "image");
    c->mask = col_index(csv, "mask");
    const char *missing = c->object < 0 ? "object" : c->split < 0 ? "split" : c->label < 0 ? "label"
                        : c->image < 0 ? "image" : NULL;
    if (missing)
        return drdc_fail(DRDC_ERR_FORMAT, "%s:%d: header lacks the '%s' column (expected object,split,label,image,mask)",
                         path, csv->row_line[0], missing);
    return DRDC_OK;
}

static drdc_status visa_available(const drdc_csv *csv, const char *path, strvec *out) {
    visa_cols c = {0};
    drdc_status st = DRDC_OK;
    TRY(visa_header(csv, path, &c));
    int ncol = drdc_csv_row_fields(csv, 0);
    for (int r = 1; r < csv->n_rows; r++) {
        if (drdc_csv_row_fields(csv, r) != ncol)
            return drdc_fail(DRDC_ERR_FORMAT, "%s:%d: %d fields, the header has %d", path, csv->row_line[r],
                             drdc_csv_row_fields(csv, r), ncol);
        const char *obj = drdc_csv_field(csv, r, c.object);
        if (!*obj) return drdc_fail(DRDC_ERR_FORMAT, "%s:%d: empty object name", path, csv->row_line[r]);
        if (sv_find(out, obj) < 0 && sv_push(out, obj)) return oom(path);
    }
    sv_sort(out);
done:
    return st;
}

static int cmp_sample_path(const void *a, const void *b) {
    const drdc_sample *x = a, *y = b;
    if (x->label != y->label) return x->label - y->label;
    return strcmp(x->image_path, y->image_path);
}

/* Adds the image of CSV row r to its category (a row of a category not chosen is skipped). caps: the
 * capacities of each category's train arrays, then of its test arrays. */
static drdc_status visa_row(drdc_dataset *ds, const drdc_csv *csv, int r, const visa_cols *c, const char *path,
                            int *caps) {
    int line = csv->row_line[r];
    int ci = drdc_dataset_find_category(ds, drdc_csv_field(csv, r, c->object));
    if (ci < 0) return DRDC_OK;
    drdc_category *cat = &ds->categories[ci];
    const char *split = drdc_csv_field(csv, r, c->split);
    const char *label = drdc_csv_field(csv, r, c->label);
    const char *img = drdc_csv_field(csv, r, c->image);
    const char *mask = c->mask >= 0 ? drdc_csv_field(csv, r, c->mask) : "";
    int is_train = !strcasecmp(split, "train"), is_test = !strcasecmp(split, "test");
    if (!is_train && !is_test)
        return drdc_fail(DRDC_ERR_FORMAT, "%s:%d: split '%s' (expected train or test)", path, line, split);
    int lab = !strcasecmp(label, "normal") ? 0 : !strcasecmp(label, "anomaly") ? 1 : -1;
    if (lab < 0) return drdc_fail(DRDC_ERR_FORMAT, "%s:%d: label '%s' (expected normal or anomaly)", path, line, label);
    if (!*img) return drdc_fail(DRDC_ERR_FORMAT, "%s:%d: empty image path", path, line);
    char *ip = NULL, *mp = NULL;
    drdc_status st = DRDC_OK;
    ip = visa_path(ds->root, img);
    if (!ip) return oom(path);
    if (!drdc_is_image_file(ip)) {
        note_skip(ds, ip, is_tif(ip));
        goto done;
    }
    if (!drdc_is_file(ip)) {
        st = drdc_fail(DRDC_ERR_INPUT, "%s:%d: image %s not found", path, line, ip);
        goto done;
    }
    if (is_train) {
        if (lab) {
            st = drdc_fail(DRDC_ERR_INPUT, "%s:%d: training image %s is labelled anomaly (train must be normal)",
                           path, line, ip);
            goto done;
        }
        int failed = push_sample(&cat->train, &cat->n_train, &caps[ci], ip, NULL, GOOD, 0, ci);
        ip = NULL;   /* the sample's now (freed by push_sample when it failed) */
        if (failed) st = oom(path);
        goto done;
    }
    if (lab) {
        if (!*mask) {
            st = drdc_fail(DRDC_ERR_INPUT, "%s:%d: anomalous image %s has no mask", path, line, ip);
            goto done;
        }
        mp = visa_path(ds->root, mask);
        if (!mp) {
            st = oom(path);
            goto done;
        }
        if (!drdc_is_file(mp)) {
            st = drdc_fail(DRDC_ERR_INPUT, "%s:%d: mask %s of image %s not found", path, line, mp, ip);
            goto done;
        }
    }
    int failed = push_test(cat, ci, &caps[ds->n_categories + ci], ip, mp, lab ? ANOMALY : GOOD, lab);
    ip = mp = NULL;   /* the sample's now (freed by push_sample when it failed) */
    if (failed) st = oom(path);
done:
    free(ip);
    free(mp);
    return st;
}

static drdc_status visa_build(drdc_dataset *ds, const drdc_csv *csv, const char *path) {
    visa_cols c = {0};
    int *caps = NULL;
    drdc_status st = DRDC_OK;
    TRY(visa_header(csv, path, &c));
    caps = calloc((size_t)ds->n_categories * 2, sizeof *caps);
    if (!caps) return oom(path);
    for (int r = 1; r < csv->n_rows; r++) TRY(visa_row(ds, csv, r, &c, path, caps));
    for (int ci = 0; ci < ds->n_categories; ci++) {
        drdc_category *cat = &ds->categories[ci];
        cat->has_masks = 1;
        if (cat->n_train == 0) {
            st = drdc_fail(DRDC_ERR_INPUT, "%s: category %s has no training images (split train, label normal)",
                           path, cat->name);
            goto done;
        }
        qsort(cat->train, (size_t)cat->n_train, sizeof *cat->train, cmp_sample_path);
        if (cat->n_test) qsort(cat->test, (size_t)cat->n_test, sizeof *cat->test, cmp_sample_path);
        if (cat->n_test_defect) {
            cat->defect_types = malloc(sizeof *cat->defect_types);
            if (!cat->defect_types || !(cat->defect_types[0] = xstrdup(ANOMALY))) {
                st = oom(path);
                goto done;
            }
            cat->n_defect_types = 1;
            /* the samples point at the static string; defect_types holds its own copy */
        }
    }
done:
    free(caps);
    return st;
}

static char *visa_csv_path(const char *root) { return path_join3(root, "split_csv", "1cls.csv"); }

/* ---- public entry points -------------------------------------------------------------------- */

drdc_status drdc_dataset_available(const char *layout, const char *root, char ***names, int *n) {
    *names = NULL;
    *n = 0;
    strvec avail = {0};
    drdc_csv csv = {0};
    char *p = NULL;
    drdc_status st = DRDC_OK;
    TRY(check_root(layout, root));
    if (!strcmp(layout, "visa")) {
        p = visa_csv_path(root);
        if (!p) {
            st = oom(root);
            goto done;
        }
        TRY(drdc_csv_load(p, &csv));
        TRY(visa_available(&csv, p, &avail));
    } else {
        TRY(available_folders(layout, root, &avail));
    }
    *names = avail.v;
    *n = avail.n;
    memset(&avail, 0, sizeof avail);   /* the caller's now */
done:
    sv_free(&avail);
    drdc_csv_free(&csv);
    free(p);
    return st;
}

drdc_status drdc_dataset_open(drdc_dataset *ds, const char *layout, const char *root,
                              int n_categories, const char *const *categories) {
    memset(ds, 0, sizeof *ds);
    strvec avail = {0}, chosen = {0};
    drdc_csv csv = {0};
    char *csv_path = NULL;
    drdc_status st = DRDC_OK;
    TRY(check_root(layout, root));
    snprintf(ds->layout, sizeof ds->layout, "%s", layout);
    ds->root = xstrdup(root);
    if (!ds->root) {
        st = oom(root);
        goto done;
    }
    if (!strcmp(layout, "visa")) {
        csv_path = visa_csv_path(root);
        if (!csv_path) {
            st = oom(root);
            goto done;
        }
        if (!drdc_is_file(csv_path)) {
            st = drdc_fail(DRDC_ERR_INPUT, "VisA split file %s not found (expected <root>/split_csv/1cls.csv)", csv_path);
            goto done;
        }
        TRY(drdc_csv_load(csv_path, &csv));
        TRY(visa_available(&csv, csv_path, &avail));
    } else {
        TRY(available_folders(layout, root, &avail));
    }
    TRY(choose(root, &avail, n_categories, categories, &chosen));

    ds->categories = calloc((size_t)chosen.n, sizeof *ds->categories);
    if (!ds->categories) {
        st = oom(root);
        goto done;
    }
    int folder_single = !strcmp(layout, "folder") && has_subdir(root, "good");
    for (int i = 0; i < chosen.n; i++) {
        drdc_category *c = &ds->categories[i];
        ds->n_categories = i + 1;
        c->name = xstrdup(chosen.v[i]);
        c->dir = folder_single || !strcmp(layout, "visa") ? xstrdup(root) : path_join(root, chosen.v[i]);
        if (!c->name || !c->dir) {
            st = oom(root);
            goto done;
        }
        if (!strcmp(layout, "visa")) continue;
        if (!strcmp(layout, "btad")) TRY(scan_category(ds, c, i, c->dir, "train/ok", "ok", 0));
        else if (!strcmp(layout, "folder")) TRY(scan_category(ds, c, i, c->dir, "good", "good", 1));
        else TRY(scan_category(ds, c, i, c->dir, "train/good", "good", 0));
    }
    if (!strcmp(layout, "visa")) TRY(visa_build(ds, &csv, csv_path));
done:
    sv_free(&avail);
    sv_free(&chosen);
    drdc_csv_free(&csv);
    free(csv_path);
    if (st) drdc_dataset_free(ds);
    return st;
}

drdc_status drdc_dataset_open_config(drdc_dataset *ds, const drdc_data_config *cfg) {
    const char *names[DRDC_MAX_LIST];
    int n = cfg->n_categories;
    if (n < 0 || n > DRDC_MAX_LIST) return drdc_fail(DRDC_ERR_CONFIG, "data.categories: %d entries (at most %d)", n, DRDC_MAX_LIST);
    for (int i = 0; i < n; i++) names[i] = cfg->categories[i];
    drdc_status st = drdc_dataset_open(ds, cfg->dataset, cfg->root, n, names);
    if (st) return drdc_error_context(st, "dataset %s at %s", cfg->dataset, cfg->root);
    return DRDC_OK;
}

void drdc_sample_list_free(drdc_sample_list *list) {
    if (!list) return;
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

drdc_status drdc_dataset_split(const drdc_dataset *ds, double val_fraction, uint64_t seed,
                               drdc_sample_list *train, drdc_sample_list *val) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return drdc_fail(DRDC_ERR_INPUT, "validation fraction %g out of range [0, 1)", val_fraction);
    int total = 0, maxn = 0;
    for (int c = 0; c < ds->n_categories; c++) {
        total += ds->categories[c].n_train;
        if (ds->categories[c].n_train > maxn) maxn = ds->categories[c].n_train;
    }
    train->items = malloc((size_t)(total ? total : 1) * sizeof *train->items);
    val->items = malloc((size_t)(total ? total : 1) * sizeof *val->items);
    int *perm = malloc((size_t)(maxn ? maxn : 1) * sizeof *perm);
    unsigned char *held = malloc((size_t)(maxn ? maxn : 1));
    if (!train->items || !val->items || !perm || !held) {
        free(perm);
        free(held);
        drdc_sample_list_free(train);
        drdc_sample_list_free(val);
        return drdc_fail(DRDC_ERR_NOMEM, "out of memory splitting %d training images", total);
    }
    for (int c = 0; c < ds->n_categories; c++) {
        const drdc_category *cat = &ds->categories[c];
        int n = cat->n_train;
        int n_val = (int)floor(val_fraction * n + 0.5);
        if (val_fraction > 0 && n >= 2 && n_val < 1) n_val = 1;
        if (n_val > n - 1) n_val = n > 0 ? n - 1 : 0;
        /* partial Fisher-Yates: the first n_val entries of a seeded permutation are held out */
        uint64_t state = seed ^ drdc_fnv1a64(DRDC_FNV_OFFSET, cat->name, strlen(cat->name));
        (void)drdc_splitmix64(&state);
        for (int i = 0; i < n; i++) perm[i] = i;
        memset(held, 0, (size_t)(n > 0 ? n : 1));
        for (int i = 0; i < n_val; i++) {
            int j = i + (int)(drdc_splitmix64(&state) % (uint64_t)(n - i));
            int t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
            held[perm[i]] = 1;
        }
        for (int i = 0; i < n; i++) {
            if (held[i]) val->items[val->n++] = cat->train[i];
            else train->items[train->n++] = cat->train[i];
        }
    }
    free(perm);
    free(held);
    return DRDC_OK;
}

drdc_status drdc_dataset_test_list(const drdc_dataset *ds, int category, drdc_sample_list *out) {
    memset(out, 0, sizeof *out);
    if (category < -1 || category >= ds->n_categories)
        return drdc_fail(DRDC_ERR_INPUT, "category index %d out of range (%d categories)", category, ds->n_categories);
    int lo = category < 0 ? 0 : category, hi = category < 0 ? ds->n_categories : category + 1;
    int total = 0;
    for (int c = lo; c < hi; c++) total += ds->categories[c].n_test;
    out->items = malloc((size_t)(total ? total : 1) * sizeof *out->items);
    if (!out->items) return drdc_fail(DRDC_ERR_NOMEM, "out of memory listing %d test images", total);
    for (int c = lo; c < hi; c++)
        for (int i = 0; i < ds->categories[c].n_test; i++) out->items[out->n++] = ds->categories[c].test[i];
    return DRDC_OK;
}
