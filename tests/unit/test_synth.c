/* test_synth.c: the synthetic dataset: MVTec layout and counts, masks (same size, non-empty,
 * 0/255, exactly the changed pixels), no masks for good images, determinism by seed, variation
 * between normal images, and option errors. */
#define _POSIX_C_SOURCE 200809L
#include "testlib.h"
#include "drdc/formats/image.h"
#include "drdc/data/synth.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_NAMES 256

typedef struct {
    int n;
    char names[MAX_NAMES][64];
} name_list;

static int cmp_names(const void *a, const void *b) { return strcmp(a, b); }

/* Sorted entries of a folder; n = -1 when it does not exist. */
static void list_dir(const char *dir, name_list *out) {
    out->n = -1;
    DIR *d = opendir(dir);
    if (!d) return;
    out->n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && out->n < MAX_NAMES &&
            strlen(e->d_name) < sizeof out->names[0])
            memcpy(out->names[out->n++], e->d_name, strlen(e->d_name) + 1);
    closedir(d);
    qsort(out->names, (size_t)out->n, 64, cmp_names);
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void test_names(void) {
    int nc = drdc_synth_category_count();
    CHECK(nc >= 4);
    for (int i = 0; i < nc; i++) {
        const char *c = drdc_synth_category_name(i);
        CHECK(c != NULL && *c);
        for (int j = 0; j < i; j++) CHECK(strcmp(c, drdc_synth_category_name(j)) != 0);
        int nd = drdc_synth_defect_count(i);
        CHECK(nd >= 2);
        for (int j = 0; j < nd; j++) {
            const char *d = drdc_synth_defect_name(i, j);
            CHECK(d != NULL && *d && strcmp(d, "good") != 0);
        }
        CHECK(drdc_synth_defect_name(i, nd) == NULL);
    }
    CHECK(drdc_synth_category_name(nc) == NULL);
    CHECK(drdc_synth_category_name(-1) == NULL);
    CHECK(drdc_synth_defect_count(nc) == 0);
}

/* Checks one mask file against its image: same size, values 0/255 only, not empty. */
static void check_mask_file(const char *img_path, const char *mask_path) {
    drdc_image img = {0}, m = {0};
    CHECK_OK(drdc_image_load_rgb(img_path, &img));
    CHECK_OK(drdc_image_load_rgb(mask_path, &m));
    CHECK(img.w == m.w && img.h == m.h);
    if (m.data) {
        long ones = 0, bad = 0;
        for (long i = 0; i < (long)m.w * m.h * 3; i++) {
            if (m.data[i] == 1.0f) ones++;
            else if (m.data[i] != 0.0f) bad++;
        }
        CHECK(bad == 0);
        CHECK(ones > 0);
    }
    drdc_image_free(&img);
    drdc_image_free(&m);
}

