/* csv.c: the RFC 4180 CSV reader (see csv.h): one pass over the text into a single storage
 * block (fields NUL-terminated) plus row and field start tables. */
#include "drdc/formats/csv.h"
#include "drdc/core/fsutil.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void drdc_csv_free(drdc_csv *csv) {
    if (!csv) return;
    free(csv->row_start);
    free(csv->row_line);
    free(csv->fields);
    free(csv->storage);
    memset(csv, 0, sizeof *csv);
}

/* Growable int array. */
static drdc_status oom(const char *name) {
    return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory reading CSV", name);
}

static int ivec_push(int **v, size_t *n, size_t *cap, int x) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int *p = realloc(*v, c * sizeof *p);
        if (!p) return -1;
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = x;
    return 0;
}

drdc_status drdc_csv_parse(const char *buf, size_t len, const char *source_name, drdc_csv *out) {
    memset(out, 0, sizeof *out);
    const char *name = source_name ? source_name : "(csv)";
    if (len > (size_t)0x3fffffff)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: file too large for the CSV reader (%zu bytes)", name, len);
    /* Field texts are never longer than the input; each field needs one terminator, and there
     * are at most len + 1 fields, so 2 * len + 2 bytes always suffice. */
    char *store = malloc(2 * len + 2);
    char **fields = NULL;
    int *fstart = NULL, *rstart = NULL, *rline = NULL;
    size_t nf = 0, cf = 0, nr = 0, cr = 0, nl = 0, cl = 0;
    drdc_status st = DRDC_OK;
    if (!store) return oom(name);
    size_t w = 0, i = 0;
    int line = 1;
    if (len >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB && (unsigned char)buf[2] == 0xBF)
        i = 3;
    while (i < len) {
        /* start of a row: skip blank lines */
        if (buf[i] == '\n') { line++; i++; continue; }
        if (buf[i] == '\r') { line++; i += (i + 1 < len && buf[i + 1] == '\n') ? 2 : 1; continue; }
        if (ivec_push(&rstart, &nr, &cr, (int)nf) || ivec_push(&rline, &nl, &cl, line)) {
            st = oom(name);
            goto done;
        }
        for (;;) {   /* one field per iteration */
            if (ivec_push(&fstart, &nf, &cf, (int)w)) {
                st = oom(name);
                goto done;
            }
            if (i < len && buf[i] == '"') {
                int qline = line;
                i++;
                for (;;) {
                    if (i >= len) {
                        st = drdc_fail(DRDC_ERR_FORMAT, "%s:%d: quoted field not closed before end of file", name, qline);
                        goto done;
                    }
                    char ch = buf[i];
                    if (ch == '\0') {
                        st = drdc_fail(DRDC_ERR_FORMAT, "%s:%d: NUL byte in a field", name, line);
                        goto done;
                    }
                    if (ch == '"') {
                        if (i + 1 < len && buf[i + 1] == '"') { store[w++] = '"'; i += 2; continue; }
                        i++;
                        break;
                    }
                    if (ch == '\n') line++;
                    else if (ch == '\r' && !(i + 1 < len && buf[i + 1] == '\n')) line++;
                    store[w++] = ch;
                    i++;
                }
                if (i < len && buf[i] != ',' && buf[i] != '\n' && buf[i] != '\r') {
                    st = drdc_fail(DRDC_ERR_FORMAT, "%s:%d: unexpected '%c' after a closing quote (expected ',' or a line end)",
                                   name, line, isprint((unsigned char)buf[i]) ? buf[i] : '?');
                    goto done;
                }
            } else {
                while (i < len && buf[i] != ',' && buf[i] != '\n' && buf[i] != '\r') {
                    if (buf[i] == '"') {
                        st = drdc_fail(DRDC_ERR_FORMAT, "%s:%d: quote inside an unquoted field (quote the whole field)", name, line);
                        goto done;
                    }
                    if (buf[i] == '\0') {
                        st = drdc_fail(DRDC_ERR_FORMAT, "%s:%d: NUL byte in a field", name, line);
                        goto done;
                    }
                    store[w++] = buf[i++];
                }
            }
            store[w++] = '\0';
            if (i < len && buf[i] == ',') { i++; continue; }
            break;   /* line end or end of input */
        }
        if (i < len) {   /* consume the line end */
            line++;
            i += (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n') ? 2 : 1;
        }
    }
    if (ivec_push(&rstart, &nr, &cr, (int)nf)) {
        st = oom(name);
        goto done;
    }
    fields = malloc((nf ? nf : 1) * sizeof *fields);
    if (!fields) {
        st = oom(name);
        goto done;
    }
    for (size_t k = 0; k < nf; k++) fields[k] = store + fstart[k];
    out->n_rows = (int)nr - 1;
    out->row_start = rstart;
    out->row_line = rline;
    out->storage = store;
    out->fields = fields;
done:
    free(fstart);
    if (st) {   /* on success the tables are out's */
        free(store);
        free(rstart);
        free(rline);
        memset(out, 0, sizeof *out);
    }
    return st;
}

drdc_status drdc_csv_load(const char *path, drdc_csv *out) {
    memset(out, 0, sizeof *out);
    char *buf = NULL;
    size_t n = 0;
    drdc_status st = DRDC_OK;
    TRY(drdc_read_file(path, &buf, &n));
    TRY(drdc_csv_parse(buf, n, path, out));
done:
    free(buf);
    return st;
}

/* ---- writer --------------------------------------------------------------------------------------- */

static void put_bytes(drdc_csv_writer *w, const char *p, size_t n) {
    if (w->st) return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 1024;
        while (w->len + n + 1 > cap) cap *= 2;
        char *g = realloc(w->buf, cap);
        if (!g) {
            w->st = drdc_fail(DRDC_ERR_NOMEM, "out of memory writing CSV");
            return;
        }
        w->buf = g;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

void drdc_csv_put(drdc_csv_writer *w, const char *field) {
    if (w->fields_in_row++) put_bytes(w, ",", 1);
    if (!field) return;
    if (!strpbrk(field, ",\"\r\n")) {
        put_bytes(w, field, strlen(field));
        return;
    }
    put_bytes(w, "\"", 1);
    for (const char *p = field; *p; p++) {
        if (*p == '"')
            put_bytes(w, "\"\"", 2);   /* a quote inside a quoted field is doubled */
        else
            put_bytes(w, p, 1);
    }
    put_bytes(w, "\"", 1);
}

void drdc_csv_putf(drdc_csv_writer *w, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    drdc_csv_put(w, buf);
}

void drdc_csv_end_row(drdc_csv_writer *w) {
    put_bytes(w, "\r\n", 2);
    w->fields_in_row = 0;
}

drdc_status drdc_csv_writer_finish(drdc_csv_writer *w, const char **text, size_t *len) {
    if (w->st) return w->st;
    *text = w->buf ? w->buf : "";
    *len = w->len;
    return DRDC_OK;
}

void drdc_csv_writer_free(drdc_csv_writer *w) {
    free(w->buf);
    memset(w, 0, sizeof *w);
}
