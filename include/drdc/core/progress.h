/* progress.h: one progress line for long work (eval, train, infer over a folder).
 * On a terminal it redraws one line ("\r"); into a log file it writes a full line at most every
 * `log_seconds`. drdc_progress_end finishes the line so that later messages start clean. */
#ifndef DRDC_PROGRESS_H
#define DRDC_PROGRESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_progress {
    const char *label;     /* "eval", "train base" */
    int64_t total;         /* units of work (images, steps); 0 = unknown */
    double t0, last;       /* monotonic seconds */
    double log_seconds;    /* min interval between lines when not a terminal; default 10 */
    int tty, drawn, quiet;
} drdc_progress;

double drdc_now_seconds(void);   /* monotonic clock */
void drdc_progress_begin(drdc_progress *p, const char *label, int64_t total, int quiet);
/* done units so far; `extra` (may be NULL) is appended, e.g. "loss 0.0123". */
void drdc_progress_update(drdc_progress *p, int64_t done, const char *extra);
void drdc_progress_end(drdc_progress *p);

#ifdef __cplusplus
}
#endif
#endif
