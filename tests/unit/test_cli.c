/* test_cli.c: option tables are well formed, and bad command lines are usage errors (exit 2)
 * with a one-line reason, both through the parser and through the drdc binary. */
#include "testlib.h"
#include "drdc/core/cli.h"
#include "drdc/core/sysinfo.h"
#include "drdc/commands/commands.h"

#include <stdlib.h>
#include <string.h>

static void test_tables_are_well_formed(void) {
    int n;
    const drdc_command_entry *cmds = drdc_commands(&n);
    CHECK(n >= 4);
    for (int i = 0; i < n; i++) {
        const drdc_command *spec = cmds[i].spec();
        CHECK(strcmp(spec->name, cmds[i].name) == 0);
        CHECK_OK(drdc_cli_check_table(spec));
        for (int j = 0; j < i; j++) CHECK(strcmp(cmds[i].name, cmds[j].name) != 0);
    }
}

static void test_check_table_finds_duplicates(void) {
    int a = 0, b = 0;
    drdc_option opts[] = {
        {"--x", "N", DRDC_OPT_INT, &a, "x", NULL, 0, 0},
        {"--x", "N", DRDC_OPT_INT, &b, "x again", NULL, 0, 0},
    };
    drdc_command cmd = {"t", "t", "t", opts, 2};
    CHECK_ERR(drdc_cli_check_table(&cmd), DRDC_ERR_STATE, "duplicate option --x");
}

static int g_int;
static double g_dbl;
static const char *g_str;
static int g_flag;
static drdc_opt_multi g_multi;
static const drdc_option T_OPTS[] = {
    {"--n", "N", DRDC_OPT_INT, &g_int, "an int", "1", 1, 10},
    {"--x", "X", DRDC_OPT_DOUBLE, &g_dbl, "a double", NULL, 0, 0},
    {"--s", "S", DRDC_OPT_STRING, &g_str, "a string", NULL, 0, 0},
    {"--f", NULL, DRDC_OPT_FLAG, &g_flag, "a flag", NULL, 0, 0},
    {"--set", "K=V", DRDC_OPT_MULTI, &g_multi, "repeatable", NULL, 0, 0},
};
static const drdc_command T_CMD = {"t", "t [options]", "test", T_OPTS, 5};

static drdc_status parse(int argc, const char **argv) {
    int help;
    g_int = 0;
    g_dbl = 0;
    g_str = NULL;
    g_flag = 0;
    g_multi.n = 0;
    return drdc_cli_parse(&T_CMD, argc, (char **)argv, &help);
}

static void test_parse_values(void) {
    const char *argv[] = {"t", "--n", "7", "--x=2.5", "--s", "abc", "--f", "--set", "a=1", "--set", "b=2"};
    CHECK_OK(parse(11, argv));
    CHECK(g_int == 7);
    CHECK_NEAR(g_dbl, 2.5, 0);
    CHECK(g_str && strcmp(g_str, "abc") == 0);
    CHECK(g_flag == 1);
    CHECK(g_multi.n == 2 && strcmp(g_multi.values[1], "b=2") == 0);
}

static void test_parse_errors(void) {
    const char *unknown[] = {"t", "--nope"};
    CHECK_ERR(parse(2, unknown), DRDC_ERR_USAGE, "unknown option '--nope'");
    const char *missing[] = {"t", "--n"};
    CHECK_ERR(parse(2, missing), DRDC_ERR_USAGE, "needs a value");
    const char *badnum[] = {"t", "--n", "7x"};
    CHECK_ERR(parse(3, badnum), DRDC_ERR_USAGE, "not a whole number");
    const char *range[] = {"t", "--n", "11"};
    CHECK_ERR(parse(3, range), DRDC_ERR_USAGE, "between 1 and 10");
    const char *baddbl[] = {"t", "--x", "nan"};
    CHECK_ERR(parse(3, baddbl), DRDC_ERR_USAGE, "not a number");
    const char *flagval[] = {"t", "--f=1"};
    CHECK_ERR(parse(2, flagval), DRDC_ERR_USAGE, "takes no value");
    const char *positional[] = {"t", "stray"};
    CHECK_ERR(parse(2, positional), DRDC_ERR_USAGE, "unexpected argument 'stray'");
}

