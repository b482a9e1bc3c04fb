/* fuzz_config.c: libFuzzer target for drdc_config_parse (include/drdc/config.h).
 * The input, NUL-terminated, is parsed as a config over drdc_config_defaults; on success the
 * resolved config is validated again and serialised back to JSON, and that JSON must parse
 * again (round trip) over fresh defaults. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    drdc_config *cfg = malloc(sizeof *cfg); /* on the heap so ASan sees overruns of its arrays */
    if (!cfg) {
        free(text);
        return 0;
    }
    drdc_config_defaults(cfg);
    if (drdc_config_parse(cfg, text, "fuzz.json") == DRDC_OK) {
        if (drdc_config_validate(cfg) != DRDC_OK) __builtin_trap();
        char *json = drdc_config_to_json(cfg);
        if (json) {
            drdc_config_defaults(cfg);
            if (drdc_config_parse(cfg, json, "roundtrip.json") != DRDC_OK) __builtin_trap();
            free(json);
        }
    }
    free(cfg);
    free(text);
    return 0;
}
