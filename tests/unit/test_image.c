/* test_image.c: image loading (PNG 8/16-bit in every colour type, JPEG, BMP), the errors for
 * bad files (each naming the file), mask binarisation, atomic PNG writing, antialiased resize
 * against PyTorch (run through $DRDC_PYTHON), and the heatmap colour map.
 * Test PNGs and BMPs are built by hand here (stored zlib blocks, own CRC), so the expected
 * pixel values do not come from the decoder under test. */
#define _POSIX_C_SOURCE 200809L
#include "testlib.h"
#include "drdc/formats/image.h"
#include "drdc/stages/heatmap.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb/stb_image_write.h>

static char g_path[1024];
static const char *path_in(const char *dir, const char *name) {
    snprintf(g_path, sizeof g_path, "%s/%s", dir, name);
    return g_path;
}

/* ---- loading: colour types and bit depths ------------------------------------------------------ */

static void test_png_gray8_and_gray_alpha(void) {
    const char *dir = test_tmpdir("image_gray");
    const unsigned char gray[6] = {0, 64, 200, 255, 1, 128};
    test_buf b = test_png_make(3, 2, 8, 0, gray, 3, NULL, 0);
    CHECK(test_buf_write(path_in(dir, "gray.png"), &b) == 0);
    drdc_image img = {0};
    CHECK_OK(drdc_image_load_rgb(g_path, &img));
    CHECK(img.w == 3 && img.h == 2 && img.c == 3);
    if (img.data)
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 3; k++) CHECK_NEAR(img.data[3 * i + k], gray[i] / 255.0, 1e-7);
    drdc_image_free(&img);
    CHECK(img.data == NULL && img.w == 0);

    const unsigned char ga[12] = {10, 255, 20, 0, 30, 128, 40, 7, 250, 1, 0, 255};
    b = test_png_make(3, 2, 8, 4, ga, 6, NULL, 0);
    CHECK(test_buf_write(path_in(dir, "gray_alpha.png"), &b) == 0);
    CHECK_OK(drdc_image_load_rgb(g_path, &img));
    CHECK(img.w == 3 && img.h == 2 && img.c == 3);
    if (img.data)
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 3; k++) CHECK_NEAR(img.data[3 * i + k], ga[2 * i] / 255.0, 1e-7);
    drdc_image_free(&img);
}

static void test_png_rgba_and_palette(void) {
    const char *dir = test_tmpdir("image_rgba");
    const unsigned char rgba[2 * 2 * 4] = {255, 0, 0, 255, 0, 255, 0, 0, 0, 0, 255, 100, 12, 34, 56, 78};
    test_buf b = test_png_make(2, 2, 8, 6, rgba, 8, NULL, 0);
    CHECK(test_buf_write(path_in(dir, "rgba.png"), &b) == 0);
    drdc_image img = {0};
    CHECK_OK(drdc_image_load_rgb(g_path, &img));
    CHECK(img.w == 2 && img.h == 2 && img.c == 3);
    if (img.data)
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 3; k++) CHECK_NEAR(img.data[3 * i + k], rgba[4 * i + k] / 255.0, 1e-7);
    drdc_image_free(&img);

    const unsigned char plte[3 * 3] = {200, 10, 20, 5, 150, 250, 77, 88, 99};
    const unsigned char idx[4 * 2] = {0, 1, 2, 1, 2, 2, 0, 1};
    b = test_png_make(4, 2, 8, 3, idx, 4, plte, 3);
    CHECK(test_buf_write(path_in(dir, "palette.png"), &b) == 0);
    CHECK_OK(drdc_image_load_rgb(g_path, &img));
    CHECK(img.w == 4 && img.h == 2 && img.c == 3);
    if (img.data)
        for (int i = 0; i < 8; i++)
            for (int k = 0; k < 3; k++) CHECK_NEAR(img.data[3 * i + k], plte[3 * idx[i] + k] / 255.0, 1e-7);
    drdc_image_free(&img);
}

