/* test_backbone.c: the backbone against its PyTorch twin (scripts/twins/twin_backbone.py: MobileNetV2
 * from the weights README, EfficientNet(-Lite) from the real port), plus shapes, channels, handle
 * leaks, load errors, config errors, and the ImageNet self-check with ../shared/weights (C API,
 * and `drdc backbone` once that command is registered). */
#include "drdc/stages/backbone.h"
#include "drdc/formats/image.h"
#include "drdc/formats/safetensors.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const dt_device CPU = {DT_CPU, 0};

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static drdc_backbone_config arch_cfg(const char *arch) {
    drdc_backbone_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.arch, sizeof cfg.arch, "%s", arch);
    return cfg;
}

/* random images [B,3,S,S] in [0,1) */
static dt_tensor rand_images(int b, int s) {
    int64_t shape[4] = {b, 3, s, s};
    dt_tensor t = NULL;
    CHECK_OK(dt_rand(&t, shape, 4, DT_F32, CPU, NULL));
    return t;
}

/* ---- the twin ---------------------------------------------------------------------------- */

static char twin_dir[1024];
static int twin_state;   /* 0 not run, 1 ran, -1 unavailable (message printed) */

static int run_twin(void) {
    if (twin_state) return twin_state;
    const char *py = getenv("DRDC_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    snprintf(twin_dir, sizeof twin_dir, "%s", test_tmpdir("backbone_twin"));
    int rc = test_system("'%s' '%s/scripts/twins/twin_backbone.py' --out '%s'", py, test_source_dir(), twin_dir);
    if (rc == 77) {
        test_skip_part("twin comparisons: %s has no torch/numpy (see the message above)", py);
        twin_state = -1;
    } else {
        CHECK(rc == 0);
        twin_state = rc == 0 ? 1 : -1;
    }
    return twin_state;
}

/* Loads the twin's weights into the C model, runs its input, compares blocks, features, logits. */
static void twin_case(const char *name) {
    if (run_twin() < 0) return;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.safetensors", twin_dir, name);
    if (!file_exists(path)) {
        printf("SKIPPED twin case %s: the twin did not write it (EfficientNet port absent? run "
               "scripts/setup/fetch_pydeps.sh)\n", name);
        return;
    }
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, path));
    if (!f) return;
    const char *arch = drdc_st_meta(f, "arch"), *size_s = drdc_st_meta(f, "image_size"),
               *blocks_s = drdc_st_meta(f, "blocks");
    CHECK(arch && size_s && blocks_s);
    if (!arch || !size_s || !blocks_s) {
        drdc_st_close(f);
        return;
    }
    drdc_backbone_config cfg = arch_cfg(arch);
    int defaults[DRDC_MAX_LIST], n_def = 0;
    CHECK_OK(drdc_backbone_default_blocks(arch, defaults, &n_def));
    /* the twin found its blocks from the port's own strides: they must be our defaults */
    char def_text[256] = "";
    for (int i = 0; i < n_def; i++)
        snprintf(def_text + strlen(def_text), sizeof def_text - strlen(def_text), "%s%d", i ? "," : "", defaults[i]);
    CHECK(strcmp(def_text, blocks_s) == 0);
    int size = atoi(size_s);
    long live0 = dt_live_handles();
    drdc_backbone bb;
    drdc_status st = drdc_backbone_build(&bb, &cfg, size, CPU, 7);
    CHECK_OK(st);
    if (st) {
        drdc_st_close(f);
        return;
    }
    CHECK_OK(drdc_backbone_load_st(&bb, f, ""));
    const drdc_st_tensor *in = drdc_st_find(f, "twin.input");
    CHECK(in != NULL);
    float *buf = in ? malloc(sizeof(float) * (size_t)in->numel) : NULL;
    dt_tensor images = NULL;
    if (buf) {
        CHECK_OK(drdc_st_to_f32(in, buf, (size_t)in->numel));
        CHECK_OK(dt_from_host(&images, buf, DT_F32, in->shape, 4, CPU));
    }
    free(buf);
    if (images) {
        dt_tensor outs[DRDC_MAX_LIST] = {0}, feats = NULL, logits = NULL;
        char tname[64], label[160];   /* every output within 1e-4 of the twin's, relative to max |twin| */
        CHECK_OK(drdc_backbone_blocks_out(outs, bb.n_feat, &bb, images));
        for (int i = 0; i < bb.n_feat; i++) {
            snprintf(tname, sizeof tname, "twin.block.%d", bb.feat_blocks[i]);
            snprintf(label, sizeof label, "%s block %d", name, bb.feat_blocks[i]);
            test_compare_tensor(label, outs[i], f, tname, 1e-4);
            dt_free(outs[i]);
        }
        CHECK_OK(drdc_backbone_features(&feats, &bb, images));
        snprintf(label, sizeof label, "%s features", name);
        test_compare_tensor(label, feats, f, "twin.features", 1e-4);
        CHECK_OK(drdc_backbone_classify(&logits, &bb, images));
        snprintf(label, sizeof label, "%s logits", name);
        test_compare_tensor(label, logits, f, "twin.logits", 1e-4);
        dt_free(feats);
        dt_free(logits);
        dt_free(images);
    }
    drdc_backbone_free(&bb);
    drdc_st_close(f);
    CHECK(dt_live_handles() == live0);
}

