/* test_npy.c: .npy read/write round trips, interop with numpy both ways, and each malformed
 * file rejected with a message that names the file. */
#include "testlib.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/npy.h"

static char g_dir[1024];

static const char *tmp_path(const char *name) {
    static char buf[4][1200];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

/* Writes a hand-made .npy: version 1.0 header around `dict` (padded to 64), then nbytes of data. */
static void write_raw_npy(const char *path, int major, const char *dict, size_t nbytes) {
    unsigned char buf[4096];
    size_t prefix = major == 1 ? 10 : 12;
    size_t dl = strlen(dict);
    size_t total = (prefix + dl + 1 + 63) / 64 * 64;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    size_t hlen = total - prefix;
    buf[8] = (unsigned char)(hlen & 0xFF);
    buf[9] = (unsigned char)(hlen >> 8);
    if (major != 1) buf[10] = buf[11] = 0;
    memcpy(buf + prefix, dict, dl);
    memset(buf + prefix + dl, ' ', total - prefix - dl - 1);
    buf[total - 1] = '\n';
    memset(buf + total, 0x11, nbytes);
    test_write_file(path, buf, total + nbytes);
}

static void test_round_trip_each_dtype(void) {
    float f32[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f};
    double f64[6] = {1.5, -2.0, 1e300, 3.25, -1e-300, 0.1};
    uint8_t u8[6] = {0, 1, 2, 127, 128, 255};
    int64_t i64[6] = {0, -1, INT64_MAX, INT64_MIN, 42, 1ll << 40};
    const void *src[4] = {f32, f64, u8, i64};
    drdc_npy_dtype dt[4] = {DRDC_NPY_F32, DRDC_NPY_F64, DRDC_NPY_U8, DRDC_NPY_I64};
    int64_t shape[2] = {2, 3};
    for (int k = 0; k < 4; k++) {
        const char *p = tmp_path("rt.npy");
        CHECK_OK(drdc_npy_write(p, dt[k], 2, shape, src[k]));
        drdc_npy a;
        CHECK_OK(drdc_npy_read(p, &a));
        CHECK(a.dtype == dt[k]);
        CHECK(a.rank == 2 && a.shape[0] == 2 && a.shape[1] == 3 && a.numel == 6);
        CHECK(a.data && memcmp(a.data, src[k], 6 * drdc_npy_dtype_size(dt[k])) == 0);
        drdc_npy_free(&a);
    }
}

static void test_round_trip_ranks(void) {
    /* rank 0 (a scalar), rank 8, and a zero-size dimension */
    double one = 2.5;
    drdc_npy a;
    CHECK_OK(drdc_npy_write(tmp_path("r0.npy"), DRDC_NPY_F64, 0, NULL, &one));
    CHECK_OK(drdc_npy_read(tmp_path("r0.npy"), &a));
    CHECK(a.rank == 0 && a.numel == 1 && *(double *)a.data == 2.5);
    drdc_npy_free(&a);
    int64_t s8[8] = {1, 2, 1, 2, 1, 2, 1, 2};
    uint8_t v[16];
    for (int i = 0; i < 16; i++) v[i] = (uint8_t)(i * 7);
    CHECK_OK(drdc_npy_write(tmp_path("r8.npy"), DRDC_NPY_U8, 8, s8, v));
    CHECK_OK(drdc_npy_read(tmp_path("r8.npy"), &a));
    CHECK(a.rank == 8 && a.numel == 16 && memcmp(a.data, v, 16) == 0);
    drdc_npy_free(&a);
    int64_t s0[2] = {0, 5};
    CHECK_OK(drdc_npy_write(tmp_path("empty.npy"), DRDC_NPY_F32, 2, s0, NULL));
    CHECK_OK(drdc_npy_read(tmp_path("empty.npy"), &a));
    CHECK(a.rank == 2 && a.shape[0] == 0 && a.shape[1] == 5 && a.numel == 0);
    drdc_npy_free(&a);
}

/* A write leaves only the target in the folder (the temporary is renamed), and overwrites. */
static void test_atomic_write(void) {
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    int64_t s2[1] = {2}, s3[1] = {3};
    CHECK_OK(drdc_npy_write(tmp_path("atomic.npy"), DRDC_NPY_F32, 1, s2, a));
    CHECK_OK(drdc_npy_write(tmp_path("atomic.npy"), DRDC_NPY_F32, 1, s3, b));
    drdc_npy r;
    CHECK_OK(drdc_npy_read(tmp_path("atomic.npy"), &r));
    CHECK(r.numel == 3 && ((float *)r.data)[2] == 5.0f);
    drdc_npy_free(&r);
    DIR *d = opendir(g_dir);
    int temps = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strstr(e->d_name, ".tmp")) temps++;
    if (d) closedir(d);
    CHECK(temps == 0);
    CHECK_ERR(drdc_npy_write(tmp_path("no/such/dir/x.npy"), DRDC_NPY_F32, 1, s2, a), DRDC_ERR_IO,
              "no/such/dir/x.npy");
}

