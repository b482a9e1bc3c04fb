/* csv.h: a small RFC 4180 CSV reader, for the VisA split file (split_csv/1cls.csv); a fuzz target.
 *
 * Comma-separated; a field may be quoted with '"', inside which commas, CR and LF are literal and
 * "" is one quote; lines end with LF or CRLF (a lone CR too); a UTF-8 BOM is skipped; blank lines
 * are skipped; the last line may lack a line end. Errors (DRDC_ERR_FORMAT) name `source_name` and
 * the line: a quote inside an unquoted field, text after a closing quote, an unterminated quoted
 * field, a NUL byte. Rows may have different field counts (the caller checks). Input up to 1 GiB. */
#ifndef DRDC_CSV_H
#define DRDC_CSV_H

#include <stddef.h>

#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_csv {
    int n_rows;
    int *row_start;    /* (n_rows + 1) index into fields of each row's first field */
    int *row_line;     /* (n_rows) 1-based line number where the row starts */
    char **fields;     /* (row_start[n_rows]) NUL-terminated field texts */
    char *storage;     /* one block holding all field texts */
} drdc_csv;

/* Parses buf[0..len) (no terminator needed); source_name (NULL: "(csv)") names it in messages.
 * On failure *out is left zeroed. */
drdc_status drdc_csv_parse(const char *buf, size_t len, const char *source_name, drdc_csv *out);
/* Reads and parses the file at path (messages name it). */
drdc_status drdc_csv_load(const char *path, drdc_csv *out);
void drdc_csv_free(drdc_csv *csv);   /* safe on a zeroed struct */

/* A CSV writer into memory, RFC 4180: fields separated by commas, rows ended by CRLF, a field
 * quoted (with quotes doubled) when it holds a comma, quote, CR or LF. Errors (out of memory) are
 * kept in `st` and reported by drdc_csv_writer_finish. */
typedef struct drdc_csv_writer {
    char *buf;
    size_t len, cap;
    int fields_in_row;
    drdc_status st;
} drdc_csv_writer;
void drdc_csv_put(drdc_csv_writer *w, const char *field);          /* one field (NULL: empty) */
void drdc_csv_putf(drdc_csv_writer *w, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;                                                              /* one formatted field */
void drdc_csv_end_row(drdc_csv_writer *w);
/* The text so far (NUL-terminated) and its length, or the first error. */
drdc_status drdc_csv_writer_finish(drdc_csv_writer *w, const char **text, size_t *len);
void drdc_csv_writer_free(drdc_csv_writer *w);
static inline int drdc_csv_row_fields(const drdc_csv *csv, int row) {
    return csv->row_start[row + 1] - csv->row_start[row];
}
static inline const char *drdc_csv_field(const drdc_csv *csv, int row, int col) {
    return csv->fields[csv->row_start[row] + col];
}

#ifdef __cplusplus
}
#endif
#endif
