/* test_dist_shim.c: the shim's process groups (dist.h) with real processes on 127.0.0.1: two
 * ranks forked from this test join through a store (hosted by rank 0, or by a launcher-style
 * server on a free port), all-reduce, broadcast, meet at a barrier and pass a value through the
 * store; a rank whose peer dies fails at once, a rank whose peer never arrives fails after the
 * timeout, and a store port in use is an error naming the problem. Skips (77) when the build has
 * no c10d. */
#define _GNU_SOURCE
#include "testlib.h"
#include "drdc/shim/dist.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static dt_dist_options opts(int rank, int world, int port, int client, double timeout) {
    dt_dist_options o = {rank, world, "127.0.0.1", port, client, NULL, timeout, {DT_CPU, 0}};
    return o;
}

/* Child bodies return their exit code: 0 as expected, 1 not. */
static int child_collectives(int rank, int port, int client) {
    dt_dist_options o = opts(rank, 2, port, client, 20);
    if (dt_dist_init(&o)) {
        fprintf(stderr, "rank %d: init: %s\n", rank, drdc_last_error());
        return 1;
    }
    int bad = dt_dist_rank() != rank || dt_dist_world() != 2 || strcmp(dt_dist_backend(), "gloo") != 0;
    float a[3] = {(float)rank + 1, 10.0f * (rank + 1), -1}, b[2] = {(float)rank, 7};
    const int64_t sa[1] = {3}, sb[1] = {2};
    dt_tensor ta = NULL, tb = NULL;
    if (dt_from_host(&ta, a, DT_F32, sa, 1, (dt_device){DT_CPU, 0}) ||
        dt_from_host(&tb, b, DT_F32, sb, 1, (dt_device){DT_CPU, 0}))
        return 1;
    const dt_tensor bufs[2] = {ta, tb};
    if (dt_dist_allreduce_mean(bufs, 2) || dt_copy_to_host(ta, a, sizeof a) || dt_copy_to_host(tb, b, sizeof b)) {
        fprintf(stderr, "rank %d: allreduce: %s\n", rank, drdc_last_error());
        return 1;
    }
    bad |= a[0] != 1.5f || a[1] != 15.0f || a[2] != -1.0f || b[0] != 0.5f || b[1] != 7.0f;
    float c[2] = {(float)rank * 3 + 1, 2};
    const int64_t sc[1] = {2};
    dt_tensor tc = NULL;
    if (dt_from_host(&tc, c, DT_F32, sc, 1, (dt_device){DT_CPU, 0}) || dt_dist_broadcast(tc, 1) ||
        dt_copy_to_host(tc, c, sizeof c) || dt_dist_barrier()) {
        fprintf(stderr, "rank %d: broadcast/barrier: %s\n", rank, drdc_last_error());
        return 1;
    }
    bad |= c[0] != 4.0f;
    /* the store: rank 1 waits for what rank 0 sets */
    char got[16] = "";
    size_t n = 0;
    if (rank == 0 && dt_dist_store_set("drdc/test", "hello", 5)) return 1;
    if (rank == 1 && (dt_dist_store_get("drdc/test", 10, got, sizeof got - 1, &n) || n != 5 || strcmp(got, "hello"))) {
        fprintf(stderr, "rank 1: store: %s (%zu bytes '%s')\n", drdc_last_error(), n, got);
        return 1;
    }
    /* a wrong buffer is an input error, not a crash */
    dt_tensor i64 = NULL;
    const int64_t one[1] = {1};
    int64_t v = 1;
    if (dt_from_host(&i64, &v, DT_I64, one, 1, (dt_device){DT_CPU, 0})) return 1;
    bad |= dt_dist_allreduce_mean(&i64, 1) != DRDC_ERR_INPUT;
    if (bad) fprintf(stderr, "rank %d: wrong values: %g %g %g %g %g %g\n", rank, a[0], a[1], a[2], b[0], b[1], c[0]);
    dt_tensor all[4] = {ta, tb, tc, i64};
    dt_free_all(all, 4);
    dt_dist_finalize();
    return bad || dt_dist_world() != 1;
}

/* Rank 1 dies after joining; rank 0's next all-reduce must fail, quickly. */
static int child_dead_peer(int rank, int port) {
    dt_dist_options o = opts(rank, 2, port, 0, 30);
    if (dt_dist_init(&o) || dt_dist_barrier()) {   /* both fully joined before rank 1 goes */
        fprintf(stderr, "rank %d: joining: %s\n", rank, drdc_last_error());
        return 1;
    }
    if (rank == 1) _exit(0);   /* no goodbye: the connections just close */
    usleep(300 * 1000);
    float x = 1;
    const int64_t s[1] = {1};
    dt_tensor t = NULL;
    if (dt_from_host(&t, &x, DT_F32, s, 1, (dt_device){DT_CPU, 0})) return 1;
    double t0 = test_now();
    drdc_status st = dt_dist_allreduce_mean(&t, 1);
    double dt = test_now() - t0;
    fprintf(stderr, "rank 0 after its peer died: %s in %.2f s: %s\n", drdc_status_name(st), dt, drdc_last_error());
    return !(st == DRDC_ERR_TORCH && dt < 10);
}