static void test_png_16bit_keeps_precision(void) {
    const char *dir = test_tmpdir("image_16");
    /* values whose high byte alone would give a different result */
    const unsigned v[6] = {0, 1, 12345, 32768, 54321, 65535};
    unsigned char rows[12];
    for (int i = 0; i < 6; i++) {
        rows[2 * i] = (unsigned char)(v[i] >> 8);
        rows[2 * i + 1] = (unsigned char)(v[i] & 255);
    }
    test_buf b = test_png_make(3, 2, 16, 0, rows, 6, NULL, 0);
    CHECK(test_buf_write(path_in(dir, "gray16.png"), &b) == 0);
    drdc_image img = {0};
    CHECK_OK(drdc_image_load_rgb(g_path, &img));
    CHECK(img.w == 3 && img.h == 2 && img.c == 3);
    if (img.data)
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 3; k++) CHECK_NEAR(img.data[3 * i + k], v[i] / 65535.0, 1e-7);
    drdc_image_free(&img);

    /* 16-bit RGB, one pixel per channel value triple */
    unsigned char rgb[2 * 6];
    const unsigned c16[6] = {258, 40000, 7, 65534, 1000, 30001};
    for (int i = 0; i < 6; i++) {
        rgb[2 * i] = (unsigned char)(c16[i] >> 8);
        rgb[2 * i + 1] = (unsigned char)(c16[i] & 255);
    }
    b = test_png_make(2, 1, 16, 2, rgb, 12, NULL, 0);
    CHECK(test_buf_write(path_in(dir, "rgb16.png"), &b) == 0);
    CHECK_OK(drdc_image_load_rgb(g_path, &img));
    CHECK(img.w == 2 && img.h == 1);
    if (img.data)
        for (int i = 0; i < 6; i++) CHECK_NEAR(img.data[i], c16[i] / 65535.0, 1e-7);
    drdc_image_free(&img);
}

/* 24-bit BMP, bottom-up rows padded to 4 bytes, pixels stored B, G, R; and a truncated copy. */
static void test_bmp_loads(void) {
    const char *dir = test_tmpdir("image_bmp");
    const int w = 3, h = 2;
    const unsigned char rgb[2][3][3] = {{{255, 0, 0}, {0, 255, 0}, {0, 0, 255}},
                                        {{10, 20, 30}, {40, 50, 60}, {70, 80, 90}}};
    int stride = (w * 3 + 3) & ~3;
    test_buf b = {0};
    test_put(&b, "BM", 2);
    test_put32le(&b, (uint32_t)(54 + stride * h));
    test_put32le(&b, 0);
    test_put32le(&b, 54);
    test_put32le(&b, 40);
    test_put32le(&b, (uint32_t)w);
    test_put32le(&b, (uint32_t)h);
    test_put16le(&b, 1);
    test_put16le(&b, 24);
    test_put32le(&b, 0);
    test_put32le(&b, (uint32_t)(stride * h));
    test_put32le(&b, 2835);
    test_put32le(&b, 2835);
    test_put32le(&b, 0);
    test_put32le(&b, 0);
    for (int y = h - 1; y >= 0; y--) {
        for (int x = 0; x < w; x++) {
            test_put8(&b, rgb[y][x][2]);
            test_put8(&b, rgb[y][x][1]);
            test_put8(&b, rgb[y][x][0]);
        }
        for (int p = w * 3; p < stride; p++) test_put8(&b, 0);
    }
    /* cut inside the pixel rows: stb_image alone would read the missing row as zeros */
    CHECK(test_write_file(path_in(dir, "cut.bmp"), b.p, b.n - 4) == 0);
    drdc_image img = {0};
    CHECK_ERR(drdc_image_load_rgb(g_path, &img), DRDC_ERR_FORMAT, "cut.bmp");
    CHECK(test_buf_write(path_in(dir, "img.bmp"), &b) == 0);
    CHECK_OK(drdc_image_load_rgb(g_path, &img));
    CHECK(img.w == w && img.h == h && img.c == 3);
    if (img.data)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int k = 0; k < 3; k++) CHECK_NEAR(img.data[(y * w + x) * 3 + k], rgb[y][x][k] / 255.0, 1e-7);
    drdc_image_free(&img);
}

