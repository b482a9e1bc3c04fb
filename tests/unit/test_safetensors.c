/* test_safetensors.c: the safetensors reader and writer: round trip, every corrupt-header check
 * with its own message, atomic replacement, half-precision conversions, and interoperability
 * with a Python twin (tests/unit/st_interop.py, numpy + struct + json). */
#include "testlib.h"

#include "drdc/formats/safetensors.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(buf, 1, (size_t)len, f);
    fclose(f);
    return buf;
}

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

/* A safetensors image: 8-byte length, `header` verbatim, `data_len` data bytes (value 0xAB). */
static unsigned char *make_image(const char *header, size_t data_len, size_t *size) {
    size_t h = strlen(header);
    *size = 8 + h + data_len;
    unsigned char *buf = malloc(*size);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    memset(buf + 8 + h, 0xAB, data_len);
    return buf;
}

/* The image must be rejected with DRDC_ERR_FORMAT, a message holding `word`, the source name and
 * (when given) the tensor's name. */
static void expect_corrupt(const char *header, size_t data_len, const char *word, const char *tensor) {
    size_t size;
    unsigned char *buf = make_image(header, data_len, &size);
    drdc_st_file *f = (drdc_st_file *)1;
    CHECK_ERR(drdc_st_parse(&f, buf, size, "case.st"), DRDC_ERR_FORMAT, word);
    CHECK(f == NULL);
    CHECK(tl_contains(drdc_last_error(), "case.st"));
    if (tensor) {
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", tensor);
        CHECK(tl_contains(drdc_last_error(), quoted));
    }
    if (f && f != (drdc_st_file *)1) drdc_st_close(f);
    free(buf);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_round_trip(void) {
    const char *dir = test_tmpdir("st_round_trip");
    char path[1200];
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);

    float w[6] = {0.5f, -1.25f, 3.0f, 1e-20f, -0.0f, 7.75f};
    uint16_t half[5];
    float half_src[5] = {1.0f, -2.5f, 65504.0f, 0.000061035156f, 0.1f};
    for (int i = 0; i < 5; i++) half[i] = drdc_st_f32_to_f16(half_src[i]);
    uint16_t bf[4];
    float bf_src[4] = {1.0f, -0.5f, 3.0e38f, 0.15625f};
    for (int i = 0; i < 4; i++) bf[i] = drdc_st_f32_to_bf16(bf_src[i]);
    int64_t ids[3] = {-7, 0, (int64_t)1 << 40};
    double dbl[1] = {3.141592653589793};
    unsigned char flag = 1;

    drdc_st_writer *wr;
    CHECK_OK(drdc_st_writer_new(&wr));
    int64_t s23[2] = {2, 3}, s5[1] = {5}, s22[2] = {2, 2}, s3[1] = {3}, s1[1] = {1}, s40[2] = {4, 0};
    CHECK_OK(drdc_st_writer_add(wr, "enc.weight", DRDC_ST_F32, 2, s23, w, sizeof w));
    CHECK_OK(drdc_st_writer_add(wr, "half", DRDC_ST_F16, 1, s5, half, sizeof half));
    CHECK_OK(drdc_st_writer_add_borrowed(wr, "bf", DRDC_ST_BF16, 2, s22, bf, sizeof bf));
    CHECK_OK(drdc_st_writer_add(wr, "ids", DRDC_ST_I64, 1, s3, ids, sizeof ids));
    CHECK_OK(drdc_st_writer_add(wr, "flag", DRDC_ST_BOOL, 0, NULL, &flag, 1));
    CHECK_OK(drdc_st_writer_add(wr, "pi", DRDC_ST_F64, 1, s1, dbl, sizeof dbl));
    CHECK_OK(drdc_st_writer_add(wr, "empty", DRDC_ST_U8, 2, s40, NULL, 0));
    CHECK_OK(drdc_st_writer_set_meta(wr, "format", "drdc"));
    CHECK_OK(drdc_st_writer_set_meta(wr, "step", "1"));
    CHECK_OK(drdc_st_writer_set_meta(wr, "step", "12")); /* replaces */
    CHECK_OK(drdc_st_writer_set_meta(wr, "quote", "a \"b\"\n\\c"));
    w[0] = 99.0f; /* the writer copied w */
    CHECK_OK(drdc_st_writer_write(wr, path));
    drdc_st_writer_free(wr);

    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, path));
    if (!f) return;
    CHECK(drdc_st_count(f) == 7);
    CHECK(strcmp(drdc_st_source(f), path) == 0);

    const drdc_st_tensor *t = drdc_st_find(f, "enc.weight");
    CHECK(t && t->dtype == DRDC_ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    if (t) {
        CHECK(t->nbytes == 24 && t->numel == 6);
        CHECK(((const float *)t->data)[0] == 0.5f); /* the value at add time, not the later 99 */
        CHECK(memcmp((const float *)t->data + 1, w + 1, 5 * sizeof(float)) == 0);
        CHECK(((uintptr_t)t->data) % 4 == 0);
    }
    t = drdc_st_find(f, "half");
    CHECK(t && t->dtype == DRDC_ST_F16 && t->ndim == 1 && t->shape[0] == 5 && t->nbytes == 10);
    if (t) {
        CHECK(memcmp(t->data, half, sizeof half) == 0);
        float out[5];
        CHECK_OK(drdc_st_to_f32(t, out, 5));
        CHECK(out[0] == 1.0f && out[1] == -2.5f && out[2] == 65504.0f);
        CHECK_NEAR(out[3], 0.000061035156, 1e-12);
        CHECK_NEAR(out[4], 0.1, 1e-4);
        CHECK_ERR(drdc_st_to_f32(t, out, 4), DRDC_ERR_INPUT, "half");
    }
    t = drdc_st_find(f, "bf");
    CHECK(t && t->dtype == DRDC_ST_BF16 && t->ndim == 2 && t->nbytes == 8);
    if (t) {
        float out[4];
        CHECK_OK(drdc_st_to_f32(t, out, 4));
        CHECK(out[0] == 1.0f && out[1] == -0.5f && out[3] == 0.15625f);
        CHECK(fabsf(out[2] - 3.0e38f) / 3.0e38f < 0.01f);
    }
    t = drdc_st_find(f, "ids");
    CHECK(t && t->dtype == DRDC_ST_I64 && t->nbytes == 24);
    if (t) {
        CHECK(memcmp(t->data, ids, sizeof ids) == 0);
        float out[3];
        CHECK_OK(drdc_st_to_f32(t, out, 3));
        CHECK(out[0] == -7.0f && out[2] == 1099511627776.0f);
    }
    t = drdc_st_find(f, "flag");
    CHECK(t && t->dtype == DRDC_ST_BOOL && t->ndim == 0 && t->numel == 1 && t->nbytes == 1);
    if (t) CHECK(*(const unsigned char *)t->data == 1);
    t = drdc_st_find(f, "pi");
    if (t) {
        float out[1];
        CHECK_OK(drdc_st_to_f32(t, out, 1));
        CHECK(out[0] == (float)3.141592653589793);
    }
    CHECK(t && t->dtype == DRDC_ST_F64);
    t = drdc_st_find(f, "empty");
    CHECK(t && t->dtype == DRDC_ST_U8 && t->ndim == 2 && t->shape[1] == 0 && t->nbytes == 0 && t->numel == 0);
    CHECK(drdc_st_find(f, "nope") == NULL);
    CHECK_ERR(drdc_st_get(f, "nope", &t), DRDC_ERR_FORMAT, "no tensor 'nope'");

    /* shape expectation */
    int64_t want_ok[2] = {2, -1}, want_bad[2] = {3, 2};
    CHECK_OK(drdc_st_expect(f, "enc.weight", 2, want_ok, &t));
    CHECK_ERR(drdc_st_expect(f, "enc.weight", 2, want_bad, NULL), DRDC_ERR_FORMAT, "expected [3, 2]");
    CHECK(tl_contains(drdc_last_error(), "[2, 3]"));

    /* metadata */
    CHECK(drdc_st_meta_count(f) == 3);
    CHECK(drdc_st_meta(f, "format") && strcmp(drdc_st_meta(f, "format"), "drdc") == 0);
    CHECK(drdc_st_meta(f, "step") && strcmp(drdc_st_meta(f, "step"), "12") == 0);
    CHECK(drdc_st_meta(f, "quote") && strcmp(drdc_st_meta(f, "quote"), "a \"b\"\n\\c") == 0);
    CHECK(drdc_st_meta(f, "missing") == NULL);
    const char *k, *v;
    CHECK(drdc_st_meta_at(f, 0, &k, &v) == 0 && strcmp(k, "format") == 0);
    CHECK(drdc_st_meta_at(f, 3, &k, &v) == -1);

    /* layout: iteration order is data order, largest element size first, each tensor aligned
     * to its element size, no holes, data area starts at a multiple of 8 */
    size_t expect_off = 0, prev_es = 8;
    for (int i = 0; i < drdc_st_count(f); i++) {
        const drdc_st_tensor *ti = drdc_st_at(f, i);
        size_t es = drdc_st_dtype_size(ti->dtype);
        CHECK(es <= prev_es);
        CHECK(ti->offset == expect_off);
        CHECK(ti->offset % es == 0);
        expect_off += ti->nbytes;
        prev_es = es;
    }
    CHECK(drdc_st_at(f, 7) == NULL && drdc_st_at(f, -1) == NULL);
    drdc_st_close(f);

    size_t n;
    unsigned char *raw = read_all(path, &n);
    if (raw) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | raw[i];
        CHECK(hlen % 8 == 0);
        CHECK(8 + hlen + expect_off == n);
        CHECK(raw[8 + hlen - 1] == ' ' || raw[8 + hlen - 1] == '}');
        free(raw);
    }
}