static int child_alone(int port, double timeout) {
    dt_dist_options o = opts(0, 2, port, 0, timeout);
    double t0 = test_now();
    drdc_status st = dt_dist_init(&o);
    double dt = test_now() - t0;
    fprintf(stderr, "rank 0 alone: %s after %.2f s (timeout %g s): %s\n", drdc_status_name(st), dt, timeout,
            drdc_last_error());
    return !(st == DRDC_ERR_TORCH && dt >= timeout * 0.9 && dt < timeout + 10);
}

static int child_port_in_use(int port) {
    dt_dist_options o = opts(0, 2, port, 0, 3);
    drdc_status st = dt_dist_init(&o);
    fprintf(stderr, "rank 0 on a used port: %s: %s\n", drdc_status_name(st), drdc_last_error());
    return st == DRDC_OK;
}

/* Forks n children running body(rank); returns how many did not exit 0. */
static int run_children(int n, int (*body)(int rank, void *ctx), void *ctx) {
    pid_t pids[8];
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < n; r++) {
        pids[r] = fork();
        if (pids[r] == 0) _exit(body(r, ctx));
    }
    int failed = 0;
    for (int r = 0; r < n; r++) {
        int status = 0;
        waitpid(pids[r], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child rank %d: status %d\n", r, status);
            failed++;
        }
    }
    return failed;
}

static int body_collectives_rank0_store(int rank, void *ctx) { return child_collectives(rank, *(int *)ctx, 0); }

static void test_collectives_store_on_rank0(void) {
    int port = test_free_port();
    CHECK(run_children(2, body_collectives_rank0_store, &port) == 0);
}

/* A launcher-style store (dt_dist_serve on port 0): the children fork first, then learn the port. */
static void test_collectives_launcher_store(void) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pids[2];
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            close(fds[1]);
            int port = 0;
            if (read(fds[0], &port, sizeof port) != sizeof port) _exit(3);   /* one copy each */
            _exit(child_collectives(r, port, 1));
        }
    }
    close(fds[0]);
    dt_dist_server srv = NULL;
    int port = 0;
    CHECK_OK(dt_dist_serve(&srv, "127.0.0.1", 0, 20, &port));
    CHECK(port > 0);
    printf("  launcher store on port %d\n", port);
    for (int i = 0; i < 2; i++) CHECK(write(fds[1], &port, sizeof port) == sizeof port);
    close(fds[1]);
    for (int r = 0; r < 2; r++) {
        int status = 0;
        waitpid(pids[r], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    dt_dist_server_free(srv);
}

static int body_dead_peer(int rank, void *ctx) { return child_dead_peer(rank, *(int *)ctx); }

static void test_dead_peer_fails_fast(void) {
    int port = test_free_port();
    CHECK(run_children(2, body_dead_peer, &port) == 0);
}

static int body_alone(int rank, void *ctx) {
    (void)rank;
    return child_alone(*(int *)ctx, 3);
}

static void test_peer_never_arrives(void) {
    int port = test_free_port();
    CHECK(run_children(1, body_alone, &port) == 0);
}

static int body_port_in_use(int rank, void *ctx) {
    (void)rank;
    return child_port_in_use(*(int *)ctx);
}

static void test_port_in_use(void) {
    int fd = -1, port = test_busy_port(&fd);
    CHECK(port > 0);
    CHECK(run_children(1, body_port_in_use, &port) == 0);
    close(fd);
}

static void test_single_process_is_a_no_op(void) {
    dt_dist_options o = opts(0, 1, 0, 0, 1);
    CHECK_OK(dt_dist_init(&o));
    CHECK(dt_dist_rank() == 0 && dt_dist_world() == 1);
    CHECK_OK(dt_dist_allreduce_mean(NULL, 0));
    CHECK_OK(dt_dist_barrier());
    o.rank = 2;
    CHECK_ERR(dt_dist_init(&o), DRDC_ERR_INPUT, "rank 2");
    dt_dist_finalize();
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    if (!dt_dist_compiled()) test_skip("this build has no c10d (install libgloo-dev and reconfigure)");
    RUN(test_single_process_is_a_no_op);
    RUN(test_collectives_store_on_rank0);
    RUN(test_collectives_launcher_store);
    RUN(test_dead_peer_fails_fast);
    RUN(test_peer_never_arrives);
    RUN(test_port_in_use);
    return test_summary();
}
