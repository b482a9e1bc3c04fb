/* test_pth.c: the .pth importer (src/formats/pth.c) against files written by real torch
 * (tests/unit/pth_make.py run with $DRDC_PYTHON): zip, ZIP64 and legacy formats, every dtype,
 * views, empty and 0-d tensors, nested dicts, a conv net's state dict; conversion to safetensors;
 * and corrupt inputs (truncated at every length, flipped bytes, wrong magic, unknown globals,
 * hand-made hostile pickles), each of which must be an error naming the file, never a crash. */
#include "testlib.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/pth.h"
#include "drdc/formats/safetensors.h"

static char g_dir[1024];   /* pth_make.py's output folder; "" when the files could not be made */

static void make_files(void) {
    const char *py = getenv("DRDC_PYTHON");
    if (!py || !*py) test_skip("DRDC_PYTHON is not set (ctest sets it to a python3 with torch)");
    snprintf(g_dir, sizeof g_dir, "%s", test_tmpdir("pth"));
    int rc = test_system("'%s' '%s/tests/unit/pth_make.py' '%s'", py, test_source_dir(), g_dir);
    if (rc == 77) test_skip("pth_make.py: torch is not importable by $DRDC_PYTHON");
    if (rc != 0) {
        fprintf(stderr, "pth_make.py failed with status %d\n", rc);
        exit(1);
    }
}