static void test_half_conversions(void) {
    CHECK(drdc_st_f16_to_f32(0x3C00) == 1.0f);
    CHECK(drdc_st_f16_to_f32(0xC000) == -2.0f);
    CHECK(drdc_st_f16_to_f32(0x7BFF) == 65504.0f);
    CHECK(drdc_st_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(drdc_st_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    CHECK(isinf(drdc_st_f16_to_f32(0x7C00)) && drdc_st_f16_to_f32(0xFC00) < 0);
    CHECK(isnan(drdc_st_f16_to_f32(0x7E00)));
    CHECK(drdc_st_f32_to_f16(1.0f) == 0x3C00);
    CHECK(drdc_st_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3C00);     /* tie -> even */
    CHECK(drdc_st_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3C02); /* tie -> even (up) */
    CHECK(drdc_st_f32_to_f16(65520.0f) == 0x7C00);                     /* rounds to infinity */
    CHECK(drdc_st_f32_to_f16(65519.0f) == 0x7BFF);
    CHECK(drdc_st_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);            /* tie -> even zero */
    CHECK(drdc_st_f32_to_f16(ldexpf(1.5f, -25)) == 0x0001);
    CHECK(drdc_st_f32_to_f16(-0.0f) == 0x8000);
    CHECK((drdc_st_f32_to_f16(NAN) & 0x7C00) == 0x7C00 && (drdc_st_f32_to_f16(NAN) & 0x3FF) != 0);
    /* every finite half survives half -> float -> half */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue; /* NaN payloads */
        if (drdc_st_f32_to_f16(drdc_st_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0);
    CHECK(drdc_st_f32_to_bf16(1.0f) == 0x3F80);
    CHECK(drdc_st_bf16_to_f32(0xC000) == -2.0f);
    CHECK(drdc_st_f32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3F80);     /* tie -> even */
    CHECK(drdc_st_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)) == 0x3F82);
    CHECK(isnan(drdc_st_bf16_to_f32(drdc_st_f32_to_bf16(NAN))));
}

static void test_dtype_names(void) {
    const char *names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL"};
    size_t sizes[] = {4, 2, 2, 8, 8, 4, 1, 1};
    for (int i = 0; i < 8; i++) {
        drdc_st_dtype d;
        CHECK(drdc_st_dtype_from_name(names[i], &d) == 0);
        CHECK(strcmp(drdc_st_dtype_name(d), names[i]) == 0);
        CHECK(drdc_st_dtype_size(d) == sizes[i]);
    }
    drdc_st_dtype d;
    CHECK(drdc_st_dtype_from_name("F8", &d) == -1);
    CHECK(drdc_st_dtype_from_name("f32", &d) == -1);
}

static void test_corrupt_short_and_header_length(void) {
    unsigned char tiny[5] = {1, 0, 0, 0, 0};
    drdc_st_file *f = NULL;
    CHECK_ERR(drdc_st_parse(&f, tiny, sizeof tiny, "case.st"), DRDC_ERR_FORMAT, "shorter than");
    CHECK(tl_contains(drdc_last_error(), "case.st"));

    /* header length 100, but only 10 bytes follow */
    unsigned char past[18] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
    CHECK_ERR(drdc_st_parse(&f, past, sizeof past, "case.st"), DRDC_ERR_FORMAT, "past the end");
    /* header length of 2^40: absurd, said before looking at the file size */
    unsigned char huge[16] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    CHECK_ERR(drdc_st_parse(&f, huge, sizeof huge, "case.st"), DRDC_ERR_FORMAT, "absurd");
    CHECK(f == NULL);
}

static void test_corrupt_json(void) {
    expect_corrupt("{\"a\": {\"dtype\": \"F32\"", 0, "not valid JSON", NULL);
    expect_corrupt("[1, 2]  ", 0, "not a JSON object", NULL);
    expect_corrupt("{}  xyz ", 0, "trailing bytes", NULL);
}

static void test_corrupt_entries(void) {
    expect_corrupt("{\"w\": 5}", 0, "entry is not an object", "w");
    expect_corrupt("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "missing \"dtype\"", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, "missing \"shape\"", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, "missing \"data_offsets\"", "w");
    expect_corrupt("{\"w\": {\"dtype\": 3, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                   "\"dtype\" is not a string", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4,
                   "\"shape\" is not an array", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
                   "not an array of 2", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, \"4\"]}}", 4,
                   "not an array of 2", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1,
                   "unknown dtype 'F8'", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", 1,
                   "rank 9", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -3], \"data_offsets\": [0, 4]}}", 4,
                   "negative dimension", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 4]}}", 4,
                   "not an integer", "w");
}

