/* sysinfo.h: facts about the running process that its reports print. */
#ifndef DRDC_CORE_SYSINFO_H
#define DRDC_CORE_SYSINFO_H

#ifdef __cplusplus
extern "C" {
#endif

/* The allocator behind malloc in this process: "tcmalloc" when gperftools' tcmalloc is linked (or
 * preloaded), else "glibc malloc". */
const char *drdc_allocator_name(void);

#ifdef __cplusplus
}
#endif
#endif
