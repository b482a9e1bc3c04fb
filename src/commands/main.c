/* main.c: `drdc`: dispatches to a subcommand (see commands.h). */
#include "drdc/commands/commands.h"
#include "drdc/core/fsutil.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void print_usage(FILE *f) {
    int n;
    const drdc_command_entry *cmds = drdc_commands(&n);
    fprintf(f,
            "usage: drdc <command> [options]\n\n"
            "DRDC: multi-class industrial anomaly detection with diffusion refinement (ECCV 2024).\n"
            "One model for every product category, trained on defect-free images only.\n\ncommands:\n");
    for (int i = 0; i < n; i++) fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\n  drdc <command> --help   options of one command\n  drdc --version          "
               "versions and devices\n\nexit codes: 0 ok, 1 runtime error, 2 usage or input error, 3 some images could not be "
               "judged (infer: unreadable files or error verdicts), 130/143 interrupted by SIGINT/SIGTERM\n");
}

/* libtorch's OpenMP threads (libgomp) spin-wait between parallel regions by default, and
 * libgomp reads OMP_WAIT_POLICY once, in its constructor, before main runs. Spinning threads steal
 * the cores that OpenBLAS, the data loader and the main thread need: measured here on 2 cores,
 * training the base model ran at 0.65 images/s spinning and 4.3 images/s with PASSIVE, and one
 * image through `infer --image` took 2.9-4.3 s spinning against 1.1-1.7 s. So unless the user chose
 * a policy, drdc re-executes itself once with OMP_WAIT_POLICY=PASSIVE added to its environment.
 * It does so from .preinit_array: the dynamic loader calls this before any library's constructor,
 * so the first process has only been mapped and relocated (about 30 ms) and never pays libtorch's
 * static initialisation (about 0.4 s of CPU, what re-executing from main cost). Only system calls
 * run here (libc is not initialised yet): the environment is read from envp, not getenv. */
static void ensure_passive_openmp(int argc, char **argv, char **envp) {
    (void)argc;
    static char policy[] = "OMP_WAIT_POLICY=PASSIVE";
    static char *env[4096];
    int n = 0;
    for (char **e = envp; e && *e; e++) {
        if (!strncmp(*e, "OMP_WAIT_POLICY=", 16) || n >= 4094) return;   /* the user's choice; or too many */
        env[n++] = *e;
    }
    env[n++] = policy;
    env[n] = NULL;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);   /* the real path keeps the process name */
    if (len <= 0) return;
    self[len] = '\0';
    execve(self, argv, env);   /* returns only on failure: then go on as we are */
}
__attribute__((section(".preinit_array"), used)) static void (*const preinit_openmp)(int, char **, char **) =
    ensure_passive_openmp;

/* SIGINT and SIGTERM: remove this process's temporary files (a half-written output never stays
 * behind; finished files and checkpoints are whole) and exit 128 + the signal. */
static void on_signal(int sig) {
    drdc_remove_temp_files();
    static const char msg[] = "drdc: interrupted; temporary files removed\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(128 + sig);
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* libtorch 1.x runs its own elementwise and norm kernels (SiLU, GroupNorm, ...) at AVX2 unless
     * told otherwise, even on AVX-512 CPUs; ATen checks the CPU itself and reads this once, at its
     * first kernel (measured on the U-Net's activations: SiLU 0.57 ms against 0.85 at AVX2, bf16
     * GroupNorm 0.82 against 1.07). A user's own setting wins. */
    setenv("ATEN_CPU_CAPABILITY", "avx512", 0);
#ifdef __GLIBC__
    /* Large activations (a U-Net batch is tens of MB) would otherwise be mmap'd and unmapped on
     * every call and fault their pages back in each time: measured 25-40 % of a U-Net pass. Keep
     * freed memory in the process instead (peak memory is unchanged). */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        print_usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "version")) {
        drdc_print_version(stdout);
        return 0;
    }
    int n;
    const drdc_command_entry *cmds = drdc_commands(&n);
    for (int i = 0; i < n; i++)
        if (!strcmp(name, cmds[i].name)) return cmds[i].run(argc - 1, argv + 1);
    fprintf(stderr, "drdc: unknown command '%s' (see 'drdc --help')\n", name);
    return 2;
}
