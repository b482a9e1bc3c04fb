/* fuzz_csv.c: libFuzzer target for drdc_csv_parse (include/drdc/formats/csv.h).
 * On success every row and field is read (each field must be NUL-terminated inside the
 * result's storage) and the row start table must be non-decreasing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    drdc_csv csv;
    memset(&csv, 0, sizeof csv);
    if (drdc_csv_parse((const char *)data, size, "fuzz.csv", &csv) == DRDC_OK) {
        volatile size_t total = 0;
        for (int r = 0; r < csv.n_rows; r++) {
            if (csv.row_start[r + 1] < csv.row_start[r]) __builtin_trap();
            if (csv.row_line[r] < 1) __builtin_trap();
            int nf = drdc_csv_row_fields(&csv, r);
            for (int c = 0; c < nf; c++) total += strlen(drdc_csv_field(&csv, r, c));
        }
        if (total > size) __builtin_trap(); /* fields can only shrink the text */
    }
    drdc_csv_free(&csv); /* safe after a failure too */
    return 0;
}
