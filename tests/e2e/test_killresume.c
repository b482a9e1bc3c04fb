/* test_killresume.c: crash and resume. `drdc train` is killed with SIGKILL at moments
 * drawn at random inside chosen phases (base epochs and their checkpoint writes, refiner steps
 * with a checkpoint after every step, the final calibration and model write, and once anywhere),
 * sometimes twice in one run; after every kill the checkpoint and model, when present, must open
 * cleanly (never torn), and `drdc train --resume` (a fresh start when no checkpoint exists yet)
 * must end with exactly the tensors and statistics of an uninterrupted run with the same seed.
 * The draws come from DRDC_KILL_SEED (printed; set it to replay a run). Tiny settings: 64 px,
 * 4 base epochs, 6 refiner steps; the whole test takes about a minute and a half on 2 cores. */
#define _GNU_SOURCE
#include "testlib.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/safetensors.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_tmp[1024];
static uint64_t g_rng;
static double g_ref_seconds;
static int g_kills, g_kills_mid_write, g_no_checkpoint;

static const char *SETS =
    "--set base.epochs=4 --set base.batch=4 --set data.val_fraction=0.25 --set refiner.batch=2 "
    "--set refiner.steps=6 --set infer.batch=4 --set infer.steps=2 --set train.checkpoint_every=1";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* xorshift64*: a uniform draw in [lo, hi) milliseconds. */
static int draw_ms(int lo, int hi) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    uint64_t r = g_rng * 2685821657736338717ull;
    return hi > lo ? lo + (int)(r % (uint64_t)(hi - lo)) : lo;
}

/* Starts `drdc train` into runs/<run> (with --resume when asked); the process is drdc itself. */
static pid_t start_train(const char *run, int resume, const char *log) {
    return test_spawn("cd '%s' && exec '%s' train --config tiny.json --data-root data --out 'runs/%s' --threads 2 %s "
                      "%s >'%s' 2>&1", g_tmp, test_drdc_bin(), run, SETS, resume ? "--resume" : "", log);
}

/* 1 when the test folder's log contains needle (testlib). */
#define log_has(log, needle) test_log_has(g_tmp, (log), (needle))

/* Waits until the log shows `pattern` (NULL: at once) or the process ends. Returns 1 when the
 * process is still running, 0 when it ended (*status set). */
static int wait_for(pid_t pid, const char *log, const char *pattern, int *status) {
    double t0 = now();
    while (now() - t0 < 600) {
        if (waitpid(pid, status, WNOHANG) == pid) return 0;
        if (!pattern || log_has(log, pattern)) return 1;
        usleep(5000);
    }
    return 1;
}

/* Sleeps ms milliseconds unless the process ends first. Returns 1 when it is still running. */
static int sleep_while_running(pid_t pid, int ms, int *status) {
    double end = now() + ms / 1000.0;
    while (now() < end) {
        if (waitpid(pid, status, WNOHANG) == pid) return 0;
        usleep(2000);
    }
    return 1;
}

/* Temporary files of process `pid` in the run folder (what a kill of that process left). */
static int count_tmp_files(const char *run, pid_t pid) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "find '%s/runs/%s' -name '*.tmp.%d' -o -name '*.tmp.%d.*' | wc -l", g_tmp, run,
             (int)pid, (int)pid);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = 0;
        pclose(p);
    }
    return n;
}

/* After a kill: the checkpoint and the model, where present, must open as whole files. Prints
 * where the checkpoint stands. */
static void check_not_torn(const char *run, pid_t pid, const char *what) {
    char path[2048];
    const char *files[2] = {"checkpoint.safetensors", "model.safetensors"};
    char where[256] = "no checkpoint yet";
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/runs/%s/%s", g_tmp, run, files[i]);
        if (!drdc_is_file(path)) continue;
        drdc_st_file *f = NULL;
        CHECK_OK(drdc_st_open(&f, path));
        if (!f) continue;
        const char *fmt = drdc_st_meta(f, "format");
        CHECK(fmt && strcmp(fmt, "drdc-model") == 0);
        if (i == 0) {
            const char *stage = drdc_st_meta(f, "stage"), *e = drdc_st_meta(f, "stage_epoch");
            const char *b = drdc_st_meta(f, "stage_batch"), *rs = drdc_st_meta(f, "refiner_steps");
            snprintf(where, sizeof where, "checkpoint at %s stage, epoch %s, batch %s, refiner step %s",
                     stage ? stage : "?", e ? e : "?", b ? b : "?", rs ? rs : "?");
        }
        drdc_st_close(f);
    }
    int tmp = count_tmp_files(run, pid);
    if (tmp) g_kills_mid_write++;
    if (!strcmp(where, "no checkpoint yet")) g_no_checkpoint++;
    printf("  %s: %s; %d temporary file(s) left by the kill\n", what, where, tmp);
}

/* 1 when both models hold the same tensors (bytes) and the same calibrated statistics. */
static int same_model(const char *a, const char *b) {
    drdc_st_file *fa = NULL, *fb = NULL;
    int same = drdc_st_open(&fa, a) == DRDC_OK && drdc_st_open(&fb, b) == DRDC_OK && test_st_same_tensors(fa, fb);
    const char *keys[3] = {"stats", "base_epochs", "refiner_steps"};
    for (int k = 0; same && k < 3; k++) {
        const char *va = drdc_st_meta(fa, keys[k]), *vb = drdc_st_meta(fb, keys[k]);
        same = va && vb && strcmp(va, vb) == 0;
        if (!same) fprintf(stderr, "  metadata %s differs: %s vs %s\n", keys[k], va ? va : "-", vb ? vb : "-");
    }
    drdc_st_close(fa);
    drdc_st_close(fb);
    return same;
}