static char *path_of(const char *name) {
    static char buf[2][1400];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* ---- the expected tensors (NAME.expect) ------------------------------------------------------ */

typedef struct {
    char name[256], dtype[8];
    int ndim;
    int64_t shape[DRDC_ST_MAX_RANK];
    unsigned char *data;
    size_t nbytes;
} expect_t;

typedef struct { int skipped, n; expect_t e[64]; } expect_set;

static int load_expect(const char *pth_name, expect_set *s) {
    memset(s, 0, sizeof *s);
    char fname[300];
    snprintf(fname, sizeof fname, "%s.expect", pth_name);
    FILE *f = fopen(path_of(fname), "r");
    if (!f) return -1;
    if (fscanf(f, " skipped %d", &s->skipped) != 1) { fclose(f); return -1; }
    while (s->n < 64) {
        expect_t *e = &s->e[s->n];
        if (fscanf(f, " %255s %7s %d", e->name, e->dtype, &e->ndim) != 3) break;
        for (int i = 0; i < e->ndim; i++) if (fscanf(f, " %lld", (long long *)&e->shape[i]) != 1) { fclose(f); return -1; }
        char bin[300];
        if (fscanf(f, " %299s", bin) != 1) { fclose(f); return -1; }
        e->data = read_all(path_of(bin), &e->nbytes);
        if (!e->data) { fclose(f); return -1; }
        s->n++;
    }
    fclose(f);
    return 0;
}

static void free_expect(expect_set *s) {
    for (int i = 0; i < s->n; i++) free(s->e[i].data);
}

/* Every tensor equal to the expectation: name (in order), dtype, shape, bytes. */
static void check_against(const drdc_pth_file *f, const char *pth_name) {
    expect_set s;
    CHECK(load_expect(pth_name, &s) == 0);
    CHECK(s.n > 0);
    CHECK(drdc_pth_count(f) == s.n);
    CHECK(drdc_pth_skipped(f) == s.skipped);
    for (int i = 0; i < s.n && i < drdc_pth_count(f); i++) {
        const expect_t *e = &s.e[i];
        const drdc_pth_tensor *t = drdc_pth_at(f, i);
        int ok = strcmp(t->name, e->name) == 0 && strcmp(drdc_st_dtype_name(t->dtype), e->dtype) == 0 &&
                 t->ndim == e->ndim && t->nbytes == e->nbytes && t->data != NULL &&
                 (e->nbytes == 0 || memcmp(t->data, e->data, e->nbytes) == 0);
        for (int d = 0; d < e->ndim; d++) ok = ok && t->shape[d] == e->shape[d];
        if (!ok) fprintf(stderr, "  %s: tensor %d '%s' (%s, rank %d, %zu bytes) differs from expected '%s' (%s, rank %d, %zu bytes)\n",
                         pth_name, i, t->name, drdc_st_dtype_name(t->dtype), t->ndim, t->nbytes, e->name, e->dtype, e->ndim, e->nbytes);
        CHECK(ok);
        CHECK(drdc_pth_find(f, e->name) == t);
    }
    CHECK(drdc_pth_find(f, "no.such.tensor") == NULL);
    free_expect(&s);
}

static void load_and_check(const char *name, drdc_pth_format fmt) {
    drdc_pth_file *f = NULL;
    CHECK_OK(drdc_pth_load(&f, path_of(name)));
    if (!f) return;
    CHECK(drdc_pth_get_format(f) == fmt);
    check_against(f, name);
    drdc_pth_free(f);
}

static void test_zip_format(void) { load_and_check("zip.pth", DRDC_PTH_ZIP); }
static void test_legacy_format(void) { load_and_check("legacy.pth", DRDC_PTH_LEGACY); }
static void test_zip64_directory(void) { load_and_check("zip64.pth", DRDC_PTH_ZIP); }
static void test_conv_net_legacy(void) { load_and_check("net_legacy.pth", DRDC_PTH_LEGACY); }

/* A view gathered from a shared storage: base_t is base transposed (values checked by name). */
static void test_views_share_storage(void) {
    drdc_pth_file *f = NULL;
    CHECK_OK(drdc_pth_load(&f, path_of("legacy.pth")));
    if (!f) return;
    const drdc_pth_tensor *b = drdc_pth_find(f, "state_dict.base"), *bt = drdc_pth_find(f, "state_dict.base_t");
    CHECK(b && bt);
    if (b && bt) {
        const float *x = b->data, *y = bt->data;
        int same = 1;
        for (int r = 0; r < 3; r++) for (int c = 0; c < 4; c++) same = same && x[r * 4 + c] == y[c * 3 + r];
        CHECK(same);
    }
    drdc_pth_free(f);
}

static void test_to_safetensors(void) {
    char out[1300];
    snprintf(out, sizeof out, "%s/legacy.safetensors", g_dir);
    CHECK_OK(drdc_pth_to_safetensors(path_of("legacy.pth"), out, NULL, NULL));
    drdc_st_file *sf = NULL;
    CHECK_OK(drdc_st_open(&sf, out));
    if (!sf) return;
    expect_set s;
    CHECK(load_expect("legacy.pth", &s) == 0);
    CHECK(drdc_st_count(sf) == s.n);
    for (int i = 0; i < s.n; i++) {
        const drdc_st_tensor *t = drdc_st_find(sf, s.e[i].name);
        CHECK(t != NULL);
        if (!t) continue;
        int ok = strcmp(drdc_st_dtype_name(t->dtype), s.e[i].dtype) == 0 && t->ndim == s.e[i].ndim &&
                 t->nbytes == s.e[i].nbytes && (t->nbytes == 0 || memcmp(t->data, s.e[i].data, t->nbytes) == 0);
        for (int d = 0; d < t->ndim; d++) ok = ok && t->shape[d] == s.e[i].shape[d];
        if (!ok) fprintf(stderr, "  safetensors tensor '%s' differs\n", s.e[i].name);
        CHECK(ok);
    }
    const char *m = drdc_st_meta(sf, "pth_format");
    CHECK(m && strcmp(m, "legacy") == 0);
    m = drdc_st_meta(sf, "converted_from");
    CHECK(m && strcmp(m, "legacy.pth") == 0);
    free_expect(&s);
    drdc_st_close(sf);
}

/* ---- refused files written by torch ---------------------------------------------------------- */

static void expect_load_error(const char *name, const char *needle) {
    drdc_pth_file *f = NULL;
    CHECK_ERR(drdc_pth_load(&f, path_of(name)), DRDC_ERR_FORMAT, needle);
    CHECK(tl_contains(drdc_last_error(), name));
    CHECK(f == NULL);
}

static void test_deflate_refused(void) { expect_load_error("deflate.pth", "DEFLATE"); }
static void test_unknown_global_refused(void) { expect_load_error("unknown_global.pth", "argparse.Namespace"); }
static void test_duplicate_names_refused(void) { expect_load_error("dup.pth", "'a.b'"); }

static void test_missing_file(void) {
    drdc_pth_file *f = NULL;
    CHECK_ERR(drdc_pth_load(&f, path_of("nope.pth")), DRDC_ERR_INPUT, "nope.pth");
}

/* ---- corrupt copies of real files ------------------------------------------------------------ */

/* Every strict prefix must be a format error naming the source. */
static void truncate_all(const char *name) {
    size_t len;
    unsigned char *b = read_all(path_of(name), &len);
    CHECK(b != NULL);
    if (!b) return;
    int bad = 0;
    for (size_t n = 0; n < len; n++) {
        drdc_pth_file *f = NULL;
        drdc_status st = drdc_pth_parse(&f, b, n, "cut.pth");
        if (st != DRDC_ERR_FORMAT || !tl_contains(drdc_last_error(), "cut.pth") || f) {
            if (bad++ < 5) fprintf(stderr, "  %s cut to %zu bytes: %s: %s\n", name, n, drdc_status_name(st), drdc_last_error());
            drdc_pth_free(f);
        }
    }
    CHECK(bad == 0);
    free(b);
}

static void test_truncated_legacy(void) { truncate_all("legacy.pth"); }
static void test_truncated_zip(void) { truncate_all("zip.pth"); }

/* Each byte flipped (two ways): either a clean load or an error naming the file; never a crash
 * (run under valgrind/ASan to see the "never"). Some flips (a digit of a float) still load. */
static void test_flipped_bytes_legacy(void) {
    size_t len;
    unsigned char *b = read_all(path_of("legacy.pth"), &len);
    CHECK(b != NULL);
    if (!b) return;
    int errors = 0, unnamed = 0;
    static const unsigned char masks[] = {0xFF, 0x01, 0x80};
    for (size_t i = 0; i < len; i++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            unsigned char *c = malloc(len);
            memcpy(c, b, len);
            c[i] ^= masks[m];
            drdc_pth_file *f = NULL;
            drdc_status st = drdc_pth_parse(&f, c, len, "flip.pth");
            if (st) {
                errors++;
                if (!tl_contains(drdc_last_error(), "flip.pth") && unnamed++ < 5)
                    fprintf(stderr, "  flip at %zu: message lacks the file name: %s\n", i, drdc_last_error());
                CHECK(f == NULL);
            } else {
                for (int k = 0; k < drdc_pth_count(f); k++) CHECK(drdc_pth_at(f, k)->data != NULL);
            }
            drdc_pth_free(f);
            free(c);
        }
    }
    CHECK(unnamed == 0);
    CHECK(errors > (int)len);  /* most flips of a pickle-heavy file are errors */
    free(b);
}