/* JPEG is lossy: a smooth image written at quality 95 must come back close to what was written. */
static void test_jpeg_loads(void) {
    const char *dir = test_tmpdir("image_jpeg");
    const int w = 40, h = 24;
    unsigned char px[40 * 24 * 3];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            px[(y * w + x) * 3 + 0] = (unsigned char)(40 + 4 * x);
            px[(y * w + x) * 3 + 1] = (unsigned char)(30 + 6 * y);
            px[(y * w + x) * 3 + 2] = 120;
        }
    CHECK(stbi_write_jpg(path_in(dir, "img.jpg"), w, h, 3, px, 95) != 0);
    drdc_image img = {0};
    CHECK_OK(drdc_image_load_rgb(g_path, &img));
    CHECK(img.w == w && img.h == h && img.c == 3);
    if (img.data && img.w == w && img.h == h) {
        double err = 0;
        for (int i = 0; i < w * h * 3; i++) err += fabs(img.data[i] - px[i] / 255.0);
        err /= w * h * 3;
        CHECK(err < 0.01);
    }
    drdc_image_free(&img);
    int pw = 0, ph = 0;
    CHECK_OK(drdc_image_probe(g_path, &pw, &ph));
    CHECK(pw == w && ph == h);
}

/* ---- bad files: status and a message naming the file -------------------------------------------- */

static void check_load_fails(const char *path, const char *name, drdc_status want) {
    drdc_image img = {0};
    CHECK_ERR(drdc_image_load_rgb(path, &img), want, name);
    CHECK(img.data == NULL);
    CHECK_ERR(drdc_image_load_mask(path, &img), want, name);
    CHECK(img.data == NULL);
    int w = -1, h = -1;
    CHECK_ERR(drdc_image_probe(path, &w, &h), want, name);
}

static void test_missing_and_empty_files(void) {
    const char *dir = test_tmpdir("image_bad1");
    check_load_fails(path_in(dir, "no_such_file.png"), "no_such_file.png", DRDC_ERR_INPUT);
    CHECK(test_write_file(path_in(dir, "empty.png"), "", 0) == 0);
    check_load_fails(g_path, "empty.png", DRDC_ERR_FORMAT);
    drdc_image img = {0};
    CHECK_ERR(drdc_image_load_rgb(g_path, &img), DRDC_ERR_FORMAT, "empty");
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/folder.png", dir);
    CHECK(mkdir(sub, 0777) == 0);
    check_load_fails(sub, "folder.png", DRDC_ERR_INPUT);
}

static void test_truncated_png(void) {
    const char *dir = test_tmpdir("image_bad2");
    unsigned char rows[32 * 32 * 3];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof rows; i++) {
        s = s * 1664525u + 1013904223u;
        rows[i] = (unsigned char)(s >> 24);
    }
    test_buf b = test_png_make(32, 32, 8, 2, rows, 32 * 3, NULL, 0);
    CHECK(test_write_file(path_in(dir, "whole.png"), b.p, b.n) == 0);
    drdc_image img = {0};
    CHECK_OK(drdc_image_load_rgb(g_path, &img)); /* the untruncated file is fine */
    drdc_image_free(&img);
    CHECK(test_write_file(path_in(dir, "truncated.png"), b.p, b.n * 6 / 10) == 0);
    free(b.p);
    CHECK_ERR(drdc_image_load_rgb(g_path, &img), DRDC_ERR_FORMAT, "truncated.png");
    CHECK(img.data == NULL);
    CHECK_ERR(drdc_image_load_mask(g_path, &img), DRDC_ERR_FORMAT, "truncated.png");
}

static void test_random_bytes_and_text(void) {
    const char *dir = test_tmpdir("image_bad3");
    unsigned char junk[4096];
    uint32_t s = 777;
    for (size_t i = 0; i < sizeof junk; i++) {
        s = s * 1664525u + 1013904223u;
        junk[i] = (unsigned char)(s >> 24);
    }
    const char *names[3] = {"noise.png", "noise.jpg", "noise.bmp"};
    for (int i = 0; i < 3; i++) {
        CHECK(test_write_file(path_in(dir, names[i]), junk, sizeof junk) == 0);
        check_load_fails(g_path, names[i], DRDC_ERR_FORMAT);
    }
    const char *text = "name,score\nimage_000.png,0.25\nimage_001.png,0.75\n";
    CHECK(test_write_file(path_in(dir, "scores.csv"), text, strlen(text)) == 0);
    check_load_fails(g_path, "scores.csv", DRDC_ERR_FORMAT);
    CHECK(test_write_file(path_in(dir, "readme.png"), text, strlen(text)) == 0);
    check_load_fails(g_path, "readme.png", DRDC_ERR_FORMAT);
}