static void test_corrupt_offsets(void) {
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [100], \"data_offsets\": [0, 400]}}", 16,
                   "outside the data area", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 16,
                   "begin 8 > end 4", "w");
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 16,
                   "size mismatch", "w");
    /* 2^31 cubed overflows 64 bits: must not wrap around to a small number */
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [2147483648, 2147483648, 2147483648], "
                   "\"data_offsets\": [0, 0]}}", 16, "overflows", "w");
    /* 2^62 elements of 4 bytes: the element count fits, the byte size does not */
    expect_corrupt("{\"w\": {\"dtype\": \"F32\", \"shape\": [2147483648, 2147483648], \"data_offsets\": [0, 0]}}",
                   16, "byte size of the shape overflows", "w");
    expect_corrupt("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                   " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 16, "overlap", "a");
    CHECK(tl_contains(drdc_last_error(), "'b'"));
}

static void test_corrupt_names_and_metadata(void) {
    expect_corrupt("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                   " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
                   "duplicate tensor name", "a");
    expect_corrupt("{\"__metadata__\": \"x\"}", 0, "__metadata__ is not an object", NULL);
    expect_corrupt("{\"__metadata__\": {\"k\": 1}}", 0, "not a string", "k");
    expect_corrupt("{\"__metadata__\": {}, \"__metadata__\": {}}", 0, "duplicate name '__metadata__'", NULL);
    expect_corrupt("{\"__metadata__\": {\"k\": \"1\", \"k\": \"2\"}}", 0, "duplicate key", "k");
}