/* A flipped byte in a zip entry is caught by its CRC-32. */
static void test_flipped_byte_zip_crc(void) {
    size_t len;
    unsigned char *b = read_all(path_of("zip.pth"), &len);
    CHECK(b != NULL);
    if (!b) return;
    /* the data.pkl entry starts right after the first local header */
    size_t data_off = 30 + (size_t)(b[26] | (b[27] << 8)) + (size_t)(b[28] | (b[29] << 8));
    b[data_off + 20] ^= 0x01;
    drdc_pth_file *f = NULL;
    CHECK_ERR(drdc_pth_parse(&f, b, len, "crc.pth"), DRDC_ERR_FORMAT, "CRC");
    CHECK(tl_contains(drdc_last_error(), "crc.pth"));
    free(b);
}

static void test_wrong_magic(void) {
    size_t len;
    unsigned char *b = read_all(path_of("legacy.pth"), &len);
    CHECK(b != NULL);
    if (!b) return;
    b[6] ^= 0x55;  /* inside the 10 magic bytes (after PROTO 2, LONG1 10) */
    drdc_pth_file *f = NULL;
    CHECK_ERR(drdc_pth_parse(&f, b, len, "magic.pth"), DRDC_ERR_FORMAT, "magic");
    CHECK(tl_contains(drdc_last_error(), "magic.pth"));
    free(b);
    CHECK_ERR(drdc_pth_parse(&f, "hello world, not a model", 24, "text.pth"), DRDC_ERR_FORMAT, "not a PyTorch file");
    unsigned char tar[1024] = {0};
    memcpy(tar + 257, "ustar", 5);
    CHECK_ERR(drdc_pth_parse(&f, tar, sizeof tar, "old.tar.pth"), DRDC_ERR_FORMAT, "tar");
    CHECK_ERR(drdc_pth_parse(&f, "", 0, "empty.pth"), DRDC_ERR_FORMAT, "empty.pth");
}