/* The demo defaults: every folder, every count, every mask. */
static void test_default_layout(void) {
    const char *dir = test_tmpdir("synth_layout");
    drdc_synth_options o;
    drdc_synth_default_options(&o);
    CHECK(o.n_categories == 4 && o.n_train == 40 && o.n_test == 20 && o.size == 128);
    o.out_dir = dir;
    CHECK_OK(drdc_synth_write(&o));
    name_list top, l, gt;
    list_dir(dir, &top);
    CHECK(top.n == 4);
    char p[1200], q[1300], r[1400];
    for (int c = 0; c < 4; c++) {
        const char *cat = drdc_synth_category_name(c);
        snprintf(p, sizeof p, "%s/%s", dir, cat);
        list_dir(p, &l);
        CHECK(l.n == 3); /* ground_truth, test, train */
        snprintf(p, sizeof p, "%s/%s/train", dir, cat);
        list_dir(p, &l);
        CHECK(l.n == 1 && strcmp(l.names[0], "good") == 0);
        snprintf(p, sizeof p, "%s/%s/train/good", dir, cat);
        list_dir(p, &l);
        CHECK(l.n == 40);
        if (l.n == 40) CHECK(strcmp(l.names[0], "000.png") == 0 && strcmp(l.names[39], "039.png") == 0);
        snprintf(p, sizeof p, "%s/%s/test/good", dir, cat);
        list_dir(p, &l);
        CHECK(l.n == 10);
        /* good images have no masks: no ground_truth/good */
        snprintf(p, sizeof p, "%s/%s/ground_truth/good", dir, cat);
        CHECK(!exists(p));

        int nd = drdc_synth_defect_count(c), total = 0;
        snprintf(p, sizeof p, "%s/%s/test", dir, cat);
        list_dir(p, &l);
        CHECK(l.n == 1 + nd);
        snprintf(p, sizeof p, "%s/%s/ground_truth", dir, cat);
        list_dir(p, &gt);
        CHECK(gt.n == nd);
        for (int d = 0; d < nd; d++) {
            const char *def = drdc_synth_defect_name(c, d);
            name_list imgs, masks;
            snprintf(p, sizeof p, "%s/%s/test/%s", dir, cat, def);
            list_dir(p, &imgs);
            snprintf(q, sizeof q, "%s/%s/ground_truth/%s", dir, cat, def);
            list_dir(q, &masks);
            CHECK(imgs.n >= 2); /* 10 defect images over 4 types: 3, 3, 2, 2 */
            CHECK(masks.n == imgs.n);
            for (int i = 0; i < imgs.n; i++) {
                char stem[64];
                snprintf(stem, sizeof stem, "%s", imgs.names[i]);
                char *dot = strrchr(stem, '.');
                if (dot) *dot = '\0';
                snprintf(r, sizeof r, "%s/%s_mask.png", q, stem);
                CHECK(exists(r));
                char ip[1300];
                snprintf(ip, sizeof ip, "%s/%s", p, imgs.names[i]);
                check_mask_file(ip, r);
            }
            total += imgs.n;
        }
        CHECK(total == 10); /* half of the 20 test images */
    }
}

static int files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    while (eq) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) eq = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

