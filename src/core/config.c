/* config.c: loading, overriding, validating and serialising the drdc configuration
 * (include/drdc/config.h).
 *
 * One table (k_keys) lists every key: its JSON path, type, place in drdc_config, range and
 * default (as JSON text). The same table and the same apply_value() drive the defaults, file
 * parsing, --set overrides, range validation and serialisation, so a new key is one line. */
#define _XOPEN_SOURCE 700
#include "drdc/core/config.h"
#include "drdc/core/fsutil.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum key_type {
    KT_INT,
    KT_DOUBLE,
    KT_BOOL,
    KT_STRING,
    KT_INT_LIST,
    KT_DOUBLE_LIST,
    KT_STRING_LIST,
} key_type;

enum {
    KF_MIN_OPEN = 1,  /* value must be > min (else >= min) */
    KF_MAX_OPEN = 2,  /* value must be < max (else <= max) */
    KF_NONEMPTY = 4,  /* list needs at least one entry */
};

typedef struct key_def {
    const char *path;      /* JSON path "section.key" (or "key" at top level) */
    key_type type;
    size_t offset;         /* of the value (lists: of the first element) in drdc_config */
    size_t count_offset;   /* lists: of the int holding the entry count */
    size_t cap;            /* strings: buffer bytes; string lists: bytes per entry */
    double min, max;       /* numbers and list entries */
    unsigned flags;        /* KF_* */
    const char *def;       /* default, as JSON text */
    const char *choices;   /* strings: allowed values "a|b|c", or NULL for any */
} key_def;

#define OFF(f) offsetof(drdc_config, f)
#define FSIZE(f) sizeof(((drdc_config *)0)->f)
#define K_INT(p, f, lo, hi, d) {p, KT_INT, OFF(f), 0, 0, lo, hi, 0, d, NULL}
#define K_DBL(p, f, lo, hi, fl, d) {p, KT_DOUBLE, OFF(f), 0, 0, lo, hi, fl, d, NULL}
#define K_BOOL(p, f, d) {p, KT_BOOL, OFF(f), 0, 0, 0, 1, 0, d, NULL}
#define K_STR(p, f, d, ch) {p, KT_STRING, OFF(f), 0, FSIZE(f), 0, 0, 0, d, ch}
#define K_ILIST(p, f, n, lo, hi, fl, d) {p, KT_INT_LIST, OFF(f), OFF(n), 0, lo, hi, fl, d, NULL}
#define K_DLIST(p, f, n, lo, hi, fl, d) {p, KT_DOUBLE_LIST, OFF(f), OFF(n), 0, lo, hi, fl, d, NULL}
#define K_SLIST(p, f, n, d) {p, KT_STRING_LIST, OFF(f), OFF(n), FSIZE(f[0]), 0, 0, 0, d, NULL}