/* ---- hand-made legacy files ------------------------------------------------------------------ */

typedef struct { unsigned char b[1 << 16]; size_t n; } buf_t;

static void put(buf_t *b, const void *p, size_t n) {
    if (b->n + n <= sizeof b->b) { memcpy(b->b + b->n, p, n); b->n += n; }
}
static void op(buf_t *b, unsigned char o) { put(b, &o, 1); }
static void ustr(buf_t *b, const char *s) {   /* BINUNICODE */
    uint32_t n = (uint32_t)strlen(s);
    unsigned char h[5] = {'X', (unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16), (unsigned char)(n >> 24)};
    put(b, h, 5);
    put(b, s, n);
}
static void k1(buf_t *b, unsigned v) { op(b, 'K'); op(b, (unsigned char)v); }
static void jint(buf_t *b, int32_t v) { op(b, 'J'); uint32_t u = (uint32_t)v; for (int i = 0; i < 4; i++) op(b, (unsigned char)(u >> (8 * i))); }
static void glob(buf_t *b, const char *mod, const char *name) { op(b, 'c'); put(b, mod, strlen(mod)); op(b, '\n'); put(b, name, strlen(name)); op(b, '\n'); }

/* A legacy file around `main`: magic, protocol, sys_info, main, keys ["k"] (or none), then the
 * storage "k" holding `count` floats (values 0, 1, 2, ...), of which `present` are written. */
static void legacy_file(buf_t *out, const buf_t *main, int with_storage, uint64_t count, uint64_t present) {
    static const unsigned char head[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.',
                                         0x80, 0x02, 'M', 0xe9, 0x03, '.', 0x80, 0x02, '}', '.'};
    out->n = 0;
    put(out, head, sizeof head);
    put(out, main->b, main->n);
    op(out, 0x80); op(out, 2); op(out, ']');
    if (with_storage) { op(out, '('); ustr(out, "k"); op(out, 'e'); }
    op(out, '.');
    if (with_storage) {
        unsigned char c[8];
        for (int i = 0; i < 8; i++) c[i] = (unsigned char)(count >> (8 * i));
        put(out, c, 8);
        for (uint64_t i = 0; i < present; i++) { float v = (float)i; put(out, &v, 4); }
    }
}

/* {"t": tensor over storage "k" of `numel` floats, offset, size (d0[, d1]), stride (s0[, s1])} */
static void tensor_pickle(buf_t *m, int numel, int offset, int ndim, const int32_t *size, const int32_t *stride) {
    m->n = 0;
    op(m, 0x80); op(m, 2); op(m, '}'); op(m, '(');
    ustr(m, "t");
    glob(m, "torch._utils", "_rebuild_tensor_v2");
    op(m, '(');
    op(m, '('); ustr(m, "storage"); glob(m, "torch", "FloatStorage"); ustr(m, "k"); ustr(m, "cpu"); jint(m, numel); op(m, 'N'); op(m, 't');
    op(m, 'Q');
    jint(m, offset);
    op(m, '('); for (int i = 0; i < ndim; i++) jint(m, size[i]); op(m, 't');
    op(m, '('); for (int i = 0; i < ndim; i++) jint(m, stride[i]); op(m, 't');
    op(m, 0x89); op(m, '}');
    op(m, 't'); op(m, 'R');
    op(m, 'u'); op(m, '.');
}

static void test_handmade_tensor(void) {
    static buf_t m, f;
    int32_t size[2] = {2, 2}, stride[2] = {1, 2};   /* a transposed 2x2 at offset 1 of 0..5 */
    tensor_pickle(&m, 6, 1, 2, size, stride);
    legacy_file(&f, &m, 1, 6, 6);
    drdc_pth_file *p = NULL;
    CHECK_OK(drdc_pth_parse(&p, f.b, f.n, "hand.pth"));
    if (!p) return;
    const drdc_pth_tensor *t = drdc_pth_find(p, "t");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 2 && t->dtype == DRDC_ST_F32);
    if (t) {
        const float *x = t->data;   /* element [i][j] = storage[1 + i + 2j] */
        CHECK(x[0] == 1 && x[1] == 3 && x[2] == 2 && x[3] == 4);
    }
    drdc_pth_free(p);
}

