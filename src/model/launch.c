/* launch.c: `drdc train --nproc N` for users without torchrun (see dist.h, drdc_dist_launch): a
 * TCPStore on a free loopback port, N copies of this program with torchrun's variables, and a
 * watch over them that names a rank that fails and stops the rest if they do not stop by
 * themselves. */
#define _GNU_SOURCE
#include "drdc/model/dist.h"
#include "drdc/core/progress.h"
#include "drdc/shim/dist.h"
#include "drdc/shim/runtime.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

/* environ without the variables the launcher sets, plus them: a NULL-terminated array (the
 * strings of `extra` are the caller's). */
static char **child_env(char **extra, int n_extra) {
    static const char *const ours[] = {"RANK=", "LOCAL_RANK=", "WORLD_SIZE=", "LOCAL_WORLD_SIZE=", "GROUP_RANK=",
                                       "MASTER_ADDR=", "MASTER_PORT=", "TORCHELASTIC_USE_AGENT_STORE=",
                                       "TORCHELASTIC_RESTART_COUNT=", "DRDC_LAUNCHER_PID="};
    int n = 0;
    while (environ[n]) n++;
    char **env = calloc((size_t)(n + n_extra + 1), sizeof *env);
    if (!env) return NULL;
    int k = 0;
    for (int i = 0; i < n; i++) {
        int skip = 0;
        for (size_t j = 0; j < sizeof ours / sizeof ours[0]; j++)
            if (strncmp(environ[i], ours[j], strlen(ours[j])) == 0) skip = 1;
        if (!skip) env[k++] = environ[i];
    }
    for (int i = 0; i < n_extra; i++) env[k++] = extra[i];
    env[k] = NULL;
    return env;
}