static void test_read_map(void) {
    double d[6] = {0.5, 1.5, 2.5, 3.5, 4.5, 5.5};
    int64_t s[3] = {1, 2, 3};
    CHECK_OK(drdc_npy_write(tmp_path("map64.npy"), DRDC_NPY_F64, 3, s, d));
    float *m = NULL;
    int h = 0, w = 0;
    CHECK_OK(drdc_npy_read_map(tmp_path("map64.npy"), &m, &h, &w));
    CHECK(h == 2 && w == 3 && m && m[5] == 5.5f);
    free(m);
    uint8_t u[6] = {0};
    CHECK_OK(drdc_npy_write(tmp_path("mapu8.npy"), DRDC_NPY_U8, 2, s + 1, u));
    CHECK_ERR(drdc_npy_read_map(tmp_path("mapu8.npy"), &m, &h, &w), DRDC_ERR_INPUT, "mapu8.npy");
    CHECK(m == NULL);
    float f4[4] = {0};
    int64_t s4[4] = {1, 1, 2, 2};
    CHECK_OK(drdc_npy_write(tmp_path("map4d.npy"), DRDC_NPY_F32, 4, s4, f4));
    CHECK_ERR(drdc_npy_read_map(tmp_path("map4d.npy"), &m, &h, &w), DRDC_ERR_INPUT, "rank 4");
}

static void test_bad_files(void) {
    drdc_npy a;
    const char *p;
    p = tmp_path("missing.npy");
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_INPUT, "missing.npy: cannot open");

    p = tmp_path("magic.npy");
    test_write_file(p, "\x89PNG\r\n\x1a\n0000000000", 18);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "magic.npy: not a .npy file (bad magic");

    p = tmp_path("short.npy");
    test_write_file(p, "\x93NUMPY\x01\x00\x76\x00{'descr'", 17);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "short.npy: truncated .npy header");
    test_write_file(p, "\x93NUMPY\x01", 7);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "short.npy: truncated .npy header");

    p = tmp_path("version.npy");
    write_raw_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
    {   /* patch the version to 4.0 */
        FILE *f = fopen(p, "r+b");
        fseek(f, 6, SEEK_SET);
        fputc(4, f);
        fclose(f);
    }
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "version.npy: unsupported .npy format version 4.0");

    p = tmp_path("dtype.npy");
    write_raw_npy(p, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "dtype.npy: unsupported .npy dtype '>f4'");
    write_raw_npy(p, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "dtype.npy: unsupported .npy dtype '<i4'");

    p = tmp_path("fortran.npy");
    write_raw_npy(p, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "fortran.npy: .npy array is in Fortran order");

    p = tmp_path("size.npy");
    write_raw_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "size.npy: .npy data size mismatch: shape and dtype <f4 need 24 bytes, the file has 20 after the header (truncated)");
    write_raw_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "(trailing bytes)");

    p = tmp_path("rank9.npy");
    write_raw_npy(p, 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 1);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "rank9.npy: .npy array has rank over 8");

    p = tmp_path("dict.npy");
    write_raw_npy(p, 1, "{'descr': '<f4', 'shape': (2,), }", 8);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "dict.npy: malformed .npy header: missing 'fortran_order'");
    write_raw_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", 8);
    CHECK_ERR(drdc_npy_read(p, &a), DRDC_ERR_FORMAT, "dict.npy: malformed .npy header: shape is not a tuple");
    CHECK(a.data == NULL);
}