static void test_valid_edge_cases(void) {
    /* empty tensors may share an offset; a scalar has shape []; unknown entry fields are ignored */
    const char *h = "{\"__metadata__\": {\"a\": \"b\"}, \"s\": {\"dtype\": \"F32\", \"shape\": [], "
                    "\"data_offsets\": [0, 4], \"extra\": 1}, \"e1\": {\"dtype\": \"F32\", \"shape\": [0, 5], "
                    "\"data_offsets\": [4, 4]}, \"e2\": {\"dtype\": \"I64\", \"shape\": [0], \"data_offsets\": [4, 4]}}";
    size_t size;
    unsigned char *buf = make_image(h, 4, &size);
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_parse(&f, buf, size, NULL));
    if (f) {
        CHECK(drdc_st_count(f) == 3);
        CHECK(strcmp(drdc_st_at(f, 0)->name, "s") == 0 && drdc_st_at(f, 0)->numel == 1);
        CHECK(strcmp(drdc_st_at(f, 2)->name, "e2") == 0);
        CHECK(strcmp(drdc_st_source(f), "<memory>") == 0);
        drdc_st_close(f);
    }
    free(buf);
    /* an empty header object is a valid empty file */
    buf = make_image("{}      ", 0, &size);
    CHECK_OK(drdc_st_parse(&f, buf, size, "empty.st"));
    if (f) CHECK(drdc_st_count(f) == 0 && drdc_st_meta_count(f) == 0);
    drdc_st_close(f);
    free(buf);
}