static void test_absurd_dimensions_refused(void) {
    const char *dir = test_tmpdir("image_bad4");
    /* signature + IHDR (100000 x 100000, RGB 8-bit, valid CRC) + IEND, no pixel data */
    test_buf b = test_png_make(100000, 100000, 8, 2, NULL, 0, NULL, 0);
    CHECK(b.n == 8 + 25 + 12);
    CHECK(test_crc32((const unsigned char *)"IEND", 4) == 0xAE426082u); /* the CRC helper is right */
    CHECK(test_buf_write(path_in(dir, "huge.png"), &b) == 0);
    check_load_fails(g_path, "huge.png", DRDC_ERR_INPUT);
    drdc_image img = {0};
    CHECK_ERR(drdc_image_load_rgb(g_path, &img), DRDC_ERR_INPUT, "100000x100000");
    CHECK_ERR(drdc_image_load_rgb(g_path, &img), DRDC_ERR_INPUT, "32768");

    /* just above the per-side limit, tiny area: still refused */
    b = test_png_make(DRDC_IMAGE_MAX_SIDE + 1, 1, 8, 0, NULL, 0, NULL, 0);
    CHECK(test_buf_write(path_in(dir, "wide.png"), &b) == 0);
    CHECK_ERR(drdc_image_load_rgb(g_path, &img), DRDC_ERR_INPUT, "wide.png");

    /* a BMP header saying 40000 x 40000 (stb_image's own limit is higher): refused by ours */
    b = (test_buf){0};
    test_put(&b, "BM", 2);
    test_put32le(&b, 54 + 16);
    test_put32le(&b, 0);
    test_put32le(&b, 54);
    test_put32le(&b, 40);
    test_put32le(&b, 40000);
    test_put32le(&b, 40000);
    test_put16le(&b, 1);
    test_put16le(&b, 24);
    for (int i = 0; i < 6; i++) test_put32le(&b, 0);
    for (int i = 0; i < 16; i++) test_put8(&b, 0);
    CHECK(test_buf_write(path_in(dir, "huge.bmp"), &b) == 0);
    CHECK_ERR(drdc_image_load_rgb(g_path, &img), DRDC_ERR_INPUT, "huge.bmp");
    CHECK_ERR(drdc_image_load_rgb(g_path, &img), DRDC_ERR_INPUT, "40000x40000");
}

/* ---- masks ----------------------------------------------------------------------------------- */

static void test_mask_binarised(void) {
    const char *dir = test_tmpdir("image_mask");
    drdc_image m = {0};
    const unsigned char g[4] = {0, 1, 128, 255};
    test_buf b = test_png_make(4, 1, 8, 0, g, 4, NULL, 0);
    CHECK(test_buf_write(path_in(dir, "gray.png"), &b) == 0);
    CHECK_OK(drdc_image_load_mask(g_path, &m));
    CHECK(m.w == 4 && m.h == 1 && m.c == 1);
    if (m.data) {
        CHECK(m.data[0] == 0.0f);
        CHECK(m.data[1] == 1.0f && m.data[2] == 1.0f && m.data[3] == 1.0f);
    }
    drdc_image_free(&m);

    /* colour mask: any non-zero colour channel; alpha does not count */
    const unsigned char rgba[3 * 4] = {0, 0, 3, 255, 0, 0, 0, 255, 9, 0, 0, 0};
    b = test_png_make(3, 1, 8, 6, rgba, 12, NULL, 0);
    CHECK(test_buf_write(path_in(dir, "rgba.png"), &b) == 0);
    CHECK_OK(drdc_image_load_mask(g_path, &m));
    if (m.data && m.w == 3) {
        CHECK(m.data[0] == 1.0f);
        CHECK(m.data[1] == 0.0f);
        CHECK(m.data[2] == 1.0f);
    }
    drdc_image_free(&m);

    /* 16-bit mask with value 1: non-zero, although its high byte is 0 */
    const unsigned char g16[4] = {0, 0, 0, 1};
    b = test_png_make(2, 1, 16, 0, g16, 4, NULL, 0);
    CHECK(test_buf_write(path_in(dir, "gray16.png"), &b) == 0);
    CHECK_OK(drdc_image_load_mask(g_path, &m));
    if (m.data && m.w == 2) {
        CHECK(m.data[0] == 0.0f);
        CHECK(m.data[1] == 1.0f);
    }
    drdc_image_free(&m);
}

