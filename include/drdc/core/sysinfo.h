/* sysinfo.h: facts about the running process that its reports print. */
#ifndef DRDC_CORE_SYSINFO_H
#define DRDC_CORE_SYSINFO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The allocator behind malloc in this process: "tcmalloc" when gperftools' tcmalloc is linked (or
 * preloaded), else "glibc malloc". */
const char *drdc_allocator_name(void);

/* The CPU's name as /proc/cpuinfo's text gives it, for reports: "MODEL (family F, model M)", or
 * "MODEL" without the family/model lines, or "unknown CPU" without a "model name" line. Writes at
 * most n bytes (n > 0) with the terminating 0; returns out. */
char *drdc_cpu_model_parse(const char *cpuinfo, char *out, size_t n);

/* drdc_cpu_model_parse on this machine's /proc/cpuinfo ("unknown CPU" where it cannot be read). */
char *drdc_cpu_model(char *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