static void test_twin_mobilenet_v2_64(void) { twin_case("mobilenet_v2_64"); }
static void test_twin_mobilenet_v2_224(void) { twin_case("mobilenet_v2_224"); }
static void test_twin_efficientnet_b0_64(void) { twin_case("efficientnet-b0_64"); }
static void test_twin_efficientnet_b4_224(void) { twin_case("efficientnet-b4_224"); }
static void test_twin_efficientnet_lite4_64(void) { twin_case("efficientnet-lite4_64"); }

/* ---- shapes, channels, leaks --------------------------------------------------------------- */

/* The channel counts DESIGN.md and ANCHORS.md give: mobilenet_v2 168, efficientnet-b4 272 */
static void test_channels_of_the_defaults(void) {
    static const struct { const char *arch; int channels; } want[] = {
        {"mobilenet_v2", 16 + 24 + 32 + 96},
        {"efficientnet-b4", 24 + 32 + 56 + 160},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        drdc_backbone_config cfg = arch_cfg(want[i].arch);
        drdc_backbone bb;
        CHECK_OK(drdc_backbone_build(&bb, &cfg, 64, CPU, 1));
        CHECK(drdc_backbone_channels(&bb) == want[i].channels);
        drdc_backbone_free(&bb);
    }
    int blocks[DRDC_MAX_LIST], n = 0;
    CHECK_OK(drdc_backbone_default_blocks("efficientnet-b4", blocks, &n));   /* UniAD's outblocks */
    CHECK(n == 4 && blocks[0] == 1 && blocks[1] == 5 && blocks[2] == 9 && blocks[3] == 21);
}

/* features [B, C, H/16, W/16], no grad, no handle left behind; classify [B, classes] */
static void test_features_shape_no_leak_frozen(void) {
    const char *archs[] = {"mobilenet_v2", "efficientnet-lite0"};
    for (int a = 0; a < 2; a++) {
        drdc_backbone_config cfg = arch_cfg(archs[a]);
        drdc_backbone bb;
        CHECK_OK(drdc_backbone_build(&bb, &cfg, 96, CPU, 3));
        for (int i = 0; i < bb.params.n; i++) CHECK(!dt_requires_grad(bb.params.tensors[i]));
        dt_tensor images = rand_images(2, 96), feats = NULL, logits = NULL;
        long live = dt_live_handles();
        CHECK_OK(drdc_backbone_features(&feats, &bb, images));
        CHECK(dt_live_handles() == live + 1);   /* only the result */
        int64_t s[4] = {0};
        CHECK_OK(dt_shape(s, 4, feats));
        CHECK(s[0] == 2 && s[1] == drdc_backbone_channels(&bb) && s[2] == 6 && s[3] == 6);
        CHECK(!dt_requires_grad(feats));
        CHECK_OK(drdc_backbone_classify(&logits, &bb, images));
        CHECK(dt_live_handles() == live + 2);
        CHECK_OK(dt_shape(s, 2, logits));
        CHECK(s[0] == 2 && s[1] == bb.n_classes);
        CHECK(dt_scope_depth() == 0);
        dt_free(feats);
        dt_free(logits);
        dt_free(images);
        drdc_backbone_free(&bb);
    }
}

