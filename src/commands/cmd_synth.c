/* cmd_synth.c: `drdc synth`: writes the built-in synthetic dataset (MVTec layout). */
#include "drdc/commands/commands.h"
#include "drdc/data/synth.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>

static struct {
    const char *out;
    int categories, train, test, size, seed;
} A;

/* 1 when dir exists and holds anything besides . and .. */
static int dir_has_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d)) != NULL) found = strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return found;
}

static const drdc_option OPTIONS[] = {
    {"--out", "DIR", DRDC_OPT_STRING, &A.out, "folder to write the dataset into (required)", NULL, 0, 0},
    {"--categories", "N", DRDC_OPT_INT, &A.categories, "number of categories", "4", 1, 4},
    {"--train", "N", DRDC_OPT_INT, &A.train, "defect-free training images per category", "40", 1, 100000},
    {"--test", "N", DRDC_OPT_INT, &A.test, "test images per category (half defective)", "20", 2, 100000},
    {"--size", "PX", DRDC_OPT_INT, &A.size, "image width and height in pixels", "128", 32, 4096},
    {"--seed", "S", DRDC_OPT_INT, &A.seed, "random seed (same seed, same files)", "0", 0, 2147483647},
};

static const drdc_command SPEC = {
    "synth", "drdc synth --out DIR [options]",
    "Write a small synthetic inspection dataset in MVTec AD layout: textures and simple objects,\n"
    "defect-free training images, and test images with scratches, thin cracks, holes, stains,\n"
    "missing pieces and colour changes, each with an exact ground-truth mask. It is the demo\n"
    "data of the README and the data of the tests.",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_synth_spec(void) { return &SPEC; }

int drdc_cmd_synth(int argc, char **argv) {
    A.out = NULL;
    A.categories = 4;
    A.train = 40;
    A.test = 20;
    A.size = 128;
    A.seed = 0;
    int rc = drdc_cli_begin(&SPEC, argc, argv);
    if (rc >= 0) return rc;
    drdc_status st;
    if (!A.out) return drdc_cli_report("synth", drdc_fail(DRDC_ERR_USAGE, "--out DIR is required"));
    /* Writing over an older dataset would leave its extra files behind and mix two datasets. */
    if (dir_has_entries(A.out))
        return drdc_cli_report("synth", drdc_fail(DRDC_ERR_INPUT, "%s: folder exists and is not empty; remove it "
                                                  "or choose another --out", A.out));
    drdc_synth_options o = {A.out, A.categories, A.train, A.test, A.size, (uint64_t)A.seed};
    st = drdc_synth_write(&o);
    if (st) return drdc_cli_report("synth", st);
    printf("wrote %d categories (%d train, %d test images each, %dx%d px) to %s\n", A.categories, A.train,
           A.test, A.size, A.size, A.out);
    return 0;
}