/* ---- writing ----------------------------------------------------------------------------------- */

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void test_write_load_round_trip(void) {
    const char *dir = test_tmpdir("image_write");
    drdc_image a = {0}, back = {0};
    CHECK_OK(drdc_image_alloc(&a, 7, 5, 3));
    if (!a.data) return;
    for (int i = 0; i < 7 * 5 * 3; i++) a.data[i] = (float)((i * 37) % 256) / 255.0f;
    a.data[0] = -0.5f; /* clamped to 0 */
    a.data[1] = 1.5f;  /* clamped to 1 */
    a.data[2] = 100.4f / 255.0f; /* rounds to 100 */
    char path[1024];
    snprintf(path, sizeof path, "%s/rgb.png", dir);
    CHECK_OK(drdc_image_write_png(path, &a));
    CHECK(count_entries(dir) == 1); /* no temporary file left behind */
    CHECK_OK(drdc_image_load_rgb(path, &back));
    CHECK(back.w == 7 && back.h == 5 && back.c == 3);
    if (back.data) {
        CHECK(back.data[0] == 0.0f);
        CHECK(back.data[1] == 1.0f);
        CHECK_NEAR(back.data[2], 100.0 / 255.0, 1e-7);
        for (int i = 3; i < 7 * 5 * 3; i++) CHECK_NEAR(back.data[i], a.data[i], 1e-7);
    }
    drdc_image_free(&back);

    /* overwrite in place with a gray image: loads as gray replicated to RGB */
    drdc_image g = {0};
    CHECK_OK(drdc_image_alloc(&g, 4, 3, 1));
    if (g.data) {
        for (int i = 0; i < 12; i++) g.data[i] = (float)(i * 20) / 255.0f;
        CHECK_OK(drdc_image_write_png(path, &g));
        CHECK(count_entries(dir) == 1);
        CHECK_OK(drdc_image_load_rgb(path, &back));
        CHECK(back.w == 4 && back.h == 3);
        if (back.data && back.w == 4)
            for (int i = 0; i < 12; i++)
                for (int k = 0; k < 3; k++) CHECK_NEAR(back.data[3 * i + k], g.data[i], 1e-7);
        drdc_image_free(&back);
        CHECK_OK(drdc_image_load_mask(path, &back));
        if (back.data && back.w == 4) {
            CHECK(back.data[0] == 0.0f);
            CHECK(back.data[1] == 1.0f);
        }
        drdc_image_free(&back);
    }
    drdc_image_free(&g);

    /* a missing folder: an i/o error naming the path, and nothing written */
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/no_such_dir/out.png", dir);
    CHECK_ERR(drdc_image_write_png(bad, &a), DRDC_ERR_IO, "no_such_dir/out.png");
    /* NaN is refused, the old file stays */
    a.data[5] = NAN;
    CHECK_ERR(drdc_image_write_png(path, &a), DRDC_ERR_NUMERIC, "rgb.png");
    CHECK(count_entries(dir) == 1);
    drdc_image_free(&a);
}