static void test_open_errors(void) {
    const char *dir = test_tmpdir("st_open_errors");
    char path[1200];
    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    drdc_st_file *f = NULL;
    CHECK_ERR(drdc_st_open(&f, path), DRDC_ERR_INPUT, "missing.safetensors");
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    size_t size;
    unsigned char *buf = make_image("{\"w\": {\"dtype\": \"Q4\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1, &size);
    CHECK(test_write_file(path, buf, size) == 0);
    free(buf);
    CHECK_ERR(drdc_st_open(&f, path), DRDC_ERR_FORMAT, "unknown dtype");
    CHECK(tl_contains(drdc_last_error(), path));
    CHECK(f == NULL);
}

static void test_writer_rejects(void) {
    drdc_st_writer *w;
    CHECK_OK(drdc_st_writer_new(&w));
    float x[4] = {0};
    int64_t s4[1] = {4}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 4}, sneg[1] = {-4};
    CHECK_OK(drdc_st_writer_add(w, "x", DRDC_ST_F32, 1, s4, x, sizeof x));
    CHECK_ERR(drdc_st_writer_add(w, "x", DRDC_ST_F32, 1, s4, x, sizeof x), DRDC_ERR_INPUT, "duplicate tensor name 'x'");
    CHECK_ERR(drdc_st_writer_add(w, "y", DRDC_ST_F32, 1, s4, x, 12), DRDC_ERR_INPUT, "need 16 bytes");
    CHECK_ERR(drdc_st_writer_add(w, "y", DRDC_ST_F32, 9, s9, x, sizeof x), DRDC_ERR_INPUT, "rank 9");
    CHECK_ERR(drdc_st_writer_add(w, "y", DRDC_ST_F32, 1, sneg, x, sizeof x), DRDC_ERR_INPUT, "negative");
    CHECK_ERR(drdc_st_writer_add(w, "__metadata__", DRDC_ST_F32, 1, s4, x, sizeof x), DRDC_ERR_INPUT, "reserved");
    CHECK_ERR(drdc_st_writer_add(w, "y", (drdc_st_dtype)99, 1, s4, x, sizeof x), DRDC_ERR_INPUT, "unknown dtype");
    drdc_st_writer_free(w);
}