static void test_handmade_view_out_of_bounds(void) {
    static buf_t m, f;
    int32_t size[1] = {3}, stride[1] = {2};  /* elements 0, 2, 4 of a 4-element storage */
    tensor_pickle(&m, 4, 0, 1, size, stride);
    legacy_file(&f, &m, 1, 4, 4);
    drdc_pth_file *p = NULL;
    CHECK_ERR(drdc_pth_parse(&p, f.b, f.n, "oob.pth"), DRDC_ERR_FORMAT, "tensor 't'");
    CHECK(tl_contains(drdc_last_error(), "oob.pth"));
}

static void test_handmade_storage_size_mismatch(void) {
    static buf_t m, f;
    int32_t size[1] = {4}, stride[1] = {1};
    tensor_pickle(&m, 4, 0, 1, size, stride);
    legacy_file(&f, &m, 1, 3, 3);   /* the data says 3 elements, the pickle 4 */
    drdc_pth_file *p = NULL;
    CHECK_ERR(drdc_pth_parse(&p, f.b, f.n, "count.pth"), DRDC_ERR_FORMAT, "elements in the data");
    legacy_file(&f, &m, 1, 4, 2);   /* 4 announced, 2 present */
    CHECK_ERR(drdc_pth_parse(&p, f.b, f.n, "short.pth"), DRDC_ERR_FORMAT, "truncated");
    CHECK(tl_contains(drdc_last_error(), "short.pth"));
}

/* A stride-0 view of a billion elements is refused by the output size limit, not allocated. */
static void test_handmade_expansion_limit(void) {
    static buf_t m, f;
    int32_t size[2] = {1 << 30, 1 << 10}, stride[2] = {0, 0};
    tensor_pickle(&m, 1, 0, 2, size, stride);
    legacy_file(&f, &m, 1, 1, 1);
    drdc_pth_file *p = NULL;
    CHECK_ERR(drdc_pth_parse(&p, f.b, f.n, "huge.pth"), DRDC_ERR_FORMAT, "limit");
}

static void hostile(const char *what, void (*build)(buf_t *), const char *needle) {
    static buf_t m, f;
    m.n = 0;
    build(&m);
    legacy_file(&f, &m, 0, 0, 0);
    drdc_pth_file *p = NULL;
    drdc_status st = drdc_pth_parse(&p, f.b, f.n, "hostile.pth");
    if (st != DRDC_ERR_FORMAT || !tl_contains(drdc_last_error(), needle) || !tl_contains(drdc_last_error(), "hostile.pth"))
        fprintf(stderr, "  %s: got %s: %s (want \"%s\")\n", what, drdc_status_name(st), drdc_last_error(), needle);
    CHECK(st == DRDC_ERR_FORMAT && tl_contains(drdc_last_error(), needle) && tl_contains(drdc_last_error(), "hostile.pth"));
    CHECK(p == NULL);
    drdc_pth_free(p);
}