static void test_alloc_limits(void) {
    drdc_image a = {0};
    CHECK_ERR(drdc_image_alloc(&a, 0, 5, 3), DRDC_ERR_INPUT, "0x5");
    CHECK_ERR(drdc_image_alloc(&a, 5, 5, 2), DRDC_ERR_INPUT, "channels");
    CHECK_ERR(drdc_image_alloc(&a, DRDC_IMAGE_MAX_SIDE + 1, 1, 1), DRDC_ERR_INPUT, "limit");
    CHECK(a.data == NULL);
    drdc_image_free(&a); /* safe on a zeroed struct */
}

/* ---- resize ------------------------------------------------------------------------------------ */

static void test_resize_basic_properties(void) {
    drdc_image a = {0}, b = {0};
    CHECK_OK(drdc_image_alloc(&a, 9, 7, 3));
    if (!a.data) return;
    for (int i = 0; i < 9 * 7 * 3; i++) a.data[i] = 0.375f;
    const int sizes[4][2] = {{3, 2}, {20, 31}, {9, 7}, {1, 1}};
    for (int s = 0; s < 4; s++) { /* a constant image stays constant: weights sum to one */
        CHECK_OK(drdc_image_resize(&a, sizes[s][0], sizes[s][1], &b));
        CHECK(b.w == sizes[s][0] && b.h == sizes[s][1] && b.c == 3);
        if (b.data)
            for (int i = 0; i < b.w * b.h * 3; i++) CHECK_NEAR(b.data[i], 0.375, 1e-6);
        drdc_image_free(&b);
    }
    for (int i = 0; i < 9 * 7 * 3; i++) a.data[i] = (float)(i % 11) / 10.0f;
    CHECK_OK(drdc_image_resize(&a, 9, 7, &b)); /* same size: identity */
    if (b.data)
        for (int i = 0; i < 9 * 7 * 3; i++) CHECK(b.data[i] == a.data[i]);
    drdc_image_free(&b);
    CHECK_ERR(drdc_image_resize(&a, 0, 4, &b), DRDC_ERR_INPUT, "0x4");
    CHECK_ERR(drdc_image_resize(&a, 4, 4, &a), DRDC_ERR_INPUT, "same");
    drdc_image_free(&a);
}


static const char *RESIZE_PY =
    "import sys\n"
    "try:\n"
    "    import numpy as np, torch\n"
    "    import torch.nn.functional as F\n"
    "except ImportError as e:\n"
    "    print('cannot import torch/numpy:', e); sys.exit(3)\n"
    "d = sys.argv[1]\n"
    "for line in open(d + '/cases.txt'):\n"
    "    k, c, h, w, oh, ow = map(int, line.split())\n"
    "    x = np.fromfile('%s/in_%d.f32' % (d, k), dtype=np.float32).reshape(h, w, c)\n"
    "    t = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0).contiguous()\n"
    "    y = F.interpolate(t, size=(oh, ow), mode='bilinear', align_corners=False, antialias=True)\n"
    "    y[0].permute(1, 2, 0).contiguous().numpy().astype(np.float32).tofile('%s/out_%d.f32' % (d, k))\n";

