/* cmd_backbone.c: `drdc backbone`: the ImageNet self-check of a backbone and its weights: classifies
 * images and prints the top-k classes with their labels (a wrong forward pass or wrongly named
 * weights shows up at once as nonsense labels). */
#include "drdc/commands/commands.h"
#include "drdc/model/classify.h"
#include "drdc/shim/runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    const char *arch, *weights, *labels, *device;
    drdc_opt_multi images;
    int top, size, threads;
} A;

static const drdc_option OPTIONS[] = {
    {"--arch", "NAME", DRDC_OPT_STRING, &A.arch, "mobilenet_v2 | efficientnet-b0..b7 | efficientnet-lite0..4",
     "mobilenet_v2", 0, 0},
    {"--weights", "FILE", DRDC_OPT_STRING, &A.weights, "safetensors weights (without: a random backbone, warned)",
     NULL, 0, 0},
    {"--image", "FILE", DRDC_OPT_MULTI, &A.images, "an image to classify (repeatable)", NULL, 0, 0},
    {"--top", "K", DRDC_OPT_INT, &A.top, "classes shown per image", "5", 1, 1000},
    {"--labels", "FILE", DRDC_OPT_STRING, &A.labels, "class names, one a line, in class order",
     "check/imagenet_labels.txt beside the weights, else indices", 0, 0},
    {"--size", "PX", DRDC_OPT_INT, &A.size, "images are resized to PX x PX (0: the arch's native size)", "0", 0,
     4096},
    DRDC_OPTS_RUNTIME(&A.device, &A.threads),
};

static const drdc_command SPEC = {
    "backbone", "drdc backbone [--arch NAME] --weights FILE --image FILE [--image FILE ...] [options]",
    "Classify images with a backbone's full ImageNet network and print the top-k classes: the\n"
    "self-check that pretrained weights load and run correctly (MobileNetV2 from\n"
    "../shared/weights: cat.bmp -> Egyptian cat, grace_hopper.bmp -> military uniform).\n"
    "Images are resized to the native size (mobilenet_v2 224, efficientnet-b4 380, ...).",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_backbone_spec(void) { return &SPEC; }

typedef struct labels {
    int n;
    char **names;   /* (n) owned */
} labels;

static void labels_free(labels *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

/* Reads one label a line (trailing CR/LF stripped). */
static drdc_status labels_load(labels *l, const char *path) {
    memset(l, 0, sizeof *l);
    FILE *f = fopen(path, "r");
    if (!f) return drdc_fail(DRDC_ERR_IO, "%s: cannot open labels: %s", path, strerror(errno));
    char line[1024];
    int cap = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = 0;
        if (l->n == cap) {
            cap = cap ? cap * 2 : 1024;
            char **names = realloc(l->names, sizeof *names * (size_t)cap);
            if (!names) break;
            l->names = names;
        }
        char *copy = malloc(len + 1);
        if (!copy) break;
        memcpy(copy, line, len + 1);
        l->names[l->n++] = copy;
    }
    int bad = ferror(f) || !feof(f);
    fclose(f);
    if (bad) {
        labels_free(l);
        return drdc_fail(DRDC_ERR_IO, "%s: cannot read labels (read error or out of memory)", path);
    }
    return DRDC_OK;
}

/* The label of class c: a file with one more line than classes starts with "background",
 * which a 1000-class model lacks. */
static const char *label_of(const labels *l, int n_classes, int c) {
    int off = l->n == n_classes + 1 ? 1 : 0;
    return c + off < l->n ? l->names[c + off] : NULL;
}

/* path's folder + "/" + rel, if that file exists */
static int beside(char *out, size_t cap, const char *path, const char *rel) {
    const char *slash = strrchr(path, '/');
    int dir = slash ? (int)(slash - path) : 1;
    snprintf(out, cap, "%.*s/%s", dir, slash ? path : ".", rel);
    FILE *f = fopen(out, "r");
    if (f) fclose(f);
    return f != NULL;
}

static drdc_status classify_and_print(void) {
    drdc_runtime rt;
    drdc_status st = drdc_runtime_init(&rt, A.device, A.threads);
    if (st) return st;
    if (!A.weights)
        fprintf(stderr,
                "drdc backbone: WARNING: no --weights given: this is a RANDOM %s with untrained weights.\n"
                "drdc backbone: WARNING: its classes below are meaningless; anomaly detection with it falls far\n"
                "drdc backbone: WARNING: below the paper. Give pretrained weights (../shared/weights).\n",
                A.arch);
    labels lab = {0};
    drdc_topk top = {0};
    char path[2048];
    if (A.labels)
        TRY(labels_load(&lab, A.labels));
    else if (A.weights && beside(path, sizeof path, A.weights, "check/imagenet_labels.txt"))
        TRY(labels_load(&lab, path));
    TRY(drdc_classify_images(&top, A.arch, A.weights, A.images.values, A.images.n, A.size, A.top, rt.device));
    printf("%s (%s weights), %dx%d px, %s\n", A.arch, A.weights ? A.weights : "RANDOM", top.size, top.size,
           rt.device_name);
    for (int i = 0; i < top.n_images; i++) {
        printf("%s:\n", A.images.values[i]);
        for (int j = 0; j < top.k; j++) {
            int c = (int)top.idx[(size_t)i * (size_t)top.k + (size_t)j];
            const char *name = label_of(&lab, top.n_classes, c);
            printf("  %d. %6.4f  %4d  %s\n", j + 1, top.p[(size_t)i * (size_t)top.k + (size_t)j], c,
                   name ? name : "(no label)");
        }
    }
done:
    drdc_topk_free(&top);
    labels_free(&lab);
    return st;
}

int drdc_cmd_backbone(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    A.arch = "mobilenet_v2";
    A.top = 5;
    int rc = drdc_cli_begin(&SPEC, argc, argv);
    if (rc >= 0) return rc;
    drdc_status st;
    if (A.images.n == 0)
        return drdc_cli_report("backbone", drdc_fail(DRDC_ERR_USAGE, "--image FILE is required"));
    st = classify_and_print();
    return st ? drdc_cli_report("backbone", st) : 0;
}