static void test_atomic_write(void) {
    const char *dir0 = test_tmpdir("st_atomic");
    char dir[1100], path[1200], missing[1200];
    snprintf(dir, sizeof dir, "%s", dir0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(missing, sizeof missing, "%s/no/such/folder/model.safetensors", dir);

    drdc_st_writer *w;
    CHECK_OK(drdc_st_writer_new(&w));
    float big[1000];
    for (int i = 0; i < 1000; i++) big[i] = (float)i;
    int64_t s1000[1] = {1000};
    CHECK_OK(drdc_st_writer_add_borrowed(w, "big", DRDC_ST_F32, 1, s1000, big, sizeof big));
    CHECK_OK(drdc_st_writer_set_meta(w, "version", "old"));

    /* a path in a missing folder fails and leaves nothing behind */
    CHECK_ERR(drdc_st_writer_write(w, missing), DRDC_ERR_IO, "model.safetensors");
    CHECK(count_entries(dir) == 0);

    CHECK_OK(drdc_st_writer_write(w, path));
    drdc_st_writer_free(w);

    /* an existing file is replaced whole by a smaller one */
    CHECK_OK(drdc_st_writer_new(&w));
    float small[2] = {1.0f, 2.0f};
    int64_t s2[1] = {2};
    CHECK_OK(drdc_st_writer_add(w, "small", DRDC_ST_F32, 1, s2, small, sizeof small));
    CHECK_OK(drdc_st_writer_set_meta(w, "version", "new"));
    CHECK_OK(drdc_st_writer_write(w, path));
    CHECK(count_entries(dir) == 1); /* no temporary file left */
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, path));
    if (f) {
        CHECK(drdc_st_count(f) == 1 && drdc_st_find(f, "big") == NULL && drdc_st_find(f, "small") != NULL);
        CHECK(strcmp(drdc_st_meta(f, "version"), "new") == 0);
        drdc_st_close(f);
    }
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size < 200);

    /* a failing rename (the target is a folder) removes the temporary file, keeps the target */
    char target[1300];
    snprintf(target, sizeof target, "%s/isdir.safetensors", dir);
    CHECK(test_system("mkdir -p '%s/isdir.safetensors/keep'", dir) == 0);
    CHECK_ERR(drdc_st_writer_write(w, target), DRDC_ERR_IO, "isdir.safetensors");
    CHECK(count_entries(dir) == 2);
    CHECK(count_entries(target) == 1);
    drdc_st_writer_free(w);
}

static const char *python(void) {
    const char *p = getenv("DRDC_PYTHON");
    return (p && *p) ? p : "/usr/bin/python3";
}