/* drdc_image_resize against torch.nn.functional.interpolate(bilinear, antialias=True). */
static void test_resize_matches_torch(void) {
    const char *py = getenv("DRDC_PYTHON");
    if (!py || !*py) {
        test_skip_part("resize against torch: DRDC_PYTHON is not set (run under ctest)");
        return;
    }
    const char *dir = test_tmpdir("image_resize");
    /* c, h, w, out_h, out_w: shrinking (integer and fractional factors), enlarging, mixed,
     * non-square, one axis unchanged, down to one pixel */
    static const int cases[][5] = {{3, 37, 23, 11, 16}, {3, 64, 64, 16, 16}, {1, 13, 9, 31, 40},
                                   {3, 50, 20, 45, 20}, {3, 20, 50, 7, 133}, {1, 64, 30, 64, 13},
                                   {3, 224, 300, 57, 91}, {3, 5, 8, 1, 1}, {3, 16, 16, 17, 15}};
    const int ncases = (int)(sizeof cases / sizeof cases[0]);
    drdc_image src[sizeof cases / sizeof cases[0]];
    memset(src, 0, sizeof src);
    char p[1200];
    snprintf(p, sizeof p, "%s/cases.txt", dir);
    FILE *cf = fopen(p, "w");
    CHECK(cf != NULL);
    if (!cf) return;
    uint32_t s = 4242;
    for (int k = 0; k < ncases; k++) {
        const int *cs = cases[k];
        CHECK_OK(drdc_image_alloc(&src[k], cs[2], cs[1], cs[0]));
        if (!src[k].data) continue;
        size_t n = (size_t)cs[0] * cs[1] * cs[2];
        for (size_t i = 0; i < n; i++) {
            s = s * 1664525u + 1013904223u;
            src[k].data[i] = (float)(s >> 8) / 16777216.0f;
        }
        snprintf(p, sizeof p, "%s/in_%d.f32", dir, k);
        CHECK(test_write_file(p, src[k].data, n * sizeof(float)) == 0);
        fprintf(cf, "%d %d %d %d %d %d\n", k, cs[0], cs[1], cs[2], cs[3], cs[4]);
    }
    fclose(cf);
    snprintf(p, sizeof p, "%s/resize.py", dir);
    CHECK(test_write_file(p, RESIZE_PY, strlen(RESIZE_PY)) == 0);
    int rc = test_system("'%s' '%s' '%s'", py, p, dir);
    if (rc == 3) {
        test_skip_part("resize against torch: %s cannot import torch and numpy", py);
    } else {
        CHECK(rc == 0);
        for (int k = 0; rc == 0 && k < ncases; k++) {
            const int *cs = cases[k];
            drdc_image mine = {0};
            CHECK_OK(drdc_image_resize(&src[k], cs[4], cs[3], &mine));
            size_t n = (size_t)cs[0] * cs[3] * cs[4];
            float *ref = malloc(n * sizeof(float));
            snprintf(p, sizeof p, "%s/out_%d.f32", dir, k);
            FILE *f = fopen(p, "rb");
            size_t got = (f && ref) ? fread(ref, sizeof(float), n, f) : 0;
            if (f) fclose(f);
            CHECK(got == n);
            if (got == n && mine.data) {
                double maxd = 0;
                for (size_t i = 0; i < n; i++) maxd = fmax(maxd, fabs((double)mine.data[i] - ref[i]));
                fprintf(stderr, "  resize %dx%dx%d -> %dx%d: max |drdc - torch| = %.3g\n", cs[2], cs[1], cs[0],
                        cs[4], cs[3], maxd);
                CHECK(maxd <= 1e-4);
            }
            free(ref);
            drdc_image_free(&mine);
        }
    }
    for (int k = 0; k < ncases; k++) drdc_image_free(&src[k]);
}

/* ---- heatmaps ------------------------------------------------------------------------------------ */

static double luminance(const float c[3]) { return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]; }

static void test_turbo_colormap(void) {
    float lo[3], hi[3], mid[3], c[3];
    drdc_colormap_turbo(0.0f, lo);
    drdc_colormap_turbo(1.0f, hi);
    drdc_colormap_turbo(0.5f, mid);
    /* t = 0 dark, blue just above it; t = 1 dark red; the middle bright */
    CHECK(luminance(lo) < 0.15);
    drdc_colormap_turbo(0.1f, c);
    CHECK(c[2] > c[0] && c[2] > c[1]);
    CHECK(hi[0] > 0.5f && hi[0] > 4 * hi[1] && hi[2] < 0.01f && luminance(hi) < 0.2);
    CHECK(luminance(mid) > 0.8);
    /* outside [0,1] clamps to the ends */
    drdc_colormap_turbo(-3.0f, c);
    CHECK(c[0] == lo[0] && c[1] == lo[1] && c[2] == lo[2]);
    drdc_colormap_turbo(7.0f, c);
    CHECK(c[0] == hi[0] && c[1] == hi[1] && c[2] == hi[2]);
    /* luminance rises up to t = 0.5 and falls from 0.55 to 0.98 (the polynomial's green
     * channel turns up slightly in the last 1.5%); channels in [0,1]; no jumps */
    float prev[3];
    drdc_colormap_turbo(0.0f, prev);
    for (int i = 1; i <= 1000; i++) {
        float t = i / 1000.0f;
        drdc_colormap_turbo(t, c);
        for (int k = 0; k < 3; k++) {
            CHECK(c[k] >= 0.0f && c[k] <= 1.0f);
            CHECK(fabsf(c[k] - prev[k]) < 0.02f);
        }
        if (t <= 0.5f) CHECK(luminance(c) >= luminance(prev) - 1e-6);
        if (t > 0.55f && t <= 0.98f) CHECK(luminance(c) <= luminance(prev) + 1e-6);
        memcpy(prev, c, sizeof prev);
    }
}