/* numpy writes (format 1.0 and 2.0, each dtype), C reads; C writes, numpy reads and checks. */
static void test_numpy_interop(void) {
    const char *py = getenv("DRDC_PYTHON");
    if (!py || !*py || test_system("'%s' -c 'import numpy' 2>/dev/null", py) != 0) {
        test_skip_part("numpy interop: DRDC_PYTHON unset or without numpy");
        return;
    }
    char script[1200];
    snprintf(script, sizeof script, "%s", tmp_path("interop.py"));
    const char *code =
        "import sys, numpy as np\n"
        "d = sys.argv[2]\n"
        "arrs = {'f4': np.arange(12, dtype='<f4').reshape(3, 4) / 7,\n"
        "        'f8': -np.arange(6, dtype='<f8').reshape(1, 2, 3) / 3,\n"
        "        'u1': (np.arange(10) * 29 % 256).astype('|u1'),\n"
        "        'i8': np.array([[-(2**62), 5], [7, 2**40]], dtype='<i8')}\n"
        "if sys.argv[1] == 'write':\n"
        "    for k, a in arrs.items():\n"
        "        for v in ((1, 0), (2, 0)):\n"
        "            with open('%s/py_%s_v%d.npy' % (d, k, v[0]), 'wb') as f:\n"
        "                np.lib.format.write_array(f, a, version=v)\n"
        "else:\n"
        "    for k, a in arrs.items():\n"
        "        b = np.load('%s/c_%s.npy' % (d, k))\n"
        "        assert b.dtype == a.dtype and b.shape == a.shape and (b == a).all(), k\n";
    CHECK(test_write_file(script, code, strlen(code)) == 0);
    CHECK(test_system("'%s' '%s' write '%s'", py, script, g_dir) == 0);
    static const char *names[4] = {"f4", "f8", "u1", "i8"};
    static const drdc_npy_dtype dts[4] = {DRDC_NPY_F32, DRDC_NPY_F64, DRDC_NPY_U8, DRDC_NPY_I64};
    for (int k = 0; k < 4; k++) {
        for (int v = 1; v <= 2; v++) {
            char name[64];
            snprintf(name, sizeof name, "py_%s_v%d.npy", names[k], v);
            drdc_npy a;
            CHECK_OK(drdc_npy_read(tmp_path(name), &a));
            CHECK(a.dtype == dts[k]);
            if (a.dtype != dts[k] || !a.data) {
                drdc_npy_free(&a);
                continue;
            }
            /* the values numpy wrote, recomputed here */
            if (k == 0) {
                CHECK(a.rank == 2 && a.shape[0] == 3 && a.shape[1] == 4);
                for (int i = 0; i < 12; i++) CHECK(((float *)a.data)[i] == (float)i / 7.0f);
            } else if (k == 1) {
                CHECK(a.rank == 3 && a.shape[0] == 1 && a.shape[1] == 2 && a.shape[2] == 3);
                for (int i = 0; i < 6; i++) CHECK(((double *)a.data)[i] == -(double)i / 3.0);
            } else if (k == 2) {
                CHECK(a.rank == 1 && a.shape[0] == 10);
                for (int i = 0; i < 10; i++) CHECK(((uint8_t *)a.data)[i] == (uint8_t)(i * 29 % 256));
            } else {
                int64_t want[4] = {-(1ll << 62), 5, 7, 1ll << 40};
                CHECK(a.rank == 2 && memcmp(a.data, want, sizeof want) == 0);
            }
            /* write it back from C for numpy to check */
            snprintf(name, sizeof name, "c_%s.npy", names[k]);
            CHECK_OK(drdc_npy_write(tmp_path(name), a.dtype, a.rank, a.shape, a.data));
            drdc_npy_free(&a);
        }
    }
    CHECK(test_system("'%s' '%s' read '%s'", py, script, g_dir) == 0);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", test_tmpdir("npy"));
    RUN(test_round_trip_each_dtype);
    RUN(test_round_trip_ranks);
    RUN(test_atomic_write);
    RUN(test_read_map);
    RUN(test_bad_files);
    RUN(test_numpy_interop);
    return test_summary();
}
