/* test_regressions.c: crash regressions found by fuzzing (tests/fuzz/, scripts/setup/fuzz.sh).
 *
 * Every file tests/fuzz/regressions/<target>-<n>.bin is an input that once crashed a parser (or
 * tripped ASan/UBSan). Each is fed to its parser here, as the fuzz target does, and must come
 * back as an error status whose message names the input: not a crash, not a success.
 * <target> is one of safetensors, config, csv, pth, npy, image. The committed seed corpus
 * (tests/fuzz/corpus/<target>/, all valid files) must still parse, so a fix that rejects
 * everything cannot pass. Run under scripts/setup/sanitize.sh to see memory errors ASan would catch. */
#include "testlib.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/core/config.h"
#include "drdc/data/dataset.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/image.h"
#include "drdc/formats/npy.h"
#include "drdc/formats/pth.h"
#include "drdc/formats/safetensors.h"

static const char *const k_targets[] = {"safetensors", "config", "csv", "pth", "npy", "image"};
#define N_TARGETS ((int)(sizeof k_targets / sizeof k_targets[0]))

/* Sums bytes so that a view past its buffer is read (and seen by ASan in sanitizer builds). */
static unsigned touch(const void *p, size_t n) {
    const unsigned char *b = p;
    unsigned s = 0;
    for (size_t i = 0; i < n; i++) s += b[i];
    return s;
}

/* Feeds the file at path to the parser of `target`, using the results as the fuzz target
 * does; returns the parser's status. `name` is the source name given to buffer parsers. */
static drdc_status feed(const char *target, const char *path, const char *name) {
    volatile unsigned sink = 0;
    if (!strcmp(target, "npy")) {
        drdc_npy a;
        drdc_status st = drdc_npy_read(path, &a);
        if (!st) sink += touch(a.data, a.numel * drdc_npy_dtype_size(a.dtype));
        drdc_npy_free(&a);
        return st;
    }
    if (!strcmp(target, "image")) {
        drdc_image img;
        drdc_status st = drdc_image_load_rgb(path, &img);
        if (!st) sink += touch(img.data, (size_t)img.w * img.h * img.c * sizeof(float));
        drdc_image_free(&img);
        return st;
    }
    char *buf = NULL;
    size_t len = 0;
    drdc_status st = drdc_read_file(path, &buf, &len); /* NUL-terminated */
    if (st) return st;
    if (!strcmp(target, "safetensors")) {
        drdc_st_file *f = NULL;
        st = drdc_st_parse(&f, buf, len, name);
        for (int i = 0; !st && i < drdc_st_count(f); i++)
            sink += touch(drdc_st_at(f, i)->data, drdc_st_at(f, i)->nbytes);
        drdc_st_close(f);
    } else if (!strcmp(target, "config")) {
        drdc_config *cfg = malloc(sizeof *cfg);
        if (!cfg) {
            free(buf);
            return DRDC_ERR_NOMEM;
        }
        drdc_config_defaults(cfg);
        st = drdc_config_parse(cfg, buf, name);
        free(cfg);
    } else if (!strcmp(target, "csv")) {
        drdc_csv csv;
        memset(&csv, 0, sizeof csv);
        st = drdc_csv_parse(buf, len, name, &csv);
        for (int r = 0; !st && r < csv.n_rows; r++)
            for (int c = 0; c < drdc_csv_row_fields(&csv, r); c++) sink += (unsigned)strlen(drdc_csv_field(&csv, r, c));
        drdc_csv_free(&csv);
    } else if (!strcmp(target, "pth")) {
        drdc_pth_file *f = NULL;
        st = drdc_pth_parse(&f, buf, len, name);
        for (int i = 0; !st && i < drdc_pth_count(f); i++)
            sink += touch(drdc_pth_at(f, i)->data, drdc_pth_at(f, i)->nbytes);
        drdc_pth_free(f);
    } else {
        st = drdc_fail(DRDC_ERR_STATE, "unknown target '%s'", target);
    }
    (void)sink;
    free(buf);
    return st;
}

/* The target named by a regression file "<target>-<n>.bin", or NULL. */
static const char *target_of(const char *file) {
    size_t n = strlen(file);
    if (n < 5 || strcmp(file + n - 4, ".bin") != 0) return NULL;
    for (int t = 0; t < N_TARGETS; t++) {
        size_t k = strlen(k_targets[t]);
        if (!strncmp(file, k_targets[t], k) && file[k] == '-') return k_targets[t];
    }
    return NULL;
}

static void test_regressions_fail_cleanly(void) {
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/regressions", test_source_dir());
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "  no folder %s: no regressions to run\n", dir);
        return;
    }
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        const char *target = target_of(e->d_name);
        if (!target) {
            if (strcmp(e->d_name, "README.md") != 0) {
                fprintf(stderr, "  %s: not named <target>-<n>.bin\n", e->d_name);
                CHECK(target != NULL);
            }
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        drdc_clear_error();
        drdc_status st = feed(target, path, e->d_name);
        if (st == DRDC_OK) fprintf(stderr, "  %s: parsed without error\n", e->d_name);
        CHECK(st != DRDC_OK);
        if (st != DRDC_OK && !tl_contains(drdc_last_error(), e->d_name)) {
            fprintf(stderr, "  %s: message does not name the input: %s\n", e->d_name, drdc_last_error());
            CHECK(tl_contains(drdc_last_error(), e->d_name));
        }
        count++;
    }
    closedir(d);
    fprintf(stderr, "  %d regression inputs rejected cleanly\n", count);
}

static void test_seed_corpus_parses(void) {
    int count = 0;
    for (int t = 0; t < N_TARGETS; t++) {
        char dir[2048];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", test_source_dir(), k_targets[t]);
        DIR *d = opendir(dir);
        CHECK(d != NULL);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            drdc_status st = feed(k_targets[t], path, e->d_name);
            if (st) fprintf(stderr, "  %s/%s: %s\n", k_targets[t], e->d_name, drdc_last_error());
            CHECK(st == DRDC_OK);
            count++;
        }
        closedir(d);
    }
    CHECK(count >= N_TARGETS);
    fprintf(stderr, "  %d seed inputs parsed\n", count);
}

int main(void) {
    RUN(test_regressions_fail_cleanly);
    RUN(test_seed_corpus_parses);
    return test_summary();
}