static void b_os_system(buf_t *m) { op(m, 0x80); op(m, 2); glob(m, "os", "system"); ustr(m, "echo pwned"); op(m, 0x85); op(m, 'R'); op(m, '.'); }
static void b_bad_opcode(buf_t *m) { op(m, 0x80); op(m, 2); op(m, '}'); op(m, 0xff); op(m, '.'); }
static void b_unset_memo(buf_t *m) { op(m, 0x80); op(m, 2); op(m, 'h'); op(m, 7); op(m, '.'); }
static void b_deep_marks(buf_t *m) { op(m, 0x80); op(m, 2); for (int i = 0; i < 5000; i++) op(m, '('); op(m, '.'); }
static void b_cycle(buf_t *m) { op(m, 0x80); op(m, 2); op(m, '}'); op(m, 'q'); op(m, 0); ustr(m, "a"); op(m, 'h'); op(m, 0); op(m, 's'); op(m, '.'); }
static void b_not_dict(buf_t *m) { op(m, 0x80); op(m, 2); k1(m, 5); op(m, '.'); }
static void b_no_stop(buf_t *m) { op(m, 0x80); op(m, 2); op(m, '}'); }
static void b_setitem_list(buf_t *m) { op(m, 0x80); op(m, 2); op(m, ']'); k1(m, 1); k1(m, 2); op(m, 's'); op(m, '.'); }
static void b_reduce_empty(buf_t *m) { op(m, 0x80); op(m, 2); op(m, 'R'); op(m, '.'); }
static void b_big_memo(buf_t *m) { op(m, 0x80); op(m, 2); op(m, '}'); op(m, 'r'); jint(m, 0x7fffffff); op(m, '.'); }
static void b_long_string(buf_t *m) { op(m, 0x80); op(m, 2); op(m, 'X'); jint(m, 0x7ffffff0); op(m, '.'); }
static void b_bad_storage_type(buf_t *m) {
    op(m, 0x80); op(m, 2); op(m, '('); ustr(m, "storage"); glob(m, "torch", "ComplexFloatStorage"); ustr(m, "k"); ustr(m, "cpu");
    k1(m, 1); op(m, 'N'); op(m, 't'); op(m, 'Q'); op(m, '.');
}

static void test_hostile_pickles(void) {
    hostile("os.system", b_os_system, "os.system");
    hostile("bad opcode", b_bad_opcode, "opcode 0xff");
    hostile("unset memo", b_unset_memo, "never set");
    hostile("deep marks", b_deep_marks, "MARK");
    hostile("self-referencing dict", b_cycle, "nested deeper");
    hostile("not a dict", b_not_dict, "not a dict");
    hostile("no STOP", b_no_stop, "pickle 4");
    hostile("SETITEM on a list", b_setitem_list, "SETITEM on a list");
    hostile("REDUCE on empty stack", b_reduce_empty, "empty stack");
    hostile("huge memo index", b_big_memo, "memo index");
    hostile("string past the end", b_long_string, "truncated");
    hostile("complex storage", b_bad_storage_type, "ComplexFloatStorage");
}

/* An empty dict is a valid file with no tensors; converting it is an error. */
static void test_empty_state_dict(void) {
    static buf_t m, f;
    m.n = 0;
    op(&m, 0x80); op(&m, 2); op(&m, '}'); ustr(&m, "epoch"); k1(&m, 3); op(&m, 's'); op(&m, '.');
    legacy_file(&f, &m, 0, 0, 0);
    drdc_pth_file *p = NULL;
    CHECK_OK(drdc_pth_parse(&p, f.b, f.n, "empty-dict.pth"));
    CHECK(drdc_pth_count(p) == 0);
    CHECK(drdc_pth_skipped(p) == 1);
    drdc_pth_free(p);
    char in[1300], out[1300];
    snprintf(in, sizeof in, "%s/empty-dict.pth", g_dir);
    snprintf(out, sizeof out, "%s/empty-dict.safetensors", g_dir);
    CHECK(test_write_file(in, f.b, f.n) == 0);
    CHECK_ERR(drdc_pth_to_safetensors(in, out, NULL, NULL), DRDC_ERR_FORMAT, "no tensors");
}

int main(void) {
    make_files();
    RUN(test_zip_format);
    RUN(test_legacy_format);
    RUN(test_zip64_directory);
    RUN(test_conv_net_legacy);
    RUN(test_views_share_storage);
    RUN(test_to_safetensors);
    RUN(test_deflate_refused);
    RUN(test_unknown_global_refused);
    RUN(test_duplicate_names_refused);
    RUN(test_missing_file);
    RUN(test_truncated_legacy);
    RUN(test_truncated_zip);
    RUN(test_flipped_bytes_legacy);
    RUN(test_flipped_byte_zip_crc);
    RUN(test_wrong_magic);
    RUN(test_handmade_tensor);
    RUN(test_handmade_view_out_of_bounds);
    RUN(test_handmade_storage_size_mismatch);
    RUN(test_handmade_expansion_limit);
    RUN(test_hostile_pickles);
    RUN(test_empty_state_dict);
    return test_summary();
}
