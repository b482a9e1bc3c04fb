/* test_dist_faults.c: a data-parallel run that loses a rank never hangs, and resumes. Two ranks on
 * 127.0.0.1 train the tiny config; one is killed (SIGKILL) mid-training: the other must exit
 * non-zero within the --dist-timeout (20 s here; a dead peer is noticed at the next all-reduce,
 * well under a second) naming the dead rank and its pid, the checkpoint must still open, and
 * `--resume` on two ranks must end with exactly (bit for bit) the weights of an uninterrupted
 * two-rank run. Both ranks are killed in turn (rank 0 also hosts the store). Also: a rank that
 * never arrives (the other gives up after the timeout), a store port already in use, a rank that
 * fails alone while setting up (both stop, naming it), checkpoint writes slower than the timeout
 * (no false alarm: the others wait for rank 0 through the store), and `--nproc` naming a rank
 * killed under it. Skips (77) when the build has no c10d. */
#define _GNU_SOURCE
#include "testlib.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/safetensors.h"
#include "drdc/shim/dist.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_tmp[1024];

static const char *SETS =
    "--set base.epochs=2 --set base.batch=4 --set data.val_fraction=0.25 --set refiner.batch=4 "
    "--set refiner.steps=8 --set infer.batch=4 --set infer.steps=2 --set train.checkpoint_every=2 "
    "--dist-timeout 20";

static int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

/* One rank of 2 (torchrun's variables) training into runs/<run>; extra: more options. */
static int start_rank(int rank, int port, const char *run, const char *extra, const char *log) {
    return test_spawn("cd '%s' && RANK=%d WORLD_SIZE=2 LOCAL_RANK=%d MASTER_ADDR=127.0.0.1 MASTER_PORT=%d exec '%s' "
                      "train --config tiny.json --data-root data --out 'runs/%s' --threads 1 %s %s >'%s' 2>&1",
                      g_tmp, rank, rank, port, test_drdc_bin(), run, SETS, extra, log);
}

/* `drdc train --nproc 2` into runs/<run>; env: variables put before the command. */
static int start_nproc(const char *run, const char *env, const char *extra, const char *log) {
    return test_spawn("cd '%s' && %s exec '%s' train --config tiny.json --data-root data --out 'runs/%s' --threads 1 "
                      "--nproc 2 %s %s >'%s' 2>&1", g_tmp, env, test_drdc_bin(), run, SETS, extra, log);
}

/* 1 when the test folder's log contains needle (testlib). */
#define log_has(log, needle) test_log_has(g_tmp, (log), (needle))

/* Waits until runs/<run>/loss.csv holds a row starting with `row` (1), or a process ends (0). */
static int wait_for_row(const char *run, const char *row, int pid_a, int pid_b) {
    char path[2048], needle[64];
    snprintf(path, sizeof path, "%s/runs/%s/loss.csv", g_tmp, run);
    snprintf(needle, sizeof needle, "\n%s", row);
    double end = test_now() + 600;
    while (test_now() < end) {
        if (test_file_contains(path, needle)) return 1;
        if (waitpid(pid_a, NULL, WNOHANG) != 0 || (pid_b > 0 && waitpid(pid_b, NULL, WNOHANG) != 0)) return 0;
        usleep(5000);
    }
    return 0;
}

/* 1 when runs/<a>/model.safetensors and runs/<b>/... hold the same tensors, byte for byte. */
static int same_model(const char *a, const char *b) {
    char pa[2048], pb[2048];
    snprintf(pa, sizeof pa, "%s/runs/%s/model.safetensors", g_tmp, a);
    snprintf(pb, sizeof pb, "%s/runs/%s/model.safetensors", g_tmp, b);
    drdc_st_file *fa = NULL, *fb = NULL;
    int same = drdc_st_open(&fa, pa) == DRDC_OK && drdc_st_open(&fb, pb) == DRDC_OK && test_st_same_tensors(fa, fb);
    drdc_st_close(fa);
    drdc_st_close(fb);
    return same;
}