#define BIG 1e9
static const key_def k_keys[] = {
    K_STR("name", name, "\"default\"", NULL),

    K_STR("data.dataset", data.dataset, "\"mvtec\"", "mvtec|mpdd|btad|visa|folder"),
    K_STR("data.root", data.root, "\"demo-data\"", NULL),
    K_SLIST("data.categories", data.categories, data.n_categories, "[]"),
    K_INT("data.image_size", data.image_size, 16, 4096, "224"),
    K_DBL("data.val_fraction", data.val_fraction, 0, 0.9, 0, "0.1"),
    K_INT("data.workers", data.workers, 1, 256, "2"),

    K_STR("backbone.arch", backbone.arch, "\"mobilenet_v2\"", NULL),
    K_STR("backbone.weights", backbone.weights, "\"\"", NULL),
    K_ILIST("backbone.blocks", backbone.blocks, backbone.n_blocks, 0, 200, 0, "[]"),

    K_INT("base.hidden", base.hidden, 2, 16384, "256"),
    K_INT("base.heads", base.heads, 1, 1024, "8"),
    K_INT("base.enc_layers", base.enc_layers, 1, 64, "4"),
    K_INT("base.dec_layers", base.dec_layers, 1, 64, "4"),
    K_INT("base.ffn", base.ffn, 1, 65536, "1024"),
    K_DBL("base.dropout", base.dropout, 0, 1, KF_MAX_OPEN, "0.1"),
    K_INT("base.neighbor_mask", base.neighbor_mask, 0, 99, "7"),
    K_DBL("base.jitter_scale", base.jitter_scale, 0, 1e6, 0, "20"),
    K_DBL("base.jitter_prob", base.jitter_prob, 0, 1, 0, "1.0"),
    K_DBL("base.lr", base.lr, 0, 10, KF_MIN_OPEN, "1e-4"),
    K_DBL("base.weight_decay", base.weight_decay, 0, 10, 0, "1e-4"),
    K_DBL("base.clip", base.clip, 0, BIG, 0, "0.1"),
    K_INT("base.epochs", base.epochs, 1, BIG, "1000"),
    K_INT("base.batch", base.batch, 1, 65536, "8"),
    K_INT("base.lr_step", base.lr_step, 1, BIG, "800"),
    K_DBL("base.lr_gamma", base.lr_gamma, 0, 1, KF_MIN_OPEN, "0.1"),

    K_INT("refiner.image_size", refiner.image_size, 16, 4096, "224"),
    K_INT("refiner.channels", refiner.channels, 1, 4096, "128"),
    K_ILIST("refiner.channel_mult", refiner.channel_mult, refiner.n_mult, 1, 64, KF_NONEMPTY, "[1, 1, 2, 2, 4, 4]"),
    K_INT("refiner.res_blocks", refiner.res_blocks, 1, 16, "2"),
    K_ILIST("refiner.attention_res", refiner.attention_res, refiner.n_attention, 1, 4096, 0, "[28, 14, 7]"),
    K_INT("refiner.head_channels", refiner.head_channels, 1, 4096, "64"),
    K_DBL("refiner.dropout", refiner.dropout, 0, 1, KF_MAX_OPEN, "0.0"),
    K_INT("refiner.timesteps", refiner.timesteps, 2, 100000, "1000"),
    K_DBL("refiner.beta_start", refiner.beta_start, 0, 1, KF_MIN_OPEN | KF_MAX_OPEN, "1e-4"),
    K_DBL("refiner.beta_end", refiner.beta_end, 0, 1, KF_MIN_OPEN | KF_MAX_OPEN, "0.02"),
    K_INT("refiner.max_train_t", refiner.max_train_t, 1, 100000, "1000"),
    K_DBL("refiner.lr", refiner.lr, 0, 10, KF_MIN_OPEN, "1e-4"),
    K_DBL("refiner.weight_decay", refiner.weight_decay, 0, 10, 0, "0.0"),
    K_DBL("refiner.clip", refiner.clip, 0, BIG, 0, "1.0"),
    K_INT("refiner.steps", refiner.steps, 1, BIG, "100000"),
    K_INT("refiner.batch", refiner.batch, 1, 65536, "8"),
    K_DBL("refiner.ema_decay", refiner.ema_decay, 0, 1, KF_MAX_OPEN, "0.999"),
    K_BOOL("refiner.ema_warmup", refiner.ema_warmup, "true"),
    K_BOOL("refiner.model_conditioning", refiner.model_conditioning, "true"),

    K_INT("infer.tau", infer.tau, 1, 100000, "250"),
    K_STR("infer.start", infer.start, "\"image\"", "image|masked"),
    K_BOOL("infer.clip_x0", infer.clip_x0, "false"),
    K_INT("infer.steps", infer.steps, 1, 100000, "10"),
    K_INT("infer.K", infer.K, 1, 65536, "2"),
    K_ILIST("infer.grids", infer.grids, infer.n_grids, 1, 4096, KF_NONEMPTY, "[8, 16]"),
    K_DLIST("infer.scales", infer.scales, infer.n_scales, 0, 1, KF_MIN_OPEN | KF_NONEMPTY, "[1, 0.5, 0.25]"),
    K_DLIST("infer.base_scales", infer.base_scales, infer.n_base_scales, 0, 1, KF_MIN_OPEN | KF_NONEMPTY, "[1]"),
    K_INT("infer.filter", infer.filter, 1, 255, "7"),
    K_DBL("infer.alpha", infer.alpha, 0, 1, 0, "0.9"),
    K_INT("infer.pool", infer.pool, 1, 4096, "16"),
    K_STR("infer.standardize", infer.standardize, "\"normal\"", "normal|none"),
    K_STR("infer.diff_norm", infer.diff_norm, "\"none\"", "none|image_mean"),
    K_DBL("infer.threshold_quantile", infer.threshold_quantile, 0, 1, 0, "0.99"),
    K_DBL("infer.pixel_quantile", infer.pixel_quantile, 0, 1, 0, "0.999"),
    K_INT("infer.batch", infer.batch, 1, 65536, "4"),
    K_STR("infer.precision", infer.precision, "\"fp32\"", "fp32|bf16"),
    K_BOOL("infer.batch_refiner", infer.batch_refiner, "false"),

    K_INT("train.seed", train.seed, 0, INT_MAX, "133"),
    K_STR("train.out", train.out, "\"\"", NULL),
    K_INT("train.checkpoint_every", train.checkpoint_every, 1, BIG, "500"),
    K_INT("train.log_every", train.log_every, 1, BIG, "10"),
    K_BOOL("train.bf16", train.bf16, "false"),
};
#define N_KEYS ((int)(sizeof k_keys / sizeof k_keys[0]))

/* Keys added after model files were first written, with the value that reproduces what such a
 * file was trained and calibrated with (drdc_config_parse_stored). Append-only. */
static const struct {
    const char *path;
    const char *legacy;   /* JSON text */
} k_legacy[] = {
    {"infer.start", "\"masked\""},
    {"infer.clip_x0", "false"},
    {"refiner.ema_warmup", "false"},
};

/* ---- small helpers -------------------------------------------------------------------- */

static void *field(drdc_config *c, size_t off) { return (char *)c + off; }
static const void *cfield(const drdc_config *c, size_t off) { return (const char *)c + off; }