/* a chosen block list changes what is concatenated: blocks 2,4 of mobilenet_v2 = 24 + 32 */
static void test_custom_blocks(void) {
    drdc_backbone_config cfg = arch_cfg("mobilenet_v2");
    cfg.n_blocks = 2;
    cfg.blocks[0] = 2;
    cfg.blocks[1] = 4;
    drdc_backbone bb;
    CHECK_OK(drdc_backbone_build(&bb, &cfg, 64, CPU, 3));
    CHECK(drdc_backbone_channels(&bb) == 24 + 32);
    dt_tensor images = rand_images(1, 64), feats = NULL;
    CHECK_OK(drdc_backbone_features(&feats, &bb, images));
    int64_t c = 0;
    CHECK_OK(dt_size(&c, feats, 1));
    CHECK(c == 56);
    dt_free(feats);
    dt_free(images);
    drdc_backbone_free(&bb);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_bad_config(void) {
    drdc_backbone bb;
    drdc_backbone_config cfg = arch_cfg("resnet50");
    CHECK_ERR(drdc_backbone_build(&bb, &cfg, 64, CPU, 0), DRDC_ERR_CONFIG, "resnet50");
    cfg = arch_cfg("efficientnet-b0");
    cfg.n_blocks = 2;
    cfg.blocks[0] = 3;
    cfg.blocks[1] = 40;   /* b0 has 16 blocks */
    CHECK_ERR(drdc_backbone_build(&bb, &cfg, 64, CPU, 0), DRDC_ERR_CONFIG, "block 40");
    cfg.blocks[1] = 3;    /* not increasing */
    CHECK_ERR(drdc_backbone_build(&bb, &cfg, 64, CPU, 0), DRDC_ERR_CONFIG, "block 3");
    int size = 0;
    CHECK_ERR(drdc_backbone_native_size("efficientnet-b9", &size), DRDC_ERR_CONFIG, "efficientnet-b9");
}

/* features refuse images of another size or channel count, without leaking handles */
static void test_bad_images(void) {
    drdc_backbone_config cfg = arch_cfg("mobilenet_v2");
    drdc_backbone bb;
    CHECK_OK(drdc_backbone_build(&bb, &cfg, 64, CPU, 0));
    dt_tensor wrong = rand_images(1, 96), feats = NULL;
    long live = dt_live_handles();
    CHECK_ERR(drdc_backbone_features(&feats, &bb, wrong), DRDC_ERR_INPUT, "built for 64x64");
    CHECK(feats == NULL);
    int64_t shape[4] = {1, 4, 64, 64};
    dt_tensor four = NULL;
    CHECK_OK(dt_rand(&four, shape, 4, DT_F32, CPU, NULL));
    CHECK_ERR(drdc_backbone_features(&feats, &bb, four), DRDC_ERR_INPUT, "[B,3,H,W]");
    CHECK(dt_live_handles() == live + 1);   /* `four` only */
    dt_free(four);
    dt_free(wrong);
    drdc_backbone_free(&bb);
}

/* Writes bb's parameters to path, leaving out `skip` and giving `misshape` a wrong shape. */
static void write_params(const drdc_backbone *bb, const char *path, const char *skip, const char *misshape) {
    drdc_st_writer *w = NULL;
    CHECK_OK(drdc_st_writer_new(&w));
    for (int i = 0; w && i < bb->params.n; i++) {
        const char *name = bb->params.names[i];
        if (skip && strcmp(name, skip) == 0) continue;
        dt_tensor t = bb->params.tensors[i];
        int64_t shape[8];
        int nd = dt_ndim(t);
        CHECK_OK(dt_shape(shape, 8, t));
        size_t n = (size_t)dt_numel(t);
        float *buf = calloc(n, sizeof(float));
        CHECK_OK(dt_copy_to_host(t, buf, n * sizeof(float)));
        if (misshape && strcmp(name, misshape) == 0) {
            shape[0] -= 1;
            n = n / (size_t)(shape[0] + 1) * (size_t)shape[0];
        }
        CHECK_OK(drdc_st_writer_add(w, name, DRDC_ST_F32, nd, shape, buf, n * sizeof(float)));
        free(buf);
    }
    CHECK_OK(drdc_st_writer_write(w, path));
    drdc_st_writer_free(w);
}

static void test_load_errors_name_the_tensor(void) {
    drdc_backbone_config cfg = arch_cfg("mobilenet_v2");
    drdc_backbone bb;
    CHECK_OK(drdc_backbone_build(&bb, &cfg, 64, CPU, 0));
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s", test_tmpdir("backbone_load"));
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    write_params(&bb, path, "features.5.conv.1.0.weight", NULL);
    CHECK_ERR(drdc_backbone_load(&bb, path), DRDC_ERR_FORMAT, "features.5.conv.1.0.weight");
    snprintf(path, sizeof path, "%s/misshapen.safetensors", dir);
    write_params(&bb, path, NULL, "classifier.1.bias");
    CHECK_ERR(drdc_backbone_load(&bb, path), DRDC_ERR_FORMAT, "classifier.1.bias");
    snprintf(path, sizeof path, "%s/good.safetensors", dir);
    write_params(&bb, path, NULL, NULL);
    CHECK_OK(drdc_backbone_load(&bb, path));
    /* an EfficientNet file is not a MobileNetV2 */
    drdc_backbone_config ecfg = arch_cfg("efficientnet-b0");
    drdc_backbone eb;
    CHECK_OK(drdc_backbone_build(&eb, &ecfg, 64, CPU, 0));
    CHECK_ERR(drdc_backbone_load(&eb, path), DRDC_ERR_FORMAT, "_conv_stem.weight");
    snprintf(path, sizeof path, "%s/absent.safetensors", dir);
    CHECK_ERR(drdc_backbone_load(&bb, path), DRDC_ERR_INPUT, "absent.safetensors");
    drdc_backbone_free(&eb);
    drdc_backbone_free(&bb);
}

/* ---- the ImageNet self-check with ../shared/weights --------------------------------------- */

static const struct { const char *image, *label; } IMAGENET_CHECK[] = {
    {"cat.bmp", "Egyptian cat"},
    {"grace_hopper.bmp", "military uniform"},
    {"parrot.jpg", "macaw"},
};

/* The line-th line (0-based) of a file, into out. */
static int read_line(const char *path, int line, char *out, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int i = 0, ok = -1;
    while (fgets(out, (int)cap, f)) {
        if (i++ == line) {
            out[strcspn(out, "\r\n")] = 0;
            ok = 0;
            break;
        }
    }
    fclose(f);
    return ok;
}

static void test_imagenet_check_c_api(void) {
    const char *shared = test_shared_dir();
    char weights[1024];
    if (shared) snprintf(weights, sizeof weights, "%s/weights/mobilenet_v2_1.0_224.safetensors", shared);
    if (!shared || !file_exists(weights)) {
        test_skip_part("ImageNet check: ../shared/weights/mobilenet_v2_1.0_224.safetensors is absent");
        return;
    }
    drdc_backbone_config cfg = arch_cfg("mobilenet_v2");
    drdc_backbone bb;
    CHECK_OK(drdc_backbone_build(&bb, &cfg, 224, CPU, 0));
    CHECK_OK(drdc_backbone_load(&bb, weights));
    for (size_t i = 0; i < sizeof IMAGENET_CHECK / sizeof IMAGENET_CHECK[0]; i++) {
        char path[1200], labels[1200], label[512] = "";
        snprintf(path, sizeof path, "%s/weights/check/%s", shared, IMAGENET_CHECK[i].image);
        snprintf(labels, sizeof labels, "%s/weights/check/imagenet_labels.txt", shared);
        if (!file_exists(path)) {
            printf("SKIPPED ImageNet check of %s: absent\n", path);
            continue;
        }
        drdc_image img = {0}, small = {0};
        CHECK_OK(drdc_image_load_rgb(path, &img));
        CHECK_OK(drdc_image_resize(&img, 224, 224, &small));
        float *chw = malloc(sizeof(float) * 3 * 224 * 224);
        for (int p = 0; chw && small.data && p < 224 * 224; p++)
            for (int c = 0; c < 3; c++) chw[c * 224 * 224 + p] = small.data[p * 3 + c];
        int64_t shape[4] = {1, 3, 224, 224};
        dt_tensor x = NULL, logits = NULL, idx = NULL;
        CHECK_OK(dt_from_host(&x, chw, DT_F32, shape, 4, CPU));
        CHECK_OK(drdc_backbone_classify(&logits, &bb, x));
        CHECK_OK(dt_topk(NULL, &idx, logits, 1, 1, 1));
        int64_t top = -1;
        CHECK_OK(dt_copy_to_host(idx, &top, sizeof top));
        CHECK(read_line(labels, (int)top, label, sizeof label) == 0);
        printf("  %s -> %lld %s\n", IMAGENET_CHECK[i].image, (long long)top, label);
        CHECK(strcmp(label, IMAGENET_CHECK[i].label) == 0);
        dt_free(idx);
        dt_free(logits);
        dt_free(x);
        free(chw);
        drdc_image_free(&img);
        drdc_image_free(&small);
    }
    drdc_backbone_free(&bb);
}

/* `drdc backbone` prints the right top-1 label; without weights it warns that it is random */
static void test_imagenet_check_command(void) {
    const char *bin = test_drdc_bin(), *shared = test_shared_dir();
    if (!bin || test_system("'%s' backbone --help >/dev/null 2>&1", bin) != 0) {
        test_skip_part("`drdc backbone` checks: DRDC_BIN unset or the command is not registered");
        return;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_tmpdir("backbone_cmd"));
    if (shared) {
        char weights[1200];
        snprintf(weights, sizeof weights, "%s/weights/mobilenet_v2_1.0_224.safetensors", shared);
        for (size_t i = 0; file_exists(weights) && i < sizeof IMAGENET_CHECK / sizeof IMAGENET_CHECK[0]; i++) {
            char img[1200];
            snprintf(img, sizeof img, "%s/weights/check/%s", shared, IMAGENET_CHECK[i].image);
            if (!file_exists(img)) continue;
            int rc = test_system("'%s' backbone --weights '%s' --image '%s' --top 1 --threads 2 > '%s/out.txt' 2>&1",
                                 bin, weights, img, dir);
            CHECK(rc == 0);
            int found = test_system("grep -q '1\\. .*  %s$' '%s/out.txt'", IMAGENET_CHECK[i].label, dir) == 0;
            if (!found) test_system("cat '%s/out.txt' >&2", dir);
            CHECK(found);
        }
    } else {
        printf("SKIPPED `drdc backbone` ImageNet check: ../shared is absent\n");
    }
    /* a random backbone runs, and says so loudly */
    char png[1200];
    snprintf(png, sizeof png, "%s/gray.png", dir);
    drdc_image g = {0};
    CHECK_OK(drdc_image_alloc(&g, 40, 40, 3));
    CHECK_OK(drdc_image_write_png(png, &g));
    drdc_image_free(&g);
    int rc = test_system("'%s' backbone --image '%s' --size 64 --top 3 --threads 2 > '%s/out.txt' 2> '%s/err.txt'",
                         bin, png, dir, dir);
    CHECK(rc == 0);
    CHECK(test_system("grep -q 'RANDOM' '%s/err.txt'", dir) == 0);
    CHECK(test_system("grep -q '3\\. ' '%s/out.txt'", dir) == 0);
    /* a usage error: no image */
    CHECK(test_system("'%s' backbone > /dev/null 2>&1", bin) == 2);
}

int main(void) {
    dt_set_num_threads(2);
    RUN(test_channels_of_the_defaults);
    RUN(test_features_shape_no_leak_frozen);
    RUN(test_custom_blocks);
    RUN(test_bad_config);
    RUN(test_bad_images);
    RUN(test_load_errors_name_the_tensor);
    RUN(test_twin_mobilenet_v2_64);
    RUN(test_twin_mobilenet_v2_224);
    RUN(test_twin_efficientnet_b0_64);
    RUN(test_twin_efficientnet_b4_224);
    RUN(test_twin_efficientnet_lite4_64);
    RUN(test_imagenet_check_c_api);
    RUN(test_imagenet_check_command);
    return test_summary();
}