/* The checkpoint of runs/<run> opens; returns its refiner step count (-1: none). */
static int checkpoint_refiner_steps(const char *run) {
    char path[2048];
    snprintf(path, sizeof path, "%s/runs/%s/checkpoint.safetensors", g_tmp, run);
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, path));
    const char *rs = f ? drdc_st_meta(f, "refiner_steps") : NULL, *ws = f ? drdc_st_meta(f, "world_size") : NULL;
    int steps = rs ? atoi(rs) : -1;
    CHECK(ws && !strcmp(ws, "2"));
    drdc_st_close(f);
    return steps;
}

static void test_reference(void) {
    int pid = start_nproc("ref", "", "", "ref.log"), status = 0;
    CHECK(test_wait_pid(pid, 900, &status) && exit_code(status) == 0);
}

/* Kills rank `victim` once loss.csv shows refiner step 3, then resumes on two ranks. */
static void kill_and_resume(int victim, const char *run) {
    int port = test_free_port();
    char log0[64], log1[64], pidtxt[64];
    snprintf(log0, sizeof log0, "%s.0.log", run);
    snprintf(log1, sizeof log1, "%s.1.log", run);
    int pids[2] = {start_rank(0, port, run, "", log0), start_rank(1, port, run, "", log1)};
    int landed = wait_for_row(run, "refiner,3,", pids[0], pids[1]);
    CHECK(landed);
    int survivor = 1 - victim, status = 0;
    kill(pids[victim], SIGKILL);
    double t0 = test_now();
    int ended = test_wait_pid(pids[survivor], 60, &status);
    double dt = test_now() - t0;
    waitpid(pids[victim], NULL, 0);
    printf("  rank %d killed: rank %d exited %d after %.2f s (timeout 20 s)\n", victim, survivor,
           ended ? exit_code(status) : -1, dt);
    CHECK(ended && exit_code(status) != 0 && dt < 20);
    if (!ended) kill(pids[survivor], SIGKILL);
    snprintf(pidtxt, sizeof pidtxt, "rank %d (pid %d) on this machine has ended", victim, pids[victim]);
    CHECK(log_has(survivor ? log1 : log0, pidtxt));
    int steps = checkpoint_refiner_steps(run);
    printf("  the checkpoint opens: refiner step %d\n", steps);
    CHECK(steps >= 2);
    /* resume: the ranks started by hand again (another port), to the uninterrupted run's weights */
    port = test_free_port();
    snprintf(log0, sizeof log0, "%s.resume.0.log", run);
    snprintf(log1, sizeof log1, "%s.resume.1.log", run);
    pids[0] = start_rank(0, port, run, "--resume", log0);
    pids[1] = start_rank(1, port, run, "--resume", log1);
    int s0 = 0, s1 = 0;
    CHECK(test_wait_pid(pids[0], 900, &s0) && exit_code(s0) == 0);
    CHECK(test_wait_pid(pids[1], 900, &s1) && exit_code(s1) == 0);
    CHECK(same_model("ref", run));
}

static void test_kill_rank1_then_resume(void) { kill_and_resume(1, "kill1"); }
static void test_kill_rank0_then_resume(void) { kill_and_resume(0, "kill0"); }

static void test_rank_never_arrives(void) {
    int port = test_free_port(), status = 0;
    double t0 = test_now();
    int pid = start_rank(0, port, "alone", "--dist-timeout 3", "alone.log");
    int ended = test_wait_pid(pid, 60, &status);
    double dt = test_now() - t0;
    printf("  rank 0 alone (timeout 3 s): exited %d after %.1f s\n", ended ? exit_code(status) : -1, dt);
    CHECK(ended && exit_code(status) != 0 && dt < 20);
    if (!ended) kill(pid, SIGKILL);
    CHECK(log_has("alone.log", "rank 0 of 2 could not join the group"));
    CHECK(log_has("alone.log", "not every rank arrived within the timeout"));
}

static void test_store_port_in_use(void) {
    int fd = -1, port = test_busy_port(&fd), s0 = 0, s1 = 0;
    CHECK(port > 0);
    int p0 = start_rank(0, port, "busy", "--dist-timeout 3", "busy.0.log");
    int p1 = start_rank(1, port, "busy", "--dist-timeout 3", "busy.1.log");
    int e0 = test_wait_pid(p0, 60, &s0), e1 = test_wait_pid(p1, 60, &s1);
    CHECK(e0 && exit_code(s0) != 0 && e1 && exit_code(s1) != 0);
    if (!e0) kill(p0, SIGKILL);
    if (!e1) kill(p1, SIGKILL);
    CHECK(log_has("busy.0.log", "the store's port is in use on this machine"));
    CHECK(log_has("busy.1.log", "rank 1 of 2 could not join the group"));
    close(fd);
}

