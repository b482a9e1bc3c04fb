/* cli.c: option-table parsing and generated --help for every drdc command (see cli.h). */
#include "drdc/core/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const drdc_option *find_option(const drdc_command *cmd, const char *flag, size_t len) {
    for (int i = 0; i < cmd->n_options; i++) {
        const char *f = cmd->options[i].flag;
        if (strlen(f) == len && strncmp(f, flag, len) == 0) return &cmd->options[i];
    }
    return NULL;
}

static drdc_status range_error(const drdc_option *o, const char *value) {
    return drdc_fail(DRDC_ERR_USAGE, "%s %s: must be between %g and %g", o->flag, value, o->min, o->max);
}

static drdc_status set_value(const drdc_option *o, const char *value) {
    char *end = NULL;
    switch (o->type) {
    case DRDC_OPT_FLAG:
        return drdc_fail(DRDC_ERR_USAGE, "%s takes no value", o->flag);
    case DRDC_OPT_STRING:
        if (!*value) return drdc_fail(DRDC_ERR_USAGE, "%s: empty value", o->flag);
        *(const char **)o->target = value;
        return DRDC_OK;
    case DRDC_OPT_INT: {
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < -2147483647L || v > 2147483647L)
            return drdc_fail(DRDC_ERR_USAGE, "%s: '%s' is not a whole number", o->flag, value);
        if (o->min < o->max && (v < o->min || v > o->max)) return range_error(o, value);
        *(int *)o->target = (int)v;
        return DRDC_OK;
    }
    case DRDC_OPT_DOUBLE: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v))
            return drdc_fail(DRDC_ERR_USAGE, "%s: '%s' is not a number", o->flag, value);
        if (o->min < o->max && (v < o->min || v > o->max)) return range_error(o, value);
        *(double *)o->target = v;
        return DRDC_OK;
    }
    case DRDC_OPT_MULTI: {
        drdc_opt_multi *m = (drdc_opt_multi *)o->target;
        if (m->n >= DRDC_OPT_MULTI_CAP)
            return drdc_fail(DRDC_ERR_USAGE, "%s given more than %d times", o->flag, DRDC_OPT_MULTI_CAP);
        m->values[m->n++] = value;
        return DRDC_OK;
    }
    }
    return drdc_fail(DRDC_ERR_STATE, "%s: unknown option type", o->flag);
}

drdc_status drdc_cli_parse(const drdc_command *cmd, int argc, char **argv, int *help) {
    drdc_status st = DRDC_OK;
    *help = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            *help = 1;
            return DRDC_OK;
        }
        if (strncmp(arg, "--", 2) != 0)
            return drdc_fail(DRDC_ERR_USAGE, "unexpected argument '%s'", arg);
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const drdc_option *o = find_option(cmd, arg, len);
        if (!o) return drdc_fail(DRDC_ERR_USAGE, "unknown option '%.*s'", (int)len, arg);
        if (o->type == DRDC_OPT_FLAG) {
            if (eq) return drdc_fail(DRDC_ERR_USAGE, "%s takes no value", o->flag);
            *(int *)o->target = 1;
            continue;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc) return drdc_fail(DRDC_ERR_USAGE, "%s needs a value (%s)", o->flag, o->metavar);
            value = argv[++i];
        }
        TRY(set_value(o, value));
    }
done:
    return st;
}

void drdc_cli_print_help(FILE *f, const drdc_command *cmd) {
    fprintf(f, "usage: %s\n\n%s\n", cmd->usage, cmd->summary);
    if (cmd->n_options) fprintf(f, "\noptions:\n");
    for (int i = 0; i < cmd->n_options; i++) {
        const drdc_option *o = &cmd->options[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->flag, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        fprintf(f, "  %-24s %s", left, o->help);
        if (o->def) fprintf(f, " (default: %s)", o->def);
        fputc('\n', f);
    }
    fprintf(f, "  %-24s %s\n", "--help", "show this help and exit");
}

int drdc_cli_report(const char *cmd, drdc_status st) {
    if (st == DRDC_OK) return 0;
    fprintf(stderr, "drdc %s: %s\n", cmd, drdc_last_error());
    if (st == DRDC_ERR_USAGE) fprintf(stderr, "(see 'drdc %s --help')\n", cmd);
    return drdc_exit_code(st);
}

drdc_status drdc_cli_check_table(const drdc_command *cmd) {
    for (int i = 0; i < cmd->n_options; i++) {
        const drdc_option *o = &cmd->options[i];
        if (!o->flag || strncmp(o->flag, "--", 2) != 0 || !o->help || !o->target)
            return drdc_fail(DRDC_ERR_STATE, "%s: option %d is malformed", cmd->name, i);
        if ((o->type == DRDC_OPT_FLAG) != (o->metavar == NULL))
            return drdc_fail(DRDC_ERR_STATE, "%s: %s: a flag has no metavar, a valued option needs one",
                             cmd->name, o->flag);
        if (strcmp(o->flag, "--help") == 0)
            return drdc_fail(DRDC_ERR_STATE, "%s: --help is built in", cmd->name);
        for (int j = 0; j < i; j++)
            if (strcmp(o->flag, cmd->options[j].flag) == 0)
                return drdc_fail(DRDC_ERR_STATE, "%s: duplicate option %s", cmd->name, o->flag);
    }
    return DRDC_OK;
}

int drdc_cli_begin(const drdc_command *cmd, int argc, char **argv) {
    int help = 0;
    drdc_status st = drdc_cli_parse(cmd, argc, argv, &help);
    if (st) return drdc_cli_report(cmd->name, st);
    if (help) {
        drdc_cli_print_help(stdout, cmd);
        return 0;
    }
    return -1;
}
