/* cli.h: one option table per command, parsed the same way everywhere.
 *
 * Each command declares a static table of drdc_option {flag, metavar, type, target, help,
 * default text}. drdc_cli_parse fills the targets; an unknown option, a missing value, a bad
 * number or a value out of range is DRDC_ERR_USAGE with a one-line reason. `--help`/`-h` sets
 * *help and stops. drdc_cli_print_help prints usage, the summary and every option with its
 * default, generated from the same table, so --help cannot drift from what is parsed. */
#ifndef DRDC_CLI_H
#define DRDC_CLI_H

#include <stdio.h>
#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum drdc_opt_type {
    DRDC_OPT_FLAG,    /* int target set to 1 */
    DRDC_OPT_STRING,  /* const char * target (points into argv) */
    DRDC_OPT_INT,     /* int target; min/max checked */
    DRDC_OPT_DOUBLE,  /* double target; min/max checked */
    DRDC_OPT_MULTI,   /* repeatable string: target is a drdc_opt_multi */
} drdc_opt_type;

#define DRDC_OPT_MULTI_CAP 64
typedef struct drdc_opt_multi {
    int n;
    const char *values[DRDC_OPT_MULTI_CAP];
} drdc_opt_multi;

typedef struct drdc_option {
    const char *flag;      /* "--config" */
    const char *metavar;   /* "FILE" (NULL for flags) */
    drdc_opt_type type;
    void *target;
    const char *help;      /* one line */
    const char *def;       /* default as shown in --help (NULL: none shown) */
    double min, max;       /* range for INT/DOUBLE when min < max */
} drdc_option;

/* The --device and --threads rows of every command that runs a network (targets: a const char *
 * and an int, handed to drdc_runtime_init). */
#define DRDC_OPTS_RUNTIME(device_target, threads_target)                                                   \
    {"--device", "D", DRDC_OPT_STRING, (device_target), "cpu | cuda | cuda:N | auto", "auto", 0, 0},       \
    {"--threads", "N", DRDC_OPT_INT, (threads_target), "CPU threads (0 = all cores)", "0", 0, 4096}

typedef struct drdc_command {
    const char *name;      /* "train" */
    const char *usage;     /* "drdc train --config FILE [options]" */
    const char *summary;   /* one paragraph */
    const drdc_option *options;
    int n_options;
} drdc_command;

/* Parses argv[1..argc-1] (argv[0] is the command name). */
drdc_status drdc_cli_parse(const drdc_command *cmd, int argc, char **argv, int *help);

void drdc_cli_print_help(FILE *f, const drdc_command *cmd);

/* The prologue every command shares: parses argv against the command's table and, with --help,
 * prints the help. Returns -1 when the command should go on, else the exit code to return now (0
 * after --help; a usage error is reported as drdc_cli_report does). */
int drdc_cli_begin(const drdc_command *cmd, int argc, char **argv);

/* Reports a failed command the same way everywhere: "drdc CMD: message" on stderr, plus
 * "(see 'drdc CMD --help')" for usage errors. Returns the exit code for st. */
int drdc_cli_report(const char *cmd, drdc_status st);

/* Checks that a table has no duplicate flags and every entry is well formed (used by a test). */
drdc_status drdc_cli_check_table(const drdc_command *cmd);

#ifdef __cplusplus
}
#endif
#endif
