/* test_dist.c: data-parallel training end to end. Two ranks on 127.0.0.1 (one thread each,
 * started as torchrun would: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) train both stages of the
 * tiny config and must end where one process with the same global batches ends: every loss of
 * loss.csv within 1e-5 relative, the base transformer's weights within 1e-5 and the refiner's
 * within 1e-4 absolute (float sums are ordered differently; the refiner's largest differences sit
 * in biases whose gradient is zero in exact arithmetic, where Adam turns float noise of ~1e-9 into
 * steps of ~0.1 lr), the calibrated statistics within 1e-3 (relative, absolute below 1). The base stage's last batch is
 * short (10 images, batch 4: rank 1 gets none of it). Rank 1 runs in a folder of its own and must
 * leave it empty and say nothing: rank 0 alone writes. `drdc train --nproc 2` gives the same
 * weights bit for bit as the two ranks started by hand, and a batch the ranks cannot split is
 * refused. Skips (77) when the build has no c10d. */
#include "testlib.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/safetensors.h"
#include "drdc/shim/dist.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_tmp[1024];

static const char *SETS =
    "--set base.epochs=2 --set base.batch=4 --set data.val_fraction=0.25 --set refiner.batch=4 "
    "--set refiner.steps=6 --set infer.batch=4 --set infer.steps=2 --set train.checkpoint_every=2";

/* Starts one rank of `world` in folder `cwd` (below g_tmp) training into `out`; returns its pid. */
static int start_rank(const char *cwd, int rank, int world, int port, const char *out, const char *extra,
                      const char *log) {
    return test_spawn("mkdir -p '%s/%s' && cd '%s/%s' && RANK=%d WORLD_SIZE=%d LOCAL_RANK=%d MASTER_ADDR=127.0.0.1 "
                      "MASTER_PORT=%d exec '%s' train --config '%s/tiny.json' --data-root '%s/data' --out '%s' "
                      "--threads 1 %s %s >'%s/%s' 2>&1",
                      g_tmp, cwd, g_tmp, cwd, rank, world, rank, port, test_drdc_bin(), g_tmp, g_tmp, out, SETS,
                      extra, g_tmp, log);
}

static int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

/* Max |a - b| over the tensors whose names start with prefix (both files hold the same ones). */
static double max_diff(const drdc_st_file *a, const drdc_st_file *b, const char *prefix, int *count) {
    double worst = 0;
    *count = 0;
    for (int i = 0; i < drdc_st_count(a); i++) {
        const drdc_st_tensor *ta = drdc_st_at(a, i), *tb = drdc_st_find(b, ta->name);
        if (strncmp(ta->name, prefix, strlen(prefix)) != 0) continue;
        CHECK(tb && tb->nbytes == ta->nbytes);
        if (!tb || tb->nbytes != ta->nbytes || ta->dtype != DRDC_ST_F32) continue;
        float *fa = test_st_floats(ta), *fb = test_st_floats(tb);
        int64_t n = (int64_t)(ta->nbytes / 4);
        for (int64_t k = 0; fa && fb && k < n; k++) {
            double d = fabs((double)fa[k] - fb[k]);
            if (!(d <= worst)) worst = d;
        }
        free(fa);
        free(fb);
        (*count)++;
    }
    return worst;
}

/* Largest difference between the numbers of two JSON objects (metadata "stats"), relative to
 * max(1, |value|) (a mean near 0 counts absolutely). */