static const key_def *find_key(const char *path) {
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(k_keys[i].path, path) == 0) return &k_keys[i];
    return NULL;
}

/* Is `name` a section ("base"), i.e. the prefix of some key path? */
static int is_section(const char *name) {
    size_t n = strlen(name);
    for (int i = 0; i < N_KEYS; i++)
        if (strncmp(k_keys[i].path, name, n) == 0 && k_keys[i].path[n] == '.') return 1;
    return 0;
}

static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 120 || lb > 120) return 1000;
    int prev[128], cur[128];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(int));
    }
    return prev[lb];
}

static drdc_status unknown_key(const char *path) {
    const char *best = NULL;
    int best_d = 1000;
    for (int i = 0; i < N_KEYS; i++) {
        int d = edit_distance(path, k_keys[i].path);
        if (d < best_d) {
            best_d = d;
            best = k_keys[i].path;
        }
    }
    int limit = (int)strlen(path) / 4;
    if (limit < 2) limit = 2;
    if (best && best_d > limit) {
        /* same key name in another section ("refiner.epochs" -> "base.epochs")? */
        const char *leaf = strrchr(path, '.');
        leaf = leaf ? leaf + 1 : path;
        best = NULL;
        for (int i = 0; i < N_KEYS && !best; i++) {
            const char *kl = strrchr(k_keys[i].path, '.');
            if (strcmp(kl ? kl + 1 : k_keys[i].path, leaf) == 0) best = k_keys[i].path;
        }
    }
    if (best) return drdc_fail(DRDC_ERR_CONFIG, "unknown key '%s' (did you mean '%s'?)", path, best);
    return drdc_fail(DRDC_ERR_CONFIG, "unknown key '%s'", path);
}

