/* progress.c: progress lines with rate and ETA (see progress.h). */
#include "drdc/core/progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double drdc_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void drdc_progress_begin(drdc_progress *p, const char *label, int64_t total, int quiet) {
    p->label = label;
    p->total = total;
    p->t0 = p->last = drdc_now_seconds();
    p->log_seconds = 10.0;
    p->tty = isatty(fileno(stderr));
    p->drawn = 0;
    p->quiet = quiet;
}

static void format_duration(char *buf, size_t cap, double s) {
    if (s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, cap, "%lds", t);
}

void drdc_progress_update(drdc_progress *p, int64_t done, const char *extra) {
    if (p->quiet) return;
    double now = drdc_now_seconds();
    int last_one = p->total > 0 && done >= p->total;
    if (!p->tty && !last_one && now - p->last < p->log_seconds) return;
    if (p->tty && !last_one && now - p->last < 0.2) return;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? done / el : 0;
    char eta[32] = "?", elapsed[32];
    if (p->total > 0 && rate > 0) format_duration(eta, sizeof eta, (p->total - done) / rate);
    format_duration(elapsed, sizeof elapsed, el);
    fprintf(stderr, "%s%s: %lld/%lld, %.2f/s, elapsed %s, ETA %s%s%s%s", p->tty ? "\r" : "", p->label,
            (long long)done, (long long)p->total, rate, elapsed, eta, extra ? ", " : "", extra ? extra : "",
            p->tty ? "\033[K" : "\n");
    p->drawn = p->tty;
    fflush(stderr);
}

void drdc_progress_end(drdc_progress *p) {
    if (p->drawn) fputc('\n', stderr);
    p->drawn = 0;
}
