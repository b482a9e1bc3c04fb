/* sysinfo.c: facts about the running process (sysinfo.h). */
#define _GNU_SOURCE
#include "drdc/core/sysinfo.h"

#include <dlfcn.h>

const char *drdc_allocator_name(void) {
    return dlsym(RTLD_DEFAULT, "tc_malloc") ? "tcmalloc" : "glibc malloc";
}