/* "string \"abc\"", "number 2.5", ... for wrong-type messages. */
static void describe(const cJSON *v, char *buf, size_t cap) {
    if (cJSON_IsString(v)) snprintf(buf, cap, "string \"%.60s\"", v->valuestring);
    else if (cJSON_IsNumber(v)) snprintf(buf, cap, "number %.17g", v->valuedouble);
    else if (cJSON_IsBool(v)) snprintf(buf, cap, "boolean %s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNull(v)) snprintf(buf, cap, "null");
    else if (cJSON_IsArray(v)) snprintf(buf, cap, "a list");
    else if (cJSON_IsObject(v)) snprintf(buf, cap, "an object");
    else snprintf(buf, cap, "an invalid value");
}

static const char *type_name(key_type t) {
    switch (t) {
    case KT_INT: return "an integer";
    case KT_DOUBLE: return "a number";
    case KT_BOOL: return "a boolean (true or false)";
    case KT_STRING: return "a string";
    case KT_INT_LIST: return "a list of integers";
    case KT_DOUBLE_LIST: return "a list of numbers";
    case KT_STRING_LIST: return "a list of strings";
    }
    return "?";
}

static drdc_status wrong_type(const key_def *k, const cJSON *v, int index) {
    char got[128];
    describe(v, got, sizeof got);
    if (index >= 0)
        return drdc_fail(DRDC_ERR_CONFIG, "key '%s' expects %s, got %s at index %d", k->path, type_name(k->type),
                         got, index);
    return drdc_fail(DRDC_ERR_CONFIG, "key '%s' expects %s, got %s", k->path, type_name(k->type), got);
}

static int in_range(const key_def *k, double v) {
    if (k->flags & KF_MIN_OPEN ? !(v > k->min) : !(v >= k->min)) return 0;
    if (k->flags & KF_MAX_OPEN ? !(v < k->max) : !(v <= k->max)) return 0;
    return 1;
}

static drdc_status out_of_range(const key_def *k, double v, int index) {
    char at[32] = "";
    if (index >= 0) snprintf(at, sizeof at, " (index %d)", index);
    return drdc_fail(DRDC_ERR_CONFIG, "key '%s' = %.17g%s is out of range %c%.17g, %.17g%c", k->path, v, at,
                     k->flags & KF_MIN_OPEN ? '(' : '[', k->min, k->max, k->flags & KF_MAX_OPEN ? ')' : ']');
}

static int choice_ok(const key_def *k, const char *s) {
    if (!k->choices) return 1;
    size_t n = strlen(s);
    for (const char *p = k->choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

static drdc_status bad_choice(const key_def *k, const char *s) {
    char list[256];
    snprintf(list, sizeof list, "%s", k->choices);
    for (char *p = list; *p; p++)
        if (*p == '|') *p = '/';
    return drdc_fail(DRDC_ERR_CONFIG, "key '%s' = '%s' is not one of %s", k->path, s, list);
}

/* An integer JSON value within int range. */
static int json_int(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (d != floor(d) || d < (double)INT_MIN || d > (double)INT_MAX) return 0;
    *out = (int)d;
    return 1;
}

static drdc_status check_string(const key_def *k, const char *s, size_t cap, int index) {
    if (strlen(s) >= cap) {
        if (index >= 0)
            return drdc_fail(DRDC_ERR_CONFIG, "key '%s' entry %d is too long (%zu bytes, at most %zu)", k->path,
                             index, strlen(s), cap - 1);
        return drdc_fail(DRDC_ERR_CONFIG, "key '%s' is too long (%zu bytes, at most %zu)", k->path, strlen(s),
                         cap - 1);
    }
    if (!choice_ok(k, s)) return bad_choice(k, s);
    return DRDC_OK;
}

/* Checks a JSON value against key k and stores it into c. The one place values enter a config. */
static drdc_status apply_value(drdc_config *c, const key_def *k, const cJSON *v) {
    drdc_status st = DRDC_OK;
    switch (k->type) {
    case KT_INT: {
        int x;
        if (!json_int(v, &x)) {
            if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble)) return out_of_range(k, v->valuedouble, -1);
            return wrong_type(k, v, -1);
        }
        if (!in_range(k, x)) return out_of_range(k, x, -1);
        *(int *)field(c, k->offset) = x;
        return DRDC_OK;
    }
    case KT_DOUBLE: {
        if (!cJSON_IsNumber(v)) return wrong_type(k, v, -1);
        if (!in_range(k, v->valuedouble)) return out_of_range(k, v->valuedouble, -1);
        *(double *)field(c, k->offset) = v->valuedouble;
        return DRDC_OK;
    }
    case KT_BOOL:
        if (!cJSON_IsBool(v)) return wrong_type(k, v, -1);
        *(int *)field(c, k->offset) = cJSON_IsTrue(v) ? 1 : 0;
        return DRDC_OK;
    case KT_STRING: {
        if (!cJSON_IsString(v)) return wrong_type(k, v, -1);
        TRY(check_string(k, v->valuestring, k->cap, -1));
        char *dst = field(c, k->offset);
        memset(dst, 0, k->cap);
        memcpy(dst, v->valuestring, strlen(v->valuestring));
        return DRDC_OK;
    }
    case KT_INT_LIST:
    case KT_DOUBLE_LIST:
    case KT_STRING_LIST: {
        if (!cJSON_IsArray(v)) return wrong_type(k, v, -1);
        int n = cJSON_GetArraySize(v);
        if (n > DRDC_MAX_LIST)
            return drdc_fail(DRDC_ERR_CONFIG, "key '%s' has %d entries, at most %d", k->path, n, DRDC_MAX_LIST);
        if (n == 0 && (k->flags & KF_NONEMPTY))
            return drdc_fail(DRDC_ERR_CONFIG, "key '%s' needs at least one entry", k->path);
        int ints[DRDC_MAX_LIST];
        double dbls[DRDC_MAX_LIST];
        int i = 0;
        for (const cJSON *e = v->child; e; e = e->next, i++) {
            if (k->type == KT_INT_LIST) {
                if (!json_int(e, &ints[i])) return wrong_type(k, e, i);
                if (!in_range(k, ints[i])) return out_of_range(k, ints[i], i);
            } else if (k->type == KT_DOUBLE_LIST) {
                if (!cJSON_IsNumber(e)) return wrong_type(k, e, i);
                dbls[i] = e->valuedouble;
                if (!in_range(k, dbls[i])) return out_of_range(k, dbls[i], i);
            } else {
                if (!cJSON_IsString(e)) return wrong_type(k, e, i);
                TRY(check_string(k, e->valuestring, k->cap, i));
            }
        }
        if (k->type == KT_INT_LIST) {
            memset(field(c, k->offset), 0, DRDC_MAX_LIST * sizeof(int));
            memcpy(field(c, k->offset), ints, (size_t)n * sizeof(int));
        } else if (k->type == KT_DOUBLE_LIST) {
            memset(field(c, k->offset), 0, DRDC_MAX_LIST * sizeof(double));
            memcpy(field(c, k->offset), dbls, (size_t)n * sizeof(double));
        } else {
            char *dst = field(c, k->offset);
            memset(dst, 0, DRDC_MAX_LIST * k->cap);
            i = 0;
            for (const cJSON *e = v->child; e; e = e->next, i++)
                memcpy(dst + (size_t)i * k->cap, e->valuestring, strlen(e->valuestring));
        }
        *(int *)field(c, k->count_offset) = n;
        return DRDC_OK;
    }
    }
    return drdc_fail(DRDC_ERR_STATE, "key '%s': bad type in the key table", k->path);
done:
    return st;
}

/* The JSON value of key k in c (NULL on OOM). */
static cJSON *value_json(const drdc_config *c, const key_def *k) {
    switch (k->type) {
    case KT_INT: return cJSON_CreateNumber(*(const int *)cfield(c, k->offset));
    case KT_DOUBLE: return cJSON_CreateNumber(*(const double *)cfield(c, k->offset));
    case KT_BOOL: return cJSON_CreateBool(*(const int *)cfield(c, k->offset));
    case KT_STRING: return cJSON_CreateString((const char *)cfield(c, k->offset));
    default: break;
    }
    int n = *(const int *)cfield(c, k->count_offset);
    if (n < 0) n = 0;
    if (n > DRDC_MAX_LIST) n = DRDC_MAX_LIST;
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *e = NULL;
        if (k->type == KT_INT_LIST) e = cJSON_CreateNumber(((const int *)cfield(c, k->offset))[i]);
        else if (k->type == KT_DOUBLE_LIST) e = cJSON_CreateNumber(((const double *)cfield(c, k->offset))[i]);
        else e = cJSON_CreateString((const char *)cfield(c, k->offset) + (size_t)i * k->cap);
        if (!e) {
            cJSON_Delete(a);
            return NULL;
        }
        cJSON_AddItemToArray(a, e);
    }
    return a;
}