static double stats_diff(const char *ja, const char *jb) {
    cJSON *a = cJSON_Parse(ja), *b = cJSON_Parse(jb);
    double worst = a && b ? 0 : INFINITY;
    for (cJSON *x = a ? a->child : NULL; x; x = x->next) {
        cJSON *y = cJSON_GetObjectItemCaseSensitive(b, x->string);
        if (!cJSON_IsNumber(x)) continue;
        if (!cJSON_IsNumber(y)) { worst = INFINITY; break; }
        double d = fabs(x->valuedouble - y->valuedouble) / fmax(1.0, fabs(x->valuedouble));
        if (d > worst) worst = d;
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return worst;
}

/* The losses of two loss.csv files: same rows (stage, step, epoch), losses within rel; returns the
 * largest relative difference and the row count. */
static double loss_diff(const char *pa, const char *pb, int *rows) {
    FILE *fa = fopen(pa, "r"), *fb = fopen(pb, "r");
    char la[256], lb[256];
    double worst = 0;
    *rows = 0;
    CHECK(fa && fb);
    if (!fa || !fb) goto done;
    CHECK(fgets(la, sizeof la, fa) && fgets(lb, sizeof lb, fb));   /* headers */
    for (;;) {
        char *ra = fgets(la, sizeof la, fa), *rb = fgets(lb, sizeof lb, fb);
        CHECK(!ra == !rb);
        if (!ra || !rb) break;
        char sa[16], sb[16];
        long step_a, step_b;
        int ep_a, ep_b;
        double loss_a, loss_b;
        CHECK(sscanf(la, "%15[^,],%ld,%d,%lf", sa, &step_a, &ep_a, &loss_a) == 4);
        CHECK(sscanf(lb, "%15[^,],%ld,%d,%lf", sb, &step_b, &ep_b, &loss_b) == 4);
        CHECK(!strcmp(sa, sb) && step_a == step_b && ep_a == ep_b);
        double d = fabs(loss_a - loss_b) / fabs(loss_a);
        if (!(d <= worst)) worst = d;
        (*rows)++;
    }
done:
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return worst;
}

static int dir_is_empty(const char *path) {
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "find '%s' -mindepth 1 | head -5", path);
    FILE *p = popen(cmd, "r");
    char line[1024];
    int empty = 1;
    while (p && fgets(line, sizeof line, p)) {
        fprintf(stderr, "  rank 1 wrote %s", line);
        empty = 0;
    }
    if (p) pclose(p);
    return empty;
}

static void test_two_ranks_equal_one_process(void) {
    char path[2048], pb[2048];
    double t0 = test_now();
    int one = test_spawn("cd '%s' && exec '%s' train --config tiny.json --data-root data --out runs/one --threads 1 "
                         "%s >one.log 2>&1", g_tmp, test_drdc_bin(), SETS);
    int status = 0;
    CHECK(test_wait_pid(one, 600, &status) && exit_code(status) == 0);
    double t1 = test_now();
    int port = test_free_port();
    char out[1200];
    snprintf(out, sizeof out, "%s/runs/two", g_tmp);
    int r0 = start_rank("rank0", 0, 2, port, out, "", "two.0.log");
    /* rank 1 trains into a relative folder of its own cwd: anything it wrote would be there */
    int r1 = start_rank("rank1", 1, 2, port, "runs/two", "", "two.1.log");
    int s0 = 0, s1 = 0;
    CHECK(test_wait_pid(r0, 600, &s0) && exit_code(s0) == 0);
    CHECK(test_wait_pid(r1, 600, &s1) && exit_code(s1) == 0);
    double t2 = test_now();
    printf("  one process: %.1f s; two ranks: %.1f s\n", t1 - t0, t2 - t1);
    if (exit_code(s0) || exit_code(s1)) {
        test_system("tail -n 5 '%s/two.0.log' '%s/two.1.log'", g_tmp, g_tmp);
        return;
    }
    snprintf(path, sizeof path, "%s/rank1", g_tmp);
    CHECK(dir_is_empty(path));
    snprintf(path, sizeof path, "%s/two.1.log", g_tmp);
    char *said = NULL;
    size_t said_n = 1;
    CHECK_OK(drdc_read_file(path, &said, &said_n));
    CHECK(said_n == 0);   /* rank 1 printed nothing */
    if (said_n) fprintf(stderr, "  rank 1 said: %.300s\n", said ? said : "");
    free(said);
    snprintf(path, sizeof path, "%s/two.0.log", g_tmp);
    CHECK(test_file_contains(path, "data-parallel: 2 ranks (gloo)"));
    CHECK(test_file_contains(path, "refiner stage: 2 ranks (gloo)"));
    /* the lock holds rank 0's pid */
    snprintf(path, sizeof path, "%s/runs/two/.lock", g_tmp);
    char *text = NULL;
    size_t n = 0;
    CHECK_OK(drdc_read_file(path, &text, &n));
    CHECK(text && atoi(text) == r0);
    free(text);

    int rows = 0;
    snprintf(path, sizeof path, "%s/runs/one/loss.csv", g_tmp);
    snprintf(pb, sizeof pb, "%s/runs/two/loss.csv", g_tmp);
    double dl = loss_diff(path, pb, &rows);
    printf("  loss.csv: %d rows each (6 base + 6 refiner), largest relative loss difference %.3g (tolerance 1e-5)\n",
           rows, dl);
    CHECK(rows == 12 && dl <= 1e-5);

    drdc_st_file *fa = NULL, *fb = NULL;
    snprintf(path, sizeof path, "%s/runs/one/model.safetensors", g_tmp);
    snprintf(pb, sizeof pb, "%s/runs/two/model.safetensors", g_tmp);
    CHECK_OK(drdc_st_open(&fa, path));
    CHECK_OK(drdc_st_open(&fb, pb));
    if (fa && fb) {
        int nb = 0, nr = 0, nk = 0;
        double db = max_diff(fa, fb, "base.", &nb), dr = max_diff(fa, fb, "refiner.", &nr);
        double dk = max_diff(fa, fb, "backbone.", &nk);
        double ds = stats_diff(drdc_st_meta(fa, "stats"), drdc_st_meta(fb, "stats"));
        printf("  model: base %d tensors, max |diff| %.3g (tolerance 1e-5); refiner %d tensors, max |diff| %.3g "
               "(tolerance 1e-4); backbone %.3g; calibrated statistics max diff %.3g (tolerance 1e-3)\n", nb,
               db, nr, dr, dk, ds);
        CHECK(nb > 10 && nr > 10 && db <= 1e-5 && dr <= 1e-4 && dk == 0 && ds <= 1e-3);
    }
    drdc_st_close(fa);
    drdc_st_close(fb);
    snprintf(path, sizeof path, "%s/runs/two/checkpoint.safetensors", g_tmp);
    CHECK_OK(drdc_st_open(&fa, path));
    if (fa) {
        const char *ws = drdc_st_meta(fa, "world_size"), *dr = drdc_st_meta(fa, "draws");
        CHECK(ws && !strcmp(ws, "2") && dr && !strcmp(dr, "per-sample"));
    }
    drdc_st_close(fa);
}