static void test_help_flag(void) {
    int help = 0;
    const char *argv[] = {"t", "--n", "3", "--help", "--nope"};
    CHECK_OK(drdc_cli_parse(&T_CMD, 5, (char **)argv, &help));
    CHECK(help == 1);
}

/* Runs the binary, captures stderr+stdout into a file and returns the exit code. */
static int run_bin(const char *out, const char *args) {
    return test_system("'%s' %s >'%s' 2>&1", test_drdc_bin(), args, out);
}

static int file_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

static void test_binary_exit_codes(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    char out[1200];
    snprintf(out, sizeof out, "%s/out.txt", test_tmpdir("cli"));
    CHECK(run_bin(out, "--help") == 0);
    CHECK(file_contains(out, "train") && file_contains(out, "synth"));
    CHECK(run_bin(out, "--version") == 0);
    CHECK(file_contains(out, "libtorch"));
    CHECK(file_contains(out, "CPU: "));           /* the CPU's name, which every figure depends on */
    CHECK(file_contains(out, "CPU kernels: "));   /* which of drdc's own kernels run here (AMX, AVX-512) */
    CHECK(run_bin(out, "frobnicate") == 2);
    CHECK(file_contains(out, "unknown command 'frobnicate'"));
    CHECK(run_bin(out, "train --bogus") == 2);
    CHECK(file_contains(out, "unknown option '--bogus'") && file_contains(out, "drdc train --help"));
    CHECK(run_bin(out, "train --threads") == 2);
    CHECK(file_contains(out, "--threads needs a value"));
    CHECK(run_bin(out, "synth --out x --size big") == 2);
    CHECK(file_contains(out, "not a whole number"));
    CHECK(run_bin(out, "eval --method magic") == 2);
    CHECK(run_bin(out, "infer --image a.png") == 2);
    CHECK(file_contains(out, "--out"));
    CHECK(run_bin(out, "train --config does-not-exist.json") == 2);
    CHECK(file_contains(out, "does-not-exist.json"));
    int n;
    const drdc_command_entry *cmds = drdc_commands(&n);
    for (int i = 0; i < n; i++) {
        char args[64];
        snprintf(args, sizeof args, "%s --help", cmds[i].name);
        CHECK(run_bin(out, args) == 0);
        CHECK(file_contains(out, "usage: drdc"));
    }
}

/* The CPU line of --version and the bench header: /proc/cpuinfo's name with its family and model. */
static void test_cpu_model_parse(void) {
    char out[96];
    const char *amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                      "model name\t: AMD EPYC  \nstepping\t: 1\nprocessor\t: 1\nmodel name\t: other\n";
    CHECK(!strcmp(drdc_cpu_model_parse(amd, out, sizeof out), "AMD EPYC (family 25, model 17)"));
    CHECK(!strcmp(drdc_cpu_model_parse("model name : Some CPU\n", out, sizeof out), "Some CPU"));
    CHECK(!strcmp(drdc_cpu_model_parse("cpu family : 6\nmodel : 143\n", out, sizeof out), "unknown CPU"));
    CHECK(!strcmp(drdc_cpu_model_parse("model name :   \n", out, sizeof out), "unknown CPU"));
    CHECK(!strcmp(drdc_cpu_model_parse(NULL, out, sizeof out), "unknown CPU"));
    char small[8];
    CHECK(!strcmp(drdc_cpu_model_parse(amd, small, sizeof small), "AMD EPY"));   /* cut, still terminated */
    CHECK(strlen(drdc_cpu_model(out, sizeof out)) > 0);
}

int main(void) {
    RUN(test_tables_are_well_formed);
    RUN(test_check_table_finds_duplicates);
    RUN(test_parse_values);
    RUN(test_parse_errors);
    RUN(test_help_flag);
    RUN(test_binary_exit_codes);
    RUN(test_cpu_model_parse);
    return test_summary();
}