/* ---- defaults, parsing, overrides ------------------------------------------------------- */

void drdc_config_defaults(drdc_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < N_KEYS; i++) {
        cJSON *v = cJSON_Parse(k_keys[i].def);
        if (v) apply_value(cfg, &k_keys[i], v); /* table defaults are valid (checked by the tests) */
        cJSON_Delete(v);
    }
}

/* max_train_t follows timesteps ("default = timesteps") unless it was set explicitly. */
static void follow_timesteps(drdc_config *c, const drdc_config *before, int timesteps_set, int max_t_set) {
    if (timesteps_set && !max_t_set && before->refiner.max_train_t == before->refiner.timesteps)
        c->refiner.max_train_t = c->refiner.timesteps;
}

static drdc_status apply_key(drdc_config *c, const char *path, const cJSON *v, unsigned char *seen) {
    const key_def *k = find_key(path);
    if (!k) return unknown_key(path);
    int idx = (int)(k - k_keys);
    if (seen[idx]) return drdc_fail(DRDC_ERR_CONFIG, "key '%s' is given twice", path);
    seen[idx] = 1;
    return apply_value(c, k, v);
}

/* Applies every key of a parsed JSON object (nested sections, or flat "section.key" names). */
static drdc_status apply_object(drdc_config *c, const cJSON *root, unsigned char *seen) {
    drdc_status st = DRDC_OK;
    for (const cJSON *e = root->child; e; e = e->next) {
        const char *name = e->string;
        if (find_key(name)) {
            TRY(apply_key(c, name, e, seen));
        } else if (is_section(name)) {
            if (!cJSON_IsObject(e)) {
                char got[128];
                describe(e, got, sizeof got);
                return drdc_fail(DRDC_ERR_CONFIG, "'%s' must be an object (a section of keys), got %s", name, got);
            }
            for (const cJSON *s = e->child; s; s = s->next) {
                char path[256];
                snprintf(path, sizeof path, "%s.%s", name, s->string);
                TRY(apply_key(c, path, s, seen));
            }
        } else {
            return unknown_key(name);
        }
    }
done:
    return st;
}