/* `drdc train --nproc 2 [extra]` into runs/<run>; returns its exit code (-1: did not end in time). */
static int nproc_run(const char *run, const char *extra, const char *log, double timeout_s) {
    int pid = test_spawn("cd '%s' && exec '%s' train --config tiny.json --data-root data --out 'runs/%s' --threads 1 "
                         "--nproc 2 %s %s >'%s' 2>&1", g_tmp, test_drdc_bin(), run, SETS, extra, log);
    int status = 0;
    return test_wait_pid(pid, timeout_s, &status) ? exit_code(status) : -1;
}

/* 1 when the test folder's log contains needle (testlib). */
#define log_has(log, needle) test_log_has(g_tmp, (log), (needle))

/* --nproc 2 starts the two ranks itself: the same weights, bit for bit. */
static void test_nproc_launcher(void) {
    char path[2048], pb[2048];
    CHECK(nproc_run("nproc", "", "nproc.log", 600) == 0);
    CHECK(log_has("nproc.log", "starting 2 ranks on this machine"));
    drdc_st_file *fa = NULL, *fb = NULL;
    snprintf(path, sizeof path, "%s/runs/two/model.safetensors", g_tmp);
    snprintf(pb, sizeof pb, "%s/runs/nproc/model.safetensors", g_tmp);
    CHECK_OK(drdc_st_open(&fa, path));
    CHECK_OK(drdc_st_open(&fb, pb));
    CHECK(test_st_same_tensors(fa, fb));
    drdc_st_close(fa);
    drdc_st_close(fb);
}

static void test_batch_that_cannot_split(void) {
    CHECK(nproc_run("odd", "--set refiner.batch=3", "odd.log", 120) == 2);
    CHECK(log_has("odd.log", "refiner.batch = 3 is the global batch, which 2 ranks cannot split evenly"));
    CHECK(log_has("odd.log", "rank 0 (pid"));   /* the launcher names the rank that failed */
}

int main(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    if (!dt_dist_compiled()) test_skip("this build has no c10d (install libgloo-dev and reconfigure)");
    snprintf(g_tmp, sizeof g_tmp, "%s", test_tmpdir("dist"));
    if (test_tiny_setup(g_tmp, 2, 7, 3) != 0) return 1;
    RUN(test_two_ranks_equal_one_process);
    RUN(test_nproc_launcher);
    RUN(test_batch_that_cannot_split);
    return test_summary();
}
