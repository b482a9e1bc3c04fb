/* cmd_backbone.c: `drdc backbone`: the ImageNet self-check of a backbone and its weights: classifies
 * images and prints the top-k classes with their labels (a wrong forward pass or wrongly named
 * weights shows up at once as nonsense labels). */
#include "drdc/stages/backbone.h"
#include "drdc/commands/commands.h"
#include "drdc/formats/image.h"
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

/* Loads every image, resized to size x size, into one [N,3,size,size] tensor on dev. */
static drdc_status load_batch(dt_tensor *out, const drdc_opt_multi *paths, int size, dt_device dev) {
    size_t plane = (size_t)size * (size_t)size;
    float *buf = malloc(sizeof(float) * 3 * plane * (size_t)paths->n);
    if (!buf) return drdc_fail(DRDC_ERR_NOMEM, "out of memory for %d images", paths->n);
    drdc_status st = DRDC_OK;
    for (int i = 0; !st && i < paths->n; i++) {
        drdc_image img = {0}, small = {0};
        st = drdc_image_load_rgb(paths->values[i], &img);
        if (!st) st = drdc_image_resize(&img, size, size, &small);
        for (size_t p = 0; !st && p < plane; p++)   /* HWC -> CHW */
            for (int c = 0; c < 3; c++) buf[((size_t)i * 3 + (size_t)c) * plane + p] = small.data[p * 3 + (size_t)c];
        drdc_image_free(&img);
        drdc_image_free(&small);
    }
    int64_t shape[4] = {paths->n, 3, size, size};
    if (!st) st = dt_from_host(out, buf, DT_F32, shape, 4, dev);
    free(buf);
    return st;
}

static drdc_status classify_and_print(void) {
    drdc_runtime rt;
    drdc_status st = drdc_runtime_init(&rt, A.device, A.threads);
    if (st) return st;
    drdc_backbone_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.arch, sizeof cfg.arch, "%s", A.arch);
    int size = A.size;
    if (!size) {
        st = drdc_backbone_native_size(A.arch, &size);
        if (st) return drdc_error_context(DRDC_ERR_USAGE, "--arch");
    }
    drdc_backbone bb;
    if (size < 32) return drdc_fail(DRDC_ERR_USAGE, "--size %d: at least 32 px", size);
    st = drdc_backbone_build(&bb, &cfg, size, rt.device, 0);
    if (st) return st;
    labels lab = {0};
    dt_tensor images = NULL, logits = NULL, probs = NULL, top_p = NULL, top_i = NULL;
    if (A.weights) {
        st = drdc_backbone_load(&bb, A.weights);
    } else {
        fprintf(stderr,
                "drdc backbone: WARNING: no --weights given: this is a RANDOM %s with untrained weights.\n"
                "drdc backbone: WARNING: its classes below are meaningless; anomaly detection with it falls far\n"
                "drdc backbone: WARNING: below the paper. Give pretrained weights (../shared/weights).\n",
                A.arch);
    }
    char path[2048];
    if (!st && A.labels)
        st = labels_load(&lab, A.labels);
    else if (!st && A.weights && beside(path, sizeof path, A.weights, "check/imagenet_labels.txt"))
        st = labels_load(&lab, path);
    if (!st) st = load_batch(&images, &A.images, size, rt.device);
    if (!st) st = drdc_backbone_classify(&logits, &bb, images);
    if (!st) st = dt_softmax(&probs, logits, 1);                          /* [N,classes] */
    int k = A.top < bb.n_classes ? A.top : bb.n_classes;
    if (!st) st = dt_topk(&top_p, &top_i, probs, k, 1, 1);                /* [N,k] */
    dt_tensor top_p_cpu = NULL, top_i_cpu = NULL;
    if (!st) st = dt_to_device(&top_p_cpu, top_p, (dt_device){DT_CPU, 0});
    if (!st) st = dt_to_device(&top_i_cpu, top_i, (dt_device){DT_CPU, 0});
    float *p = NULL;
    int64_t *idx = NULL;
    size_t n = (size_t)A.images.n * (size_t)k;
    if (!st) {
        p = malloc(sizeof *p * n);
        idx = malloc(sizeof *idx * n);
        if (!p || !idx) st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    }
    if (!st) st = dt_copy_to_host(top_p_cpu, p, sizeof *p * n);
    if (!st) st = dt_copy_to_host(top_i_cpu, idx, sizeof *idx * n);
    if (!st) {
        printf("%s (%s weights), %dx%d px, %s\n", bb.arch, A.weights ? A.weights : "RANDOM", size, size,
               rt.device_name);
        for (int i = 0; i < A.images.n; i++) {
            printf("%s:\n", A.images.values[i]);
            for (int j = 0; j < k; j++) {
                int c = (int)idx[(size_t)i * (size_t)k + (size_t)j];
                const char *name = label_of(&lab, bb.n_classes, c);
                printf("  %d. %6.4f  %4d  %s\n", j + 1, p[(size_t)i * (size_t)k + (size_t)j], c,
                       name ? name : "(no label)");
            }
        }
    }
    free(p);
    free(idx);
    dt_free(top_p_cpu);
    dt_free(top_i_cpu);
    dt_free(top_p);
    dt_free(top_i);
    dt_free(probs);
    dt_free(logits);
    dt_free(images);
    labels_free(&lab);
    drdc_backbone_free(&bb);
    return st;
}

int drdc_cmd_backbone(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    A.arch = "mobilenet_v2";
    A.top = 5;
    int help = 0;
    drdc_status st = drdc_cli_parse(&SPEC, argc, argv, &help);
    if (st) return drdc_cli_report("backbone", st);
    if (help) {
        drdc_cli_print_help(stdout, &SPEC);
        return 0;
    }
    if (A.images.n == 0)
        return drdc_cli_report("backbone", drdc_fail(DRDC_ERR_USAGE, "--image FILE is required"));
    st = classify_and_print();
    return st ? drdc_cli_report("backbone", st) : 0;
}