static void test_rank_fails_alone_in_setup(void) {
    int port = test_free_port(), s0 = 0, s1 = 0;
    int p0 = start_rank(0, port, "setup", "", "setup.0.log");
    int p1 = start_rank(1, port, "setup", "--data-root no-such-folder", "setup.1.log");
    CHECK(test_wait_pid(p0, 120, &s0) && exit_code(s0) == 2);
    CHECK(test_wait_pid(p1, 120, &s1) && exit_code(s1) == 2);
    CHECK(log_has("setup.0.log", "rank 1 of 2 stopped setting up"));
    CHECK(log_has("setup.0.log", "no-such-folder"));
    CHECK(log_has("setup.1.log", "no-such-folder"));
}

static void test_slow_checkpoints_are_waited_for(void) {
    int pid = start_nproc("slow", "DRDC_TEST_CHECKPOINT_DELAY_MS=2500", "--dist-timeout 2", "slow.log"), status = 0;
    CHECK(test_wait_pid(pid, 900, &status) && exit_code(status) == 0);
    CHECK(same_model("ref", "slow"));
}

/* The ranks of a launcher, by their RANK in /proc/<pid>/environ. */
static int launcher_rank_pid(int launcher, int rank) {
    char path[128], want[32], buf[65536];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", launcher, launcher);
    snprintf(want, sizeof want, "RANK=%d", rank);
    FILE *f = fopen(path, "r");
    int child, found = -1;
    while (f && found < 0 && fscanf(f, "%d", &child) == 1) {
        char ep[64];
        snprintf(ep, sizeof ep, "/proc/%d/environ", child);
        FILE *e = fopen(ep, "rb");
        size_t n = e ? fread(buf, 1, sizeof buf - 1, e) : 0;
        if (e) fclose(e);
        for (size_t i = 0; i < n; i += strlen(buf + i) + 1) {
            buf[n] = '\0';
            if (!strcmp(buf + i, want)) found = child;
        }
    }
    if (f) fclose(f);
    return found;
}

static void test_launcher_names_a_killed_rank(void) {
    int pid = start_nproc("lk", "", "", "lk.log"), status = 0;
    CHECK(wait_for_row("lk", "refiner,3,", pid, 0));
    int r1 = launcher_rank_pid(pid, 1);
    CHECK(r1 > 0);
    if (r1 > 0) kill(r1, SIGKILL);
    double t0 = test_now();
    int ended = test_wait_pid(pid, 90, &status);
    printf("  --nproc: rank 1 killed, the launcher exited %d after %.2f s\n", ended ? exit_code(status) : -1,
           test_now() - t0);
    CHECK(ended && exit_code(status) == 128 + SIGKILL);
    if (!ended) kill(pid, SIGKILL);
    char said[128];
    snprintf(said, sizeof said, "rank 1 (pid %d) was killed by signal 9", r1);
    CHECK(log_has("lk.log", said));
    CHECK(log_has("lk.log", "rank 0 of 2, refiner step"));   /* rank 0's own account */
    CHECK(!log_has("lk.log", "terminating"));                 /* it stopped by itself */
}

int main(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    if (!dt_dist_compiled()) test_skip("this build has no c10d (install libgloo-dev and reconfigure)");
    snprintf(g_tmp, sizeof g_tmp, "%s", test_tmpdir("dist_faults"));
    if (test_tiny_setup(g_tmp, 2, 7, 3) != 0) return 1;
    RUN(test_reference);
    RUN(test_kill_rank1_then_resume);
    RUN(test_kill_rank0_then_resume);
    RUN(test_rank_never_arrives);
    RUN(test_store_port_in_use);
    RUN(test_rank_fails_alone_in_setup);
    RUN(test_slow_checkpoints_are_waited_for);
    RUN(test_launcher_names_a_killed_rank);
    return test_summary();
}