/* Walks tree a; counts files, files equal in b, files missing in b. */
static void compare_trees(const char *a, const char *b, int *n, int *same) {
    name_list l;
    list_dir(a, &l);
    for (int i = 0; i < l.n; i++) {
        char pa[2048], pb[2048];
        snprintf(pa, sizeof pa, "%s/%s", a, l.names[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, l.names[i]);
        struct stat sb;
        if (stat(pa, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            compare_trees(pa, pb, n, same);
        } else {
            (*n)++;
            *same += files_equal(pa, pb);
        }
    }
}

static void test_deterministic_by_seed(void) {
    char a[1100], b[1100], c[1100];
    snprintf(a, sizeof a, "%s", test_tmpdir("synth_seed_a"));
    snprintf(b, sizeof b, "%s", test_tmpdir("synth_seed_b"));
    snprintf(c, sizeof c, "%s", test_tmpdir("synth_seed_c"));
    drdc_synth_options o = {a, 4, 3, 6, 48, 12345};
    CHECK_OK(drdc_synth_write(&o));
    o.out_dir = b;
    CHECK_OK(drdc_synth_write(&o));
    o.out_dir = c;
    o.seed = 12346;
    CHECK_OK(drdc_synth_write(&o));
    int n = 0, same = 0;
    compare_trees(a, b, &n, &same);
    CHECK(n == 4 * (3 + 6 + 3)); /* train, test, masks of the 3 defect images */
    CHECK(same == n);
    n = same = 0;
    compare_trees(a, c, &n, &same);
    CHECK(n == 4 * 12);
    /* another seed: every image differs (only a mask could coincide by chance) */
    CHECK(same <= 4 * 3);
    char p1[1200], p2[1200];
    snprintf(p1, sizeof p1, "%s/weave/train/good/000.png", a);
    snprintf(p2, sizeof p2, "%s/weave/train/good/000.png", c);
    CHECK(!files_equal(p1, p2));
}

/* A defect image differs from its normal counterpart exactly on the mask, by at least the
 * threshold. */
static void test_masks_are_exact(void) {
    for (int c = 0; c < drdc_synth_category_count(); c++)
        for (int d = 0; d < drdc_synth_defect_count(c); d++)
            for (uint64_t seed = 1; seed <= 3; seed++) {
                drdc_image good = {0}, bad = {0}, mask = {0}, gm = {0};
                CHECK_OK(drdc_synth_render(c, -1, 64 + 32 * (int)(seed % 2), seed * 977, &good, &gm));
                CHECK_OK(drdc_synth_render(c, d, 64 + 32 * (int)(seed % 2), seed * 977, &bad, &mask));
                if (!good.data || !bad.data || !mask.data || !gm.data) continue;
                CHECK(mask.w == bad.w && mask.h == bad.h && mask.c == 1 && bad.c == 3);
                long np = (long)good.w * good.h, ones = 0, wrong = 0, weak = 0, gm_ones = 0;
                for (long i = 0; i < np; i++) {
                    float dmax = 0;
                    for (int k = 0; k < 3; k++) dmax = fmaxf(dmax, fabsf(bad.data[3 * i + k] - good.data[3 * i + k]));
                    int changed = dmax > 0.0f;
                    if (mask.data[i] == 1.0f) ones++;
                    else if (mask.data[i] != 0.0f) wrong++;
                    if (changed != (mask.data[i] == 1.0f)) wrong++;
                    if (changed && dmax < (DRDC_SYNTH_MASK_THRESHOLD - 0.5f) / 255.0f) weak++;
                    gm_ones += gm.data[i] != 0.0f;
                }
                if (wrong || weak || !ones)
                    fprintf(stderr, "  %s/%s seed %llu: %ld mask pixels, %ld wrong, %ld weak\n",
                            drdc_synth_category_name(c), drdc_synth_defect_name(c, d),
                            (unsigned long long)seed, ones, wrong, weak);
                CHECK(ones > 0);
                CHECK(wrong == 0);
                CHECK(weak == 0);
                CHECK(gm_ones == 0); /* a normal image's mask is empty */
                drdc_image_free(&good);
                drdc_image_free(&bad);
                drdc_image_free(&mask);
                drdc_image_free(&gm);
            }
}

/* Normal images of one category are not copies of each other, and not flat. */
static void test_normal_images_vary(void) {
    for (int c = 0; c < drdc_synth_category_count(); c++) {
        drdc_image a = {0}, b = {0};
        CHECK_OK(drdc_synth_render(c, -1, 64, 1, &a, NULL));
        CHECK_OK(drdc_synth_render(c, -1, 64, 2, &b, NULL));
        if (!a.data || !b.data) continue;
        long n = 64L * 64 * 3;
        double diff = 0, mean = 0, var = 0;
        for (long i = 0; i < n; i++) {
            diff += fabs(a.data[i] - b.data[i]);
            mean += a.data[i];
        }
        diff /= n;
        mean /= n;
        for (long i = 0; i < n; i++) var += (a.data[i] - mean) * (a.data[i] - mean);
        CHECK(diff > 0.02);
        CHECK(sqrt(var / n) > 0.03);
        drdc_image_free(&a);
        drdc_image_free(&b);
    }
}

static void test_bad_options(void) {
    const char *dir = test_tmpdir("synth_bad");
    drdc_synth_options o = {dir, 4, 2, 2, 32, 0};
    o.n_categories = 0;
    CHECK_ERR(drdc_synth_write(&o), DRDC_ERR_INPUT, "categories");
    o.n_categories = drdc_synth_category_count() + 1;
    CHECK_ERR(drdc_synth_write(&o), DRDC_ERR_INPUT, "categories");
    o.n_categories = 1;
    o.n_train = 0;
    CHECK_ERR(drdc_synth_write(&o), DRDC_ERR_INPUT, "n_train");
    o.n_train = 1;
    o.size = 16;
    CHECK_ERR(drdc_synth_write(&o), DRDC_ERR_INPUT, "size 16");
    o.size = 32;
    o.out_dir = NULL;
    CHECK_ERR(drdc_synth_write(&o), DRDC_ERR_INPUT, "output folder");
    char file[1100];
    snprintf(file, sizeof file, "%s/a_file", dir);
    CHECK(test_write_file(file, "x", 1) == 0);
    o.out_dir = file;
    CHECK_ERR(drdc_synth_write(&o), DRDC_ERR_IO, "a_file");
    drdc_image img = {0};
    CHECK_ERR(drdc_synth_render(0, 99, 64, 1, &img, NULL), DRDC_ERR_INPUT, "defect 99");
    CHECK_ERR(drdc_synth_render(-1, 0, 64, 1, &img, NULL), DRDC_ERR_INPUT, "category -1");
    CHECK(img.data == NULL);
}

int main(void) {
    RUN(test_names);
    RUN(test_default_layout);
    RUN(test_deterministic_by_seed);
    RUN(test_masks_are_exact);
    RUN(test_normal_images_vary);
    RUN(test_bad_options);
    return test_summary();
}
