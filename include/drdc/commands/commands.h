/* commands.h: the drdc subcommands. Each takes (argc, argv) with argv[0] = the command name,
 * prints its own report and returns the process exit code (0 ok, 1 runtime error, 2 usage or
 * input error). Only these functions and main decide exit codes. */
#ifndef DRDC_COMMANDS_H
#define DRDC_COMMANDS_H

#include "drdc/core/cli.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_command_entry {
    const char *name;
    const char *summary;                    /* one line for `drdc --help` */
    int (*run)(int argc, char **argv);
    const drdc_command *(*spec)(void);      /* the option table, for --help and table checks */
} drdc_command_entry;

/* All commands, in the order `drdc --help` lists them. */
const drdc_command_entry *drdc_commands(int *n);

int drdc_cmd_synth(int argc, char **argv);
int drdc_cmd_train(int argc, char **argv);
int drdc_cmd_infer(int argc, char **argv);
int drdc_cmd_eval(int argc, char **argv);
int drdc_cmd_convert(int argc, char **argv);
int drdc_cmd_backbone(int argc, char **argv);
int drdc_cmd_bench(int argc, char **argv);
const drdc_command *drdc_synth_spec(void);
const drdc_command *drdc_train_spec(void);
const drdc_command *drdc_infer_spec(void);
const drdc_command *drdc_eval_spec(void);
const drdc_command *drdc_convert_spec(void);
const drdc_command *drdc_backbone_spec(void);
const drdc_command *drdc_bench_spec(void);

/* `drdc --version` text: drdc version, libtorch version, devices seen. */
void drdc_print_version(FILE *f);

#ifdef __cplusplus
}
#endif
#endif