static void line_col(const char *text, const char *at, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (const char *p = text; p < at && *p; p++) {
        if (*p == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Applies a parsed config object over tmp (a copy of cfg, which is the state before), then the
 * legacy values of keys the text lacks (stored) and the checks (validate). Errors get the source
 * as context. */
static drdc_status apply_root(drdc_config *tmp, const drdc_config *cfg, const cJSON *root, const char *src,
                              int validate, int stored) {
    unsigned char seen[N_KEYS];
    cJSON *v = NULL;
    drdc_status st = DRDC_OK;
    memset(seen, 0, sizeof seen);
    TRY(apply_object(tmp, root, seen));
    for (size_t i = 0; stored && i < sizeof k_legacy / sizeof k_legacy[0]; i++) {
        const key_def *k = find_key(k_legacy[i].path);
        if (seen[k - k_keys]) continue;
        v = cJSON_Parse(k_legacy[i].legacy);
        if (!v) {
            st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", src);
            goto done;
        }
        TRY(apply_value(tmp, k, v));
        cJSON_Delete(v);
        v = NULL;
    }
    const key_def *kt = find_key("refiner.timesteps"), *km = find_key("refiner.max_train_t");
    follow_timesteps(tmp, cfg, seen[kt - k_keys], seen[km - k_keys]);
    if (validate) TRY(drdc_config_validate(tmp));
done:
    cJSON_Delete(v);
    if (st) drdc_error_context(st, "%s", src);
    return st;
}

/* validate = 0 defers the checks to the caller (drdc_config_resolve validates once at the end);
 * stored = 1 gives keys the text lacks their legacy value (k_legacy). */
static drdc_status parse_impl(drdc_config *cfg, const char *json_text, const char *source_name, int validate,
                              int stored) {
    const char *src = source_name ? source_name : "<config>";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json_text, &end, 1);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t len = strlen(json_text);
        if (!at || at < json_text || at > json_text + len) at = json_text + len;
        int line, col;
        line_col(json_text, at, &line, &col);
        if (*at == '\0')
            return drdc_fail(DRDC_ERR_CONFIG, "%s:%d:%d: JSON syntax error at the end of the text", src, line, col);
        /* up to 12 characters of the line on each side of the error (the error often sits at a
         * line end: "64,}" shows the stray comma that cJSON reports one character later) */
        const char *from = at;
        while (from > json_text && from[-1] != '\n' && at - from < 12) from--;
        char near[32];
        size_t k = 0;
        for (const char *p = from; *p && *p != '\n' && p < at + 12 && k < sizeof near - 1; p++) near[k++] = *p;
        near[k] = '\0';
        return drdc_fail(DRDC_ERR_CONFIG, "%s:%d:%d: JSON syntax error near '%s'", src, line, col, near);
    }
    drdc_config *tmp = NULL;
    drdc_status st = DRDC_OK;
    if (!cJSON_IsObject(root)) {
        st = drdc_fail(DRDC_ERR_CONFIG, "%s: the config must be a JSON object { ... }", src);
        goto done;
    }
    tmp = malloc(sizeof *tmp);
    if (!tmp) {
        st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", src);
        goto done;
    }
    memcpy(tmp, cfg, sizeof *tmp);
    TRY(apply_root(tmp, cfg, root, src, validate, stored));
    memcpy(cfg, tmp, sizeof *cfg);
done:
    cJSON_Delete(root);
    free(tmp);
    return st;
}

drdc_status drdc_config_parse(drdc_config *cfg, const char *json_text, const char *source_name) {
    return parse_impl(cfg, json_text, source_name, 1, 0);
}

drdc_status drdc_config_parse_stored(drdc_config *cfg, const char *json_text, const char *source_name) {
    return parse_impl(cfg, json_text, source_name, 1, 1);
}

static drdc_status load_impl(drdc_config *cfg, const char *path, int validate) {
    char *text = NULL;
    size_t len = 0;
    drdc_config *tmp = NULL;
    drdc_status st = DRDC_OK;
    TRY(drdc_read_file(path, &text, &len));
    if (len + 1 >= ((size_t)16 << 20)) {
        st = drdc_fail(DRDC_ERR_CONFIG, "%s: config file larger than 16 MB", path);
        goto done;
    }
    if (strlen(text) != len) {
        st = drdc_fail(DRDC_ERR_CONFIG, "%s: contains a NUL byte; not a JSON text file", path);
        goto done;
    }

    /* name defaults to the file's base name without .json; the file's own "name" wins */
    tmp = malloc(sizeof *tmp);
    if (!tmp) {
        st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(tmp, cfg, sizeof *tmp);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t blen = strlen(base);
    if (blen > 5 && strcmp(base + blen - 5, ".json") == 0) blen -= 5;
    if (blen >= sizeof tmp->name) blen = sizeof tmp->name - 1;
    if (blen > 0) {
        memset(tmp->name, 0, sizeof tmp->name);
        memcpy(tmp->name, base, blen);
    }
    TRY(parse_impl(tmp, text, path, validate, 0));
    memcpy(cfg, tmp, sizeof *cfg);
done:
    free(text);
    free(tmp);
    return st;
}

drdc_status drdc_config_load(drdc_config *cfg, const char *path) { return load_impl(cfg, path, 1); }

/* --set value text -> JSON value for key k (NULL on OOM). */
static cJSON *set_value_json(const key_def *k, const char *text) {
    int is_list = k->type == KT_INT_LIST || k->type == KT_DOUBLE_LIST || k->type == KT_STRING_LIST;
    if (is_list && text[0] != '[') {
        cJSON *a = cJSON_CreateArray();
        const char *p = text;
        while (a && *text) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            char *piece = malloc(len + 1);
            if (!piece) {
                cJSON_Delete(a);
                return NULL;
            }
            memcpy(piece, p, len);
            piece[len] = '\0';
            cJSON *e = k->type == KT_STRING_LIST ? NULL : cJSON_Parse(piece);
            if (!e || cJSON_IsArray(e) || cJSON_IsObject(e)) {
                cJSON_Delete(e);
                e = cJSON_CreateString(piece);
            }
            free(piece);
            if (!e) {
                cJSON_Delete(a);
                return NULL;
            }
            cJSON_AddItemToArray(a, e);
            if (!comma) break;
            p = comma + 1;
        }
        return a;
    }
    cJSON *v = cJSON_Parse(text);
    if (k->type == KT_STRING && v && !cJSON_IsString(v)) {
        cJSON_Delete(v);
        v = NULL;
    }
    if (!v && !is_list) v = cJSON_CreateString(text);
    return v;
}

/* Applies value v of key k over tmp (a copy of cfg) and checks it (validate); errors get the
 * --set option as context. */
static drdc_status apply_set(drdc_config *tmp, const drdc_config *cfg, const key_def *k, const cJSON *v,
                             const char *assignment, int validate) {
    drdc_status st = DRDC_OK;
    TRY(apply_value(tmp, k, v));
    follow_timesteps(tmp, cfg, strcmp(k->path, "refiner.timesteps") == 0, 0);
    if (validate) TRY(drdc_config_validate(tmp));
done:
    if (st) drdc_error_context(st, "--set %s", assignment);
    return st;
}

static drdc_status set_impl(drdc_config *cfg, const char *assignment, int validate) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return drdc_fail(DRDC_ERR_CONFIG, "--set '%s': expected section.key=value", assignment);
    char path[256];
    size_t plen = (size_t)(eq - assignment);
    if (plen >= sizeof path) return drdc_fail(DRDC_ERR_CONFIG, "--set: key too long in '%s'", assignment);
    memcpy(path, assignment, plen);
    path[plen] = '\0';
    const key_def *k = find_key(path);
    if (!k) return drdc_error_context(unknown_key(path), "--set %s", assignment);
    cJSON *v = set_value_json(k, eq + 1);
    if (!v) {
        if (k->type == KT_INT_LIST || k->type == KT_DOUBLE_LIST || k->type == KT_STRING_LIST)
            return drdc_fail(DRDC_ERR_CONFIG, "--set %s: '%s' is not a JSON list", assignment, eq + 1);
        return drdc_fail(DRDC_ERR_NOMEM, "--set %s: out of memory", assignment);
    }
    drdc_status st = DRDC_OK;
    drdc_config *tmp = malloc(sizeof *tmp);
    if (!tmp) {
        st = drdc_fail(DRDC_ERR_NOMEM, "--set %s: out of memory", assignment);
        goto done;
    }
    memcpy(tmp, cfg, sizeof *tmp);
    TRY(apply_set(tmp, cfg, k, v, assignment, validate));
    memcpy(cfg, tmp, sizeof *cfg);
done:
    cJSON_Delete(v);
    free(tmp);
    return st;
}

