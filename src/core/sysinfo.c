/* sysinfo.c: facts about the running process (sysinfo.h). */
#define _GNU_SOURCE
#include "drdc/core/sysinfo.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

const char *drdc_allocator_name(void) {
    return dlsym(RTLD_DEFAULT, "tc_malloc") ? "tcmalloc" : "glibc malloc";
}

/* The value of the first line of text that starts with key followed by blanks and ':', trimmed,
 * into v (at most n bytes); 0 when there is none. */
static int field(const char *text, const char *key, char *v, size_t n) {
    const size_t kl = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, key, kl)) continue;
        const char *p = l + kl;
        while (*p == ' ' || *p == '\t') p++;
        if (*p != ':') continue;
        p++;
        while (*p == ' ' || *p == '\t') p++;
        size_t len = strcspn(p, "\n");
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r')) len--;
        if (!len) return 0;
        snprintf(v, n, "%.*s", (int)len, p);
        return 1;
    }
    return 0;
}

char *drdc_cpu_model_parse(const char *cpuinfo, char *out, size_t n) {
    char name[160], fam[32], mod[32];
    if (!cpuinfo || !field(cpuinfo, "model name", name, sizeof name)) {
        snprintf(out, n, "unknown CPU");
        return out;
    }
    if (field(cpuinfo, "cpu family", fam, sizeof fam) && field(cpuinfo, "model", mod, sizeof mod))
        snprintf(out, n, "%s (family %s, model %s)", name, fam, mod);
    else
        snprintf(out, n, "%s", name);
    return out;
}

char *drdc_cpu_model(char *out, size_t n) {
    char buf[16384];
    size_t got = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        got = fread(buf, 1, sizeof buf - 1, f);   /* the first processor's lines are enough */
        fclose(f);
    }
    buf[got] = 0;
    return drdc_cpu_model_parse(got ? buf : NULL, out, n);
}
