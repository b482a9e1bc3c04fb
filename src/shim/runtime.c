/* runtime.c: device and thread choice for a command, in one place (see runtime.h). */
#include "drdc/shim/runtime.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int drdc_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)n : 1;
}

int drdc_cpu_has_flag(const char *flag) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f || !flag || !flag[0]) {
        if (f) fclose(f);
        return 0;
    }
    char line[8192];
    int found = 0;
    const size_t n = strlen(flag);
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        for (const char *p = strstr(line, flag); p && !found; p = strstr(p + 1, flag))
            found = (p == line || p[-1] == ' ' || p[-1] == '\t') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0');
        break;   /* every core lists the same flags */
    }
    fclose(f);
    return found;
}

drdc_status drdc_runtime_init(drdc_runtime *rt, const char *device_arg, int threads) {
    drdc_status st = dt_device_parse(&rt->device, device_arg ? device_arg : "auto");
    if (st) return drdc_error_context(DRDC_ERR_USAGE, "--device");
    rt->threads = threads > 0 ? threads : drdc_cpu_count();
    st = dt_set_num_threads(rt->threads);
    if (st) return drdc_error_context(st, "--threads %d", rt->threads);
    dt_device_format(rt->device_name, sizeof rt->device_name, rt->device);
    return DRDC_OK;
}