static void test_python_interop(void) {
    if (test_system("'%s' -c 'import numpy' >/dev/null 2>&1", python()) != 0) {
        test_skip_part("Python interop: %s cannot import numpy", python());
        return;
    }
    const char *dir0 = test_tmpdir("st_interop");
    char dir[1100], from_py[1200], from_c[1200];
    snprintf(dir, sizeof dir, "%s", dir0);
    snprintf(from_py, sizeof from_py, "%s/from_python.safetensors", dir);
    snprintf(from_c, sizeof from_c, "%s/from_c.safetensors", dir);
    const char *script_dir = test_source_dir();

    /* Python writes, C reads */
    CHECK(test_system("'%s' '%s/tests/unit/st_interop.py' write '%s'", python(), script_dir, from_py) == 0);
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, from_py));
    if (f) {
        CHECK(drdc_st_count(f) == 3);
        const drdc_st_tensor *t = drdc_st_find(f, "weight");
        CHECK(t && t->dtype == DRDC_ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
        if (t) {
            float v[6];
            CHECK_OK(drdc_st_to_f32(t, v, 6));
            for (int i = 0; i < 6; i++) CHECK(v[i] == i * 0.25f - 0.5f);
        }
        t = drdc_st_find(f, "half");
        CHECK(t && t->dtype == DRDC_ST_F16 && t->ndim == 1 && t->shape[0] == 4);
        if (t) {
            float v[4];
            CHECK_OK(drdc_st_to_f32(t, v, 4));
            CHECK(v[0] == 1.0f && v[1] == -2.5f && v[2] == 65504.0f && v[3] == ldexpf(1.0f, -24));
        }
        t = drdc_st_find(f, "index");
        CHECK(t && t->dtype == DRDC_ST_I64 && t->shape[0] == 3);
        if (t) {
            int64_t v[3];
            memcpy(v, t->data, sizeof v);
            CHECK(v[0] == -7 && v[1] == 0 && v[2] == ((int64_t)1 << 40) + 3);
        }
        CHECK(drdc_st_meta(f, "format") && strcmp(drdc_st_meta(f, "format"), "st_interop") == 0);
        CHECK(drdc_st_meta(f, "answer") && strcmp(drdc_st_meta(f, "answer"), "42") == 0);
        drdc_st_close(f);
    }

    /* C writes, Python reads and checks (exit code) */
    drdc_st_writer *w;
    CHECK_OK(drdc_st_writer_new(&w));
    float weights[4] = {1.5f, -2.0f, 3.25f, 1e-3f};
    unsigned char mask[3] = {1, 0, 1};
    uint16_t bf[2] = {drdc_st_f32_to_bf16(1.0f), drdc_st_f32_to_bf16(-0.5f)};
    int64_t step = 123456789012LL;
    int64_t s22[2] = {2, 2}, s3[1] = {3}, s2[1] = {2};
    CHECK_OK(drdc_st_writer_add(w, "mask", DRDC_ST_BOOL, 1, s3, mask, sizeof mask));
    CHECK_OK(drdc_st_writer_add(w, "weights", DRDC_ST_F32, 2, s22, weights, sizeof weights));
    CHECK_OK(drdc_st_writer_add(w, "bf", DRDC_ST_BF16, 1, s2, bf, sizeof bf));
    CHECK_OK(drdc_st_writer_add(w, "step", DRDC_ST_I64, 0, NULL, &step, sizeof step));
    CHECK_OK(drdc_st_writer_set_meta(w, "config", "{\"a\": 1}"));
    CHECK_OK(drdc_st_writer_set_meta(w, "unicode", "gr\xc3\xbc\xc3\x9f" "e"));
    CHECK_OK(drdc_st_writer_write(w, from_c));
    drdc_st_writer_free(w);
    CHECK(test_system("'%s' '%s/tests/unit/st_interop.py' check '%s'", python(), script_dir, from_c) == 0);
}

static void test_real_weights_if_present(void) {
    const char *shared = test_shared_dir();
    if (!shared) {
        test_skip_part("../shared absent: the real mobilenet_v2 file is not checked");
        return;
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/weights/mobilenet_v2_1.0_224.safetensors", shared);
    struct stat sb;
    if (stat(path, &sb) != 0) return;
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, path));
    if (!f) return;
    CHECK(drdc_st_count(f) == 106); /* as ../shared/weights/README.md lists */
    int64_t stem[4] = {32, 3, 3, 3};
    CHECK_OK(drdc_st_expect(f, "features.0.0.weight", 4, stem, NULL));
    drdc_st_close(f);
}

int main(void) {
    RUN(test_round_trip);
    RUN(test_half_conversions);
    RUN(test_dtype_names);
    RUN(test_corrupt_short_and_header_length);
    RUN(test_corrupt_json);
    RUN(test_corrupt_entries);
    RUN(test_corrupt_offsets);
    RUN(test_corrupt_names_and_metadata);
    RUN(test_valid_edge_cases);
    RUN(test_open_errors);
    RUN(test_writer_rejects);
    RUN(test_atomic_write);
    RUN(test_python_interop);
    RUN(test_real_weights_if_present);
    return test_summary();
}