drdc_status drdc_config_set(drdc_config *cfg, const char *assignment) { return set_impl(cfg, assignment, 1); }

drdc_status drdc_config_set_string(drdc_config *cfg, const char *key, const char *value, const char *what) {
    const key_def *k = find_key(key);
    if (!k || k->type != KT_STRING) return drdc_fail(DRDC_ERR_STATE, "config key '%s' is not a string key", key);
    if (strlen(value) >= k->cap)
        return drdc_fail(DRDC_ERR_INPUT, "%s is %zu bytes long; at most %zu fit (%s): nothing is cut", what,
                         strlen(value), k->cap - 1, key);
    cJSON *v = cJSON_CreateString(value);
    if (!v) return drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    drdc_status st = apply_value(cfg, k, v);
    cJSON_Delete(v);
    return st ? drdc_error_context(st, "%s", what) : DRDC_OK;
}

drdc_status drdc_config_resolve(drdc_config *cfg, const char *arg, const char *const *sets, int n_sets, char *path,
                                int cap) {
    drdc_status st = drdc_config_find(arg, path, cap);
    if (st) return st;
    drdc_config_defaults(cfg);
    TRY(load_impl(cfg, path, 0));
    for (int i = 0; i < n_sets; i++) TRY(set_impl(cfg, sets[i], 0));
    st = drdc_config_validate(cfg);
    if (st) drdc_error_context(st, n_sets ? "%s with the --set options" : "%s", path);
done:
    return st;
}

/* ---- validation ------------------------------------------------------------------------- */

/* Every key's type-independent range (the table), for structs filled by code, not by parsing. */
static drdc_status validate_ranges(const drdc_config *c) {
    drdc_status st = DRDC_OK;
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &k_keys[i];
        switch (k->type) {
        case KT_INT: {
            int v = *(const int *)cfield(c, k->offset);
            if (!in_range(k, v)) return out_of_range(k, v, -1);
            break;
        }
        case KT_DOUBLE: {
            double v = *(const double *)cfield(c, k->offset);
            if (!in_range(k, v)) return out_of_range(k, v, -1);
            break;
        }
        case KT_BOOL: {
            int v = *(const int *)cfield(c, k->offset);
            if (v != 0 && v != 1) return drdc_fail(DRDC_ERR_CONFIG, "key '%s' = %d is not a boolean", k->path, v);
            break;
        }
        case KT_STRING: {
            const char *s = cfield(c, k->offset);
            if (memchr(s, '\0', k->cap) == NULL)
                return drdc_fail(DRDC_ERR_CONFIG, "key '%s' is not terminated", k->path);
            TRY(check_string(k, s, k->cap, -1));
            break;
        }
        default: {
            int n = *(const int *)cfield(c, k->count_offset);
            if (n < 0 || n > DRDC_MAX_LIST)
                return drdc_fail(DRDC_ERR_CONFIG, "key '%s' has %d entries, allowed 0..%d", k->path, n, DRDC_MAX_LIST);
            if (n == 0 && (k->flags & KF_NONEMPTY))
                return drdc_fail(DRDC_ERR_CONFIG, "key '%s' needs at least one entry", k->path);
            for (int j = 0; j < n; j++) {
                if (k->type == KT_INT_LIST) {
                    int v = ((const int *)cfield(c, k->offset))[j];
                    if (!in_range(k, v)) return out_of_range(k, v, j);
                } else if (k->type == KT_DOUBLE_LIST) {
                    double v = ((const double *)cfield(c, k->offset))[j];
                    if (!in_range(k, v)) return out_of_range(k, v, j);
                } else {
                    const char *s = (const char *)cfield(c, k->offset) + (size_t)j * k->cap;
                    if (memchr(s, '\0', k->cap) == NULL || !*s)
                        return drdc_fail(DRDC_ERR_CONFIG, "key '%s' entry %d is empty or not terminated", k->path, j);
                }
            }
        }
        }
    }