static void test_colorize_and_overlay(void) {
    drdc_image heat = {0}, img = {0}, rgb = {0}, out = {0};
    CHECK_OK(drdc_image_alloc(&heat, 4, 1, 1));
    CHECK_OK(drdc_image_alloc(&img, 4, 1, 3));
    if (!heat.data || !img.data) return;
    const float v[4] = {-1.0f, 2.0f, 3.0f, 10.0f}; /* range [2, 4]: below, at lo, middle, above */
    memcpy(heat.data, v, sizeof v);
    for (int i = 0; i < 12; i++) img.data[i] = 0.2f + 0.05f * i;
    float c0[3], c5[3], c1[3];
    drdc_colormap_turbo(0.0f, c0);
    drdc_colormap_turbo(0.5f, c5);
    drdc_colormap_turbo(1.0f, c1);
    CHECK_OK(drdc_heatmap_colorize(&heat, 2.0f, 4.0f, &rgb));
    CHECK(rgb.w == 4 && rgb.h == 1 && rgb.c == 3);
    if (rgb.data)
        for (int k = 0; k < 3; k++) {
            CHECK_NEAR(rgb.data[k], c0[k], 1e-7);
            CHECK_NEAR(rgb.data[3 + k], c0[k], 1e-7);
            CHECK_NEAR(rgb.data[6 + k], c5[k], 1e-7);
            CHECK_NEAR(rgb.data[9 + k], c1[k], 1e-7);
        }
    drdc_image_free(&rgb);

    CHECK_OK(drdc_heatmap_overlay(&img, &heat, 2.0f, 4.0f, 0.6f, &out));
    if (out.data)
        for (int k = 0; k < 3; k++) {
            CHECK_NEAR(out.data[k], img.data[k], 1e-7);         /* t = 0: the image unchanged */
            CHECK_NEAR(out.data[3 + k], img.data[3 + k], 1e-7);
            CHECK_NEAR(out.data[6 + k], 0.7 * img.data[6 + k] + 0.3 * c5[k], 1e-6);
            CHECK_NEAR(out.data[9 + k], 0.4 * img.data[9 + k] + 0.6 * c1[k], 1e-6);
        }
    drdc_image_free(&out);
    CHECK_ERR(drdc_heatmap_overlay(&img, &heat, 2.0f, 4.0f, 1.5f, &out), DRDC_ERR_INPUT, "opacity");
    drdc_image small = {0};
    CHECK_OK(drdc_image_alloc(&small, 3, 1, 3));
    CHECK_ERR(drdc_heatmap_overlay(&small, &heat, 2.0f, 4.0f, 0.5f, &out), DRDC_ERR_INPUT, "4x1");
    CHECK_ERR(drdc_heatmap_colorize(&small, 0.0f, 1.0f, &out), DRDC_ERR_INPUT, "channels");
    drdc_image_free(&small);
    drdc_image_free(&heat);
    drdc_image_free(&img);
}

int main(void) {
    RUN(test_png_gray8_and_gray_alpha);
    RUN(test_png_rgba_and_palette);
    RUN(test_png_16bit_keeps_precision);
    RUN(test_bmp_loads);
    RUN(test_jpeg_loads);
    RUN(test_missing_and_empty_files);
    RUN(test_truncated_png);
    RUN(test_random_bytes_and_text);
    RUN(test_absurd_dimensions_refused);
    RUN(test_mask_binarised);
    RUN(test_write_load_round_trip);
    RUN(test_alloc_limits);
    RUN(test_resize_basic_properties);
    RUN(test_resize_matches_torch);
    RUN(test_turbo_colormap);
    RUN(test_colorize_and_overlay);
    return test_summary();
}