static void say_ended(int rank, pid_t pid, int status) {
    if (WIFSIGNALED(status))
        fprintf(stderr, "drdc train: rank %d (pid %d) was killed by signal %d (%s)\n", rank, (int)pid,
                WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        fprintf(stderr, "drdc train: rank %d (pid %d) failed with exit code %d\n", rank, (int)pid,
                WEXITSTATUS(status));
}

drdc_status drdc_dist_launch(char **argv, int nproc, int threads, double timeout_s, int *exit_code) {
    *exit_code = 1;
    if (nproc < 2 || nproc > 256) return drdc_fail(DRDC_ERR_USAGE, "--nproc %d: expected 2..256", nproc);
    if (!dt_dist_compiled())
        return drdc_fail(DRDC_ERR_INPUT, "--nproc %d: this drdc was built without c10d (libtorch's distributed "
                         "package), so it trains in one process only; rebuild with libgloo-dev installed", nproc);
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return drdc_fail(DRDC_ERR_IO, "cannot find this program (/proc/self/exe) to start the ranks");
    self[len] = '\0';
    int argc = 0;
    while (argv[argc]) argc++;
    char tbuf[16];
    int per_rank = drdc_cpu_count() / nproc > 0 ? drdc_cpu_count() / nproc : 1;
    snprintf(tbuf, sizeof tbuf, "%d", per_rank);
    char **cargv = calloc((size_t)argc + 3, sizeof *cargv);
    pid_t *pids = calloc((size_t)nproc, sizeof *pids);
    int *done_rank = calloc((size_t)nproc, sizeof *done_rank);
    char (*vars)[96] = calloc(10, sizeof *vars);
    char *extra[10];
    char **env = NULL;
    dt_dist_server srv = NULL;
    drdc_status st = DRDC_OK;
    struct sigaction sa, old_int, old_term;
    int handlers = 0;
    if (!cargv || !pids || !done_rank || !vars) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory starting the ranks");
        goto done;
    }
    for (int i = 0; i < argc; i++) cargv[i] = argv[i];
    if (threads <= 0) {   /* not given: the cores shared out */
        cargv[argc] = "--threads";
        cargv[argc + 1] = tbuf;
    } else {
        snprintf(tbuf, sizeof tbuf, "%d", threads);
    }
    int port = 0;
    TRY(dt_dist_serve(&srv, "127.0.0.1", 0, timeout_s, &port));
    printf("drdc train: starting %d ranks on this machine (store on port %d, %s threads each, --dist-timeout %g s)\n",
           nproc, port, tbuf, timeout_s);
    fflush(stdout);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    handlers = 1;
    g_signal = 0;
    for (int r = 0; r < nproc; r++) {
        snprintf(vars[0], 96, "RANK=%d", r);
        snprintf(vars[1], 96, "LOCAL_RANK=%d", r);
        snprintf(vars[2], 96, "WORLD_SIZE=%d", nproc);
        snprintf(vars[3], 96, "LOCAL_WORLD_SIZE=%d", nproc);
        snprintf(vars[4], 96, "GROUP_RANK=0");
        snprintf(vars[5], 96, "MASTER_ADDR=127.0.0.1");
        snprintf(vars[6], 96, "MASTER_PORT=%d", port);
        snprintf(vars[7], 96, "TORCHELASTIC_USE_AGENT_STORE=True");
        snprintf(vars[8], 96, "TORCHELASTIC_RESTART_COUNT=0");
        snprintf(vars[9], 96, "DRDC_LAUNCHER_PID=%d", (int)getpid());
        for (int i = 0; i < 10; i++) extra[i] = vars[i];
        free(env);
        if (!(env = child_env(extra, 10))) {
            st = drdc_fail(DRDC_ERR_NOMEM, "out of memory starting the ranks");
            goto stop;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            st = drdc_fail(DRDC_ERR_IO, "cannot start rank %d: %s", r, strerror(errno));
            goto stop;
        }
        if (pid == 0) {
            execve(self, cargv, env);
            _exit(127);
        }
        pids[r] = pid;
    }
    /* watch: the first failure starts a grace period, after which the rest are terminated */
    int alive = nproc, first_fail = -1, fail_code = 0, termed = 0;
    double deadline = 0;
    while (alive > 0) {
        int status = 0;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            int r = 0;
            while (r < nproc && pids[r] != pid) r++;
            if (r == nproc) continue;
            done_rank[r] = 1;
            alive--;
            int failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
            if (failed && !termed) say_ended(r, pid, status);
            if (failed && first_fail < 0) {
                first_fail = r;
                fail_code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
                deadline = drdc_now_seconds() + timeout_s + 10;
                if (alive > 0)
                    fprintf(stderr, "drdc train: the other ranks should stop by themselves; those still running in "
                            "%.0f s are terminated\n", timeout_s + 10);
            }
            continue;
        }
        if (g_signal) {   /* pass SIGINT/SIGTERM on; the ranks clean up and exit 128 + signal */
            int sig = g_signal;
            g_signal = 0;
            for (int r = 0; r < nproc; r++)
                if (!done_rank[r]) kill(pids[r], sig);
        }
        if (first_fail >= 0 && drdc_now_seconds() > deadline) {
            for (int r = 0; r < nproc; r++)
                if (!done_rank[r]) {
                    fprintf(stderr, "drdc train: rank %d (pid %d) is still running %.0f s after rank %d failed; %s it\n",
                            r, (int)pids[r], timeout_s + 10, first_fail, termed ? "killing" : "terminating");
                    kill(pids[r], termed ? SIGKILL : SIGTERM);
                }
            termed = 1;
            deadline = drdc_now_seconds() + 5;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *exit_code = first_fail < 0 ? 0 : fail_code;
    goto done;
stop:   /* starting failed: stop the ranks already started */
    for (int r = 0; r < nproc; r++)
        if (pids[r] > 0) {
            kill(pids[r], SIGTERM);
            waitpid(pids[r], NULL, 0);
        }
done:
    if (handlers) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    dt_dist_server_free(srv);
    free(env);
    free(cargv);
    free(pids);
    free(done_rank);
    free(vars);
    return st;
}