/* One kill: after `pattern` appears in the log (NULL: from the start), wait a draw in
 * [lo_ms, hi_ms) and kill -9. */
typedef struct kill_at {
    const char *pattern;
    int lo_ms, hi_ms;
} kill_at;

/* Runs runs/<run> with the given kills, each followed by a resume, then compares the result with
 * the uninterrupted run. */
static void killed_run(const char *run, const kill_at *kills, int n_kills) {
    test_system("rm -rf '%s/runs/%s'", g_tmp, run);
    int k = 0, attempt = 0, status = 0;
    for (;;) {
        char log[256], ckpt[2048];
        snprintf(log, sizeof log, "%s.%d.log", run, attempt);
        snprintf(ckpt, sizeof ckpt, "%s/runs/%s/checkpoint.safetensors", g_tmp, run);
        int resume = drdc_is_file(ckpt);
        pid_t pid = start_train(run, resume, log);
        CHECK(pid > 0);
        if (pid <= 0) return;
        attempt++;
        if (k < n_kills) {
            double t0 = now();
            int ms = draw_ms(kills[k].lo_ms, kills[k].hi_ms);
            if (wait_for(pid, log, kills[k].pattern, &status) && sleep_while_running(pid, ms, &status)) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
                g_kills++;
                char what[512];
                snprintf(what, sizeof what, "%s: %s killed %d ms after \"%s\" (%.2f s into the run)", run,
                         resume ? "resumed run" : "run", ms, kills[k].pattern ? kills[k].pattern : "start",
                         now() - t0);
                check_not_torn(run, pid, what);
                k++;
                continue;
            }
            printf("  %s: the run ended before kill %d landed\n", run, k + 1);
            k = n_kills;
        } else {
            waitpid(pid, &status, 0);
        }
        int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        CHECK(rc == 0);
        if (rc != 0) test_system("tail -n 5 '%s/%s'", g_tmp, log);
        break;
    }
    char a[2048], b[2048];
    snprintf(a, sizeof a, "%s/runs/reference/model.safetensors", g_tmp);
    snprintf(b, sizeof b, "%s/runs/%s/model.safetensors", g_tmp, run);
    CHECK(same_model(a, b));
}

static void test_kill_before_first_checkpoint(void) {
    /* the warning is the last line before the first base epoch: no checkpoint yet, so the
     * "resume" is a fresh start in the same folder */
    const kill_at k[1] = {{"backbone is RANDOM", 0, 40}};
    killed_run("first_epoch", k, 1);
}

static void test_kill_during_base_epochs(void) {
    const kill_at k[1] = {{"train base: epoch 1/", 0, 200}};
    killed_run("base_early", k, 1);
}

static void test_kill_during_base_checkpoint_write(void) {
    /* the epoch line is printed just before that epoch's checkpoint is written */
    const kill_at k[1] = {{"train base: epoch 3/", 0, 60}};
    killed_run("base_write", k, 1);
}

static void test_kill_during_refiner_steps(void) {
    const kill_at k[1] = {{"train refiner: U-Net", 0, 1500}};
    killed_run("refiner_early", k, 1);
}

static void test_kill_late_in_refiner(void) {
    const kill_at k[1] = {{"train refiner: U-Net", 1000, 2200}};
    killed_run("refiner_late", k, 1);
}

static void test_kill_during_final_calibration(void) {
    const kill_at k[1] = {{"train refiner (steps): 6/6", 0, 700}};   /* stderr: unbuffered */
    killed_run("calibration", k, 1);
}

static void test_kill_twice(void) {
    const kill_at k[2] = {{"train base: epoch 2/", 0, 100}, {"train refiner: U-Net", 0, 2000}};
    killed_run("twice", k, 2);
}

static void test_kill_anytime(void) {
    kill_at k[1] = {{NULL, 500, 500 + (int)(1000 * g_ref_seconds)}};
    killed_run("anytime", k, 1);
}

int main(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    const char *seed = getenv("DRDC_KILL_SEED");
    g_rng = seed && *seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (!g_rng) g_rng = 1;
    printf("DRDC_KILL_SEED=%llu (set it to draw the same kill moments again)\n", (unsigned long long)g_rng);
    snprintf(g_tmp, sizeof g_tmp, "%s", test_tmpdir("killresume"));
    if (test_tiny_setup(g_tmp, 2, 4, 3) != 0) return 1;
    double t0 = now();
    int status = 0;
    pid_t pid = start_train("reference", 0, "reference.log");
    waitpid(pid, &status, 0);
    g_ref_seconds = now() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        test_system("tail -n 5 '%s/reference.log'", g_tmp);
        fprintf(stderr, "set-up failed: the uninterrupted run\n");
        return 1;
    }
    printf("uninterrupted run: %.1f s\n", g_ref_seconds);
    RUN(test_kill_before_first_checkpoint);
    RUN(test_kill_during_base_epochs);
    RUN(test_kill_during_base_checkpoint_write);
    RUN(test_kill_during_refiner_steps);
    RUN(test_kill_late_in_refiner);
    RUN(test_kill_during_final_calibration);
    RUN(test_kill_twice);
    RUN(test_kill_anytime);
    printf("%d kills: %d left a temporary file (killed mid-write), %d before the first checkpoint\n", g_kills,
           g_kills_mid_write, g_no_checkpoint);
    return test_summary();
}