done:
    return st;
}

drdc_status drdc_config_validate(const drdc_config *cfg) {
    drdc_status st = DRDC_OK;
    TRY(validate_ranges(cfg));
    const drdc_data_config *d = &cfg->data;
#define FAIL(...) return drdc_fail(DRDC_ERR_CONFIG, __VA_ARGS__)
    if (!cfg->name[0]) FAIL("name must not be empty (it names the run folder runs/<name>)");
    for (int i = 0; i < d->n_categories; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(d->categories[i], d->categories[j]) == 0)
                FAIL("data.categories lists '%s' twice", d->categories[i]);
    if (d->image_size % 16 != 0)
        FAIL("data.image_size %d is not a multiple of 16 (the backbone features are at stride 16)", d->image_size);
#undef FAIL
done:
    return st;
}

/* ---- finding and serialising ------------------------------------------------------------ */

drdc_status drdc_config_find(const char *arg, char *out, int cap) {
    if (!arg || !*arg) return drdc_fail(DRDC_ERR_INPUT, "no config given");
    char tried[4096] = "";
    size_t tlen = 0;
    char cand[2 * DRDC_PATH_CAP + 64];
    const char *prefixes[4] = {"", "configs/", NULL, NULL};
    char exe_dir[DRDC_PATH_CAP];
    char p_configs[DRDC_PATH_CAP + 32], p_share[DRDC_PATH_CAP + 32];
    ssize_t n = readlink("/proc/self/exe", exe_dir, sizeof exe_dir - 1);
    if (n > 0) {
        exe_dir[n] = '\0';
        char *slash = strrchr(exe_dir, '/');
        if (slash) *slash = '\0';
        snprintf(p_configs, sizeof p_configs, "%s/../configs/", exe_dir);
        snprintf(p_share, sizeof p_share, "%s/../share/drdc/configs/", exe_dir);
        prefixes[2] = p_configs;
        prefixes[3] = p_share;
    }
    int n_prefix = arg[0] == '/' ? 1 : 4;
    size_t alen = strlen(arg);
    int has_json = alen > 5 && strcmp(arg + alen - 5, ".json") == 0;
    for (int p = 0; p < n_prefix; p++) {
        if (!prefixes[p]) continue;
        for (int v = 0; v < (has_json ? 1 : 2); v++) {
            snprintf(cand, sizeof cand, "%s%s%s", prefixes[p], arg, v ? ".json" : "");
            if (drdc_is_file(cand)) {
                char resolved[PATH_MAX];
                const char *found = cand;
                if (p >= 2 && realpath(cand, resolved)) found = resolved; /* drop the "bin/.." */
                if (strlen(found) >= (size_t)cap)
                    return drdc_fail(DRDC_ERR_INPUT, "config path '%s' is too long (%zu bytes)", found, strlen(found));
                snprintf(out, (size_t)cap, "%s", found);
                return DRDC_OK;
            }
            if (tlen < sizeof tried)
                tlen += (size_t)snprintf(tried + tlen, sizeof tried - tlen, "%s%s", tlen ? ", " : "", cand);
        }
    }
    return drdc_fail(DRDC_ERR_INPUT, "config '%s' not found; tried: %s", arg, tried);
}

char *drdc_config_to_json(const drdc_config *cfg) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &k_keys[i];
        cJSON *parent = root;
        const char *dot = strchr(k->path, '.');
        const char *leaf = k->path;
        if (dot) {
            char sec[64];
            snprintf(sec, sizeof sec, "%.*s", (int)(dot - k->path), k->path);
            parent = cJSON_GetObjectItemCaseSensitive(root, sec);
            if (!parent) parent = cJSON_AddObjectToObject(root, sec);
            leaf = dot + 1;
        }
        cJSON *v = parent ? value_json(cfg, k) : NULL;
        if (!v) {
            cJSON_Delete(root);
            return NULL;
        }
        cJSON_AddItemToObject(parent, leaf, v);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return NULL;
    /* cJSON indents with tabs and writes "key":<tab>value; make it two spaces and ": " */
    size_t tabs = 0, len = strlen(text);
    for (size_t i = 0; i < len; i++) tabs += text[i] == '\t';
    char *out = malloc(len + tabs + 2);
    if (!out) {
        cJSON_free(text);
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '\t') out[o++] = text[i];
        else if (i > 0 && text[i - 1] == ':') out[o++] = ' ';
        else {
            out[o++] = ' ';
            out[o++] = ' ';
        }
    }
    out[o++] = '\n';
    out[o] = '\0';
    cJSON_free(text);
    return out;
}
